//! Announcements injected into the relay, in simulated time: both parties
//! send a packet every 20 ms, the test keeps what each party receives and
//! checks it is one continuous stream per SSRC with the announcement where
//! it belongs.

mod sim;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_recorder_core::announce::{Kind, Outcome, WAIT_FOR_MEDIA};
use earshot_recorder_core::engine::{KernelForward, KernelStream};
use earshot_recorder_core::{
    AnnouncementConfig, AnnouncementMode, AnnouncementTarget, Event, Output, Recorder, Side, g711,
};
use sim::*;

const PTIME: Duration = Duration::from_millis(20);
/// What the caller and the callee say: a constant byte each, so the test
/// tells their audio from an announcement's.
const CALLER_SAYS: u8 = 0x11;
const CALLEE_SAYS: u8 = 0x22;

#[derive(Debug, Clone)]
struct Heard {
    at: Instant,
    seq: u16,
    ts: u32,
    ssrc: u32,
    pt: u8,
    marker: bool,
    payload: Vec<u8>,
    injected: bool,
}

struct Party {
    port: u16,
    from: &'static str,
    ssrc: u32,
    seq: u16,
    ts: u32,
    says: u8,
    sending: bool,
    /// Telephone-event packets to send instead of audio.
    keys: VecDeque<Vec<u8>>,
}

impl Party {
    /// The next packet, or `None` while the party sends nothing (its RTP
    /// clock still runs, as with silence suppression).
    fn next_packet(&mut self) -> Option<Vec<u8>> {
        if !self.sending {
            self.ts = self.ts.wrapping_add(160);
            return None;
        }
        let p = match self.keys.pop_front() {
            Some(event) if !event.is_empty() => rtp(101, self.seq, self.ts, self.ssrc, &event),
            _ => rtp(0, self.seq, self.ts, self.ssrc, &[self.says; 160]),
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        Some(p)
    }

    /// Keys `*` and a digit as RFC 4733 events within the audio stream
    /// (an empty entry is one audio packet between keys).
    fn key(&mut self, keys: &str) {
        for k in keys.chars() {
            let code = match k {
                '*' => 10,
                d => d.to_digit(10).unwrap() as u8,
            };
            for (n, end) in [(0u16, false), (1, false), (2, true), (3, true)] {
                let d = (160 * (n + 1)).to_be_bytes();
                self.keys
                    .push_back(vec![code, if end { 0x8a } else { 0x0a }, d[0], d[1]]);
            }
            for _ in 0..3 {
                self.keys.push_back(Vec::new());
            }
        }
    }
}

struct Sim {
    rec: Recorder,
    now: Instant,
    call_id: String,
    parties: [Party; 2],
    /// What the caller (0) and the callee (1) received.
    heard: [Vec<Heard>; 2],
    events: Vec<Event>,
    /// The kernel fast path as the program behaves, when on: what the core
    /// installed, and copies of what it relayed, handed to the core only
    /// after the timers of the same instant ran (the ring is read later).
    kernel: Option<KernelSim>,
}

#[derive(Default)]
struct KernelSim {
    streams: std::collections::HashMap<KernelStream, KernelForward>,
    copies: Vec<(u16, std::net::SocketAddr, Vec<u8>)>,
    relayed: usize,
}

impl KernelSim {
    /// What the program does with a packet: relays it (shifted) and keeps
    /// a copy, or leaves it to userspace (`None`).
    fn relay(&mut self, port: u16, from: std::net::SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let std::net::SocketAddr::V4(source) = from else {
            return None;
        };
        let f = self.streams.get(&KernelStream {
            local_port: port,
            source,
        })?;
        let ssrc = u32::from_be_bytes(packet[8..12].try_into().unwrap());
        let mut out = packet.to_vec();
        match f.shift {
            Some(s) if s.ssrc != ssrc => return None,
            Some(s) => {
                let seq = u16::from_be_bytes([out[2], out[3]]).wrapping_add(s.seq);
                let ts =
                    u32::from_be_bytes(out[4..8].try_into().unwrap()).wrapping_add(s.timestamp);
                out[2..4].copy_from_slice(&seq.to_be_bytes());
                out[4..8].copy_from_slice(&ts.to_be_bytes());
            }
            None => {}
        }
        self.copies.push((port, from, packet.to_vec()));
        self.relayed += 1;
        Some(out)
    }
}

fn receiver_of(addr_to: std::net::SocketAddr) -> usize {
    if addr_to.ip() == addr(CALLER_RTP).ip() {
        0
    } else {
        1
    }
}

fn parse(data: &[u8], at: Instant, injected: bool) -> Heard {
    Heard {
        at,
        seq: u16::from_be_bytes([data[2], data[3]]),
        ts: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        pt: data[1] & 0x7f,
        marker: data[1] & 0x80 != 0,
        payload: data[12..].to_vec(),
        injected,
    }
}

impl Sim {
    fn new(announcement: AnnouncementConfig, from: &str, to: &str) -> Sim {
        Self::with_sdp(announcement, from, to, None)
    }

