//! End to end, SIP as the field sends it through a real recorder process:
//! Kamailio (Debian) as a trunk that challenges every INVITE with 407 and
//! the caller retrying with credentials; SIPp peers that redirect, ask for
//! a longer session (422), answer 491, fork with early media and answer
//! twice, use 100rel/PRACK and UPDATE, make a delayed offer, refresh the
//! session every second, and transfer. Each call's MP3 is decoded with
//! ffmpeg and measured as a user would check it: the caller's 440 Hz on
//! the left, the callee's 1 kHz on the right, the length of the call.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use earshot_tests::kamailio::Kamailio;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{TempDir, decode_mp3, events_of, tone_power};

/// One call from the caller 008 through the recorder: the callee's
/// scenario, then the caller's (each playing its tone for `talk_ms` and
/// 2 s more), both of which must succeed.
fn call(
    s: &Setup,
    tag: &str,
    (uac, uac_vars): (&str, Vec<(&str, String)>),
    (uas, uas_vars): (&str, Vec<(&str, String)>),
    talk_ms: u64,
) {
    let mut callee_vars = vec![("TALK_MS", talk_ms.to_string())];
    callee_vars.extend(uas_vars);
    let callee = s.pcap(
        &format!("{tag}-callee.pcap"),
        &tone(2, 1000.0, talk_ms + 2000),
    );
    let mut uas = s.uas_with(uas, &callee, 1, callee_vars);
    let mut caller_vars = vec![
        (
            "PCAP",
            s.pcap(
                &format!("{tag}-caller.pcap"),
                &tone(1, 440.0, talk_ms + 2000),
            ),
        ),
        ("TALK_MS", talk_ms.to_string()),
    ];
    caller_vars.extend(uac_vars);
    let mut uac = s.uac_at(0, uac, "008", "500", caller_vars, &["-m", "1"]);
    uac.wait_success(Duration::from_secs(60));
    uas.wait_success(Duration::from_secs(20));
}

fn direct(name: &str) -> Setup {
    setup(name, &users())
}

fn tone(ssrc: u32, hz: f64, ms: u64) -> RtpStream {
    RtpStream::new(ssrc).tone(hz, ms)
}

/// The newest recordings once `n` are stored.
fn recordings(rig: &Setup, n: usize) -> Vec<(PathBuf, serde_json::Value)> {
    let mut recs = rig.recorder.wait_recordings(n, Duration::from_secs(20));
    recs.sort_by_key(|(_, s)| s["startedAt"].as_str().unwrap_or_default().to_owned());
    assert_eq!(recs.len(), n, "{recs:?}");
    recs
}

/// What a user checks: the file plays, is as long as the answered call
/// (the sidecar's), about `talk_s` long, with the caller's 440 Hz left and
/// the callee's 1 kHz right, recorded in one stretch, complete.
fn assert_recording(what: &str, mp3: &Path, side: &serde_json::Value, talk_s: f64) {
    let (left, right) = decode_mp3(mp3);
    let file = left.len() as f64 / 8000.0;
    let call = side["durationSeconds"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (file - call).abs() < 0.15,
        "{what}: file {file:.2} s, call {call:.2} s"
    );
    assert!(
        (talk_s - 0.6..talk_s + 1.5).contains(&file),
        "{what}: {file:.2} s recorded of a {talk_s:.1} s talk"
    );
    let mid = |v: &[i16]| v[4000..v.len().saturating_sub(4000).max(4001)].to_vec();
    let (l, r) = (mid(&left), mid(&right));
    assert!(
        tone_power(&l, 440.0) > 10.0 * tone_power(&l, 1000.0),
        "{what}: left is the caller"
    );
    assert!(
        tone_power(&r, 1000.0) > 10.0 * tone_power(&r, 440.0),
        "{what}: right is the callee"
    );
    assert_eq!(side["complete"], true, "{what}: {side}");
    assert_eq!(
        side["recorded"].as_array().map(Vec::len),
        Some(1),
        "{what}: one stretch"
    );
    assert_eq!(side["caller"]["number"], "008", "{what}");
}

