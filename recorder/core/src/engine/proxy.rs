//! SIP in and out, as a stateful proxy (RFC 3261 §16): each request in the
//! proxy's steps, each response matched to its client transaction and sent
//! on to where the request came from, CANCEL, and the answers the recorder
//! gives itself (100 Trying, OPTIONS, refusals).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::config::{Target, Transport, UnknownSources};
use crate::dtmf::{self, DtmfMethod};
use crate::event::{EndReason, Event, Side};
use crate::sip::message::{self, Message, StartLine};
use crate::stats::{Stats, method_label};

use super::calls::{Call, Misfit};
use super::media::is_sdp;
use super::transaction::{TXN_LINGER, TxnTimer, server_key};
use super::{Output, Recorder, Timer};

/// What an initial INVITE is to the calls this core has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// It starts a call.
    NewCall,
    /// The caller tries again in a call that waits for it.
    Retry(u64),
    /// Not an initial INVITE: whatever call its Call-ID names.
    InCall,
}

/// Prefix of every branch this recorder generates (RFC 3261 magic cookie + ours).
pub(super) const BRANCH_PREFIX: &str = "z9hG4bK-es";
/// Most transactions held at once; beyond that new requests get 503.
const MAX_TRANSACTIONS: usize = 50_000;
/// Most calls held at once; beyond that new INVITEs get 503.
pub(super) const MAX_CALLS: usize = 20_000;

impl Recorder {
    pub(super) fn send(&mut self, target: Target, msg: &Message) -> Vec<u8> {
        let data = msg.to_bytes();
        if let Some((_, m)) = msg.cseq() {
            Stats::bump(&mut self.stats.sip_messages, (method_label(&m), "out"));
        }
        self.out.push_back(Output::Sip {
            target,
            data: data.clone(),
        });
        data
    }

    pub(super) fn send_bytes(&mut self, target: Target, data: Vec<u8>, method: &str) {
        Stats::bump(&mut self.stats.sip_messages, (method_label(method), "out"));
        self.out.push_back(Output::Sip { target, data });
    }

    /// Our address and port as `peer` reaches them (split horizon).
    fn facing(&self, peer: Target) -> SocketAddr {
        SocketAddr::new(
            self.cfg.facing(peer.addr.ip()),
            self.cfg.port_for(peer.transport),
        )
    }

