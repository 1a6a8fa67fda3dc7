//! SIPREC bodies (RFC 7866 §9, RFC 7865): what a session recording client
//! (an SBC, a PBX) sends a recording server — a `multipart/mixed` body of
//! SDP and recording metadata — read into what a recorder needs: which
//! stream, known by its SDP `a=label`, carries whose audio.
//!
//! The metadata is the part every open recording server gets wrong, so this
//! reads what SRCs send, not only what the RFC shows: the RFC namespace
//! `urn:ietf:params:xml:ns:recording:1` and the pre-RFC one without `:1`;
//! `application/rs-metadata+xml` and `application/rs-metadata`; RFC 7865's
//! `participantstreamassoc` and the older `<send>`/`<recv>` inside
//! `<participant>`; `participant_id`/`stream_id`/`session_id` attributes and
//! the older `id`/`session`; `nameID aor=` and the older `<aor>` element.
//! Elements of other namespaces (vendor extensions) are skipped, except
//! that the short values under them and under `<extensiondata>` are kept as
//! the SRC's own identifiers (a Cisco session id, an Avaya UCID, ...), so a
//! compliance search finds a call by the SBC's id.
//!
//! A stream is mapped to a participant through the metadata only — never by
//! the order of the m-lines.
//!
//! Every byte here comes from the network: the body and the XML are bounded
//! (size, nodes, parts, participants, streams, identifiers, value lengths),
//! a DTD is refused (no entity expansion), and nothing panics.

use roxmltree::{Document, Node, ParsingOptions};

/// The RFC 7865 namespace.
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:recording:1";
/// The namespace of the drafts before RFC 7865, still sent by many SRCs.
pub const LEGACY_NAMESPACE: &str = "urn:ietf:params:xml:ns:recording";
/// An earlier draft's, with the root `recording_metadata` (BroadWorks).
pub const SIPREC_NAMESPACE: &str = "urn:ietf:params:xml:ns:siprec";

/// Largest SIPREC body read (the SDP and the metadata together).
pub const MAX_BODY: usize = 64 * 1024;
/// Most parts of a multipart body.
pub const MAX_PARTS: usize = 8;
/// Most XML nodes of one metadata document.
pub const MAX_NODES: u32 = 4096;
/// Most participants, and most streams, one metadata document may describe.
pub const MAX_PARTICIPANTS: usize = 32;
/// Most streams.
pub const MAX_STREAMS: usize = 32;
/// Most SRC identifiers kept.
pub const MAX_IDENTIFIERS: usize = 16;
/// Longest value kept (an id, an AoR, a name, a label).
pub const MAX_VALUE: usize = 512;

