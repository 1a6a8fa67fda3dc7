//! Media streams and their ports: every `m=` line of a call's SDP gets a
//! port pair facing each side, the SDP is rewritten to point at them, and
//! packets arriving on them are relayed to the other side (symmetric RTP:
//! only from the negotiated address, latched on its first packet), with
//! DTMF detected and recorded audio tapped on the way.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::announce::{self, Onward, Verdict};
use crate::dtmf::{self, DtmfMethod, EventDeduper, ToneDetector};
use crate::event::{Event, MediaFrame, MediaNote, Side};
use crate::g711::Law;
use crate::sdp::{self, Sdp};

use super::dialog::LegUpdate;
use crate::sip::message::Message;
use crate::stats::Stats;

use super::{Output, Recorder, Relay};
use crate::config::Target;

/// One remote endpoint of a media stream.
#[derive(Default)]
pub(super) struct Leg {
    pub(super) negotiated: Option<SocketAddr>,
    pub(super) latched: Option<SocketAddr>,
    pub(super) latched_rtcp: Option<SocketAddr>,
    pub(super) stream: Option<sdp::MediaStream>,
    pub(super) dedupe: EventDeduper,
    pub(super) tones: Option<Box<ToneDetector>>,
    /// This leg's media as the other leg receives it (announcements go in here).
    pub(super) onward: Onward,
    /// Packets this leg sent in the current second, and when it began.
    rate: (Option<Instant>, u32),
    /// SRTP with an SDES key: what decrypts a copy of this leg's packets
    /// for the recording (the relayed packets go on as they came).
    pub(super) srtp: Option<Srtp>,
    /// Its part in the kernel fast path.
    pub(super) kernel: super::kernel::LegKernel,
}

/// One leg's SRTP receiver and how it fares.
pub(super) struct Srtp {
    /// The `a=crypto` value it was made from (a re-offer with the same key
    /// keeps the receiver, and so its rollover counter).
    key: String,
    receiver: Box<crate::srtp::SrtpReceiver>,
    /// Packets that did not decrypt since the last that did.
    failing: u32,
}

impl Srtp {
    /// A receiver for the key an `a=crypto:` value gives.
    pub(super) fn from_line(line: &str) -> Option<Srtp> {
        let key = crate::srtp::parse_crypto(line).ok()?;
        Some(Srtp {
            receiver: Box::new(crate::srtp::SrtpReceiver::new(&key)),
            key: line.to_owned(),
            failing: 0,
        })
    }

    /// Whether it was made from this `a=crypto:` value.
    pub(super) fn is_for(&self, line: &str) -> bool {
        self.key == line
    }

    /// A packet decrypted, or why not; `true` beside the error when it is
    /// the [`SRTP_FAILURES_NOTED`]th failure in a row (time to mark the
    /// recording).
    pub(super) fn read(
        &mut self,
        packet: &[u8],
    ) -> Result<Vec<u8>, (crate::srtp::SrtpError, bool)> {
        match self.receiver.unprotect_rtp(packet) {
            Ok(p) => {
                self.failing = 0;
                Ok(p)
            }
            Err(e) => {
                self.failing = self.failing.saturating_add(1);
                Err((e, self.failing == SRTP_FAILURES_NOTED))
            }
        }
    }
}

/// Packets in a row that fail to decrypt before the recording is marked:
/// a wrong key, or keys that changed outside the signalling we saw.
const SRTP_FAILURES_NOTED: u32 = 50;

/// Whether a stream's media is SRTP: a secure profile (`RTP/SAVP`, ...), or
/// best-effort SDES (`RTP/AVP` with `a=crypto` on both sides, as PBXes offer
/// optional SRTP: both sides keyed, so both encrypt).
pub(super) fn encrypted(legs: &[Leg; 2]) -> bool {
    let streams = [legs[0].stream.as_ref(), legs[1].stream.as_ref()];
    streams.iter().flatten().any(|m| m.is_secure())
        || streams
            .iter()
            .all(|m| m.is_some_and(|m| !m.crypto.is_empty()))
}

