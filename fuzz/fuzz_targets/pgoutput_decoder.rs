//! Any bytes given to the pgoutput decoder give a message or an error, never a panic
//! (it decodes what a server, or anything posing as one, sends).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry::connector::postgres::decoder::decode(data);
});