/// Why a SIPREC body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiprecError {
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the Content-Type is not multipart/mixed with a boundary")]
    NotMultipart,
    #[error("no part begins with the boundary")]
    NoParts,
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
    #[error("the body has no {0} part")]
    Missing(&'static str),
    #[error("the metadata is not XML: {0}")]
    Xml(String),
    #[error("the metadata's root is not <recording> of the recording namespace")]
    NotRecording,
    #[error("the metadata describes more than {0} {1}")]
    TooMany(usize, &'static str),
    #[error("a metadata value is longer than {MAX_VALUE} bytes")]
    ValueTooLong,
    #[error("a {0} has no id")]
    NoId(&'static str),
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The media type, lower case, without parameters (`text/plain` when
    /// the part gives none, as RFC 2046 says).
    pub content_type: String,
    /// The disposition type, lower case (`recording-session`, `session`).
    pub disposition: Option<String>,
    pub body: &'a [u8],
}

/// The parts of a `multipart/mixed` body whose Content-Type header value is
/// `content_type` (RFC 2046 §5.1; CRLF or bare LF line ends, a preamble and
/// an epilogue, transport padding after a delimiter are all accepted).
pub fn multipart<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, SiprecError> {
    if body.len() > MAX_BODY {
        return Err(SiprecError::TooLarge);
    }
    let boundary = boundary_of(content_type).ok_or(SiprecError::NotMultipart)?;
    let delimiter = [b"--".as_slice(), boundary.as_bytes()].concat();
    // Every delimiter: at the start of the body or of a line.
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&body[i..], &delimiter).map(|a| a + i) {
        if at == 0 || body[at - 1] == b'\n' {
            starts.push(at);
            if starts.len() > MAX_PARTS + 1 {
                return Err(SiprecError::TooManyParts);
            }
        }
        i = at + delimiter.len();
    }
    let mut parts = Vec::new();
    for (n, &at) in starts.iter().enumerate() {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            break; // the close delimiter
        }
        // Transport padding, then the line end.
        let mut from = after;
        while from < body.len() && (body[from] == b' ' || body[from] == b'\t') {
            from += 1;
        }
        if body[from..].starts_with(b"\r\n") {
            from += 2;
        } else if body[from..].starts_with(b"\n") {
            from += 1;
        } else {
            continue; // a line that only begins like a delimiter
        }
        // The part ends at the line end before the next delimiter.
        let mut to = starts.get(n + 1).copied().unwrap_or(body.len());
        if to > from && body[to - 1] == b'\n' {
            to -= 1;
            if to > from && body[to - 1] == b'\r' {
                to -= 1;
            }
        }
        parts.push(part(&body[from..to.max(from)]));
    }
    if parts.is_empty() {
        return Err(SiprecError::NoParts);
    }
    Ok(parts)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `boundary` parameter of a multipart/mixed Content-Type.
fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.len() <= 70).then(|| value.to_owned())
    })
}

/// One part: its headers up to the first empty line, then its body.
fn part(raw: &[u8]) -> Part<'_> {
    let (head, body) = if raw.starts_with(b"\r\n") {
        (&raw[..0], &raw[2..])
    } else if raw.starts_with(b"\n") {
        (&raw[..0], &raw[1..])
    } else if let Some(at) = find(raw, b"\r\n\r\n") {
        (&raw[..at], &raw[at + 4..])
    } else if let Some(at) = find(raw, b"\n\n") {
        (&raw[..at], &raw[at + 2..])
    } else {
        (raw, &raw[raw.len()..])
    };
    let head = String::from_utf8_lossy(head);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        })
    };
    Part {
        content_type: header("content-type").unwrap_or_else(|| "text/plain".to_owned()),
        disposition: header("content-disposition"),
        body,
    }
}

/// The parts of a SIPREC body a recorder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body<'a> {
    /// The `application/sdp` part.
    pub sdp: Option<&'a [u8]>,
    /// The `application/rs-metadata+xml` (or older `application/rs-metadata`) part.
    pub metadata: Option<&'a [u8]>,
}

/// The SDP and the metadata of a SIPREC INVITE's (or re-INVITE's, or
/// UPDATE's) `multipart/mixed` body.
pub fn split_body<'a>(content_type: &str, body: &'a [u8]) -> Result<Body<'a>, SiprecError> {
    let parts = multipart(content_type, body)?;
    let of = |types: &[&str]| {
        parts
            .iter()
            .find(|p| types.contains(&p.content_type.as_str()))
            .map(|p| p.body)
    };
    Ok(Body {
        sdp: of(&["application/sdp"]),
        metadata: of(&["application/rs-metadata+xml", "application/rs-metadata"]),
    })
}

/// Which namespace the metadata came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// RFC 7865's.
    Rfc7865,
    /// The drafts' (no `:1`).
    Legacy,
    /// An earlier draft's (`...:siprec`, root `recording_metadata`).
    Siprec,
}

/// What one metadata document says (RFC 7865 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub namespace: Namespace,
    /// `datamode` `partial`: an update of what an earlier document said
    /// ([`Metadata::apply`]); `complete` (the default): all of it.
    pub partial: bool,
    pub sessions: Vec<Session>,
    pub participants: Vec<Participant>,
    pub streams: Vec<Stream>,
    /// The SRC's own identifiers (element name, value), from extension data.
    pub identifiers: Vec<(String, String)>,
}

