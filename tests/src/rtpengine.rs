//! rtpengine (Debian `rtpengine-daemon`, userspace forwarding) behind
//! Kamailio (Debian, its `rtpengine` module) as the benchmark's point of
//! comparison: the same SIPp load as through Earshot. rtpengine's recording
//! daemon needs its kernel module, which cannot load here, so rtpengine
//! records each call to a pcap and [`pcap_to_mp3`] makes the MP3 afterwards
//! with the same LAME settings Earshot uses; that conversion's CPU is counted
//! on rtpengine's side.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot_recorder_core::event::Side;
use earshot_recorder_core::g711::Law;
use earshot_recorder_core::timeline::Timeline;
use earshot_recorder_core::{ChannelLayout, PauseBehaviour};

use crate::pcap::read_udp;

/// A running rtpengine + Kamailio pair.
pub struct RtpengineProxy {
    rtpengine: Option<Child>,
    kamailio: Option<Child>,
    /// Where SIP goes (Kamailio).
    pub sip: SocketAddr,
    cli: SocketAddr,
    /// rtpengine's per-call pcap recordings.
    pub recordings: PathBuf,
}

impl RtpengineProxy {
    /// Starts both with their control and RTP ports from `ports` (needs 4) and `rtp` (a range).
    pub fn start(dir: &Path, ports: u16, rtp: (u16, u16)) -> Self {
        Self::start_on(dir, ports, rtp, std::net::Ipv4Addr::LOCALHOST)
    }

    /// Like [`start`](Self::start), SIP and media on `ip` (control stays on loopback).
    pub fn start_on(dir: &Path, ports: u16, rtp: (u16, u16), ip: std::net::Ipv4Addr) -> Self {
        crate::require("rtpengine");
        crate::require("kamailio");
        let recordings = dir.join("rtpengine-recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        let (sip, ng, cli) = (ports, ports + 1, ports + 2);
        let rtpengine = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--table=-1",
                &format!("--interface={ip}"),
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--delete-delay=0",
            ])
            .arg(format!("--listen-ng=127.0.0.1:{ng}"))
            .arg(format!("--listen-cli=127.0.0.1:{cli}"))
            .arg(format!("--port-min={}", rtp.0))
            .arg(format!("--port-max={}", rtp.1))
            .arg(format!("--recording-dir={}", recordings.display()))
            .arg("--recording-method=pcap")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rtpengine.log")).unwrap())
            .spawn()
            .expect("start rtpengine");
        std::thread::sleep(Duration::from_millis(700));
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(
            &cfg,
            KAMAILIO_CFG
                .replace(
                    "listen=udp:127.0.0.1:@SIP@",
                    &format!("listen=udp:{ip}:@SIP@"),
                )
                .replace("@SIP@", &sip.to_string())
                .replace("@NG@", &ng.to_string()),
        )
        .unwrap();
        let kamailio = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap())
            .spawn()
            .expect("start kamailio");
        std::thread::sleep(Duration::from_millis(1500));
        Self {
            rtpengine: Some(rtpengine),
            kamailio: Some(kamailio),
            sip: SocketAddr::from((ip, sip)),
            cli: SocketAddr::from(([127, 0, 0, 1], cli)),
            recordings,
        }
    }

    /// Process ids whose CPU counts: rtpengine, Kamailio and its children.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .rtpengine
            .iter()
            .chain(self.kamailio.iter())
            .map(Child::id)
            .collect();
        if let Some(k) = &self.kamailio {
            pids.extend(children_of(k.id()));
        }
        pids
    }

    /// rtpengine's own process id.
    pub fn rtpengine_pid(&self) -> Option<u32> {
        self.rtpengine.as_ref().map(Child::id)
    }

    /// "Total relayed packets" from rtpengine's CLI.
    pub fn relayed_packets(&self) -> Option<u64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&self.cli, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"list totals\n").ok()?;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .find(|l| l.trim_start().starts_with("Total relayed packets ") && !l.contains('('))
            .and_then(|l| l.rsplit(':').next()?.trim().parse().ok())
    }
}

impl Drop for RtpengineProxy {
    fn drop(&mut self) {
        for c in [self.kamailio.take(), self.rtpengine.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Makes a stereo MP3 (left: caller SSRCs `left`, right: the rest) from an
/// rtpengine call recording, with the settings Earshot records with.
/// Returns the MP3's length in seconds and the span of the call's packets.
pub fn pcap_to_mp3(pcap: &Path, mp3: &Path, left: &[u32]) -> std::io::Result<(f64, f64)> {
    let packets = read_udp(pcap)?;
    // rtpengine writes a busy call's packets slightly out of time order: the
    // span is from the earliest to the latest.
    let Some(first) = packets.iter().map(|p| p.nanos).min() else {
        return Ok((0.0, 0.0));
    };
    let last = packets.iter().map(|p| p.nanos).max().unwrap_or(first);
    let t0 = Instant::now();
    let at = |n: u128| t0 + Duration::from_nanos(n.saturating_sub(first) as u64);
    let mut timeline = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
    for p in &packets {
        if p.payload.len() < 12 || p.payload[1] & 0x7f != 0 {
            continue; // not PCMU audio (RTCP, events)
        }
        let ssrc = u32::from_be_bytes([p.payload[8], p.payload[9], p.payload[10], p.payload[11]]);
        let ts = u32::from_be_bytes([p.payload[4], p.payload[5], p.payload[6], p.payload[7]]);
        let side = if left.contains(&ssrc) {
            Side::Caller
        } else {
            Side::Callee
        };
        let samples: Vec<i16> = p.payload[12..]
            .iter()
            .map(|&b| Law::Ulaw.decode(b))
            .collect();
        timeline.push(side, at(p.nanos), ssrc, ts, &samples);
    }
    let chunk = timeline.finish(at(last) + Duration::from_millis(20));
    let mut enc = mp3lame_encoder::Builder::new().expect("LAME");
    enc.set_num_channels(2).expect("channels");
    enc.set_sample_rate(8000).expect("rate");
    enc.set_output_sample_rate(std::num::NonZeroU32::new(8000))
        .expect("rate");
    enc.set_brate(mp3lame_encoder::Bitrate::Kbps32)
        .expect("bitrate");
    enc.set_mode(mp3lame_encoder::Mode::Stereo).expect("mode");
    enc.set_quality(mp3lame_encoder::Quality::Ok)
        .expect("quality");
    let mut enc = enc.build().expect("LAME encoder");
    let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(chunk.len()) + 7200);
    enc.encode_to_vec(
        mp3lame_encoder::DualPcm {
            left: &chunk.left[..],
            right: &chunk.right[..],
        },
        &mut out,
    )
    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    enc.flush_to_vec::<mp3lame_encoder::FlushNoGap>(&mut out)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    std::fs::write(mp3, &out)?;
    let span = (last - first) as f64 / 1e9 + 0.02;
    Ok((chunk.len() as f64 / 8000.0, span))
}

const KAMAILIO_CFG: &str = r#"#!KAMAILIO
listen=udp:127.0.0.1:@SIP@
children=2
log_stderror=yes
debug=1
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:@NG@")
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) {
            if (is_method("BYE")) { rtpengine_delete(); }
            t_relay();
            exit;
        }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not here"); exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    record_route();
    if (is_method("INVITE") && has_body("application/sdp")) {
        rtpengine_offer("replace-origin replace-session-connection record-call=yes");
        t_on_reply("REPLY");
    }
    t_relay();
}
onreply_route[REPLY] {
    if (has_body("application/sdp")) { rtpengine_answer("replace-origin replace-session-connection"); }
}
"#;
