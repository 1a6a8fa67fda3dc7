//! SIP messages as the proxy needs them: the start line kept as received (so
//! methods and reason phrases it does not know pass through unchanged),
//! headers as `rsip` headers in their original order, and the body.
//!
//! Parsing never panics and bounds everything it accepts; compact header
//! names are expanded and comma-separated Via/Route/Record-Route values are
//! split into one header each (RFC 3261 §7.3.1 makes both forms equivalent).

use rsip::Header;
use rsip::headers::{RecordRoute, UntypedHeader, Via};

/// Largest SIP message accepted, over UDP or TCP.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most headers a message may carry.
pub const MAX_HEADERS: usize = 256;

/// Why bytes are not a SIP message the proxy can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// No blank line ends the headers.
    #[error("message has no end of headers")]
    Truncated,
    /// The first line is neither a request nor a status line.
    #[error("bad start line")]
    StartLine,
    /// A header line that does not parse.
    #[error("bad header line {0}")]
    Header(usize),
    /// More than [`MAX_HEADERS`] headers.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// Content-Length is not a number or exceeds the bytes received.
    #[error("bad Content-Length")]
    ContentLength,
    /// A header every request and response needs is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A request of a SIP version other than 2.0.
    #[error("SIP version {0} is not supported")]
    Version(String),
    /// The Request-URI does not parse.
    #[error("bad Request-URI")]
    RequestUri,
}

/// The first line of a SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`
    Request {
        /// The method token, as received (`INVITE`, `PUBLISH`, `FOO`, ...).
        method: String,
        /// The Request-URI as received; forwarded byte for byte.
        uri: String,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// The status code.
        code: u16,
        /// The reason phrase as received.
        reason: String,
    },
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in order, one value each for Via, Route and Record-Route.
    pub headers: Vec<Header>,
    /// The body (SDP, DTMF INFO, ...), exactly Content-Length bytes.
    pub body: Vec<u8>,
}

/// Finds the end of one message at the start of a TCP stream buffer: `Ok(Some(len))`
/// when a whole message is there, `Ok(None)` when more bytes are needed.
pub fn frame_stream(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    Ok(match frame_stream_from(buf, 0)? {
        Framed::Message(len) => Some(len),
        Framed::NeedMore { .. } => None,
    })
}

/// What [`frame_stream_from`] found at the start of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// A whole message of this many bytes.
    Message(usize),
    /// Not yet: call again with more bytes and `resume`, so nothing is
    /// searched twice (framing stays linear in the bytes read, however
    /// slowly they come).
    NeedMore {
        /// Where the search for the end of the headers picks up.
        resume: usize,
    },
}

/// [`frame_stream`], resuming a search that an earlier call left at `from`.
pub fn frame_stream_from(buf: &[u8], from: usize) -> Result<Framed, ParseError> {
    // RFC 3261 §7.5: CRLFs before a message (keep-alives) are skipped by the caller.
    let start = from.saturating_sub(3).min(buf.len());
    let Some(head_end) = find(&buf[start..], b"\r\n\r\n").map(|i| i + start) else {
        return if buf.len() > MAX_MESSAGE {
            Err(ParseError::TooLarge)
        } else {
            Ok(Framed::NeedMore { resume: buf.len() })
        };
    };
    let head = &buf[..head_end];
    let length = content_length(head)?.ok_or(ParseError::Missing("Content-Length"))?;
    // Checked: a Content-Length near usize::MAX must not wrap the total.
    let total = head_end
        .checked_add(4)
        .and_then(|t| t.checked_add(length))
        .filter(|&t| t <= MAX_MESSAGE)
        .ok_or(ParseError::TooLarge)?;
    Ok(if buf.len() >= total {
        Framed::Message(total)
    } else {
        Framed::NeedMore { resume: head_end }
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a header block, if it has one.
fn content_length(head: &[u8]) -> Result<Option<usize>, ParseError> {
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = std::str::from_utf8(trim(&line[colon + 1..]))
                .map_err(|_| ParseError::ContentLength)?;
            return value
                .parse::<usize>()
                .map(Some)
                .map_err(|_| ParseError::ContentLength);
        }
    }
    Ok(None)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Compact forms (RFC 3261 §7.3.3 and extensions) and their full names.
const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("u", "Allow-Events"),
];

/// Splits a header value at commas outside quotes and angle brackets,
/// into at most `max` parts: `None` when there are more (the message has
/// more headers than it may, and no more of it is looked at).
fn split_commas(value: &str, max: usize) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    if parts.len() == max {
                        return None;
                    }
                    parts.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = value[start..].trim();
    if !last.is_empty() {
        if parts.len() == max {
            return None;
        }
        parts.push(last);
    }
    Some(parts)
}

