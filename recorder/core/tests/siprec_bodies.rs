//! SIPREC bodies as SRCs send them (RFC 7866 §9 and the pre-RFC drafts'
//! shape many SBCs still use): multipart framing, the metadata in both
//! namespaces and content types, streams tied to participants by label and
//! never by m-line order, vendor identifiers kept, partial updates on
//! transfer, and hostile bodies refused with an error, never a panic; and
//! the bodies of real SRCs (`tests/siprec/`, reconstructed from captures and
//! vendor documentation: `SOURCES.md` says from where, and what is guessed).

use earshot_recorder_core::sdp::Sdp;
use earshot_recorder_core::siprec::{Metadata, Namespace, SiprecError, multipart, split_body};

const CT: &str = "multipart/mixed;boundary=foobar";

/// An RFC 7865 document: Alice (caller) on label 1, Bob on label 2.
const RFC_METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg==">
    <associate-time>2026-12-06T10:00:00Z</associate-time>
  </group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:+15550100008@pbx.example.com">
      <name xml:lang="en">Alice</name>
    </nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="tel:+15550100999"><name>Bob</name></nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>2</label>
  </stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>1</label>
  </stream>
  <sessionrecordingassoc session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2026-12-06T10:00:00Z</associate-time>
  </sessionrecordingassoc>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2026-12-06T10:00:00Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
    <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
</recording>"#;

/// The SDP: label 2 (Bob) first, so position would name the wrong party.
const SDP: &str = "v=0\r\no=SRC 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\nm=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n";

fn body(metadata_type: &str, metadata: &str, eol: &str) -> Vec<u8> {
    let sdp = SDP.replace("\r\n", eol);
    format!(
        "This is a preamble.{eol}--foobar{eol}Content-Type: application/sdp{eol}{eol}{sdp}--foobar  {eol}Content-Type: {metadata_type}{eol}Content-Disposition: recording-session{eol}{eol}{metadata}{eol}--foobar--{eol}epilogue{eol}"
    )
    .into_bytes()
}

fn users(meta: &Metadata, sdp: &Sdp) -> Vec<Vec<String>> {
    meta.senders_of(sdp)
        .into_iter()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.user())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn an_rfc_7865_body_maps_streams_by_label_not_by_order() {
    for eol in ["\r\n", "\n"] {
        let b = body("application/rs-metadata+xml", RFC_METADATA, eol);
        let parts = split_body(CT, &b).unwrap();
        let sdp = Sdp::parse(parts.sdp.expect("an SDP part")).unwrap();
        let meta = Metadata::parse(parts.metadata.expect("a metadata part")).unwrap();
        assert_eq!(meta.namespace, Namespace::Rfc7865);
        assert!(!meta.partial);
        assert_eq!(
            users(&meta, &sdp),
            vec![
                vec!["+15550100999".to_owned()],
                vec!["+15550100008".to_owned()]
            ],
            "m-line 1 is Bob's (label 2), m-line 2 Alice's (label 1)"
        );
        let alice = &meta.senders_of_label("1")[0];
        assert_eq!(alice.name.as_deref(), Some("Alice"));
        assert_eq!(meta.sessions[0].sip_session_ids.len(), 1);
    }
}

#[test]
fn the_parts_keep_their_types_and_dispositions() {
    let b = body("application/rs-metadata+xml", RFC_METADATA, "\r\n");
    let parts = multipart("multipart/mixed; boundary=\"foobar\"", &b).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].content_type, "application/sdp");
    // The line end before a delimiter is the delimiter's (RFC 2046 §5.1.1).
    assert_eq!(
        parts[0].body,
        SDP.strip_suffix("\r\n").unwrap().as_bytes(),
        "the SDP part"
    );
    assert_eq!(parts[1].content_type, "application/rs-metadata+xml");
    assert_eq!(parts[1].disposition.as_deref(), Some("recording-session"));
    assert!(parts[1].body.ends_with(b"</recording>"));
}

/// The drafts' shape: no `:1`, `id`/`session` attributes, `<aor>`,
/// `<send>`/`<recv>` inside `<participant>`, `application/rs-metadata`,
/// vendor extension data with the SRC's ids, vendor elements inside ours.
const LEGACY_METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording" xmlns:ven="urn:example:vendor">
  <datamode>complete</datamode>
  <session id="S1">
    <start-time>2026-12-06T10:00:00Z</start-time>
    <ven:ucid>00001002161234567890</ven:ucid>
  </session>
  <participant id="P-caller" session="S1">
    <aor>sip:008@pbx.example.com</aor>
    <name>Front desk</name>
    <send>ST-a</send>
    <recv>ST-b</recv>
    <ven:role>caller</ven:role>
  </participant>
  <participant id="P-callee" session="S1">
    <aor>sip:+15550100999@trunk.example.net;user=phone</aor>
    <send>ST-b</send>
    <recv>ST-a</recv>
  </participant>
  <stream id="ST-b" session="S1"><label>2</label></stream>
  <stream id="ST-a" session="S1"><label>1</label></stream>
  <extensiondata xmlns:cisco="http://www.cisco.com/siprec">
    <cisco:sessionID>fb5e0c9b6a4c5f21a1b0c9d8e7f60123</cisco:sessionID>
    <cisco:callGUID>2F9B3A10-1DD2-11B2-8E2C-C1C4E4B51D6A</cisco:callGUID>
  </extensiondata>
