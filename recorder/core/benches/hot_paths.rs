//! The recorder core's hot paths (`make bench`): SIP parse + proxy decision
//! per INVITE, RTP relay per packet on a recorded call, G.711 decode, and the
//! timeline placing and writing out one packet.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use earshot_recorder_core::codec::{Codec, NARROWBAND, SideDecoder};
use earshot_recorder_core::sip::Message;
use earshot_recorder_core::timeline::Timeline;
use earshot_recorder_core::{ChannelLayout, PauseBehaviour, SipLimits, UnknownSources};
use earshot_recorder_core::{
    CoreConfig, EffectiveUser, IpNet, Output, Peer, Recorder, RecordingMode, Side, Target, Timers,
    Transport,
};

fn udp(s: &str) -> Target {
    Target {
        transport: Transport::Udp,
        addr: s.parse().unwrap(),
    }
}

fn mk_recorder() -> Recorder {
    let mut users = BTreeMap::new();
    users.insert(
        "008".to_owned(),
        EffectiveUser {
            display_name: None,
            mode: RecordingMode::Always,
            shortcode: None,
        },
    );
    let cfg = CoreConfig {
        advertised: "10.0.0.9:5060".parse().unwrap(),
        split: None,
        tls_port: None,
        peers: vec![Peer {
            siprec: false,
            name: "pbx".into(),
            sources: vec![IpNet::parse("10.0.0.0/24").unwrap()],
            next_hop: Some(udp("10.0.0.2:5060")),
        }],
        users,
        hosts: BTreeMap::new(),
        timers: Timers::default(),
        seed: [1; 32],
        unknown_sources: UnknownSources::Refuse,
        limits: SipLimits::default(),
        allow_local_media: false,
        refuse_video: false,
        refuse_unreadable_media: false,
        announcement: Default::default(),
    };
    let ports: Vec<u16> = (30000..40000).step_by(2).collect();
    Recorder::new(cfg, &ports)
}

