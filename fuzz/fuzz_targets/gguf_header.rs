#![no_main]
//! GGUF header, metadata, model config and tokenizer built from metadata.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    provenance::fuzz::gguf_header(data);
});