/// The SDES key a leg's packets are encrypted with: of the `a=crypto`
/// lines its SDP lists, the one whose tag the other side's single line
/// accepted (RFC 4568 §7.1), else its first.
fn leg_key<'a>(leg: &'a sdp::MediaStream, other: Option<&sdp::MediaStream>) -> Option<&'a str> {
    let tag = |l: &str| l.split_whitespace().next().map(str::to_owned);
    let accepted = other
        .filter(|o| o.crypto.len() == 1)
        .and_then(|o| tag(&o.crypto[0]));
    leg.crypto
        .iter()
        .find(|l| accepted.is_some() && tag(l) == accepted)
        .or(leg.crypto.first())
        .map(String::as_str)
}

/// Most audio packets one leg may send per second: 5 ms packets are 200.
/// A leg far above its codec's rate is clipped (counted), so one party's
/// flood costs its own call, not every recording's.
const MAX_AUDIO_PPS: u32 = 250;

impl Leg {
    /// Counts a packet; false when the leg is over its rate this second.
    pub(super) fn within_rate(&mut self, now: Instant) -> bool {
        let (start, n) = &mut self.rate;
        if start
            .is_none_or(|s| now.saturating_duration_since(s) >= std::time::Duration::from_secs(1))
        {
            *start = Some(now);
            *n = 0;
        }
        *n = n.saturating_add(1);
        *n <= MAX_AUDIO_PPS
    }
}

pub(super) struct Stream {
    /// Our RTP port facing each side (RTCP is port + 1); `[0, 0]` for a
    /// stream refused (port 0 in the SDP, or no ports left for it).
    pub(super) ports: [u16; 2],
    pub(super) legs: [Leg; 2],
}

impl Stream {
    fn refused() -> Self {
        Self {
            ports: [0, 0],
            legs: Default::default(),
        }
    }

    /// Whether a leg's stream is audio (only audio is recorded).
    fn is_audio(&self, side: Side) -> bool {
        self.legs[side.index()]
            .stream
            .as_ref()
            .is_none_or(|s| s.media == "audio")
    }

    /// Whether the stream carries RTP (not T.38's UDPTL, say): what is not
    /// RTP is relayed as it comes, never parsed or recorded.
    pub(super) fn is_rtp(&self) -> bool {
        self.legs
            .iter()
            .filter_map(|l| l.stream.as_ref())
            .all(|s| s.is_rtp())
    }

    /// Whether either side prefers a wideband codec: the first audio format
    /// of its SDP (telephone events and comfort noise aside).
    pub(super) fn wideband(&self) -> bool {
        self.legs.iter().filter_map(|l| l.stream.as_ref()).any(|s| {
            s.formats
                .iter()
                .filter_map(|&pt| s.codec(pt))
                .find(|c| c.name != "TELEPHONE-EVENT" && c.name != "CN")
                .and_then(|c| crate::codec::Codec::of(&c.name))
                .is_some_and(crate::codec::Codec::wideband)
        })
    }

    /// The codec of a payload type in packets sent to `receiver`: as the
    /// receiver's SDP maps it, else as the other side's does.
    pub(super) fn codec_toward(&self, receiver: Side, pt: u8) -> Option<&sdp::Codec> {
        [receiver, receiver.other()]
            .iter()
            .find_map(|s| self.legs[s.index()].stream.as_ref()?.codec(pt))
    }
}

/// Port pairs from the configured range, handed out in FIFO order so a
/// released port is reused as late as possible.
pub(super) struct PortPool {
    pub(super) base: u16,
    pub(super) free: VecDeque<u16>,
    /// Owner of each port of the range: (call, stream, side facing).
    pub(super) owners: Vec<Option<(u64, u8, Side)>>,
}

