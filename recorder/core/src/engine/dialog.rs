//! The dialogs of one call (RFC 3261 §12): one per To tag the callee's side
//! answered with, early (a provisional with a tag) or confirmed (a 2xx),
//! several when a request forks. The call owns them; they decide which
//! dialog's SDP the callee's media leg follows (the "media dialog": the
//! latest to send SDP before the answer, the answered one after) and
//! whether the call still has a confirmed dialog once one is hung up.

use crate::sdp::Sdp;

/// Most dialogs one call keeps (forks beyond this are relayed but not tracked).
const MAX_DIALOGS: usize = 8;

/// Where a dialog is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialogState {
    /// A provisional response with a To tag created it.
    Early,
    /// A 2xx created or confirmed it.
    Confirmed,
    /// Hung up (BYE), or an early dialog the final answer ended.
    Terminated,
}

/// One dialog of the call, named by the callee side's tag.
#[derive(Debug)]
pub(super) struct Dialog {
    /// The callee side's tag (To in the caller's requests).
    pub(super) tag: String,
    pub(super) state: DialogState,
    /// The latest SDP the callee side sent in this dialog, so the media leg
    /// can follow this dialog when it becomes the media dialog later.
    pub(super) sdp: Option<Sdp>,
}

/// The dialogs of a call and which one the callee's media leg follows.
#[derive(Debug, Default)]
pub(super) struct Dialogs {
    list: Vec<Dialog>,
    media: Option<usize>,
}

/// What becomes of the callee's media leg after SDP from a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegUpdate {
    /// The leg follows this SDP.
    Follow,
    /// Another dialog carries the media; the SDP is only kept with its dialog.
    Keep,
}

impl Dialogs {
    fn index(&self, tag: &str) -> Option<usize> {
        self.list.iter().position(|d| d.tag == tag)
    }

    /// The dialog of `tag`, made early or confirmed by a response of `code`
    /// to the initial INVITE. `None` when the table is full.
    pub(super) fn on_invite_response(&mut self, tag: &str, code: u16) -> Option<usize> {
        let i = match self.index(tag) {
            Some(i) => i,
            None if self.list.len() < MAX_DIALOGS => {
                self.list.push(Dialog {
                    tag: tag.to_owned(),
                    state: DialogState::Early,
                    sdp: None,
                });
                self.list.len() - 1
            }
            None => return None,
        };
        let d = &mut self.list[i];
        if (200..300).contains(&code) && d.state != DialogState::Terminated {
            d.state = DialogState::Confirmed;
        }
        Some(i)
    }

    /// Whether `tag` names a dialog of this call that is not over.
    #[cfg(test)]
    pub(super) fn is_live(&self, tag: &str) -> bool {
        self.index(tag)
            .is_some_and(|i| self.list[i].state != DialogState::Terminated)
    }

    /// Whether `tag` names any dialog this call has had.
    pub(super) fn knows(&self, tag: &str) -> bool {
        self.index(tag).is_some()
    }

    /// Keeps SDP the callee side sent in the dialog of `tag` and says
    /// whether the media leg follows it: before the answer the latest
    /// dialog to send SDP carries the media (early media from one fork,
    /// then another); after it, only the media dialog does.
    pub(super) fn on_callee_sdp(&mut self, tag: &str, sdp: Sdp, answered: bool) -> LegUpdate {
        let Some(i) = self.index(tag) else {
            return LegUpdate::Keep;
        };
        self.list[i].sdp = Some(sdp);
        if !answered || self.media.is_none() || self.media == Some(i) {
            self.media = Some(i);
            LegUpdate::Follow
        } else {
            LegUpdate::Keep
        }
    }

    /// The answered dialog becomes the media dialog. Returns its SDP when
    /// the leg followed another dialog until now (it must switch).
    pub(super) fn answered_by(&mut self, tag: &str) -> Option<Sdp> {
        let i = self.index(tag)?;
        if self.media == Some(i) {
            return None;
        }
        self.media = Some(i);
        self.list[i].sdp.clone()
    }

    /// A final non-2xx answer: every early dialog is over.
    pub(super) fn end_early(&mut self) {
        for d in &mut self.list {
            if d.state == DialogState::Early {
                d.state = DialogState::Terminated;
            }
        }
        if self
            .media
            .is_some_and(|m| self.list[m].state == DialogState::Terminated)
        {
            self.media = None;
        }
    }

    /// Hangs up the dialog of `tag`. Returns the SDP of the confirmed
    /// dialog the media leg moves to, when the media dialog was the one
    /// hung up and another is still up.
    pub(super) fn hang_up(&mut self, tag: &str) -> Option<Sdp> {
        let i = self.index(tag)?;
        self.list[i].state = DialogState::Terminated;
        if self.media != Some(i) {
            return None;
        }
        let next = self
            .list
            .iter()
            .position(|d| d.state == DialogState::Confirmed)?;
        self.media = Some(next);
        self.list[next].sdp.clone()
    }

    /// Dialogs still confirmed.
    pub(super) fn confirmed(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.state == DialogState::Confirmed)
            .count()
    }

    /// The media dialog's tag.
    #[cfg(test)]
    pub(super) fn media_tag(&self) -> Option<&str> {
        self.media.map(|i| self.list[i].tag.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(port: u16) -> Sdp {
        Sdp::parse(format!("v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio {port} RTP/AVP 0\r\n").as_bytes())
            .unwrap()
    }

    #[test]
    fn early_media_follows_the_latest_fork_then_the_answered_one() {
        let mut d = Dialogs::default();
        d.on_invite_response("a", 180);
        d.on_invite_response("b", 183);
        assert_eq!(d.on_callee_sdp("b", sdp(2000), false), LegUpdate::Follow);
        d.on_invite_response("a", 200);
        d.on_callee_sdp("a", sdp(1000), false);
        assert_eq!(d.media_tag(), Some("a"));
        assert_eq!(d.answered_by("a"), None, "already the media dialog");
        // The second fork answers too: its SDP is kept, the leg stays.
        d.on_invite_response("b", 200);
        assert_eq!(d.on_callee_sdp("b", sdp(2001), true), LegUpdate::Keep);
        assert_eq!(d.confirmed(), 2);
        // Hanging up the media dialog moves the leg to the other one.
        let moved = d.hang_up("a").expect("moves to b");
        assert_eq!(moved.streams[0].port, 2001);
        assert_eq!(d.confirmed(), 1);
        assert_eq!(d.hang_up("b"), None);
        assert_eq!(d.confirmed(), 0);
    }

    #[test]
    fn a_final_failure_ends_early_dialogs_and_the_table_is_bounded() {
        let mut d = Dialogs::default();
        for i in 0..20 {
            d.on_invite_response(&format!("t{i}"), 180);
        }
        assert!(d.knows("t7") && !d.knows("t8"));
        d.on_callee_sdp("t3", sdp(1), false);
        d.end_early();
        assert!(!d.is_live("t3"));
        assert_eq!(d.media_tag(), None);
        assert_eq!(d.confirmed(), 0);
    }
}
