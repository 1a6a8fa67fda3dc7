//! SDP (RFC 4566) as far as a media relay needs it: the connection address
//! and port of each media stream, its payload types and codecs, its direction
//! and RTCP port. Rewriting replaces addresses and ports and nothing else, so
//! every attribute the recorder does not understand reaches the far end as sent.

use std::net::{IpAddr, SocketAddr};

/// Why an SDP body cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not UTF-8 text.
    #[error("SDP is not text")]
    NotText,
    /// An `m=` line without a numeric port or format list.
    #[error("bad m= line {0}")]
    Media(usize),
    /// A `c=` line that is not `IN IP4|IP6 <address>`.
    #[error("bad c= line {0}")]
    Connection(usize),
    /// A media stream without any connection address.
    #[error("media stream {0} has no connection address")]
    NoConnection(usize),
    /// More media streams than the relay takes.
    #[error("more than {MAX_STREAMS} media streams")]
    TooManyStreams,
}

/// Most media streams one SDP may carry.
pub const MAX_STREAMS: usize = 8;

/// Media direction attribute of a stream (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Send and receive (default).
    #[default]
    SendRecv,
    /// The sender of this SDP only sends (puts the other party on hold).
    SendOnly,
    /// The sender of this SDP only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

/// A codec mapping from `a=rtpmap` or a static payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name, upper case (`PCMU`, `PCMA`, `TELEPHONE-EVENT`, ...).
    pub name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStream {
    /// `audio`, `video`, ...
    pub media: String,
    /// Where the sender of this SDP receives RTP; `None` when the port is 0
    /// (stream refused) or the address is unspecified (`0.0.0.0`, old-style hold).
    pub rtp: Option<SocketAddr>,
    /// Port from the `m=` line (0 means the stream is disabled).
    pub port: u16,
    /// The transport protocol (`RTP/AVP`, `RTP/SAVP`, `udptl`, ...).
    pub proto: String,
    /// Payload types in order of preference.
    pub formats: Vec<u8>,
    /// Known codecs of those payload types.
    pub codecs: Vec<Codec>,
    /// The direction attribute.
    pub direction: Direction,
    /// RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
    /// SDES keys (`a=crypto:` values, RFC 4568): what the sender of this
    /// SDP encrypts its media with, one line per offered suite (at most
    /// [`MAX_CRYPTO`]).
    pub crypto: Vec<String>,
    /// DTLS-SRTP: an `a=fingerprint` (here or at session level); keys are
    /// agreed end to end and never seen in signalling.
    pub dtls: bool,
    /// `a=label` (RFC 4574): how SIPREC metadata names this stream.
    pub label: Option<String>,
}

/// `a=crypto` lines kept per stream: offers list a few suites.
pub const MAX_CRYPTO: usize = 8;

impl MediaStream {
    /// The payload type carrying RFC 4733 telephone events, if negotiated
    /// (at 8000 Hz, or at the clock of a codec such as Opus's 48000 Hz).
    pub fn telephone_event(&self) -> Option<u8> {
        self.codecs
            .iter()
            .find(|c| c.name == "TELEPHONE-EVENT")
            .map(|c| c.payload_type)
    }

    /// Whether `pt` carries telephone events in this stream.
    pub fn is_telephone_event(&self, pt: u8) -> bool {
        self.codec(pt).is_some_and(|c| c.name == "TELEPHONE-EVENT")
    }

    /// Whether the stream carries RTP (`RTP/AVP`, `RTP/SAVPF`,
    /// `UDP/TLS/RTP/SAVP`, ...) rather than, say, T.38 over UDPTL.
    pub fn is_rtp(&self) -> bool {
        // Asked per relayed packet: no allocation.
        self.proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
    }

    /// Whether the media is SRTP (`RTP/SAVP`, `RTP/SAVPF`,
    /// `UDP/TLS/RTP/SAVP(F)`): its payloads are ciphertext.
    pub fn is_secure(&self) -> bool {
        self.proto
            .split('/')
            .any(|p| p.eq_ignore_ascii_case("SAVP") || p.eq_ignore_ascii_case("SAVPF"))
    }

