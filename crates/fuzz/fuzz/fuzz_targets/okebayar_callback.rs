#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = loket_fuzz::okebayar_callback(data);
});
