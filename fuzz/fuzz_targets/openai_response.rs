#![no_main]
//! The suspect's answers: chat, legacy completion and SSE stream parsers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    provenance::fuzz::openai_response(data);
});
