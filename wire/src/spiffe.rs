//! SPIFFE IDs and trust domains, checked against every rule of the SPIFFE ID spec.
//!
//! The rules are strict on purpose: an ID that two parsers could read differently is an
//! authorization bug waiting to happen, so anything the spec does not allow is refused with
//! an error that says which rule it broke.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME_PREFIX: &str = "spiffe://";
/// Longest SPIFFE ID the spec allows, in bytes (URI form).
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name the spec allows, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    #[error(
        "trust domain has an invalid character {0:?}: only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomainChar(char),
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("path has an empty segment (\"//\")")]
    EmptySegment,
    #[error("path has a \".\" or \"..\" segment")]
    DotSegment,
    #[error("path has an invalid character {0:?}: only letters, digits, '.', '-' and '_' are allowed")]
    BadPathChar(char),
    #[error("path must not end with a slash")]
    TrailingSlash,
    #[error("path must start with a slash")]
    PathNotAbsolute,
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
}

/// A SPIFFE trust domain such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or the SPIFFE ID of a trust domain
    /// (`spiffe://example.org`).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if s.contains(":/") {
            let id = SpiffeId::parse(s)?;
            if !id.path().is_empty() {
                return Err(SpiffeIdError::BadTrustDomainChar('/'));
            }
            return Ok(id.trust_domain().clone());
        }
        validate_trust_domain(s)?;
        Ok(TrustDomain(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://example.org`).
    pub fn id(&self) -> SpiffeId {
        SpiffeId { td_len: self.0.len(), uri: format!("{SCHEME_PREFIX}{}", self.0) }
    }

    /// Builds an ID in this trust domain from a path. The path may be given with or without
    /// its leading slash (`/ns/web` or `ns/web`); it is checked like any other path.
    pub fn workload_id(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        validate_path(&path)?;
        let uri = format!("{SCHEME_PREFIX}{}{}", self.0, path);
        if uri.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(SpiffeId { td_len: self.0.len(), uri })
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A SPIFFE ID such as `spiffe://example.org/ns/prod/sa/web`.
///
/// Stored in its canonical URI form; the trust domain and path are slices of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    td_len: usize,
}

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        validate_trust_domain(td)?;
        if !path.is_empty() {
            validate_path(path)?;
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(SpiffeId { uri: s.to_owned(), td_len: td.len() })
    }

    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    pub fn trust_domain_str(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.td_len]
    }

    /// The path including its leading slash, or `""` for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len() + self.td_len..]
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid SPIFFE ID {s:?}: {e}")))
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustDomain::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid trust domain {s:?}: {e}")))
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if let Some(c) = td.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
        return Err(SpiffeIdError::BadTrustDomainChar(c));
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    Ok(())
}

