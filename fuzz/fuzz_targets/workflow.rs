//! Fuzzes the workflow loader (and what a loaded workflow is compiled into), step
//! templates, and the structured-answer check: no input may panic or allocate without
//! bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanfare::fuzzing::workflow(data));
