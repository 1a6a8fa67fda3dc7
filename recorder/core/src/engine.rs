//! The recorder's state machine: a stateful SIP proxy (RFC 3261 §16) that
//! puts itself in the media path of every call it forwards, relays RTP and
//! RTCP, watches DTMF and decides, call by call, when the call is recorded.
//!
//! Driven in the str0m style: [`Recorder::handle_sip`],
//! [`Recorder::handle_rtp`] and [`Recorder::handle_timeout`] take input with
//! the current `Instant`; [`Recorder::poll_output`] hands back what to send,
//! what happened and when to be woken next.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::announce::{
    self, AnnounceMode, AnnounceTo, Clips, Finished, Kind, Onward, Outcome, Verdict,
};
use crate::config::{CoreConfig, Mode, Target, Transport};
use crate::dtmf::{self, DtmfMethod, EventDeduper, ShortcodeMatcher, ToneDetector};
use crate::event::{
    CallRef, EndReason, Event, InvolvedUser, MediaFrame, Party, RecordingReason, Side,
};
use crate::g711::Law;
use crate::sdp::{self, Sdp};
use crate::sip::message::{self, Message, StartLine};
use crate::stats::{Stats, method_label};

/// Prefix of every branch this recorder generates (RFC 3261 magic cookie + ours).
const BRANCH_PREFIX: &str = "z9hG4bK-es";
/// How long a finished transaction lingers to absorb retransmissions (Timer J/K/D).
const TXN_LINGER: Duration = Duration::from_secs(32);
/// How long an ended call keeps its ports, so late packets are not taken for a new call's.
const CALL_LINGER: Duration = Duration::from_secs(5);
/// Housekeeping interval: idle calls, lingering calls.
const SWEEP: Duration = Duration::from_secs(5);
/// Most transactions held at once; beyond that new requests get 503.
const MAX_TRANSACTIONS: usize = 50_000;
/// Most calls held at once; beyond that new INVITEs get 503.
const MAX_CALLS: usize = 20_000;

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a SIP message.
    Sip {
        /// Transport and address.
        target: Target,
        /// The message.
        data: Vec<u8>,
    },
    /// Send an RTP packet the core made (an announcement).
    Rtp {
        /// Out of which local port to whom.
        relay: Relay,
        /// The packet.
        data: Vec<u8>,
    },
    /// Something happened.
    Event(Event),
    /// Nothing more to do until this instant (or new input).
    Timeout(Instant),
}

/// Where to send a relayed RTP/RTCP packet: out of which local port to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    /// Local port to send from.
    pub from_port: u16,
    /// Destination.
    pub to: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Retransmit a request over UDP (Timer A / E).
    Retransmit(u64),
    /// No final response in time (Timer B / F), or ringing too long (Timer C).
    ClientTimeout(u64),
    /// Retransmit a non-2xx final response to an INVITE until the ACK (Timer G).
    ResponseRetransmit(u64),
    /// Forget a transaction.
    Forget(u64),
    /// Send the announcement packets due (call, generation).
    Inject(u64, u32),
    /// A reminder beep is due (call, generation).
    Periodic(u64, u32),
    /// Housekeeping.
    Sweep,
}

struct ServerTxn {
    source: Target,
    request: Message,
    is_invite: bool,
    last_response: Option<Vec<u8>>,
    final_code: Option<u16>,
    client: Option<u64>,
    retransmit: Duration,
}

struct ClientTxn {
    server: u64,
    branch: String,
    dest: Target,
    request: Message,
    bytes: Vec<u8>,
    is_invite: bool,
    provisional: bool,
    final_code: Option<u16>,
    cancel_pending: bool,
    cancelled: bool,
    retransmit: Duration,
    call: Option<u64>,
    side: Side,
    /// Timer B/F, then Timer C once the INVITE rings.
    deadline: Instant,
    ack: Option<Vec<u8>>,
}

/// One remote endpoint of a media stream.
#[derive(Default)]
struct Leg {
    negotiated: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    stream: Option<sdp::MediaStream>,
    dedupe: EventDeduper,
    tones: Option<Box<ToneDetector>>,
    /// This leg's media as the other leg receives it (announcements go in here).
    onward: Onward,
}

struct Stream {
    /// Our RTP port facing each side (RTCP is port + 1).
    ports: [u16; 2],
    legs: [Leg; 2],
}

impl Stream {
    /// The codec of a payload type in packets sent to `receiver`: as the
    /// receiver's SDP maps it, else as the other side's does.
    fn codec_toward(&self, receiver: Side, pt: u8) -> Option<&sdp::Codec> {
        [receiver, receiver.other()]
            .iter()
            .find_map(|s| self.legs[s.index()].stream.as_ref()?.codec(pt))
    }
}

struct Involved {
    extension: String,
    display_name: Option<String>,
    mode: Mode,
    shortcode: Option<u8>,
    side: Side,
    on: bool,
}

struct Call {
    r: CallRef,
    call_id: String,
    caller_tag: Option<String>,
    involved: Vec<Involved>,
    streams: Vec<Stream>,
    matchers: [ShortcodeMatcher; 2],
    answered: bool,
    ended: Option<Instant>,
    recording: bool,
    last_activity: Instant,
    /// Generation of the announcement timer and of the reminder-beep timer;
    /// a timer of an older generation is stale.
    inject_gen: u32,
    periodic_gen: u32,
}

impl Call {
    fn side_of_request(&self, msg: &Message) -> Side {
        match (&self.caller_tag, msg.from_tag()) {
            (Some(c), Some(f)) if *c == f => Side::Caller,
            (Some(_), Some(_)) => Side::Callee,
            _ => Side::Caller,
        }
    }

    fn wants_recording(&self) -> Option<RecordingReason> {
        if !self.answered || self.ended.is_some() {
            return None;
        }
        if let Some(u) = self.involved.iter().find(|u| u.mode == Mode::Always) {
            return Some(RecordingReason::Answered {
                extension: u.extension.clone(),
            });
        }
        self.involved
            .iter()
            .find(|u| u.mode == Mode::OnDemand && u.on)
            .map(|u| RecordingReason::Shortcode {
                extension: u.extension.clone(),
                on: true,
            })
    }

