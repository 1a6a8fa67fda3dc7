//! SRTP calls through the engine: with SDES keys (`a=crypto`, RFC 4568)
//! the recorder reads a decrypted copy of each packet and relays the packet
//! as it came (keys stay end to end); where it has no key (DTLS-SRTP,
//! `RTP/SAVP` without `a=crypto`) or the key does not decrypt, the media is
//! still relayed and the recording is marked, never filled with ciphertext.

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::srtp::{SdesKey, SrtpSender, Suite};
use earshot_recorder_core::{Event, MediaNote, Recorder};
use sim::*;

fn key(tag: u32, suite: Suite, byte: u8) -> SdesKey {
    let len = suite.master_key_len() + suite.master_salt_len();
    SdesKey::new(tag, suite, &vec![byte; len]).unwrap()
}

fn secure_sdp(ip: &str, port: u16, proto: &str, extra: &str) -> String {
    sdp(ip, port, extra).replace("RTP/AVP", proto)
}

fn crypto(keys: &[&SdesKey]) -> String {
    keys.iter()
        .map(|k| format!("a=crypto:{}\r\n", k.to_attribute()))
        .collect()
}

/// A call whose offer and answer are the given SDP bodies (008 Always).
fn call(rec: &mut Recorder, now: Instant, id: &str, offer: &str, answer: &str) -> Call {
    let out = sip_in(rec, now, CALLER, &mk_invite("008", "0201234567", id, offer));
    let invite = out.to(CALLEE).clone();
    let out = sip_in(rec, now, CALLEE, &mk_response(&invite, 200, "OK", answer));
    let ok = out.to(CALLER).clone();
    sip_in(rec, now, CALLER, &mk_in_dialog("ACK", id, 1, true, "", ""));
    Call {
        id: id.to_owned(),
        port_for_callee: sdp_port(&invite),
        port_for_caller: sdp_port(&ok),
        invite_to_callee: invite,
        events: Vec::new(),
    }
}

fn pcmu(seq: u16, ssrc: u32, byte: u8) -> Vec<u8> {
    rtp(0, seq, u32::from(seq) * 160, ssrc, &[byte; 160])
}

fn frames(events: &[Event]) -> Vec<(earshot_recorder_core::Side, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Media(f) => Some((f.side, f.payload.clone())),
            _ => None,
        })
        .collect()
}

fn notes(events: &[Event]) -> Vec<MediaNote> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MediaNote { note, .. } => Some(*note),
            _ => None,
        })
        .collect()
}

#[test]
fn sdes_keys_decrypt_a_copy_for_the_recording_and_the_packets_go_on_as_they_came() {
    for suite in Suite::ALL {
        let mut rec = mk_recorder();
        let now = Instant::now();
        // The caller offers two suites; the callee accepts the second tag.
        let offered_a = key(1, Suite::AesCm128HmacSha1_32, 0x11);
        let offered_b = key(2, suite, 0x22);
        let answered = key(2, suite, 0x33);
        let c = call(
            &mut rec,
            now,
            &format!("srtp-{}", suite.name()),
            &secure_sdp(
                "10.0.0.1",
                4000,
                "RTP/SAVP",
                &crypto(&[&offered_a, &offered_b]),
            ),
            &secure_sdp("10.0.0.2", 6000, "RTP/SAVP", &crypto(&[&answered])),
        );
        // The offer and answer reach the other party with their keys.
        let invite_body = String::from_utf8_lossy(&c.invite_to_callee.body).into_owned();
        assert!(
            invite_body.contains(&offered_b.to_attribute()),
            "{invite_body}"
        );
        let mut caller = SrtpSender::new(&offered_b);
        let mut callee = SrtpSender::new(&answered);
        let mut events = Vec::new();
        for seq in 0..5u16 {
            let at = now + Duration::from_millis(20 * u64::from(seq));
            let packet = caller.protect_rtp(&pcmu(seq, 0xca11, 0x55)).unwrap();
            let mut relayed = packet.clone();
            let relay = rec.handle_rtp(at, c.port_for_caller, addr(CALLER_RTP), &mut relayed);
            assert!(relay.is_some(), "relayed");
            assert_eq!(relayed, packet, "{}: relayed as it came", suite.name());
            events.extend(drain(&mut rec).events);
            let packet = callee.protect_rtp(&pcmu(seq, 0xca22, 0x66)).unwrap();
            let (relay, ev) = rtp_in(&mut rec, at, c.port_for_callee, CALLEE_RTP, &packet);
            assert!(relay.is_some());
            events.extend(ev);
        }
        let f = frames(&events);
        assert_eq!(f.len(), 10, "{}: every packet recorded", suite.name());
        for (side, payload) in f {
            let want = match side {
                earshot_recorder_core::Side::Caller => 0x55,
                earshot_recorder_core::Side::Callee => 0x66,
            };
            assert_eq!(
                payload,
                vec![want; 160],
                "{}: the plain payload",
                suite.name()
            );
        }
        assert!(notes(&events).is_empty(), "{:?}", notes(&events));
    }
}

