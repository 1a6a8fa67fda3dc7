//! RTP streams synthesised sample by sample — G.711 µ-law tones, silence and
//! RFC 4733 DTMF events — written as the Ethernet/IPv4/UDP pcap files SIPp's
//! `play_pcap_audio` replays (one packet per 20 ms).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use earshot_recorder_core::g711::Law;

/// One RTP packet and when it is sent, from the start of the stream.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Send time.
    pub at: Duration,
    /// The RTP packet.
    pub rtp: Vec<u8>,
}

/// Builds one RTP stream (one SSRC) of G.711 audio (µ-law unless
/// [`RtpStream::alaw`]) and telephone events.
#[derive(Debug, Clone)]
pub struct RtpStream {
    ssrc: u32,
    law: Law,
    seq: u16,
    ts: u32,
    at: Duration,
    phase: f64,
    /// RTP clock ticks per 20 ms packet (160 at 8000 Hz, 960 at Opus's 48000).
    ticks: u32,
    /// The packets so far.
    pub packets: Vec<Packet>,
}

const PTIME: Duration = Duration::from_millis(20);

impl RtpStream {
    /// An empty stream.
    pub fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            law: Law::Ulaw,
            seq: 1000,
            ts: 16000,
            at: Duration::ZERO,
            phase: 0.0,
            ticks: 160,
            packets: Vec::new(),
        }
    }

    /// An RTP clock of `hz` from now on (Opus: 48000).
    pub fn clock(mut self, hz: u32) -> Self {
        self.ticks = hz / 50;
        self
    }

    fn push(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        self.packets.push(Packet {
            at: self.at,
            rtp: p,
        });
        self.seq = self.seq.wrapping_add(1);
    }

    /// Audio from now on in A-law (PCMA, payload type 8).
    pub fn alaw(mut self) -> Self {
        self.law = Law::Alaw;
        self
    }

    /// `ms` milliseconds of a sine at `freq` Hz (0 for silence), amplitude about -10 dBm0.
    pub fn tone(mut self, freq: f64, ms: u64) -> Self {
        for _ in 0..ms / 20 {
            let payload: Vec<u8> = (0..160)
                .map(|_| {
                    let v = (10000.0 * self.phase.sin()) as i16;
                    self.phase += 2.0 * std::f64::consts::PI * freq / 8000.0;
                    self.law.encode(if freq == 0.0 { 0 } else { v })
                })
                .collect();
            let ts = self.ts;
            let pt = match self.law {
                Law::Ulaw => 0,
                Law::Alaw => 8,
            };
            self.push(pt, false, ts, &payload);
            self.ts = self.ts.wrapping_add(160);
            self.at += PTIME;
        }
        self
    }

    /// A DTMF key as RFC 4733 events (payload type 101) lasting `ms`, with
    /// the three end packets real phones send; audio pauses meanwhile.
    pub fn key(mut self, key: char, ms: u64) -> Self {
        let code = match key {
            '*' => 10,
            '#' => 11,
            d => d.to_digit(10).expect("a DTMF key") as u8,
        };
        let start = self.ts;
        let packets = ms / 20;
        for n in 1..=packets {
            let duration = (n * u64::from(self.ticks)) as u16;
            let end = n == packets;
            let copies = if end { 3 } else { 1 };
            for _ in 0..copies {
                let d = duration.to_be_bytes();
                self.push(
                    101,
                    n == 1,
                    start,
                    &[code, if end { 0x8a } else { 0x0a }, d[0], d[1]],
                );
            }
            self.at += PTIME;
        }
        self.ts = self.ts.wrapping_add(packets as u32 * self.ticks);
        self
    }

    /// `ms` milliseconds in which nothing is sent (hold, silence
    /// suppression); the RTP clock runs on.
    pub fn gap(mut self, ms: u64) -> Self {
        self.ts = self
            .ts
            .wrapping_add((ms * u64::from(self.ticks) / 20) as u32);
        self.at += Duration::from_millis(ms);
        self
    }

    /// Drops about `percent` % of the packets, chosen by a seeded generator.
    pub fn lose(mut self, percent: u32, seed: u64) -> Self {
        let mut x = seed | 1;
        self.packets.retain(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 100) as u32 >= percent
        });
        self
    }

    /// Drops every `n`th packet (the `n`th, the `2n`th, ...): single losses,
    /// each with its neighbours kept.
    pub fn drop_every(mut self, n: usize) -> Self {
        let mut i = 0;
        self.packets.retain(|_| {
            i += 1;
            i % n.max(1) != 0
        });
        self
    }

    /// Audio another encoder made (`bytes`, e.g. from [`ffmpeg_encode`]),
    /// sent as payload type `pt` in 20 ms packets of `per_packet` bytes,
    /// the RTP clock advancing 160 per packet (8000 Hz: G.711 and, by
    /// RFC 3551, G.722).
    pub fn encoded(self, pt: u8, bytes: &[u8], per_packet: usize) -> Self {
        let packets: Vec<&[u8]> = bytes.chunks_exact(per_packet).collect();
        self.packets_of(pt, &packets)
    }

    /// One 20 ms packet per payload, as payload type `pt`.
    pub fn packets_of(mut self, pt: u8, payloads: &[&[u8]]) -> Self {
        for payload in payloads {
            let ts = self.ts;
            self.push(pt, false, ts, payload);
            self.ts = self.ts.wrapping_add(self.ticks);
            self.at += PTIME;
        }
        self
    }

    /// The stream as SRTP under `key` (RFC 3711; the last step, after any
    /// loss is made): what a peer sends that announced `key` in its SDP
    /// (`a=crypto:` + [`SdesKey::to_attribute`]). Every call that replays
    /// the pcap sends the same packets, as SIPp replays it unchanged.
    ///
    /// [`SdesKey::to_attribute`]: earshot_recorder_core::srtp::SdesKey::to_attribute
    pub fn protected(mut self, key: &earshot_recorder_core::srtp::SdesKey) -> Self {
        let mut sender = earshot_recorder_core::srtp::SrtpSender::new(key);
        for p in &mut self.packets {
            p.rtp = sender
                .protect_rtp(&p.rtp)
                .expect("a well-formed RTP packet protects");
        }
        self
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Writes the stream as a pcap (Ethernet, IPv4, UDP 127.0.0.1:5000 → :6000).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        // pcap global header: magic, v2.4, GMT, accuracy, snaplen, Ethernet.
        f.write_all(&0xa1b2c3d4u32.to_le_bytes())?;
        f.write_all(&2u16.to_le_bytes())?;
        f.write_all(&4u16.to_le_bytes())?;
        f.write_all(&0i32.to_le_bytes())?;
        f.write_all(&0u32.to_le_bytes())?;
        f.write_all(&65535u32.to_le_bytes())?;
        f.write_all(&1u32.to_le_bytes())?;
        for (i, p) in self.packets.iter().enumerate() {
            let udp_len = 8 + p.rtp.len();
            let ip_len = 20 + udp_len;
            let mut frame = Vec::with_capacity(14 + ip_len);
            frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
            ip.extend_from_slice(&(i as u16).to_be_bytes());
            ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&5000u16.to_be_bytes());
            frame.extend_from_slice(&6000u16.to_be_bytes());
            frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(&p.rtp);
            f.write_all(&(p.at.as_secs() as u32 + 1_700_000_000).to_le_bytes())?;
            f.write_all(&p.at.subsec_micros().to_le_bytes())?;
            f.write_all(&(frame.len() as u32).to_le_bytes())?;
            f.write_all(&(frame.len() as u32).to_le_bytes())?;
            f.write_all(&frame)?;
        }
        f.flush()
    }
}