    /// The parties an announcement goes to: both, or those that are not a
    /// recorded policy user (`FarEnd`). `toggled` is the side of an
    /// `OnDemand` user who just stopped recording (still the near end).
    fn announcement_receivers(&self, to: AnnounceTo, toggled: Option<Side>) -> Vec<Side> {
        [Side::Caller, Side::Callee]
            .into_iter()
            .filter(|&side| {
                to == AnnounceTo::Both
                    || (Some(side) != toggled
                        && !self
                            .involved
                            .iter()
                            .any(|u| u.side == side && (u.mode == Mode::Always || u.on)))
            })
            .collect()
    }

    /// A new announcement timer for this call; earlier ones become stale.
    fn inject_timer(&mut self) -> Timer {
        self.inject_gen = self.inject_gen.wrapping_add(1);
        Timer::Inject(self.r.id, self.inject_gen)
    }

    /// Whether digits keyed on `side` need in-band detection: an OnDemand
    /// user is on that side and no telephone-event was negotiated.
    fn listens_for_shortcode(&self, side: Side) -> bool {
        self.involved
            .iter()
            .any(|u| u.side == side && u.mode == Mode::OnDemand && u.shortcode.is_some())
    }
}

/// Port pairs from the configured range, handed out in FIFO order so a
/// released port is reused as late as possible.
struct PortPool {
    base: u16,
    free: VecDeque<u16>,
    /// Owner of each port of the range: (call, stream, side facing).
    owners: Vec<Option<(u64, u8, Side)>>,
}

impl PortPool {
    fn new(ports: &[u16]) -> Self {
        let base = ports.iter().copied().min().unwrap_or(0);
        let top = ports.iter().copied().max().map_or(0, |p| p as usize + 2);
        Self {
            base,
            free: ports.iter().copied().collect(),
            owners: vec![None; top.saturating_sub(base as usize)],
        }
    }

    fn take(&mut self, owner: (u64, u8, Side)) -> Option<u16> {
        let p = self.free.pop_front()?;
        let i = (p - self.base) as usize;
        self.owners[i] = Some(owner);
        self.owners[i + 1] = Some(owner);
        Some(p)
    }

    fn give(&mut self, p: u16) {
        let i = (p - self.base) as usize;
        self.owners[i] = None;
        self.owners[i + 1] = None;
        self.free.push_back(p);
    }

    /// The owner of a local port and whether it is the RTCP port of its pair.
    fn owner(&self, port: u16) -> Option<((u64, u8, Side), bool)> {
        let i = port.checked_sub(self.base)? as usize;
        let owner = (*self.owners.get(i)?)?;
        Some((owner, (port - self.base) % 2 == 1))
    }
}

/// The recorder core.
pub struct Recorder {
    cfg: CoreConfig,
    out: VecDeque<Output>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    server_keys: HashMap<String, u64>,
    servers: HashMap<u64, ServerTxn>,
    client_branches: HashMap<String, u64>,
    clients: HashMap<u64, ClientTxn>,
    call_ids: HashMap<String, u64>,
    calls: HashMap<u64, Call>,
    ports: PortPool,
    stats: Stats,
    next_id: u64,
    rng: u64,
    draining: bool,
    sweep_armed: bool,
    clips: Clips,
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The stable name of a call's recording, from its SIP Call-ID.
pub fn call_hash(call_id: &str) -> String {
    format!("{:016x}", fnv1a(call_id.as_bytes()))
}

impl Recorder {
    /// A core with the given configuration and the even RTP ports (each with
    /// its odd RTCP neighbour) the shell has bound.
    pub fn new(cfg: CoreConfig, rtp_ports: &[u16]) -> Self {
        let rng = cfg.seed | 1;
        Self {
            cfg,
            out: VecDeque::new(),
            timers: BinaryHeap::new(),
            server_keys: HashMap::new(),
            servers: HashMap::new(),
            client_branches: HashMap::new(),
            clients: HashMap::new(),
            call_ids: HashMap::new(),
            calls: HashMap::new(),
            ports: PortPool::new(rtp_ports),
            stats: Stats::default(),
            next_id: 1,
            rng,
            draining: false,
            sweep_armed: false,
            clips: Clips::default(),
        }
    }

    /// Replaces peers and users (config reload). Calls in progress keep the
    /// decisions made when they started.
    pub fn update_config(&mut self, cfg: CoreConfig) {
        self.cfg.peers = cfg.peers;
        self.cfg.users = cfg.users;
        self.cfg.hosts = cfg.hosts;
        self.cfg.timers = cfg.timers;
        self.cfg.announcement = cfg.announcement;
    }