impl PortPool {
    pub(super) fn new(ports: &[u16]) -> Self {
        let base = ports.iter().copied().min().unwrap_or(0);
        let top = ports.iter().copied().max().map_or(0, |p| p as usize + 2);
        Self {
            base,
            free: ports.iter().copied().collect(),
            owners: vec![None; top.saturating_sub(base as usize)],
        }
    }

    pub(super) fn take(&mut self, owner: (u64, u8, Side)) -> Option<u16> {
        let p = self.free.pop_front()?;
        let i = (p - self.base) as usize;
        self.owners[i] = Some(owner);
        self.owners[i + 1] = Some(owner);
        Some(p)
    }

    /// Takes back a pair handed out by [`take`](Self::take); anything else
    /// (port 0 of a refused stream, a pair already given back) is ignored,
    /// so no port is ever free twice.
    pub(super) fn give(&mut self, p: u16) {
        let Some(i) = p.checked_sub(self.base).map(usize::from) else {
            return;
        };
        let taken = matches!(self.owners.get(i), Some(Some(_)));
        if !taken || i + 1 >= self.owners.len() {
            return;
        }
        self.owners[i] = None;
        self.owners[i + 1] = None;
        self.free.push_back(p);
    }

    /// The owner of a local port and whether it is the RTCP port of its pair.
    pub(super) fn owner(&self, port: u16) -> Option<((u64, u8, Side), bool)> {
        let i = port.checked_sub(self.base)? as usize;
        let owner = (*self.owners.get(i)?)?;
        Some((owner, (port - self.base) % 2 == 1))
    }
}

impl Recorder {
    /// Parses an SDP body and refuses what must never reach the relay:
    /// link-local (cloud metadata) addresses always; loopback and the
    /// recorder's own address unless the config allows local media.
    pub(super) fn check_sdp(&self, body: &[u8]) -> Result<Sdp, String> {
        let sdp = Sdp::parse(body).map_err(|e| e.to_string())?;
        let allow = self.cfg.allow_local_media;
        if self.cfg.refuse_unreadable_media
            && sdp.streams.iter().any(|s| {
                s.media == "audio"
                    && s.port != 0
                    && s.is_secure()
                    && !s
                        .crypto
                        .iter()
                        .any(|c| crate::srtp::parse_crypto(c).is_ok())
            })
        {
            return Err(
                "audio encrypted end to end (DTLS-SRTP, or SRTP without a supported a=crypto key) cannot be recorded and this policy refuses it"
                    .to_owned(),
            );
        }
        if let Some(why) = sdp.streams.iter().filter_map(|s| s.rtp).find_map(|a| {
            let ip = a.ip();
            if is_link_local(ip) {
                Some("link-local")
            } else if !allow && self.cfg.is_own(ip) {
                Some("of the recorder")
            } else if !allow && ip.is_loopback() {
                Some("loopback")
            } else {
                None
            }
        }) {
            return Err(format!("media address {why} not allowed"));
        }
        Ok(sdp)
    }

