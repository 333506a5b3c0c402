//! Fuzzes policy, duration and fault-flag parsing, URL redaction: no input may panic or allocate without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare::fuzzing::parse(data));
