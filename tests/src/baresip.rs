//! baresip (Debian `baresip` + `baresip-core`, 1.0.0) as a real softphone
//! at either end of a call: each instance gets its own config directory,
//! listens for SIP on 127.0.0.1 without registering, and is driven over its
//! `ctrl_tcp` module (netstring-framed JSON commands, responses and events)
//! through one connection opened at start and kept for its lifetime, so no
//! event is lost between commands.
//!
//! Audio comes from `ausine` (a sine tone) or `aufile` (a WAV file, or a
//! generated silent one); no sound card and no audio player are used. With
//! `record`, the `sndfile` module writes, per call, what this end sends
//! (`dump-<start time>-enc.wav`) and what it decodes from the far end
//! (`dump-<start time>-dec.wav`), at the codec's rate and channel count
//! (PCMU 8 kHz mono, G.722 16 kHz mono, Opus 48 kHz stereo). Opus is sent
//! at 32 kbit/s (`opus_bitrate`, `maxaveragebitrate=32000` in the SDP) with
//! dynamic payload type 96.
//!
//! Facts measured on baresip 1.0.0 that shape this module:
//! * `sip_listen 127.0.0.1:P` takes UDP and TCP port `P` and, for SIP over
//!   TLS, TCP port `P + 1`: the control port must be neither.
//! * The account's `outbound="sip:HOST:PORT"` sends every request of the
//!   dialog to that proxy with `Route: <sip:HOST:PORT;lr>`; writing `;lr`
//!   in the account doubles it (`;lr;lr`). The INVITE's Request-URI is the
//!   dialled URI, `From: <sip:USER@127.0.0.1:SIP_PORT>;tag=…`, and the
//!   Contact user carries a pointer suffix (`USER-0x55…`), so in-dialog
//!   Request-URIs look like `sip:500-0x55…@127.0.0.1:PORT`.
//! * `sndcode *5` sends RFC 4733 events (payload type 101, offered as
//!   `telephone-event/8000`) between the audio packets, which go on: per
//!   key 9 packets (the first with the marker bit) and 3 end packets, 20 ms
//!   apart, final duration 180 ms; the next key starts 240 ms after the
//!   previous one. With Opus the event timestamps
//!   and durations count at 48 kHz although the SDP says 8000.
//! * `hold` / `resume` send re-INVITEs (`a=sendonly`, answered
//!   `a=recvonly`; then `a=sendrecv`) and RTP stops both ways while held,
//!   but `sndfile` stops writing the decoded WAV at the hold and does not
//!   resume it: check what was heard before a hold only.
//! * A WAV source that runs out ends the call (baresip hangs up).
//! * `sndfile` names files by the call's start second: two calls of one
//!   instance within the same second share (overwrite) their files.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::require;

/// How many consecutive ports [`BaresipConfig::new`] uses from its base:
/// SIP (UDP+TCP), SIP over TLS, control, one spare, then twelve RTP/RTCP.
pub const PORTS: u16 = 16;

/// Length of the generated silent WAV behind [`Source::Silence`]; baresip
/// hangs up when its source ends, so no call can last longer.
pub const SILENCE_SECS: u32 = 300;

/// Where an instance's outgoing audio comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A sine tone at this many Hz (`ausine`, integers from 10 to 20000).
    Tone(u32),
    /// Digital silence: a generated 8 kHz WAV of [`SILENCE_SECS`] seconds.
    Silence,
    /// A 16-bit PCM WAV file, played once (`aufile`); the call ends with it.
    Wav(PathBuf),
}