#[test]
fn a_wrong_key_is_relayed_and_marks_the_recording_instead_of_storing_noise() {
    let mut rec = mk_recorder();
    let now = Instant::now();
    let announced = key(1, Suite::AesCm128HmacSha1_80, 0x11);
    let c = call(
        &mut rec,
        now,
        "srtp-wrong",
        &secure_sdp("10.0.0.1", 4000, "RTP/SAVP", &crypto(&[&announced])),
        &secure_sdp(
            "10.0.0.2",
            6000,
            "RTP/SAVP",
            &crypto(&[&key(1, Suite::AesCm128HmacSha1_80, 0x22)]),
        ),
    );
    // The caller encrypts with a key its SDP never named.
    let mut caller = SrtpSender::new(&key(1, Suite::AesCm128HmacSha1_80, 0x99));
    let mut events = Vec::new();
    for seq in 0..60u16 {
        let packet = caller.protect_rtp(&pcmu(seq, 7, 0x55)).unwrap();
        let (relay, ev) = rtp_in(&mut rec, now, c.port_for_caller, CALLER_RTP, &packet);
        assert!(relay.is_some(), "the call's media goes on");
        events.extend(ev);
    }
    assert!(frames(&events).is_empty(), "nothing undecryptable recorded");
    assert_eq!(notes(&events), [MediaNote::SrtpUndecryptable], "said once");
    assert_eq!(rec.stats().srtp_failed.get("auth"), Some(&60));
}

#[test]
fn dtls_srtp_and_keyless_srtp_are_relayed_and_marked_never_recorded() {
    for (id, proto, extra, note) in [
        (
            "dtls",
            "UDP/TLS/RTP/SAVPF",
            "a=fingerprint:sha-256 AB:CD:EF\r\na=setup:actpass\r\n",
            MediaNote::EncryptedDtls,
        ),
        ("no-key", "RTP/SAVP", "", MediaNote::SrtpNoKey),
    ] {
        let mut rec = mk_recorder();
        let now = Instant::now();
        let c = call(
            &mut rec,
            now,
            id,
            &secure_sdp("10.0.0.1", 4000, proto, extra),
            &secure_sdp("10.0.0.2", 6000, proto, extra),
        );
        let mut events = Vec::new();
        for seq in 0..10u16 {
            // DTLS records and ciphertext alike: relayed untouched.
            let packet = pcmu(seq, 9, 0x77);
            let mut relayed = packet.clone();
            let relay = rec.handle_rtp(now, c.port_for_caller, addr(CALLER_RTP), &mut relayed);
            assert!(relay.is_some(), "{id}: relayed");
            assert_eq!(relayed, packet);
            events.extend(drain(&mut rec).events);
        }
        assert!(frames(&events).is_empty(), "{id}: nothing recorded");
        assert_eq!(notes(&events), [note], "{id}");
    }
}

#[test]
fn no_announcement_is_injected_into_an_encrypted_stream() {
    // The beep of `Beep` mode would be clear RTP in an SRTP stream.
    let mut cfg = mk_config();
    cfg.announcement.mode = earshot_recorder_core::AnnouncementMode::Beep;
    let mut rec = Recorder::new(cfg, &(30000..30100).step_by(2).collect::<Vec<u16>>());
    let now = Instant::now();
    let k = key(1, Suite::AesCm128HmacSha1_80, 0x11);
    let out = sip_in(
        &mut rec,
        now,
        CALLER,
        &mk_invite(
            "008",
            "0201234567",
            "srtp-beep",
            &secure_sdp("10.0.0.1", 4000, "RTP/SAVP", &crypto(&[&k])),
        ),
    );
    let invite = out.to(CALLEE).clone();
    let out = sip_in(
        &mut rec,
        now,
        CALLEE,
        &mk_response(
            &invite,
            200,
            "OK",
            &secure_sdp(
                "10.0.0.2",
                6000,
                "RTP/SAVP",
                &crypto(&[&key(1, Suite::AesCm128HmacSha1_80, 0x22)]),
            ),
        ),
    );
    let mut events = out.events;
    events.extend(
        sip_in(
            &mut rec,
            now,
            CALLER,
            &mk_in_dialog("ACK", "srtp-beep", 1, true, "", ""),
        )
        .events,
    );
    events.extend(drain(&mut rec).events);
    let outcomes: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Announcement { outcome, .. } => Some(outcome.label().to_owned()),
            _ => None,
        })
        .collect();
    assert!(!outcomes.is_empty(), "the beep was due: {events:?}");
    assert!(outcomes.iter().all(|o| o == "encrypted"), "{outcomes:?}");
}