/// A communication session being recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    /// Its `sipSessionID` values (RFC 7989 Session-IDs).
    pub sip_session_ids: Vec<String>,
}

/// A party of the recorded session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    /// Address of record: a `sip:`, `sips:` or `tel:` URI.
    pub aor: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Whether the SRC says this party placed the call (Oracle's
    /// `callingParty` extension), when it says.
    pub calling: Option<bool>,
    /// The SRC says this party left the session (a `disassociate-time` in
    /// its `participantsessionassoc`, or in the older `<participant>`).
    pub left: bool,
    /// Ids of the streams that carry this participant's audio.
    pub send: Vec<String>,
    /// Ids of the streams this participant hears.
    pub recv: Vec<String>,
}

/// A media stream, tied to an SDP m-line by its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub id: String,
    /// The `a=label` of its m-line.
    pub label: String,
    pub session: Option<String>,
}

impl Participant {
    /// The user part of the AoR (`sip:+15550100@example.com` →
    /// `+15550100`; `tel:+15550100;phone-context=x` → `+15550100`), what a
    /// policy's extension is compared with.
    pub fn user(&self) -> Option<&str> {
        let aor = self.aor.as_deref()?.trim();
        let aor = aor.trim_start_matches('<').trim_end_matches('>');
        let (scheme, rest) = aor.split_once(':')?;
        let user = if scheme.eq_ignore_ascii_case("tel") {
            rest
        } else if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            rest.split_once('@')?.0
        } else {
            return None;
        };
        let user = user.split(';').next().unwrap_or("");
        (!user.is_empty()).then_some(user)
    }
}