/// Checks a path that starts with `/` (an empty path is checked by the caller).
fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    let rest = path.strip_prefix('/').ok_or(SpiffeIdError::PathNotAbsolute)?;
    if rest.is_empty() {
        return Err(SpiffeIdError::TrailingSlash);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(if i == last { SpiffeIdError::TrailingSlash } else { SpiffeIdError::EmptySegment });
        }
        if let Some(c) = seg.chars().find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_')) {
            return Err(SpiffeIdError::BadPathChar(c));
        }
        if *seg == "." || *seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpiffeIdError::*;

    #[test]
    fn valid_ids_round_trip() {
        for s in [
            "spiffe://example.org",
            "spiffe://example.org/workload",
            "spiffe://example.org/ns/prod/sa/web",
            "spiffe://a_b-c.d/Path.With-All_Allowed.Chars09",
            "spiffe://1.2.3.4/x",
            "spiffe://td/...", // "..." is a valid segment: only "." and ".." are forbidden
            "spiffe://td/.hidden",
        ] {
            let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.to_string(), s);
            assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
        let id = SpiffeId::parse("spiffe://example.org/ns/web").unwrap();
        assert_eq!(id.trust_domain_str(), "example.org");
        assert_eq!(id.path(), "/ns/web");
        assert!(id.is_member_of(&TrustDomain::parse("example.org").unwrap()));
        assert!(!id.is_member_of(&TrustDomain::parse("example.com").unwrap()));
        assert_eq!(SpiffeId::parse("spiffe://example.org").unwrap().path(), "");
    }

    #[test]
    fn invalid_ids_name_the_rule_they_break() {
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("http://example.org/x", WrongScheme),
            ("SPIFFE://example.org/x", WrongScheme),
            ("spiffe:/example.org/x", WrongScheme),
            ("spiffe:example.org", WrongScheme),
            ("example.org/x", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///path", MissingTrustDomain),
            ("spiffe://Example.org/x", BadTrustDomainChar('E')),
            ("spiffe://example.org:8080/x", BadTrustDomainChar(':')),
            ("spiffe://user@example.org/x", BadTrustDomainChar('@')),
            ("spiffe://exa mple.org", BadTrustDomainChar(' ')),
            ("spiffe://example.org?query", BadTrustDomainChar('?')),
            ("spiffe://exämple.org", BadTrustDomainChar('ä')),
            ("spiffe://example.org/", TrailingSlash),
            ("spiffe://example.org/a/", TrailingSlash),
            ("spiffe://example.org//a", EmptySegment),
            ("spiffe://example.org/a//b", EmptySegment),
            ("spiffe://example.org/.", DotSegment),
            ("spiffe://example.org/a/./b", DotSegment),
            ("spiffe://example.org/..", DotSegment),
            ("spiffe://example.org/a/../b", DotSegment),
            ("spiffe://example.org/a?x=1", BadPathChar('?')),
            ("spiffe://example.org/a#frag", BadPathChar('#')),
            ("spiffe://example.org/a%20b", BadPathChar('%')),
            ("spiffe://example.org/a b", BadPathChar(' ')),
            ("spiffe://example.org/a:b", BadPathChar(':')),
            ("spiffe://example.org/a@b", BadPathChar('@')),
            ("spiffe://example.org/ü", BadPathChar('ü')),
        ];
        for (s, want) in cases {
            assert_eq!(SpiffeId::parse(s).as_ref().err(), Some(want), "{s:?}");
        }
    }

    #[test]
    fn length_limits() {
        let td255 = "a".repeat(255);
        assert!(SpiffeId::parse(&format!("spiffe://{td255}")).is_ok());
        assert_eq!(SpiffeId::parse(&format!("spiffe://{}", "a".repeat(256))), Err(TrustDomainTooLong));
        // Exactly 2048 bytes is allowed, one more is not.
        let prefix = "spiffe://example.org/";
        let ok = format!("{prefix}{}", "p".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(ok.len(), MAX_ID_LEN);
        assert!(SpiffeId::parse(&ok).is_ok());
        let long = format!("{ok}q");
        assert_eq!(SpiffeId::parse(&long), Err(TooLong));
        let td = TrustDomain::parse("example.org").unwrap();
        assert_eq!(td.workload_id(&"p".repeat(MAX_ID_LEN)), Err(TooLong));
    }

    #[test]
    fn trust_domains() {
        assert_eq!(TrustDomain::parse("example.org").unwrap().as_str(), "example.org");
        assert_eq!(TrustDomain::parse("spiffe://example.org").unwrap().as_str(), "example.org");
        assert!(TrustDomain::parse("spiffe://example.org/x").is_err());
        assert_eq!(TrustDomain::parse(""), Err(MissingTrustDomain));
        assert_eq!(TrustDomain::parse("Example.org"), Err(BadTrustDomainChar('E')));
        let td = TrustDomain::parse("example.org").unwrap();
        assert_eq!(td.id().to_string(), "spiffe://example.org");
        assert_eq!(td.workload_id("ns/web").unwrap().to_string(), "spiffe://example.org/ns/web");
        assert_eq!(td.workload_id("/ns/web").unwrap().to_string(), "spiffe://example.org/ns/web");
        assert_eq!(td.workload_id("ns/../web"), Err(DotSegment));
        assert_eq!(td.workload_id(""), Err(TrailingSlash));
    }

    #[test]
    fn serde_validates() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/a\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"spiffe://example.org/a\"");
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a/\"").unwrap_err();
        assert!(err.to_string().contains("must not end with a slash"), "{err}");
    }
}