fn invite(n: u64) -> String {
    let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    format!(
        "INVITE sip:500@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:008@pbx>;tag=t{n}\r\nTo: <sip:500@pbx>\r\nCall-ID: bench-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:008@10.0.0.1:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn drain(rec: &mut Recorder) -> Vec<Output> {
    let mut v = Vec::new();
    loop {
        match rec.poll_output() {
            Output::Timeout(_) => return v,
            o => v.push(o),
        }
    }
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    // The worst list-header message: one 64 KB datagram of `Via: a,a,a,...`
    // (about 32 000 elements). Its cost per byte is what a stranger can
    // make a shard spend; the parser gives up after MAX_HEADERS elements.
    let worst = {
        let head = "OPTIONS sip:x@10.0.0.9 SIP/2.0\r\nVia: ";
        let tail = "\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: w\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let n = (earshot_recorder_core::sip::message::MAX_MESSAGE - head.len() - tail.len()) / 2;
        format!("{head}{}a{tail}", "a,".repeat(n - 1))
    };
    c.bench_function(
        "sip: parse the worst list-header message (64 KB of Via: a,a,...)",
        |b| b.iter(|| Message::parse(std::hint::black_box(worst.as_bytes())).is_err()),
    );
    c.bench_function("sip: parse INVITE", |b| {
        let text = invite(1);
        b.iter(|| black_box(Message::parse(black_box(text.as_bytes())).unwrap()))
    });
    c.bench_function(
        "sip: INVITE through the proxy (parse, decide, rewrite SDP, forward)",
        |b| {
            let mut rec = mk_recorder();
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                rec.handle_sip(t0, udp("10.0.0.1:5060"), invite(n).as_bytes());
                black_box(drain(&mut rec));
                if n.is_multiple_of(2000) {
                    // Keep the call table the size of a busy recorder, not ever-growing.
                    rec = mk_recorder();
                }
            })
        },
    );

    // One answered, recorded call; then RTP packets through it.
    let mut rec = mk_recorder();
    rec.handle_sip(t0, udp("10.0.0.1:5060"), invite(0).as_bytes());
    let fwd = drain(&mut rec)
        .into_iter()
        .find_map(|o| match o {
            Output::Sip { target, data }
                if target.addr.port() == 5060 && target.addr.ip().to_string() == "10.0.0.2" =>
            {
                Some(Message::parse(&data).unwrap())
            }
            _ => None,
        })
        .unwrap();
    let answer_body = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    let mut ok = "SIP/2.0 200 OK\r\n".to_string();
    for v in fwd.headers_named("Via") {
        ok.push_str(&format!("Via: {v}\r\n"));
    }
    ok.push_str(&format!(
        "From: {}\r\nTo: {};tag=b\r\nCall-ID: bench-0\r\nCSeq: 1 INVITE\r\nContact: <sip:500@10.0.0.2>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer_body}",
        fwd.header("From").unwrap(),
        fwd.header("To").unwrap(),
        answer_body.len()
    ));
    rec.handle_sip(t0, udp("10.0.0.2:5060"), ok.as_bytes());
    let answer = drain(&mut rec)
        .into_iter()
        .find_map(|o| match o {
            Output::Sip { data, .. } => {
                Message::parse(&data).ok().filter(|m| m.code() == Some(200))
            }
            _ => None,
        })
        .unwrap();
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    let port: u16 = body
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let src: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    // Time moves 20 ms a packet, as the packets do: at a constant instant
    // the leg's rate limit (250 a second) would drop all but the first.
    let mut now = t0;
    let mut seq = 0u16;
    let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(&[0xff; 160]);
    let mut next = move || {
        seq = seq.wrapping_add(1);
        now += std::time::Duration::from_millis(20);
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        (now, pkt.clone())
    };
    c.bench_function("rtp: relay one packet of a recorded call", |b| {
        b.iter(|| {
            let (at, mut p) = next();
            black_box(rec.handle_rtp(at, port, src, &mut p));
            black_box(drain(&mut rec));
        })
    });
    // The kernel fast path: the core reads the copy of a packet the kernel
    // relayed (recording, DTMF, numbering), relays nothing.
    c.bench_function("rtp: read the copy of a packet the kernel relayed", |b| {
        b.iter(|| {
            let (at, mut p) = next();
            rec.handle_rtp_copy(at, port, src, &mut p, 0);
            black_box(drain(&mut rec));
        })
    });
    assert_eq!(
        rec.stats().rtp_dropped.values().sum::<u64>(),
        0,
        "every packet and copy read in full: {:?}",
        rec.stats().rtp_dropped
    );

    // SDES-SRTP: what decrypting a copy of each packet for the recording
    // adds to the relay of that packet (the bench above), per suite.
    for suite in earshot_recorder_core::srtp::Suite::ALL {
        let key = earshot_recorder_core::srtp::SdesKey::new(
            1,
            suite,
            &vec![7u8; suite.master_key_len() + suite.master_salt_len()],
        )
        .unwrap();
        c.bench_function(
            &format!(
                "srtp: decrypt a copy of one 20 ms PCMU packet ({})",
                suite.name()
            ),
            |b| {
                b.iter_custom(|iters| {
                    let mut tx = earshot_recorder_core::srtp::SrtpSender::new(&key);
                    let mut rx = earshot_recorder_core::srtp::SrtpReceiver::new(&key);
                    let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                    pkt.extend_from_slice(&[0xff; 160]);
                    let packets: Vec<Vec<u8>> = (0..iters)
                        .map(|i| {
                            pkt[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                            pkt[4..8].copy_from_slice(&((i as u32) * 160).to_be_bytes());
                            tx.protect_rtp(&pkt).unwrap()
                        })
                        .collect();
                    let start = std::time::Instant::now();
                    for p in &packets {
                        black_box(rx.unprotect_rtp(black_box(p)).ok());
                    }
                    start.elapsed()
                })
            },
        );
    }

    c.bench_function("g711: decode 20 ms (160 samples)", |b| {
        let payload = [0x55u8; 160];
        let mut d = SideDecoder::new(Codec::of("PCMU").unwrap(), NARROWBAND);
        let mut out = Vec::with_capacity(160);
        b.iter(|| {
            out.clear();
            d.decode(black_box(&payload), &mut out);
            black_box(out.len())
        })
    });
    c.bench_function(
        "timeline: place and write out one 20 ms packet per side",
        |b| {
            let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
            let samples = [100i16; 160];
            let mut n = 0u32;
            b.iter(|| {
                let at = t0 + Duration::from_millis(20 * n as u64);
                t.push(Side::Caller, at, 1, 160 * n, &samples);
                t.push(Side::Callee, at, 2, 160 * n, &samples);
                black_box(t.drain(at));
                n += 1;
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
