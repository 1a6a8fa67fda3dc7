//! The recording server (SRS) side of SIPREC (RFC 7866): a session
//! recording client (an SBC or PBX, a peer marked `siprec`) sends an INVITE
//! whose body holds the SDP of the forked streams and the recording
//! metadata (`crate::siprec`); the recorder answers it itself — each audio
//! stream `recvonly` on a port of its own, nothing relayed, nothing sent
//! back — and records the session as it would a call in its path: the
//! policy's users found among the participants by their AoR's user part,
//! Always / OnDemand / Never, the shortcode from the user's own stream,
//! the caller on the left.
//!
//! Which stream is whose comes from the metadata through each m-line's
//! `a=label`, never from the order of the m-lines: the caller is the
//! participant the SRC marks as calling (Oracle's `callingParty`), else the
//! first participant the metadata lists; a stream its sender(s) include the
//! caller in is the left channel (a mixed stream too), any other the right.
//! A stream the metadata does not map is received and not recorded
//! (`rtp_dropped{reason="siprec_unmapped"}`) until an update maps it.
//! Re-INVITEs and UPDATEs bring new SDP and metadata (`datamode` partial
//! or complete); a stream keeps its channel once it has one.
//!
//! Over UDP the 200 OK is sent again (T1 doubling to T2) until the ACK
//! comes, for at most 64·T1 (RFC 3261 §13.3.1.4). Not built yet: SRTP on
//! the recording session, a mixed stream said as such in the sidecar.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{RecordingMode, Target, Transport};
use crate::dtmf::{self, DtmfMethod};
use crate::event::{CallRef, EndReason, Event, MediaFrame, Party, RecordingReason, Side};
use crate::g711::Law;
use crate::sdp::{Direction, MediaStream, Sdp};
use crate::sip::message::Message;
use crate::siprec::{Metadata, Namespace, Participant, split_body};
use crate::stats::Stats;
use earshot_contracts::layout::call_hash;

use super::calls::{Call, CallTimer, Involved};
use super::media::{Leg, Stream};
use super::{Output, Recorder, Relay, Timer};

/// What a recording session adds to a call.
pub(super) struct SrsState {
    /// What the SRC said so far.
    metadata: Metadata,
    /// Our To tag.
    tag: String,
    /// The SRC: where its requests came from last (responses go there).
    src: Target,
    /// The SRC's Contact and its From (ours to address a BYE).
    src_contact: Option<String>,
    src_from: String,
    /// Our SDP answer's version (RFC 3264 §8: up by one when it changes).
    version: u32,
    /// The last 2xx to an INVITE, sent again until its ACK (UDP).
    ok: Option<Vec<u8>>,
    /// CSeq of that INVITE.
    ok_cseq: u32,
    /// When the 2xx was first sent, the current interval, and the timer's
    /// generation (a timer of an earlier 2xx is stale).
    resend: Option<(Instant, Duration)>,
    resend_gen: u32,
    /// The SRC's last in-dialog CSeq and our answer to it, for a
    /// retransmission (RFC 3261 §12.2.2).
    last: Option<(u32, String, Vec<u8>)>,
    /// Our own CSeq toward the SRC (a BYE of ours).
    our_cseq: u32,
    /// Each m-line's channel: `None` while the metadata does not say.
    sides: Vec<Option<Side>>,
    /// The SRC paused the session: no stream it offers sends.
    paused: bool,
    /// Our `a=crypto:` line for each SRTP m-line (SDES needs one in the
    /// answer; the recorder never sends, so it is never used), made once.
    answer_keys: Vec<Option<String>>,
    /// The metadata documents as received (the first [`KEPT_DOCUMENTS`]).
    received: Vec<String>,
}

/// What a recording session answers to.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, UPDATE, OPTIONS, INFO";

impl SrsState {
    /// Whether the SRC paused the session.
    pub(super) fn paused(&self) -> bool {
        self.paused
    }
}

/// Metadata documents of a session kept as received, for the sidecar.
const KEPT_DOCUMENTS: usize = 8;
/// Audio streams one session may take ports for: a party's stream each
/// (two), a few more for a conference the SRC records stream by stream.
const MAX_SESSION_STREAMS: usize = 4;
/// Our To tags start with this (`local_response`): an in-dialog request
/// carrying one is for a session of ours, known or forgotten.
const OUR_TAG: &str = "es";

