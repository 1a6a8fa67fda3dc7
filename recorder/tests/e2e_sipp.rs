//! End to end: SIPp as caller and callee, a real `earshot-recorder` process
//! in the middle on loopback, RTP and RFC 4733 DTMF played from pcap files
//! synthesised per test. Each test asserts through the recorder's event log
//! and metrics that exactly the right calls were recorded for the right
//! intervals, and that SIPp saw every call complete with every RTP packet
//! relayed.

mod common;

use std::time::Duration;

use common::*;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{Sipp, TestUser, events_of, recorded_intervals};

#[test]
fn always_user_is_recorded_from_answer_to_hang_up() {
    let s = setup("always", &users());
    let caller = RtpStream::new(1).tone(440.0, 2000);
    let callee = RtpStream::new(2).tone(1000.0, 2000);
    s.call("008", "500", &caller, &callee, 3000, None);

    let events = s.recorder.events();
    let started = events_of(&events, "call_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["caller"], "008");
    assert_eq!(started[0]["callee"], "500");
    assert_eq!(started[0]["users"][0]["mode"], "Always");
    assert_eq!(started[0]["users"][0]["side"], "caller");
    let intervals = recorded_intervals(&events);
    let call = started[0]["call"].as_str().unwrap();
    let spans = &intervals[call];
    assert_eq!(spans.len(), 1, "one interval, answer to hang-up");
    let length = seconds(spans[0].0, spans[0].1);
    assert!(
        (2.9..3.6).contains(&length),
        "recorded {length:.2} s of a 3 s call"
    );
    let recording = events_of(&events, "recording");
    assert_eq!(recording[0]["reason"], "always");
    assert_eq!(recording[1]["reason"], "call_ended");
    assert_eq!(events_of(&events, "call_ended")[0]["reason"], "bye");
    assert_eq!(s.metric("earshot_calls_total{result=\"answered\"}"), 1.0);
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}

#[test]
fn never_user_is_not_recorded() {
    let s = setup("never", &users());
    let caller = RtpStream::new(1).tone(440.0, 1000);
    let callee = RtpStream::new(2).tone(1000.0, 1000);
    s.call("003", "500", &caller, &callee, 1500, None);
    let events = s.recorder.events();
    assert_eq!(
        events_of(&events, "call_started")[0]["users"],
        serde_json::json!([])
    );
    assert!(events_of(&events, "recording").is_empty(), "{events:?}");
    assert_eq!(s.metric("earshot_recordings_active"), 0.0);
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}

#[test]
fn on_demand_user_keys_the_shortcode_twice() {
    let s = setup("ondemand", &users());
    // 1 s talk, *5 (on), 2 s talk, *5 (off), 1 s talk.
    let caller = RtpStream::new(1)
        .tone(440.0, 1000)
        .key('*', 100)
        .tone(0.0, 100)
        .key('5', 100)
        .tone(440.0, 2000)
        .key('*', 100)
        .tone(0.0, 100)
        .key('5', 100)
        .tone(440.0, 1000);
    let callee = RtpStream::new(2).tone(1000.0, 4500);
    s.call("012", "500", &caller, &callee, 5200, None);

    let events = s.recorder.events();
    let digits: Vec<(&str, &str)> = events_of(&events, "dtmf")
        .iter()
        .map(|e| (e["side"].as_str().unwrap(), e["digit"].as_str().unwrap()))
        .collect();
    assert_eq!(
        digits,
        [
            ("caller", "*"),
            ("caller", "5"),
            ("caller", "*"),
            ("caller", "5")
        ],
        "each digit once"
    );
    let answered = humantime::parse_rfc3339(
        events_of(&events, "call_answered")[0]["time"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let intervals = recorded_intervals(&events);
    let spans: Vec<_> = intervals.values().flatten().collect();
    assert_eq!(spans.len(), 1, "{events:?}");
    let (on, off) = *spans[0];
    // On when `5` follows `*` (~1.2 s after answer), off at the second code, ~2.4 s later.
    let on_at = seconds(answered, on);
    let length = seconds(on, off);
    assert!(
        (1.0..1.8).contains(&on_at),
        "recording started {on_at:.2} s after answer"
    );
    assert!(
        (2.1..2.7).contains(&length),
        "recorded {length:.2} s between the two codes"
    );
    let recording = events_of(&events, "recording");
    assert_eq!(recording[0]["reason"], "shortcode");
    assert_eq!(recording[1]["reason"], "shortcode");
    assert_eq!(s.metric("earshot_recording_toggles_total{to=\"on\"}"), 1.0);
    assert_eq!(s.metric("earshot_recording_toggles_total{to=\"off\"}"), 1.0);
    assert_eq!(
        s.metric("earshot_dtmf_digits_total{method=\"rfc4733\"}"),
        4.0
    );
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}

#[test]
fn the_far_end_keying_the_code_does_nothing() {
    let s = setup("farend", &users());
    let caller = RtpStream::new(1).tone(440.0, 3000);
    // The far end (callee 500) keys *5, the OnDemand caller's code.
    let callee = RtpStream::new(2)
        .tone(1000.0, 500)
        .key('*', 100)
        .tone(0.0, 100)
        .key('5', 100)
        .tone(1000.0, 1500);
    s.call("012", "500", &caller, &callee, 3000, None);
    let events = s.recorder.events();
    let sides: Vec<&str> = events_of(&events, "dtmf")
        .iter()
        .map(|e| e["side"].as_str().unwrap())
        .collect();
    assert_eq!(
        sides,
        ["callee", "callee"],
        "the digits were seen, on the far end's leg"
    );
    assert!(
        events_of(&events, "recording").is_empty(),
        "and toggled nothing"
    );
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}

#[test]
fn hold_and_resume_by_re_invite() {
    let s = setup("hold", &users());
    let caller = RtpStream::new(1).tone(440.0, 1000);
    let callee = RtpStream::new(2).tone(1000.0, 1000);
    s.call(
        "008",
        "500",
        &caller,
        &callee,
        1200,
        Some(hold_and_resume(1000, 500)),
    );
    let events = s.recorder.events();
    let intervals = recorded_intervals(&events);
    let spans: Vec<_> = intervals.values().flatten().collect();
    assert_eq!(spans.len(), 1, "hold does not split the recording");
    let length = seconds(spans[0].0, spans[0].1);
    assert!(
        (2.6..3.4).contains(&length),
        "recorded {length:.2} s across hold and resume"
    );
    // The INVITE and both re-INVITEs reached the callee (UDP retransmissions may add more).
    assert!(s.metric("earshot_sip_messages_total{method=\"INVITE\",direction=\"in\"}") >= 6.0);
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}

#[test]
fn cancel_before_answer() {
    let s = setup("cancel", &users());
    let mut uas = s.uas("uas_ring.xml", "unused", 1);
    let mut uac = s.uac("uac_cancel.xml", "008", "500", vec![], &["-m", "1"]);
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    wait_for("call end logged", || {
        !events_of(&s.recorder.events(), "call_ended").is_empty()
    });
    let events = s.recorder.events();
    let ended = events_of(&events, "call_ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["reason"], "cancelled");
    assert_eq!(ended[0]["answered"], false);
    assert!(events_of(&events, "recording").is_empty());
    assert_eq!(s.metric("earshot_calls_total{result=\"cancelled\"}"), 1.0);
}

#[test]
fn two_hundred_calls_twenty_at_a_time() {
    let s = setup("load", &users());
    let caller = RtpStream::new(1).tone(440.0, 1500);
    let callee = RtpStream::new(2).tone(1000.0, 1500);
    let (mut uac, mut uas) = s.start_calls("008", "500", &caller, &callee, 1800, 200, 20, None);
    uac.wait_success(Duration::from_secs(120));
    uas.wait_success(Duration::from_secs(20));
    assert_eq!(
        uac.stat("SuccessfulCall(C)"),
        Some(200),
        "SIPp saw 200 calls complete"
    );
    let events = s.recorder.events();
    assert_eq!(events_of(&events, "call_started").len(), 200);
    let intervals = recorded_intervals(&events);
    assert_eq!(intervals.len(), 200, "every call recorded");
    assert!(intervals.values().all(|v| v.len() == 1), "each once");
    assert_eq!(s.metric("earshot_calls_total{result=\"answered\"}"), 200.0);
    assert_eq!(s.metric("earshot_calls_active"), 0.0);
    s.assert_no_rtp_loss(caller.len(), callee.len(), 200);
}

#[test]
fn sigterm_refuses_new_calls_and_lets_calls_in_progress_finish() {
    let mut s = setup("drain", &users());
    let caller = RtpStream::new(1).tone(440.0, 1000);
    let callee = RtpStream::new(2).tone(1000.0, 1000);
    let (mut uac, mut uas) = s.start_calls("008", "500", &caller, &callee, 4000, 1, 1, None);
    wait_for("call answered", || {
        !events_of(&s.recorder.events(), "call_answered").is_empty()
    });
    let refused = Sipp {
        scenario: "uac_refused.xml",
        vars: vec![("FROM", "008".to_owned())],
        args: vec![
            "-rsa".into(),
            s.recorder.sip.to_string(),
            "-s".into(),
            "500".into(),
            "-m".into(),
            "1".into(),
            format!("127.0.0.1:{}", s.ports),
        ],
        port: s.ports + 20,
        media_port: s.ports + 22,
        control_port: s.ports + 26,
    };
    let dir = s.dir.path().to_owned();
    let status = std::thread::scope(|scope| {
        let rec = &mut s.recorder;
        let waiter = scope.spawn(move || rec.terminate());
        std::thread::sleep(Duration::from_millis(500));
        // A new call while draining gets 503.
        let mut refused = refused.spawn(&dir, "refused");
        refused.wait_success(Duration::from_secs(20));
        waiter.join().unwrap()
    });
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    assert!(
        status.is_some_and(|st| st.success()),
        "recorder exits 0 after the drain: {status:?}"
    );
    let events = s.recorder.events();
    assert_eq!(
        events_of(&events, "call_ended")[0]["reason"],
        "bye",
        "the call in progress finished normally"
    );
    assert_eq!(recorded_intervals(&events).len(), 1);
    assert!(s.recorder.log_text().contains("draining"));
}

#[test]
fn config_reload_applies_to_new_calls_and_a_bad_file_is_refused() {
    let s = setup(
        "reload",
        &[TestUser {
            extension: "008",
            mode: "Never",
            shortcode: None,
        }],
    );
    let caller_pcap = s.pcap("caller.pcap", &RtpStream::new(1).tone(440.0, 500));
    let callee_pcap = s.pcap("callee.pcap", &RtpStream::new(2).tone(1000.0, 500));
    let call = |s: &Setup, n: u16| {
        let mut uas = s.uas("uas.xml", &callee_pcap, 1);
        let mut uac = s.uac_at(
            n * 8,
            "uac.xml",
            "008",
            "500",
            vec![("PCAP", caller_pcap.clone()), ("TALK_MS", "700".into())],
            &["-m", "1"],
        );
        uac.wait_success(Duration::from_secs(30));
        uas.wait_success(Duration::from_secs(10));
    };
    call(&s, 0);
    assert!(events_of(&s.recorder.events(), "recording").is_empty());

    // A broken file is refused and the old config kept.
    let good = std::fs::read_to_string(&s.recorder.config).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &s.recorder.config,
        good.replace("mode: Never", "mode: Sometimes"),
    )
    .unwrap();
    wait_for("reload rejected", || {
        s.metric("earshot_config_reloads_total{result=\"rejected\"}") == 1.0
    });
    assert!(s.recorder.log_text().contains("config change rejected"));

    // 008 becomes Always: the next call is recorded. The shutdown grace
    // changes too, which only a restart applies: the log says so.
    std::fs::write(
        &s.recorder.config,
        good.replace("mode: Never", "mode: Always")
            .replace("shutdownGrace: 30s", "shutdownGrace: 60s"),
    )
    .unwrap();
    wait_for("reload applied", || {
        s.metric("earshot_config_reloads_total{result=\"applied\"}") == 1.0
    });
    let log = s.recorder.log_text();
    assert!(
        log.contains("take effect at the next restart") && log.contains("shutdownGrace"),
        "{log}"
    );
    call(&s, 1);
    assert_eq!(recorded_intervals(&s.recorder.events()).len(), 1);
}

#[test]
fn a_call_over_sip_tcp_is_recorded_like_one_over_udp() {
    let s = setup("tcp", &users());
    let caller = RtpStream::new(1).tone(440.0, 1500);
    let callee = RtpStream::new(2).tone(1000.0, 1500);
    // The caller speaks TCP; the recorder forwards to the callee over UDP (the
    // peer's next-hop transport), so the call crosses transports: a double
    // Record-Route, and in-dialog requests back on the caller's connection.
    let mut uas = Sipp {
        scenario: "uas.xml",
        vars: vec![("PCAP", s.pcap("callee.pcap", &callee))],
        args: vec!["-m".into(), "1".into()],
        port: s.ports,
        media_port: s.ports + 2,
        control_port: s.ports + 6,
    }
    .spawn(s.dir.path(), "uas-udp");
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = s.uac(
        "uac.xml",
        "008",
        "500",
        vec![
            ("PCAP", s.pcap("caller.pcap", &caller)),
            ("TALK_MS", "2000".into()),
        ],
        &["-m", "1", "-t", "t1"],
    );
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    let events = s.recorder.events();
    assert_eq!(recorded_intervals(&events).len(), 1, "{events:?}");
    assert_eq!(events_of(&events, "call_ended")[0]["reason"], "bye");
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}
