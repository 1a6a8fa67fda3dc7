//! Who may use the page, and who they are. Every request to the page goes
//! through [`check`] before any handler:
//!
//! * the `Host` header must be a loopback name (`kubectl port-forward`) or
//!   one of the configured hosts — a page reached through a DNS-rebinding
//!   name is refused;
//! * with trusted proxies configured (an exposed console), only they may
//!   connect; loopback (`kubectl port-forward`, or a sidecar in the pod —
//!   a service mesh's proxy would bring in everyone it admits) only when
//!   `allow_loopback` says so, and then anonymously;
//! * the signed-in user is read from the configured identity header, only
//!   when the connection comes from a trusted proxy, only when it is there
//!   exactly once. No header is trusted by default, and none from loopback
//!   unless loopback is itself listed as a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use earshot_contracts::net::IpNet;

/// The page's access rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The header an authenticating proxy names the user in.
    pub identity_header: Option<HeaderName>,
    /// Where that proxy connects from. Non-empty: nobody else may connect
    /// (loopback only with `allow_loopback`).
    pub proxies: Vec<IpNet>,
    /// Whether loopback may connect although `proxies` does not list it
    /// (anonymously). Without proxies the listen address decides who can
    /// connect, and this does not matter.
    pub allow_loopback: bool,
    /// Host names answered besides loopback's, lower case.
    pub hosts: Vec<String>,
}

/// Who made a request, for the audit log: the proxy's user, or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who(pub String);

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status.
    pub status: StatusCode,
    /// Said to the client.
    pub message: String,
}

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

/// The host name of a `Host` header value (without port or brackets).
fn host_name(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    value.rsplit_once(':').map_or(value, |(h, _)| h)
}

fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Access {
    /// Parses the settings as flags and the environment give them.
    pub fn new(
        identity_header: Option<&str>,
        proxies: &[String],
        hosts: &[String],
        allow_loopback: bool,
    ) -> Result<Access, String> {
        let identity_header = identity_header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                HeaderName::try_from(h).map_err(|_| format!("{h:?} is not an HTTP header name"))
            })
            .transpose()?;
        let proxies = proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| IpNet::parse(p).ok_or_else(|| format!("{p:?} is not a CIDR")))
            .collect::<Result<Vec<_>, _>>()?;
        if identity_header.is_some() && proxies.is_empty() {
            return Err(
                "an identity header needs the proxies it is trusted from (--trusted-proxy)".into(),
            );
        }
        Ok(Access {
            identity_header,
            proxies,
            allow_loopback,
            hosts: hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        })
    }

    /// Decides one request: who it is from, or why it is refused.
    pub fn decide(&self, peer: IpAddr, headers: &HeaderMap) -> Result<Who, Refused> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_name)
            .unwrap_or("");
        if !is_loopback_name(host) && !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(refused(
                StatusCode::MISDIRECTED_REQUEST,
                "This console does not answer to that host name.",
            ));
        }
        let from_proxy = self.proxies.iter().any(|n| n.contains(peer));
        let admitted_loopback = self.allow_loopback && peer.is_loopback();
        if !from_proxy && !admitted_loopback && !self.proxies.is_empty() {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "Only the platform's authenticating proxy may reach this console.",
            ));
        }
        let Some(name) = self.identity_header.as_ref().filter(|_| from_proxy) else {
            return Ok(Who("-".into()));
        };
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => {
                let user = v.to_str().unwrap_or("").trim();
                if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
                    Err(refused(
                        StatusCode::BAD_REQUEST,
                        format!("The {name} header does not name a user."),
                    ))
                } else {
                    Ok(Who(user.to_owned()))
                }
            }
            (None, _) => Err(refused(
                StatusCode::UNAUTHORIZED,
                format!("The proxy did not name the signed-in user ({name})."),
            )),
            (Some(_), Some(_)) => Err(refused(
                StatusCode::BAD_REQUEST,
                format!("More than one {name} header."),
            )),
        }
    }
}

