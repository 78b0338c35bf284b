//! OTLP/HTTP trace export (`--otlp-endpoint`), shared by the control plane and the daemon.
//!
//! The binaries already describe their work as `tracing` spans (a daemon's session with its
//! daemon id and SPIFFE ID, an attestation, a captured connection with its addresses, workload
//! and peer identity, an mTLS handshake with both identities). This module turns those spans
//! into OpenTelemetry spans and ships them as OTLP protobuf over plain HTTP to a collector,
//! normally a local agent (`http://127.0.0.1:4318`).
//!
//! Why this shape:
//! - Export runs on its own small runtime thread, with a hyper client, so it works the same
//!   under the control plane's multi-threaded runtime and the daemon's, never competes with
//!   their tasks, and adds no second TLS stack: the endpoint is `http://` only (a collector on
//!   the node or in the pod terminates anything further).
//! - Spans are batched and sent in the background; a collector that is down costs dropped
//!   spans, never a blocked connection.
//! - [`OtlpGuard`] flushes on drop, so the last spans before a clean shutdown arrive.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use thiserror::Error;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Path OTLP/HTTP collectors serve traces on, appended when the endpoint has no path.
pub const TRACES_PATH: &str = "/v1/traces";
/// One export request may take this long before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Cap on a collector's answer (the OTLP response is a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;

/// Why telemetry could not be set up.
#[derive(Debug, Error)]
pub enum TelemetryError {
    #[error("--otlp-endpoint {0:?}: must be an http:// URL such as http://127.0.0.1:4318 (https is not supported: use a local collector)")]
    Endpoint(String),
    #[error("cannot start the OTLP export thread: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// The full URL spans are posted to: `endpoint`, plus [`TRACES_PATH`] if it has no path.
pub fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let bad = || TelemetryError::Endpoint(endpoint.to_owned());
    let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(char::is_whitespace) || authority.contains('@') {
        return Err(bad());
    }
    let url = if path.is_empty() || path == "/" {
        format!("http://{authority}{TRACES_PATH}")
    } else {
        format!("http://{authority}{path}")
    };
    url.parse::<hyper::Uri>().map_err(|_| bad())?;
    Ok(url)
}

/// Keeps the exporter alive; dropping it flushes what is buffered and stops the export thread.
pub struct OtlpGuard {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("otlp: flushing spans at shutdown failed: {e}");
        }
        if let Some(rt) = self.runtime.take() {
            // Allowed from inside another runtime, unlike a plain drop.
            rt.shutdown_background();
        }
    }
}

/// A `tracing` layer exporting spans to `endpoint` as `service_name`, and its guard.
/// Compose it with the binary's own fmt layer and filter:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// let (otlp, _guard) = riptides_wire::telemetry::otlp_layer("riptides-controlplane", "http://127.0.0.1:4318")?;
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::EnvFilter::new("info"))
///     .with(tracing_subscriber::fmt::layer())
///     .with(otlp)
///     .init();
/// # Ok::<(), riptides_wire::telemetry::TelemetryError>(())
/// ```
pub fn otlp_layer<S>(service_name: &str, endpoint: &str) -> Result<(impl Layer<S>, OtlpGuard), TelemetryError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let url = traces_url(endpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    let client =
        HyperClient { handle: runtime.handle().clone(), client: Client::builder(TokioExecutor::new()).build_http() };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("riptides");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((layer, OtlpGuard { provider, runtime: Some(runtime) }))
}

/// OTLP's HTTP client: hyper on the export runtime, whatever thread the batch processor
/// calls from.
#[derive(Debug, Clone)]
struct HyperClient {
    handle: tokio::runtime::Handle,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(parts, Full::new(body));
        let task = self.handle.spawn(async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request)).await??;
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout(EXPORT_TIMEOUT, Limited::new(body, MAX_RESPONSE).collect())
                .await?
                .map_err(|e| -> HttpError { e })?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://c:1/custom/path").unwrap(), "http://c:1/custom/path");
        for bad in ["https://c:4318", "127.0.0.1:4318", "http://", "http:///x", "http://u@c:1", "grpc://c"] {
            let e = traces_url(bad).unwrap_err().to_string();
            assert!(e.contains("--otlp-endpoint"), "{bad}: {e}");
        }
    }
}