impl Metadata {
    /// Reads one metadata document.
    pub fn parse(xml: &[u8]) -> Result<Metadata, SiprecError> {
        if xml.len() > MAX_BODY {
            return Err(SiprecError::TooLarge);
        }
        let text = std::str::from_utf8(xml).map_err(|e| SiprecError::Xml(e.to_string()))?;
        let options = ParsingOptions {
            allow_dtd: false,
            nodes_limit: MAX_NODES,
            ..ParsingOptions::default()
        };
        let doc = Document::parse_with_options(text, options)
            .map_err(|e| SiprecError::Xml(e.to_string()))?;
        let root = doc.root_element();
        let namespace = match root.tag_name().namespace() {
            Some(NAMESPACE) => Namespace::Rfc7865,
            Some(LEGACY_NAMESPACE) => Namespace::Legacy,
            Some(SIPREC_NAMESPACE) => Namespace::Siprec,
            _ => return Err(SiprecError::NotRecording),
        };
        if !matches!(root.tag_name().name(), "recording" | "recording_metadata") {
            return Err(SiprecError::NotRecording);
        }
        let ns = root.tag_name().namespace();
        let ours = |n: &Node| n.is_element() && n.tag_name().namespace() == ns;
        let mut m = Metadata {
            namespace,
            partial: false,
            sessions: Vec::new(),
            participants: Vec::new(),
            streams: Vec::new(),
            identifiers: Vec::new(),
        };
        // Stream associations of RFC 7865, applied once every participant is known.
        let mut assocs: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        // Participants the SRC says left.
        let mut departed: Vec<String> = Vec::new();
        for node in root.children().filter(|n| n.is_element()) {
            if !ours(&node) {
                collect_identifiers(node, &mut m.identifiers)?;
                continue;
            }
            match node.tag_name().name() {
                // `dataMode` in some SRCs' metadata (Avaya, BroadWorks).
                n if n.eq_ignore_ascii_case("datamode") => {
                    m.partial = text_of(node)?.eq_ignore_ascii_case("partial")
                }
                "session" => {
                    m.sessions.push(Session {
                        id: id_of(node, &["session_id", "id"], "session")?,
                        sip_session_ids: children_text(node, ours, "sipSessionID")?,
                    });
                    // A session's extension data and vendor children are the
                    // call's ids (Oracle's UCID, Avaya's).
                    for c in node.children().filter(|c| {
                        c.is_element() && (!ours(c) || c.tag_name().name() == "extensiondata")
                    }) {
                        collect_identifiers(c, &mut m.identifiers)?;
                    }
                }
                "participant" => {
                    if m.participants.len() == MAX_PARTICIPANTS {
                        return Err(SiprecError::TooMany(MAX_PARTICIPANTS, "participants"));
                    }
                    let name_id = node
                        .children()
                        .find(|c| ours(c) && c.tag_name().name() == "nameID");
                    let aor = match name_id.and_then(|n| n.attribute("aor")) {
                        Some(a) => Some(bounded(a)?),
                        None => children_text(node, ours, "aor")?.into_iter().next(),
                    };
                    let name = match name_id {
                        Some(n) => children_text(n, ours, "name")?.into_iter().next(),
                        None => children_text(node, ours, "name")?.into_iter().next(),
                    };
                    // Oracle's extension data says who placed the call.
                    let calling = node
                        .descendants()
                        .find(|d| d.is_element() && d.tag_name().name() == "callingParty")
                        .and_then(|d| d.text())
                        .map(|t| t.trim().eq_ignore_ascii_case("true"));
                    m.participants.push(Participant {
                        id: id_of(node, &["participant_id", "id"], "participant")?,
                        aor,
                        name,
                        calling,
                        left: node
                            .children()
                            .any(|c| ours(&c) && c.tag_name().name() == "disassociate-time"),
                        send: children_text(node, ours, "send")?,
                        recv: children_text(node, ours, "recv")?,
                    });
                }
                "stream" => {
                    if m.streams.len() == MAX_STREAMS {
                        return Err(SiprecError::TooMany(MAX_STREAMS, "streams"));
                    }
                    let label = children_text(node, ours, "label")?.into_iter().next();
                    m.streams.push(Stream {
                        id: id_of(node, &["stream_id", "id"], "stream")?,
                        label: label.unwrap_or_default(),
                        session: match node.attribute("session_id").or(node.attribute("session")) {
                            Some(s) => Some(bounded(s)?),
                            None => None,
                        },
                    });
                }
                "participantsessionassoc" => {
                    let gone = node
                        .children()
                        .any(|c| ours(&c) && c.tag_name().name() == "disassociate-time");
                    if gone {
                        if departed.len() == MAX_PARTICIPANTS {
                            return Err(SiprecError::TooMany(MAX_PARTICIPANTS, "participants"));
                        }
                        departed.push(id_of(
                            node,
                            &["participant_id", "id"],
                            "participantsessionassoc",
                        )?);
                    }
                }
                "participantstreamassoc" => {
                    if assocs.len() == MAX_PARTICIPANTS {
                        return Err(SiprecError::TooMany(MAX_PARTICIPANTS, "participants"));
                    }
                    assocs.push((
                        id_of(node, &["participant_id", "id"], "participantstreamassoc")?,
                        children_text(node, ours, "send")?,
                        children_text(node, ours, "recv")?,
                    ));
                }
                "extensiondata" => collect_identifiers(node, &mut m.identifiers)?,
                // group, sessionrecordingassoc, participantsessionassoc, ...:
                // nothing a recording needs beyond what they repeat; their
                // vendor children may still carry identifiers. (A
                // participant's vendor children describe the party, not the
                // call, and are not kept.)
                _ => {
                    for c in node.children().filter(|c| c.is_element() && !ours(c)) {
                        collect_identifiers(c, &mut m.identifiers)?;
                    }
                }
            }
        }
        for (id, send, recv) in assocs {
            match m.participants.iter().position(|p| p.id == id) {
                Some(i) => {
                    let p = &mut m.participants[i];
                    merge_ids(&mut p.send, send);
                    merge_ids(&mut p.recv, recv);
                }
                None if m.participants.len() < MAX_PARTICIPANTS => {
                    m.participants.push(Participant {
                        id,
                        aor: None,
                        name: None,
                        calling: None,
                        left: false,
                        send,
                        recv,
                    })
                }
                None => return Err(SiprecError::TooMany(MAX_PARTICIPANTS, "participants")),
            }
        }
        for id in departed {
            match m.participants.iter().position(|p| p.id == id) {
                Some(i) => m.participants[i].left = true,
                None if m.participants.len() < MAX_PARTICIPANTS => {
                    m.participants.push(Participant {
                        id,
                        aor: None,
                        name: None,
                        calling: None,
                        left: true,
                        send: Vec::new(),
                        recv: Vec::new(),
                    })
                }
                None => return Err(SiprecError::TooMany(MAX_PARTICIPANTS, "participants")),
            }
        }
        Ok(m)
    }