/// Most SIP trunks challenge an outbound INVITE: Kamailio answers 407, the
/// caller retries with credentials in the same call, and that call is the
/// one recorded (today's main recorded nothing and lost the audio 5–10 s
/// into the call).
#[test]
fn a_trunk_that_challenges_every_invite() {
    let trunk_dir = TempDir::new("field-trunk");
    let mut trunk = None;
    let rig = setup_via("field-challenge", &users(), |ports| {
        let t = Kamailio::start_trunk(
            trunk_dir.path(),
            ports + 20,
            SocketAddr::from(([127, 0, 0, 1], ports)),
            "pbx",
            "s3cret",
        );
        let sip = t.sip;
        trunk = Some(t);
        sip
    });
    let trunk = trunk.expect("started");
    let auth = || {
        vec![
            ("AUTH_USER", "pbx".to_owned()),
            ("AUTH_PASS", "s3cret".to_owned()),
        ]
    };
    // Two calls through one process: the second call finds no state of the first.
    call(
        &rig,
        "auth-1",
        ("uac_auth.xml", auth()),
        ("uas.xml", vec![]),
        4000,
    );
    call(
        &rig,
        "auth-2",
        ("uac_auth.xml", auth()),
        ("uas.xml", vec![]),
        12_000,
    );
    let log = trunk.logs();
    assert!(
        log.matches("407").count() >= 2,
        "the trunk challenged: {log}"
    );
    for (i, (mp3, side)) in recordings(&rig, 2).iter().enumerate() {
        assert_recording("challenged call", mp3, side, [4.0, 12.0][i]);
    }
    assert_eq!(
        rig.metric("earshot_invite_retries_total{outcome=\"retried\",code=\"407\"}"),
        2.0
    );
    let events = rig.recorder.events();
    assert_eq!(
        events_of(&events, "call_started").len(),
        2,
        "one call per retried INVITE"
    );
    assert!(rig.metric("earshot_rtp_dropped_packets_total{reason=\"unknown_port\"}") < 1.0);
}

/// A 401 from the far end itself (SIPp checks the digest), a 302 to
/// another target, 422 asking for a longer session and 491: each retried
/// by the caller, each one call, each recorded whole.
#[test]
fn retries_after_401_302_422_and_491_are_one_recorded_call_each() {
    let rig = direct("field-retries");
    let auth = vec![
        ("AUTH_USER", "pbx".to_owned()),
        ("AUTH_PASS", "pw".to_owned()),
    ];
    call(
        &rig,
        "401",
        ("uac_auth.xml", auth.clone()),
        ("uas_auth.xml", auth),
        3000,
    );
    call(
        &rig,
        "302",
        ("uac_redirect.xml", vec![]),
        ("uas_redirect.xml", vec![("TARGET", "600".to_owned())]),
        3000,
    );
    call(
        &rig,
        "422",
        ("uac_422.xml", vec![]),
        ("uas_422.xml", vec![]),
        3000,
    );
    call(
        &rig,
        "491",
        ("uac_491.xml", vec![("GLARE_MS", "1500".to_owned())]),
        ("uas_491.xml", vec![]),
        3000,
    );
    for (mp3, side) in recordings(&rig, 4) {
        assert_recording("retried call", &mp3, &side, 3.0);
    }
    for code in [401, 302, 422, 491] {
        assert_eq!(
            rig.metric(&format!(
                "earshot_invite_retries_total{{outcome=\"retried\",code=\"{code}\"}}"
            )),
            1.0,
            "{code}"
        );
    }
    assert_eq!(events_of(&rig.recorder.events(), "call_started").len(), 4);
}

/// Forking downstream: 180 from one fork, 183 with early media from another,
/// both answer; the caller ACKs both and hangs up the second at once. One
/// recording, of the dialog that stayed up, as long as it lasted.
#[test]
fn a_forked_call_is_recorded_once_from_the_answer() {
    let rig = direct("field-fork");
    call(
        &rig,
        "fork",
        ("uac_fork.xml", vec![]),
        ("uas_fork.xml", vec![("RING_MS", "500".to_owned())]),
        4000,
    );
    let recs = recordings(&rig, 1);
    assert_recording("forked call", &recs[0].0, &recs[0].1, 4.0);
    let events = rig.recorder.events();
    assert_eq!(events_of(&events, "call_ended").len(), 1);
    assert_eq!(events_of(&events, "call_ended")[0]["reason"], "bye");
}

