//! Durability: every write acknowledged by the redb store survives `kill -9`.
//!
//! The test re-executes its own binary in "writer mode" (selected by an environment variable),
//! lets it write and print each acknowledged change, SIGKILLs it at a random moment, then
//! reopens the store and checks every acknowledged change is there. This repeats several times
//! on the same file, so recovery after recovery is exercised and revisions must keep growing.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use riptides_cp::store::{ObjectKey, RedbStore, Store, StoreError};

const CHILD_DIR_ENV: &str = "RIPTIDES_STORE_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "RIPTIDES_STORE_CRASH_CHILD_ROUND";
const RES: &str = "core.riptides.io/workloadidentities";
const CHILD_TEST: &str = "crash_child_writer";

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(RES, "crash", name)
}

fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Writer mode: a no-op unless the parent test started this process with the env var set.
/// Loops forever (until killed), printing one line per acknowledged write:
/// `PUT <name> <value> <rev>`, `DEL <name>`, `CTR <value> <rev>`.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND_ENV).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let store = RedbStore::open(Path::new(&dir).join("store.redb")).expect("child open");
        let counter = key("counter");
        for i in 0u64.. {
            let name = format!("r{round}-{i}");
            let value = format!("v{round}-{i}");
            let o = store.create(&key(&name), value.clone().into_bytes()).await.expect("child create");
            println!("PUT {name} {value} {}", o.mod_revision);

            let value = format!("{round}-{i}");
            let o = match store.update(&counter, value.clone().into_bytes(), None).await {
                Err(StoreError::NotFound { .. }) => store.create(&counter, value.clone().into_bytes()).await,
                other => other,
            }
            .expect("child counter");
            println!("CTR {value} {}", o.mod_revision);

            if i % 4 == 3 {
                let victim = format!("r{round}-{}", i - 2);
                // `delete` returns the last stored value, not a new revision: print none.
                store.delete(&key(&victim), None).await.expect("child delete");
                println!("DEL {victim}");
            }
        }
    });
}

#[derive(Default)]
struct Acked {
    present: HashMap<String, String>,
    deleted: HashSet<String>,
    counter: Option<String>,
    max_rev: u64,
    /// A delete the child may have committed but not yet printed when it was killed: the
    /// object is then allowed to be gone, since durable-but-unacknowledged writes are fine.
    in_flight_delete: Option<String>,
}

impl Acked {
    /// Applies one complete output line; ignores harness chatter.
    fn apply(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        let rev = |s: &str| s.parse::<u64>().expect("revision");
        if is_ack(line) {
            self.in_flight_delete = None;
        }
        match parts.as_slice() {
            ["PUT", name, value, r] => {
                self.present.insert(name.to_string(), value.to_string());
                self.bump(rev(r));
            }
            ["DEL", name] => {
                self.present.remove(*name);
                self.deleted.insert(name.to_string());
            }
            ["CTR", value, r] => {
                self.counter = Some(value.to_string());
                self.bump(rev(r));
                // Mirrors the child: after the counter of iteration i (i % 4 == 3) it deletes i-2.
                if let Some((round, i)) = value.split_once('-') {
                    let i: u64 = i.parse().expect("iteration");
                    if i % 4 == 3 {
                        self.in_flight_delete = Some(format!("r{round}-{}", i - 2));
                    }
                }
            }
            _ => {}
        }
    }

    fn bump(&mut self, rev: u64) {
        assert!(rev > self.max_rev, "revision went backwards: {rev} after {}", self.max_rev);
        self.max_rev = rev;
    }
}

/// Runs one writer child, kills it once it has acknowledged at least `min_acks` lines plus a
/// random delay, and returns the complete lines it printed.
fn run_and_kill(dir: &Path, round: usize, min_acks: usize) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let stderr = std::fs::File::create(dir.join(format!("child-{round}.stderr"))).unwrap();
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn writer child");
    let stdout = child.stdout.take().expect("child stdout");

    // Read on a thread so the pipe never fills and we can stop waiting at any moment.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match out.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill was not fully printed: ignore it.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if tx.send(line.trim_end().to_string()).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines.iter().filter(|l: &&String| is_ack(l)).count() < min_acks {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(dir.join(format!("child-{round}.stderr")));
                panic!("writer child produced too few acks ({lines:?}); stderr: {err:?}");
            }
        }
    }
    // Kill at a random point within the next few writes, most likely mid-transaction.
    std::thread::sleep(Duration::from_micros(random_u64() % 20_000));
    child.kill().expect("SIGKILL writer child");
    let status = child.wait().expect("reap child");
    assert!(!status.success(), "child must have been killed, got {status}");
    reader.join().expect("reader thread");
    lines.extend(rx.try_iter());
    lines
}

fn is_ack(line: &str) -> bool {
    line.starts_with("PUT ") || line.starts_with("DEL ") || line.starts_with("CTR ")
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // we are a writer child started for the other test
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut acked = Acked::default();
    for (round, min_acks) in [3usize, 40, 11, 90, 1].into_iter().enumerate() {
        let min_acks = min_acks + (random_u64() % 10) as usize;
        let lines = run_and_kill(dir.path(), round, min_acks);
        let before = acked.max_rev;
        for line in &lines {
            acked.apply(line);
        }
        assert!(acked.max_rev > before, "round {round} acknowledged nothing");

        rt.block_on(async {
            let store = RedbStore::open(dir.path().join("store.redb")).expect("reopen after kill");
            let current = store.current_revision().await.unwrap();
            assert!(current >= acked.max_rev, "revision {current} lost acknowledged revision {}", acked.max_rev);
            let mut resolved_delete = None;
            for (name, value) in &acked.present {
                let got = store.get(&key(name)).await.unwrap();
                if got.is_none() && acked.in_flight_delete.as_ref() == Some(name) {
                    resolved_delete = Some(name.clone());
                    continue;
                }
                assert_eq!(
                    got.map(|o| o.value),
                    Some(value.clone().into_bytes()),
                    "acknowledged write of {name} lost in round {round}"
                );
            }
            // The in-flight delete did commit: from now on the object must stay gone.
            if let Some(name) = resolved_delete {
                acked.present.remove(&name);
                acked.deleted.insert(name);
            }
            for name in &acked.deleted {
                assert_eq!(
                    store.get(&key(name)).await.unwrap(),
                    None,
                    "acknowledged delete of {name} lost in round {round}"
                );
            }
            // The counter may be one write ahead (committed but killed before printing).
            let counter = store.get(&key("counter")).await.unwrap().expect("counter");
            let want = acked.counter.clone().expect("counter acked");
            let got = String::from_utf8(counter.value).unwrap();
            let parse = |s: &str| {
                let (r, i) = s.split_once('-').unwrap();
                (r.parse::<u64>().unwrap(), i.parse::<u64>().unwrap())
            };
            assert!(parse(&got) >= parse(&want), "counter {got} older than acked {want}");
            // The store is fully usable after recovery.
            let o = store.create(&key(&format!("probe-{round}")), b"ok".to_vec()).await.unwrap();
            assert!(o.mod_revision > acked.max_rev);
            acked.max_rev = o.mod_revision;
        });
        eprintln!(
            "round {round}: {} lines acknowledged, revision now {}",
            lines.iter().filter(|l| is_ack(l)).count(),
            acked.max_rev
        );
    }
}