    /// Our Via toward `dest`.
    pub(super) fn our_via(&self, dest: Target, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch}",
            dest.transport.as_str(),
            self.facing(dest)
        )
    }

    /// Our Record-Route URI as `peer` reaches us.
    pub(super) fn our_uri(&self, peer: Target) -> String {
        let at = self.facing(peer);
        match peer.transport {
            Transport::Udp => format!("<sip:{at};lr>"),
            Transport::Tcp => format!("<sip:{at};transport=tcp;lr>"),
            Transport::Tls => format!("<sip:{at};transport=tls;lr>"),
        }
    }

    pub(super) fn is_us(&self, uri: &rsip::Uri) -> bool {
        let port = uri
            .host_with_port
            .port
            .as_ref()
            .map_or(5060, |p| *p.value());
        let host_is_us = match &uri.host_with_port.host {
            rsip::Host::IpAddr(ip) => self.cfg.is_own(*ip),
            rsip::Host::Domain(d) => d
                .to_string()
                .parse::<IpAddr>()
                .is_ok_and(|ip| self.cfg.is_own(ip)),
        };
        host_is_us && (port == self.cfg.advertised.port() || Some(port) == self.cfg.tls_port)
    }

    /// Where a URI points, for Route and Request-URI based forwarding.
    pub(super) fn resolve(&self, uri: &rsip::Uri) -> Option<Target> {
        let ip = match &uri.host_with_port.host {
            rsip::Host::IpAddr(ip) => *ip,
            rsip::Host::Domain(d) => {
                let d = d.to_string();
                d.parse::<IpAddr>()
                    .ok()
                    .or_else(|| self.cfg.hosts.get(&d).copied())?
            }
        };
        let param = uri.params.iter().find_map(|p| match p {
            rsip::Param::Transport(t) => Some(t.to_string().to_ascii_lowercase()),
            _ => None,
        });
        let sips = matches!(uri.scheme, Some(rsip::Scheme::Sips));
        let transport = match param.as_deref() {
            _ if sips => Transport::Tls,
            Some("tls") => Transport::Tls,
            Some("tcp") => Transport::Tcp,
            _ => Transport::Udp,
        };
        let port = uri.host_with_port.port.as_ref().map_or(
            if transport == Transport::Tls {
                5061
            } else {
                5060
            },
            |p| *p.value(),
        );
        Some(Target {
            transport,
            addr: SocketAddr::new(ip, port),
        })
    }

    /// A response built locally to `req` (RFC 3261 §8.2.6).
    pub(super) fn local_response(
        &mut self,
        req: &Message,
        code: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) -> Message {
        let mut headers = Vec::new();
        for h in &req.headers {
            let keep = matches!(
                h,
                rsip::Header::Via(_)
                    | rsip::Header::From(_)
                    | rsip::Header::CallId(_)
                    | rsip::Header::CSeq(_)
            );
            if keep {
                headers.push(h.clone());
            }
            if let rsip::Header::To(to) = h {
                let mut value = rsip::headers::UntypedHeader::value(to).to_owned();
                if code > 100 && message::name_addr_param(&value, "tag").is_none() {
                    value.push_str(&format!(";tag=es{:x}", self.random()));
                }
                headers.push(rsip::Header::To(rsip::headers::UntypedHeader::new(value)));
            }
        }
        let mut msg = Message {
            start: StartLine::Response {
                code,
                reason: reason.to_owned(),
            },
            headers,
            body: Vec::new(),
        };
        msg.set_header("Server", "earshot-recorder".to_owned());
        for (name, value) in extra {
            msg.set_header(name, value.clone());
        }
        msg
    }

    pub(super) fn refuse(
        &mut self,
        target: Target,
        req: &Message,
        code: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) {
        Stats::bump(&mut self.stats.sip_refused, code);
        if req.method() == Some("ACK") {
            return;
        }
        let resp = self.local_response(req, code, reason, extra);
        self.send(target, &resp);
    }

    // ---------------------------------------------------------------- requests

    /// One SIP message (a UDP datagram or a framed TCP message) from `source`.
    pub fn handle_sip(&mut self, now: Instant, source: Target, data: &[u8]) {
        self.ensure_sweep(now);
        // The ACL before anything else (retransmissions and CANCEL too),
        // once per request: a stranger's costs this look-up and nothing
        // more, unless the config asks for a 403, which needs its headers.
        let request = !data.starts_with(b"SIP/");
        let peer = request
            .then(|| self.cfg.peer_of(source.addr.ip()).map(|p| p.name.clone()))
            .flatten();
        if request && peer.is_none() {
            Stats::bump(&mut self.stats.sip_dropped, "unknown_source");
            if self.cfg.unknown_sources == UnknownSources::Refuse {
                match Message::parse(data) {
                    Ok(msg) => self.refuse(source, &msg, 403, "Forbidden", &[]),
                    Err(_) => self.stats.sip_parse_errors += 1,
                }
            }
            return;
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.sip_parse_errors += 1;
                self.answer_unparseable(source, data, &e);
                return;
            }
        };
        if let Some((_, m)) = msg.cseq() {
            Stats::bump(&mut self.stats.sip_messages, (method_label(&m), "in"));
        }
        match msg.start {
            StartLine::Request { .. } => {
                let peer = peer.unwrap_or_default();
                self.on_request(now, source, &peer, msg, data)
            }
            StartLine::Response { .. } => self.on_response(now, source, msg),
        }
    }

    /// A SIP message another shard handed over ([`Output::Divert`]): a new
    /// call that shard had no RTP ports for. Taken here, or refused with
    /// 503 when this shard has none either; never handed on again.
    pub fn handle_diverted_sip(&mut self, now: Instant, source: Target, data: &[u8]) {
        self.diverted_input = true;
        self.handle_sip(now, source, data);
        self.diverted_input = false;
    }

    /// A request the proxy cannot handle still gets the answer RFC 3261
    /// asks for when enough of it is there to address one (§8.2.2, §16.3):
    /// 505 for another SIP version, 400 saying what is wrong otherwise.
    /// Responses and what has no Via are dropped. Only peers are answered.
    pub(super) fn answer_unparseable(
        &mut self,
        source: Target,
        data: &[u8],
        error: &message::ParseError,
    ) {
        if data.starts_with(b"SIP/") || self.cfg.peer_of(source.addr.ip()).is_none() {
            return;
        }
        let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        // The head alone, Content-Length dropped (a lying one must not stop
        // the answer) and the version made 2.0 (so a 505 can be addressed).
        let text = String::from_utf8_lossy(&data[..head_end]);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("");
        let first = match first.rsplit_once(' ') {
            Some((rest, v)) if v.starts_with("SIP/") => format!("{rest} SIP/2.0"),
            _ => first.to_owned(),
        };
        let head: Vec<&str> = lines
            .filter(|l| {
                let n = l.split(':').next().unwrap_or("").trim();
                !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("l")
            })
            .collect();
        let rebuilt = format!("{first}\r\n{}\r\n\r\n", head.join("\r\n"));
        let Ok(req) = Message::parse_unchecked(rebuilt.as_bytes()) else {
            return;
        };
        if req.method().is_none() || req.top_via().is_none() {
            return;
        }
        match error {
            message::ParseError::Version(v) => {
                let reason = format!("Version Not Supported ({v})");
                self.refuse(source, &req, 505, &reason, &[]);
            }
            e => {
                let reason = format!("Bad Request ({e})");
                self.refuse(source, &req, 400, &reason, &[]);
            }
        }
    }

    /// A request from a peer (`handle_sip` applied the ACL), in the proxy's
    /// steps (RFC 3261 §16): absorb what
    /// repeats a transaction, find the call it belongs to (a new INVITE
    /// starts one, or retries one waiting for it), admit or refuse, route,
    /// follow the call, forward statefully.
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        source: Target,
        peer: &str,
        mut msg: Message,
        data: &[u8],
    ) {
        let method = msg.method().unwrap_or_default().to_ascii_uppercase();
        let in_dialog = msg.to_tag().is_some();
        if self.absorbed(source, &msg, &method) {
            return;
        }
        if method == "CANCEL" {
            self.on_cancel(now, source, msg);
            return;
        }
        // A SIPREC session from a session recording client: answered here.
        if self.srs_request(now, source, peer, &msg, &method) {
            return;
        }
        let Some(attempt) = self.attempt_of(source, &msg, &method, in_dialog) else {
            return;
        };
        let new_call = attempt == Attempt::NewCall;
        if new_call && self.may_divert && !self.diverted_input && self.ports.free.len() < 2 {
            // No RTP ports for a new call here: another shard takes it.
            self.out.push_back(Output::Divert {
                source,
                data: data.to_vec(),
            });
            return;
        }
        let Some(max_forwards) = self.admit(now, source, peer, &msg, &method, in_dialog, new_call)
        else {
            return;
        };
        msg.set_header("Max-Forwards", (max_forwards - 1).to_string());
        let Some(dest) = self.route(source, &mut msg, &method, in_dialog) else {
            return;
        };
        let Some((call, side)) = self.follow_call(
            now, source, dest, peer, &mut msg, &method, in_dialog, attempt,
        ) else {
            return;
        };
        if method == "INVITE"
            && !in_dialog
            && let Some(c) = call.and_then(|c| self.calls.get_mut(&c))
        {
            c.callee_at.get_or_insert(dest);
        }
        self.forward(
            now,
            source,
            dest,
            msg,
            &method,
            in_dialog,
            call,
            side,
            peer.to_owned(),
        );
    }

    /// What an INVITE without a To tag is to the call its Call-ID names: a
    /// new call, or the caller's retry of a call that waits for one (after a
    /// challenge, a redirect, 422, 491). Another INVITE for a call in
    /// progress is a merged or looped request (RFC 3261 §8.2.2.2): 482.
    /// Other requests belong to whatever call their Call-ID names.
    pub(super) fn attempt_of(
        &mut self,
        source: Target,
        msg: &Message,
        method: &str,
        in_dialog: bool,
    ) -> Option<Attempt> {
        let existing = msg
            .call_id()
            .and_then(|id| self.call_ids.get(&id).copied())
            .and_then(|cid| self.calls.get(&cid).map(|c| (cid, c)));
        if method != "INVITE" || in_dialog {
            return Some(Attempt::InCall);
        }
        match existing {
            // Over: a caller's new INVITE with the same Call-ID is a new call.
            None => Some(Attempt::NewCall),
            Some((_, c)) if c.ended.is_some() => Some(Attempt::NewCall),
            Some((cid, c)) if c.retry.is_some() && c.caller_tag == msg.from_tag() => {
                Some(Attempt::Retry(cid))
            }
            Some(_) => {
                self.refuse(source, msg, 482, "Loop Detected (merged request)", &[]);
                None
            }
        }
    }

    /// ACK for our own non-2xx final response, or a retransmitted request:
    /// answered (or absorbed) from the transaction, never forwarded twice.
    pub(super) fn absorbed(&mut self, source: Target, msg: &Message, method: &str) -> bool {
        if method == "ACK" {
            let key = server_key(msg, "ACK");
            if let Some(&sid) = self.server_keys.get(&key)
                && let Some(s) = self.servers.get_mut(&sid)
                && s.final_code.is_some_and(|c| c >= 300)
            {
                // ACK for our non-2xx final response: hop by hop, absorbed.
                s.last_response = None;
                return true;
            }
            return false;
        }
        if method == "CANCEL" {
            return false;
        }
        let key = server_key(msg, method);
        let Some(&sid) = self.server_keys.get(&key) else {
            return false;
        };
        // A retransmission: repeat our last answer, never forward twice.
        if let Some(resp) = self.servers.get(&sid).and_then(|s| s.last_response.clone()) {
            self.send_bytes(source, resp, method);
        }
        true
    }

    /// Whether the request may go on: from a peer, with hops left, not a
    /// loop, not while draining or overloaded. OPTIONS for the recorder is
    /// answered here. Returns the request's Max-Forwards when it goes on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        &mut self,
        now: Instant,
        source: Target,
        peer: &str,
        msg: &Message,
        method: &str,
        in_dialog: bool,
        new_call: bool,
    ) -> Option<u32> {
        // RFC 3261 §16.3 item 1: a Request-URI the proxy cannot route.
        let scheme_ok = match &msg.start {
            StartLine::Request { uri, .. } => ["sip:", "sips:", "tel:"].iter().any(|p| {
                uri.get(..p.len())
                    .is_some_and(|u| u.eq_ignore_ascii_case(p))
            }),
            StartLine::Response { .. } => true,
        };
        if !scheme_ok {
            self.refuse(source, msg, 416, "Unsupported URI Scheme", &[]);
            return None;
        }
        // RFC 3261 §8.1.1.7: a request's CSeq names its own method.
        if msg
            .cseq()
            .is_some_and(|(_, m)| !m.eq_ignore_ascii_case(method))
        {
            self.refuse(
                source,
                msg,
                400,
                "Bad Request (CSeq method does not match)",
                &[],
            );
            return None;
        }
        let max_forwards = match msg.header("Max-Forwards") {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    self.refuse(source, msg, 400, "Bad Request (Max-Forwards)", &[]);
                    return None;
                }
            },
            None => 70,
        };
        if method == "OPTIONS" && !in_dialog {
            let for_us = msg
                .request_uri()
                .is_some_and(|u| u.user().is_none() || self.is_us(&u));
            if for_us || max_forwards == 0 {
                let resp = self.local_response(
                    msg,
                    200,
                    "OK",
                    &[
                        ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE".to_owned()),
                        ("Accept", "application/sdp".to_owned()),
                    ],
                );
                self.send(source, &resp);
                return None;
            }
        }
        if max_forwards == 0 {
            self.refuse(source, msg, 483, "Too Many Hops", &[]);
            return None;
        }
        // Loop detection (RFC 3261 §16.3 item 4): our own Via already in the request.
        let ports = std::iter::once(self.cfg.advertised.port()).chain(self.cfg.tls_port);
        let own = ports
            .flat_map(|port| {
                std::iter::once(self.cfg.advertised.ip())
                    .chain(self.cfg.split.as_ref().map(|s| s.external))
                    .map(move |ip| format!(" {};branch={BRANCH_PREFIX}", SocketAddr::new(ip, port)))
            })
            .collect::<Vec<_>>();
        if msg
            .headers_named("Via")
            .iter()
            .any(|v| own.iter().any(|o| v.contains(o.as_str())))
        {
            self.refuse(source, msg, 482, "Loop Detected", &[]);
            return None;
        }
        let peer_full = self.peer_full(now, peer, new_call);
        if (new_call && self.draining)
            || peer_full
            || self.servers.len() >= MAX_TRANSACTIONS
            || (new_call && self.calls.len() >= MAX_CALLS)
        {
            self.refuse(
                source,
                msg,
                503,
                "Service Unavailable",
                &[("Retry-After", "5".to_owned())],
            );
            return None;
        }
        Some(max_forwards)
    }

    /// Whether `peer` is over its limits (transactions; for a new call or
    /// recording session also calls, and INVITEs per second — taking one);
    /// counted when it is.
    pub(super) fn peer_full(&mut self, now: Instant, peer: &str, new_call: bool) -> bool {
        let limits = self.cfg.limits;
        let full = self.loads.with(|loads| {
            let load = loads.entry(peer.to_owned()).or_default();
            load.transactions >= limits.transactions_per_peer
                || (new_call && load.calls >= limits.calls_per_peer)
                || (new_call && !load.take_invite(now, limits.invites_per_second_per_peer))
        });
        if full {
            Stats::bump(&mut self.stats.sip_dropped, "peer_limit");
        }
        full
    }

    /// Route processing (§16.4): the Route entries naming us are stripped;
    /// the request goes to the next Route, its Request-URI (in dialog) or
    /// the source peer's next hop (initial requests).
    pub(super) fn route(
        &mut self,
        source: Target,
        msg: &mut Message,
        method: &str,
        in_dialog: bool,
    ) -> Option<Target> {
        while let Some(first) = msg.routes().first().cloned() {
            match message::name_addr_uri(&first) {
                Some(uri) if self.is_us(&uri) => msg.pop_route(),
                _ => break,
            }
        }
        if !in_dialog && method != "ACK" {
            // An initial request goes to its peer's configured next hop,
            // whatever its Route or Request-URI say.
            let hop = self.cfg.peer_of(source.addr.ip()).and_then(|p| p.next_hop);
            if hop.is_none() {
                // A session recording client without a next hop: only its
                // recording sessions are taken.
                self.refuse(
                    source,
                    msg,
                    403,
                    "Forbidden (this peer only sends SIPREC recording sessions)",
                    &[],
                );
            }
            return hop;
        }
        let dest = match msg.routes().first() {
            Some(route) => message::name_addr_uri(route).and_then(|u| self.resolve(&u)),
            None => msg.request_uri().and_then(|u| self.resolve(&u)),
        };
        match dest {
            None => {
                self.refuse(source, msg, 502, "Bad Gateway (next hop unknown)", &[]);
                None
            }
            // In-dialog requests are relayed inside the peers' networks only:
            // the recorder is no open relay toward any address a message names.
            Some(d) if self.cfg.peer_of(d.addr.ip()).is_none() => {
                Stats::bump(&mut self.stats.sip_dropped, "target_outside_peers");
                self.refuse(
                    source,
                    msg,
                    403,
                    "Forbidden (target outside every peer's networks)",
                    &[],
                );
                None
            }
            d => d,
        }
    }

    /// The call the request belongs to (a new INVITE starts one, a retry
    /// resumes one) and the side that sent it — by its tags and its source,
    /// so no party can speak for the other's leg; its SDP goes through the
    /// relay, INFO digits and BYE reach the call. `None` when the request
    /// was refused here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn follow_call(
        &mut self,
        now: Instant,
        source: Target,
        dest: Target,
        peer: &str,
        msg: &mut Message,
        method: &str,
        in_dialog: bool,
        attempt: Attempt,
    ) -> Option<(Option<u64>, Side)> {
        let call_id = msg.call_id().unwrap_or_default();
        let cid = match attempt {
            Attempt::NewCall => {
                if self.ports.free.len() < 2 {
                    // Out of ports is overload: the caller tries another recorder.
                    self.refuse(
                        source,
                        msg,
                        503,
                        "Service Unavailable (no RTP ports free)",
                        &[("Retry-After", "5".to_owned())],
                    );
                    return None;
                }
                let cid = self.start_call(now, msg, &call_id, source, peer);
                self.reserve_first_stream(cid);
                cid
            }
            Attempt::Retry(cid) => {
                self.resume_call(now, cid);
                cid
            }
            Attempt::InCall => match self.call_ids.get(&call_id).copied() {
                Some(cid) => cid,
                None => {
                    // A session-changing request for a dialog no call here
                    // has: it would set up media around the relay.
                    if in_dialog && matches!(method, "INVITE" | "UPDATE" | "PRACK") {
                        self.refuse(source, msg, 481, "Call/Transaction Does Not Exist", &[]);
                        return None;
                    }
                    return Some((None, Side::Caller));
                }
            },
        };
        let side = match self.calls.get(&cid).map(|c| c.side_of(msg, source)) {
            Some(Ok(side)) => side,
            Some(Err(misfit)) => {
                let (code, reason, label) = match misfit {
                    Misfit::UnknownDialog => {
                        (481, "Call/Transaction Does Not Exist", "unknown_dialog")
                    }
                    Misfit::OtherLeg => (
                        403,
                        "Forbidden (request from the other party's leg)",
                        "request_from_other_leg",
                    ),
                };
                Stats::bump(&mut self.stats.sip_dropped, label);
                self.refuse(source, msg, code, reason, &[]);
                return None;
            }
            None => return Some((None, Side::Caller)),
        };
        if let Some(c) = self.calls.get_mut(&cid) {
            c.last_activity = now;
        }
        let tag = Call::dialog_tag(msg, side);
        if is_sdp(msg) {
            match self.sdp_through(now, cid, side, tag.as_deref(), dest, &msg.body) {
                Ok(body) => msg.body = body,
                Err(e) => {
                    if method == "ACK" {
                        return None;
                    }
                    let why = e;
                    self.refuse(
                        source,
                        msg,
                        488,
                        &format!("Not Acceptable Here ({why})"),
                        &[],
                    );
                    if method == "INVITE" && !in_dialog {
                        self.end_call(now, cid, EndReason::Rejected(488));
                    }
                    return None;
                }
            }
        }
        if method == "INFO"
            && let Some(digit) = msg
                .content_type()
                .and_then(|ct| dtmf::parse_info(&ct, &msg.body))
        {
            // The side was checked against the request's source above.
            self.on_digit(now, cid, side, digit, DtmfMethod::SipInfo);
        }
        if method == "BYE" {
            self.hang_up(now, cid, tag.as_deref(), side);
        }
        if method == "REFER"
            && let Some(c) = self.calls.get(&cid)
        {
            let call = c.r.clone();
            self.emit(Event::Transfer {
                call,
                at: now,
                by: side,
            });
        }
        Some((Some(cid), side))
    }

    /// Forwards the request: Record-Route on dialog-creating requests, our
    /// Via, and a server and a client transaction (an ACK for a 2xx goes
    /// statelessly, end to end).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        now: Instant,
        source: Target,
        dest: Target,
        mut msg: Message,
        method: &str,
        in_dialog: bool,
        call: Option<u64>,
        side: Side,
        peer: String,
    ) {
        if !in_dialog && matches!(method, "INVITE" | "SUBSCRIBE" | "REFER") {
            // Double Record-Route (RFC 5658) when the two sides use
            // different transports or reach us on different addresses.
            let inbound = self.our_uri(source);
            let outbound = self.our_uri(dest);
            if inbound != outbound {
                msg.push_record_route(inbound);
            }
            msg.push_record_route(outbound);
        }
        // The request as the server transaction keeps it: before our Via.
        let original = msg.clone();
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        msg.push_via(self.our_via(dest, &branch));
        if method == "ACK" {
            // ACK for a 2xx is end to end: forwarded statelessly.
            self.send(dest, &msg);
            return;
        }
        let (sid, client) = (self.id(), self.id());
        self.open_server(sid, client, source, original, method, peer);
        let bytes = self.send(dest, &msg);
        let initial = method == "INVITE" && !in_dialog;
        self.open_client(
            now, client, sid, branch, dest, msg, bytes, call, side, initial,
        );
    }

    pub(super) fn on_cancel(&mut self, now: Instant, source: Target, msg: Message) {
        let key = server_key(&msg, "INVITE");
        let Some(&sid) = self.server_keys.get(&key) else {
            self.refuse(source, &msg, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        let ok = self.local_response(&msg, 200, "OK", &[]);
        self.send(source, &ok);
        let Some(client) = self.servers.get(&sid).and_then(|s| s.client) else {
            return;
        };
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.final_code.is_some() || c.cancelled {
            return;
        }
        if c.provisional {
            self.send_cancel(now, client);
        } else {
            // RFC 3261 §9.1: CANCEL only after a provisional response.
            c.cancel_pending = true;
        }
    }

    pub(super) fn send_cancel(&mut self, _now: Instant, client: u64) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.cancelled = true;
        c.cancel_pending = false;
        let cancel = hop_request(&c.request, "CANCEL", None);
        let dest = c.dest;
        self.send(dest, &cancel);
    }

    // ---------------------------------------------------------------- responses

    pub(super) fn on_response(&mut self, now: Instant, source: Target, mut msg: Message) {
        let code = msg.code().unwrap_or(0);
        let branch = msg.branch().unwrap_or_default();
        let method = msg
            .cseq()
            .map(|c| c.1.to_ascii_uppercase())
            .unwrap_or_default();
        // Only a response to a transaction of ours, from where its request
        // went. Responses are never forwarded along whatever Via they carry:
        // a 2xx retransmitted while the INVITE's transaction lingers (32 s)
        // goes where the INVITE came from; later ones are dropped.
        let Some(&cid_txn) = self.client_branches.get(&branch) else {
            Stats::bump(&mut self.stats.sip_dropped, "stray_response");
            return;
        };
        let (sid, dest, is_invite, already_final, side, call) = {
            let Some(c) = self.clients.get(&cid_txn) else {
                return;
            };
            if c.request.method().map(str::to_ascii_uppercase) != Some(method.clone()) {
                return;
            }
            if c.dest.addr.ip() != source.addr.ip() || c.dest.transport != source.transport {
                Stats::bump(&mut self.stats.sip_dropped, "response_from_elsewhere");
                return;
            }
            (c.server, c.dest, c.is_invite, c.final_code, c.side, c.call)
        };
        let initial = self.clients.get(&cid_txn).is_some_and(|c| c.initial);
        if let Some(call) = call.and_then(|c| self.calls.get_mut(&c)) {
            call.last_activity = now;
        }
        msg.pop_via();

        if code < 200 {
            let Some(c) = self.clients.get_mut(&cid_txn) else {
                return;
            };
            c.provisional = true;
            let pending = c.cancel_pending;
            if c.is_invite && code > 100 {
                // Timer C: ringing may last this long, then we give up.
                c.deadline = now + self.cfg.timers.timer_c;
                let at = c.deadline;
                self.arm(at, Timer::Txn(TxnTimer::ClientTimeout(cid_txn)));
            }
            if pending {
                self.send_cancel(now, cid_txn);
            }
            if code == 100 {
                return;
            }
        }

        if let Some(prev) = already_final {
            if is_invite && (200..300).contains(&code) {
                // 2xx retransmission (or another fork's 2xx): end to end, forward.
            } else {
                if prev >= 300
                    && is_invite
                    && let Some(ack) = self.clients.get(&cid_txn).and_then(|c| c.ack.clone())
                {
                    self.send_bytes(dest, ack, "ACK");
                }
                return;
            }
        }

        // The responder is the side the request was sent to; the callee
        // side's tag is in To when it responds, in From when the caller does.
        let responder = side.other();
        let tag = match responder {
            Side::Callee => msg.to_tag(),
            Side::Caller => msg.from_tag(),
        };
        if initial
            && code > 100
            && code < 300
            && let Some(tag) = &tag
            && let Some(c) = call.and_then(|c| self.calls.get_mut(&c))
        {
            // Each tag the INVITE is answered with is a dialog (several
            // when it forked), early or confirmed.
            c.dialogs.on_invite_response(tag, code);
        }
        if let Some(cid) = call
            && is_sdp(&msg)
            && (code < 300)
        {
            // The answer goes back where the request came from.
            let back = self.servers.get(&sid).map_or(dest, |s| s.source);
            match self.sdp_through(now, cid, responder, tag.as_deref(), back, &msg.body) {
                Ok(body) => msg.body = body,
                Err(_) => {
                    // The far end answered with SDP we cannot relay: the
                    // parties still get their answer, with the body as sent.
                    Stats::bump(&mut self.stats.rtp_dropped, "bad_sdp");
                }
            }
        }

        if code >= 200 && already_final.is_none() {
            if let Some(c) = self.clients.get_mut(&cid_txn) {
                c.final_code = Some(code);
                if c.is_invite && code >= 300 {
                    let ack = hop_request(&c.request, "ACK", msg.header("To"));
                    let bytes = ack.to_bytes();
                    c.ack = Some(bytes.clone());
                    self.send_bytes(dest, bytes, "ACK");
                }
            }
            self.arm(now + TXN_LINGER, Timer::Txn(TxnTimer::Forget(cid_txn)));
            if let Some(cid) = call {
                self.on_final(now, cid, initial, code, &msg);
            }
        }

        // Forward upstream.
        let Some(s) = self.servers.get(&sid) else {
            return;
        };
        let source = s.source;
        let bytes = self.send(source, &msg);
        let mut arm = Vec::new();
        if let Some(s) = self.servers.get_mut(&sid) {
            if code >= 200 && s.final_code.is_none() {
                s.final_code = Some(code);
                if s.is_invite && code >= 300 && source.transport == Transport::Udp {
                    arm.push((
                        now + s.retransmit,
                        Timer::Txn(TxnTimer::ResponseRetransmit(sid)),
                    ));
                }
                arm.push((now + TXN_LINGER, Timer::Txn(TxnTimer::Forget(sid))));
            }
            if !(s.is_invite && (200..300).contains(&code)) {
                s.last_response = Some(bytes);
            }
        }
        for (at, t) in arm {
            self.arm(at, t);
        }
    }
}

/// CANCEL or non-2xx ACK for a forwarded INVITE (RFC 3261 §9.1, §17.1.1.3):
/// same Request-URI, only our Via, the INVITE's Route set.
pub(super) fn hop_request(invite: &Message, method: &str, to: Option<String>) -> Message {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => String::new(),
    };
    let mut headers = Vec::new();
    if let Some(via) = invite.top_via() {
        headers.push(rsip::Header::Via(rsip::headers::UntypedHeader::new(via)));
    }
    for h in &invite.headers {
        match h {
            rsip::Header::Route(_) | rsip::Header::From(_) | rsip::Header::CallId(_) => {
                headers.push(h.clone())
            }
            rsip::Header::To(_) if to.is_none() => headers.push(h.clone()),
            _ => {}
        }
    }
    let mut msg = Message {
        start: StartLine::Request {
            method: method.to_owned(),
            uri,
        },
        headers,
        body: Vec::new(),
    };
    if let Some(to) = to {
        msg.set_header("To", to);
    }
    let seq = invite.cseq().map_or(1, |c| c.0);
    msg.set_header("CSeq", format!("{seq} {method}"));
    msg.set_header("Max-Forwards", "70".to_owned());
    msg
}