/// Whether `msg` asks for a recording session: `Require: siprec`, or a
/// Contact with the `+sip.src` feature tag (RFC 7866 §6.1.1).
pub(super) fn is_siprec(msg: &Message) -> bool {
    msg.headers_named("Require").iter().any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("siprec"))
    }) || msg.headers_named("Contact").iter().any(|v| {
        // A Contact parameter `+sip.src` (after the URI's `>`).
        v.rsplit_once('>')
            .map_or(v.as_str(), |(_, params)| params)
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("+sip.src"))
    })
}

/// The SDP and metadata of a SIPREC request's body: multipart, or an SDP
/// alone (a re-INVITE that changes only the media).
/// A SIPREC request's SDP and metadata (with the document as received).
type Parts = (Option<Sdp>, Option<(Metadata, String)>);

fn body_of(msg: &Message) -> Result<Parts, String> {
    if msg.body.is_empty() {
        return Ok((None, None));
    }
    let content_type = msg.header("Content-Type").unwrap_or_default();
    let (sdp, metadata) = match msg.content_type().as_deref() {
        Some("application/sdp") => (Some(msg.body.as_slice()), None),
        Some("multipart/mixed") => {
            let b = split_body(&content_type, &msg.body).map_err(|e| e.to_string())?;
            (b.sdp, b.metadata)
        }
        _ => return Err("a SIPREC body is multipart/mixed or application/sdp".into()),
    };
    let sdp = sdp
        .map(Sdp::parse)
        .transpose()
        .map_err(|e| format!("SDP: {e}"))?;
    let metadata = metadata
        .map(|raw| Metadata::parse(raw).map(|m| (m, String::from_utf8_lossy(raw).into_owned())))
        .transpose()
        .map_err(|e| format!("metadata: {e}"))?;
    Ok((sdp, metadata))
}

/// Whether an offered m-line is one the recorder records: plain RTP audio
/// with a port.
fn readable(m: &MediaStream) -> bool {
    m.media == "audio"
        && m.port != 0
        && m.is_rtp()
        && !m.dtls
        && (!m.is_secure() || session_key(m).is_some())
}

/// The SRC's SDES key for a secure m-line: its first `a=crypto:` line of a
/// suite the recorder supports (the one the answer accepts).
fn session_key(m: &MediaStream) -> Option<(&str, crate::srtp::SdesKey)> {
    if !m.is_secure() {
        return None;
    }
    m.crypto
        .iter()
        .find_map(|line| Some((line.as_str(), crate::srtp::parse_crypto(line).ok()?)))
}

/// No metadata yet: nothing mapped.
fn no_metadata() -> Metadata {
    Metadata {
        namespace: Namespace::Rfc7865,
        partial: false,
        sessions: Vec::new(),
        participants: Vec::new(),
        streams: Vec::new(),
        identifiers: Vec::new(),
    }
}

/// The participant recorded on the left: the one the SRC marks as calling,
/// else the first listed.
fn caller_of(meta: &Metadata) -> Option<&Participant> {
    meta.participants
        .iter()
        .find(|p| p.calling == Some(true))
        .or(meta.participants.first())
}

/// The channel of the m-line labelled `label`: left when its senders
/// include the caller, right when they do not, unknown when nobody sends.
fn side_of_label(meta: &Metadata, label: Option<&str>) -> Option<Side> {
    let senders = meta.senders_of_label(label?);
    let caller = caller_of(meta)?;
    match senders.as_slice() {
        [] => None,
        s if s.iter().any(|p| p.id == caller.id) => Some(Side::Caller),
        _ => Some(Side::Callee),
    }
}

fn party(p: Option<&Participant>) -> Party {
    Party {
        number: p.and_then(Participant::user).map(str::to_owned),
        display_name: p.and_then(|p| p.name.clone()),
    }
}

impl Recorder {
    /// A request of a recording session, or one that starts one, from
    /// `peer`: handled here (true), or not a SIPREC request (false).
    pub(super) fn srs_request(
        &mut self,
        now: Instant,
        source: Target,
        peer: &str,
        msg: &Message,
        method: &str,
    ) -> bool {
        let src = self.cfg.peers.iter().find(|p| p.name == peer && p.siprec);
        let (src_peer, src_only) = (src.is_some(), src.is_some_and(|p| p.next_hop.is_none()));
        // A session takes only its own SRC's requests: a proxied call's
        // with the same Call-ID from elsewhere goes its own way.
        let session = msg
            .call_id()
            .and_then(|id| self.call_ids.get(&id).copied())
            .filter(|cid| {
                self.calls.get(cid).is_some_and(|c| {
                    c.srs
                        .as_ref()
                        .is_some_and(|s| s.src.addr.ip() == source.addr.ip())
                })
            });
        if let Some(cid) = session {
            self.srs_in_session(now, source, cid, msg, method);
            return true;
        }
        if !src_peer {
            return false;
        }
        let ours = msg.to_tag().is_some_and(|t| t.starts_with(OUR_TAG));
        match method {
            // A request in a session that is over (forgotten after its
            // linger): nothing to route it to.
            _ if ours => {
                self.refuse(source, msg, 481, "Call/Transaction Does Not Exist", &[]);
                true
            }
            // SRCs check that their recording servers are alive (an SRC
            // that is also a proxied peer: the proxy answers OPTIONS for
            // us and forwards the others).
            "OPTIONS" if msg.to_tag().is_none() && src_only => {
                let resp = self.local_response(msg, 200, "OK", &[("Allow", ALLOW.to_owned())]);
                self.send(source, &resp);
                true
            }
            "INVITE" if msg.to_tag().is_none() && is_siprec(msg) => {
                self.srs_start(now, source, peer, msg);
                true
            }
            _ => false,
        }
    }