    /// Puts SDP from `side` through the relay and returns the body to
    /// forward. The caller's SDP always moves the caller's media leg; the
    /// callee side's moves the callee's leg only when it comes from the
    /// dialog that carries the media (`tag`: the dialog it belongs to).
    /// The body names the address the peer it goes `toward` reaches us on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sdp_through(
        &mut self,
        now: Instant,
        cid: u64,
        side: Side,
        tag: Option<&str>,
        toward: Target,
        body: &[u8],
    ) -> Result<Vec<u8>, String> {
        let sdp = self.check_sdp(body)?;
        let Some(call) = self.calls.get_mut(&cid) else {
            return Err("no call".into());
        };
        let follow = match (side, tag) {
            (Side::Callee, Some(tag)) if call.dialogs.knows(tag) => {
                call.dialogs.on_callee_sdp(tag, sdp.clone(), call.answered) == LegUpdate::Follow
            }
            _ => true,
        };
        // Ports first: the leg follows streams the call has ports for.
        let ports = self.stream_ports(cid, side, &sdp);
        if follow {
            self.follow_sdp(cid, side, &sdp);
        }
        let fax = sdp
            .streams
            .iter()
            .any(|s| s.media == "image" && s.port != 0);
        if fax {
            self.note_fax(now, cid);
        }
        Ok(sdp.rewrite(self.cfg.facing(toward.addr.ip()), &ports))
    }

    /// The port facing the receiver of this SDP for each of its streams,
    /// taking a pair per side for a stream the call has not had. A stream
    /// no pair is left for is refused (port 0) rather than the whole call.
    fn stream_ports(&mut self, cid: u64, sender: Side, sdp: &Sdp) -> Vec<u16> {
        let Some(call) = self.calls.get_mut(&cid) else {
            return Vec::new();
        };
        let mut ports = Vec::with_capacity(sdp.streams.len());
        for (i, s) in sdp.streams.iter().enumerate() {
            if i >= call.streams.len() {
                while call.streams.len() < i {
                    // A refused stream before this one holds no ports.
                    call.streams.push(Stream::refused());
                }
                if s.port == 0 || (self.cfg.refuse_video && s.media == "video") {
                    call.streams.push(Stream::refused());
                } else {
                    let a = self.ports.take((cid, i as u8, Side::Caller));
                    let b = self.ports.take((cid, i as u8, Side::Callee));
                    match (a, b) {
                        (Some(a), Some(b)) => call.streams.push(Stream {
                            ports: [a, b],
                            legs: Default::default(),
                        }),
                        (a, b) => {
                            for p in [a, b].into_iter().flatten() {
                                self.ports.give(p);
                            }
                            Stats::bump(&mut self.stats.rtp_dropped, "stream_without_ports");
                            call.streams.push(Stream::refused());
                        }
                    }
                }
            }
            // The receiver of this SDP sends to the port facing it.
            ports.push(call.streams[i].ports[sender.other().index()]);
        }
        ports
    }

    /// Points `side`'s media leg at what its SDP negotiated (its address,
    /// codecs, direction), and starts or stops in-band DTMF detection.
    pub(super) fn follow_sdp(&mut self, cid: u64, side: Side, sdp: &Sdp) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let listens = [
            call.listens_for_shortcode(Side::Caller),
            call.listens_for_shortcode(Side::Callee),
        ];
        for (i, s) in sdp.streams.iter().enumerate() {
            let Some(stream) = call.streams.get_mut(i) else {
                continue;
            };
            let leg = &mut stream.legs[side.index()];
            if leg.negotiated != s.rtp {
                leg.latched = None;
                leg.latched_rtcp = None;
                leg.kernel.userspace = 0;
            }
            leg.negotiated = s.rtp;
            leg.stream = Some(s.clone());
            // Both legs' keys: an answer settles which of the offered
            // lines the offerer uses.
            let secure = encrypted(&stream.legs);
            for side in [Side::Caller, Side::Callee] {
                let other = stream.legs[side.other().index()].stream.clone();
                let leg = &mut stream.legs[side.index()];
                let key = leg
                    .stream
                    .as_ref()
                    .filter(|_| secure)
                    .and_then(|m| leg_key(m, other.as_ref()))
                    .map(str::to_owned);
                match key {
                    Some(k) if leg.srtp.as_ref().is_some_and(|s| s.key == k) => {}
                    Some(k) => {
                        leg.srtp = crate::srtp::parse_crypto(&k).ok().map(|key| Srtp {
                            receiver: Box::new(crate::srtp::SrtpReceiver::new(&key)),
                            key: k,
                            failing: 0,
                        });
                    }
                    None => leg.srtp = None,
                }
            }
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
        if self.kernel_relay {
            self.kernel_sync(cid, super::Handback::Changed);
        }
    }

    /// The first stream's port pairs, taken when the call starts (its
    /// INVITE may carry no offer: the offer then comes in the answer).
    /// False when fewer than two pairs are free.
    pub(super) fn reserve_first_stream(&mut self, cid: u64) -> bool {
        if self.ports.free.len() < 2 {
            return false;
        }
        let Some(call) = self.calls.get_mut(&cid) else {
            return false;
        };
        let (Some(a), Some(b)) = (
            self.ports.take((cid, 0, Side::Caller)),
            self.ports.take((cid, 0, Side::Callee)),
        ) else {
            return false;
        };
        call.streams.push(Stream {
            ports: [a, b],
            legs: Default::default(),
        });
        true
    }

    /// One UDP packet on a local RTP/RTCP port. Returns where to relay it,
    /// or `None` when it is dropped (and counted).
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        local_port: u16,
        source: SocketAddr,
        data: &mut [u8],
    ) -> Option<Relay> {
        let relay = self.rtp_in(now, local_port, source, data, false);
        if self.kernel_relay && relay.is_some() {
            // A leg relayed here may have become one the kernel can take.
            if let Some(((cid, _, _), false)) = self.ports.owner(local_port) {
                self.kernel_sync(cid, super::Handback::Changed);
            }
        }
        relay
    }

    /// A packet relayed here, or (`copy`) a copy of one the kernel relayed:
    /// read the same way, and for a copy nothing is relayed or rate-limited
    /// (the kernel did both).
    pub(super) fn rtp_in(
        &mut self,
        now: Instant,
        local_port: u16,
        source: SocketAddr,
        data: &mut [u8],
        copy: bool,
    ) -> Option<Relay> {
        let Some(((cid, stream_idx, facing), rtcp_port)) = self.ports.owner(local_port) else {
            Stats::bump(&mut self.stats.rtp_dropped, "unknown_port");
            return None;
        };
        let Some(call) = self.calls.get_mut(&cid) else {
            Stats::bump(&mut self.stats.rtp_dropped, "unknown_port");
            return None;
        };
        if call.srs.is_some() {
            // A SIPREC session's forked media: received, never relayed.
            return self.srs_media(now, cid, stream_idx as usize, rtcp_port, source, data);
        }
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
            (None, Some(n)) if n.ip() == source.ip() => {
                *latched = Some(source);
                leg.kernel.userspace = 0;
            }
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
        } else if !stream.is_rtp() {
            // T.38's UDPTL (a fax re-INVITE), or another transport the
            // relay does not parse: relayed as it comes, never recorded.
            call.last_activity = now;
        } else {
            if !copy {
                let leg = &mut stream.legs[facing.index()];
                leg.kernel.userspace = leg.kernel.userspace.saturating_add(1);
            }
            if !copy && stream.is_audio(facing) && !stream.legs[facing.index()].within_rate(now) {
                Stats::bump(&mut self.stats.rtp_dropped, "rate_limited");
                return None;
            }
            let secure = encrypted(&stream.legs);
            // DTLS-SRTP's handshake and ICE's STUN share the port with
            // SRTP (RFC 7983: first byte 0-3 STUN, 20-63 DTLS): relayed
            // untouched, or the call would never get its keys.
            if secure && data.first().is_some_and(|b| *b < 64) {
                call.last_activity = now;
                Stats::bump(&mut self.stats.rtp_packets, direction(facing));
                return Some(Relay {
                    from_port,
                    to: dest,
                });
            }
            // SRTP: a decrypted copy is what the recorder reads (digits,
            // audio); the packet itself is relayed as it came. Without a
            // usable key nothing of it is read, and the recording says so.
            let plain = if secure {
                let leg = &mut stream.legs[facing.index()];
                let (plain, note) = match leg.srtp.as_mut() {
                    Some(srtp) => match srtp.receiver.unprotect_rtp(data) {
                        Ok(p) => {
                            srtp.failing = 0;
                            (Some(p), None)
                        }
                        Err(e) => {
                            Stats::bump(&mut self.stats.srtp_failed, e.reason());
                            srtp.failing = srtp.failing.saturating_add(1);
                            let noted = srtp.failing == SRTP_FAILURES_NOTED;
                            (None, noted.then_some(MediaNote::SrtpUndecryptable))
                        }
                    },
                    None if leg.stream.as_ref().is_some_and(|m| m.dtls) => {
                        (None, Some(MediaNote::EncryptedDtls))
                    }
                    None => (None, Some(MediaNote::SrtpNoKey)),
                };
                if plain.is_none() {
                    // Encrypted and not readable here: relayed untouched.
                    call.last_activity = now;
                    Stats::bump(&mut self.stats.rtp_packets, direction(facing));
                    if let Some(n) = note {
                        self.note_media(now, cid, n);
                    }
                    return Some(Relay {
                        from_port,
                        to: dest,
                    });
                }
                plain
            } else {
                None
            };
            let readable: &[u8] = plain.as_deref().unwrap_or(data);
            let Ok(rtp) = rtp_rs::RtpReader::new(readable) else {
                Stats::bump(&mut self.stats.rtp_dropped, "malformed");
                return None;
            };
            call.last_activity = now;
            let pt = rtp.payload_type();
            let leg = &stream.legs[facing.index()];
            let event = [&stream.legs[facing.other().index()], leg]
                .iter()
                .any(|l| l.stream.as_ref().is_some_and(|s| s.is_telephone_event(pt)));
            let (codec, clock_rate) = stream
                .codec_toward(facing.other(), pt)
                .map_or((None, 0), |c| (Some(c.name.clone()), c.clock_rate));
            let mut digit = None;
            let audio = !event && codec.as_deref() != Some("CN") && stream.is_audio(facing);
            if event {
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
            // shifts its numbering to continue after one (never in SRTP:
            // none is started there).
            let verdict = if secure {
                Verdict::Forward
            } else if copy {
                // Relayed already, with the numbering the kernel was given.
                stream.legs[facing.index()].onward.relayed(now, data, audio);
                Verdict::Forward
            } else {
                stream.legs[facing.index()]
                    .onward
                    .original(now, data, audio)
            };
            let held = verdict != Verdict::Forward;
            if verdict == Verdict::HoldAndStart {
                let timer = call.inject_timer();
                self.timers.push(Reverse((now, timer)));
            }
            if !held && call.recording && audio {
                // The packet as it goes on (numbering shifted after an
                // announcement), or its decrypted copy.
                let read: &[u8] = plain.as_deref().unwrap_or(data);
                let frame = MediaFrame {
                    call: call.r.clone(),
                    at: now,
                    side: facing,
                    stream: stream_idx,
                    ssrc: u32::from_be_bytes([read[8], read[9], read[10], read[11]]),
                    seq: u16::from_be_bytes([read[2], read[3]]),
                    timestamp: u32::from_be_bytes([read[4], read[5], read[6], read[7]]),
                    payload_type: pt,
                    codec,
                    clock_rate,
                    payload: read[payload].to_vec(),
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
        Stats::bump(&mut self.stats.rtp_packets, direction(facing));
        if copy {
            return None;
        }
        Some(Relay {
            from_port,
            to: dest,
        })
    }
}

/// The `rtp_packets` label of media from `facing`.
pub(super) fn direction(facing: Side) -> &'static str {
    match facing {
        Side::Caller => "caller_to_callee",
        Side::Callee => "callee_to_caller",
    }
}

/// Link-local addresses (cloud metadata services among them): never a
/// phone's media address, always a way to make the relay send somewhere it
/// should not.
pub(super) fn is_link_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
                // AWS's IPv6 metadata address.
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

pub(super) fn is_sdp(msg: &Message) -> bool {
    !msg.body.is_empty() && msg.content_type().as_deref() == Some("application/sdp")
}

/// RTCP packet types 200-204 share a port with RTP under rtcp-mux (RFC 5761 §4).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && (200..=204).contains(&data[1])
}