    fn with_sdp(
        announcement: AnnouncementConfig,
        from: &str,
        to: &str,
        callee_sdp: Option<String>,
    ) -> Sim {
        let mut cfg = mk_config();
        cfg.announcement = announcement;
        let ports: Vec<u16> = (30000..30100).step_by(2).collect();
        let mut rec = Recorder::new(cfg, &ports);
        let t0 = Instant::now();
        let call_id = format!("ann-{from}-{to}");
        let (call, events) = match callee_sdp {
            None => {
                let call = establish(&mut rec, t0, from, to, &call_id);
                let events = call.events.clone();
                (call, events)
            }
            Some(body) => establish_with(&mut rec, t0, from, to, &call_id, &body),
        };
        Sim {
            rec,
            now: t0 + Duration::from_secs(1),
            call_id,
            parties: [
                Party {
                    port: call.port_for_caller,
                    from: CALLER_RTP,
                    ssrc: 0xca11,
                    seq: 1000,
                    ts: 80_000,
                    says: CALLER_SAYS,
                    sending: true,
                    keys: VecDeque::new(),
                },
                Party {
                    port: call.port_for_callee,
                    from: CALLEE_RTP,
                    ssrc: 0xca1ee,
                    seq: 60_000,
                    ts: 4_000_000_000,
                    says: CALLEE_SAYS,
                    sending: true,
                    keys: VecDeque::new(),
                },
            ],
            heard: [Vec::new(), Vec::new()],
            events,
            kernel: None,
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rec.poll_output() {
                Output::Rtp { relay, data } => {
                    let who = receiver_of(relay.to);
                    self.heard[who].push(parse(&data, self.now, true));
                }
                Output::Event(e) => self.events.push(e),
                Output::Kernel { stream, forward } => {
                    let k = self
                        .kernel
                        .as_mut()
                        .expect("no kernel output while it is off");
                    match forward {
                        Some(f) => {
                            k.streams.insert(stream, f);
                        }
                        None => {
                            k.streams.remove(&stream);
                        }
                    }
                }
                Output::Sip { .. } | Output::Divert { .. } => {}
                Output::Timeout(_) => return,
            }
        }
    }

    /// One packet time: each sending party sends, then timers run.
    fn step(&mut self) {
        self.now += PTIME;
        for i in 0..2 {
            let Some(mut packet) = self.parties[i].next_packet() else {
                continue;
            };
            let (port, from) = (self.parties[i].port, self.parties[i].from);
            if let Some(out) = self
                .kernel
                .as_mut()
                .and_then(|k| k.relay(port, addr(from), &packet))
            {
                self.heard[1 - i].push(parse(&out, self.now, false));
                continue;
            }
            let relay = self.rec.handle_rtp(self.now, port, addr(from), &mut packet);
            if let Some(r) = relay {
                let who = receiver_of(r.to);
                assert_eq!(who, 1 - i, "relayed to the other party");
                self.heard[who].push(parse(&packet, self.now, false));
            }
            self.drain();
        }
        self.rec.handle_timeout(self.now);
        self.drain();
        let copies = self
            .kernel
            .as_mut()
            .map(|k| std::mem::take(&mut k.copies))
            .unwrap_or_default();
        for (port, from, mut packet) in copies {
            self.rec
                .handle_rtp_copy(self.now, port, from, &mut packet, 0);
            self.drain();
        }
    }

