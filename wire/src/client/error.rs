//! Errors of the API client.

use crate::resource::Status;

/// Anything that can go wrong talking to the control plane's resource API.
///
/// A reply from the server that is not 2xx is always [`ApiError::Status`], carrying the
/// Kubernetes `Status` the server sent (or one synthesised from the HTTP status when the body
/// was not a `Status`). Every other variant says which step failed and against what.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a non-2xx status.
    #[error("{}", status_display(.0))]
    Status(Status),

    #[error("cannot read kubeconfig {path}: {source}")]
    KubeconfigRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: crate::kubeconfig::KubeconfigError,
    },
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid TLS configuration: {0}")]
    TlsConfig(String),

    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {secs}s")]
    ConnectTimeout { addr: String, secs: u64 },
    #[error("TLS handshake with {addr} (server name {server_name}) failed: {source}")]
    Tls {
        addr: String,
        server_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP error on {method} {path}: {source}")]
    Http {
        method: String,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("cannot build request {method} {path}: {reason}")]
    Request { method: String, path: String, reason: String },
    #[error("{method} {path} timed out after {secs}s")]
    Timeout { method: String, path: String, secs: u64 },
    #[error("response to {method} {path} is larger than {limit} bytes")]
    BodyTooLarge { method: String, path: String, limit: usize },
    #[error("cannot decode response to {method} {path}: {source}")]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode request body for {method} {path}: {source}")]
    Encode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("watch {path}: event line longer than {limit} bytes")]
    WatchLineTooLong { path: String, limit: usize },
}

fn status_display(s: &Status) -> String {
    let mut message = s.message.clone();
    if message.is_empty() {
        if let Some(d) = &s.details {
            message = d.causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", ");
        }
    }
    if message.is_empty() {
        message = format!("HTTP {}", s.code);
    }
    if s.reason.is_empty() {
        format!("error from server: {message}")
    } else {
        format!("error from server ({}): {message}", s.reason)
    }
}

impl ApiError {
    /// The server's `Status`, when the server answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ApiError::Status(s) => Some(s),
            _ => None,
        }
    }

    /// HTTP status code of a server refusal.
    pub fn code(&self) -> Option<u16> {
        self.status().map(|s| s.code)
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409: stale `resourceVersion` or the object already exists.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// 410: a watch's `resourceVersion` is too old; list again.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
}

/// Turns a non-2xx reply into a `Status`: the body if it is one, else synthesised.
pub(crate) fn status_from_reply(code: u16, body: &[u8]) -> Status {
    if let Ok(mut s) = serde_json::from_slice::<Status>(body) {
        if s.kind == "Status" && (s.code != 0 || !s.message.is_empty() || !s.reason.is_empty()) {
            if s.code == 0 {
                s.code = code;
            }
            return s;
        }
    }
    let reason = hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .map(|r| r.replace(' ', ""))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(512).collect();
    let message =
        if text.is_empty() { format!("the server answered HTTP {code}") } else { format!("HTTP {code}: {text}") };
    Status::failure(code, &reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_are_decoded() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"verifiers \"x\" not found","reason":"NotFound","code":404}"#;
        let s = status_from_reply(404, body);
        assert_eq!(s.reason, "NotFound");
        let e = ApiError::Status(s);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "error from server (NotFound): verifiers \"x\" not found");
    }

    #[test]
    fn other_bodies_are_synthesised() {
        let s = status_from_reply(502, b"bad gateway\n");
        assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (502, "BadGateway", "HTTP 502: bad gateway"));
        let s = status_from_reply(403, b"");
        assert_eq!(s.message, "the server answered HTTP 403");
        // JSON that is not a Status
        let s = status_from_reply(500, br#"{"a":1}"#);
        assert_eq!(s.code, 500);
        assert_eq!(s.reason, "InternalServerError");
    }
}