</recording>"#;

#[test]
fn the_legacy_namespace_and_shape_with_vendor_identifiers() {
    let b = body("application/rs-metadata", LEGACY_METADATA, "\n");
    let parts = split_body(CT, &b).unwrap();
    let sdp = Sdp::parse(parts.sdp.unwrap()).unwrap();
    let meta = Metadata::parse(parts.metadata.unwrap()).unwrap();
    assert_eq!(meta.namespace, Namespace::Legacy);
    assert_eq!(
        users(&meta, &sdp),
        vec![vec!["+15550100999".to_owned()], vec!["008".to_owned()]]
    );
    assert_eq!(
        meta.senders_of_label("1")[0].name.as_deref(),
        Some("Front desk")
    );
    let ids: Vec<(&str, &str)> = meta
        .identifiers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for want in [
        ("ucid", "00001002161234567890"),
        ("sessionID", "fb5e0c9b6a4c5f21a1b0c9d8e7f60123"),
        ("callGUID", "2F9B3A10-1DD2-11B2-8E2C-C1C4E4B51D6A"),
    ] {
        assert!(ids.contains(&want), "{want:?} in {ids:?}");
    }
    assert!(
        !ids.iter().any(|(k, _)| *k == "role"),
        "a vendor element of a participant is not an identifier of the call: {ids:?}"
    );
}

/// One stream carrying both parties (Metaswitch, FreeSWITCH's mod_siprec).
#[test]
fn a_mixed_stream_names_both_senders() {
    let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
      <participant participant_id="a"><nameID aor="sip:008@example.com"/></participant>
      <participant participant_id="b"><nameID aor="sip:500@example.com"/></participant>
      <stream stream_id="m" session_id="s"><label>mixed</label></stream>
      <participantstreamassoc participant_id="a"><send>m</send></participantstreamassoc>
      <participantstreamassoc participant_id="b"><send>m</send></participantstreamassoc>
    </recording>"#;
    let meta = Metadata::parse(xml.as_bytes()).unwrap();
    let senders: Vec<_> = meta
        .senders_of_label("mixed")
        .iter()
        .filter_map(|p| p.user())
        .collect();
    assert_eq!(senders, vec!["008", "500"]);
    assert!(meta.senders_of_label("other").is_empty());
}

/// A transfer: a partial update adds the new party, who now sends on the
/// stream the transferred party sent on; the rest stays.
#[test]
fn a_partial_update_on_transfer_hands_a_stream_to_the_new_party() {
    let mut meta = Metadata::parse(RFC_METADATA.as_bytes()).unwrap();
    let update = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
      <datamode>partial</datamode>
      <participant participant_id="carol"><nameID aor="sip:+15550100777@example.net"/></participant>
      <participantstreamassoc participant_id="carol">
        <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
      </participantstreamassoc>
      <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
        <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
      </participantstreamassoc>
    </recording>"#;
    let update = Metadata::parse(update.as_bytes()).unwrap();
    assert!(update.partial);
    meta.apply(update);
    let on = |label| -> Vec<String> {
        meta.senders_of_label(label)
            .iter()
            .filter_map(|p| p.user().map(str::to_owned))
            .collect()
    };
    assert_eq!(on("2"), vec!["+15550100777"], "Carol has Bob's stream now");
    assert_eq!(on("1"), vec!["+15550100008"], "Alice unchanged");
    assert_eq!(meta.participants.len(), 3);
    // A complete document replaces everything.
    meta.apply(Metadata::parse(RFC_METADATA.as_bytes()).unwrap());
    assert_eq!(meta.participants.len(), 2);
}