    /// Turns the kernel fast path on.
    fn with_kernel(mut self) -> Self {
        self.rec.set_kernel_relay(true);
        self.kernel = Some(KernelSim::default());
        self
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn sip(&mut self, from: &str, text: &str) -> Out {
        let out = sip_in(&mut self.rec, self.now, from, text);
        self.events.extend(out.events.iter().cloned());
        out
    }

    fn announcements(&self) -> Vec<(Kind, Side, Outcome)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Announcement {
                    kind, to, outcome, ..
                } => Some((*kind, *to, *outcome)),
                _ => None,
            })
            .collect()
    }
}

/// A call like `establish`, with the callee answering with its own SDP body.
fn establish_with(
    rec: &mut Recorder,
    now: Instant,
    from: &str,
    to: &str,
    call_id: &str,
    answer: &str,
) -> (Call, Vec<Event>) {
    let out = sip_in(
        rec,
        now,
        CALLER,
        &mk_invite(from, to, call_id, &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    let mut events = out.events;
    let out = sip_in(
        rec,
        now + Duration::from_secs(1),
        CALLEE,
        &mk_response(&invite, 200, "OK", answer),
    );
    let ok = out.to(CALLER).clone();
    events.extend(out.events);
    sip_in(
        rec,
        now + Duration::from_secs(1),
        CALLER,
        &mk_in_dialog("ACK", call_id, 1, true, "", ""),
    );
    let call = Call {
        id: call_id.to_owned(),
        port_for_callee: sdp_port(&invite),
        port_for_caller: sdp_port(&ok),
        invite_to_callee: invite,
        events: events.clone(),
    };
    (call, events)
}

/// Every SSRC's packets, as received, continue without gaps or duplicates,
/// and timestamps advance with arrival time (160 per 20 ms).
fn assert_continuous(heard: &[Heard], who: &str) {
    let mut last: std::collections::HashMap<u32, &Heard> = Default::default();
    for h in heard {
        if let Some(prev) = last.get(&h.ssrc) {
            assert_eq!(
                h.seq,
                prev.seq.wrapping_add(1),
                "{who}: sequence continues (ssrc {:x}) after {prev:?}: {h:?}",
                h.ssrc
            );
            if h.pt != 101 && prev.pt != 101 {
                let frames = ((h.at - prev.at).as_millis() as u32).div_ceil(20).max(1);
                assert_eq!(
                    h.ts.wrapping_sub(prev.ts),
                    frames * 160,
                    "{who}: timestamp follows time (ssrc {:x}) after {prev:?}: {h:?}",
                    h.ssrc
                );
            }
        }
        last.insert(h.ssrc, h);
    }
}

fn tone_power(payload: &[u8], hz: f32) -> f32 {
    let samples: Vec<f32> = payload
        .iter()
        .map(|&b| f32::from(g711::ulaw_to_linear(b)))
        .collect();
    let w = 2.0 * std::f32::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in &samples {
        let s0 = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).sqrt() / samples.len() as f32 * 2.0
}

fn beep_both() -> AnnouncementConfig {
    AnnouncementConfig {
        mode: AnnouncementMode::Beep,
        to: AnnouncementTarget::Both,
        ..Default::default()
    }
}

#[test]
fn always_call_beeps_to_both_inside_their_streams() {
    let mut sim = Sim::new(beep_both(), "008", "500");
    sim.run(Duration::from_secs(2));
    for (who, name, other_says) in [(0, "caller", CALLEE_SAYS), (1, "callee", CALLER_SAYS)] {
        let heard = &sim.heard[who];
        assert_continuous(heard, name);
        // The first 500 ms are the beep (25 packets), then the other party.
        let injected: Vec<&Heard> = heard.iter().take_while(|h| h.injected).collect();
        assert_eq!(injected.len(), 25, "{name} hears a 500 ms beep first");
        assert!(injected[0].marker, "the beep starts a talkspurt");
        assert!(
            heard[25..]
                .iter()
                .all(|h| !h.injected && h.payload[0] == other_says)
        );
        let expected_ssrc = sim.parties[1 - who].ssrc;
        assert!(heard.iter().all(|h| h.ssrc == expected_ssrc), "same SSRC");
        for h in &injected[1..24] {
            let at_beep = tone_power(&h.payload, 1400.0);
            assert!(at_beep > 6000.0, "{name}: 1400 Hz at {at_beep}");
            assert!(tone_power(&h.payload, 700.0) < at_beep / 20.0);
        }
    }
    assert_eq!(
        sim.announcements(),
        [
            (Kind::Beep, Side::Callee, Outcome::Played),
            (Kind::Beep, Side::Caller, Outcome::Played)
        ]
    );
    assert_eq!(
        sim.rec.stats().announcements.get(&("beep", "played")),
        Some(&2)
    );
    // The recording gets what each party heard: beep frames on both channels.
    let beep_frames = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::Media(f) if f.payload[0] != CALLER_SAYS && f.payload[0] != CALLEE_SAYS))
        .count();
    assert_eq!(beep_frames, 50);
}

