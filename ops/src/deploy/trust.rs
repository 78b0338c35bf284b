//! Trust-domain consistency across an environment's values files.
//!
//! The trust domain names every SPIFFE ID; a daemon whose trust domain differs from its control
//! plane's cannot authenticate it, and changing it later means re-attesting every daemon. So a
//! deploy in which two values files disagree is refused before anything is installed.
//!
//! Every key named `trustDomain`, at any depth (`trustDomain`, `global.trustDomain`, ...), is a
//! statement about the trust domain. The charts that always carry one (`controlplane`,
//! `daemon`) default to `riptides.local` when their values file says nothing, and that default
//! takes part in the comparison: a control plane on `example.com` with a daemon left on the
//! default is exactly the mistake this check exists for.

use riptides_wire::TrustDomain;
use serde_yaml_ng::Value;
use thiserror::Error;

/// Charts whose templates always pass a trust domain, and so have one even when unset.
pub const CHARTS_WITH_TRUST_DOMAIN: &[&str] = &["controlplane", "daemon"];
/// The default of those charts' `values.yaml` (and of both binaries).
pub const CHART_DEFAULT: &str = "riptides.local";

/// Where a trust domain came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The values file (as named in `deploy.yaml`).
    pub file: String,
    /// Dotted key path, or `(chart default)`.
    pub key: String,
    pub value: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("{file}: {key}: {value:?} is not a valid SPIFFE trust domain: {reason}")]
    Invalid { file: String, key: String, value: String, reason: String },
    #[error("{file}: {key} must be a string")]
    NotAString { file: String, key: String },
    #[error("inconsistent trust domain: {}; the control plane and every daemon must use one trust domain", list(.0))]
    Inconsistent(Vec<Statement>),
}

fn list(s: &[Statement]) -> String {
    s.iter().map(|s| format!("{} {} = {}", s.file, s.key, s.value)).collect::<Vec<_>>().join(", ")
}

/// The trust domain statements of one values file (already rendered and parsed).
pub fn statements(file: &str, chart: &str, values: &Value) -> Result<Vec<Statement>, TrustError> {
    let mut out = Vec::new();
    collect(file, values, &mut String::new(), &mut out)?;
    if out.is_empty() && CHARTS_WITH_TRUST_DOMAIN.contains(&chart) {
        out.push(Statement { file: file.to_owned(), key: "(chart default)".into(), value: CHART_DEFAULT.into() });
    }
    Ok(out)
}

fn collect(file: &str, v: &Value, path: &mut String, out: &mut Vec<Statement>) -> Result<(), TrustError> {
    let Value::Mapping(m) = v else { return Ok(()) };
    for (k, child) in m {
        let Some(k) = k.as_str() else { continue };
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
        if k == "trustDomain" {
            let Some(value) = child.as_str() else {
                return Err(TrustError::NotAString { file: file.to_owned(), key: path.clone() });
            };
            TrustDomain::parse(value).map_err(|e| TrustError::Invalid {
                file: file.to_owned(),
                key: path.clone(),
                value: value.to_owned(),
                reason: e.to_string(),
            })?;
            out.push(Statement { file: file.to_owned(), key: path.clone(), value: value.to_owned() });
        } else {
            collect(file, child, path, out)?;
        }
        path.truncate(len);
    }
    Ok(())
}

/// The one trust domain of the environment, or every statement when they disagree.
/// `None` when no file states one (only charts that carry none are deployed).
pub fn consistent(statements: &[Statement]) -> Result<Option<String>, TrustError> {
    let Some(first) = statements.first() else { return Ok(None) };
    if statements.iter().all(|s| s.value == first.value) {
        Ok(Some(first.value.clone()))
    } else {
        Err(TrustError::Inconsistent(statements.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn finds_keys_at_any_depth() {
        let s = statements("v.yaml", "frontend", &yaml("global:\n  trustDomain: example.com\nx: [1]\n")).unwrap();
        assert_eq!(
            s,
            [Statement { file: "v.yaml".into(), key: "global.trustDomain".into(), value: "example.com".into() }]
        );
        assert!(statements("v.yaml", "frontend", &yaml("a: 1")).unwrap().is_empty());
    }

    #[test]
    fn known_charts_default() {
        let s = statements("d.yaml", "daemon", &yaml("image: {tag: x}")).unwrap();
        assert_eq!(s[0].value, CHART_DEFAULT);
        assert_eq!(s[0].key, "(chart default)");
    }

    #[test]
    fn invalid_and_non_string_values_are_refused() {
        let e = statements("c.yaml", "controlplane", &yaml("trustDomain: Example.COM")).unwrap_err();
        assert!(matches!(e, TrustError::Invalid { .. }), "{e}");
        let e = statements("c.yaml", "controlplane", &yaml("trustDomain: 5")).unwrap_err();
        assert!(matches!(e, TrustError::NotAString { .. }), "{e}");
    }

    #[test]
    fn disagreement_lists_every_statement() {
        let mut all = statements("cp-values.yaml", "controlplane", &yaml("trustDomain: example.com")).unwrap();
        all.extend(statements("daemon-values.yaml", "daemon", &yaml("{}")).unwrap());
        let e = consistent(&all).unwrap_err().to_string();
        assert!(
            e.contains("cp-values.yaml trustDomain = example.com")
                && e.contains("daemon-values.yaml (chart default) = riptides.local"),
            "{e}"
        );
        assert_eq!(consistent(&all[..1]).unwrap().as_deref(), Some("example.com"));
        assert_eq!(consistent(&[]).unwrap(), None);
    }
}
