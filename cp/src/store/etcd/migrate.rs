//! Copies every object from one store to another (redb into etcd, or back), then verifies
//! the copy object by object.
//!
//! Objects are copied with `create`, so a re-run after an interruption skips what is already
//! there with the same value and refuses to overwrite anything different. Revisions are not
//! preserved (each store numbers its own writes): daemons resync their policy once from a
//! snapshot after the switch.

use std::collections::BTreeMap;

use crate::store::{ObjectKey, Store, StoreError};

/// What was copied and checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub copied: usize,
    /// Already present in the target with the same value.
    pub unchanged: usize,
    /// Objects compared equal after the copy.
    pub verified: usize,
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} already exists in the target with a different value; refusing to overwrite")]
    Differs { key: ObjectKey },
    #[error("verification failed for {resource}: {reason}")]
    Verify { resource: String, reason: String },
}

/// Every collection this control plane stores: the API's resource types and the internal
/// objects (the sealed shared CA).
pub fn all_resources() -> Vec<String> {
    let mut out: Vec<String> = riptides_wire::resource::RESOURCE_TYPES.iter().map(|rt| rt.store_key()).collect();
    out.push(crate::ca::CA_OBJECT.0.to_owned());
    out.sort();
    out.dedup();
    out
}

/// Copies `resources` from `from` into `to` and verifies the target holds exactly the
/// source's objects with equal values.
pub async fn migrate(
    from: &dyn Store,
    to: &dyn Store,
    resources: &[String],
) -> Result<MigrationReport, MigrationError> {
    let mut report = MigrationReport::default();
    for resource in resources {
        let (objects, _) = from.list(resource, None).await?;
        for obj in &objects {
            match to.create(&obj.key, obj.value.clone()).await {
                Ok(_) => report.copied += 1,
                Err(StoreError::AlreadyExists { .. }) => match to.get(&obj.key).await? {
                    Some(existing) if existing.value == obj.value => report.unchanged += 1,
                    _ => return Err(MigrationError::Differs { key: obj.key.clone() }),
                },
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(%resource, objects = objects.len(), "copied");
    }
    for resource in resources {
        let (source, _) = from.list(resource, None).await?;
        let (target, _) = to.list(resource, None).await?;
        let source: BTreeMap<&ObjectKey, &[u8]> = source.iter().map(|o| (&o.key, o.value.as_slice())).collect();
        let target: BTreeMap<&ObjectKey, &[u8]> = target.iter().map(|o| (&o.key, o.value.as_slice())).collect();
        for (key, value) in &source {
            match target.get(key) {
                Some(v) if v == value => report.verified += 1,
                Some(_) => {
                    return Err(MigrationError::Verify { resource: resource.clone(), reason: format!("{key} differs") })
                }
                None => {
                    return Err(MigrationError::Verify { resource: resource.clone(), reason: format!("{key} missing") })
                }
            }
        }
        if let Some(extra) = target.keys().find(|k| !source.contains_key(*k)) {
            return Err(MigrationError::Verify {
                resource: resource.clone(),
                reason: format!("{extra} exists only in the target"),
            });
        }
    }
    Ok(report)
}
