//! Three `riptides-controlplane` replicas (real binaries) on a three-member etcd cluster on
//! loopback: one shared CA, every replica serves the same objects, optimistic concurrency
//! holds across replicas, exactly one replica leads the controllers and another takes over
//! when it is killed, and neither a replica's kill -9 nor an etcd member's loses an
//! acknowledged write.

mod common;
mod etcd_support;
mod ha_support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::rt;
use etcd_support::EtcdCluster;
use ha_support::{leader, Replica};
use riptides_wire::client::ApiClient;
use serde_json::{json, Value};

const NS: &str = "riptides-system";

fn service(name: &str, port: u16) -> Value {
    json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": name},
        "spec": {"addresses": [{"address": "10.1.0.1", "port": port}]}})
}

/// Creates through the first replica that answers, as a client with several addresses does;
/// a write whose answer was lost is confirmed by reading it back.
async fn create_anywhere(apis: &[ApiClient], name: &str) -> bool {
    for attempt in 0..40 {
        let api = &apis[attempt % apis.len()];
        match api.create(rt("services"), NS, &service(name, 80)).await {
            Ok(_) => return true,
            Err(e) if e.is_conflict() => return true, // an earlier attempt did land
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

async fn names(api: &ApiClient) -> BTreeSet<String> {
    let list = api.list(rt("services"), Some(NS)).await.unwrap();
    list.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect()
}

async fn wait_leader(etcd: &EtcdCluster, not: Option<&str>) -> String {
    for _ in 0..200 {
        if let Some(l) = leader(etcd).await {
            if Some(l.as_str()) != not {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no (new) leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_three_etcd_members() {
    let mut etcd = EtcdCluster::start(3, false).await;
    let root = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = (0..3).map(|i| Replica::spawn(root.path(), &format!("r{i}"), &etcd)).collect();

    // One CA for all: the first replica published it, the others imported it.
    let ca = replicas[0].ca_pem();
    assert!(replicas.iter().all(|r| r.ca_pem() == ca), "replicas must share one CA");
    // ... and it is sealed in etcd, never in the clear.
    let store = etcd.store().await;
    let sealed = riptides_cp::store::Store::get(&store, &riptides_cp::ca::ca_object_key()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&sealed.value);
    assert!(!text.contains("PRIVATE KEY") && text.contains("riptides-ca-sealed/v1"));

    // Written on one replica, read on every other at the same resourceVersion.
    let created = replicas[0].api.create(rt("services"), NS, &service("web", 80)).await.unwrap();
    let rv = created["metadata"]["resourceVersion"].clone();
    for r in &replicas[1..] {
        let got = r.api.get(rt("services"), NS, "web").await.unwrap();
        assert_eq!(got["metadata"]["resourceVersion"], rv);
    }

    // Concurrent conflicting updates on two replicas: exactly one wins, the other gets 409.
    let (mut a, mut b) = (created.clone(), created.clone());
    a["spec"]["addresses"][0]["port"] = json!(81);
    b["spec"]["addresses"][0]["port"] = json!(82);
    let (ra, rb) = tokio::join!(
        replicas[1].api.replace(rt("services"), NS, "web", &a),
        replicas[2].api.replace(rt("services"), NS, "web", &b)
    );
    let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "exactly one update wins: {ra:?} / {rb:?}");
    let loser = match (ra, rb) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        _ => unreachable!("checked above"),
    };
    assert!(loser.is_conflict(), "the other gets 409: {loser}");

    // Exactly one leader; kill -9 it and another replica takes over once its lease expires.
    let first = wait_leader(&etcd, None).await;
    let idx = replicas.iter().position(|r| r.name == first).unwrap();
    replicas[idx].kill();
    let second = wait_leader(&etcd, Some(&first)).await;
    assert_ne!(second, first);
    assert!(replicas.iter().any(|r| r.alive() && r.name == second));

    // Writes through the survivors while an etcd member dies: none acknowledged is lost.
    let apis: Vec<ApiClient> = replicas.iter().filter(|r| r.alive()).map(|r| r.api.clone()).collect();
    let mut acked = Vec::new();
    for i in 0..30 {
        if i == 10 {
            etcd.kill(1);
        }
        let name = format!("s{i}");
        assert!(create_anywhere(&apis, &name).await, "write {name} never acknowledged");
        acked.push(name);
    }
    for api in &apis {
        let have = names(api).await;
        for n in &acked {
            assert!(have.contains(n), "acknowledged {n} missing");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_under_writes_loses_nothing_acknowledged() {
    let etcd = EtcdCluster::start(3, false).await;
    let root = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = (0..2).map(|i| Replica::spawn(root.path(), &format!("r{i}"), &etcd)).collect();
    let victim = replicas[0].api.clone();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0.. {
            let name = format!("w{i}");
            match victim.create(rt("services"), NS, &service(&name, 80)).await {
                Ok(_) => acked.push(name),
                Err(_) => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    replicas[0].kill();
    let acked = writer.await.unwrap();
    assert!(!acked.is_empty());
    let have = names(&replicas[1].api).await;
    for n in &acked {
        assert!(have.contains(n), "acknowledged {n} lost with the replica");
    }
    eprintln!("{} writes acknowledged by the killed replica, all served by the survivor", acked.len());
}