#[test]
fn best_effort_sdes_on_rtp_avp_is_srtp_when_both_sides_give_keys() {
    // PBXes offering optional SRTP keep `RTP/AVP` and add `a=crypto`; when
    // the answer carries a key too, both sides encrypt.
    let mut rec = mk_recorder();
    let now = Instant::now();
    let offer = key(1, Suite::AesCm128HmacSha1_80, 0x11);
    let answer = key(1, Suite::AesCm128HmacSha1_80, 0x22);
    let c = call(
        &mut rec,
        now,
        "sdes-avp",
        &secure_sdp("10.0.0.1", 4000, "RTP/AVP", &crypto(&[&offer])),
        &secure_sdp("10.0.0.2", 6000, "RTP/AVP", &crypto(&[&answer])),
    );
    let mut caller = SrtpSender::new(&offer);
    let packet = caller.protect_rtp(&pcmu(1, 5, 0x55)).unwrap();
    let (relay, events) = rtp_in(&mut rec, now, c.port_for_caller, CALLER_RTP, &packet);
    assert!(relay.is_some());
    assert_eq!(
        frames(&events),
        vec![(earshot_recorder_core::Side::Caller, vec![0x55; 160])]
    );
    // An answer without a key: plain RTP both ways, recorded as it comes.
    let mut rec = mk_recorder();
    let c = call(
        &mut rec,
        now,
        "sdes-declined",
        &secure_sdp("10.0.0.1", 4000, "RTP/AVP", &crypto(&[&offer])),
        &sdp("10.0.0.2", 6000, ""),
    );
    let (_, events) = rtp_in(
        &mut rec,
        now,
        c.port_for_caller,
        CALLER_RTP,
        &pcmu(1, 5, 0x44),
    );
    assert_eq!(
        frames(&events),
        vec![(earshot_recorder_core::Side::Caller, vec![0x44; 160])]
    );
}

#[test]
fn a_policy_that_must_record_every_call_refuses_audio_it_cannot_read() {
    let mut cfg = mk_config();
    cfg.refuse_unreadable_media = true;
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    let now = Instant::now();
    for (id, proto, extra) in [
        (
            "refuse-dtls",
            "UDP/TLS/RTP/SAVPF",
            "a=fingerprint:sha-256 AB:CD:EF\r\na=setup:actpass\r\n".to_owned(),
        ),
        ("refuse-keyless", "RTP/SAVP", String::new()),
        (
            "refuse-unsupported",
            "RTP/SAVP",
            "a=crypto:1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\n"
                .to_owned(),
        ),
    ] {
        let mut rec = Recorder::new(cfg.clone(), &ports);
        let out = sip_in(
            &mut rec,
            now,
            CALLER,
            &mk_invite(
                "008",
                "0201234567",
                id,
                &secure_sdp("10.0.0.1", 4000, proto, &extra),
            ),
        );
        assert_eq!(out.codes_to(CALLER), [488], "{id}");
        assert!(out.methods_to(CALLEE).is_empty(), "{id}: not forwarded");
    }
    // What it can read goes through.
    let mut rec = Recorder::new(cfg, &ports);
    let k = key(1, Suite::AesCm128HmacSha1_80, 0x11);
    let out = sip_in(
        &mut rec,
        now,
        CALLER,
        &mk_invite(
            "008",
            "0201234567",
            "sdes-ok",
            &secure_sdp("10.0.0.1", 4000, "RTP/SAVP", &crypto(&[&k])),
        ),
    );
    assert_eq!(out.methods_to(CALLEE), ["INVITE"]);
}
