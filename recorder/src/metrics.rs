//! Prometheus metrics of the recorder, prefix `earshot_`. The core keeps
//! plain counters; each scrape copies their growth into these metrics, so
//! the packet path never touches an atomic shared with the HTTP server.
//! Every name here is listed in `docs/metrics.md`.

use earshot_recorder_core::announce;
use earshot_recorder_core::stats::Stats;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Metrics of the recording pipeline, updated where the work happens (off
/// the packet path). Cheap to clone: every field is shared.
#[derive(Debug, Clone, Default)]
pub struct RecordingMetrics {
    /// Recordings by result: completed, truncated, failed.
    pub recordings: Family<Labels, Counter>,
    /// Seconds of audio written to recordings.
    pub recorded_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Bytes confirmed by the store.
    pub upload_bytes: Counter,
    /// Failed upload attempts by reason.
    pub upload_failures: Family<Labels, Counter>,
    /// Recordings whose upload failed again and again (still retried).
    pub upload_stuck: Gauge,
    /// Jobs waiting for the encoder threads.
    pub encoder_queue_depth: Gauge,
    /// Times the encoder queue was full.
    pub encoder_overruns: Counter,
    /// Calls the policy said to record.
    pub expected: Counter,
    /// Recordings the store confirmed.
    pub stored: Counter,
    /// Recorded packets in a codec that cannot be decoded (written as silence).
    pub undecodable: Counter,
    /// Lost packets rebuilt from the next packet (Opus in-band FEC).
    pub rebuilt: Counter,
    /// Media frames dropped from recordings because an encoder worker fell
    /// behind (each such recording marked incomplete, `behind`).
    pub frames_shed: Counter,
    /// Bytes in the spool, set at each scrape.
    pub spool_bytes: Gauge,
    /// Recordings in the spool.
    pub spool_files: Gauge,
    /// Age of the oldest spooled recording.
    pub spool_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while new recordings may start, 0 while the spool refuses them.
    pub spool_accepting: Gauge,
    /// Recordings set aside because their files could not be read.
    pub quarantined: Counter,
    /// Files set aside in the spool now.
    pub spool_quarantined_files: Gauge,
}

/// The recorder's metrics and the last core snapshot they reflect.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls_active: Gauge,
    calls: Family<Labels, Counter>,
    sip_messages: Family<Labels, Counter>,
    sip_parse_errors: Counter,
    sip_refused: Family<Labels, Counter>,
    sip_dropped: Family<Labels, Counter>,
    rtp_packets: Family<Labels, Counter>,
    rtp_dropped: Family<Labels, Counter>,
    srtp_failed: Family<Labels, Counter>,
    dtmf_digits: Family<Labels, Counter>,
    recording_toggles: Family<Labels, Counter>,
    announcements: Family<Labels, Counter>,
    invite_retries: Family<Labels, Counter>,
    recordings_active: Gauge,
    config_reloads: Family<Labels, Counter>,
    draining: Gauge<i64, std::sync::atomic::AtomicI64>,
    kernel_state: Family<Labels, Gauge>,
    kernel_packets: Family<Labels, Counter>,
    kernel_streams: Gauge,
    kernel_handoffs: Family<Labels, Counter>,
    kernel_last: [u64; 5],
    kernel_runs: Counter,
    kernel_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    kernel_time_last: (u64, std::time::Duration),
    /// The recording pipeline's metrics.
    pub recording: RecordingMetrics,
    last: Stats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn delta<K: Ord + Clone>(
    now: &std::collections::BTreeMap<K, u64>,
    before: &std::collections::BTreeMap<K, u64>,
    mut f: impl FnMut(&K, u64),
) {
    for (k, v) in now {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 {
            f(k, d);
        }
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("earshot");
        let m = Self {
            registry: Registry::default(),
            calls_active: Gauge::default(),
            calls: Family::default(),
            sip_messages: Family::default(),
            sip_parse_errors: Counter::default(),
            sip_refused: Family::default(),
            sip_dropped: Family::default(),
            rtp_packets: Family::default(),
            rtp_dropped: Family::default(),
            srtp_failed: Family::default(),
            dtmf_digits: Family::default(),
            recording_toggles: Family::default(),
            announcements: Family::default(),
            invite_retries: Family::default(),
            recordings_active: Gauge::default(),
            config_reloads: Family::default(),
            draining: Gauge::default(),
            kernel_state: Family::default(),
            kernel_packets: Family::default(),
            kernel_streams: Gauge::default(),
            kernel_handoffs: Family::default(),
            kernel_last: [0; 5],
            kernel_runs: Counter::default(),
            kernel_seconds: Counter::default(),
            kernel_time_last: (0, std::time::Duration::ZERO),
            recording: RecordingMetrics::default(),
            last: Stats::default(),
        };
        registry.register(
            "calls_active",
            "Calls in progress through this recorder",
            m.calls_active.clone(),
        );
        registry.register(
            "calls",
            "Calls ended, by result (answered, rejected, cancelled, timeout)",
            m.calls.clone(),
        );
        registry.register(
            "sip_messages",
            "SIP messages by CSeq method and direction (in, out)",
            m.sip_messages.clone(),
        );
        registry.register(
            "sip_parse_errors",
            "SIP messages that did not parse",
            m.sip_parse_errors.clone(),
        );
        registry.register(
            "invite_retries",
            "INVITEs refused with an answer the caller may retry in the same call (401, 407, 3xx, 422, 491), by outcome (awaited: the call waits for the retry; retried: it came) and status code",
            m.invite_retries.clone(),
        );
        registry.register(
            "sip_refused",
            "Requests refused by the recorder, by status code",
            m.sip_refused.clone(),
        );
        registry.register(
            "sip_dropped",
            "SIP messages dropped or not acted on, by reason (unknown_source, stray_response, response_from_elsewhere, target_outside_peers, peer_limit, tcp_refused, tcp_slow_reader, tls_handshake_failed, shard_busy, route_table_full, request_from_other_leg, unknown_dialog)",
            m.sip_dropped.clone(),
        );
        registry.register(
            "rtp_packets",
            "RTP and RTCP packets relayed, by direction",
            m.rtp_packets.clone(),
        );
        registry.register(
            "kernel_fast_path",
            "What relays established streams: 1 for the state in force (active: the eBPF fast path; unavailable: asked for and not possible here, relayed in userspace; off)",
            m.kernel_state.clone(),
        );
        registry.register(
            "kernel_packets",
            "Packets the kernel fast path saw for its streams, by result (relayed; to_userspace: not recognised, left to the socket; copies_lost: relayed, its copy for the recording lost to a full ring; no_route: left to userspace; rate_limited: dropped)",
            m.kernel_packets.clone(),
        );
        registry.register(
            "kernel_program_runs",
            "Times the kernel fast path's program ran (every UDP packet on the interfaces it watches)",
            m.kernel_runs.clone(),
        );
        registry.register(
            "kernel_program_seconds",
            "CPU time the kernel fast path's program took, as the kernel counts it",
            m.kernel_seconds.clone(),
        );
        registry.register(
            "kernel_streams",
            "Streams the kernel fast path relays now",
            m.kernel_streams.clone(),
        );
        registry.register(
            "kernel_handoffs",
            "Streams handed to the kernel fast path (offloaded) and taken back, by why (announcement, changed, call_ended)",
            m.kernel_handoffs.clone(),
        );
        registry.register(
            "rtp_dropped_packets",
            "RTP and RTCP packets dropped, by reason",
            m.rtp_dropped.clone(),
        );
        registry.register(
            "srtp_unprotect_failures",
            "SRTP packets relayed whose copy for the recording did not decrypt, by reason",
            m.srtp_failed.clone(),
        );
        registry.register(
            "dtmf_digits",
            "DTMF digits seen, by method (rfc4733, sip_info, inband)",
            m.dtmf_digits.clone(),
        );
        registry.register(
            "recording_toggles",
            "Shortcode toggles, by the state toggled to (on, off)",
            m.recording_toggles.clone(),
        );
        registry.register(
            "announcements",
            "Announcements, beeps and stop tones toward one party, by kind and result (played, cut, unsupported_codec, no_media, on_hold, overlap)",
            m.announcements.clone(),
        );
        registry.register(
            "recordings_active",
            "Calls being recorded now",
            m.recordings_active.clone(),
        );
        registry.register(
            "config_reloads",
            "Config file reloads, by result (applied, rejected; tls_applied, tls_rejected for the TLS certificate)",
            m.config_reloads.clone(),
        );
        registry.register(
            "draining",
            "1 while the recorder refuses new calls before shutting down",
            m.draining.clone(),
        );
        let r = &m.recording;
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {
                registry.register($name, $help, $m.clone())
            };
        }
        reg!(
            "recordings",
            "Recordings by result (completed, truncated, undecodable, encrypted, failed)",
            r.recordings
        );
        reg!(
            "recorded_seconds",
            "Seconds of audio written to recordings",
            r.recorded_seconds
        );
        reg!(
            "upload_bytes",
            "Bytes of recordings and sidecars confirmed by the store",
            r.upload_bytes
        );
        reg!(
            "upload_failures",
            "Failed upload attempts, by reason",
            r.upload_failures
        );
        reg!(
            "upload_stuck_recordings",
            "Recordings whose upload has failed 5 times or more and is still being retried",
            r.upload_stuck
        );
        reg!(
            "encoder_queue_depth",
            "Jobs waiting for the encoder threads",
            r.encoder_queue_depth
        );
        reg!(
            "encoder_overruns",
            "Times the encoder queue was full",
            r.encoder_overruns
        );
        reg!(
            "recordings_expected",
            "Calls the policy said to record",
            r.expected
        );
        reg!(
            "recordings_stored",
            "Recordings the store confirmed",
            r.stored
        );
        reg!(
            "recording_undecodable_packets",
            "Recorded packets in a codec the recorder cannot decode (written as silence)",
            r.undecodable
        );
        reg!(
            "recording_rebuilt_packets",
            "Lost packets rebuilt from the next one (Opus in-band FEC) instead of silence",
            r.rebuilt
        );
        reg!(
            "recording_frames_shed",
            "Media frames dropped from recordings because an encoder worker fell behind (each such recording is marked incomplete, reason behind)",
            r.frames_shed
        );
        reg!("spool_bytes", "Bytes in the spool directory", r.spool_bytes);
        reg!(
            "spool_files",
            "Recordings in the spool (in progress or waiting for upload)",
            r.spool_files
        );
        reg!(
            "spool_oldest_age_seconds",
            "Age of the oldest recording in the spool",
            r.spool_oldest_age
        );
        reg!(
            "spool_accepting_recordings",
            "1 while new recordings may start, 0 while the spool refuses them (its limit reached, or it cannot be read or written)",
            r.spool_accepting
        );
        reg!(
            "spool_quarantined",
            "Recordings set aside in the spool (renamed *.quarantined) because their files could not be read",
            r.quarantined
        );
        reg!(
            "spool_quarantined_files",
            "Files set aside in the spool (*.quarantined), waiting for an operator",
            r.spool_quarantined_files
        );
        // Every known label value exists from the start at zero, so alerts,
        // dashboards and rate() see a series before the first event.
        let zero = |f: &Family<Labels, Counter>, label: &'static str, values: &[&str]| {
            for v in values {
                f.get_or_create(&vec![(label, (*v).to_owned())]).inc_by(0);
            }
        };
        zero(
            &m.calls,
            "result",
            &["answered", "rejected", "cancelled", "timeout"],
        );
        zero(
            &m.rtp_packets,
            "direction",
            &["caller_to_callee", "callee_to_caller"],
        );
        zero(
            &m.rtp_dropped,
            "reason",
            &[
                "wrong_source",
                "unknown_port",
                "no_destination",
                "malformed",
                "rate_limited",
                "stream_without_ports",
            ],
        );
        zero(&m.dtmf_digits, "method", &["rfc4733", "sip_info", "inband"]);
        zero(
            &m.kernel_packets,
            "result",
            &crate::runtime::fastpath::TOTALS,
        );
        zero(
            &m.kernel_handoffs,
            "event",
            &["offloaded", "announcement", "changed", "call_ended"],
        );
        zero(
            &m.sip_dropped,
            "reason",
            &[
                "unknown_source",
                "stray_response",
                "response_from_elsewhere",
                "target_outside_peers",
                "peer_limit",
                "tcp_refused",
                "tcp_slow_reader",
                "shard_busy",
                "route_table_full",
                "request_from_other_leg",
                "unknown_dialog",
            ],
        );
        zero(&m.recording_toggles, "to", &["on", "off", "rate_limited"]);
        zero(&m.config_reloads, "result", &["applied", "rejected"]);
        for kind in announce::Kind::ALL {
            for outcome in announce::Outcome::ALL {
                let _ = m.announcements.get_or_create(&vec![
                    ("kind", kind.label().to_owned()),
                    ("result", outcome.label().to_owned()),
                ]);
            }
        }
        zero(
            &m.recording.recordings,
            "result",
            &[
                "completed",
                "truncated",
                "undecodable",
                "encrypted",
                "failed",
            ],
        );
        zero(
            &m.recording.upload_failures,
            "reason",
            &[
                "unavailable",
                "denied",
                "not_found",
                "conflict",
                "config",
                "spool",
            ],
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// Brings the metrics up to the core's counters.
    pub fn sync(&mut self, s: &Stats) {
        self.calls_active.set(s.calls_active as i64);
        self.recordings_active.set(s.recordings_active as i64);
        let parse = s.sip_parse_errors - self.last.sip_parse_errors;
        self.sip_parse_errors.inc_by(parse);
        delta(&s.calls, &self.last.calls, |k, d| {
            self.calls
                .get_or_create(&vec![("result", k.to_string())])
                .inc_by(d);
        });
        delta(&s.sip_messages, &self.last.sip_messages, |(m, dir), d| {
            self.sip_messages
                .get_or_create(&vec![
                    ("method", m.to_string()),
                    ("direction", dir.to_string()),
                ])
                .inc_by(d);
        });
        delta(&s.sip_dropped, &self.last.sip_dropped, |reason, d| {
            self.sip_dropped
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(d);
        });
        delta(&s.sip_refused, &self.last.sip_refused, |code, d| {
            self.sip_refused
                .get_or_create(&vec![("code", code.to_string())])
                .inc_by(d);
        });
        delta(&s.rtp_packets, &self.last.rtp_packets, |k, d| {
            self.rtp_packets
                .get_or_create(&vec![("direction", k.to_string())])
                .inc_by(d);
        });
        delta(&s.rtp_dropped, &self.last.rtp_dropped, |k, d| {
            self.rtp_dropped
                .get_or_create(&vec![("reason", k.to_string())])
                .inc_by(d);
        });
        delta(&s.srtp_failed, &self.last.srtp_failed, |k, d| {
            self.srtp_failed
                .get_or_create(&vec![("reason", k.to_string())])
                .inc_by(d);
        });
        delta(&s.dtmf_digits, &self.last.dtmf_digits, |k, d| {
            self.dtmf_digits
                .get_or_create(&vec![("method", k.to_string())])
                .inc_by(d);
        });
        delta(
            &s.recording_toggles,
            &self.last.recording_toggles,
            |k, d| {
                self.recording_toggles
                    .get_or_create(&vec![("to", k.to_string())])
                    .inc_by(d);
            },
        );
        delta(&s.invite_retries, &self.last.invite_retries, |(o, c), d| {
            self.invite_retries
                .get_or_create(&vec![("outcome", o.to_string()), ("code", c.to_string())])
                .inc_by(d);
        });
        delta(&s.announcements, &self.last.announcements, |(k, r), d| {
            self.announcements
                .get_or_create(&vec![("kind", k.to_string()), ("result", r.to_string())])
                .inc_by(d);
        });
        delta(&s.kernel, &self.last.kernel, |k, d| {
            self.kernel_handoffs
                .get_or_create(&vec![("event", k.to_string())])
                .inc_by(d);
        });
        self.last = s.clone();
    }

    /// Brings the kernel fast path's figures up to date.
    pub fn set_kernel(
        &mut self,
        state: &crate::runtime::fastpath::State,
        totals: [u64; 5],
        streams: usize,
        program: (u64, std::time::Duration),
    ) {
        self.kernel_runs
            .inc_by(program.0.saturating_sub(self.kernel_time_last.0));
        self.kernel_seconds.inc_by(
            program
                .1
                .saturating_sub(self.kernel_time_last.1)
                .as_secs_f64(),
        );
        self.kernel_time_last = program;
        for s in ["active", "unavailable", "off"] {
            let v = i64::from(state.label() == s);
            self.kernel_state
                .get_or_create(&vec![("state", s.to_owned())])
                .set(v);
        }
        for (i, name) in crate::runtime::fastpath::TOTALS.iter().enumerate() {
            let d = totals[i].saturating_sub(self.kernel_last[i]);
            self.kernel_packets
                .get_or_create(&vec![("result", (*name).to_owned())])
                .inc_by(d);
        }
        self.kernel_last = totals;
        self.kernel_streams.set(streams as i64);
    }

    /// Counts a config reload.
    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.config_reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Sets the spool gauges from the spool's ledger.
    pub fn set_spool(&self, u: &crate::spool::Usage) {
        self.recording.spool_bytes.set(u.bytes as i64);
        self.recording.spool_files.set(u.recordings as i64);
        self.recording.spool_oldest_age.set(u.oldest_age_seconds);
        self.recording.spool_accepting.set(i64::from(u.accepting));
        self.recording
            .spool_quarantined_files
            .set(u.quarantined_files as i64);
    }

    /// Marks the recorder as draining.
    pub fn set_draining(&self) {
        self.draining.set(1);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

impl Metrics {
    /// Counts a SIP TCP connection refused at accept (limits, ACL).
    /// A SIP message dropped because its shard's inbox was full.
    pub fn route_table_full(&self) {
        self.sip_dropped
            .get_or_create(&vec![("reason", "route_table_full".to_owned())])
            .inc();
    }

    pub fn shard_busy(&self) {
        self.sip_dropped
            .get_or_create(&vec![("reason", "shard_busy".to_owned())])
            .inc();
    }

    pub fn tcp_refused(&self) {
        self.sip_dropped
            .get_or_create(&vec![("reason", "tcp_refused".to_owned())])
            .inc();
    }

    /// Counts a SIP TCP connection closed because its peer did not read
    /// what was sent to it (its write queue was full).
    pub fn tcp_slow_reader(&self) {
        self.sip_dropped
            .get_or_create(&vec![("reason", "tcp_slow_reader".to_owned())])
            .inc();
    }

    /// Counts a SIP TLS handshake that failed or took too long (either
    /// way), accepted or ours.
    pub fn tls_handshake_failed(&self) {
        self.sip_dropped
            .get_or_create(&vec![("reason", "tls_handshake_failed".to_owned())])
            .inc();
    }

    /// Counts a re-read of the TLS certificate after its files changed.
    pub fn tls_reloaded(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&vec![(
                "result",
                if ok { "tls_applied" } else { "tls_rejected" }.to_owned(),
            )])
            .inc();
    }
}