#[test]
fn never_and_unknown_users_hear_nothing_and_packets_pass_unchanged() {
    for (from, to) in [("003", "500"), ("777", "500")] {
        let mut sim = Sim::new(beep_both(), from, to);
        sim.run(Duration::from_secs(1));
        assert!(sim.announcements().is_empty());
        for who in 0..2 {
            assert!(sim.heard[who].iter().all(|h| !h.injected));
            assert_eq!(sim.heard[who].len(), 50);
            let first = &sim.heard[who][0];
            assert_eq!(first.seq, sim.parties[1 - who].seq.wrapping_sub(50));
        }
    }
}

#[test]
fn far_end_only_hears_the_prompt_and_recording_keeps_it() {
    let prompt: Arc<[i16]> =
        earshot_recorder_core::announce::tones(&[(1000.0, Duration::from_millis(1010))]).into();
    let cfg = AnnouncementConfig {
        mode: AnnouncementMode::Prompt,
        prompt: Some(prompt),
        to: AnnouncementTarget::FarEnd,
        ..Default::default()
    };
    // 008 (Always) calls 500: the far end is the callee.
    let mut sim = Sim::new(cfg, "008", "500");
    sim.run(Duration::from_secs(2));
    assert!(
        sim.heard[0].iter().all(|h| !h.injected),
        "the user hears no prompt"
    );
    let injected = sim.heard[1].iter().filter(|h| h.injected).count();
    assert_eq!(injected, 51, "1010 ms of prompt, padded to whole packets");
    assert_continuous(&sim.heard[1], "callee");
    assert_eq!(
        sim.announcements(),
        [(Kind::Prompt, Side::Callee, Outcome::Played)]
    );
}

#[test]
fn ending_the_call_cuts_the_prompt() {
    let prompt: Arc<[i16]> =
        earshot_recorder_core::announce::tones(&[(1000.0, Duration::from_secs(5))]).into();
    let cfg = AnnouncementConfig {
        mode: AnnouncementMode::Prompt,
        prompt: Some(prompt),
        to: AnnouncementTarget::FarEnd,
        ..Default::default()
    };
    let mut sim = Sim::new(cfg, "008", "500");
    sim.run(Duration::from_secs(1));
    let id = sim.call_id.clone();
    sim.sip(CALLEE, &mk_in_dialog("BYE", &id, 1, false, "", ""));
    let played: Vec<Duration> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Announcement {
                outcome: Outcome::Cut,
                played,
                ..
            } => Some(*played),
            _ => None,
        })
        .collect();
    assert_eq!(played, [Duration::from_secs(1)]);
    // The cut is reported before the call ends, so the sidecar has it.
    let cut_at = sim
        .events
        .iter()
        .position(|e| matches!(e, Event::Announcement { .. }))
        .unwrap();
    let ended_at = sim
        .events
        .iter()
        .position(|e| matches!(e, Event::CallEnded { .. }))
        .unwrap();
    assert!(cut_at < ended_at);
}

