//! Prepares a data dir before the measured control plane starts: the `default` Verifier (so
//! every join-token daemon lands in one daemon group) and N join tokens. Done with an
//! in-process control plane that is shut down before the real binary opens the same dir, so
//! the token writes neither count towards the binary's memory nor take the API's round trips.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{stream, StreamExt};
use riptides_cp::store::ObjectKey;
use riptides_cp::{Config, ControlPlane};
use riptides_wire::client::ApiClient;
use riptides_wire::resource;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::{GROUP, NS};

pub struct Prepared {
    /// `<name>.<secret>`, one per simulated daemon.
    pub tokens: Vec<String>,
    pub took: Duration,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).expect("system random generator");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn prepare(dir: &Path, n: usize) -> anyhow::Result<Prepared> {
    prepare_with(dir, n, |_| {}).await
}

/// [`prepare`] with a changed configuration of the setup control plane (another store).
pub async fn prepare_with(dir: &Path, n: usize, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Prepared> {
    let t = Instant::now();
    let mut config = Config::for_tests(dir);
    tweak(&mut config);
    let cp = ControlPlane::start(config).await.context("in-process control plane for setup")?;
    let api = ApiClient::from_kubeconfig_file(cp.kubeconfig_path())?;
    let verifier = json!({
        "apiVersion": "auth.riptides.io/v1alpha1", "kind": "Verifier",
        "metadata": {"name": "default", "namespace": NS},
        "spec": {"method": "joinToken", "workloadIDTemplate": "riptides/daemon/{{id}}", "daemonGroup": GROUP},
    });
    api.create(resource::by_name("verifiers").expect("known kind"), NS, &verifier)
        .await
        .map_err(|e| anyhow::anyhow!("creating the Verifier: {e}"))?;

    let rt = resource::by_name("jointokens").expect("known kind");
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(6)).format(&Rfc3339)?;
    let created = time::OffsetDateTime::now_utc().format(&Rfc3339)?;
    let store = cp.store().clone();
    let results: Vec<anyhow::Result<String>> = stream::iter(0..n)
        .map(|i| {
            let (store, expires, created) = (store.clone(), expires.clone(), created.clone());
            let key_resource = rt.store_key();
            async move {
                let name = format!("bench-{i}");
                let secret = random_hex(32);
                // The stored form `riptides token create` produces through the API (no
                // resourceVersion: that is the store's revision).
                let obj = json!({
                    "apiVersion": "auth.riptides.io/v1alpha1", "kind": "JoinToken",
                    "metadata": {"name": name, "namespace": NS, "uid": random_hex(16), "creationTimestamp": created},
                    "spec": {
                        "tokenHash": riptides_cp::attest::hash_secret(&secret),
                        "expiresAt": expires,
                        "daemonID": format!("sim-{i}"),
                    },
                });
                store
                    .create(&ObjectKey::new(key_resource, NS, &name), serde_json::to_vec(&obj)?)
                    .await
                    .map_err(|e| anyhow::anyhow!("storing join token {name}: {e}"))?;
                Ok(format!("{name}.{secret}"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let tokens = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    drop(api);
    let exit = cp.shutdown().await;
    if !exit.is_success() {
        anyhow::bail!("the setup control plane did not shut down cleanly: {exit}");
    }
    Ok(Prepared { tokens, took: t.elapsed() })
}
