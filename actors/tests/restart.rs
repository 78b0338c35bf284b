//! Restart semantics: policies, sibling isolation, backoff.

mod common;

use std::time::Duration;

use common::*;
use riptides_actors::{Backoff, ChildStatus, Restart, Supervisor, SupervisorConfig};

fn budget() -> SupervisorConfig {
    SupervisorConfig::with_budget(100, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_permanent_child_restarts_and_keeps_serving() {
    let (p, mut rx) = probe();
    let root = Supervisor::start("t-perm", budget(), vec![worker("w", &p, Mode::Normal)]).await.unwrap();
    next_start(&mut rx, "t-perm/w").await;
    assert_eq!(ping("t-perm/w").await, 1);
    assert_eq!(ping("t-perm/w").await, 2);

    for round in 1..=3u64 {
        worker_ref("t-perm/w").send_message(WorkerMsg::Panic).unwrap();
        next_start(&mut rx, "t-perm/w").await;
        // a fresh incarnation under the same name, serving again
        let n = eventually(|| async {
            let r = ractor::ActorRef::<WorkerMsg>::where_is("t-perm/w")?;
            ractor::call!(r, WorkerMsg::Ping).ok()
        })
        .await;
        assert_eq!(n, 1);
        let list = children_until(root.supervisor(), |l| {
            find(l, "w").is_some_and(|c| c.restarts == round && c.status == ChildStatus::Running)
        })
        .await;
        assert!(find(&list, "w").unwrap().last_exit.as_deref().unwrap().contains("boom"));
    }
    assert!(root.shutdown(None).await.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sibling_state_survives_restarts() {
    let (p, mut rx) = probe();
    let root = Supervisor::start("t-sib", budget(), vec![worker("a", &p, Mode::Normal), worker("b", &p, Mode::Normal)])
        .await
        .unwrap();
    next_start(&mut rx, "t-sib/a").await;
    next_start(&mut rx, "t-sib/b").await;
    for _ in 0..3 {
        ping("t-sib/a").await;
    }
    let a_id = worker_ref("t-sib/a").get_id();

    for _ in 0..3 {
        worker_ref("t-sib/b").send_message(WorkerMsg::Panic).unwrap();
        next_start(&mut rx, "t-sib/b").await;
    }
    children_until(root.supervisor(), |l| {
        find(l, "b").is_some_and(|c| c.restarts == 3 && c.status == ChildStatus::Running)
    })
    .await;
    assert_eq!(ping("t-sib/a").await, 4, "sibling kept its state");
    assert_eq!(worker_ref("t-sib/a").get_id(), a_id, "sibling was never restarted");
    let list = root.supervisor().list_children().await.unwrap();
    assert_eq!(find(&list, "a").unwrap().restarts, 0);
    root.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_temporary_semantics() {
    let (p, mut rx) = probe();
    let root = Supervisor::start(
        "t-tt",
        budget(),
        vec![
            worker("trans-ok", &p, Mode::Normal).restart(Restart::Transient),
            worker("trans-fail", &p, Mode::Normal).restart(Restart::Transient),
            worker("temp-ok", &p, Mode::Normal).restart(Restart::Temporary),
            worker("temp-fail", &p, Mode::Normal).restart(Restart::Temporary),
            worker("perm-ok", &p, Mode::Normal).restart(Restart::Permanent),
        ],
    )
    .await
    .unwrap();
    let sup = root.supervisor();

    // Transient: a normal stop is final, but the child stays listed as Stopped.
    worker_ref("t-tt/trans-ok").send_message(WorkerMsg::StopNormally).unwrap();
    let l = children_until(sup, |l| find(l, "trans-ok").unwrap().status == ChildStatus::Stopped).await;
    assert_eq!(find(&l, "trans-ok").unwrap().restarts, 0);
    assert!(!registered("t-tt/trans-ok"));

    // Transient: a failure restarts it.
    worker_ref("t-tt/trans-fail").send_message(WorkerMsg::Panic).unwrap();
    children_until(sup, |l| {
        let c = find(l, "trans-fail").unwrap();
        c.restarts == 1 && c.status == ChildStatus::Running
    })
    .await;
    assert!(registered("t-tt/trans-fail"));

    // Temporary: never restarted, forgotten whether it stopped normally or failed.
    worker_ref("t-tt/temp-ok").send_message(WorkerMsg::StopNormally).unwrap();
    worker_ref("t-tt/temp-fail").send_message(WorkerMsg::Panic).unwrap();
    children_until(sup, |l| find(l, "temp-ok").is_none() && find(l, "temp-fail").is_none()).await;
    assert!(!registered("t-tt/temp-ok") && !registered("t-tt/temp-fail"));

    // Permanent: even a normal stop is restarted.
    worker_ref("t-tt/perm-ok").send_message(WorkerMsg::StopNormally).unwrap();
    children_until(sup, |l| {
        let c = find(l, "perm-ok").unwrap();
        c.restarts == 1 && c.status == ChildStatus::Running
    })
    .await;

    // Only the expected starts happened: 5 initial + trans-fail + perm-ok.
    root.shutdown(None).await;
    let mut starts = 0;
    while let Ok(e) = rx.try_recv() {
        if matches!(e, Event::Started(..)) {
            starts += 1;
        }
    }
    assert_eq!(starts, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_grows_between_consecutive_failures() {
    let (p, mut rx) = probe();
    let initial = Duration::from_millis(20);
    let spec =
        worker("crashy", &p, Mode::CrashOnStart).backoff(Backoff::fixed_growth(initial, Duration::from_secs(2), 2.0));
    let root = Supervisor::start("t-backoff", budget(), vec![spec]).await.unwrap();

    let mut starts = Vec::new();
    for _ in 0..5 {
        starts.push(next_start(&mut rx, "t-backoff/crashy").await);
    }
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is at least the scheduled delay: 20, 40, 80, 160 ms.
    for (i, gap) in gaps.iter().enumerate() {
        let expected = initial * 2u32.pow(i as u32);
        assert!(*gap >= expected, "gap {i} = {gap:?} < {expected:?} (gaps {gaps:?})");
    }
    assert!(gaps[3] > gaps[0], "backoff did not grow: {gaps:?}");
    let l = root.supervisor().list_children().await.unwrap();
    let c = find(&l, "crashy").unwrap();
    assert!(c.restarts >= 4);
    assert!(c.last_exit.as_deref().unwrap().contains("crash on start"));
    assert!(root.shutdown(None).await.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_resets_after_a_healthy_run() {
    let (p, mut rx) = probe();
    let spec = worker("w", &p, Mode::Normal).backoff(
        Backoff::fixed_growth(Duration::from_millis(5), Duration::from_secs(10), 100.0)
            .with_reset_after(Duration::from_millis(100)),
    );
    let root = Supervisor::start("t-reset", budget(), vec![spec]).await.unwrap();
    next_start(&mut rx, "t-reset/w").await;
    // Healthy for longer than reset_after before each failure: every restart uses `initial`
    // (without the reset the third would wait 5 s).
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = tokio::time::Instant::now();
        worker_ref("t-reset/w").send_message(WorkerMsg::Panic).unwrap();
        let at = next_start(&mut rx, "t-reset/w").await;
        assert!(at - before < Duration::from_secs(2), "backoff not reset: {:?}", at - before);
    }
    root.shutdown(None).await;
}
