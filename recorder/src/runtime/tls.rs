//! SIP over TLS (RFC 3261 §26) with rustls: the listener's certificate and
//! key from PEM files — a `kubernetes.io/tls` Secret's `tls.crt` and
//! `tls.key` as cert-manager renews them — re-read when they change, so a
//! renewal never drops a call (connections open keep their session; new
//! handshakes get the new certificate); next hops verified against a CA
//! bundle by the name (or address) their `nextHop` gives, optionally with
//! our certificate as a client certificate (mutual TLS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use earshot_contracts::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

/// The certificate in use, swapped when its files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl rustls::server::ResolvesServerCert for Current {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// TLS for SIP: the acceptor, the connector, the names next hops are
/// verified by.
pub struct Tls {
    cert: Arc<Current>,
    files: (PathBuf, PathBuf),
    /// The listener's configuration.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Toward next hops, when a CA bundle is given.
    pub connector: Option<tokio_rustls::TlsConnector>,
    /// The host name each next hop is verified by (its `nextHop` host);
    /// other addresses (a Contact's, a Record-Route's) by their IP.
    /// Replaced when the config is reloaded.
    names: RwLock<HashMap<SocketAddr, String>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key.
fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {} is not PEM", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the TLS key {}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .context("the TLS key is not a key rustls can sign with")?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .context("the TLS key does not belong to the certificate")?;
    Ok(ck)
}

fn roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the CA bundle {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("CA bundle {} is not PEM", ca.display()))?)
            .with_context(|| {
                format!(
                    "a certificate of {} is not a CA rustls accepts",
                    ca.display()
                )
            })?;
    }
    anyhow::ensure!(!roots.is_empty(), "CA bundle {} is empty", ca.display());
    Ok(roots)
}

impl Tls {
    /// Loads the certificate (and the CA bundle); `hops` are the next hops'
    /// addresses with the names they are verified by.
    pub fn new(cfg: &TlsConfig, hops: HashMap<SocketAddr, String>) -> anyhow::Result<Tls> {
        let cert = Arc::new(Current(RwLock::new(Arc::new(load(
            &cfg.certificate,
            &cfg.key,
        )?))));
        let roots = cfg.ca.as_deref().map(roots).transpose()?.map(Arc::new);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?;
        let server = match (&roots, cfg.require_client_certificate) {
            (Some(r), true) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(r.clone(), provider())
                    .build()
                    .context("client certificate verifier")?,
            ),
            _ => builder.with_no_client_auth(),
        }
        .with_cert_resolver(cert.clone());
        let connector = match &roots {
            Some(r) => {
                let b = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .context("TLS versions")?
                    .with_root_certificates(r.clone());
                let client = if cfg.client_certificate {
                    b.with_client_cert_resolver(cert.clone())
                } else {
                    b.with_no_client_auth()
                };
                Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
            }
            None => None,
        };
        Ok(Tls {
            cert,
            files: (cfg.certificate.clone(), cfg.key.clone()),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector,
            names: RwLock::new(hops),
        })
    }

    /// The next hops of a reloaded config (new connections verify by them).
    pub fn set_next_hops(&self, hops: HashMap<SocketAddr, String>) {
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = hops;
    }

    /// Whether `addr` is a configured next hop's.
    pub fn is_next_hop(&self, addr: SocketAddr) -> bool {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&addr)
    }

    /// The name a next hop at `addr` is verified by.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .and_then(|n| ServerName::try_from(n.clone()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    /// Re-reads the certificate and key every 2 s when their files change;
    /// a pair that does not load is refused (logged, counted) and the
    /// current one kept.
    pub async fn watch(self: Arc<Self>, reloaded: impl Fn(bool) + Send + 'static) {
        type Stamp = Option<(SystemTime, u64)>;
        let stamp = |p: &Path| -> Stamp {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| m.modified().ok().map(|t| (t, m.len())))
        };
        let mut last = (stamp(&self.files.0), stamp(&self.files.1));
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = (stamp(&self.files.0), stamp(&self.files.1));
            if now == last {
                continue;
            }
            last = now;
            match load(&self.files.0, &self.files.1) {
                Ok(ck) => {
                    *self.cert.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                    tracing::info!("TLS certificate reloaded; new connections get it");
                    reloaded(true);
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "TLS certificate not reloaded; the previous one stays in use");
                    reloaded(false);
                }
            }
        }
    }
}
