//! The binlog row-image decoder on any bytes, over columns of every kind it reads.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferry::connector::mysql::binlog::fuzz_row_images(data);
});
