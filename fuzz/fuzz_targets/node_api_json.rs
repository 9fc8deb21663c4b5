//! The node API's JSON bodies (action, cutover request), parsed as the handlers do.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferry::node::api::fuzz_json_inputs(data);
});