/// How to configure one baresip instance.
#[derive(Clone, Debug)]
pub struct BaresipConfig<'a> {
    /// The account's user, e.g. `"008"`: the From user of its calls.
    pub user: &'a str,
    /// SIP port on 127.0.0.1 (UDP and TCP); `sip_port + 1` is taken by
    /// SIP over TLS.
    pub sip_port: u16,
    /// The `ctrl_tcp` port on 127.0.0.1.
    pub ctrl_port: u16,
    /// RTP port range (inclusive, start even); RTCP uses RTP + 1.
    pub rtp_ports: (u16, u16),
    /// Audio codecs offered/accepted, in order, named with rate and
    /// channels: `"pcmu/8000/1"`, `"pcma/8000/1"`, `"g722/16000/1"`,
    /// `"opus/48000/2"`. Empty offers every codec (so does a list that
    /// matches nothing).
    pub codecs: &'a [&'a str],
    /// What this end sends.
    pub source: Source,
    /// Whether `sndfile` writes the sent and decoded audio of each call to
    /// WAV files (see [`Baresip::decoded_wavs`]).
    pub record: bool,
    /// Answer incoming calls at once (`answermode=auto`); otherwise they
    /// ring until [`Baresip::accept`].
    pub auto_answer: bool,
    /// An outbound proxy (the recorder, for a caller): every request of its
    /// calls goes there, whatever the Request-URI names.
    pub outbound_proxy: Option<SocketAddr>,
    /// Digest credentials (user, password) for a proxy or trunk that
    /// challenges with 401/407.
    pub auth: Option<(&'a str, &'a str)>,
    /// Media encryption (`mediaenc`): `srtp-mand` (SDES keys in the SDP,
    /// `RTP/SAVP`), `srtp` (SDES offered beside plain RTP), `dtls_srtp`
    /// (keys agreed end to end). `None`: plain RTP.
    pub mediaenc: Option<&'a str>,
    /// SIP over TLS: its certificate and key (one PEM file) for its TLS
    /// listener (`sip_port + 1`) and the CA it trusts; with an outbound
    /// proxy, requests go to the proxy over TLS.
    pub tls: Option<(&'a Path, &'a Path)>,
}

impl<'a> BaresipConfig<'a> {
    /// Defaults on the [`PORTS`] ports from `base` (see [`crate::free_ports`]):
    /// SIP `base`, control `base + 2`, RTP `base + 4 ..= base + 15`; PCMU
    /// only, silence, recording on, manual answer, no proxy, no credentials.
    /// Change fields with struct update syntax.
    pub fn new(user: &'a str, base: u16) -> Self {
        Self {
            user,
            sip_port: base,
            ctrl_port: base + 2,
            rtp_ports: (base + 4, base + PORTS - 1),
            codecs: &["pcmu/8000/1"],
            source: Source::Silence,
            record: true,
            auto_answer: false,
            outbound_proxy: None,
            auth: None,
            mediaenc: None,
            tls: None,
        }
    }
}

/// A 16-bit PCM WAV file read into memory.
#[derive(Clone, Debug)]
pub struct Wav {
    /// Sample rate (Hz).
    pub rate: u32,
    /// Channels, interleaved in `samples`.
    pub channels: u16,
    /// The samples, interleaved.
    pub samples: Vec<i16>,
}

impl Wav {
    /// The samples of one channel (0 = left or mono).
    pub fn channel(&self, index: u16) -> Vec<i16> {
        assert!(index < self.channels, "no channel {index}");
        self.samples
            .iter()
            .skip(index as usize)
            .step_by(self.channels.max(1) as usize)
            .copied()
            .collect()
    }

    /// Length in seconds.
    pub fn secs(&self) -> f64 {
        self.samples.len() as f64 / self.channels.max(1) as f64 / self.rate.max(1) as f64
    }
}

/// (rate, channels, bits per sample, data offset, data length) of a WAV
/// file's bytes. A data length of 0 or past the end (a file still being
/// written) means "to the end".
fn wav_layout(bytes: &[u8]) -> Result<(u32, u16, u16, usize, usize), String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut fmt = None;
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = at + 8;
        if id == b"fmt " {
            if body + 16 > bytes.len() {
                return Err("short fmt chunk".into());
            }
            let b = &bytes[body..body + 16];
            let format = u16::from_le_bytes([b[0], b[1]]);
            let channels = u16::from_le_bytes([b[2], b[3]]);
            let rate = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let bits = u16::from_le_bytes([b[14], b[15]]);
            // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE (PCM in practice here).
            if format != 1 && format != 0xFFFE {
                return Err(format!("WAV format {format} is not PCM"));
            }
            fmt = Some((rate, channels, bits));
        } else if id == b"data" {
            let (rate, channels, bits) = fmt.ok_or("data chunk before fmt chunk")?;
            let rest = bytes.len() - body;
            let len = if len == 0 || len > rest { rest } else { len };
            return Ok((rate, channels, bits, body, len));
        }
        at = body + len + (len & 1);
    }
    Err("no data chunk".into())
}

