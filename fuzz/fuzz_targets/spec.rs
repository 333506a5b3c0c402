//! Fuzzes the agent spec loader: no input may panic or allocate without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare::fuzzing::spec(data));