#[test]
fn on_demand_toggle_beeps_then_stop_tone_and_far_end_cannot_toggle() {
    let cfg = AnnouncementConfig {
        mode: AnnouncementMode::Beep,
        to: AnnouncementTarget::FarEnd,
        stop_tone: true,
        ..Default::default()
    };
    // 012 (OnDemand *5) calls 500.
    let mut sim = Sim::new(cfg, "012", "500");
    sim.run(Duration::from_secs(1));
    assert!(sim.announcements().is_empty(), "not recording yet");
    // The far end keys the code: nothing.
    sim.parties[1].key("*5");
    sim.run(Duration::from_secs(1));
    assert!(sim.announcements().is_empty());
    assert!(sim.heard.iter().flatten().all(|h| !h.injected));
    // The user keys it: a beep to the far end only.
    sim.parties[0].key("*5");
    sim.run(Duration::from_secs(2));
    assert_eq!(
        sim.announcements(),
        [(Kind::Beep, Side::Callee, Outcome::Played)]
    );
    // And again: recording stops, the far end hears the stop tone.
    sim.parties[0].key("*5");
    sim.run(Duration::from_secs(2));
    assert_eq!(
        sim.announcements(),
        [
            (Kind::Beep, Side::Callee, Outcome::Played),
            (Kind::StopTone, Side::Callee, Outcome::Played)
        ]
    );
    assert!(sim.heard[0].iter().all(|h| !h.injected));
    let stop: Vec<&Heard> = sim.heard[1]
        .iter()
        .filter(|h| h.injected)
        .skip(25)
        .collect();
    assert_eq!(stop.len(), 23, "450 ms of stop tone, whole packets");
    assert!(tone_power(&stop[3].payload, 700.0) > 6000.0);
    assert_continuous(&sim.heard[1], "callee");
    assert_continuous(&sim.heard[0], "caller");
    assert_eq!(sim.rec.stats().recording_toggles.get("off"), Some(&1));
}