    /// The participants whose audio the m-line labelled `label` carries:
    /// the stream of that label, and who sends it. One for a stream per
    /// party; two or more for a mixed stream (Metaswitch, FreeSWITCH);
    /// none when the metadata does not say.
    pub fn senders_of_label(&self, label: &str) -> Vec<&Participant> {
        let Some(stream) = self.streams.iter().find(|s| s.label == label) else {
            return Vec::new();
        };
        self.participants
            .iter()
            .filter(|p| p.send.contains(&stream.id))
            .collect()
    }

    /// For each m-line of a SIPREC offer, in order, who sends on it (by
    /// its `a=label` through this metadata, never by position).
    pub fn senders_of<'m>(&'m self, sdp: &crate::sdp::Sdp) -> Vec<Vec<&'m Participant>> {
        sdp.streams
            .iter()
            .map(|m| {
                m.label
                    .as_deref()
                    .map(|l| self.senders_of_label(l))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Takes a later document: a complete one replaces this one; a partial
    /// one (`datamode` `partial`) adds and updates sessions, participants
    /// and streams by id, and identifiers by name.
    pub fn apply(&mut self, later: Metadata) {
        if !later.partial {
            *self = later;
            return;
        }
        for s in later.sessions {
            upsert(&mut self.sessions, s, |a, b| a.id == b.id, MAX_STREAMS);
        }
        for p in later.participants {
            match self.participants.iter().position(|q| q.id == p.id) {
                Some(i) => {
                    let q = &mut self.participants[i];
                    if p.aor.is_some() {
                        q.aor = p.aor;
                    }
                    if p.name.is_some() {
                        q.name = p.name;
                    }
                    q.left |= p.left;
                    // A partial update states the associations it changes.
                    if !p.send.is_empty() || !p.recv.is_empty() {
                        q.send = p.send;
                        q.recv = p.recv;
                    }
                }
                None if self.participants.len() < MAX_PARTICIPANTS => self.participants.push(p),
                None => {}
            }
        }
        for s in later.streams {
            upsert(&mut self.streams, s, |a, b| a.id == b.id, MAX_STREAMS);
        }
        for (k, v) in later.identifiers {
            upsert(
                &mut self.identifiers,
                (k, v),
                |a, b| a.0 == b.0,
                MAX_IDENTIFIERS,
            );
        }
    }
}

fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool, cap: usize) {
    match list.iter().position(|x| same(x, &item)) {
        Some(i) => list[i] = item,
        None if list.len() < cap => list.push(item),
        None => {}
    }
}

fn merge_ids(into: &mut Vec<String>, more: Vec<String>) {
    for id in more {
        if !into.contains(&id) && into.len() < MAX_STREAMS {
            into.push(id);
        }
    }
}

fn bounded(s: &str) -> Result<String, SiprecError> {
    let s = s.trim();
    if s.len() > MAX_VALUE {
        return Err(SiprecError::ValueTooLong);
    }
    Ok(s.to_owned())
}