/// Reads a 16-bit PCM WAV file (as `sndfile` writes them). Tolerates a file
/// whose header was not finalised (the call still running): the data then
/// runs to the end of the file.
pub fn read_wav(path: &Path) -> Wav {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (rate, channels, bits, at, len) =
        wav_layout(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bits, 16, "{}: {bits}-bit samples, not 16", path.display());
    let samples = bytes[at..at + len]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    Wav {
        rate,
        channels,
        samples,
    }
}

/// A 16-bit PCM WAV header for `data_len` bytes of samples.
fn wav_header(rate: u32, channels: u16, data_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data_len).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    h.extend_from_slice(&(channels * 2).to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

/// A config value baresip reads up to white space or `#`.
fn plain_value(what: &str, value: &str) {
    assert!(
        !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '#'),
        "baresip {what} must be a non-empty value without spaces or '#': {value:?}"
    );
}

/// The control connection: bytes read but not yet framed, events not yet
/// taken by [`Baresip::wait_event`], and every event seen.
struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
    pending: VecDeque<serde_json::Value>,
    history: Vec<serde_json::Value>,
    next_token: u64,
    closed: bool,
}

impl Ctrl {
    /// One complete netstring from the buffer, if there is one.
    fn take_frame(&mut self) -> Option<serde_json::Value> {
        let colon = self.buf.iter().position(|&b| b == b':')?;
        let digits = std::str::from_utf8(&self.buf[..colon]).ok();
        let len: usize = match digits.and_then(|d| d.parse().ok()) {
            Some(len) if colon > 0 && colon <= 9 => len,
            _ => panic!(
                "baresip ctrl_tcp sent a malformed netstring: {:?}",
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
            ),
        };
        let end = colon + 1 + len;
        if self.buf.len() < end + 1 {
            return None;
        }
        assert_eq!(self.buf[end], b',', "baresip netstring without its ','");
        let value = serde_json::from_slice(&self.buf[colon + 1..end]).unwrap_or_else(|e| {
            panic!(
                "baresip ctrl_tcp sent non-JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.buf[colon + 1..end])
            )
        });
        self.buf.drain(..=end);
        Some(value)
    }

