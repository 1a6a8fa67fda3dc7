//! Counters the core keeps; the shell copies them into Prometheus metrics.

use std::collections::BTreeMap;

/// Monotonic counters and current gauges of the core.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// SIP messages by (CSeq method, direction `in`/`out`).
    pub sip_messages: BTreeMap<(&'static str, &'static str), u64>,
    /// Datagrams or stream messages that did not parse.
    pub sip_parse_errors: u64,
    /// Requests refused, by status code.
    pub sip_refused: BTreeMap<u16, u64>,
    /// SIP messages dropped or not acted on, by reason (`unknown_source`,
    /// `stray_response`, `response_from_elsewhere`, `target_outside_peers`,
    /// `peer_limit`, `info_from_other_leg`).
    pub sip_dropped: BTreeMap<&'static str, u64>,
    /// RTP/RTCP packets relayed, by direction (`caller_to_callee`, `callee_to_caller`).
    pub rtp_packets: BTreeMap<&'static str, u64>,
    /// Packets dropped, by reason.
    pub rtp_dropped: BTreeMap<&'static str, u64>,
    /// DTMF digits by method.
    pub dtmf_digits: BTreeMap<&'static str, u64>,
    /// Recording toggles by the state toggled to (`on`, `off`).
    pub recording_toggles: BTreeMap<&'static str, u64>,
    /// Announcements by (kind, outcome).
    pub announcements: BTreeMap<(&'static str, &'static str), u64>,
    /// Ended calls by result.
    pub calls: BTreeMap<&'static str, u64>,
    /// Calls in progress.
    pub calls_active: u64,
    /// Calls being recorded now.
    pub recordings_active: u64,
    /// Calls whose recording was started at least once.
    pub recordings_started: u64,
}

impl Stats {
    pub(crate) fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
        *map.entry(key).or_default() += 1;
    }
}

/// Metric label for a SIP method: known methods by name, the rest as `OTHER`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
    ];
    KNOWN
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("OTHER")
}