    /// The request's SDP and metadata, or a 400 saying what is wrong.
    fn srs_body(&mut self, source: Target, msg: &Message) -> Option<Parts> {
        match body_of(msg) {
            Ok(b) => Some(b),
            Err(e) => {
                let reason = format!("Bad Request (SIPREC body: {e})");
                self.refuse(source, msg, 400, &reason, &[]);
                None
            }
        }
    }

    fn srs_start(&mut self, now: Instant, source: Target, peer: &str, msg: &Message) {
        if self.draining {
            self.refuse(source, msg, 503, "Service Unavailable (draining)", &[]);
            return;
        }
        let Some((sdp, metadata)) = self.srs_body(source, msg) else {
            return;
        };
        let Some(sdp) = sdp else {
            // An offer is needed: the SRC's media is what is recorded.
            self.refuse(source, msg, 488, "Not Acceptable Here (no SDP offer)", &[]);
            return;
        };
        let usable = sdp.streams.iter().filter(|m| readable(m)).count();
        if usable == 0 {
            // Nothing here could be recorded anywhere better: not a 503.
            self.refuse(
                source,
                msg,
                488,
                "Not Acceptable Here (no plain RTP audio stream)",
                &[],
            );
            return;
        }
        let wanted = usable.min(MAX_SESSION_STREAMS);
        if self.may_divert && !self.diverted_input && self.ports.free.len() < wanted {
            // No ports here: another shard takes the session.
            self.out.push_back(Output::Divert {
                source,
                data: msg.to_bytes(),
            });
            return;
        }
        let Some(call_id) = msg.call_id() else {
            self.refuse(source, msg, 400, "Bad Request (no Call-ID)", &[]);
            return;
        };
        if self
            .call_ids
            .get(&call_id)
            .and_then(|cid| self.calls.get(cid))
            .is_some_and(|c| c.ended.is_none())
        {
            // A call in progress has this Call-ID: never taken over.
            self.refuse(source, msg, 482, "Loop Detected (Call-ID in use)", &[]);
            return;
        }
        if self.peer_full(now, peer, true)
            || self.ports.free.len() < wanted
            || self.calls.len() >= super::proxy::MAX_CALLS
        {
            // The SRC tries its next recording server.
            self.refuse(
                source,
                msg,
                503,
                "Service Unavailable",
                &[("Retry-After", "5".to_owned())],
            );
            return;
        }
        let (metadata, received) = match metadata {
            Some((m, raw)) => (m, vec![raw]),
            None => (no_metadata(), Vec::new()),
        };
        let id = self.id();
        let r = CallRef {
            id,
            hash: call_hash(&call_id),
        };
        let caller = party(caller_of(&metadata));
        let callee = party(
            metadata
                .participants
                .iter()
                .find(|p| Some(p.id.as_str()) != caller_of(&metadata).map(|c| c.id.as_str())),
        );
        let involved = self.srs_involved(&metadata, &[]);
        let users = super::calls::users_of(&involved);
        let resp = self.local_response(msg, 200, "OK", &[]);
        let tag = resp.to_tag().unwrap_or_default();
        let mut call = Call::new(
            r.clone(),
            &call_id,
            msg.from_tag(),
            involved,
            now,
            peer,
            source,
        );
        call.srs = Some(Box::new(SrsState {
            metadata,
            tag,
            src: source,
            src_contact: msg
                .header("Contact")
                .and_then(|c| crate::sip::message::name_addr_uri(&c))
                .map(|u| u.to_string()),
            src_from: msg.header("From").unwrap_or_default(),
            version: 0,
            ok: None,
            ok_cseq: 0,
            resend: None,
            resend_gen: 0,
            last: None,
            our_cseq: 0,
            sides: Vec::new(),
            answer_keys: Vec::new(),
            paused: false,
            received,
        }));
        self.register_call(call);
        self.emit(Event::CallStarted {
            call: r.clone(),
            at: now,
            caller,
            callee,
            users,
            replaces: None,
        });
        self.srs_offer(now, id, &sdp);
        self.srs_answer(now, id, msg, source);
        self.srs_tell(now, id);
        if let Some(call) = self.calls.get_mut(&id) {
            call.answered = true;
        }
        self.emit(Event::CallAnswered { call: r, at: now });
        self.update_recording(now, id, None);
    }

