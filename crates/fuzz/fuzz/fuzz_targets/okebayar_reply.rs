#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    loket_fuzz::okebayar_reply(data);
});