/// `seconds` of the audio an ffmpeg `aevalsrc` expression describes (in
/// `t`, seconds), sampled at `rate` and encoded by ffmpeg's own encoder
/// `codec` (`g722`, `pcm_alaw`, `pcm_mulaw`) as a raw stream of format
/// `format` (`g722`, `alaw`, `mulaw`): an encoder that shares no code with
/// the recorder's decoders.
pub fn ffmpeg_encode(expr: &str, rate: u32, seconds: f64, codec: &str, format: &str) -> Vec<u8> {
    ffmpeg_lavfi(expr, rate, seconds, &["-c:a", codec, "-f", format])
}

/// `seconds` of an `aevalsrc` expression encoded by ffmpeg's libopus
/// (48 kHz, mono, 20 ms frames, 32 kbit/s), as the Opus packets of its
/// Ogg stream (RFC 7845), the two header packets left out.
pub fn ffmpeg_opus(expr: &str, seconds: f64) -> Vec<Vec<u8>> {
    ffmpeg_opus_with(expr, seconds, &[])
}

/// As [`ffmpeg_opus`], with more libopus options (e.g. `-fec 1`).
pub fn ffmpeg_opus_with(expr: &str, seconds: f64, options: &[&str]) -> Vec<Vec<u8>> {
    let mut args = vec![
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-frame_duration",
        "20",
        "-ac",
        "1",
    ];
    args.extend_from_slice(options);
    args.extend_from_slice(&["-f", "ogg"]);
    let ogg = ffmpeg_lavfi(expr, 48000, seconds, &args);
    ogg_packets(&ogg).into_iter().skip(2).collect()
}