    /// Stops taking new calls: new INVITEs get 503; calls in progress go on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|c| c.ended.is_none()).count()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next thing to do. Drain until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let next = self.timers.peek().map(|Reverse((t, _))| *t);
        Output::Timeout(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)))
    }

    /// The next timer, if any (for shells that poll).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: enough for unique branches and tags, seeded by the shell.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }

    fn arm(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    fn ensure_sweep(&mut self, now: Instant) {
        if !self.sweep_armed {
            self.sweep_armed = true;
            self.arm(now + SWEEP, Timer::Sweep);
        }
    }

    fn send(&mut self, target: Target, msg: &Message) -> Vec<u8> {
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

    fn send_bytes(&mut self, target: Target, data: Vec<u8>, method: &str) {
        Stats::bump(&mut self.stats.sip_messages, (method_label(method), "out"));
        self.out.push_back(Output::Sip { target, data });
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn our_via(&self, transport: Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch}",
            transport.via_token(),
            self.cfg.advertised
        )
    }

    fn our_uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("<sip:{};lr>", self.cfg.advertised),
            Transport::Tcp => format!("<sip:{};transport=tcp;lr>", self.cfg.advertised),
        }
    }

    fn is_us(&self, uri: &rsip::Uri) -> bool {
        let port = uri
            .host_with_port
            .port
            .as_ref()
            .map_or(5060, |p| *p.value());
        let host_is_us = match &uri.host_with_port.host {
            rsip::Host::IpAddr(ip) => *ip == self.cfg.advertised.ip(),
            rsip::Host::Domain(d) => {
                d.to_string().parse::<IpAddr>().ok() == Some(self.cfg.advertised.ip())
            }
        };
        host_is_us && port == self.cfg.advertised.port()
    }

    /// Where a URI points, for Route and Request-URI based forwarding.
    fn resolve(&self, uri: &rsip::Uri) -> Option<Target> {
        let ip = match &uri.host_with_port.host {
            rsip::Host::IpAddr(ip) => *ip,
            rsip::Host::Domain(d) => {
                let d = d.to_string();
                d.parse::<IpAddr>()
                    .ok()
                    .or_else(|| self.cfg.hosts.get(&d).copied())?
            }
        };
        let port = uri
            .host_with_port
            .port
            .as_ref()
            .map_or(5060, |p| *p.value());
        let tcp = uri.params.iter().any(
            |p| matches!(p, rsip::Param::Transport(t) if t.to_string().eq_ignore_ascii_case("tcp")),
        );
        Some(Target {
            transport: if tcp { Transport::Tcp } else { Transport::Udp },
            addr: SocketAddr::new(ip, port),
        })
    }

    /// A response built locally to `req` (RFC 3261 §8.2.6).
    fn local_response(
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

    fn refuse(
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

    // ---------------------------------------------------------------- SIP input

    /// One SIP message (a UDP datagram or a framed TCP message) from `source`.
    pub fn handle_sip(&mut self, now: Instant, source: Target, data: &[u8]) {
        self.ensure_sweep(now);
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
            StartLine::Request { .. } => self.on_request(now, source, msg),
            StartLine::Response { .. } => self.on_response(now, msg),
        }
    }

    /// A request we cannot parse still gets a 400 when enough of it is there
    /// to address a response (RFC 3261 §16.3 / §8.2.2); anything else is dropped.
    fn answer_unparseable(&mut self, source: Target, data: &[u8], error: &message::ParseError) {
        if data.starts_with(b"SIP/2.0") {
            return;
        }
        // Retry with the body cut off: a lying Content-Length or a bad SDP must
        // not stop us from telling the sender.
        let head_end = data.windows(4).position(|w| w == b"\r\n\r\n");
        let Some(head_end) = head_end else { return };
        let mut head = data[..head_end].to_vec();
        head.extend_from_slice(b"\r\n\r\n");
        let filtered: Vec<u8> = String::from_utf8_lossy(&head)
            .split("\r\n")
            .filter(|l| {
                let n = l
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                n != "content-length" && n != "l"
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes();
        if let Ok(req) = Message::parse(&filtered)
            && req.method().is_some()
        {
            let reason = format!("Bad Request ({error})");
            self.refuse(source, &req, 400, &reason, &[]);
        }
    }

    fn server_key(msg: &Message, method: &str) -> String {
        let method = if method == "ACK" { "INVITE" } else { method };
        match msg.branch() {
            Some(b) if b.starts_with("z9hG4bK") => {
                let sent_by = msg
                    .top_via()
                    .and_then(|v| v.split_whitespace().nth(1))
                    .unwrap_or("");
                let sent_by = sent_by.split(';').next().unwrap_or("");
                format!("{b}|{sent_by}|{method}")
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

    fn on_request(&mut self, now: Instant, source: Target, mut msg: Message) {
        let method = msg.method().unwrap_or_default().to_ascii_uppercase();
        let in_dialog = msg.to_tag().is_some();

        if method == "ACK" {
            let key = Self::server_key(&msg, "ACK");
            if let Some(&sid) = self.server_keys.get(&key)
                && let Some(s) = self.servers.get_mut(&sid)
                && s.final_code.is_some_and(|c| c >= 300)
            {
                // ACK for our non-2xx final response: hop by hop, absorbed.
                s.last_response = None;
                return;
            }
        } else if method == "CANCEL" {
            self.on_cancel(now, source, msg);
            return;
        } else {
            let key = Self::server_key(&msg, &method);
            if let Some(&sid) = self.server_keys.get(&key) {
                // A retransmission: repeat our last answer, never forward twice.
                if let Some(resp) = self.servers.get(&sid).and_then(|s| s.last_response.clone()) {
                    self.send_bytes(source, resp, &method);
                }
                return;
            }
        }

        if self.cfg.peer_of(source.addr.ip()).is_none() {
            self.refuse(source, &msg, 403, "Forbidden", &[]);
            return;
        }

        let max_forwards = match msg.header("Max-Forwards") {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    self.refuse(source, &msg, 400, "Bad Request (Max-Forwards)", &[]);
                    return;
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
                    &msg,
                    200,
                    "OK",
                    &[
                        ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE".to_owned()),
                        ("Accept", "application/sdp".to_owned()),
                    ],
                );
                self.send(source, &resp);
                return;
            }
        }
        if max_forwards == 0 {
            self.refuse(source, &msg, 483, "Too Many Hops", &[]);
            return;
        }
        msg.set_header("Max-Forwards", (max_forwards - 1).to_string());

        // Loop detection (RFC 3261 §16.3 item 4): our own Via already in the request.
        let ours = format!(" {};branch={BRANCH_PREFIX}", self.cfg.advertised);
        if msg.headers_named("Via").iter().any(|v| v.contains(&ours)) {
            self.refuse(source, &msg, 482, "Loop Detected", &[]);
            return;
        }

        if method == "INVITE" && !in_dialog && self.draining {
            self.refuse(
                source,
                &msg,
                503,
                "Service Unavailable",
                &[("Retry-After", "5".to_owned())],
            );
            return;
        }
        if self.servers.len() >= MAX_TRANSACTIONS
            || (method == "INVITE" && !in_dialog && self.calls.len() >= MAX_CALLS)
        {
            self.refuse(
                source,
                &msg,
                503,
                "Service Unavailable",
                &[("Retry-After", "5".to_owned())],
            );
            return;
        }

        // Route processing (§16.4): strip the Route entries that name us.
        while let Some(first) = msg.routes().first().cloned() {
            match message::name_addr_uri(&first) {
                Some(uri) if self.is_us(&uri) => msg.pop_route(),
                _ => break,
            }
        }

        let dest = if let Some(route) = msg.routes().first() {
            message::name_addr_uri(route).and_then(|u| self.resolve(&u))
        } else if in_dialog || method == "ACK" {
            msg.request_uri().and_then(|u| self.resolve(&u))
        } else {
            self.cfg.peer_of(source.addr.ip()).map(|p| p.next_hop)
        };
        let Some(dest) = dest else {
            self.refuse(source, &msg, 502, "Bad Gateway (next hop unknown)", &[]);
            return;
        };

        // The call this request belongs to, and which side sent it.
        let call_id = msg.call_id().unwrap_or_default();
        let mut call = self.call_ids.get(&call_id).copied();
        if call.is_none() && method == "INVITE" && !in_dialog {
            call = Some(self.start_call(now, &msg, &call_id));
        }
        let side = call
            .and_then(|c| self.calls.get(&c))
            .map_or(Side::Caller, |c| c.side_of_request(&msg));
        if let Some(c) = call.and_then(|c| self.calls.get_mut(&c)) {
            c.last_activity = now;
        }

        if let Some(cid) = call {
            if is_sdp(&msg) {
                match self.apply_sdp(cid, side, &msg.body) {
                    Ok(body) => msg.body = body,
                    Err(e) => {
                        if method == "ACK" {
                            return;
                        }
                        // Out of ports is overload (try another recorder); bad SDP is the sender's.
                        let (code, reason, extra) = match e {
                            SdpFailure::NoPorts => (
                                503,
                                "Service Unavailable (no RTP ports free)".to_owned(),
                                vec![("Retry-After", "5".to_owned())],
                            ),
                            SdpFailure::Bad(why) => {
                                (488, format!("Not Acceptable Here ({why})"), vec![])
                            }
                        };
                        self.refuse(source, &msg, code, &reason, &extra);
                        if method == "INVITE" && !in_dialog {
                            self.end_call(now, cid, EndReason::Rejected(code));
                        }
                        return;
                    }
                }
            }
            if method == "INFO"
                && let Some(digit) = msg
                    .content_type()
                    .and_then(|ct| dtmf::parse_info(&ct, &msg.body))
            {
                self.on_digit(now, cid, side, digit, DtmfMethod::SipInfo);
            }
            if method == "BYE" {
                self.end_call(now, cid, EndReason::Bye(side));
            }
        }

        if !in_dialog && matches!(method.as_str(), "INVITE" | "SUBSCRIBE" | "REFER") {
            // Double Record-Route (RFC 5658) when the two sides use different transports.
            if dest.transport != source.transport {
                let inbound = self.our_uri(source.transport);
                msg.push_record_route(inbound);
            }
            let outbound = self.our_uri(dest.transport);
            msg.push_record_route(outbound);
        }

        // The request as the server transaction keeps it: before our Via.
        let original = msg.clone();
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.random());
        msg.push_via(self.our_via(dest.transport, &branch));

        if method == "ACK" {
            // ACK for a 2xx is end to end: forwarded statelessly.
            self.send(dest, &msg);
            return;
        }

        let sid = self.id();
        let key = Self::server_key(&original, &method);
        let is_invite = method == "INVITE";
        let cid_txn = self.id();
        self.server_keys.insert(key, sid);
        self.servers.insert(
            sid,
            ServerTxn {
                source,
                request: original,
                is_invite,
                last_response: None,
                final_code: None,
                client: Some(cid_txn),
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

        let bytes = self.send(dest, &msg);
        let t = self.cfg.timers;
        self.client_branches.insert(branch.clone(), cid_txn);
        self.clients.insert(
            cid_txn,
            ClientTxn {
                server: sid,
                branch,
                dest,
                request: msg,
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
            },
        );
        if dest.transport == Transport::Udp {
            self.arm(now + t.t1, Timer::Retransmit(cid_txn));
        }
        self.arm(now + t.transaction_timeout(), Timer::ClientTimeout(cid_txn));
    }

    fn on_cancel(&mut self, now: Instant, source: Target, msg: Message) {
        let key = Self::server_key(&msg, "INVITE");
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

    fn send_cancel(&mut self, _now: Instant, client: u64) {
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

    fn on_response(&mut self, now: Instant, mut msg: Message) {
        let code = msg.code().unwrap_or(0);
        let branch = msg.branch().unwrap_or_default();
        let method = msg
            .cseq()
            .map(|c| c.1.to_ascii_uppercase())
            .unwrap_or_default();
        let Some(&cid_txn) = self.client_branches.get(&branch) else {
            // A 2xx to INVITE retransmitted after our transaction ended is
            // forwarded statelessly along its Via (RFC 3261 §16.7 item 10).
            if branch.starts_with(BRANCH_PREFIX) && method == "INVITE" && (200..300).contains(&code)
            {
                msg.pop_via();
                if let Some(target) = msg.top_via().and_then(via_target) {
                    self.send(target, &msg);
                }
            }
            return;
        };
        let (sid, dest, is_invite, already_final, side, call) = {
            let Some(c) = self.clients.get(&cid_txn) else {
                return;
            };
            if c.request.method().map(str::to_ascii_uppercase) != Some(method.clone()) {
                return;
            }
            (c.server, c.dest, c.is_invite, c.final_code, c.side, c.call)
        };
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
                self.arm(at, Timer::ClientTimeout(cid_txn));
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

        // The responder is the side the request was sent to.
        let responder = side.other();
        if let Some(cid) = call
            && is_sdp(&msg)
            && (code < 300)
        {
            match self.apply_sdp(cid, responder, &msg.body) {
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
            self.arm(now + TXN_LINGER, Timer::Forget(cid_txn));
            if let Some(cid) = call {
                self.on_final(now, cid, &method, code, &msg);
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
                    arm.push((now + s.retransmit, Timer::ResponseRetransmit(sid)));
                }
                arm.push((now + TXN_LINGER, Timer::Forget(sid)));
            }
            if !(s.is_invite && (200..300).contains(&code)) {
                s.last_response = Some(bytes);
            }
        }
        for (at, t) in arm {
            self.arm(at, t);
        }
    }

    fn on_final(&mut self, now: Instant, cid: u64, method: &str, code: u16, _msg: &Message) {
        let Some(call) = self.calls.get(&cid) else {
            return;
        };
        let initial = method == "INVITE" && !call.answered;
        if initial && (200..300).contains(&code) {
            let call = self.calls.get_mut(&cid).expect("checked above");
            call.answered = true;
            let r = call.r.clone();
            self.emit(Event::CallAnswered { call: r, at: now });
            self.update_recording(now, cid, None);
        } else if initial && code >= 300 {
            let cancelled = self
                .clients
                .values()
                .any(|c| c.call == Some(cid) && c.cancelled);
            let reason = if code == 487 || cancelled {
                EndReason::Cancelled
            } else if code == 408 {
                EndReason::Timeout
            } else {
                EndReason::Rejected(code)
            };
            self.end_call(now, cid, reason);
        }
    }

    // ---------------------------------------------------------------- calls

    fn start_call(&mut self, now: Instant, msg: &Message, call_id: &str) -> u64 {
        let id = self.id();
        let from = msg.header("From").unwrap_or_default();
        let pai = msg.header("P-Asserted-Identity");
        let to = msg.header("To").unwrap_or_default();
        let caller = Party {
            number: pai
                .as_deref()
                .and_then(message::name_addr_user)
                .or_else(|| message::name_addr_user(&from)),
            display_name: pai
                .as_deref()
                .and_then(message::name_addr_display)
                .or_else(|| message::name_addr_display(&from)),
        };
        let callee = Party {
            number: msg
                .request_uri()
                .and_then(|u| u.user().map(str::to_owned))
                .or_else(|| message::name_addr_user(&to)),
            display_name: message::name_addr_display(&to),
        };
        // Every identity that can name a policy user on each side.
        let caller_ids = [
            pai.as_deref().and_then(message::name_addr_user),
            message::name_addr_user(&from),
        ];
        let callee_ids = [
            msg.request_uri().and_then(|u| u.user().map(str::to_owned)),
            message::name_addr_user(&to),
        ];
        let mut involved: Vec<Involved> = Vec::new();
        for (side, ids) in [(Side::Caller, caller_ids), (Side::Callee, callee_ids)] {
            for ext in ids.into_iter().flatten() {
                if involved
                    .iter()
                    .any(|u| u.extension == ext && u.side == side)
                {
                    continue;
                }
                if let Some(user) = self.cfg.users.get(&ext) {
                    if user.mode == Mode::Never {
                        continue;
                    }
                    involved.push(Involved {
                        extension: ext,
                        display_name: user.display_name.clone(),
                        mode: user.mode,
                        shortcode: user.shortcode,
                        side,
                        on: false,
                    });
                }
            }
        }
        let r = CallRef {
            id,
            hash: call_hash(call_id),
        };
        let users = involved
            .iter()
            .map(|u| InvolvedUser {
                extension: u.extension.clone(),
                display_name: u.display_name.clone(),
                mode: u.mode,
                side: u.side,
            })
            .collect();
        self.calls.insert(
            id,
            Call {
                r: r.clone(),
                call_id: call_id.to_owned(),
                caller_tag: msg.from_tag(),
                involved,
                streams: Vec::new(),
                matchers: Default::default(),
                answered: false,
                ended: None,
                recording: false,
                last_activity: now,
                inject_gen: 0,
                periodic_gen: 0,
            },
        );
        self.call_ids.insert(call_id.to_owned(), id);
        self.stats.calls_active += 1;
        self.emit(Event::CallStarted {
            call: r,
            at: now,
            caller,
            callee,
            users,
        });
        id
    }

    fn end_call(&mut self, now: Instant, cid: u64, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        call.ended = Some(now);
        let answered = call.answered;
        let r = call.r.clone();
        self.cut_announcements(cid);
        self.update_recording(now, cid, Some(RecordingReason::CallEnded));
        self.stats.calls_active = self.stats.calls_active.saturating_sub(1);
        Stats::bump(&mut self.stats.calls, reason.result_label(answered));
        self.emit(Event::CallEnded {
            call: r,
            at: now,
            reason,
            answered,
        });
    }

    fn forget_call(&mut self, cid: u64) {
        if let Some(call) = self.calls.remove(&cid) {
            self.call_ids.remove(&call.call_id);
            for s in &call.streams {
                for p in s.ports {
                    self.ports.give(p);
                }
            }
        }
    }

    fn update_recording(&mut self, now: Instant, cid: u64, ended: Option<RecordingReason>) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let want = call.wants_recording();
        let on = want.is_some();
        if on == call.recording {
            return;
        }
        call.recording = on;
        if on {
            self.stats.recordings_active += 1;
            self.stats.recordings_started += 1;
        } else {
            self.stats.recordings_active = self.stats.recordings_active.saturating_sub(1);
        }
        let reason = want.or(ended).unwrap_or(RecordingReason::CallEnded);
        let r = call.r.clone();
        let stopped_by = match &reason {
            RecordingReason::Shortcode {
                extension,
                on: false,
            } => call
                .involved
                .iter()
                .find(|u| &u.extension == extension)
                .map(|u| u.side),
            _ => None,
        };
        self.emit(Event::Recording {
            call: r,
            at: now,
            on,
            reason,
        });
        self.on_recording_changed(now, cid, on, stopped_by);
    }

    // ---------------------------------------------------------------- announcements

    /// Plays what the policy asks for when recording starts or stops, and
    /// runs the reminder beeps while it goes on.
    fn on_recording_changed(&mut self, now: Instant, cid: u64, on: bool, stopped_by: Option<Side>) {
        let a = &self.cfg.announcement;
        let (mode, to, periodic, stop_tone) = (a.mode, a.to, a.periodic, a.stop_tone);
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        call.periodic_gen = call.periodic_gen.wrapping_add(1);
        let g = call.periodic_gen;
        if on {
            let receivers = call.announcement_receivers(to, None);
            if let Some(every) = periodic {
                self.arm(now + every, Timer::Periodic(cid, g));
            }
            let kind = match mode {
                AnnounceMode::None => return,
                AnnounceMode::Prompt if self.cfg.announcement.prompt.is_some() => Kind::Prompt,
                // No usable prompt: the beep still tells the parties.
                AnnounceMode::Beep | AnnounceMode::Prompt => Kind::Beep,
            };
            self.announce(now, cid, kind, &receivers);
        } else if let Some(side) = stopped_by {
            // Recording stopped by a shortcode: the call goes on.
            let receivers = call.announcement_receivers(to, Some(side));
            self.cut_announcements(cid);
            if stop_tone {
                self.announce(now, cid, Kind::StopTone, &receivers);
            }
        }
    }

    /// Starts an announcement toward each receiver, in the call's first audio stream.
    fn announce(&mut self, now: Instant, cid: u64, kind: Kind, receivers: &[Side]) {
        let samples = match (kind, &self.cfg.announcement.prompt) {
            (Kind::Prompt, Some(p)) => p.clone(),
            (Kind::Beep | Kind::Prompt, _) => self.clips.beep.clone(),
            (Kind::PeriodicBeep, _) => self.clips.periodic.clone(),
            (Kind::StopTone, _) => self.clips.stop.clone(),
        };
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let r = call.r.clone();
        let mut finished = Vec::new();
        let mut started = false;
        for &to in receivers {
            let sender = to.other();
            let stream = call.streams.iter_mut().find(|s| {
                s.ports[0] != 0
                    && s.legs
                        .iter()
                        .any(|l| l.stream.as_ref().is_some_and(|m| m.media == "audio"))
            });
            let skipped = |outcome| Finished {
                kind,
                at: now,
                played: Duration::ZERO,
                outcome,
            };
            let Some(stream) = stream else {
                finished.push((to, skipped(Outcome::NoMedia)));
                continue;
            };
            let receiver = &stream.legs[to.index()];
            if receiver.latched.or(receiver.negotiated).is_none() {
                finished.push((to, skipped(Outcome::NoMedia)));
                continue;
            }
            if receiver.stream.as_ref().is_some_and(|m| {
                matches!(
                    m.direction,
                    sdp::Direction::SendOnly | sdp::Direction::Inactive
                )
            }) {
                finished.push((to, skipped(Outcome::OnHold)));
                continue;
            }
            // The codec the sender uses now, else the first the receiver
            // takes that both sides listed (the negotiated one).
            let sending = &stream.legs[sender.index()];
            let offered =
                |l: &Leg, pt: u8| l.stream.as_ref().is_some_and(|m| m.formats.contains(&pt));
            let pt = sending
                .onward
                .audio_pt()
                .filter(|&pt| offered(receiver, pt))
                .or_else(|| {
                    let m = receiver.stream.as_ref()?;
                    m.formats
                        .iter()
                        .copied()
                        .find(|&f| Some(f) != m.telephone_event() && offered(sending, f))
                });
            let law = pt.and_then(|pt| Law::of(&stream.codec_toward(to, pt)?.name));
            let (Some(pt), Some(law)) = (pt, law) else {
                finished.push((to, skipped(Outcome::UnsupportedCodec)));
                continue;
            };
            let onward = &mut stream.legs[sender.index()].onward;
            match onward.start(now, kind, samples.clone(), pt, law) {
                Ok(cut) => {
                    started = true;
                    if let Some(cut) = cut {
                        finished.push((to, cut));
                    }
                }
                Err(refused) => finished.push((to, refused)),
            }
        }
        if started {
            let timer = call.inject_timer();
            self.arm(now, timer);
        }
        for (to, f) in finished {
            self.announced(&r, to, f);
        }
    }

    fn announced(&mut self, call: &CallRef, to: Side, f: Finished) {
        Stats::bump(
            &mut self.stats.announcements,
            (f.kind.label(), f.outcome.label()),
        );
        self.emit(Event::Announcement {
            call: call.clone(),
            at: f.at,
            kind: f.kind,
            to,
            outcome: f.outcome,
            played: f.played,
        });
    }

    /// Ends every announcement of the call now.
    fn cut_announcements(&mut self, cid: u64) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let r = call.r.clone();
        let mut cut = Vec::new();
        for stream in call.streams.iter_mut() {
            for sender in [Side::Caller, Side::Callee] {
                if let Some(f) = stream.legs[sender.index()].onward.cut() {
                    cut.push((sender.other(), f));
                }
            }
        }
        for (to, f) in cut {
            self.announced(&r, to, f);
        }
    }

    /// Sends the announcement packets due and schedules the next ones.
    fn inject(&mut self, now: Instant, cid: u64) {
        let seed = self.random();
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let mut next: Option<Instant> = None;
        let mut finished = Vec::new();
        let mut packets = Vec::new();
        for (idx, stream) in call.streams.iter_mut().enumerate() {
            for sender in [Side::Caller, Side::Callee] {
                let to = sender.other();
                let onward = &mut stream.legs[sender.index()].onward;
                if !onward.playing() {
                    continue;
                }
                let mut sent = Vec::new();
                match onward.poll(now, seed, &mut sent) {
                    announce::Poll::Idle => {}
                    announce::Poll::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                    announce::Poll::Done(f) => finished.push((to, f)),
                }
                let receiver = &stream.legs[to.index()];
                let dest = receiver.latched.or(receiver.negotiated);
                for p in sent {
                    if call.recording {
                        let frame = MediaFrame {
                            call: call.r.clone(),
                            at: now,
                            side: sender,
                            stream: idx as u8,
                            ssrc: p.ssrc,
                            seq: p.seq,
                            timestamp: p.timestamp,
                            payload_type: p.payload_type,
                            codec: stream
                                .codec_toward(to, p.payload_type)
                                .map(|c| c.name.clone()),
                            payload: p.payload().to_vec(),
                        };
                        packets.push(Output::Event(Event::Media(frame)));
                    }
                    if let Some(to) = dest {
                        let relay = Relay {
                            from_port: stream.ports[sender.other().index()],
                            to,
                        };
                        packets.push(Output::Rtp {
                            relay,
                            data: p.packet,
                        });
                    }
                }
            }
        }
        let r = call.r.clone();
        if let Some(t) = next {
            let timer = call.inject_timer();
            self.arm(t, timer);
        }
        self.out.extend(packets);
        for (to, f) in finished {
            self.announced(&r, to, f);
        }
    }

    fn on_digit(&mut self, now: Instant, cid: u64, side: Side, digit: char, method: DtmfMethod) {
        Stats::bump(&mut self.stats.dtmf_digits, method.label());
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let r = call.r.clone();
        let code = call.matchers[side.index()].key(now, digit);
        self.emit(Event::Dtmf {
            call: r,
            at: now,
            side,
            digit,
            method,
        });
        let Some(code) = code else { return };
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if !call.answered || call.ended.is_some() {
            return;
        }
        // Only the user's own leg toggles: the far end keying the same code is ignored.
        let mut toggled = None;
        for u in call.involved.iter_mut() {
            if u.side == side && u.mode == Mode::OnDemand && u.shortcode == Some(code) {
                u.on = !u.on;
                toggled = Some((u.extension.clone(), u.on));
            }
        }
        let Some((extension, on)) = toggled else {
            return;
        };
        Stats::bump(
            &mut self.stats.recording_toggles,
            if on { "on" } else { "off" },
        );
        let was = call.recording;
        self.update_recording(
            now,
            cid,
            Some(RecordingReason::Shortcode {
                extension: extension.clone(),
                on,
            }),
        );
        // A toggle that does not change the call's state (an Always user is
        // also on it, or another OnDemand user still records) is still reported.
        let Some(call) = self.calls.get(&cid) else {
            return;
        };
        if call.recording == was {
            let r = call.r.clone();
            let recording = call.recording;
            self.emit(Event::Recording {
                call: r,
                at: now,
                on: recording,
                reason: RecordingReason::Shortcode { extension, on },
            });
        }
    }

    fn apply_sdp(&mut self, cid: u64, sender: Side, body: &[u8]) -> Result<Vec<u8>, SdpFailure> {
        let sdp = Sdp::parse(body).map_err(|e| SdpFailure::Bad(e.to_string()))?;
        let Some(call) = self.calls.get_mut(&cid) else {
            return Err(SdpFailure::Bad("no call".into()));
        };
        let listens = [
            call.listens_for_shortcode(Side::Caller),
            call.listens_for_shortcode(Side::Callee),
        ];
        let mut ports = Vec::with_capacity(sdp.streams.len());
        for (i, s) in sdp.streams.iter().enumerate() {
            if i >= call.streams.len() {
                if s.port == 0 {
                    ports.push(0);
                    continue;
                }
                let a = self.ports.take((cid, i as u8, Side::Caller));
                let b = self.ports.take((cid, i as u8, Side::Callee));
                let (Some(a), Some(b)) = (a, b) else {
                    if let Some(a) = a {
                        self.ports.give(a);
                    }
                    if let Some(b) = b {
                        self.ports.give(b);
                    }
                    return Err(SdpFailure::NoPorts);
                };
                while call.streams.len() < i {
                    // A refused stream before this one holds no ports.
                    call.streams.push(Stream {
                        ports: [0, 0],
                        legs: Default::default(),
                    });
                }
                call.streams.push(Stream {
                    ports: [a, b],
                    legs: Default::default(),
                });
            }
            let stream = &mut call.streams[i];
            let leg = &mut stream.legs[sender.index()];
            if leg.negotiated != s.rtp {
                leg.latched = None;
                leg.latched_rtcp = None;
            }
            leg.negotiated = s.rtp;
            leg.stream = Some(s.clone());
            ports.push(stream.ports[sender.other().index()]);
        }
        // In-band detection on a side whose media has no telephone-event.
        for side in [Side::Caller, Side::Callee] {
            for stream in call.streams.iter_mut() {
                let te = stream.legs.iter().any(|l| {
                    l.stream
                        .as_ref()
                        .is_some_and(|s| s.telephone_event().is_some())
                });
                let leg = &mut stream.legs[side.index()];
                if listens[side.index()] && !te {
                    leg.tones.get_or_insert_with(Default::default);
                } else {
                    leg.tones = None;
                }
            }
        }
        Ok(sdp.rewrite(self.cfg.advertised.ip(), &ports))
    }

    // ---------------------------------------------------------------- media

    /// One UDP packet on a local RTP/RTCP port. Returns where to relay it,
    /// or `None` when it is dropped (and counted).
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        local_port: u16,
        source: SocketAddr,
        data: &mut [u8],
    ) -> Option<Relay> {
        let Some(((cid, stream_idx, facing), rtcp_port)) = self.ports.owner(local_port) else {
            Stats::bump(&mut self.stats.rtp_dropped, "unknown_port");
            return None;
        };
        let Some(call) = self.calls.get_mut(&cid) else {
            Stats::bump(&mut self.stats.rtp_dropped, "unknown_port");
            return None;
        };
        let stream = &mut call.streams[stream_idx as usize];
        let mux = stream.legs[facing.index()]
            .stream
            .as_ref()
            .is_some_and(|s| s.rtcp_mux);
        let rtcp = rtcp_port || (mux && is_rtcp(data));

        // Symmetric RTP: accept the negotiated address and latch onto the
        // port media really comes from; everything else is dropped.
        let leg = &mut stream.legs[facing.index()];
        let latched = if rtcp {
            &mut leg.latched_rtcp
        } else {
            &mut leg.latched
        };
        match (*latched, leg.negotiated) {
            (Some(l), _) if l == source => {}
            (None, Some(n)) if n.ip() == source.ip() => *latched = Some(source),
            _ => {
                Stats::bump(&mut self.stats.rtp_dropped, "wrong_source");
                return None;
            }
        }

        let other = &stream.legs[facing.other().index()];
        let dest = if rtcp {
            other.latched_rtcp.or_else(|| {
                other.negotiated.map(|n| {
                    let muxed = other.stream.as_ref().is_some_and(|s| s.rtcp_mux);
                    if muxed {
                        n
                    } else {
                        SocketAddr::new(n.ip(), n.port().wrapping_add(1))
                    }
                })
            })
        } else {
            other.latched.or(other.negotiated)
        };
        let Some(dest) = dest else {
            Stats::bump(&mut self.stats.rtp_dropped, "no_destination");
            return None;
        };
        let other_port = stream.ports[facing.other().index()];
        let other_muxed = other.stream.as_ref().is_some_and(|s| s.rtcp_mux);
        let from_port = if rtcp && !other_muxed {
            other_port + 1
        } else {
            other_port
        };

        if rtcp {
            let sent = &stream.legs[facing.index()].onward;
            let received = &stream.legs[facing.other().index()].onward;
            if !sent.is_identity() || !received.is_identity() {
                announce::rewrite_rtcp(data, sent, received);
            }
        } else {
            let Ok(rtp) = rtp_rs::RtpReader::new(data) else {
                Stats::bump(&mut self.stats.rtp_dropped, "malformed");
                return None;
            };
            call.last_activity = now;
            let pt = rtp.payload_type();
            let leg = &stream.legs[facing.index()];
            let te = [&stream.legs[facing.other().index()], leg]
                .iter()
                .find_map(|l| l.stream.as_ref().and_then(|s| s.telephone_event()));
            let codec = stream
                .codec_toward(facing.other(), pt)
                .map(|c| c.name.clone());
            let mut digit = None;
            let audio = Some(pt) != te && codec.as_deref() != Some("CN");
            if Some(pt) == te {
                if let Some(ev) = dtmf::parse_telephone_event(rtp.payload()) {
                    let leg = &mut stream.legs[facing.index()];
                    if leg.dedupe.is_new(rtp.ssrc(), rtp.timestamp()) {
                        digit = dtmf::event_digit(ev.event).map(|d| (d, DtmfMethod::Rfc4733));
                    }
                }
            } else {
                let leg = &mut stream.legs[facing.index()];
                if let Some(tones) = leg.tones.as_mut() {
                    let found = codec
                        .as_deref()
                        .and_then(Law::of)
                        .and_then(|law| tones.push(rtp.payload().iter().map(|&b| law.decode(b))));
                    digit = found.map(|d| (d, DtmfMethod::InBand));
                }
            }
            let payload = rtp.payload_offset()..rtp.payload_offset() + rtp.payload().len();
            // An announcement toward the other side replaces this packet, or
            // shifts its numbering to continue after one.
            let verdict = stream.legs[facing.index()]
                .onward
                .original(now, data, audio);
            let held = verdict != Verdict::Forward;
            if verdict == Verdict::HoldAndStart {
                let timer = call.inject_timer();
                self.timers.push(Reverse((now, timer)));
            }
            if !held && call.recording && audio {
                let frame = MediaFrame {
                    call: call.r.clone(),
                    at: now,
                    side: facing,
                    stream: stream_idx,
                    ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
                    seq: u16::from_be_bytes([data[2], data[3]]),
                    timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                    payload_type: pt,
                    codec,
                    payload: data[payload].to_vec(),
                };
                self.out.push_back(Output::Event(Event::Media(frame)));
            }
            if let Some((d, method)) = digit {
                self.on_digit(now, cid, facing, d, method);
            }
            if held {
                return None;
            }
        }
        let dir = match facing {
            Side::Caller => "caller_to_callee",
            Side::Callee => "callee_to_caller",
        };
        Stats::bump(&mut self.stats.rtp_packets, dir);
        Some(Relay {
            from_port,
            to: dest,
        })
    }

    // ---------------------------------------------------------------- timers

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            self.fire(now, timer);
        }
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        let t = self.cfg.timers;
        match timer {
            Timer::Retransmit(id) => {
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
                self.arm(next, Timer::Retransmit(id));
            }
            Timer::ClientTimeout(id) => {
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
                self.arm(now + TXN_LINGER, Timer::Forget(id));
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
                    self.arm(now + TXN_LINGER, Timer::Forget(sid));
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
            Timer::ResponseRetransmit(sid) => {
                let Some(s) = self.servers.get_mut(&sid) else {
                    return;
                };
                let Some(resp) = s.last_response.clone() else {
                    return;
                };
                s.retransmit = (s.retransmit * 2).min(t.t2);
                let (source, next) = (s.source, now + s.retransmit);
                self.send_bytes(source, resp, "INVITE");
                self.arm(next, Timer::ResponseRetransmit(sid));
            }
            Timer::Forget(id) => {
                if let Some(s) = self.servers.remove(&id) {
                    let key = Self::server_key(&s.request, s.request.method().unwrap_or_default());
                    if self.server_keys.get(&key) == Some(&id) {
                        self.server_keys.remove(&key);
                    }
                }
                if let Some(c) = self.clients.remove(&id) {
                    self.client_branches.remove(&c.branch);
                }
            }
            Timer::Inject(cid, g) => {
                if self.calls.get(&cid).is_some_and(|c| c.inject_gen == g) {
                    self.inject(now, cid);
                }
            }
            Timer::Periodic(cid, g) => {
                let every = self.cfg.announcement.periodic;
                let to = self.cfg.announcement.to;
                let Some(call) = self.calls.get(&cid) else {
                    return;
                };
                if call.periodic_gen != g || !call.recording {
                    return;
                }
                let receivers = call.announcement_receivers(to, None);
                if let Some(every) = every {
                    self.arm(now + every, Timer::Periodic(cid, g));
                }
                self.announce(now, cid, Kind::PeriodicBeep, &receivers);
            }
            Timer::Sweep => {
                self.sweep_armed = false;
                let idle = t.call_idle;
                let mut forget = Vec::new();
                let mut expire = Vec::new();
                for (id, c) in &self.calls {
                    match c.ended {
                        Some(at) if now >= at + CALL_LINGER => forget.push(*id),
                        None if now >= c.last_activity + idle => expire.push(*id),
                        _ => {}
                    }
                }
                for id in expire {
                    self.end_call(now, id, EndReason::Timeout);
                }
                for id in forget {
                    self.forget_call(id);
                }
                if !self.calls.is_empty() || !self.servers.is_empty() {
                    self.ensure_sweep(now);
                }
            }
        }
    }
}

/// Why an SDP body could not be put through the relay.
enum SdpFailure {
    /// It does not parse or lies.
    Bad(String),
    /// Every RTP port pair is taken.
    NoPorts,
}

fn is_sdp(msg: &Message) -> bool {
    !msg.body.is_empty() && msg.content_type().as_deref() == Some("application/sdp")
}

/// RTCP packet types 200-204 share a port with RTP under rtcp-mux (RFC 5761 §4).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && (200..=204).contains(&data[1])
}

/// CANCEL or non-2xx ACK for a forwarded INVITE (RFC 3261 §9.1, §17.1.1.3):
/// same Request-URI, only our Via, the INVITE's Route set.
fn hop_request(invite: &Message, method: &str, to: Option<String>) -> Message {
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

/// Where a response goes next: the Via's `received`/`rport` if present, else its sent-by.
fn via_target(via: &str) -> Option<Target> {
    let mut parts = via.split_whitespace();
    let proto = parts.next()?;
    let sent_by = parts.next()?.split(';').next()?;
    let transport = if proto.to_ascii_uppercase().ends_with("TCP") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let (host, port) = match sent_by.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (sent_by, 5060),
    };
    let host = message::param(via, "received").unwrap_or_else(|| host.to_owned());
    let port = message::param(via, "rport")
        .and_then(|p| p.parse().ok())
        .unwrap_or(port);
    Some(Target {
        transport,
        addr: SocketAddr::new(host.parse().ok()?, port),
    })
}