#[test]
fn continuity_across_silence_hold_re_invite_and_ssrc_change_with_rtcp_rewritten() {
    let cfg = AnnouncementConfig {
        mode: AnnouncementMode::Beep,
        to: AnnouncementTarget::Both,
        periodic: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let mut sim = Sim::new(cfg, "008", "500");
    sim.run(Duration::from_secs(2));
    // The caller goes quiet (silence suppression) over the 5 s reminder:
    // the callee hears a beep the caller never replaced, so the caller's
    // later packets are shifted by the beep's 10 packets.
    sim.parties[0].sending = false;
    sim.run(Duration::from_secs(4));
    sim.parties[0].sending = true;
    sim.run(Duration::from_secs(1));
    let beeps_to_callee = sim
        .announcements()
        .iter()
        .filter(|a| a.1 == Side::Callee && a.0 == Kind::PeriodicBeep)
        .count();
    assert_eq!(beeps_to_callee, 1);
    assert_continuous(&sim.heard[1], "callee");
    let last = sim.heard[1].last().unwrap();
    let shift = last.seq.wrapping_sub(sim.parties[0].seq.wrapping_sub(1));
    assert_eq!(shift, 10, "ten beep packets the caller did not send");

    // RTCP: the caller's sender report is brought into the callee's view...
    let caller_rtcp = sim.parties[0].port + 1;
    let mut sr = vec![0x81, 200, 0, 12];
    sr.extend_from_slice(&0xca11u32.to_be_bytes());
    sr.extend_from_slice(&[0; 8]); // NTP
    let ts_sent = sim.parties[0].ts;
    sr.extend_from_slice(&ts_sent.to_be_bytes());
    sr.extend_from_slice(&500u32.to_be_bytes()); // packets
    sr.extend_from_slice(&80_000u32.to_be_bytes()); // octets
    // ...with one report block about the callee's stream, which is unshifted.
    sr.extend_from_slice(&0xca1eeu32.to_be_bytes());
    sr.extend_from_slice(&[0; 4]);
    sr.extend_from_slice(&77u32.to_be_bytes());
    sr.extend_from_slice(&[0; 12]);
    let relay = sim
        .rec
        .handle_rtp(sim.now, caller_rtcp, addr("10.0.0.1:4001"), &mut sr)
        .expect("RTCP relayed");
    assert_eq!(relay.to, addr("10.0.0.2:6001"));
    let ts_out = u32::from_be_bytes(sr[16..20].try_into().unwrap());
    let packets_out = u32::from_be_bytes(sr[20..24].try_into().unwrap());
    let octets_out = u32::from_be_bytes(sr[24..28].try_into().unwrap());
    // Held and injected counts: 25 start-beep packets replaced 25 of the
    // caller's; 10 reminder packets replaced none.
    assert_eq!(packets_out, 510);
    assert_eq!(octets_out, 80_000 + 1600);
    assert_eq!(
        ts_out.wrapping_sub(last.ts),
        ts_sent.wrapping_sub(sim.parties[0].ts.wrapping_sub(160))
    );
    assert_eq!(u32::from_be_bytes(sr[36..40].try_into().unwrap()), 77);
    // The callee's receiver report about the caller's stream goes back in
    // the caller's own numbering.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&0xca1eeu32.to_be_bytes());
    rr.extend_from_slice(&0xca11u32.to_be_bytes());
    rr.extend_from_slice(&[0; 4]);
    rr.extend_from_slice(&(0x1_0000u32 + u32::from(last.seq)).to_be_bytes());
    rr.extend_from_slice(&[0; 12]);
    let callee_rtcp = sim.parties[1].port + 1;
    sim.rec
        .handle_rtp(sim.now, callee_rtcp, addr("10.0.0.2:6001"), &mut rr)
        .expect("RTCP relayed");
    let ext = u32::from_be_bytes(rr[16..20].try_into().unwrap());
    assert_eq!(
        ext,
        0x1_0000 + u32::from(sim.parties[0].seq.wrapping_sub(1))
    );

    // Hold by re-INVITE: the callee (on hold) still gets its reminder, the
    // caller (sendonly) is not sent one.
    let id = sim.call_id.clone();
    let hold = mk_in_dialog(
        "INVITE",
        &id,
        2,
        true,
        &sdp("10.0.0.1", 4000, "a=sendonly\r\n"),
        "",
    );
    let out = sim.sip(CALLER, &hold);
    let fwd = out.to(CALLEE).clone();
    sim.sip(
        CALLEE,
        &mk_response(&fwd, 200, "OK", &sdp("10.0.0.2", 6000, "a=recvonly\r\n")),
    );
    sim.parties[1].sending = false;
    sim.run(Duration::from_secs(3));
    let resume = mk_in_dialog("INVITE", &id, 3, true, &sdp("10.0.0.1", 4000, ""), "");
    let out = sim.sip(CALLER, &resume);
    let fwd = out.to(CALLEE).clone();
    sim.sip(
        CALLEE,
        &mk_response(&fwd, 200, "OK", &sdp("10.0.0.2", 6000, "")),
    );
    sim.parties[1].sending = true;
    // The caller's phone restarts its stream with a new SSRC.
    sim.parties[0].ssrc = 0xbeef;
    sim.parties[0].seq = 7;
    sim.run(Duration::from_millis(5500));
    // Each is reported when it ends: a skipped one at once, a played one after it played.
    let outcomes: Vec<(Side, Outcome)> = sim
        .announcements()
        .into_iter()
        .filter(|a| a.0 == Kind::PeriodicBeep)
        .map(|a| (a.1, a.2))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Side::Callee, Outcome::Played),
            (Side::Caller, Outcome::Played),
            (Side::Caller, Outcome::OnHold),
            (Side::Callee, Outcome::Played),
            (Side::Callee, Outcome::Played),
            (Side::Caller, Outcome::Played),
        ]
    );
    assert_continuous(&sim.heard[0], "caller");
    assert_continuous(&sim.heard[1], "callee");
    // The newest reminder went out in the new SSRC's numbering.
    let new_stream: Vec<&Heard> = sim.heard[1].iter().filter(|h| h.ssrc == 0xbeef).collect();
    // Its first ten packets came during the reminder (held back); then it
    // passes in its own numbering.
    assert_eq!(
        new_stream[0].seq, 17,
        "a new source passes with its own numbering"
    );
    assert_eq!(new_stream.iter().filter(|h| h.injected).count(), 10);
}

#[test]
fn a_codec_that_cannot_be_encoded_skips_the_announcement_not_the_recording() {
    let amr = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 6000 RTP/AVP 96\r\na=rtpmap:96 AMR/8000\r\n";
    let mut sim = Sim::with_sdp(beep_both(), "008", "500", Some(amr.to_owned()));
    for p in &mut sim.parties {
        p.sending = false;
    }
    sim.run(Duration::from_secs(1));
    assert_eq!(
        sim.announcements(),
        [
            (Kind::Beep, Side::Caller, Outcome::UnsupportedCodec),
            (Kind::Beep, Side::Callee, Outcome::UnsupportedCodec)
        ]
    );
    assert_eq!(sim.rec.stats().recordings_active, 1, "still recorded");
}

