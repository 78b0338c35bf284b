//! A minimal HTTP/1.0 client for instance metadata services (plain HTTP on a link-local
//! address): one request per connection, bounded response, no redirects, no chunking (HTTP/1.0
//! responses are delimited by the connection's end or Content-Length).

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Largest response accepted (identity documents and tokens are a few KiB).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// `http://host[:port]` split into the address to dial and the `Host` header.
fn authority(base: &str) -> Result<(String, String)> {
    let rest =
        base.strip_prefix("http://").ok_or_else(|| anyhow!("{base}: only http:// metadata URLs are supported"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        bail!("{base}: no host");
    }
    let dial = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Ok((dial, host.to_owned()))
}

/// `METHOD base+path` with `headers`; returns the status and the body.
pub async fn request(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let (dial, host) = authority(base.trim_end_matches('/'))?;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&dial).await.with_context(|| format!("connecting to {dial}"))?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n");
        for (k, v) in headers {
            if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
                bail!("header {k} holds a line break");
            }
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE {
                bail!("the response is larger than {MAX_RESPONSE} bytes");
            }
        }
        parse(&buf)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{method} {base}{path}: timed out after {timeout:?}"))?
}

fn parse(buf: &[u8]) -> Result<(u16, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| anyhow!("malformed HTTP response head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let mut body = buf[end + 4..].to_vec();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().map_err(|_| anyhow!("bad Content-Length"))?;
                if n > body.len() {
                    bail!("truncated response body");
                }
                body.truncate(n);
            }
            if k.trim().eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported");
            }
        }
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_and_urls() {
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi!").unwrap(), (200, b"hi".to_vec()));
        assert_eq!(parse(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap(), (404, b"nope".to_vec()));
        assert!(parse(b"garbage").is_err());
        assert_eq!(authority("http://169.254.169.254").unwrap().0, "169.254.169.254:80");
        assert_eq!(authority("http://127.0.0.1:8080/x").unwrap(), ("127.0.0.1:8080".into(), "127.0.0.1:8080".into()));
        assert!(authority("https://x").is_err());
    }
}
