//! Fuzz target: `earshot_recorder_core::fuzzing::siprec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    earshot_recorder_core::fuzzing::siprec(data);
});
