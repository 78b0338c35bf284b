//! The parts of etcd's v3 JSON gateway messages this backend reads. The gateway writes int64
//! fields as strings, leaves out fields at their default value (`false`, `0`, empty lists)
//! and encodes bytes as base64, so every field here has a default and numbers accept both
//! forms.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer};

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int")]
    pub revision: i64,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(default, deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default)]
    pub more: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PutResponse {
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeleteRangeResponse {
    #[serde(default)]
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResponseOp {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
    #[serde(default)]
    pub response_put: Option<PutResponse>,
    #[serde(default)]
    pub response_delete_range: Option<DeleteRangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Event {
    /// `"PUT"` is the default and left out; `"DELETE"` is spelled.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub kv: KeyValue,
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "int")]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One message of a gateway stream: `{"result": ...}` or `{"error": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamMessage<T> {
    #[serde(default = "Option::default")]
    pub result: Option<T>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeaseGrantResponse {
    #[serde(default, rename = "ID", deserialize_with = "int")]
    pub id: i64,
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeaseKeepAliveResponse {
    #[serde(default, rename = "TTL", deserialize_with = "int")]
    pub ttl: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_gateway_json() {
        let r: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"},
            "prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}}]}"#,
        )
        .unwrap();
        assert!(r.succeeded);
        assert_eq!(r.header.revision, 3);
        let prev = r.responses[0].response_put.as_ref().unwrap().prev_kv.as_ref().unwrap();
        assert_eq!((prev.key.as_slice(), prev.value.as_slice(), prev.create_revision), (&b"foo"[..], &b"bar"[..], 2));

        let w: StreamMessage<WatchResponse> = serde_json::from_str(
            r#"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"Zm9v","mod_revision":"3","create_revision":"2","value":"YmF6"}},
            {"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3"}}]}}"#,
        )
        .unwrap();
        let w = w.result.unwrap();
        assert_eq!(w.events.len(), 2);
        assert_eq!(w.events[0].kind, "");
        assert_eq!(w.events[1].kind, "DELETE");
        let c: StreamMessage<WatchResponse> =
            serde_json::from_str(r#"{"result":{"header":{},"canceled":true,"compact_revision":"3"}}"#).unwrap();
        assert_eq!(c.result.unwrap().compact_revision, 3);
        let empty: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"4"}}"#).unwrap();
        assert!(empty.kvs.is_empty() && !empty.more);
    }
}
