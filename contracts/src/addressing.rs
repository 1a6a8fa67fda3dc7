//! How a request names a bucket: the one rule for the recorder's uploads
//! (through `object_store`), the console's reads and the operator's own S3
//! calls, so that all of them reach the same bucket.
//!
//! A store is given as an endpoint (`https://s3.eu-west-1.amazonaws.com`,
//! `http://garage:3900`), a bucket and `pathStyle`:
//!
//! * path style: `<endpoint>/<bucket>/<key>`;
//! * virtual-hosted style: `<scheme>://<bucket>.<endpoint host>[:port][/endpoint path]/<key>`.
//!
//! The endpoint never holds the bucket. Scheme and host are lower-cased and
//! a default port (80 for http, 443 for https) is dropped: the request is
//! signed over the host the HTTP client sends, and the client sends it that
//! way. Virtual-hosted style is refused where it cannot work: an endpoint
//! named by IP address (the bucket cannot go into it), a bucket name that is
//! not a host name, and a bucket name with dots over HTTPS (`a.b.host` is
//! not covered by the store's wildcard certificate `*.host`, so TLS fails;
//! AWS itself says to use path style for such buckets). Nothing falls back
//! to the other style behind the policy's back.

use std::net::Ipv4Addr;

/// Why a store's endpoint and bucket give no URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `http://` or `https://`.
    #[error("storage endpoint {0:?} must start with http:// or https://")]
    Scheme(String),
    /// Nothing between `://` and the path.
    #[error("storage endpoint {0:?} names no host")]
    NoHost(String),
    /// `user:password@host`: not shown, it may hold a secret.
    #[error(
        "storage endpoint must not hold a user name or password (user@host): the access key belongs in the credentials Secret"
    )]
    Userinfo,
    /// A query or fragment, which S3 requests cannot carry on the endpoint.
    #[error("storage endpoint {0:?} must not have a query (?) or fragment (#)")]
    QueryOrFragment(String),
    /// A host with characters no host name has, or a port that is not one.
    #[error("storage endpoint {0:?} has an invalid host or port")]
    HostOrPort(String),
    /// A bucket name that cannot go into a path.
    #[error("bucket name {0:?} is not valid: letters, digits, dots, hyphens and underscores only")]
    Bucket(String),
    /// Virtual-hosted style on an endpoint named by IP address.
    #[error(
        "virtual-hosted addressing (pathStyle: false) puts the bucket into the endpoint's host name, and endpoint {0:?} is an IP address: set pathStyle: true, or give the store's DNS name"
    )]
    IpHost(String),
    /// Virtual-hosted style with a bucket name that is not a host name.
    #[error(
        "virtual-hosted addressing (pathStyle: false) puts the bucket into a host name, and {0:?} is not one (3 to 63 lower-case letters, digits, hyphens and dots, each part starting and ending with a letter or digit): set pathStyle: true"
    )]
    BucketNotHostName(String),
    /// Virtual-hosted style over HTTPS with dots in the bucket name.
    #[error(
        "bucket {bucket:?} has dots, so virtual-hosted addressing (pathStyle: false) over HTTPS would send requests to {bucket}.{host}, which the store's wildcard certificate (*.{host}) does not cover: set pathStyle: true, or use a bucket name without dots"
    )]
    DottedBucketOverTls {
        /// The bucket.
        bucket: String,
        /// The endpoint's host.
        host: String,
    },
}

/// The URL of one bucket, built by [`bucket_url`]: objects are
/// `<this>/<key>`. Never ends in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    url: String,
    https: bool,
    path_style: bool,
}

impl BucketUrl {
    /// The bucket's URL: `http://garage:3900/recordings` (path style),
    /// `https://recordings.s3.eu-west-1.amazonaws.com` (virtual-hosted).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// A request on the bucket itself, `query` its sub-resource
    /// (`?lifecycle`, or empty for HeadBucket): `http://garage:3900/recordings?lifecycle`,
    /// `https://recordings.s3.eu-west-1.amazonaws.com/?lifecycle`.
    pub fn bucket_request(&self, query: &str) -> String {
        if self.path_style {
            format!("{}{query}", self.url)
        } else {
            format!("{}/{query}", self.url)
        }
    }

    /// An object's URL, the key percent-encoded as S3 signs it (everything
    /// but letters, digits, `-._~` and the `/` between segments; the same
    /// set `object_store` encodes).
    pub fn object(&self, key: &str) -> String {
        let mut url = String::with_capacity(self.url.len() + 1 + key.len() * 3);
        url.push_str(&self.url);
        url.push('/');
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url
    }
}