/// The Call-ID of a message as [`Message::parse`] reads it, found without
/// parsing the rest: the shell routes each message to the shard that owns
/// its call by it. `None` where no Call-ID can be read; such a message
/// cannot parse either, and the shard it goes to answers or counts it.
pub fn call_id_of(data: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if data.len() > MAX_MESSAGE {
        return None;
    }
    let head_end = find(data, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..head_end]).ok()?;
    let mut found: Option<std::borrow::Cow<'_, str>> = None;
    for line in head.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the Call-ID joins it as the parser
            // joins it: one space, then the trimmed line.
            if let Some(v) = found.as_mut() {
                let v = v.to_mut();
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Call-ID") || name.eq_ignore_ascii_case("i") {
            found = Some(std::borrow::Cow::Borrowed(value.trim()));
        }
    }
    found.map(|v| match v {
        // A folded value was trimmed piece by piece; the parser trims the whole.
        std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.trim().to_owned()),
        b => b,
    })
}

impl Message {
    /// Parses one complete message (a UDP datagram or a framed TCP message).
    pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
        let msg = Self::parse_unchecked(data)?;
        for (name, present) in [
            ("Via", msg.top_via().is_some()),
            ("Call-ID", msg.call_id().is_some()),
            ("CSeq", msg.cseq().is_some()),
            ("From", msg.header("From").is_some()),
            ("To", msg.header("To").is_some()),
        ] {
            if !present {
                return Err(ParseError::Missing(name));
            }
        }
        if let StartLine::Request { uri, .. } = &msg.start {
            rsip::Uri::try_from(uri.as_str()).map_err(|_| ParseError::RequestUri)?;
        }
        Ok(msg)
    }

    /// Parses the start line, headers and body without asking for the
    /// headers every message needs: enough of a malformed request to
    /// address the 400 that says what is wrong with it.
    pub fn parse_unchecked(data: &[u8]) -> Result<Message, ParseError> {
        if data.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        let head_end = find(data, b"\r\n\r\n").ok_or(ParseError::Truncated)?;
        let head = std::str::from_utf8(&data[..head_end]).map_err(|_| ParseError::StartLine)?;
        let mut lines = head.split("\r\n");
        let start = parse_start(lines.next().unwrap_or(""))?;

        let mut raw: Vec<String> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation line (RFC 3261 §7.3.1).
                let last = raw.last_mut().ok_or(ParseError::Header(1))?;
                last.push(' ');
                last.push_str(line.trim());
            } else {
                if raw.len() == MAX_HEADERS {
                    return Err(ParseError::TooManyHeaders);
                }
                raw.push(line.to_owned());
            }
        }
        if raw.len() > MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let mut headers = Vec::with_capacity(raw.len());
        for (i, line) in raw.iter().enumerate() {
            let (name, value) = line.split_once(':').ok_or(ParseError::Header(i + 2))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(ParseError::Header(i + 2));
            }
            let name = COMPACT
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(name))
                .map_or(name, |(_, full)| full);
            let value = value.trim();
            let splittable = ["via", "route", "record-route"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name));
            // The header limit holds while tokenizing: a list header of
            // thousands of elements (`Via: a,a,a,...`) is refused after
            // MAX_HEADERS of them, before any is made into a header.
            let room = MAX_HEADERS - headers.len().min(MAX_HEADERS);
            let values = if splittable {
                split_commas(value, room).ok_or(ParseError::TooManyHeaders)?
            } else if room == 0 {
                return Err(ParseError::TooManyHeaders);
            } else {
                vec![value]
            };
            for value in values {
                headers.push(make_header(name, value).ok_or(ParseError::Header(i + 2))?);
            }
        }
        if headers.len() > MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }

        let body_start = head_end + 4;
        let available = data.len() - body_start;
        let message_head = &data[..head_end];
        let length = content_length(message_head)?.unwrap_or(available);
        if length > available {
            return Err(ParseError::ContentLength);
        }
        Ok(Message {
            start,
            headers,
            body: data[body_start..body_start + length].to_vec(),
        })
    }

    /// The message as bytes, with a Content-Length that matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(method);
                out.push(' ');
                out.push_str(uri);
                out.push_str(" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.push_str(&format!("SIP/2.0 {code} {reason}\r\n"));
            }
        }
        for h in &self.headers {
            if matches!(h, Header::ContentLength(_)) {
                continue;
            }
            out.push_str(&h.to_string());
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The method of a request, or `None` for a response.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response, or `None` for a request.
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI, parsed.
    pub fn request_uri(&self) -> Option<rsip::Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => rsip::Uri::try_from(uri.as_str()).ok(),
            StartLine::Response { .. } => None,
        }
    }

    /// First value of a header by (full, case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find_map(|h| header_value(h, name))
    }

    /// Every value of a header by name, in order.
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter_map(|h| header_value(h, name))
            .collect()
    }

    /// The top Via value.
    pub fn top_via(&self) -> Option<&str> {
        self.headers.iter().find_map(|h| match h {
            Header::Via(v) => Some(v.value()),
            _ => None,
        })
    }

    /// The top Via's sent-by as an address: an IP literal with its port, or
    /// the transport's default port (5061 for TLS, else 5060). `None` for a
    /// host name or a Via that does not parse.
    pub fn top_via_addr(&self) -> Option<std::net::SocketAddr> {
        let via = self.top_via()?.trim();
        let (protocol, rest) = via.split_once(char::is_whitespace)?;
        let sent_by = rest.trim_start().split([';', ',']).next()?.trim();
        if let Ok(addr) = sent_by.parse() {
            return Some(addr);
        }
        let port = if protocol.to_ascii_uppercase().ends_with("/TLS") {
            5061
        } else {
            5060
        };
        let host = sent_by.trim_start_matches('[').trim_end_matches(']');
        host.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, port))
    }

    /// The branch parameter of the top Via.
    pub fn branch(&self) -> Option<String> {
        self.top_via().and_then(|v| param(v, "branch"))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<String> {
        self.headers.iter().find_map(|h| match h {
            Header::CallId(v) => Some(v.value().to_owned()),
            _ => None,
        })
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let value = self.header("CSeq")?;
        let mut parts = value.split_whitespace();
        let num = parts.next()?.parse().ok()?;
        let method = parts.next()?.to_owned();
        Some((num, method))
    }

    /// The tag parameter of From.
    pub fn from_tag(&self) -> Option<String> {
        self.header("From").and_then(|v| name_addr_param(&v, "tag"))
    }

    /// The tag parameter of To.
    pub fn to_tag(&self) -> Option<String> {
        self.header("To").and_then(|v| name_addr_param(&v, "tag"))
    }

    /// Content-Type without parameters, lower case.
    pub fn content_type(&self) -> Option<String> {
        self.header("Content-Type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// Removes the top Via and returns it.
    pub fn pop_via(&mut self) -> Option<String> {
        let i = self
            .headers
            .iter()
            .position(|h| matches!(h, Header::Via(_)))?;
        match self.headers.remove(i) {
            Header::Via(v) => Some(v.value().to_owned()),
            _ => None,
        }
    }

    /// Adds a Via on top of all others.
    pub fn push_via(&mut self, value: String) {
        let i = self
            .headers
            .iter()
            .position(|h| matches!(h, Header::Via(_)))
            .unwrap_or(0);
        self.headers.insert(i, Header::Via(Via::new(value)));
    }

    /// Adds a Record-Route on top of all others.
    pub fn push_record_route(&mut self, value: String) {
        let i = self
            .headers
            .iter()
            .position(|h| matches!(h, Header::RecordRoute(_)))
            .or_else(|| {
                self.headers
                    .iter()
                    .position(|h| matches!(h, Header::Via(_)))
                    .map(|i| i + 1)
            })
            .unwrap_or(0);
        let i = if matches!(self.headers.get(i), Some(Header::RecordRoute(_))) {
            i
        } else {
            // After the last Via, so the message still reads in the usual order.
            self.headers
                .iter()
                .rposition(|h| matches!(h, Header::Via(_)))
                .map_or(0, |i| i + 1)
        };
        self.headers
            .insert(i, Header::RecordRoute(RecordRoute::new(value)));
    }

    /// The Route values in order.
    pub fn routes(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter_map(|h| match h {
                Header::Route(r) => Some(r.value().to_owned()),
                _ => None,
            })
            .collect()
    }

    /// Removes the first Route header.
    pub fn pop_route(&mut self) {
        if let Some(i) = self
            .headers
            .iter()
            .position(|h| matches!(h, Header::Route(_)))
        {
            self.headers.remove(i);
        }
    }

    /// Replaces the value of a header (first occurrence), or appends it.
    pub fn set_header(&mut self, name: &str, value: String) {
        let new = make_header(name, &value);
        let Some(new) = new else { return };
        match self
            .headers
            .iter()
            .position(|h| header_value(h, name).is_some())
        {
            Some(i) => self.headers[i] = new,
            None => self.headers.push(new),
        }
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn parse_start(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
        if !(100..700).contains(&code) {
            return Err(ParseError::StartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if version != "SIP/2.0" {
        let v = version.strip_prefix("SIP/").ok_or(ParseError::StartLine)?;
        let numeric = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        return Err(if numeric {
            ParseError::Version(version.to_owned())
        } else {
            ParseError::StartLine
        });
    }
    if method.is_empty() || !method.bytes().all(is_token) || uri.is_empty() {
        return Err(ParseError::StartLine);
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

/// Builds an `rsip` header from a name and value, typed where rsip knows the name.
fn make_header(name: &str, value: &str) -> Option<Header> {
    let line = format!("{name}: {value}");
    let (_, tokenizer) = rsip::headers::header::Tokenizer::tokenize(line.as_bytes()).ok()?;
    tokenizer.try_into().ok()
}

/// The value of `h` if its name is `name`.
fn header_value(h: &Header, name: &str) -> Option<String> {
    let text = h.to_string();
    let (n, v) = text.split_once(':')?;
    n.trim()
        .eq_ignore_ascii_case(name)
        .then(|| v.trim().to_owned())
}

/// A `;name=value` parameter of a header value such as a Via.
pub fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A header parameter of a name-addr (`"Name" <sip:..;uri-param>;tag=x`), outside the brackets.
pub fn name_addr_param(value: &str, name: &str) -> Option<String> {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    param(after, name)
}

/// The URI inside a name-addr or addr-spec header value.
pub fn name_addr_uri(value: &str) -> Option<rsip::Uri> {
    let uri = match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    };
    rsip::Uri::try_from(uri).ok()
}

/// The display name of a name-addr, without quotes.
pub fn name_addr_display(value: &str) -> Option<String> {
    let i = value.find('<')?;
    let name = value[..i].trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The user part of the URI in a name-addr, e.g. `008` for `<sip:008@pbx>`.
pub fn name_addr_user(value: &str) -> Option<String> {
    name_addr_uri(value).and_then(|u| u.user().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:012@10.0.0.2 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0\r\n\
        f: \"Ralf\" <sip:008@pbx>;tag=a\r\n\
        t: <sip:012@pbx>\r\n\
        i: abc@10.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        X-Custom: kept, as is\r\n\
        c: application/sdp\r\n\
        l: 5\r\n\r\nv=0\r\n";

    #[test]
    fn call_id_is_found_as_the_parser_finds_it() {
        let base = |call_id_line: &str| {
            format!(
                "BYE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\n{call_id_line}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for (line, want) in [
            ("Call-ID: abc@host", "abc@host"),
            ("call-id:   spaced  ", "spaced"),
            ("i: compact", "compact"),
            ("CALL-ID:x\r\n folded", "x folded"),
            ("Call-ID: a\r\n\tb \r\n  c", "a b c"),
        ] {
            let text = base(line);
            let parsed = Message::parse(text.as_bytes()).unwrap().call_id().unwrap();
            assert_eq!(parsed, want, "{line:?}");
            assert_eq!(
                call_id_of(text.as_bytes()).as_deref(),
                Some(want),
                "{line:?}"
            );
        }
        // Only the first Call-ID counts, for both.
        let two = base("Call-ID: first\r\nCall-ID: second");
        assert_eq!(call_id_of(two.as_bytes()).as_deref(), Some("first"));
        // The start line is never taken for a header, nor a body line.
        assert_eq!(call_id_of(b"Call-ID: x\r\nVia: y\r\n\r\n"), None);
        assert_eq!(
            call_id_of(b"BYE sip:x SIP/2.0\r\nVia: y\r\n\r\nCall-ID: z"),
            None
        );
        assert_eq!(call_id_of(b"garbage"), None);
    }

    #[test]
    fn parses_compact_forms_and_splits_via() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.headers_named("Via").len(), 2);
        assert_eq!(m.branch().as_deref(), Some("z9hG4bK1"));
        assert_eq!(m.call_id().as_deref(), Some("abc@10.0.0.1"));
        assert_eq!(m.cseq(), Some((1, "INVITE".to_owned())));
        assert_eq!(m.from_tag().as_deref(), Some("a"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.body, b"v=0\r\n");
        assert_eq!(m.header("X-Custom").as_deref(), Some("kept, as is"));
        assert_eq!(
            name_addr_user(&m.header("From").unwrap()).as_deref(),
            Some("008")
        );
        assert_eq!(
            name_addr_display(&m.header("From").unwrap()).as_deref(),
            Some("Ralf")
        );
        assert_eq!(m.content_type().as_deref(), Some("application/sdp"));
    }

    #[test]
    fn round_trips_unknown_methods_and_reason_phrases() {
        let req = "FOO sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 2 FOO\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(req.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), req);
        let resp = "SIP/2.0 487 Request Cancelled Here\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(resp.as_bytes()).unwrap();
        assert_eq!(m.code(), Some(487));
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), resp);
    }

    #[test]
    fn refuses_what_it_cannot_handle() {
        assert_eq!(Message::parse(b"garbage"), Err(ParseError::Truncated));
        assert_eq!(Message::parse(b"HELLO\r\n\r\n"), Err(ParseError::StartLine));
        let no_callid = "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(
            Message::parse(no_callid.as_bytes()),
            Err(ParseError::Missing("Call-ID"))
        );
        let lying = INVITE.replace("l: 5", "l: 400");
        assert_eq!(
            Message::parse(lying.as_bytes()),
            Err(ParseError::ContentLength)
        );
        let big = format!(
            "{}X-Big: {}\r\n\r\n",
            &INVITE[..INVITE.find("l: 5").unwrap()],
            "a".repeat(MAX_MESSAGE)
        );
        assert_eq!(Message::parse(big.as_bytes()), Err(ParseError::TooLarge));
    }

    #[test]
    fn a_list_header_of_thousands_of_elements_is_refused_while_tokenizing() {
        let vias = vec!["a"; 3000].join(",");
        let msg = format!(
            "OPTIONS sip:x@y SIP/2.0\r\nVia: {vias}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            Message::parse(msg.as_bytes()),
            Err(ParseError::TooManyHeaders)
        );
        // Exactly at the limit it parses.
        let vias = vec!["SIP/2.0/UDP a;branch=z9hG4bKx"; MAX_HEADERS - 5].join(",");
        let msg = format!(
            "OPTIONS sip:x@y SIP/2.0\r\nVia: {vias}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            Message::parse(msg.as_bytes()).unwrap().headers.len(),
            MAX_HEADERS
        );
    }

    #[test]
    fn framing_resumes_where_it_left_off() {
        let msg = INVITE.as_bytes();
        let mut resume = 0;
        for cut in 1..msg.len() {
            match frame_stream_from(&msg[..cut], resume).unwrap() {
                Framed::NeedMore { resume: r } => {
                    assert!(
                        r + 3 >= resume,
                        "never searches back more than the 3 bytes a split CRLFCRLF needs"
                    );
                    resume = r;
                }
                Framed::Message(_) => panic!("whole at {cut} of {}", msg.len()),
            }
        }
        assert_eq!(
            frame_stream_from(msg, resume),
            Ok(Framed::Message(msg.len()))
        );
    }

    #[test]
    fn frames_tcp_streams() {
        let two = format!("{INVITE}{INVITE}");
        let first = frame_stream(two.as_bytes()).unwrap().unwrap();
        assert_eq!(first, INVITE.len());
        assert_eq!(frame_stream(&two.as_bytes()[..10]).unwrap(), None);
        assert_eq!(
            frame_stream(&INVITE.as_bytes()[..INVITE.len() - 2]).unwrap(),
            None
        );
    }

    #[test]
    fn the_top_via_sent_by_as_an_address() {
        let via = |v: &str| {
            let text = format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: {v}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(text.as_bytes()).unwrap().top_via_addr()
        };
        let addr = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            via("SIP/2.0/TLS 10.0.0.1:5071;branch=z9hG4bK1"),
            addr("10.0.0.1:5071")
        );
        assert_eq!(
            via("SIP/2.0/TLS 10.0.0.1;branch=z9hG4bK1"),
            addr("10.0.0.1:5061")
        );
        assert_eq!(via("SIP/2.0/UDP 10.0.0.1;rport"), addr("10.0.0.1:5060"));
        assert_eq!(
            via("SIP/2.0/TLS [2001:db8::1]:5071"),
            addr("[2001:db8::1]:5071")
        );
        assert_eq!(via("SIP/2.0/TLS [2001:db8::1]"), addr("[2001:db8::1]:5061"));
        assert_eq!(via("SIP/2.0/TLS pbx.example.com:5061"), None);
        assert_eq!(via("SIP/2.0/TLS"), None);
    }

    #[test]
    fn via_and_route_manipulation() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        m.push_via("SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKme".into());
        assert_eq!(m.branch().as_deref(), Some("z9hG4bKme"));
        m.push_record_route("<sip:10.9.9.9:5060;lr>".into());
        assert_eq!(m.headers_named("Record-Route"), ["<sip:10.9.9.9:5060;lr>"]);
        assert_eq!(
            m.pop_via().as_deref(),
            Some("SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKme")
        );
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again.headers_named("Via").len(), 2);
        assert_eq!(again.headers_named("Record-Route").len(), 1);
    }
}