#[test]
fn without_media_from_the_sender_the_announcement_starts_its_own_stream() {
    let mut sim = Sim::new(beep_both(), "008", "500");
    let answered = sim.now;
    sim.parties[0].sending = false;
    sim.run(WAIT_FOR_MEDIA + Duration::from_millis(500));
    let to_callee: Vec<Heard> = sim.heard[1].clone();
    assert_eq!(to_callee.len(), 25, "the beep alone");
    assert_continuous(&sim.heard[1], "callee");
    assert_eq!(
        to_callee[0].at - answered,
        WAIT_FOR_MEDIA,
        "after waiting for the caller's stream"
    );
    // The caller starts later: its own stream, its own numbering.
    sim.parties[0].sending = true;
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.heard[1].last().unwrap().ssrc, 0xca11);
    assert_ne!(to_callee[0].ssrc, 0xca11);
}

/// Runs of announcement packets a party heard: (first index, length).
fn injected_runs(h: &[Heard]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, x) in h.iter().enumerate() {
        if x.injected {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == i => *len += 1,
                _ => runs.push((i, 1)),
            }
        }
    }
    runs
}

/// The kernel fast path changes nothing anybody hears or what is recorded
/// but when an announcement starts: the same call (an on-demand user
/// toggling twice, periodic beeps, the far end keying) with the core
/// handing streams to a kernel that relays them as the program does
/// (copies read only after the timers of the same instant, the worst
/// order) gives both parties one continuous stream with the same
/// announcements, each starting at most one packet later than in
/// userspace (the packet the kernel relayed before the core knew), and the
/// recording the same frames; the kernel relayed most of it.
#[test]
fn the_kernel_fast_path_changes_nothing_heard_or_recorded() {
    let cfg = AnnouncementConfig {
        mode: AnnouncementMode::Beep,
        to: AnnouncementTarget::Both,
        stop_tone: true,
        periodic: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let run = |kernel: bool| {
        let mut sim = Sim::new(cfg.clone(), "012", "500");
        if kernel {
            sim = sim.with_kernel();
        }
        sim.run(Duration::from_secs(2));
        sim.parties[1].key("*5");
        sim.run(Duration::from_secs(2));
        sim.parties[0].key("*5");
        sim.run(Duration::from_secs(12));
        sim.parties[0].key("*5");
        sim.run(Duration::from_secs(3));
        sim.parties[0].key("*5");
        sim.run(Duration::from_secs(7));
        sim
    };
    let (user, kernel) = (run(false), run(true));
    for who in 0..2 {
        assert_continuous(&kernel.heard[who], "with the kernel");
        assert_eq!(
            kernel.heard[who].len(),
            user.heard[who].len(),
            "party {who}: packets heard"
        );
        let (k, u) = (
            injected_runs(&kernel.heard[who]),
            injected_runs(&user.heard[who]),
        );
        assert_eq!(k.len(), u.len(), "party {who}: announcements heard");
        for ((ks, kl), (us, ul)) in k.iter().zip(&u) {
            assert_eq!(kl, ul, "party {who}: an announcement's length");
            assert!(
                (*us..=us + 1).contains(ks),
                "party {who}: started at {ks}, in userspace at {us}"
            );
        }
    }
    let media = |s: &Sim, side: Side| {
        s.events
            .iter()
            .filter(|e| matches!(e, Event::Media(f) if f.side == side))
            .count()
    };
    for side in [Side::Caller, Side::Callee] {
        assert_eq!(
            media(&kernel, side),
            media(&user, side),
            "{side:?}: frames recorded"
        );
    }
    // The same announcements (one may end a packet after the other's).
    let sorted = |s: &Sim| {
        let mut a: Vec<String> = s.announcements().iter().map(|a| format!("{a:?}")).collect();
        a.sort();
        a
    };
    assert_eq!(sorted(&kernel), sorted(&user));
    assert!(
        kernel.announcements().len() >= 5,
        "{:?}",
        kernel.announcements()
    );
    let k = kernel.kernel.as_ref().unwrap();
    let all = kernel.heard[0].len() + kernel.heard[1].len();
    assert!(
        k.relayed * 10 > all * 8,
        "the kernel relayed {} of {all}",
        k.relayed
    );
    assert!(
        kernel
            .rec
            .stats()
            .kernel
            .get("announcement")
            .copied()
            .unwrap_or(0)
            >= 5
    );
}