impl std::fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// The URL of `bucket` at `endpoint`, path style or virtual-hosted (see the
/// module's rule).
pub fn bucket_url(
    endpoint: &str,
    bucket: &str,
    path_style: bool,
) -> Result<BucketUrl, AddressError> {
    let shown = || endpoint.chars().take(200).collect::<String>();
    let (scheme, rest) = endpoint
        .trim()
        .split_once("://")
        .ok_or_else(|| AddressError::Scheme(shown()))?;
    let https = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(AddressError::Scheme(shown()));
    };
    if rest.contains(['?', '#']) {
        return Err(AddressError::QueryOrFragment(shown()));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(AddressError::Userinfo);
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AddressError::HostOrPort(shown()));
    }
    let path = path.trim_end_matches('/');
    let (host, port) =
        split_host_port(authority).ok_or_else(|| AddressError::HostOrPort(shown()))?;
    if host.is_empty() {
        return Err(AddressError::NoHost(shown()));
    }
    let ipv6 = host.starts_with('[');
    let host_chars = if ipv6 {
        // `split_host_port` returned `[` … `]`: both brackets are there.
        host.len() > 2
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !host_chars {
        return Err(AddressError::HostOrPort(shown()));
    }
    let host = host.to_ascii_lowercase();
    let scheme = if https { "https" } else { "http" };
    let default_port = if https { 443 } else { 80 };
    let port = match port {
        Some(p) if p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    let url = if path_style {
        if bucket.is_empty()
            || bucket.len() > 255
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(AddressError::Bucket(bucket.chars().take(300).collect()));
        }
        format!("{scheme}://{host}{port}{path}/{bucket}")
    } else {
        if ipv6 || host.parse::<Ipv4Addr>().is_ok() {
            return Err(AddressError::IpHost(shown()));
        }
        if !host_name_bucket(bucket) {
            return Err(AddressError::BucketNotHostName(
                bucket.chars().take(300).collect(),
            ));
        }
        if https && bucket.contains('.') {
            return Err(AddressError::DottedBucketOverTls {
                bucket: bucket.to_owned(),
                host,
            });
        }
        format!("{scheme}://{bucket}.{host}{port}{path}")
    };
    Ok(BucketUrl {
        url,
        https,
        path_style,
    })
}