#[test]
fn hostile_and_wrong_bodies_are_errors() {
    // Entity expansion: no DTD at all.
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>&b;</datamode></recording>"#;
    assert!(matches!(
        Metadata::parse(laughs.as_bytes()),
        Err(SiprecError::Xml(_))
    ));
    // Another root, another namespace, not XML, not UTF-8.
    for bad in [
        r#"<recording xmlns="urn:example:other"/>"#,
        r#"<session xmlns="urn:ietf:params:xml:ns:recording:1"/>"#,
        "<recording",
        "",
    ] {
        assert!(Metadata::parse(bad.as_bytes()).is_err(), "{bad}");
    }
    assert!(Metadata::parse(&[0xff, 0xfe, 0x3c]).is_err());
    // Too many participants, too many nodes, too large, ids missing or too long.
    let many = format!(
        r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">{}</recording>"#,
        (0..40)
            .map(|i| format!(r#"<participant participant_id="p{i}"/>"#))
            .collect::<String>()
    );
    assert_eq!(
        Metadata::parse(many.as_bytes()),
        Err(SiprecError::TooMany(32, "participants"))
    );
    let nodes = format!(
        r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">{}</recording>"#,
        "<x/>".repeat(5000)
    );
    assert!(matches!(
        Metadata::parse(nodes.as_bytes()),
        Err(SiprecError::Xml(_))
    ));
    assert_eq!(
        Metadata::parse(&vec![b' '; 70_000]),
        Err(SiprecError::TooLarge)
    );
    assert_eq!(
        Metadata::parse(br#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><stream><label>1</label></stream></recording>"#),
        Err(SiprecError::NoId("stream"))
    );
    let long = format!(
        r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant participant_id="{}"/></recording>"#,
        "p".repeat(600)
    );
    assert_eq!(
        Metadata::parse(long.as_bytes()),
        Err(SiprecError::ValueTooLong)
    );
    // Framing: not multipart, no boundary, no part, too many parts.
    assert_eq!(
        multipart("application/sdp", b"v=0"),
        Err(SiprecError::NotMultipart)
    );
    assert_eq!(
        multipart(CT, b"no delimiter here"),
        Err(SiprecError::NoParts)
    );
    let parts: String = (0..12).map(|_| "--foobar\r\n\r\nx\r\n").collect();
    assert_eq!(
        multipart(CT, parts.as_bytes()),
        Err(SiprecError::TooManyParts)
    );
    // A body without a metadata part says so.
    let b = b"--foobar\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--foobar--\r\n";
    assert_eq!(split_body(CT, b).unwrap().metadata, None);
}

/// Each SRC's body (Cisco CUBE, Oracle, BroadWorks, Metaswitch, Avaya,
/// AudioCodes for Genesys, OpenSIPS, the RFC's): every label carries the
/// participant `expected.json` names (both, for a mixed stream; nobody when
/// the metadata does not say), and the SRC's identifiers are kept.
#[test]
fn vendor_bodies_map_streams_to_participants_as_their_srcs_mean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/siprec");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (name, want) in expected.as_object().unwrap() {
        if name.starts_with('_') {
            continue;
        }
        let read = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
        let boundary = String::from_utf8(read("boundary")).unwrap();
        let content_type = format!(
            "multipart/mixed;boundary=\"{}\"",
            boundary.lines().next().unwrap().trim()
        );
        let body = read("body");
        let parts = split_body(&content_type, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sdp = Sdp::parse(parts.sdp.unwrap_or_else(|| panic!("{name}: no SDP")))
            .unwrap_or_else(|e| panic!("{name}: SDP: {e}"));
        let meta = Metadata::parse(
            parts
                .metadata
                .unwrap_or_else(|| panic!("{name}: no metadata")),
        )
        .unwrap_or_else(|e| panic!("{name}: metadata: {e}"));
        for (label, aor) in want["label_to_aor"].as_object().unwrap() {
            assert!(
                sdp.streams
                    .iter()
                    .any(|m| m.label.as_deref() == Some(label)),
                "{name}: an m-line labelled {label}"
            );
            let senders: Vec<&str> = meta
                .senders_of_label(label)
                .iter()
                .filter_map(|p| p.aor.as_deref())
                .collect();
            let want: Vec<&str> = match (aor.as_str(), &want["mixed_label_participants"][label]) {
                (Some(a), _) => vec![a],
                (None, serde_json::Value::Array(both)) => {
                    both.iter().map(|v| v.as_str().unwrap()).collect()
                }
                (None, _) => Vec::new(),
            };
            assert_eq!(senders, want, "{name}: who sends on label {label}");
        }
        if let Some(caller) = want["calling_party_aor"].as_str() {
            let calling = meta.participants.iter().find(|p| p.calling == Some(true));
            assert_eq!(
                calling.and_then(|p| p.aor.as_deref()),
                Some(caller),
                "{name}"
            );
        }
        // The SRC's own ids: Session-IDs from `sipSessionID`, the rest from
        // extension data (what is decoded from them, or sits outside the
        // XML, is not the parser's to find).
        let collapse = |s: &str| s.split_whitespace().collect::<String>();
        for (key, value) in want["src_ids"].as_object().unwrap() {
            let value = value.as_str().unwrap();
            let attribute = ["session_id", "group_id", "recording_id"].contains(&key.as_str());
            if attribute
                || key.contains("believed")
                || key.starts_with("gtd_")
                || key.ends_with("_element")
            {
                continue;
            }
            if key == "sipSessionID" {
                assert!(
                    meta.sessions
                        .iter()
                        .flat_map(|s| &s.sip_session_ids)
                        .any(|id| collapse(id) == collapse(value)),
                    "{name}: Session-ID {value}"
                );
                continue;
            }
            assert!(
                meta.identifiers.iter().any(|(_, v)| v == value),
                "{name}: {key} = {value} among {:?}",
                meta.identifiers
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} fixtures");
}
