//! The task-file parser on any text: an error with a line and a hint, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ferry::config::Config::parse(std::path::Path::new("/fuzz/ferry.toml"), text);
    }
});
