//! The committed fuzzing corpus (`recorder/core/fuzz/corpus/<target>/`),
//! replayed through the same entry points libFuzzer drives (`make fuzz`):
//! every input the fuzzers kept, and every crash they ever found, stays a
//! test that runs in `make test`.

use earshot_recorder_core::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    assert!(n >= 3, "{target}: a corpus of {n} inputs");
}

#[test]
fn framing_corpus() {
    replay("framing", fuzzing::framing);
}

#[test]
fn message_corpus() {
    replay("message", fuzzing::message);
}

#[test]
fn sdp_corpus() {
    replay("sdp", fuzzing::sdp);
}

#[test]
fn rtp_corpus() {
    replay("rtp", fuzzing::rtp);
}

#[test]
fn engine_corpus() {
    replay("engine", fuzzing::engine);
}

#[test]
fn srtp_corpus() {
    replay("srtp", |data| {
        earshot_recorder_core::srtp::fuzz_srtp(data);
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = earshot_recorder_core::srtp::parse_crypto(text);
        }
    });
}

#[test]
fn siprec_corpus() {
    replay("siprec", fuzzing::siprec);
}
