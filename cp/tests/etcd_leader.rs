//! The controller leader election on a real three-member etcd: exactly one of several
//! candidates leads; when the leader goes away (clean stop revokes its lease; a crash lets
//! it expire) another takes over; losing one etcd member does not disturb the leader.

mod etcd_support;

use std::time::Duration;

use etcd_support::EtcdCluster;
use riptides_cp::leader::{start_etcd_election, ElectionConfig, Leadership};
use riptides_cp::store::etcd::EtcdClient;
use tokio_util::sync::CancellationToken;

fn candidate(client: &EtcdClient, name: &str, ttl: Duration) -> (Leadership, CancellationToken) {
    let cancel = CancellationToken::new();
    let config = ElectionConfig { key: "/test/leader".into(), ttl, ..ElectionConfig::new(name) };
    (start_etcd_election(client.clone(), config, cancel.clone()), cancel)
}

/// Waits (bounded, never asserting on the time taken) until exactly one candidate leads,
/// and returns its index.
async fn single_leader(cands: &[(Leadership, CancellationToken)], skip: &[usize]) -> usize {
    for _ in 0..400 {
        let leaders: Vec<usize> = (0..cands.len()).filter(|i| !skip.contains(i) && cands[*i].0.is_leader()).collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader emerged");
}

async fn holder(client: &EtcdClient) -> Option<String> {
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let resp: serde_json::Value =
        client.read("/v3/kv/range", &serde_json::json!({"key": b64("/test/leader")})).await.unwrap();
    let v = resp.pointer("/kvs/0/value")?.as_str()?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v).ok()?;
    String::from_utf8(bytes).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leader_and_takeover() {
    let mut etcd = EtcdCluster::start(3, false).await;
    let client = EtcdClient::new(&etcd.config()).unwrap();
    let ttl = Duration::from_secs(2);
    let cands: Vec<_> = (0..3).map(|i| candidate(&client, &format!("r{i}"), ttl)).collect();
    let first = single_leader(&cands, &[]).await;
    assert_eq!(holder(&client).await.as_deref(), Some(format!("r{first}").as_str()));

    // An etcd member dies: still exactly one leader, the same one once things settle.
    etcd.kill(2);
    tokio::time::sleep(ttl).await;
    let after_member_loss = single_leader(&cands, &[]).await;
    assert_eq!(after_member_loss, first);

    // The leader stops cleanly (lease revoked): another one takes over.
    cands[first].1.cancel();
    let second = single_leader(&cands, &[first]).await;
    assert_ne!(second, first);
    assert_eq!(holder(&client).await.as_deref(), Some(format!("r{second}").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_once_its_lease_expires() {
    let etcd = EtcdCluster::start(1, false).await;
    let client = EtcdClient::new(&etcd.config()).unwrap();
    let ttl = Duration::from_secs(2);
    // The "crashed" leader: a lease holding the key with nobody renewing it.
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let lease: serde_json::Value = client.write("/v3/lease/grant", &serde_json::json!({"TTL": "2"})).await.unwrap();
    let id = lease["ID"].as_str().unwrap().to_owned();
    let _: serde_json::Value = client
        .write("/v3/kv/put", &serde_json::json!({"key": b64("/test/leader"), "value": b64("dead"), "lease": id}))
        .await
        .unwrap();
    let cands = vec![candidate(&client, "alive", ttl)];
    assert!(!cands[0].0.is_leader());
    single_leader(&cands, &[]).await;
    assert_eq!(holder(&client).await.as_deref(), Some("alive"));
}
