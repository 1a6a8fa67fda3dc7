//! Step 1 of the reconcile pipeline, **no client required**: what the API
//! server cannot check — the platform's maximum retention, where recordings
//! go when the policy names no storage — turned into a [`Validated`] policy
//! or a reason a platform engineer can act on. An invalid policy waits for a
//! change; it is not retried.

use earshot_crds::RecordingPolicy;

use crate::build::Validated;
use crate::config::{OperatorConfig, same_endpoint};

/// Why a policy cannot be reconciled as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `metadata.name` or `metadata.namespace` missing (only in files, never from the API).
    #[error("policy has no {0}")]
    Metadata(&'static str),
    /// Retention above what the platform allows.
    #[error(
        "spec.retentionDays is {requested} but this platform keeps recordings at most {maximum} days; lower it to {maximum} or less"
    )]
    RetentionAboveMaximum {
        /// What the policy asks.
        requested: i32,
        /// The operator's maximum.
        maximum: i32,
    },
    /// Neither the policy nor the operator names a store.
    #[error(
        "spec.storage is not set and the operator has no default storage; set spec.storage (endpoint, bucket, credentialsSecret)"
    )]
    NoStorage,
    /// An advertised address that is not an IP address (the API server's
    /// CEL rule refuses these; a policy file may not have been through it).
    #[error("spec.recorder.network.advertisedAddress {0:?} is not an IP address")]
    AdvertisedAddress(String),
    /// A spool too small to hold a call or two and what waits for the store.
    #[error(
        "spec.recorder.spool.size {0:?} is too small or not a size; give at least 1Gi (e.g. 10Gi)"
    )]
    SpoolSize(String),
    /// A storage prefix outside the policy's namespace: the tenant would
    /// write into, and set retention over, another tenant's recordings.
    #[error(
        "spec.storage.prefix {prefix:?} is outside this tenant's recordings; it must start with {namespace:?} followed by /"
    )]
    PrefixOutsideNamespace {
        /// What the policy asks.
        prefix: String,
        /// The policy's namespace.
        namespace: String,
    },
    /// A name whose objects would collide with another policy's (the CRD
    /// refuses these; a policy stored before that rule may not have been).
    #[error(
        "metadata.name {0:?} must be at most 40 characters and must not end in -console (earshot-<name>-console is the name of that policy's console)"
    )]
    Name(String),
    /// A store the platform does not list in `storageEndpoints`: the
    /// operator would send requests, signed with a key id, anywhere.
    #[error(
        "spec.storage.endpoint {endpoint:?} is not one of the object stores this platform allows ({allowed}); use one of them or ask the platform team to add it"
    )]
    EndpointNotAllowed {
        /// What the policy asks.
        endpoint: String,
        /// The allowed URLs, comma-separated.
        allowed: String,
    },
    /// The platform allows no store at all: no `storageEndpoints`, no
    /// `defaultStorage`, and no `allowAnyStorageEndpoint` opt-in.
    #[error(
        "spec.storage.endpoint {endpoint:?} is not allowed: this platform lists no object stores (Helm storageEndpoints, or defaultStorage); the platform team lists its stores in storageEndpoints (or, on a single-tenant cluster, sets allowAnyStorageEndpoint: true)"
    )]
    NoStorageEndpoints {
        /// What the policy asks.
        endpoint: String,
    },
    /// The endpoint and bucket give no URL the recorders could write to
    /// (e.g. a dotted bucket name, virtual-hosted over https).
    #[error("spec.storage: {0}")]
    StorageAddress(String),
    /// SIP over TLS asked for without what it needs.
    #[error("{0}")]
    Tls(String),
    /// An internal network that is not a CIDR.
    #[error("spec.recorder.network.internalNetworks[{0}] {1:?} is not a CIDR (e.g. 10.0.0.0/8)")]
    InternalNetwork(usize, String),
    /// The policy's own ports overlap (on host network they are the node's).
    #[error(
        "spec.recorder ports overlap: SIP {sip}, HTTP {http} and RTP {rtp_min}-{rtp_max} must be distinct"
    )]
    PortsOverlap {
        /// SIP port.
        sip: i32,
        /// HTTP port.
        http: i32,
        /// RTP range.
        rtp_min: i32,
        /// RTP range.
        rtp_max: i32,
    },
}