/// Reliable provisionals with the answer in the 183, PRACK, UPDATE before
/// and after the answer; a delayed offer (offer in the 200, answer in the
/// ACK) with a re-INVITE without SDP; session refreshes every second by
/// re-INVITE and UPDATE. Each one continuous recording.
#[test]
fn prack_update_delayed_offer_and_refreshes_record_one_stretch() {
    let rig = direct("field-offers");
    call(
        &rig,
        "prack",
        ("uac_prack.xml", vec![]),
        ("uas_prack.xml", vec![]),
        4000,
    );
    call(
        &rig,
        "delayed",
        ("uac_delayed.xml", vec![]),
        ("uas_delayed.xml", vec![]),
        4000,
    );
    call(
        &rig,
        "timer",
        (
            "uac_timer.xml",
            vec![
                ("REFRESH_MS", "1000".to_owned()),
                ("REFRESHES", "4".to_owned()),
            ],
        ),
        ("uas_timer.xml", vec![]),
        1000,
    );
    let recs = recordings(&rig, 3);
    assert_recording("100rel + UPDATE", &recs[0].0, &recs[0].1, 4.0);
    assert_recording("delayed offer", &recs[1].0, &recs[1].1, 4.0);
    // Four refreshes a second apart, then a second of talk.
    assert_recording("session refreshes", &recs[2].0, &recs[2].1, 5.0);
}

/// A blind transfer: the callee REFERs the caller elsewhere and hangs up;
/// the recorded call ends there, whole. The transferee's new call (with
/// Replaces, as an attended transfer sends it) is a call of its own,
/// recorded on its own, its sidecar naming the call it replaces.
#[test]
fn a_transferred_call_and_the_call_that_replaces_it() {
    let rig = direct("field-transfer");
    call(
        &rig,
        "refer",
        ("uac_refer.xml", vec![]),
        ("uas_refer.xml", vec![("REFER_TARGET", "600".to_owned())]),
        3000,
    );
    let first = recordings(&rig, 1);
    assert_recording("transferred call", &first[0].0, &first[0].1, 3.0);
    let events = rig.recorder.events();
    let original = events_of(&events, "call_started")[0]["call"]
        .as_str()
        .unwrap()
        .to_owned();
    let call_id = events_of(&events, "transfer")
        .first()
        .map(|e| e["call"].as_str().unwrap().to_owned());
    assert_eq!(
        call_id.as_deref(),
        Some(original.as_str()),
        "the REFER is noted on the call"
    );
    call(
        &rig,
        "replaces",
        (
            "uac_replaces.xml",
            vec![(
                "REPLACES",
                "orig-call@127.0.0.1;to-tag=b;from-tag=a".to_owned(),
            )],
        ),
        ("uas.xml", vec![]),
        3000,
    );
    let recs = recordings(&rig, 2);
    assert_recording("replacing call", &recs[1].0, &recs[1].1, 3.0);
    assert_eq!(
        recs[1].1["replaces"],
        earshot_contracts::layout::call_hash("orig-call@127.0.0.1"),
        "the sidecar links the call it replaced"
    );
}

/// Audio with rtcp-mux and video, offered with ICE candidates naming the
/// caller's own addresses, then a T.38 fax re-INVITE from the callee: the
/// callee never sees a candidate (SIPp fails the call if it does), video is
/// relayed and not recorded, the fax is relayed, and the recording holds the
/// conversation before it, marked incomplete with the reason `fax`.
#[test]
fn audio_and_video_with_ice_then_a_fax_re_invite() {
    let rig = direct("field-fax");
    call(
        &rig,
        "fax",
        ("uac_av.xml", vec![]),
        ("uas_fax.xml", vec![("FAX_MS", "1500".to_owned())]),
        3000,
    );
    let recs = recordings(&rig, 1);
    let (mp3, side) = (&recs[0].0, &recs[0].1);
    assert_eq!(side["complete"], false, "{side}");
    assert_eq!(
        side["incompleteReasons"],
        serde_json::json!(["fax"]),
        "{side}"
    );
    assert!(
        side["truncated"]
            .as_str()
            .is_some_and(|t| t.contains("fax")),
        "{side}"
    );
    let (left, right) = decode_mp3(mp3);
    let file = left.len() as f64 / 8000.0;
    assert!(
        (4.0..6.0).contains(&file),
        "{file:.2} s: the talk and the fax"
    );
    // The conversation before the fax: caller left, callee right.
    let talk = |v: &[i16]| v[4000..20000].to_vec();
    let (l, r) = (talk(&left), talk(&right));
    assert!(tone_power(&l, 440.0) > 10.0 * tone_power(&l, 1000.0));
    assert!(tone_power(&r, 1000.0) > 10.0 * tone_power(&r, 440.0));
    let events = rig.recorder.events();
    let notes = events_of(&events, "media_note");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["note"], "fax");
}