    /// The next message (event or response), reading until `deadline`;
    /// `None` at the deadline or when baresip closed the connection.
    fn next_message(&mut self, deadline: Instant) -> Option<serde_json::Value> {
        loop {
            if let Some(v) = self.take_frame() {
                if v["event"] == true {
                    self.history.push(v.clone());
                }
                return Some(v);
            }
            let now = Instant::now();
            if self.closed || now >= deadline {
                return None;
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            let _ = self.stream.set_read_timeout(Some(wait));
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Sends a command and waits for its response: `Ok(data)` or
    /// `Err(reason)`. Events read meanwhile are queued.
    fn command(
        &mut self,
        command: &str,
        params: Option<&str>,
        timeout: Duration,
    ) -> Result<String, String> {
        self.next_token += 1;
        let token = format!("earshot-{}", self.next_token);
        let mut msg = serde_json::json!({ "command": command, "token": token });
        if let Some(p) = params {
            msg["params"] = serde_json::Value::from(p);
        }
        let body = msg.to_string();
        let frame = format!("{}:{body},", body.len());
        self.stream
            .write_all(frame.as_bytes())
            .map_err(|e| format!("sending {command:?} to ctrl_tcp: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(v) = self.next_message(deadline) else {
                return Err(if self.closed {
                    format!("ctrl_tcp closed before answering {command:?}")
                } else {
                    format!("no answer to {command:?} within {timeout:?}")
                });
            };
            if v["event"] == true {
                self.pending.push_back(v);
            } else if v["response"] == true && v["token"] == token.as_str() {
                let data = v["data"].as_str().unwrap_or_default().to_owned();
                return if v["ok"] == true { Ok(data) } else { Err(data) };
            }
        }
    }
}

/// A running baresip instance; killed (after a `quit`) when dropped.
pub struct Baresip {
    child: Option<Child>,
    ctrl: Mutex<Ctrl>,
    /// Its config directory (`config`, `accounts`, `contacts`, the log,
    /// `wav/` for recordings).
    pub dir: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// The `ctrl_tcp` address.
    pub ctrl_addr: SocketAddr,
    /// Its SIP address (UDP).
    pub sip: SocketAddr,
    /// Its account's user.
    pub user: String,
    wav_dir: Option<PathBuf>,
}

impl Baresip {
    /// Writes `config`, `accounts` and an empty `contacts` into `dir`,
    /// starts `baresip -f dir`, and returns once its `ctrl_tcp` port is
    /// connected and answers a command (up to 10 s); panics with its log
    /// otherwise.
    pub fn start(dir: &Path, cfg: &BaresipConfig) -> Baresip {
        require("baresip");
        std::fs::create_dir_all(dir).expect("creating the baresip directory");
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        plain_value("directory", &dir.to_string_lossy());
        assert!(
            !cfg.user.is_empty()
                && cfg
                    .user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+*".contains(&b)),
            "baresip user must be a plain SIP user: {:?}",
            cfg.user
        );
        let (rtp_lo, rtp_hi) = cfg.rtp_ports;
        assert!(
            rtp_lo % 2 == 0 && rtp_hi > rtp_lo,
            "RTP range {rtp_lo}-{rtp_hi}: it must start even and hold a RTP/RTCP pair"
        );
        let taken = [cfg.sip_port, cfg.sip_port + 1, cfg.ctrl_port];
        assert!(
            cfg.ctrl_port != cfg.sip_port && cfg.ctrl_port != cfg.sip_port + 1,
            "ctrl port {} collides with SIP {} (UDP/TCP) or {} (TLS)",
            cfg.ctrl_port,
            cfg.sip_port,
            cfg.sip_port + 1
        );
        assert!(
            taken.iter().all(|p| !(rtp_lo..=rtp_hi).contains(p)),
            "RTP range {rtp_lo}-{rtp_hi} overlaps the SIP or ctrl ports {taken:?}"
        );

        // Audio source: ausine only runs at 48 kHz stereo; aufile needs the
        // source rate and channels to match its file.
        let (ausrc, srate, channels) = match &cfg.source {
            Source::Tone(hz) => {
                assert!(
                    (10..=20000).contains(hz),
                    "ausine tone {hz} Hz: 10 to 20000"
                );
                (format!("ausine,{hz}"), 48000, 2)
            }
            Source::Silence => {
                let path = dir.join("silence.wav");
                let data_len = SILENCE_SECS * 8000 * 2;
                let mut bytes = wav_header(8000, 1, data_len);
                bytes.resize(bytes.len() + data_len as usize, 0);
                std::fs::write(&path, bytes).expect("writing silence.wav");
                (format!("aufile,{}", path.display()), 8000, 1)
            }
            Source::Wav(path) => {
                let path = path.canonicalize().unwrap_or_else(|_| path.clone());
                plain_value("WAV source path", &path.to_string_lossy());
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let (rate, ch, bits, _, _) =
                    wav_layout(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(bits, 16, "{}: aufile needs 16-bit PCM", path.display());
                (format!("aufile,{}", path.display()), rate, ch)
            }
        };

        let wav_dir = cfg.record.then(|| dir.join("wav"));
        let mut modules = String::from(
            "module\t\t\tg711.so\nmodule\t\t\tg722.so\nmodule\t\t\topus.so\n\
             module\t\t\tausine.so\nmodule\t\t\taufile.so\n",
        );
        let mut extra = String::new();
        match cfg.mediaenc {
            None => {}
            Some("srtp" | "srtp-mand" | "srtp-mandf") => modules.push_str("module\t\t\tsrtp.so\n"),
            Some("dtls_srtp") => modules.push_str("module\t\t\tdtls_srtp.so\n"),
            Some(other) => panic!("mediaenc {other:?}: srtp, srtp-mand, srtp-mandf or dtls_srtp"),
        }
        if let Some((cert, ca)) = cfg.tls {
            extra.push_str(&format!(
                "sip_certificate\t\t{}\nsip_cafile\t\t{}\n",
                cert.display(),
                ca.display()
            ));
        }
        if let Some(w) = &wav_dir {
            std::fs::create_dir_all(w).expect("creating the WAV directory");
            modules.push_str("module\t\t\tsndfile.so\n");
            extra.push_str(&format!("snd_path\t\t{}\n", w.display()));
        }
        let config = format!(
            "# Written by earshot-tests (tests/src/baresip.rs) for baresip 1.0.0.\n\
             poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip}\n\
             call_local_timeout\t120\n\
             call_max_calls\t\t4\n\
             audio_player\t\t\n\
             audio_alert\t\t\n\
             audio_source\t\t{ausrc}\n\
             ausrc_srate\t\t{srate}\n\
             ausrc_channels\t\t{channels}\n\
             audio_level\t\tno\n\
             ausrc_format\t\ts16\n\
             auplay_format\t\ts16\n\
             auenc_format\t\ts16\n\
             audec_format\t\ts16\n\
             audio_buffer\t\t20-160\n\
             rtp_tos\t\t\t0\n\
             rtp_ports\t\t{rtp_lo}-{rtp_hi}\n\
             rtcp_mux\t\tno\n\
             jitter_buffer_delay\t5-10\n\
             rtp_stats\t\tno\n\
             net_interface\t\t127.0.0.1\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             {modules}\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl}\n\
             statmode_default\toff\n\
             opus_bitrate\t\t32000\n\
             {extra}",
            sip = cfg.sip_port,
            ctrl = cfg.ctrl_port,
        );
        std::fs::write(dir.join("config"), config).expect("writing the baresip config");

        let mut account = format!(
            "<sip:{user}@127.0.0.1:{sip}>;regint=0;answermode={mode}",
            user = cfg.user,
            sip = cfg.sip_port,
            mode = if cfg.auto_answer { "auto" } else { "manual" },
        );
        if !cfg.codecs.is_empty() {
            for c in cfg.codecs {
                assert!(
                    !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/'),
                    "codec {c:?}: e.g. pcmu/8000/1"
                );
            }
            account.push_str(&format!(";audio_codecs={}", cfg.codecs.join(",")));
        }
        if let Some(proxy) = cfg.outbound_proxy {
            // No `;lr`: baresip adds it to the Route header itself.
            let transport = if cfg.tls.is_some() {
                ";transport=tls"
            } else {
                ""
            };
            account.push_str(&format!(";outbound=\"sip:{proxy}{transport}\""));
        }
        if let Some((user, pass)) = cfg.auth {
            for v in [user, pass] {
                assert!(
                    !v.is_empty()
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                    "baresip credentials must be plain: {v:?}"
                );
            }
            account.push_str(&format!(";auth_user={user};auth_pass={pass}"));
        }
        if let Some(enc) = cfg.mediaenc {
            account.push_str(&format!(";mediaenc={enc}"));
        }
        std::fs::write(dir.join("accounts"), format!("{account}\n"))
            .expect("writing the baresip accounts");
        std::fs::write(dir.join("contacts"), "").expect("writing the baresip contacts");

        let log = dir.join("baresip.log");
        let out = std::fs::File::create(&log).expect("creating the baresip log");
        let err = out.try_clone().expect("cloning the log handle");
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start baresip");
        let ctrl_addr = SocketAddr::from(([127, 0, 0, 1], cfg.ctrl_port));
        let logs = |what: &str| {
            format!(
                "baresip {} {what}; its log ({}):\n{}",
                cfg.user,
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        };

        // ctrl_tcp accepts one connection at a time (a new one replaces the
        // old): the one that connects first is kept for the events.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{}", logs(&format!("exited with {status}")));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("ctrl_tcp: failed") || text.contains("module ctrl_tcp.so:") {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}", logs("has no control port"));
            }
            if let Ok(s) = TcpStream::connect_timeout(&ctrl_addr, Duration::from_millis(200)) {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}", logs(&format!("did not open {ctrl_addr} within 10 s")));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = stream.set_nodelay(true);
        let mut ctrl = Ctrl {
            stream,
            buf: Vec::new(),
            pending: VecDeque::new(),
            history: Vec::new(),
            next_token: 0,
            closed: false,
        };
        // A harmless command proves the port is this baresip's ctrl_tcp
        // (not another process's) and that its main loop runs.
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = ctrl.command("reginfo", None, left.max(Duration::from_secs(2))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}", logs(&format!("does not answer on {ctrl_addr}: {e}")));
        }
        Baresip {
            child: Some(child),
            ctrl: Mutex::new(ctrl),
            dir,
            log,
            ctrl_addr,
            sip: SocketAddr::from(([127, 0, 0, 1], cfg.sip_port)),
            user: cfg.user.to_owned(),
            wav_dir,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ctrl> {
        self.ctrl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This account's URI, `sip:USER@127.0.0.1:PORT`: what a caller dials
    /// to reach it.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.sip)
    }

    /// Sends any `ctrl_tcp` command (a long command of the `menu` module,
    /// e.g. `"dial"`, `"accept"`, `"hangup"`, `"sndcode"`, `"hold"`,
    /// `"resume"`) and waits up to 10 s for its response: `Ok(data)` or
    /// `Err(reason)`. Command and parameters together must stay under
    /// 250 bytes (`ctrl_tcp` truncates).
    pub fn command(&self, command: &str, params: Option<&str>) -> Result<String, String> {
        assert!(
            command.len() + params.map_or(0, |p| p.len() + 1) < 250,
            "baresip command too long for ctrl_tcp"
        );
        self.lock()
            .command(command, params, Duration::from_secs(10))
    }

    /// [`command`](Self::command), panicking with the log when it fails.
    fn must(&self, command: &str, params: Option<&str>) {
        if let Err(e) = self.command(command, params) {
            panic!(
                "baresip {}: {command} {} failed: {e}\n{}",
                self.user,
                params.unwrap_or_default(),
                self.log_text()
            );
        }
    }

    /// Starts a call to `uri` (e.g. `sip:500@127.0.0.1:5070`); through the
    /// outbound proxy when one is configured. Returns once baresip took the
    /// command; wait for `CALL_ESTABLISHED` to know the call is up.
    pub fn dial(&self, uri: &str) {
        self.must("dial", Some(uri));
    }

    /// Answers the ringing incoming call (for `auto_answer: false`).
    pub fn accept(&self) {
        self.must("accept", None);
    }

    /// Hangs up the current call (a BYE, or CANCEL before the answer).
    pub fn hangup(&self) {
        self.must("hangup", None);
    }

    /// Sends DTMF keys (`0-9*#A-D`) as RFC 4733 events in the current call
    /// (`sndcode`): 240 ms apart, 180 ms each.
    pub fn send_dtmf(&self, keys: &str) {
        assert!(
            !keys.is_empty()
                && keys
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"*#ABCDabcd".contains(&b)),
            "DTMF keys: {keys:?}"
        );
        self.must("sndcode", Some(keys));
    }

    /// Puts the current call on hold (re-INVITE with `a=sendonly`; RTP stops
    /// both ways). The decoded WAV stops here for the rest of the call.
    pub fn hold(&self) {
        self.must("hold", None);
    }

    /// Resumes a held call (re-INVITE with `a=sendrecv`; RTP flows again).
    pub fn resume(&self) {
        self.must("resume", None);
    }

    /// Waits up to `timeout` for the next event of type `kind` not taken
    /// yet (in arrival order) and takes it. Events of 1.0.0 look like
    /// `{"event":true,"class":"call","type":"CALL_ESTABLISHED",
    /// "accountaor":"sip:008@127.0.0.1:P","direction":"outgoing",
    /// "peeruri":"sip:500@…","id":"<Call-ID>","param":"…"}`; types seen:
    /// `CALL_INCOMING`, `CALL_RINGING`, `CALL_LOCAL_SDP`, `CALL_REMOTE_SDP`,
    /// `CALL_ESTABLISHED`, `CALL_RTPESTAB`, `CALL_RTCP`, `CALL_DTMF_START`
    /// (`param` = the key, at the receiving end), `CALL_DTMF_END`,
    /// `CALL_CLOSED` (`param` = the reason), `SHUTDOWN`, `EXIT`.
    pub fn wait_event(&self, kind: &str, timeout: Duration) -> Option<serde_json::Value> {
        let mut ctrl = self.lock();
        if let Some(i) = ctrl.pending.iter().position(|e| e["type"] == kind) {
            return ctrl.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        while let Some(v) = ctrl.next_message(deadline) {
            if v["event"] != true {
                continue;
            }
            if v["type"] == kind {
                return Some(v);
            }
            ctrl.pending.push_back(v);
        }
        None
    }

    /// [`wait_event`](Self::wait_event), panicking with the events seen and
    /// the log when none comes.
    pub fn expect_event(&self, kind: &str, timeout: Duration) -> serde_json::Value {
        self.wait_event(kind, timeout).unwrap_or_else(|| {
            let seen: Vec<String> = self
                .events()
                .iter()
                .map(|e| format!("{} {}", e["type"], e["param"]))
                .collect();
            panic!(
                "baresip {}: no {kind} within {timeout:?}; events: {seen:?}\n{}",
                self.user,
                self.log_text()
            )
        })
    }

    /// Every event received so far (taken or not), oldest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let mut ctrl = self.lock();
        let now = Instant::now();
        while let Some(v) = ctrl.next_message(now) {
            if v["event"] == true {
                ctrl.pending.push_back(v);
            }
        }
        ctrl.history.clone()
    }

    /// The WAV files of what this end decoded (heard), one per call, oldest
    /// first; empty without `record`. A file is complete once its call's
    /// `CALL_CLOSED` has come.
    pub fn decoded_wavs(&self) -> Vec<PathBuf> {
        self.wavs("-dec.wav")
    }

    /// The WAV files of what this end sent (before encoding), one per call,
    /// oldest first; empty without `record`.
    pub fn encoded_wavs(&self) -> Vec<PathBuf> {
        self.wavs("-enc.wav")
    }

    fn wavs(&self, suffix: &str) -> Vec<PathBuf> {
        let Some(dir) = &self.wav_dir else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        // `dump-YYYY-MM-DD-HH-MM-SS-…`: name order is time order.
        out.sort();
        out
    }

    /// Its output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Asks baresip to quit (ending its calls, closing its WAV files), waits
    /// up to 5 s, then kills it. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = self.lock().command("quit", None, Duration::from_secs(2));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Two softphones on a secure trunk, as the TLS tests place them: the
/// callee `500` (a 1 kHz tone, answering by itself) listening from `base`,
/// and the caller `008` (440 Hz) from `base + 20` sending everything to
/// the recorder's TLS port `proxy`; both SIP over TLS with the
/// certificates `test_certificates` made in `certs` (`callee`, `caller`,
/// `ca`) and SDES-SRTP mandatory. Each phone's files go under `dir`.
pub fn tls_srtp_pair(dir: &Path, certs: &Path, base: u16, proxy: SocketAddr) -> (Baresip, Baresip) {
    let ca = certs.join("ca.crt");
    let (callee_pem, caller_pem) = (certs.join("callee.pem"), certs.join("caller.pem"));
    let (callee_dir, caller_dir) = (dir.join("callee"), dir.join("caller"));
    std::fs::create_dir_all(&callee_dir).unwrap();
    std::fs::create_dir_all(&caller_dir).unwrap();
    let callee = Baresip::start(
        &callee_dir,
        &BaresipConfig {
            source: Source::Tone(1000),
            auto_answer: true,
            mediaenc: Some("srtp-mand"),
            tls: Some((&callee_pem, &ca)),
            ..BaresipConfig::new("500", base)
        },
    );
    let caller = Baresip::start(
        &caller_dir,
        &BaresipConfig {
            source: Source::Tone(440),
            outbound_proxy: Some(proxy),
            mediaenc: Some("srtp-mand"),
            tls: Some((&caller_pem, &ca)),
            ..BaresipConfig::new("008", base + 20)
        },
    );
    (callee, caller)
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
    }
}