/// Whether a policy in `namespace` may write under `prefix`: only inside
/// `<namespace>/`, as a plain key prefix (no empty or `..` segment that a
/// filesystem store or a reader could resolve elsewhere).
pub fn confined_prefix(namespace: &str, prefix: &str) -> Result<(), Invalid> {
    let inside = prefix
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| {
            let segments: Vec<&str> = rest.split('/').collect();
            let (last, inner) = segments.split_last().unwrap_or((&"", &[]));
            inner.iter().all(|s| !matches!(*s, "" | "." | "..")) && !matches!(*last, "." | "..")
        });
    if inside {
        Ok(())
    } else {
        Err(Invalid::PrefixOutsideNamespace {
            prefix: prefix.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

/// Whether a policy name leaves every object name of every policy distinct.
pub fn distinct_name(name: &str) -> Result<(), Invalid> {
    if name.len() <= 40 && !name.ends_with("-console") {
        Ok(())
    } else {
        Err(Invalid::Name(name.to_owned()))
    }
}

/// Bytes of a volume size as the policy writes it (`512Mi`, `10Gi`, `2Ti`).
pub fn size_bytes(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit {
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The spool limit for a volume of `volume` bytes: new recordings are
/// refused above it, so what is being recorded still fits, with the
/// sidecars and the file system's own share: 10% of the volume, at least
/// 256 MiB, is kept free.
pub fn spool_limit(volume: u64) -> u64 {
    volume.saturating_sub((volume / 10).max(256 << 20))
}

impl Invalid {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Metadata(_) => "InvalidMetadata",
            Invalid::RetentionAboveMaximum { .. } => "RetentionAboveMaximum",
            Invalid::NoStorage => "NoStorage",
            Invalid::AdvertisedAddress(_) => "InvalidAdvertisedAddress",
            Invalid::SpoolSize(_) => "SpoolTooSmall",
            Invalid::PrefixOutsideNamespace { .. } => "PrefixOutsideNamespace",
            Invalid::Name(_) => "NameCollides",
            Invalid::EndpointNotAllowed { .. } => "EndpointNotAllowed",
            Invalid::NoStorageEndpoints { .. } => "NoStorageEndpointsConfigured",
            Invalid::InternalNetwork(..) => "InvalidInternalNetwork",
            Invalid::StorageAddress(_) => "InvalidStorageAddress",
            Invalid::Tls(_) => "InvalidTls",
            Invalid::PortsOverlap { .. } => "PortsOverlap",
        }
    }
}

/// Checks a policy against the operator's settings.
pub fn validate(policy: &RecordingPolicy, operator: &OperatorConfig) -> Result<Validated, Invalid> {
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or(Invalid::Metadata("metadata.name"))?;
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .ok_or(Invalid::Metadata("metadata.namespace"))?;
    distinct_name(&name)?;
    let requested = policy.spec.retention_days;
    if requested > operator.max_retention_days {
        return Err(Invalid::RetentionAboveMaximum {
            requested,
            maximum: operator.max_retention_days,
        });
    }
    let storage = policy
        .spec
        .storage
        .clone()
        .or_else(|| operator.default_storage.clone())
        .ok_or(Invalid::NoStorage)?;
    let prefix = storage
        .prefix
        .clone()
        .unwrap_or_else(|| format!("{namespace}/{name}/"));
    confined_prefix(&namespace, &prefix)?;
    let lifecycle_credentials = allowed_endpoint(operator, &storage.endpoint)?;
    // Refused here, not by recorders crash-looping on a store they cannot open.
    earshot_contracts::addressing::bucket_url(
        &storage.endpoint,
        &storage.bucket,
        storage.path_style,
    )
    .map_err(|e| Invalid::StorageAddress(e.to_string()))?;
    let advertised = match &policy.spec.recorder.network.advertised_address {
        Some(a) => Some(
            a.parse()
                .map_err(|_| Invalid::AdvertisedAddress(a.clone()))?,
        ),
        None => None,
    };
    let rec = &policy.spec.recorder;
    for (i, n) in rec.network.internal_networks.iter().enumerate() {
        if earshot_contracts::IpNet::parse(n).is_none() {
            return Err(Invalid::InternalNetwork(i, n.clone()));
        }
    }
    let tls_listed = rec.sip.transports.contains(&earshot_crds::Transport::Tls);
    let tls_hops = rec
        .peers
        .iter()
        .any(|p| p.next_hop_transport == earshot_crds::Transport::Tls);
    if tls_hops && !tls_listed {
        return Err(Invalid::Tls(
            "spec.recorder.sip.transports must list TLS when a peer's nextHopTransport is TLS: its in-dialog requests come back to the TLS port the recorder's Record-Route names".to_owned(),
        ));
    }
    match &rec.sip.tls {
        None if tls_listed || tls_hops => {
            return Err(Invalid::Tls(
                "spec.recorder.sip.tls is needed: TLS is in sip.transports or a peer's nextHopTransport; give sip.tls.secretName (a kubernetes.io/tls Secret)".to_owned(),
            ));
        }
        Some(t) if (tls_hops || t.require_client_certificate) && t.ca_config_map.is_none() => {
            return Err(Invalid::Tls(
                "spec.recorder.sip.tls.caConfigMap is needed: TLS next hops and required client certificates are checked against its ca.crt".to_owned(),
            ));
        }
        Some(t)
            if t.port == rec.sip.port
                || t.port == rec.http_port
                || (rec.rtp_ports.min..=rec.rtp_ports.max).contains(&t.port) =>
        {
            return Err(Invalid::Tls(format!(
                "spec.recorder.sip.tls.port {} overlaps the SIP, HTTP or RTP ports",
                t.port
            )));
        }
        _ => {}
    }
    let (sip, http, rtp) = (rec.sip.port, rec.http_port, &rec.rtp_ports);
    if sip == http || (rtp.min..=rtp.max).contains(&sip) || (rtp.min..=rtp.max).contains(&http) {
        return Err(Invalid::PortsOverlap {
            sip,
            http,
            rtp_min: rtp.min,
            rtp_max: rtp.max,
        });
    }
    let spool = &policy.spec.recorder.spool.size;
    let spool_bytes = size_bytes(spool)
        .filter(|&b| b >= 1 << 30)
        .ok_or_else(|| Invalid::SpoolSize(spool.clone()))?;
    Ok(Validated {
        advertised,
        nodes: Default::default(),
        spool_bytes,
        policy: policy.clone(),
        namespace,
        name,
        storage,
        prefix,
        lifecycle_credentials,
        operator: operator.clone(),
    })
}

/// Whether the platform allows `endpoint`, and where the operator's own key
/// for it is, if it has one. Allowed: the stores in `storageEndpoints`, the
/// default storage's, and — only with the single-tenant opt-in
/// `allowAnyStorageEndpoint` — any other. Nothing else, not even when the
/// list is empty.
pub fn allowed_endpoint(
    operator: &OperatorConfig,
    endpoint: &str,
) -> Result<Option<std::path::PathBuf>, Invalid> {
    if let Some(listed) = operator
        .storage_endpoints
        .iter()
        .find(|e| same_endpoint(&e.url, endpoint))
    {
        return Ok(listed.lifecycle_credentials_dir.clone());
    }
    let default = operator
        .default_storage
        .as_ref()
        .map(|d| d.endpoint.as_str());
    if operator.allow_any_storage_endpoint || default.is_some_and(|d| same_endpoint(d, endpoint)) {
        return Ok(None);
    }
    let endpoint: String = endpoint.chars().take(200).collect();
    let allowed: Vec<&str> = operator
        .storage_endpoints
        .iter()
        .map(|e| e.url.as_str())
        .chain(default)
        .collect();
    if allowed.is_empty() {
        return Err(Invalid::NoStorageEndpoints { endpoint });
    }
    Err(Invalid::EndpointNotAllowed {
        endpoint,
        allowed: allowed.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> RecordingPolicy {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../config/samples/{name}.yaml")),
        )
        .unwrap();
        earshot_crds::validate::PolicyValidator::new()
            .parse(&text)
            .unwrap()
    }

    #[test]
    fn tls_without_what_it_needs_is_refused_saying_what_to_give() {
        let operator = OperatorConfig {
            allow_any_storage_endpoint: true,
            ..OperatorConfig::default()
        };
        let good = sample("secure-trunk");
        assert!(validate(&good, &operator).is_ok());
        let mut p = good.clone();
        p.spec.recorder.sip.transports = vec![earshot_crds::Transport::Udp];
        let e = validate(&p, &operator).unwrap_err();
        assert!(e.to_string().contains("must list TLS"), "{e}");
        let mut p = good.clone();
        p.spec.recorder.sip.tls = None;
        let e = validate(&p, &operator).unwrap_err();
        assert_eq!(e.reason(), "InvalidTls");
        assert!(e.to_string().contains("secretName"), "{e}");
        let mut p = good.clone();
        p.spec.recorder.sip.tls.as_mut().unwrap().ca_config_map = None;
        let e = validate(&p, &operator).unwrap_err();
        assert!(e.to_string().contains("caConfigMap"), "{e}");
        let mut p = good;
        p.spec.recorder.sip.tls.as_mut().unwrap().port = 5060;
        let e = validate(&p, &operator).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn a_prefix_stays_inside_the_namespace() {
        for ok in ["acme/", "acme/office/", "acme/eu/office/", "acme/office"] {
            assert_eq!(confined_prefix("acme", ok), Ok(()), "{ok}");
        }
        // Another tenant, a namespace that only starts the same, the bucket
        // root, traversal-looking and empty segments.
        for bad in [
            "beta/office/",
            "acme-eu/office/",
            "acmeoffice/",
            "acme",
            "",
            "/acme/",
            "acme/../beta/",
            "acme//x/",
            "acme/./",
            "acme/..",
        ] {
            assert!(
                matches!(
                    confined_prefix("acme", bad),
                    Err(Invalid::PrefixOutsideNamespace { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn only_listed_endpoints_are_used() {
        use crate::config::AllowedEndpoint;
        let listed = OperatorConfig {
            storage_endpoints: vec![
                AllowedEndpoint {
                    url: "http://garage.storage.svc:3900".into(),
                    lifecycle_credentials_dir: Some("/etc/earshot/lifecycle/0".into()),
                },
                AllowedEndpoint {
                    url: "https://s3.eu-west-1.amazonaws.com/".into(),
                    lifecycle_credentials_dir: None,
                },
            ],
            ..OperatorConfig::default()
        };
        assert_eq!(
            allowed_endpoint(&listed, "HTTP://Garage.storage.svc:3900/"),
            Ok(Some("/etc/earshot/lifecycle/0".into()))
        );
        assert_eq!(
            allowed_endpoint(&listed, "https://s3.eu-west-1.amazonaws.com"),
            Ok(None)
        );
        // Another port, a look-alike host, user info, a path: all refused.
        for bad in [
            "http://garage.storage.svc:3901",
            "http://garage.storage.svc.evil.example:3900",
            "http://user@garage.storage.svc:3900",
            "http://garage.storage.svc:3900/other",
            "http://169.254.169.254",
        ] {
            let err = allowed_endpoint(&listed, bad).unwrap_err();
            assert_eq!(err.reason(), "EndpointNotAllowed", "{bad}");
            assert!(err.to_string().contains("http://garage.storage.svc:3900"));
        }
    }

    #[test]
    fn an_empty_allow_list_allows_only_the_platform_s_default_store() {
        // Nothing configured: every store refused, and the status says what to set.
        let bare = OperatorConfig::default();
        let err = allowed_endpoint(&bare, "http://anything:9000").unwrap_err();
        assert_eq!(err.reason(), "NoStorageEndpointsConfigured");
        let msg = err.to_string();
        assert!(
            msg.contains("storageEndpoints") && msg.contains("allowAnyStorageEndpoint: true"),
            "{msg}"
        );
        // The default storage's endpoint is the platform's own: allowed,
        // without an operator key; nothing else is.
        let with_default = OperatorConfig {
            default_storage: Some(
                serde_json::from_value(serde_json::json!({
                    "endpoint": "http://garage.storage:3900", "bucket": "recordings",
                    "credentialsSecret": {"name": "earshot-s3"}
                }))
                .unwrap(),
            ),
            ..OperatorConfig::default()
        };
        assert_eq!(
            allowed_endpoint(&with_default, "http://GARAGE.storage:3900/"),
            Ok(None)
        );
        let err = allowed_endpoint(&with_default, "http://anything:9000").unwrap_err();
        assert_eq!(err.reason(), "EndpointNotAllowed");
        assert!(
            err.to_string().contains("(http://garage.storage:3900)"),
            "{err}"
        );
        // The single-tenant opt-in: any store, still never with a key of the operator's.
        let open = OperatorConfig {
            allow_any_storage_endpoint: true,
            ..OperatorConfig::default()
        };
        assert_eq!(allowed_endpoint(&open, "http://anything:9000"), Ok(None));
    }

    #[test]
    fn names_that_would_share_objects_are_refused() {
        assert_eq!(distinct_name("office"), Ok(()));
        assert_eq!(distinct_name(&"a".repeat(40)), Ok(()));
        assert!(distinct_name("office-console").is_err());
        assert!(distinct_name(&"a".repeat(41)).is_err());
    }
}
