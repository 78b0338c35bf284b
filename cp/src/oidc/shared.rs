//! The provider's signing key shared between control-plane replicas on one store (etcd),
//! sealed like the CA ([`crate::ca::SealKey`], `--ca-seal-key-file` / `RIPTIDES_CA_SEAL_KEY`):
//! the PKCS#8 key is never in the store in the clear. The first replica publishes its key
//! (the one already in its data dir, so a single replica that grows keeps its tokens valid);
//! every other replica imports the published one, so an access token issued by any replica
//! verifies on all of them.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::keys::SigningKey;
use crate::ca::SealKey;
use crate::store::{ObjectKey, Store, StoreError};

/// `(resource, namespace, name)` of the sealed signing key (not an API resource).
pub const SIGNING_KEY_OBJECT: (&str, &str, &str) = ("internal.riptides.io/oidc-key", "", "signing-key");

/// The sealed blob is bound to this purpose and trust domain (the seal's associated data), so
/// it cannot be passed off as the CA object or another trust domain's key.
fn purpose(trust_domain: &str) -> String {
    format!("{trust_domain}/oidc-signing-key")
}

pub async fn open_shared_key(
    store: &Arc<dyn Store>,
    seal: &SealKey,
    trust_domain: &str,
    local: &Path,
) -> anyhow::Result<SigningKey> {
    let object = ObjectKey::new(SIGNING_KEY_OBJECT.0, SIGNING_KEY_OBJECT.1, SIGNING_KEY_OBJECT.2);
    let aad = purpose(trust_domain);
    for _ in 0..5 {
        if let Some(found) = store.get(&object).await? {
            let pkcs8 = seal.open(&aad, &found.value).context("opening the shared OIDC signing key")?;
            let key = SigningKey::from_pkcs8(&pkcs8).context("the shared OIDC signing key")?;
            tracing::info!(kid = key.kid(), "using the shared OIDC signing key");
            return Ok(key);
        }
        let pkcs8 = SigningKey::load_or_create_pkcs8(local)?;
        match store.create(&object, seal.seal(&aad, &pkcs8)?).await {
            Ok(_) => {
                let key = SigningKey::from_pkcs8(&pkcs8)?;
                tracing::info!(kid = key.kid(), "published this replica's OIDC signing key as the shared key");
                return Ok(key);
            }
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not agree on a shared OIDC signing key")
}