/// `seconds` of an `aevalsrc` expression at 8 kHz as G.729 (10 bytes per
/// 10 ms, Annex A bitstream), by the recorder core's encoder (g729-sys, a
/// port of bcg729): ffmpeg decodes G.729 but has no encoder. The codec
/// tests decode it with ffmpeg's own G.729 decoder, so the fixture is
/// checked by an implementation other than the recorder's.
pub fn g729_encode(expr: &str, seconds: f64) -> Vec<u8> {
    use earshot_recorder_core::codec::{Codec, FRAME_8K, FrameEncoder};
    let raw = ffmpeg_encode(expr, 8000, seconds, "pcm_s16le", "s16le");
    let pcm: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut enc = FrameEncoder::new(Codec::G729).expect("G.729 encoder");
    let mut out = Vec::new();
    for frame in pcm.chunks_exact(FRAME_8K) {
        enc.encode(frame.try_into().expect("one frame"), &mut out);
    }
    out
}

/// ffmpeg's decoding of `bytes` in raw `format` (e.g. `g729`) as 8 kHz mono samples.
pub fn ffmpeg_decode(bytes: &[u8], format: &str) -> Vec<i16> {
    crate::require("ffmpeg");
    let dir = crate::TempDir::new("ffmpeg-decode");
    let input = dir.path().join("in");
    std::fs::write(&input, bytes).expect("write ffmpeg input");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", format, "-i"])
        .arg(&input)
        .args(["-ar", "8000", "-ac", "1", "-f", "s16le", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// What ffmpeg writes to stdout for an `aevalsrc` source and `output` options.
fn ffmpeg_lavfi(expr: &str, rate: u32, seconds: f64, output: &[&str]) -> Vec<u8> {
    crate::require("ffmpeg");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("aevalsrc={expr}:s={rate}:d={seconds}"))
        .args(output)
        .arg("-")
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The packets of an Ogg stream: each page's segments, joined until a
/// segment shorter than 255 bytes ends a packet.
fn ogg_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while data.get(i..i + 4) == Some(b"OggS") {
        let segments = data[i + 26] as usize;
        let table = &data[i + 27..i + 27 + segments];
        let mut at = i + 27 + segments;
        for &len in table {
            current.extend_from_slice(&data[at..at + len as usize]);
            at += len as usize;
            if len < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        i = at;
    }
    packets
}

/// One UDP datagram read back from a capture.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Capture time in nanoseconds (relative to the epoch).
    pub nanos: u128,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
    /// Whether the UDP checksum is right (or absent: zero), computed
    /// here over the pseudo-header, header and payload. Only meaningful
    /// where checksum offload is off (not on `lo`).
    pub checksum_ok: bool,
}

/// The UDP checksum of a datagram (RFC 768) from its IPv4 header and UDP
/// bytes: true when it verifies or is absent.
fn udp_checksum_ok(ip: &[u8], udp: &[u8]) -> bool {
    if udp[6] == 0 && udp[7] == 0 {
        return true;
    }
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&ip[12..20]);
    add(&[0, 17]);
    add(&(udp.len() as u16).to_be_bytes());
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// Reads the IPv4/UDP datagrams of a pcap file (Ethernet or Linux loopback
/// "null"/Ethernet link types as tcpdump writes them on `lo`), with
/// microsecond or nanosecond timestamps.
pub fn read_udp(path: &Path) -> std::io::Result<Vec<Captured>> {
    let data = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a pcap file");
    if data.len() < 24 {
        return Err(bad());
    }
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let nano = match magic {
        0xa1b2c3d4 => false,
        0xa1b23c4d => true,
        _ => return Err(bad()),
    };
    let link = u32::from_le_bytes([data[20], data[21], data[22], data[23]]);
    let link_header = match link {
        1 => 14,   // Ethernet
        0 => 4,    // BSD loopback
        101 => 0,  // raw IP (rtpengine's recordings)
        113 => 16, // Linux cooked
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= data.len() {
        let rd = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let (sec, frac, incl) = (rd(i) as u128, rd(i + 4) as u128, rd(i + 8) as usize);
        let frame = &data[i + 16..(i + 16 + incl).min(data.len())];
        i += 16 + incl;
        let nanos = sec * 1_000_000_000 + if nano { frac } else { frac * 1000 };
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        // The datagram as its header says (frames may carry padding).
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let udp = &udp[..udp_len.clamp(8, udp.len())];
        out.push(Captured {
            nanos,
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..].to_vec(),
            checksum_ok: udp_checksum_ok(ip, udp),
        });
    }
    Ok(out)
}

/// Added relay latency of one RTP stream from captures on both sides of a
/// relay: packets of `ssrc` sent from `in_port` and delivered to `out_port`,
/// matched by sequence number. Returns the delays in nanoseconds, sorted.
pub fn relay_delays(packets: &[Captured], ssrc: u32, in_port: u16, out_port: u16) -> Vec<u128> {
    let mut sent = std::collections::HashMap::new();
    let mut delays = Vec::new();
    for p in packets {
        if p.payload.len() < 12
            || u32::from_be_bytes([p.payload[8], p.payload[9], p.payload[10], p.payload[11]])
                != ssrc
        {
            continue;
        }
        let seq = u16::from_be_bytes([p.payload[2], p.payload[3]]);
        if p.src_port == in_port {
            sent.entry(seq).or_insert(p.nanos);
        } else if p.dst_port == out_port
            && let Some(t) = sent.remove(&seq)
        {
            delays.push(p.nanos.saturating_sub(t));
        }
    }
    delays.sort_unstable();
    delays
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A tcpdump capturing UDP on the loopback interface into a file, stopped
/// (and its file read back) by [`Tcpdump::stop`] or on drop.
pub struct Tcpdump {
    child: Option<std::process::Child>,
    file: std::path::PathBuf,
}

impl Tcpdump {
    /// Starts capturing packets matching `filter` (tcpdump syntax) into
    /// `file`; returns once tcpdump is listening.
    pub fn start(file: &Path, filter: &str) -> Tcpdump {
        Self::start_on(None, "lo", file, filter)
    }

    /// Like [`start`](Self::start), on interface `iface` of network
    /// namespace `netns` (the machine's own when `None`).
    pub fn start_on(netns: Option<&str>, iface: &str, file: &Path, filter: &str) -> Tcpdump {
        crate::require("tcpdump");
        let log = file.with_extension("log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, "tcpdump"]);
                c
            }
            None => std::process::Command::new("tcpdump"),
        };
        let child = cmd
            .args([
                "-i",
                iface,
                "-n",
                "-U",
                "-B",
                "16384",
                "--time-stamp-precision=nano",
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("tcpdump log"))
            .spawn()
            .expect("start tcpdump");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "tcpdump did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tcpdump {
            child: Some(child),
            file: file.to_owned(),
        }
    }

    /// Stops the capture and returns what it captured.
    pub fn stop(mut self) -> Vec<Captured> {
        self.kill();
        read_udp(&self.file).expect("read capture")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT lets tcpdump flush the file.
            let _ = std::process::Command::new("kill")
                .arg("-INT")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_read_back_and_delays_match_by_sequence() {
        let dir = std::env::temp_dir().join(format!("earshot-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.pcap");
        RtpStream::new(9).tone(440.0, 100).write(&path).unwrap();
        let packets = read_udp(&path).unwrap();
        // A datagram of RFC 768's layout: its checksum verifies, and fails
        // once one byte of it (or of an address) changes.
        let ip = [
            0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 250, 1, 2, 10, 250, 1, 1,
        ];
        let mut udp = vec![0x13, 0x88, 0x17, 0x70, 0, 12, 0, 0, 0x80, 0, 0x12, 0x34];
        let sum = {
            let mut s: u32 = 0x0afa + 0x0102 + 0x0afa + 0x0101 + 17 + 12;
            for c in udp.chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        assert!(udp_checksum_ok(&ip, &udp));
        udp[11] ^= 1;
        assert!(!udp_checksum_ok(&ip, &udp));
        udp[11] ^= 1;
        let mut other = ip;
        other[19] = 9;
        assert!(!udp_checksum_ok(&other, &udp));
        assert_eq!(packets.len(), 5);
        assert_eq!((packets[0].src_port, packets[0].dst_port), (5000, 6000));
        // The same packets "relayed" 3 ms later from port 7000 to 8000.
        let mut both = packets.clone();
        for p in &packets {
            both.push(Captured {
                nanos: p.nanos + 3_000_000,
                src_port: 7000,
                dst_port: 8000,
                payload: p.payload.clone(),
                checksum_ok: true,
            });
        }
        assert_eq!(relay_delays(&both, 9, 5000, 8000), vec![3_000_000; 5]);
        assert!(
            relay_delays(&both, 10, 5000, 8000).is_empty(),
            "other SSRCs are not matched"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn streams_have_continuous_sequence_and_timestamps() {
        let s = RtpStream::new(7)
            .tone(440.0, 100)
            .key('*', 100)
            .tone(440.0, 40);
        // 5 audio, 4 + 3 event packets, 2 audio.
        assert_eq!(s.len(), 14);
        let seqs: Vec<u16> = s
            .packets
            .iter()
            .map(|p| u16::from_be_bytes([p.rtp[2], p.rtp[3]]))
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        let ts = |p: &Packet| u32::from_be_bytes([p.rtp[4], p.rtp[5], p.rtp[6], p.rtp[7]]);
        assert_eq!(
            ts(&s.packets[5]),
            ts(&s.packets[10]),
            "one timestamp per event"
        );
        assert_eq!(
            ts(&s.packets[12]),
            ts(&s.packets[4]) + 160 + 800,
            "audio resumes after the event"
        );
        assert_eq!(s.packets.last().unwrap().at, Duration::from_millis(220));
    }
}