/// The text of an element (its text children, trimmed); an element with
/// no text of its own gives its first child element's (BroadWorks'
/// `<send><id>...</id></send>`).
fn text_of(node: Node) -> Result<String, SiprecError> {
    let mut out = String::new();
    for t in node.children().filter(|c| c.is_text()) {
        out.push_str(t.text().unwrap_or(""));
        if out.len() > MAX_VALUE * 2 {
            return Err(SiprecError::ValueTooLong);
        }
    }
    let own = bounded(&out)?;
    if !own.is_empty() {
        return Ok(own);
    }
    match node.children().find(|c| c.is_element()) {
        Some(child) => {
            let mut text = String::new();
            for t in child.children().filter(|c| c.is_text()) {
                text.push_str(t.text().unwrap_or(""));
                if text.len() > MAX_VALUE * 2 {
                    return Err(SiprecError::ValueTooLong);
                }
            }
            bounded(&text)
        }
        None => Ok(own),
    }
}

/// The non-empty texts of `node`'s children named `name` (ours), at most
/// [`MAX_STREAMS`].
fn children_text(
    node: Node,
    ours: impl Fn(&Node) -> bool,
    name: &str,
) -> Result<Vec<String>, SiprecError> {
    let mut out = Vec::new();
    for c in node
        .children()
        .filter(|c| ours(c) && c.tag_name().name() == name)
    {
        let t = text_of(c)?;
        if !t.is_empty() && out.len() < MAX_STREAMS {
            out.push(t);
        }
    }
    Ok(out)
}

fn id_of(node: Node, names: &[&str], what: &'static str) -> Result<String, SiprecError> {
    let id = names
        .iter()
        .find_map(|n| node.attribute(*n))
        .ok_or(SiprecError::NoId(what))?;
    let id = bounded(id)?;
    if id.is_empty() {
        return Err(SiprecError::NoId(what));
    }
    Ok(id)
}

/// Short leaf values under a vendor element: (element name, value).
fn collect_identifiers(node: Node, out: &mut Vec<(String, String)>) -> Result<(), SiprecError> {
    for d in node.descendants().filter(|d| d.is_element()) {
        if out.len() == MAX_IDENTIFIERS {
            break;
        }
        if d.children().any(|c| c.is_element()) {
            continue;
        }
        let value = match text_of(d) {
            Ok(v) => v,
            Err(SiprecError::ValueTooLong) => continue,
            Err(e) => return Err(e),
        };
        if !value.is_empty() && value.len() <= 128 {
            let name = d.tag_name().name();
            if !out.iter().any(|(n, v)| n == name && *v == value) {
                out.push((name.to_owned(), value));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_quoted_or_not_and_other_types_refused() {
        assert_eq!(
            boundary_of("multipart/mixed;boundary=foobar").as_deref(),
            Some("foobar")
        );
        assert_eq!(
            boundary_of("Multipart/Mixed; Boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary_of("application/sdp"), None);
        assert_eq!(boundary_of("multipart/mixed"), None);
        assert_eq!(
            boundary_of(&format!("multipart/mixed;boundary={}", "x".repeat(71))),
            None
        );
    }

    #[test]
    fn user_parts_of_sip_and_tel_aors() {
        let p = |aor: &str| Participant {
            id: "p".into(),
            aor: Some(aor.into()),
            name: None,
            calling: None,
            left: false,
            send: vec![],
            recv: vec![],
        };
        assert_eq!(p("sip:+15550100@example.com").user(), Some("+15550100"));
        assert_eq!(
            p("sips:008@pbx.example.com;transport=tls").user(),
            Some("008")
        );
        assert_eq!(p("<sip:alice@example.com>").user(), Some("alice"));
        assert_eq!(
            p("tel:+15550100;phone-context=example.com").user(),
            Some("+15550100")
        );
        assert_eq!(p("sip:example.com").user(), None);
        assert_eq!(p("mailto:a@example.com").user(), None);
    }
}
