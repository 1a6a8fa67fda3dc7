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
    /// `peer_limit`, `request_from_other_leg`, `unknown_dialog`).
    pub sip_dropped: BTreeMap<&'static str, u64>,
    /// RTP/RTCP packets relayed, by direction (`caller_to_callee`, `callee_to_caller`).
    pub rtp_packets: BTreeMap<&'static str, u64>,
    /// Packets dropped, by reason.
    pub rtp_dropped: BTreeMap<&'static str, u64>,
    /// SRTP packets relayed whose copy for the recording did not decrypt,
    /// by reason (`authentication`, `replayed`, ...).
    pub srtp_failed: BTreeMap<&'static str, u64>,
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
    /// INVITEs refused with an answer the caller may retry (401, 407, 3xx,
    /// 422, 491, ...), by (`awaited` when the call waits for the retry,
    /// `retried` when it came) and the refusal's status code.
    pub invite_retries: BTreeMap<(&'static str, u16), u64>,
    /// The kernel fast path: legs handed to it (`offloaded`) and taken
    /// back, by why (`announcement`, `changed`, `call_ended`).
    pub kernel: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds another shard's counters and gauges to these: the process's
    /// figures are the sum of its shards'.
    pub fn merge(&mut self, other: &Stats) {
        fn add<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        // Destructured, so a new field cannot be left out of the sum.
        let Stats {
            sip_messages,
            sip_parse_errors,
            sip_refused,
            sip_dropped,
            rtp_packets,
            rtp_dropped,
            srtp_failed,
            dtmf_digits,
            recording_toggles,
            announcements,
            calls,
            calls_active,
            recordings_active,
            recordings_started,
            invite_retries,
            kernel,
        } = other;
        add(&mut self.sip_messages, sip_messages);
        self.sip_parse_errors += sip_parse_errors;
        add(&mut self.sip_refused, sip_refused);
        add(&mut self.sip_dropped, sip_dropped);
        add(&mut self.invite_retries, invite_retries);
        add(&mut self.rtp_packets, rtp_packets);
        add(&mut self.rtp_dropped, rtp_dropped);
        add(&mut self.srtp_failed, srtp_failed);
        add(&mut self.dtmf_digits, dtmf_digits);
        add(&mut self.recording_toggles, recording_toggles);
        add(&mut self.announcements, announcements);
        add(&mut self.calls, calls);
        add(&mut self.kernel, kernel);
        self.calls_active += calls_active;
        self.recordings_active += recordings_active;
        self.recordings_started += recordings_started;
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_every_counter_and_gauge() {
        let mut a = Stats::default();
        Stats::bump(&mut a.calls, "answered");
        Stats::bump(&mut a.rtp_packets, "caller_to_callee");
        a.calls_active = 2;
        a.sip_parse_errors = 1;
        let mut b = a.clone();
        Stats::bump(&mut b.calls, "cancelled");
        b.recordings_active = 1;
        let mut sum = Stats::default();
        sum.merge(&a);
        sum.merge(&b);
        assert_eq!(sum.calls.get("answered"), Some(&2));
        assert_eq!(sum.calls.get("cancelled"), Some(&1));
        assert_eq!(sum.rtp_packets.get("caller_to_callee"), Some(&2));
        assert_eq!(
            (
                sum.calls_active,
                sum.recordings_active,
                sum.sip_parse_errors
            ),
            (4, 1, 2)
        );
    }
}
