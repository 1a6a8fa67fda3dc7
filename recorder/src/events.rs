//! The call event log: one JSON object per line for every call event the
//! core emits (media frames excepted), with wall-clock UTC times. It is what
//! an auditor reads to see when each call was recorded and why, and what the
//! end-to-end tests assert on. It names numbers, so it is written to a file
//! with the recordings' access rules, never to the info-level log.

use std::io::Write;
use std::time::{Instant, SystemTime};

use earshot_contracts::config::DtmfDigits;
use earshot_recorder_core::{EndReason, Event, RecordingReason};
use serde_json::{Value, json};

/// Maps the core's `Instant`s to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    /// Pairs the two clocks now.
    pub fn new() -> Self {
        Self {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// Wall-clock time of an `Instant`.
    pub fn system(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.system + d,
            None => self.system - self.instant.duration_since(at),
        }
    }

    /// RFC 3339 UTC with milliseconds.
    pub fn rfc3339(&self, at: Instant) -> String {
        humantime::format_rfc3339_millis(self.system(at)).to_string()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON line for an event, or `None` for media frames. With
/// [`DtmfDigits::Masked`], a digit that is not part of a shortcode is
/// written as `"digit": null, "masked": true`.
pub fn to_json(clock: &Clock, event: &Event, digits: DtmfDigits) -> Option<Value> {
    let v = match event {
        Event::CallStarted {
            call,
            at,
            caller,
            callee,
            users,
            replaces,
        } => json!({
            "time": clock.rfc3339(*at), "event": "call_started", "call": call.hash,
            "replaces": replaces,
            "caller": caller.number, "callerName": caller.display_name,
            "callee": callee.number, "calleeName": callee.display_name,
            "users": users.iter().map(|u| json!({
                "extension": u.extension, "displayName": u.display_name,
                "mode": u.mode.as_str(), "side": u.side.as_str(),
            })).collect::<Vec<_>>(),
        }),
        Event::CallAnswered { call, at } => json!({
            "time": clock.rfc3339(*at), "event": "call_answered", "call": call.hash,
        }),
        Event::Recording {
            call,
            at,
            on,
            reason,
            ..
        } => {
            let (why, ext, user_on) = match reason {
                RecordingReason::Answered { extension } => ("always", Some(extension), None),
                RecordingReason::Shortcode { extension, on } => {
                    ("shortcode", Some(extension), Some(*on))
                }
                RecordingReason::CallEnded => ("call_ended", None, None),
                RecordingReason::SrcPaused => ("src_paused", None, None),
            };
            json!({
                "time": clock.rfc3339(*at), "event": "recording", "call": call.hash, "on": on,
                "reason": why, "extension": ext, "userOn": user_on,
            })
        }
        Event::Dtmf {
            call,
            at,
            side,
            digit,
            method,
            shortcode,
        } => {
            let shown = *shortcode || digits == DtmfDigits::All;
            let mut v = json!({
                "time": clock.rfc3339(*at), "event": "dtmf", "call": call.hash,
                "side": side.as_str(), "method": method.label(),
                "digit": shown.then(|| digit.to_string()),
            });
            if !shown {
                v["masked"] = json!(true);
            }
            v
        }
        Event::CallEnded {
            call,
            at,
            reason,
            answered,
        } => {
            let (why, detail) = match reason {
                EndReason::Bye(side) => ("bye", json!(side.as_str())),
                EndReason::Cancelled => ("cancelled", Value::Null),
                EndReason::Rejected(code) => ("rejected", json!(code)),
                EndReason::Timeout => ("timeout", Value::Null),
            };
            json!({
                "time": clock.rfc3339(*at), "event": "call_ended", "call": call.hash,
                "reason": why, "detail": detail, "answered": answered,
            })
        }
        Event::Transfer { call, at, by } => json!({
            "time": clock.rfc3339(*at), "event": "transfer", "call": call.hash,
            "by": by.as_str(),
        }),
        Event::Siprec { call, at, session } => json!({
            "time": clock.rfc3339(*at), "event": "siprec", "call": call.hash,
            "participants": session.participants.len(),
            "identifiers": session.identifiers.len(),
        }),
        Event::MediaNote { call, at, note } => json!({
            "time": clock.rfc3339(*at), "event": "media_note", "call": call.hash,
            "note": note.label(),
        }),
        Event::Announcement {
            call,
            at,
            kind,
            to,
            outcome,
            played,
        } => json!({
            "time": clock.rfc3339(*at), "event": "announcement", "call": call.hash,
            "kind": kind.label(), "to": to.as_str(), "result": outcome.label(),
            "playedMs": played.as_millis() as u64,
        }),
        Event::Media(_) => return None,
    };
    Some(v)
}

/// Appends event lines to a file, flushing after each batch.
pub struct EventLog {
    out: Option<std::io::BufWriter<std::fs::File>>,
    clock: Clock,
    digits: DtmfDigits,
}

impl EventLog {
    /// A log writing to `path` (appending), or discarding when `None`.
    pub fn open(
        path: Option<&std::path::Path>,
        clock: Clock,
        digits: DtmfDigits,
    ) -> std::io::Result<Self> {
        let out = match path {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Self { out, clock, digits })
    }

    /// Writes the event's line, if it has one.
    pub fn write(&mut self, event: &Event) {
        let Some(out) = self.out.as_mut() else { return };
        let Some(v) = to_json(&self.clock, event, self.digits) else {
            return;
        };
        if let Err(err) = writeln!(out, "{v}").and_then(|_| out.flush()) {
            tracing::warn!(error = %err, "cannot write call event log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_recorder_core::dtmf::DtmfMethod;
    use earshot_recorder_core::{CallRef, Side};

    #[test]
    fn digits_outside_shortcodes_are_masked_unless_all_are_asked_for() {
        let clock = Clock::new();
        let dtmf = |digit, shortcode| Event::Dtmf {
            call: CallRef {
                id: 1,
                hash: "00112233aabbccdd".into(),
            },
            at: Instant::now(),
            side: Side::Caller,
            digit,
            method: DtmfMethod::Rfc4733,
            shortcode,
        };
        let pin = to_json(&clock, &dtmf('4', false), DtmfDigits::Masked).unwrap();
        assert_eq!(
            (&pin["digit"], &pin["masked"]),
            (&Value::Null, &json!(true))
        );
        let code = to_json(&clock, &dtmf('5', true), DtmfDigits::Masked).unwrap();
        assert_eq!((&code["digit"], code.get("masked")), (&json!("5"), None));
        let all = to_json(&clock, &dtmf('4', false), DtmfDigits::All).unwrap();
        assert_eq!(all["digit"], "4");
    }
}
