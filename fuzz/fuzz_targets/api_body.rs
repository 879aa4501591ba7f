#![no_main]
//! The API's JSON bodies (first byte picks the route) and their validation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    provenance::fuzz::api_body(data);
});
