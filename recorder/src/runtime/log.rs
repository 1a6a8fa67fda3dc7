//! The info-level line of each call event: calls appear by the hash of
//! their Call-ID, never by number or URI (those go to the event log).

use earshot_recorder_core::Event;

/// Logs one call event.
pub(super) fn log_event(e: &Event) {
    match e {
        Event::CallStarted { call, users, .. } => {
            tracing::info!(call = %call.hash, policy_users = users.len(), "call started");
        }
        Event::CallAnswered { call, .. } => tracing::info!(call = %call.hash, "call answered"),
        Event::Recording {
            call, on, reason, ..
        } => {
            let why = match reason {
                earshot_recorder_core::RecordingReason::Answered { .. } => "always",
                earshot_recorder_core::RecordingReason::Shortcode { .. } => "shortcode",
                earshot_recorder_core::RecordingReason::CallEnded => "call_ended",
                earshot_recorder_core::RecordingReason::SrcPaused => "src_paused",
            };
            tracing::info!(call = %call.hash, recording = on, reason = why, "recording changed");
        }
        Event::CallEnded { call, answered, .. } => {
            tracing::info!(call = %call.hash, answered, "call ended")
        }
        Event::Dtmf {
            call, side, method, ..
        } => {
            tracing::debug!(call = %call.hash, side = side.as_str(), method = method.label(), "dtmf digit");
        }
        Event::Announcement {
            call,
            kind,
            to,
            outcome,
            played,
            ..
        } => {
            tracing::info!(call = %call.hash, kind = kind.label(), to = to.as_str(), result = outcome.label(), played_ms = played.as_millis() as u64, "announcement");
        }
        Event::Transfer { call, by, .. } => {
            tracing::info!(call = %call.hash, by = by.as_str(), "call transferred (REFER)")
        }
        Event::MediaNote { call, note, .. } => {
            tracing::info!(call = %call.hash, note = note.label(), "media the recording cannot hold (relayed)")
        }
        Event::Siprec { call, session, .. } => tracing::info!(
            call = %call.hash,
            participants = session.participants.len(),
            identifiers = session.identifiers.len(),
            "SIPREC session metadata"
        ),
        Event::Media(_) => {}
    }
}
