//! Server and client transactions (RFC 3261 §17) as a stateful proxy keeps
//! them: how requests and responses are matched to them, how retransmitted
//! requests are absorbed, and their timers — retransmission over UDP (A/E),
//! no final response (B/F) or ringing too long (C), non-2xx responses
//! repeated until their ACK (G), lingering to absorb late retransmissions.

use std::time::{Duration, Instant};

use crate::config::{Target, Transport};
use crate::event::{EndReason, Side};
use crate::sip::message::Message;

use super::{Recorder, Timer};

/// How long a finished transaction lingers to absorb retransmissions (Timer J/K/D).
pub(super) const TXN_LINGER: Duration = Duration::from_secs(32);

/// A transaction's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TxnTimer {
    /// Retransmit a request over UDP (Timer A / E).
    Retransmit(u64),
    /// No final response in time (Timer B / F), or ringing too long (Timer C).
    ClientTimeout(u64),
    /// Retransmit a non-2xx final response to an INVITE until the ACK (Timer G).
    ResponseRetransmit(u64),
    /// Forget a transaction.
    Forget(u64),
}

pub(super) struct ServerTxn {
    /// The peer that sent the request (for its limits).
    pub(super) peer: String,
    pub(super) source: Target,
    pub(super) request: Message,
    pub(super) is_invite: bool,
    pub(super) last_response: Option<Vec<u8>>,
    pub(super) final_code: Option<u16>,
    pub(super) client: Option<u64>,
    pub(super) retransmit: Duration,
}

pub(super) struct ClientTxn {
    pub(super) server: u64,
    pub(super) branch: String,
    pub(super) dest: Target,
    pub(super) request: Message,
    pub(super) bytes: Vec<u8>,
    pub(super) is_invite: bool,
    pub(super) provisional: bool,
    pub(super) final_code: Option<u16>,
    pub(super) cancel_pending: bool,
    pub(super) cancelled: bool,
    pub(super) retransmit: Duration,
    pub(super) call: Option<u64>,
    pub(super) side: Side,
    /// Timer B/F, then Timer C once the INVITE rings.
    pub(super) deadline: Instant,
    /// The INVITE that sets its call up (no To tag), not a re-INVITE.
    pub(super) initial: bool,
    pub(super) ack: Option<Vec<u8>>,
}

/// The key of a server transaction: the branch and sent-by of the top Via
/// and the method (ACK matches its INVITE), and the CSeq number: a
/// retransmission never changes it, while some peers reuse a branch for a
/// new request (SIPp's `[branch]` in a scenario loop), which must not be
/// taken for a retransmission and answered from the old one. RFC 2543
/// peers without a magic cookie are matched on dialog and CSeq.
pub(super) fn server_key(msg: &Message, method: &str) -> String {
    let method = if method == "ACK" { "INVITE" } else { method };
    match msg.branch() {
        Some(b) if b.starts_with("z9hG4bK") => {
            let sent_by = msg
                .top_via()
                .and_then(|v| v.split_whitespace().nth(1))
                .unwrap_or("");
            let sent_by = sent_by.split(';').next().unwrap_or("");
            let seq = msg.cseq().map_or(0, |c| c.0);
            format!("{b}|{sent_by}|{seq}|{method}")
        }
        // RFC 2543 peers: match on the dialog and CSeq instead of the branch.
        _ => format!(
            "{}|{}|{}|{}|{method}",
            msg.call_id().unwrap_or_default(),
            msg.from_tag().unwrap_or_default(),
            msg.cseq().map(|c| c.0).unwrap_or(0),
            msg.top_via().unwrap_or_default()
        ),
    }
}

impl Recorder {
    /// Opens the server transaction of a request being forwarded; an INVITE
    /// is answered 100 Trying at once.
    pub(super) fn open_server(
        &mut self,
        sid: u64,
        client: u64,
        source: Target,
        request: Message,
        method: &str,
        peer: String,
    ) {
        let key = server_key(&request, method);
        let is_invite = method == "INVITE";
        self.server_keys.insert(key, sid);
        self.loads
            .with(|l| l.entry(peer.clone()).or_default().transactions += 1);
        self.servers.insert(
            sid,
            ServerTxn {
                peer,
                source,
                request,
                is_invite,
                last_response: None,
                final_code: None,
                client: Some(client),
                retransmit: self.cfg.timers.t1,
            },
        );
        if is_invite {
            let req = self.servers[&sid].request.clone();
            let trying = self.local_response(&req, 100, "Trying", &[]);
            let bytes = self.send(source, &trying);
            if let Some(s) = self.servers.get_mut(&sid) {
                s.last_response = Some(bytes);
            }
        }
    }

