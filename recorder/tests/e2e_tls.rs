//! SIP over TLS as a platform runs it: a certificate renewed (as
//! cert-manager rewrites a Secret's files) reaches new connections while
//! the open ones go on, and handshakes that never finish cost a peer its
//! own connections, within the same limits as TCP, and nothing else.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use earshot_tests::{RecorderProcess, TempDir, free_ports, test_certificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

struct Tls {
    dir: TempDir,
    recorder: RecorderProcess,
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
}

fn start(name: &str, limits: &str) -> Tls {
    let dir = TempDir::new(name);
    let certs = dir.path().join("certs");
    test_certificates(&certs, &["recorder", "renewed"]);
    // The files a mounted Secret gives, rewritten in place on renewal.
    std::fs::copy(certs.join("recorder.crt"), certs.join("tls.crt")).unwrap();
    std::fs::copy(certs.join("recorder.key"), certs.join("tls.key")).unwrap();
    let port = free_ports(1);
    let recorder = RecorderProcess::start_tls(
        Path::new(BINARY),
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], free_ports(1))),
        &users(),
        &format!(
            "{{ port: {port}, certificate: \"{}\", key: \"{}\" }}{limits}",
            certs.join("tls.crt").display(),
            certs.join("tls.key").display()
        ),
        "UDP",
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every connection a full handshake: a resumed one shows the
    // certificate of the session it resumes.
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    Tls {
        dir,
        recorder,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        client,
    }
}

type Conn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Tls {
    /// A TLS connection, verified against the test CA for 127.0.0.1.
    fn connect(&self) -> Conn {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ClientConnection::new(
            self.client.clone(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).expect("TLS handshake");
        }
        s
    }

    fn cert_file(&self, name: &str) -> Vec<u8> {
        let pem = self.dir.path().join("certs").join(name);
        CertificateDer::from_pem_file(pem).unwrap().to_vec()
    }
}

fn served(c: &Conn) -> Vec<u8> {
    c.conn.peer_certificates().unwrap()[0].to_vec()
}

/// A request the recorder answers itself (400: no Call-ID), as proof the
/// connection is served.
fn answered(c: &mut Conn) -> bool {
    let req = "OPTIONS sip:recorder@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-1\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:r@127.0.0.1>\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    if c.write_all(req.as_bytes())
        .and_then(|()| c.flush())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 2048];
    match c.read(&mut buf) {
        Ok(n) if n > 0 => String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 "),
        _ => false,
    }
}

#[test]
fn a_renewed_certificate_reaches_new_connections_while_open_ones_go_on() {
    let t = start("tls-renew", "");
    let mut open = t.connect();
    assert_eq!(served(&open), t.cert_file("recorder.crt"));
    assert!(answered(&mut open));

    // Renewal: the key, then the certificate, rewritten in place (between
    // the two the pair does not match: refused, the old one kept).
    let certs = t.dir.path().join("certs");
    std::fs::copy(certs.join("renewed.key"), certs.join("tls.key")).unwrap();
    std::fs::copy(certs.join("renewed.crt"), certs.join("tls.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while t
        .recorder
        .metric("earshot_config_reloads_total{result=\"tls_applied\"}")
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "certificate not reloaded:\n{}",
            t.recorder.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut fresh = t.connect();
    assert_eq!(
        served(&fresh),
        t.cert_file("renewed.crt"),
        "new handshakes get the renewed one"
    );
    assert!(answered(&mut fresh));
    assert!(
        answered(&mut open),
        "the connection opened before still works"
    );
}

#[test]
fn handshakes_that_never_finish_are_closed_within_the_tcp_limits() {
    let t = start(
        "tls-slow",
        ", limits: { tcpConnectionsPerSource: 5, tcpMessageSeconds: 2 }",
    );
    // Five connections that never say a word; the sixth is over the
    // per-source limit and closed at once.
    let mut idle: Vec<TcpStream> = (0..5)
        .map(|_| {
            let s = TcpStream::connect(t.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut sixth = TcpStream::connect(t.addr).unwrap();
    sixth
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Closed at once (not left to the 2 s handshake limit): end of stream
    // or a reset, never a read that times out.
    let over = sixth.read(&mut [0u8; 16]);
    assert!(
        match &over {
            Ok(0) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        },
        "over the per-source limit: {over:?}"
    );
    // The silent ones are closed when the handshake time is up.
    let started = Instant::now();
    for s in &mut idle {
        assert!(matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after about 2 s, not {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while t
        .recorder
        .metric("earshot_sip_dropped_total{reason=\"tls_handshake_failed\"}")
        < 5.0
    {
        assert!(Instant::now() < deadline, "{}", t.recorder.metrics_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same source, handshaking properly, is served again.
    let mut good = t.connect();
    assert!(answered(&mut good));
}

#[test]
fn a_flood_of_garbage_handshakes_costs_the_sender_and_not_the_recorder() {
    // 300 connections from one peer, each sending bytes that are no TLS
    // record, 50 at a time (the per-source limit): each is refused or
    // closed on its first bytes; a proper client from the same source is
    // served throughout and after.
    let t = start("tls-flood", ", limits: { tcpConnectionsPerSource: 50 }");
    let started = Instant::now();
    for wave in 0..6 {
        let conns: Vec<TcpStream> = (0..50)
            .filter_map(|i| {
                let mut s = TcpStream::connect(t.addr).ok()?;
                let junk: Vec<u8> = (0..512u32).map(|b| (b * 31 + i * 7 + wave) as u8).collect();
                let _ = s.write_all(&junk);
                Some(s)
            })
            .collect();
        for mut s in conns {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 64];
            // An alert or nothing, then the end: never a session.
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let mut good = t.connect();
        assert!(answered(&mut good), "served during wave {wave}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let failed = t
        .recorder
        .metric("earshot_sip_dropped_total{reason=\"tls_handshake_failed\"}")
        + t.recorder
            .metric("earshot_sip_dropped_total{reason=\"tcp_refused\"}");
    assert!(
        failed >= 300.0,
        "every garbage connection counted: {failed}"
    );
}
