//! `.tmpl` files: `${NAME}` is replaced by the environment variable `NAME`, so secrets (OIDC
//! client secrets, join tokens) are injected at deploy time by CI and never sit in plain YAML.
//!
//! Deliberately tiny: `${NAME}` with `NAME` = `[A-Za-z_][A-Za-z0-9_]*`, `$${` for a literal
//! `${`, any other `$` kept as is (Helm values rarely contain one; a shell-like `$NAME` is
//! *not* expanded, so nothing is substituted by accident). A variable that is unset, or set
//! but empty, refuses the whole deploy: an empty secret deploys a broken environment.
//! Errors name the variable, the file and the line, never a value.

use thiserror::Error;

/// Why a template did not render.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("{file}:{line}: environment variable {var} is not set (or is empty); export it before deploying")]
    Missing { file: String, line: usize, var: String },
    #[error("{file}:{line}: `${{` without a valid variable name and closing `}}` (write $${{ for a literal ${{)")]
    Syntax { file: String, line: usize },
}

/// The result of rendering: the text and the variables it used (names only, for the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub variables: Vec<String>,
}

/// Renders `text` (from `file`) with `lookup` (normally `std::env::var`). Every missing
/// variable is found before returning, but only the first is reported.
pub fn render(file: &str, text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Rendered, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut variables: Vec<String> = Vec::new();
    let mut rest = text;
    let line_of = |offset: usize| text[..offset].bytes().filter(|&b| b == b'\n').count() + 1;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let offset = text.len() - rest.len() + pos;
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(TemplateError::Syntax { file: file.to_owned(), line: line_of(offset) });
        };
        let name = &body[..end];
        if !is_var_name(name) {
            return Err(TemplateError::Syntax { file: file.to_owned(), line: line_of(offset) });
        }
        match lookup(name).filter(|v| !v.is_empty()) {
            Some(value) => out.push_str(&value),
            None => {
                return Err(TemplateError::Missing {
                    file: file.to_owned(),
                    line: line_of(offset),
                    var: name.to_owned(),
                })
            }
        }
        if !variables.iter().any(|v| v == name) {
            variables.push(name.to_owned());
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(Rendered { text: out, variables })
}

fn is_var_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn substitutes_and_records_names() {
        let r = render("f.tmpl", "a: ${A}\nb: \"${B}-${A}\"\n", env(&[("A", "1"), ("B", "two")])).unwrap();
        assert_eq!(r.text, "a: 1\nb: \"two-1\"\n");
        assert_eq!(r.variables, ["A", "B"]);
    }

    #[test]
    fn literal_dollars_stay() {
        let r = render("f", "p: $HOME $5 $${X} end$", env(&[])).unwrap();
        assert_eq!(r.text, "p: $HOME $5 ${X} end$");
        assert!(r.variables.is_empty());
    }

    #[test]
    fn missing_and_empty_name_the_variable_file_and_line() {
        let e = render("oidc.yaml.tmpl", "x: 1\nsecret: ${OIDC_SECRET}\n", env(&[])).unwrap_err();
        assert_eq!(e, TemplateError::Missing { file: "oidc.yaml.tmpl".into(), line: 2, var: "OIDC_SECRET".into() });
        let msg = e.to_string();
        assert!(msg.contains("OIDC_SECRET") && msg.contains("oidc.yaml.tmpl:2"), "{msg}");
        let e = render("f", "${E}", env(&[("E", "")])).unwrap_err();
        assert!(matches!(e, TemplateError::Missing { ref var, .. } if var == "E"));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in ["${}", "${1A}", "${A", "${A-B}", "a\n${ A }"] {
            assert!(matches!(render("f", bad, env(&[("A", "x")])), Err(TemplateError::Syntax { .. })), "{bad}");
        }
    }
}
