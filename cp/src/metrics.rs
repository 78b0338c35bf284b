//! Prometheus metrics of the control plane, served on the health listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    code: u16,
}

/// Every metric the control plane exports. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    api_requests: Family<RequestLabels, Counter>,
    pub watchers: Gauge,
    pub store_revision: Gauge,
    pub tls_handshake_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("riptides_cp");
        let api_requests = Family::<RequestLabels, Counter>::default();
        let watchers = Gauge::default();
        let store_revision = Gauge::default();
        let tls_handshake_failures = Counter::default();
        registry.register("api_requests", "Resource API requests by verb and status code", api_requests.clone());
        registry.register("api_watchers", "Open watch streams", watchers.clone());
        registry.register("store_revision", "Latest revision of the resource store", store_revision.clone());
        registry.register(
            "api_tls_handshake_failures",
            "Failed TLS handshakes on the API listener",
            tls_handshake_failures.clone(),
        );
        Metrics { registry, api_requests, watchers, store_revision, tls_handshake_failures }
    }

    pub fn api_request(&self, verb: &str, code: u16) {
        // Verbs are bounded by the router (unknown methods are 405 before reaching here).
        let verb = match verb {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => verb,
            _ => "OTHER",
        };
        self.api_requests.get_or_create(&RequestLabels { verb: verb.to_owned(), code }).inc();
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