    /// The policy users among the participants, on the channel of the
    /// streams they send; `kept` are users already on the session (their
    /// toggles stay).
    fn srs_involved(&self, meta: &Metadata, kept: &[Involved]) -> Vec<Involved> {
        let caller = caller_of(meta).map(|p| p.id.clone());
        let mut out: Vec<Involved> = Vec::new();
        // A participant who left (a transfer) is no longer on the session:
        // an Always user who left does not keep it recorded.
        for p in meta.participants.iter().filter(|p| !p.left) {
            let Some(ext) = p.user() else { continue };
            let side = if Some(&p.id) == caller.as_ref() {
                Side::Caller
            } else {
                Side::Callee
            };
            if out.iter().any(|u| u.extension == ext && u.side == side) {
                continue;
            }
            if let Some(k) = kept.iter().find(|u| u.extension == ext && u.side == side) {
                out.push(Involved {
                    extension: k.extension.clone(),
                    display_name: k.display_name.clone(),
                    mode: k.mode,
                    shortcode: k.shortcode,
                    side,
                    on: k.on,
                    toggled_at: k.toggled_at,
                });
                continue;
            }
            let Some(user) = self.cfg.users.get(ext) else {
                continue;
            };
            if user.mode == RecordingMode::Never {
                continue;
            }
            out.push(Involved::new(ext.to_owned(), user, side));
        }
        out
    }

    /// Takes the SRC's offer: a port for each audio m-line (a new one
    /// where the m-line is new), the SRC's addresses, each m-line's channel.
    fn srs_offer(&mut self, _now: Instant, cid: u64, sdp: &Sdp) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        for (i, m) in sdp.streams.iter().enumerate().take(crate::sdp::MAX_STREAMS) {
            let taken = call.streams.iter().filter(|s| s.ports[0] != 0).count();
            if i >= call.streams.len() {
                call.streams.push(Stream {
                    ports: [0, 0],
                    legs: Default::default(),
                });
            }
            let stream = &mut call.streams[i];
            // Each offer says anew which m-lines are taken (RFC 3264 §8): a
            // stream re-offered with port 0 gives its port back, one
            // refused before and offered now as plain RTP gets one.
            if readable(m) && stream.ports[0] == 0 && taken < MAX_SESSION_STREAMS {
                stream.ports[0] = self.ports.take((cid, i as u8, Side::Caller)).unwrap_or(0);
            } else if !readable(m) && stream.ports[0] != 0 {
                self.ports.give(stream.ports[0]);
                stream.ports[0] = 0;
            }
            let leg: &mut Leg = &mut stream.legs[0];
            if leg.negotiated != m.rtp {
                leg.latched = None;
            }
            leg.negotiated = m.rtp;
            leg.stream = Some(m.clone());
            // SRTP: the SRC's packets decrypt with the key of its line the
            // answer accepts (a re-offer of the same key keeps the receiver
            // and its rollover counter).
            match session_key(m) {
                Some((line, _)) if leg.srtp.as_ref().is_some_and(|s| s.is_for(line)) => {}
                Some((line, _)) => leg.srtp = super::media::Srtp::from_line(line),
                None => leg.srtp = None,
            }
        }
        // Our own key line for each SRTP m-line, in the answer.
        let mut fresh = Vec::new();
        if let Some(srs) = call.srs.as_mut() {
            for (i, m) in sdp.streams.iter().enumerate() {
                if srs.answer_keys.len() <= i {
                    srs.answer_keys.push(None);
                }
                match session_key(m) {
                    Some((_, key)) => {
                        let stale = srs.answer_keys[i]
                            .as_deref()
                            .is_none_or(|l| !l.starts_with(&format!("{} {} ", key.tag, key.suite)));
                        if stale {
                            fresh.push((i, key.tag, key.suite));
                        }
                    }
                    None => srs.answer_keys[i] = None,
                }
            }
        }
        for (i, tag, suite) in fresh {
            let mut bytes = vec![0u8; suite.master_key_len() + suite.master_salt_len()];
            for chunk in bytes.chunks_mut(8) {
                let r = self.random().to_be_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            let line = crate::srtp::SdesKey::new(tag, suite, &bytes)
                .ok()
                .map(|k| k.to_attribute());
            if let Some(srs) = self.calls.get_mut(&cid).and_then(|c| c.srs.as_mut()) {
                srs.answer_keys[i] = line;
            }
        }
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let Some(srs) = call.srs.as_mut() else { return };
        // A pause (PCI): no readable stream the SRC still sends on.
        srs.paused = !sdp.streams.iter().any(|m| {
            readable(m) && matches!(m.direction, Direction::SendOnly | Direction::SendRecv)
        });
        srs.sides = sdp
            .streams
            .iter()
            .enumerate()
            .map(|(i, m)| {
                // A stream keeps its channel once it has one.
                srs.sides
                    .get(i)
                    .copied()
                    .flatten()
                    .or_else(|| side_of_label(&srs.metadata, m.label.as_deref()))
            })
            .collect();
        self.srs_listen(cid);
    }

