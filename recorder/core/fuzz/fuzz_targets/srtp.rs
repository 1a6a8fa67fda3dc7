//! Fuzz target: `earshot_recorder_core::srtp::fuzz_srtp` (packets) and
//! `parse_crypto` (SDES attributes from an SDP).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    earshot_recorder_core::srtp::fuzz_srtp(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = earshot_recorder_core::srtp::parse_crypto(text);
    }
});
