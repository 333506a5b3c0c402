//! Fuzzes retry-after, rate-limit header parsing and the status mapping: no input may panic or allocate without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare::fuzzing::headers(data));