/// `host` and its port, `None` when the port is not a number from 1 to
/// 65535 or an IPv6 literal is not closed.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (host, rest) = authority.split_at(end);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|&p| p != 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Whether a bucket name can be the first labels of a host name, as S3's
/// rules for virtual-hosted buckets say: 3 to 63 characters, lower-case
/// letters, digits, hyphens and dots, each label starting and ending with
/// a letter or digit, not shaped like an IPv4 address.
fn host_name_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.parse::<Ipv4Addr>().is_err()
        && bucket.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(endpoint: &str, bucket: &str, path_style: bool) -> String {
        bucket_url(endpoint, bucket, path_style)
            .unwrap_or_else(|e| panic!("{endpoint} {bucket} {path_style}: {e}"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn path_style_puts_the_bucket_first_in_the_path() {
        for (endpoint, want) in [
            ("http://garage:3900", "http://garage:3900/recordings"),
            ("http://garage:3900/", "http://garage:3900/recordings"),
            ("http://garage:3900//", "http://garage:3900/recordings"),
            (
                "https://s3.eu-west-1.amazonaws.com",
                "https://s3.eu-west-1.amazonaws.com/recordings",
            ),
            ("http://127.0.0.1:3900", "http://127.0.0.1:3900/recordings"),
            ("http://[::1]:3900/", "http://[::1]:3900/recordings"),
            ("http://[::1]", "http://[::1]/recordings"),
            ("http://minio:9000/s3/", "http://minio:9000/s3/recordings"),
            // Default ports dropped, scheme and host lower-cased: signed as sent.
            (
                "https://s3.example.com:443",
                "https://s3.example.com/recordings",
            ),
            ("http://garage:80/", "http://garage/recordings"),
            (
                "HTTP://Garage.Storage.svc:3900",
                "http://garage.storage.svc:3900/recordings",
            ),
            ("  http://garage:3900  ", "http://garage:3900/recordings"),
        ] {
            assert_eq!(url(endpoint, "recordings", true), want, "{endpoint}");
        }
        // Dots are fine in a path, over TLS too.
        assert_eq!(
            url("https://s3.example.com", "acme.recordings", true),
            "https://s3.example.com/acme.recordings"
        );
        // Legacy names (upper case, underscores) work path style only.
        assert_eq!(
            url("https://s3.amazonaws.com", "Old_Bucket", true),
            "https://s3.amazonaws.com/Old_Bucket"
        );
    }

    #[test]
    fn virtual_hosted_puts_the_bucket_before_the_host() {
        for (endpoint, want) in [
            (
                "https://s3.eu-west-1.amazonaws.com",
                "https://recordings.s3.eu-west-1.amazonaws.com",
            ),
            (
                "https://s3.eu-west-1.amazonaws.com/",
                "https://recordings.s3.eu-west-1.amazonaws.com",
            ),
            ("http://garage:3900", "http://recordings.garage:3900"),
            ("http://garage:3900///", "http://recordings.garage:3900"),
            (
                "http://s3.garage.localhost:3900",
                "http://recordings.s3.garage.localhost:3900",
            ),
            (
                "https://s3.example.com:8443",
                "https://recordings.s3.example.com:8443",
            ),
            (
                "https://s3.example.com:443/",
                "https://recordings.s3.example.com",
            ),
            ("http://minio:9000/s3/", "http://recordings.minio:9000/s3"),
            (
                "HTTPS://S3.Example.COM",
                "https://recordings.s3.example.com",
            ),
        ] {
            assert_eq!(url(endpoint, "recordings", false), want, "{endpoint}");
        }
        // Without TLS a dotted name is only a longer host name.
        assert_eq!(
            url("http://garage:3900", "acme.recordings", false),
            "http://acme.recordings.garage:3900"
        );
    }

    #[test]
    fn requests_on_the_bucket_and_its_objects() {
        let path = bucket_url("http://garage:3900/", "recordings", true).unwrap();
        assert_eq!(
            path.bucket_request("?lifecycle"),
            "http://garage:3900/recordings?lifecycle"
        );
        assert_eq!(path.bucket_request(""), "http://garage:3900/recordings");
        assert_eq!(
            path.object("acme/office/2026/12/06/x.mp3"),
            "http://garage:3900/recordings/acme/office/2026/12/06/x.mp3"
        );
        assert!(!path.is_https());
        let vhost = bucket_url("https://s3.eu-west-1.amazonaws.com", "recordings", false).unwrap();
        assert_eq!(
            vhost.bucket_request("?lifecycle"),
            "https://recordings.s3.eu-west-1.amazonaws.com/?lifecycle"
        );
        assert_eq!(
            vhost.bucket_request(""),
            "https://recordings.s3.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            vhost.object("acme/office/.earshot-probe/00ff"),
            "https://recordings.s3.eu-west-1.amazonaws.com/acme/office/.earshot-probe/00ff"
        );
        assert!(vhost.is_https());
        // Characters a policy's prefix may hold, and any other, encoded once.
        assert_eq!(
            vhost.object("a!b*c'd(e)f~g h/é+%"),
            "https://recordings.s3.eu-west-1.amazonaws.com/a%21b%2Ac%27d%28e%29f~g%20h/%C3%A9%2B%25"
        );
        assert_eq!(vhost.to_string(), vhost.as_str());
    }

    #[test]
    fn virtual_hosted_is_refused_where_it_cannot_work() {
        let err = |endpoint: &str, bucket: &str| bucket_url(endpoint, bucket, false).unwrap_err();
        assert_eq!(
            err("http://127.0.0.1:3900", "recordings"),
            AddressError::IpHost("http://127.0.0.1:3900".into())
        );
        assert_eq!(
            err("http://[::1]:3900", "recordings"),
            AddressError::IpHost("http://[::1]:3900".into())
        );
        let dotted = err("https://s3.eu-west-1.amazonaws.com", "acme.recordings");
        assert_eq!(
            dotted,
            AddressError::DottedBucketOverTls {
                bucket: "acme.recordings".into(),
                host: "s3.eu-west-1.amazonaws.com".into()
            }
        );
        assert_eq!(
            dotted.to_string(),
            "bucket \"acme.recordings\" has dots, so virtual-hosted addressing (pathStyle: false) over HTTPS would send requests to acme.recordings.s3.eu-west-1.amazonaws.com, which the store's wildcard certificate (*.s3.eu-west-1.amazonaws.com) does not cover: set pathStyle: true, or use a bucket name without dots"
        );
        for bad in [
            "Recordings",
            "my_bucket",
            "ab",
            "-recordings",
            "recordings-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "",
            &"a".repeat(64),
        ] {
            assert_eq!(
                err("http://garage:3900", bad),
                AddressError::BucketNotHostName(bad.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoints_that_name_no_store_are_refused() {
        for style in [true, false] {
            let err = |endpoint: &str| bucket_url(endpoint, "recordings", style).unwrap_err();
            assert_eq!(
                err("garage:3900"),
                AddressError::Scheme("garage:3900".into())
            );
            assert_eq!(
                err("ftp://garage"),
                AddressError::Scheme("ftp://garage".into())
            );
            assert_eq!(err("http://"), AddressError::NoHost("http://".into()));
            assert_eq!(
                err("http:///recordings"),
                AddressError::NoHost("http:///recordings".into())
            );
            assert_eq!(
                err("http://:3900"),
                AddressError::NoHost("http://:3900".into())
            );
            assert_eq!(err("http://key:secret@garage:3900"), AddressError::Userinfo);
            assert!(!AddressError::Userinfo.to_string().contains("secret"));
            for bad in ["http://garage:3900?x=1", "http://garage:3900/#top"] {
                assert_eq!(err(bad), AddressError::QueryOrFragment(bad.into()));
            }
            for bad in [
                "http://garage:0",
                "http://garage:65536",
                "http://garage:",
                "http://garage:39a0",
                "http://[::1",
                "http://[::1]x",
                "http://[fe80::1%eth0]:3900",
                "http://gar age:3900",
                "http://garage%2e:3900",
                "http://garage:3900/a b",
            ] {
                assert_eq!(err(bad), AddressError::HostOrPort(bad.into()), "{bad}");
            }
        }
        for bad in ["", "a/b", "a?b", "a b", "é"] {
            assert_eq!(
                bucket_url("http://garage:3900", bad, true).unwrap_err(),
                AddressError::Bucket(bad.into())
            );
        }
    }
}
