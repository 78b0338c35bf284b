//! The server URL from the kubeconfig and the REST paths of the resource API.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::ApiError;
use crate::resource::ResourceType;

/// Characters escaped inside one path segment or query value.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'/')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `https://host[:port][/prefix]` from a kubeconfig's `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// Host without IPv6 brackets (what to dial and the default TLS server name).
    pub host: String,
    pub port: u16,
    /// `host:port` as sent in the `Host` header (IPv6 in brackets).
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

impl ServerUrl {
    pub fn parse(url: &str) -> Result<Self, ApiError> {
        let bad = |reason: &str| ApiError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        let rest = match url.get(..8) {
            Some(s) if s.eq_ignore_ascii_case("https://") => &url[8..],
            _ => return Err(bad("only https:// URLs are supported")),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unterminated IPv6 address"))?;
            let host = &v6[..end];
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after the IPv6 address")),
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("invalid IPv6 address"));
            }
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("invalid port"))?,
            None => 443,
        };
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(ServerUrl { host: host.to_owned(), port, authority, prefix: prefix.to_owned() })
    }
}

/// `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}]`.
///
/// `namespace` is ignored for cluster-scoped kinds; `None` for a namespaced kind means all
/// namespaces (only meaningful for list and watch).
pub fn resource_path(rt: &ResourceType, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut p = format!("/apis/{}/{}", enc(rt.group), enc(rt.version));
    if rt.namespaced {
        if let Some(ns) = namespace {
            p.push_str("/namespaces/");
            p.push_str(&enc(ns));
        }
    }
    p.push('/');
    p.push_str(&enc(rt.plural));
    if let Some(n) = name {
        p.push('/');
        p.push_str(&enc(n));
    }
    p
}

/// Path and query of a watch.
pub fn watch_path(rt: &ResourceType, namespace: Option<&str>, resource_version: Option<&str>) -> String {
    let mut p = resource_path(rt, namespace, None);
    p.push_str("?watch=1");
    if let Some(rv) = resource_version {
        p.push_str("&resourceVersion=");
        p.push_str(&enc(rv));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::by_name;

    #[test]
    fn builds_kubernetes_paths() {
        let wi = by_name("wi").unwrap();
        assert_eq!(
            resource_path(wi, Some("riptides-system"), Some("frontend")),
            "/apis/core.riptides.io/v1alpha1/namespaces/riptides-system/workloadidentities/frontend"
        );
        assert_eq!(
            resource_path(wi, Some("ns"), None),
            "/apis/core.riptides.io/v1alpha1/namespaces/ns/workloadidentities"
        );
        assert_eq!(resource_path(wi, None, None), "/apis/core.riptides.io/v1alpha1/workloadidentities");
        let jt = by_name("jointokens").unwrap();
        assert_eq!(
            resource_path(jt, Some("a"), Some("x/../y")),
            "/apis/auth.riptides.io/v1alpha1/namespaces/a/jointokens/x%2F..%2Fy"
        );
        assert_eq!(watch_path(jt, None, None), "/apis/auth.riptides.io/v1alpha1/jointokens?watch=1");
        assert_eq!(
            watch_path(jt, Some("a"), Some("42")),
            "/apis/auth.riptides.io/v1alpha1/namespaces/a/jointokens?watch=1&resourceVersion=42"
        );
        assert_eq!(
            watch_path(jt, Some("a"), Some("1&x=2")),
            "/apis/auth.riptides.io/v1alpha1/namespaces/a/jointokens?watch=1&resourceVersion=1%26x%3D2"
        );
    }

    #[test]
    fn parses_server_urls() {
        let u = ServerUrl::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str(), u.prefix.as_str()),
            ("127.0.0.1", 8443, "127.0.0.1:8443", "")
        );
        let u = ServerUrl::parse("HTTPS://cp.example.com/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("cp.example.com", 443, ""));
        let u = ServerUrl::parse("https://[::1]:9/k8s/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str(), u.prefix.as_str()), ("::1", 9, "[::1]:9", "/k8s"));
        for bad in [
            "http://127.0.0.1:8443",
            "https://",
            "https://h:0",
            "https://h:x",
            "https://u@h",
            "https://[::1",
            "https://[zz]:1",
            "https://h/?a",
            "127.0.0.1:8443",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