    /// Opens the client transaction of a request just sent to `dest`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_client(
        &mut self,
        now: Instant,
        id: u64,
        server: u64,
        branch: String,
        dest: Target,
        request: Message,
        bytes: Vec<u8>,
        call: Option<u64>,
        side: Side,
        initial: bool,
    ) {
        let t = self.cfg.timers;
        let is_invite = request
            .method()
            .is_some_and(|m| m.eq_ignore_ascii_case("INVITE"));
        self.client_branches.insert(branch.clone(), id);
        self.clients.insert(
            id,
            ClientTxn {
                server,
                branch,
                dest,
                request,
                bytes,
                is_invite,
                provisional: false,
                final_code: None,
                cancel_pending: false,
                cancelled: false,
                retransmit: t.t1,
                call,
                side,
                deadline: now + t.transaction_timeout(),
                ack: None,
                initial,
            },
        );
        if dest.transport == Transport::Udp {
            self.arm(now + t.t1, Timer::Txn(TxnTimer::Retransmit(id)));
        }
        self.arm(
            now + t.transaction_timeout(),
            Timer::Txn(TxnTimer::ClientTimeout(id)),
        );
    }

    /// Fires a transaction timer.
    pub(super) fn fire_transaction(&mut self, now: Instant, timer: TxnTimer) {
        let t = self.cfg.timers;
        match timer {
            TxnTimer::Retransmit(id) => {
                let Some(c) = self.clients.get_mut(&id) else {
                    return;
                };
                let waiting = if c.is_invite {
                    !c.provisional && c.final_code.is_none()
                } else {
                    c.final_code.is_none()
                };
                if !waiting {
                    return;
                }
                c.retransmit = if c.is_invite {
                    c.retransmit * 2
                } else {
                    (c.retransmit * 2).min(t.t2)
                };
                let (dest, bytes, next) = (c.dest, c.bytes.clone(), now + c.retransmit);
                let method = c.request.method().unwrap_or_default().to_owned();
                self.send_bytes(dest, bytes, &method);
                self.arm(next, Timer::Txn(TxnTimer::Retransmit(id)));
            }
            TxnTimer::ClientTimeout(id) => {
                let Some(c) = self.clients.get(&id) else {
                    return;
                };
                if c.final_code.is_some() || now < c.deadline {
                    // Answered, or the deadline moved (Timer C restarts on each provisional).
                    return;
                }
                let (sid, call, provisional, is_invite) =
                    (c.server, c.call, c.provisional, c.is_invite);
                if is_invite && provisional {
                    self.send_cancel(now, id);
                }
                if let Some(c) = self.clients.get_mut(&id) {
                    c.final_code = Some(408);
                }
                self.arm(now + TXN_LINGER, Timer::Txn(TxnTimer::Forget(id)));
                if let Some(s) = self.servers.get(&sid)
                    && s.final_code.is_none()
                {
                    let req = s.request.clone();
                    let source = s.source;
                    let resp = self.local_response(&req, 408, "Request Timeout", &[]);
                    let bytes = self.send(source, &resp);
                    if let Some(s) = self.servers.get_mut(&sid) {
                        s.final_code = Some(408);
                        s.last_response = Some(bytes);
                    }
                    self.arm(now + TXN_LINGER, Timer::Txn(TxnTimer::Forget(sid)));
                }
                if let Some(cid) = call {
                    let method = self
                        .clients
                        .get(&id)
                        .and_then(|c| c.request.method().map(str::to_owned));
                    if method.as_deref() == Some("INVITE") {
                        let answered = self.calls.get(&cid).is_some_and(|c| c.answered);
                        if !answered {
                            self.end_call(now, cid, EndReason::Timeout);
                        }
                    }
                    if method.as_deref() == Some("BYE") {
                        self.end_call(now, cid, EndReason::Timeout);
                    }
                }
            }
            TxnTimer::ResponseRetransmit(sid) => {
                let Some(s) = self.servers.get_mut(&sid) else {
                    return;
                };
                let Some(resp) = s.last_response.clone() else {
                    return;
                };
                s.retransmit = (s.retransmit * 2).min(t.t2);
                let (source, next) = (s.source, now + s.retransmit);
                self.send_bytes(source, resp, "INVITE");
                self.arm(next, Timer::Txn(TxnTimer::ResponseRetransmit(sid)));
            }
            TxnTimer::Forget(id) => {
                if let Some(s) = self.servers.remove(&id) {
                    self.loads.with(|loads| {
                        if let Some(l) = loads.get_mut(&s.peer) {
                            l.transactions = l.transactions.saturating_sub(1);
                        }
                    });
                    let key = server_key(&s.request, s.request.method().unwrap_or_default());
                    if self.server_keys.get(&key) == Some(&id) {
                        self.server_keys.remove(&key);
                    }
                }
                if let Some(c) = self.clients.remove(&id) {
                    self.client_branches.remove(&c.branch);
                }
            }
        }
    }
}
