//! Fuzzes the SSE reader, fed in chunks: no input may panic or allocate without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare::fuzzing::sse(data));