/// The middleware: refuses what [`Access::decide`] refuses, and hands the
/// handlers a [`Who`].
pub async fn check(
    State(access): State<Arc<Access>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    match access.decide(peer.ip(), req.headers()) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(r) => {
            tracing::warn!(
                target: "earshot_console::audit",
                status = r.status.as_u16(),
                "request refused"
            );
            (r.status, r.message).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn by_default_only_loopback_names_and_no_identity() {
        let a = Access::default();
        let local = ip("127.0.0.1");
        for host in [
            "localhost:8080",
            "127.0.0.1:41234",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert_eq!(
                a.decide(
                    local,
                    &headers(&[("host", host), ("x-forwarded-user", "mallory")])
                ),
                Ok(Who("-".into())),
                "{host}: the header is not trusted"
            );
        }
        // DNS rebinding: a name that resolves to 127.0.0.1, or no Host at all.
        for h in [
            headers(&[("host", "rebind.attacker.example:8080")]),
            headers(&[]),
        ] {
            assert_eq!(
                a.decide(local, &h).unwrap_err().status,
                StatusCode::MISDIRECTED_REQUEST
            );
        }
    }

    #[test]
    fn an_exposed_console_trusts_only_its_proxy() {
        let a = Access::new(
            Some("X-Forwarded-User"),
            &["10.8.0.0/16".into()],
            &[
                "recordings.example.com".into(),
                "earshot-office-console.acme.svc".into(),
            ],
            true,
        )
        .unwrap();
        let proxy = ip("10.8.3.4");
        let host = ("host", "recordings.example.com");
        assert_eq!(
            a.decide(proxy, &headers(&[host, ("x-forwarded-user", "alice")])),
            Ok(Who("alice".into()))
        );
        // Another pod, even naming a user and the right host.
        let other = a
            .decide(
                ip("10.9.0.7"),
                &headers(&[host, ("x-forwarded-user", "alice")]),
            )
            .unwrap_err();
        assert_eq!(other.status, StatusCode::FORBIDDEN);
        // The proxy forwarded a client's own header next to its own.
        let twice = a
            .decide(
                proxy,
                &headers(&[
                    host,
                    ("x-forwarded-user", "mallory"),
                    ("x-forwarded-user", "alice"),
                ]),
            )
            .unwrap_err();
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
        // Other identity headers mean nothing.
        let none = a
            .decide(proxy, &headers(&[host, ("x-remote-user", "alice")]))
            .unwrap_err();
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        // Port-forward, allowed here, works anonymously.
        assert_eq!(
            a.decide(
                ip("127.0.0.1"),
                &headers(&[("host", "localhost:9000"), ("x-forwarded-user", "x")])
            ),
            Ok(Who("-".into()))
        );
        assert_eq!(
            a.decide(proxy, &headers(&[("host", "evil.example")]))
                .unwrap_err()
                .status,
            StatusCode::MISDIRECTED_REQUEST
        );
    }

    #[test]
    fn loopback_is_no_proxy_unless_configured() {
        let proxied = |allow_loopback| {
            Access::new(
                Some("X-Forwarded-User"),
                &["10.8.0.0/16".into()],
                &[],
                allow_loopback,
            )
            .unwrap()
        };
        let h = headers(&[("host", "localhost:8080"), ("x-forwarded-user", "alice")]);
        // By default a connection from inside the pod (a port-forward, a
        // mesh sidecar relaying anyone) is refused, naming a user or not.
        for peer in ["127.0.0.1", "127.0.0.6", "::1"] {
            assert_eq!(
                proxied(false).decide(ip(peer), &h).unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{peer}"
            );
            // Admitted when configured, and even then its header names nobody.
            assert_eq!(
                proxied(true).decide(ip(peer), &h),
                Ok(Who("-".into())),
                "{peer}"
            );
        }
        // Loopback listed as the proxy itself: then, and only then, believed.
        let local_proxy = Access::new(
            Some("X-Forwarded-User"),
            &["127.0.0.1/32".into()],
            &[],
            false,
        )
        .unwrap();
        assert_eq!(
            local_proxy.decide(ip("127.0.0.1"), &h),
            Ok(Who("alice".into()))
        );
        assert_eq!(
            local_proxy.decide(ip("127.0.0.2"), &h).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(Access::new(Some("X-Forwarded-User"), &[], &[], false).is_err());
        assert!(Access::new(None, &["10.0.0.0/40".into()], &[], false).is_err());
        assert!(Access::new(Some("bad header"), &["10.0.0.0/8".into()], &[], false).is_err());
    }
}
