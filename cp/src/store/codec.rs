//! Byte encodings of keys, objects and events for the embedded backend.
//!
//! Keys are `resource NUL namespace NUL name`: NUL is rejected in every component (see
//! [`ObjectKey::validate`]), so the encoding is unambiguous and byte order groups a resource and
//! then a namespace together, which makes list a single range scan.
//!
//! Records start with a format version byte so the on-disk layout can evolve; decoding never
//! panics and reports corruption as [`StoreError::Backend`].

use super::{ObjectKey, Revision, StoreError, StoredObject, WatchEvent};

const SEP: u8 = 0;
const FORMAT_V1: u8 = 1;

const EV_CREATED: u8 = 1;
const EV_UPDATED: u8 = 2;
const EV_DELETED: u8 = 3;

/// Encodes a (validated) key.
pub(crate) fn encode_key(key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.resource.len() + key.namespace.len() + key.name.len() + 2);
    out.extend_from_slice(key.resource.as_bytes());
    out.push(SEP);
    out.extend_from_slice(key.namespace.as_bytes());
    out.push(SEP);
    out.extend_from_slice(key.name.as_bytes());
    out
}

pub(crate) fn decode_key(bytes: &[u8]) -> Result<ObjectKey, StoreError> {
    let mut parts = bytes.splitn(3, |b| *b == SEP);
    let mut next = |what: &str| -> Result<String, StoreError> {
        let part = parts.next().ok_or_else(|| corrupt(&format!("key without {what}")))?;
        String::from_utf8(part.to_vec()).map_err(|_| corrupt(&format!("non-UTF-8 {what}")))
    };
    Ok(ObjectKey { resource: next("resource")?, namespace: next("namespace")?, name: next("name")? })
}

/// The half-open byte range `[start, end)` holding every key of `resource` (and `namespace`).
/// The prefix always ends in the separator, so bumping that last byte gives the exclusive end.
pub(crate) fn prefix_range(resource: &str, namespace: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut start = resource.as_bytes().to_vec();
    start.push(SEP);
    if let Some(ns) = namespace {
        start.extend_from_slice(ns.as_bytes());
        start.push(SEP);
    }
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = SEP + 1;
    }
    (start, end)
}

/// Object record: version, create_revision, mod_revision, value.
pub(crate) fn encode_object(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + value.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&create.to_be_bytes());
    out.extend_from_slice(&modified.to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_object(key: ObjectKey, bytes: &[u8]) -> Result<StoredObject, StoreError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    Ok(StoredObject { key, value: r.rest().to_vec(), create_revision, mod_revision })
}

/// Event record (the revision is the table key): version, kind, create_revision, mod_revision,
/// key length (u32), key, value.
pub(crate) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let (kind, object) = match event {
        WatchEvent::Put { object, created: true } => (EV_CREATED, object),
        WatchEvent::Put { object, created: false } => (EV_UPDATED, object),
        WatchEvent::Deleted { object, .. } => (EV_DELETED, object),
    };
    let key = encode_key(&object.key);
    let mut out = Vec::with_capacity(22 + key.len() + object.value.len());
    out.push(FORMAT_V1);
    out.push(kind);
    out.extend_from_slice(&object.create_revision.to_be_bytes());
    out.extend_from_slice(&object.mod_revision.to_be_bytes());
    // Keys are bounded by MAX_KEY_BYTES, far below u32::MAX.
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(&key);
    out.extend_from_slice(&object.value);
    out
}

pub(crate) fn decode_event(revision: Revision, bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let kind = r.u8()?;
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    let key_len = r.u32()? as usize;
    let key = decode_key(r.take(key_len)?)?;
    let object = StoredObject { key, value: r.rest().to_vec(), create_revision, mod_revision };
    match kind {
        EV_CREATED | EV_UPDATED => Ok(WatchEvent::Put { object, created: kind == EV_CREATED }),
        EV_DELETED => Ok(WatchEvent::Deleted { object, revision }),
        other => Err(corrupt(&format!("unknown event kind {other}"))),
    }
}

/// Decodes just the key of an event record, so history scans can skip non-matching events
/// without copying their values.
pub(crate) fn decode_event_key(bytes: &[u8]) -> Result<ObjectKey, StoreError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    r.u8()?;
    r.u64()?;
    r.u64()?;
    let key_len = r.u32()? as usize;
    decode_key(r.take(key_len)?)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt record: {what}"))
}

/// A bounds-checked cursor over a record.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(corrupt("record truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn version(&mut self) -> Result<(), StoreError> {
        match self.u8()? {
            FORMAT_V1 => Ok(()),
            v => Err(corrupt(&format!("unsupported record format {v}"))),
        }
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str) -> StoredObject {
        StoredObject {
            key: ObjectKey::new("g/things", ns, name),
            value: b"{\"a\":1}".to_vec(),
            create_revision: 3,
            mod_revision: 7,
        }
    }

    #[test]
    fn key_roundtrip_and_prefix_order() {
        let k = ObjectKey::new("core.riptides.io/workloadidentities", "", "web");
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);

        let (start, end) = prefix_range("g/things", Some("ns"));
        let inside = encode_key(&ObjectKey::new("g/things", "ns", "z"));
        let other_ns = encode_key(&ObjectKey::new("g/things", "ns2", "a"));
        let other_res = encode_key(&ObjectKey::new("g/thingsx", "ns", "a"));
        assert!(start <= inside && inside < end);
        assert!(!(start <= other_ns && other_ns < end));
        assert!(!(start <= other_res && other_res < end));

        let (start, end) = prefix_range("g/things", None);
        assert!(start <= other_ns && other_ns < end);
        assert!(!(start <= other_res && other_res < end));
    }

    #[test]
    fn object_and_event_roundtrip() {
        let o = obj("ns", "a");
        let rec = encode_object(o.create_revision, o.mod_revision, &o.value);
        assert_eq!(decode_object(o.key.clone(), &rec).unwrap(), o);

        for ev in [
            WatchEvent::Put { object: o.clone(), created: true },
            WatchEvent::Put { object: o.clone(), created: false },
            WatchEvent::Deleted { object: o.clone(), revision: 9 },
        ] {
            let rec = encode_event(&ev);
            assert_eq!(decode_event(ev.revision(), &rec).unwrap(), ev);
            assert_eq!(&decode_event_key(&rec).unwrap(), ev.key());
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        for bad in [&b""[..], &[1u8][..], &[9u8, 0, 0][..], &[1u8, 1, 0, 0][..]] {
            assert!(decode_object(ObjectKey::new("r", "", "n"), bad).is_err());
            assert!(decode_event(1, bad).is_err());
        }
        let mut rec = encode_event(&WatchEvent::Put { object: obj("", "a"), created: true });
        rec[1] = 42;
        assert!(decode_event(1, &rec).is_err());
        rec.truncate(20);
        assert!(decode_event(1, &rec).is_err());
    }
}