    /// The codec of a payload type.
    pub fn codec(&self, pt: u8) -> Option<&Codec> {
        self.codecs.iter().find(|c| c.payload_type == pt)
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    lines: Vec<String>,
    /// The media streams in order.
    pub streams: Vec<MediaStream>,
}

fn static_codec(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        8 => Some(("PCMA", 8000)),
        9 => Some(("G722", 8000)),
        13 => Some(("CN", 8000)),
        18 => Some(("G729", 8000)),
        _ => None,
    }
}

fn parse_connection(value: &str, line: usize) -> Result<Option<IpAddr>, SdpError> {
    let mut parts = value.split_whitespace();
    let (Some("IN"), Some(kind), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SdpError::Connection(line));
    };
    // Multicast TTL / count suffixes (`/127`) are not relayed; strip them.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| SdpError::Connection(line))?;
    match (kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => {}
        _ => return Err(SdpError::Connection(line)),
    }
    Ok((!ip.is_unspecified()).then_some(ip))
}

impl Sdp {
    /// Parses an SDP body.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        let mut session_conn: Option<Option<IpAddr>> = None;
        let mut session_dtls = false;
        let mut streams: Vec<MediaStream> = Vec::new();
        let mut stream_conn: Vec<Option<Option<IpAddr>>> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            if let Some(v) = line.strip_prefix("c=") {
                let conn = parse_connection(v, n)?;
                match stream_conn.last_mut() {
                    Some(c) => *c = Some(conn),
                    None => session_conn = Some(conn),
                }
            } else if let Some(v) = line.strip_prefix("m=") {
                if streams.len() == MAX_STREAMS {
                    return Err(SdpError::TooManyStreams);
                }
                let mut parts = v.split_whitespace();
                let media = parts.next().ok_or(SdpError::Media(n))?.to_owned();
                let port_field = parts.next().ok_or(SdpError::Media(n))?;
                let port: u16 = port_field
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| SdpError::Media(n))?;
                let proto = parts.next().ok_or(SdpError::Media(n))?.to_owned();
                let formats: Vec<u8> = parts.filter_map(|f| f.parse().ok()).collect();
                let codecs = formats
                    .iter()
                    .filter_map(|&pt| {
                        static_codec(pt).map(|(name, rate)| Codec {
                            payload_type: pt,
                            name: name.to_owned(),
                            clock_rate: rate,
                        })
                    })
                    .collect();
                streams.push(MediaStream {
                    media,
                    rtp: None,
                    port,
                    proto,
                    formats,
                    codecs,
                    direction: Direction::SendRecv,
                    rtcp_mux: false,
                    crypto: Vec::new(),
                    dtls: session_dtls,
                    label: None,
                });
                stream_conn.push(None);
            } else if let Some(v) = line.strip_prefix("a=") {
                let session_level = streams.is_empty();
                let (name, value) = v.split_once(':').unwrap_or((v, ""));
                let direction = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                if name == "fingerprint" {
                    match streams.last_mut() {
                        Some(s) if !session_level => s.dtls = true,
                        _ => session_dtls = true,
                    }
                    continue;
                }
                if let Some(d) = direction {
                    if session_level {
                        // Session-level direction applies to every stream that sets none.
                        continue;
                    }
                    if let Some(s) = streams.last_mut() {
                        s.direction = d;
                    }
                } else if let Some(s) = streams.last_mut() {
                    match name {
                        "rtcp-mux" => s.rtcp_mux = true,
                        "label" if value.len() <= 128 => s.label = Some(value.trim().to_owned()),
                        "crypto" if s.crypto.len() < MAX_CRYPTO && value.len() <= 512 => {
                            s.crypto.push(value.trim().to_owned());
                        }
                        "rtpmap" => {
                            if let Some(codec) = parse_rtpmap(value) {
                                s.codecs.retain(|c| c.payload_type != codec.payload_type);
                                s.codecs.push(codec);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Session-level direction, applied where the stream has none of its own.
        let session_direction = lines
            .iter()
            .take_while(|l| !l.starts_with("m="))
            .find_map(|l| match l.as_str() {
                "a=sendonly" => Some(Direction::SendOnly),
                "a=recvonly" => Some(Direction::RecvOnly),
                "a=inactive" => Some(Direction::Inactive),
                _ => None,
            });
        for (i, s) in streams.iter_mut().enumerate() {
            let conn = stream_conn[i]
                .or(session_conn)
                .ok_or(SdpError::NoConnection(i))?;
            s.rtp = match (conn, s.port) {
                (Some(ip), p) if p != 0 => Some(SocketAddr::new(ip, p)),
                _ => None,
            };
            if let Some(d) = session_direction
                && s.direction == Direction::SendRecv
                && !has_stream_direction(&lines, i)
            {
                s.direction = d;
            }
        }
        Ok(Sdp { lines, streams })
    }

    /// The body with every stream's address set to `ip` and its port to the
    /// given one (RTCP at port + 1 unless muxed). Streams with port 0 stay
    /// disabled and unspecified addresses (hold) stay unspecified.
    pub fn rewrite(&self, ip: IpAddr, ports: &[u16]) -> Vec<u8> {
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut out = String::new();
        let mut stream: Option<usize> = None;
        for line in &self.lines {
            let rewritten = if let Some(v) = line.strip_prefix("c=") {
                let unspecified = matches!(parse_connection(v, 0), Ok(None));
                if unspecified {
                    line.clone()
                } else {
                    format!("c=IN {family} {ip}")
                }
            } else if let Some(v) = line.strip_prefix("m=") {
                let i = stream.map_or(0, |s| s + 1);
                stream = Some(i);
                // Split as the parser does (any whitespace); the fields go
                // back out separated by single spaces.
                let mut parts: Vec<&str> = v.split_whitespace().collect();
                let enabled = self.streams.get(i).is_some_and(|s| s.port != 0);
                match (enabled, ports.get(i), parts.get(1)) {
                    (true, Some(&p), Some(field)) => {
                        let count = field
                            .split_once('/')
                            .map(|(_, c)| format!("/{c}"))
                            .unwrap_or_default();
                        let field = format!("{p}{count}");
                        parts[1] = &field;
                        format!("m={}", parts.join(" "))
                    }
                    _ => line.clone(),
                }
            } else if let Some(v) = line.strip_prefix("a=rtcp:") {
                let s = stream.and_then(|i| self.streams.get(i));
                match (s, stream.and_then(|i| ports.get(i))) {
                    (Some(s), Some(&p)) if s.port != 0 => {
                        let rtcp = if s.rtcp_mux { p } else { p.saturating_add(1) };
                        // `a=rtcp:port [IN IP4 addr]` (RFC 3605): keep the form, change the values.
                        if v.split_whitespace().count() > 1 {
                            format!("a=rtcp:{rtcp} IN {family} {ip}")
                        } else {
                            format!("a=rtcp:{rtcp}")
                        }
                    }
                    _ => line.clone(),
                }
            } else if is_ice_line(line) {
                // ICE would have the parties reach each other at the
                // addresses their candidates name, around the relay: every
                // ICE attribute goes, and the parties use c= and m= (ours).
                continue;
            } else if let Some(v) = line.strip_prefix("o=") {
                // The origin's address names the relay too, so nothing of the
                // sender's network leaks through it.
                let mut parts: Vec<String> = v.split(' ').map(str::to_owned).collect();
                if parts.len() == 6 {
                    parts[4] = family.to_owned();
                    parts[5] = ip.to_string();
                }
                format!("o={}", parts.join(" "))
            } else {
                line.clone()
            };
            out.push_str(&rewritten);
            out.push_str("\r\n");
        }
        out.into_bytes()
    }
}

/// ICE attributes (RFC 8839): candidates and the credentials and options
/// that ask for connectivity checks.
fn is_ice_line(line: &str) -> bool {
    [
        "a=candidate:",
        "a=remote-candidates:",
        "a=end-of-candidates",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=ice-options:",
        "a=ice-lite",
        "a=ice-mismatch",
        "a=ice-pacing:",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

fn has_stream_direction(lines: &[String], stream: usize) -> bool {
    let mut current: Option<usize> = None;
    for l in lines {
        if l.starts_with("m=") {
            current = Some(current.map_or(0, |c| c + 1));
        } else if current == Some(stream)
            && matches!(
                l.as_str(),
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            )
        {
            return true;
        }
    }
    false
}

fn parse_rtpmap(value: &str) -> Option<Codec> {
    let (pt, rest) = value.split_once(' ')?;
    let pt: u8 = pt.trim().parse().ok()?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_ascii_uppercase();
    let clock_rate = parts.next()?.parse().ok()?;
    Some(Codec {
        payload_type: pt,
        name,
        clock_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=x-unknown:keep me\r\na=ptime:20\r\n";

    #[test]
    fn parses_streams_codecs_and_events() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.streams.len(), 1);
        let s = &sdp.streams[0];
        assert_eq!(s.rtp, Some("10.0.0.1:49170".parse().unwrap()));
        assert_eq!(s.formats, [0, 8, 101]);
        assert_eq!(s.telephone_event(), Some(101));
        assert_eq!(s.codec(8).unwrap().name, "PCMA");
        assert_eq!(s.direction, Direction::SendRecv);
    }

    #[test]
    fn rewrite_changes_addresses_and_ports_only() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let out = String::from_utf8(sdp.rewrite("192.0.2.5".parse().unwrap(), &[30000])).unwrap();
        assert_eq!(
            out,
            "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=x-unknown:keep me\r\na=ptime:20\r\n"
        );
    }

    #[test]
    fn ice_attributes_go_so_no_party_bypasses_the_relay() {
        let ice = format!(
            "{OFFER}a=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\na=ice-options:trickle\r\n\
             a=candidate:1 1 UDP 2130706431 10.0.0.1 49170 typ host\r\n\
             a=candidate:2 1 UDP 1694498815 203.0.113.7 50000 typ srflx raddr 10.0.0.1 rport 49170\r\n\
             a=end-of-candidates\r\n"
        );
        let sdp = Sdp::parse(ice.as_bytes()).unwrap();
        let out = String::from_utf8(sdp.rewrite("192.0.2.5".parse().unwrap(), &[30000])).unwrap();
        assert!(!out.contains("candidate") && !out.contains("ice-"), "{out}");
        assert!(
            !out.contains("10.0.0.1") && !out.contains("203.0.113.7"),
            "{out}"
        );
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"), "{out}");
    }

    #[test]
    fn t38_is_not_rtp() {
        let fax = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=image 4002 udptl t38\r\na=T38FaxVersion:0\r\n";
        let sdp = Sdp::parse(fax.as_bytes()).unwrap();
        assert_eq!(sdp.streams[0].media, "image");
        assert!(!sdp.streams[0].is_rtp());
        assert!(Sdp::parse(OFFER.as_bytes()).unwrap().streams[0].is_rtp());
    }

    #[test]
    fn hold_forms() {
        let held = OFFER.replace("a=ptime:20", "a=sendonly");
        assert_eq!(
            Sdp::parse(held.as_bytes()).unwrap().streams[0].direction,
            Direction::SendOnly
        );
        let old_style = OFFER.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0");
        let sdp = Sdp::parse(old_style.as_bytes()).unwrap();
        assert_eq!(sdp.streams[0].rtp, None);
        let out = String::from_utf8(sdp.rewrite("192.0.2.5".parse().unwrap(), &[30000])).unwrap();
        assert!(out.contains("c=IN IP4 0.0.0.0\r\n"), "{out}");
        let session_inactive = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert_eq!(
            Sdp::parse(session_inactive.as_bytes()).unwrap().streams[0].direction,
            Direction::Inactive
        );
    }

    #[test]
    fn lies_are_refused() {
        assert_eq!(
            Sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::Media(2))
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nc=IN IP4 not-an-ip\r\n"),
            Err(SdpError::Connection(2))
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection(0))
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nc=IN IP6 10.0.0.1\r\n"),
            Err(SdpError::Connection(2))
        );
    }
}
