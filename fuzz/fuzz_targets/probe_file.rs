#![no_main]
//! A probe file of the default set replaced by the input.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    provenance::fuzz::probe_file(data);
});