    /// In-band digit detection on each stream whose channel has a user who
    /// may key a shortcode and whose SDP has no telephone-event.
    fn srs_listen(&mut self, cid: u64) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let Some(srs) = call.srs.as_ref() else { return };
        let sides = srs.sides.clone();
        for (i, stream) in call.streams.iter_mut().enumerate() {
            let listens = sides.get(i).copied().flatten().is_some_and(|s| {
                call.involved.iter().any(|u| {
                    u.side == s && u.mode == RecordingMode::OnDemand && u.shortcode.is_some()
                })
            });
            let leg = &mut stream.legs[0];
            let te = leg
                .stream
                .as_ref()
                .is_some_and(|s| s.telephone_event().is_some());
            if listens && !te {
                leg.tones.get_or_insert_with(Default::default);
            } else {
                leg.tones = None;
            }
        }
    }

    /// The 200 OK with our SDP answer (to `source`, where the request came
    /// from): each plain RTP audio m-line on its port with the SRC's codecs
    /// and label, `recvonly` (`inactive` to an `inactive` or `recvonly`
    /// offer), anything else refused (port 0). Returns what was sent.
    fn srs_answer(&mut self, now: Instant, cid: u64, msg: &Message, source: Target) -> Vec<u8> {
        let t1 = self.cfg.timers.t1;
        let Some(call) = self.calls.get_mut(&cid) else {
            return Vec::new();
        };
        let Some(srs) = call.srs.as_mut() else {
            return Vec::new();
        };
        srs.src = source;
        srs.version = srs.version.wrapping_add(1);
        let (tag, version) = (srs.tag.clone(), srs.version);
        let ip = self.cfg.facing(source.addr.ip());
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut sdp = format!(
            "v=0\r\no=earshot {id} {version} IN {family} {ip}\r\ns=earshot\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
            id = call.r.id
        );
        let answer_keys = srs.answer_keys.clone();
        for (i, stream) in call.streams.iter().enumerate() {
            let Some(m) = stream.legs[0].stream.as_ref() else {
                continue;
            };
            let formats: Vec<String> = m.formats.iter().map(u8::to_string).collect();
            let formats = if formats.is_empty() {
                "0".to_owned()
            } else {
                formats.join(" ")
            };
            sdp.push_str(&format!(
                "m={} {} {} {formats}\r\n",
                m.media, stream.ports[0], m.proto
            ));
            if stream.ports[0] == 0 {
                continue;
            }
            for c in &m.codecs {
                sdp.push_str(&format!(
                    "a=rtpmap:{} {}/{}\r\n",
                    c.payload_type, c.name, c.clock_rate
                ));
            }
            if let Some(label) = &m.label {
                sdp.push_str(&format!("a=label:{label}\r\n"));
            }
            if let Some(Some(line)) = answer_keys.get(i) {
                sdp.push_str(&format!("a=crypto:{line}\r\n"));
            }
            let direction = match m.direction {
                Direction::Inactive | Direction::RecvOnly => "inactive",
                Direction::SendOnly | Direction::SendRecv => "recvonly",
            };
            sdp.push_str(&format!("a={direction}\r\n"));
        }
        let contact = self.our_uri(source).replace(";lr>", ">");
        let mut extra = vec![
            ("Contact", contact),
            ("Content-Type", "application/sdp".to_owned()),
            ("Allow", ALLOW.to_owned()),
        ];
        // A proxy between the SRC and us stays in the dialog.
        let record_route = msg.headers_named("Record-Route");
        if !record_route.is_empty() {
            extra.push(("Record-Route", record_route.join(", ")));
        }
        let mut resp = self.local_response(msg, 200, "OK", &extra);
        // Our tag, the same on every answer of the session.
        if let Some(to) = resp.header("To") {
            let bare = to.split(";tag=").next().unwrap_or(&to).to_owned();
            resp.set_header("To", format!("{bare};tag={tag}"));
        }
        resp.body = sdp.into_bytes();
        let data = self.send(source, &resp);
        if msg.method() == Some("INVITE") {
            let cseq = msg.cseq().map_or(0, |(n, _)| n);
            if let Some(srs) = self.calls.get_mut(&cid).and_then(|c| c.srs.as_mut()) {
                srs.ok = Some(data.clone());
                srs.ok_cseq = cseq;
                srs.resend = Some((now, t1));
                srs.resend_gen = srs.resend_gen.wrapping_add(1);
                let g = srs.resend_gen;
                self.arm(now + t1, Timer::Call(CallTimer::SrsOk(cid, g)));
            }
        }
        data
    }

    /// The 2xx again until its ACK (over UDP; RFC 3261 §13.3.1.4); with no
    /// ACK after 64·T1, whatever the transport, the session ends with our
    /// BYE.
    pub(super) fn srs_resend(&mut self, now: Instant, cid: u64, generation: u32) {
        let t = self.cfg.timers;
        let Some(srs) = self.calls.get_mut(&cid).and_then(|c| {
            if c.ended.is_some() {
                None
            } else {
                c.srs.as_mut()
            }
        }) else {
            return;
        };
        if srs.resend_gen != generation {
            return;
        }
        let (Some(data), Some((since, interval))) = (srs.ok.clone(), srs.resend) else {
            return;
        };
        if now >= since + t.t1 * 64 {
            srs.resend = None;
            self.end_call(now, cid, EndReason::Timeout);
            return;
        }
        let src = srs.src;
        if src.transport != Transport::Udp {
            // Reliable: nothing to send again, only the deadline to keep.
            self.arm(
                since + t.t1 * 64,
                Timer::Call(CallTimer::SrsOk(cid, generation)),
            );
            return;
        }
        let next = (interval * 2).min(t.t2);
        srs.resend = Some((since, next));
        self.send_bytes(src, data, "INVITE");
        self.arm(now + next, Timer::Call(CallTimer::SrsOk(cid, generation)));
    }

    /// Ends a session from our side (no ACK, idle, shutting down): a BYE to
    /// the SRC, so it knows the call is no longer recorded here.
    pub(super) fn srs_bye(&mut self, cid: u64) {
        let branch = format!("{}{:016x}", super::proxy::BRANCH_PREFIX, self.random());
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let call_id = call.call_id.clone();
        let Some(srs) = call.srs.as_mut() else { return };
        srs.our_cseq = srs.our_cseq.wrapping_add(1).max(1);
        let (src, cseq, from) = (srs.src, srs.our_cseq, srs.src_from.clone());
        let uri = srs
            .src_contact
            .clone()
            .unwrap_or_else(|| format!("sip:{}", src.addr));
        let tag = srs.tag.clone();
        let via = self.our_via(src, &branch);
        let me = self.our_uri(src).replace(";lr>", ">");
        let text = format!(
            "BYE {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {me};tag={tag}\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n"
        );
        self.send_bytes(src, text.into_bytes(), "BYE");
    }

    /// A request in a recording session, from its SRC.
    fn srs_in_session(
        &mut self,
        now: Instant,
        source: Target,
        cid: u64,
        msg: &Message,
        method: &str,
    ) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let Some(srs) = call.srs.as_mut() else { return };
        call.last_activity = now;
        let ours = msg.to_tag().as_deref() == Some(srs.tag.as_str());
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        if method == "ACK" {
            if cseq == srs.ok_cseq {
                srs.resend = None;
            }
            return;
        }
        if method == "INVITE" && msg.to_tag().is_none() {
            if cseq == srs.ok_cseq {
                // The initial INVITE again: the same answer.
                if let Some(ok) = srs.ok.clone() {
                    self.send_bytes(source, ok, "INVITE");
                }
            } else {
                // Another INVITE with the session's Call-ID (§8.2.2.2).
                self.refuse(source, msg, 482, "Loop Detected (merged request)", &[]);
            }
            return;
        }
        // RFC 3261 §12.2.2: the same CSeq again is a retransmission (our
        // answer again), a lower one is out of order.
        if let Some((last, last_method, answer)) = &srs.last {
            if cseq == *last && method == last_method {
                let answer = answer.clone();
                self.send_bytes(source, answer, method);
                return;
            }
            if cseq < *last {
                self.refuse(
                    source,
                    msg,
                    500,
                    "Server Internal Error (CSeq out of order)",
                    &[],
                );
                return;
            }
        }
        if call.ended.is_some() || !ours {
            self.refuse(source, msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        }
        let answer = match method {
            "BYE" => {
                let resp = self.local_response(msg, 200, "OK", &[]);
                let data = self.send(source, &resp);
                self.end_call(now, cid, EndReason::Bye(Side::Caller));
                data
            }
            "INVITE" | "UPDATE" => {
                let Some((sdp, metadata)) = self.srs_body(source, msg) else {
                    return;
                };
                let updated = metadata.is_some();
                if let Some((m, raw)) = metadata {
                    self.srs_metadata(now, cid, m, raw);
                }
                if let Some(sdp) = &sdp {
                    self.srs_offer(now, cid, sdp);
                    // Paused or resumed by the SRC.
                    self.update_recording(now, cid, Some(RecordingReason::SrcPaused));
                }
                // An offer answered; no offer (a re-INVITE without SDP):
                // ours is the offer (RFC 3261 §14.2), the current streams.
                let data = if sdp.is_some() || method == "INVITE" {
                    self.srs_answer(now, cid, msg, source)
                } else {
                    let resp = self.local_response(msg, 200, "OK", &[]);
                    self.send(source, &resp)
                };
                if updated {
                    self.srs_tell(now, cid);
                }
                data
            }
            "OPTIONS" | "INFO" => {
                let resp = self.local_response(msg, 200, "OK", &[("Allow", ALLOW.to_owned())]);
                self.send(source, &resp)
            }
            _ => {
                let resp = self.local_response(
                    msg,
                    405,
                    "Method Not Allowed",
                    &[("Allow", ALLOW.to_owned())],
                );
                self.send(source, &resp)
            }
        };
        if let Some(srs) = self.calls.get_mut(&cid).and_then(|c| c.srs.as_mut()) {
            srs.last = Some((cseq, method.to_owned(), answer));
        }
    }

    /// New metadata: applied (partial or complete), the users and the
    /// channels of unmapped streams found again, recording decided again.
    fn srs_metadata(&mut self, now: Instant, cid: u64, later: Metadata, raw: String) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let Some(srs) = call.srs.as_mut() else { return };
        srs.metadata.apply(later);
        if srs.received.len() < KEPT_DOCUMENTS {
            srs.received.push(raw);
        }
        let labels: Vec<Option<String>> = call
            .streams
            .iter()
            .map(|s| s.legs[0].stream.as_ref().and_then(|m| m.label.clone()))
            .collect();
        for (i, label) in labels.iter().enumerate() {
            if srs.sides.get(i).copied().flatten().is_none()
                && let Some(slot) = srs.sides.get_mut(i)
            {
                *slot = side_of_label(&srs.metadata, label.as_deref());
            }
        }
        let meta = srs.metadata.clone();
        let kept = std::mem::take(&mut call.involved);
        let involved = self.srs_involved(&meta, &kept);
        if let Some(call) = self.calls.get_mut(&cid) {
            call.involved = involved;
        }
        self.srs_listen(cid);
        self.update_recording(now, cid, None);
    }

    /// Tells the recording what the SRC said about the call so far.
    fn srs_tell(&mut self, now: Instant, cid: u64) {
        let Some(call) = self.calls.get(&cid) else {
            return;
        };
        let Some(srs) = call.srs.as_ref() else { return };
        let meta = &srs.metadata;
        let caller = caller_of(meta).map(|p| p.id.clone());
        let labels: Vec<Option<&str>> = call
            .streams
            .iter()
            .map(|s| s.legs[0].stream.as_ref().and_then(|m| m.label.as_deref()))
            .collect();
        let channel = |p: &Participant| {
            labels.iter().zip(&srs.sides).find_map(|(label, side)| {
                let sends =
                    label.is_some_and(|l| meta.senders_of_label(l).iter().any(|s| s.id == p.id));
                if sends { *side } else { None }
            })
        };
        let session = earshot_contracts::sidecar::Siprec {
            session_ids: meta
                .sessions
                .iter()
                .flat_map(|s| s.sip_session_ids.iter().cloned())
                .collect(),
            participants: meta
                .participants
                .iter()
                .map(|p| earshot_contracts::sidecar::SiprecParticipant {
                    aor: p.aor.clone(),
                    name: p.name.clone(),
                    role: if Some(&p.id) == caller.as_ref() {
                        "caller"
                    } else {
                        "callee"
                    }
                    .to_owned(),
                    channel: channel(p),
                })
                .collect(),
            identifiers: meta
                .identifiers
                .iter()
                .map(
                    |(name, value)| earshot_contracts::sidecar::SiprecIdentifier {
                        name: name.clone(),
                        value: value.clone(),
                    },
                )
                .collect(),
            metadata: srs.received.clone(),
            mixed: labels
                .iter()
                .flatten()
                .any(|l| meta.senders_of_label(l).len() > 1),
        };
        let r = call.r.clone();
        self.emit(Event::Siprec {
            call: r,
            at: now,
            session,
        });
    }

    /// A packet on a recording session's port: received, read, never
    /// relayed.
    pub(super) fn srs_media(
        &mut self,
        now: Instant,
        cid: u64,
        idx: usize,
        rtcp: bool,
        source: SocketAddr,
        data: &[u8],
    ) -> Option<Relay> {
        let call = self.calls.get_mut(&cid)?;
        let side = call.srs.as_ref()?.sides.get(idx).copied().flatten();
        let stream = call.streams.get_mut(idx)?;
        let leg = &mut stream.legs[0];
        if rtcp || (data.len() >= 2 && (200..=204).contains(&data[1])) {
            // The SRC's RTCP: nothing to record.
            return None;
        }
        match (leg.latched, leg.negotiated) {
            (Some(l), _) if l == source => {}
            (None, Some(n)) if n.ip() == source.ip() => leg.latched = Some(source),
            _ => {
                Stats::bump(&mut self.stats.rtp_dropped, "wrong_source");
                return None;
            }
        }
        if !leg.within_rate(now) {
            Stats::bump(&mut self.stats.rtp_dropped, "rate_limited");
            return None;
        }
        call.last_activity = now;
        let Some(side) = side else {
            Stats::bump(&mut self.stats.rtp_dropped, "siprec_unmapped");
            return None;
        };
        // SRTP: what is read is the decrypted copy (STUN and DTLS, first
        // byte under 64, are not media).
        let plain;
        let data: &[u8] = match leg.srtp.as_mut() {
            Some(_) if data.first().is_some_and(|b| *b < 64) => return None,
            Some(srtp) => match srtp.read(data) {
                Ok(p) => {
                    plain = p;
                    &plain
                }
                Err((e, noted)) => {
                    Stats::bump(&mut self.stats.srtp_failed, e.reason());
                    if noted {
                        self.note_media(now, cid, crate::event::MediaNote::SrtpUndecryptable);
                    }
                    return None;
                }
            },
            None => data,
        };
        let Ok(rtp) = rtp_rs::RtpReader::new(data) else {
            Stats::bump(&mut self.stats.rtp_dropped, "malformed");
            return None;
        };
        let m: Option<&MediaStream> = leg.stream.as_ref();
        let pt = rtp.payload_type();
        let event = m.is_some_and(|s| s.is_telephone_event(pt));
        let (codec, clock_rate) = m
            .and_then(|s| s.codec(pt))
            .map_or((None, 0), |c| (Some(c.name.clone()), c.clock_rate));
        let mut digit = None;
        if event {
            if let Some(ev) = dtmf::parse_telephone_event(rtp.payload())
                && leg.dedupe.is_new(rtp.ssrc(), rtp.timestamp())
            {
                digit = dtmf::event_digit(ev.event).map(|d| (d, DtmfMethod::Rfc4733));
            }
        } else if let Some(tones) = leg.tones.as_mut() {
            digit = codec
                .as_deref()
                .and_then(Law::of)
                .and_then(|law| tones.push(rtp.payload().iter().map(|&b| law.decode(b))))
                .map(|d| (d, DtmfMethod::InBand));
        }
        let audio = !event && codec.as_deref() != Some("CN");
        if call.recording && audio {
            let frame = MediaFrame {
                call: call.r.clone(),
                at: now,
                side,
                stream: idx as u8,
                ssrc: rtp.ssrc(),
                seq: u16::from_be_bytes([data[2], data[3]]),
                timestamp: rtp.timestamp(),
                payload_type: pt,
                codec,
                clock_rate,
                payload: rtp.payload().to_vec(),
            };
            self.out.push_back(Output::Event(Event::Media(frame)));
        }
        Stats::bump(&mut self.stats.rtp_packets, super::media::direction(side));
        if let Some((d, method)) = digit {
            self.on_digit(now, cid, side, d, method);
        }
        None
    }
}
