//! Escalation, orderly shutdown, dynamic children, and registered names.

mod common;

use std::time::Duration;

use common::*;
use ractor::SpawnErr;
use riptides_actors::{
    ChildSpec, ChildStatus, Restart, Supervisor, SupervisorConfig, SupervisorError, SupervisorExit, SupervisorRef,
};

fn budget(n: u32) -> SupervisorConfig {
    SupervisorConfig::with_budget(n, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_exhaustion_escalates_to_parent_supervisor() {
    let (p, mut rx) = probe();
    let inner = ChildSpec::supervisor("inner", budget(1), vec![worker("w", &p, Mode::Normal)]).backoff(fast_backoff());
    let root =
        Supervisor::start("t-esc", budget(10), vec![inner, worker("bystander", &p, Mode::Normal)]).await.unwrap();
    next_start(&mut rx, "t-esc/inner/w").await;
    assert_eq!(ping("t-esc/bystander").await, 1);
    let inner_id = SupervisorRef::where_is("t-esc/inner").unwrap().actor().get_id();

    // First failure: within the inner budget (1 restart).
    worker_ref("t-esc/inner/w").send_message(WorkerMsg::Panic).unwrap();
    next_start(&mut rx, "t-esc/inner/w").await;
    // Second failure: the inner supervisor gives up and fails; the root restarts it,
    // which starts a fresh `w`.
    eventually(|| async {
        ractor::ActorRef::<WorkerMsg>::where_is("t-esc/inner/w").map(|r| r.send_message(WorkerMsg::Panic))
    })
    .await
    .unwrap();
    let list = children_until(root.supervisor(), |l| {
        let c = find(l, "inner").unwrap();
        c.restarts == 1 && c.status == ChildStatus::Running
    })
    .await;
    let inner_info = find(&list, "inner").unwrap();
    let why = inner_info.last_exit.as_deref().unwrap();
    assert!(why.contains("restart budget exceeded"), "{why}");
    assert!(why.contains("t-esc/inner/w"), "{why}");
    next_start(&mut rx, "t-esc/inner/w").await;
    let new_inner = SupervisorRef::where_is("t-esc/inner").unwrap();
    assert_ne!(new_inner.actor().get_id(), inner_id);
    // The fresh inner supervisor has a fresh budget and child.
    let inner_children = new_inner.list_children().await.unwrap();
    assert_eq!(find(&inner_children, "w").unwrap().restarts, 0);
    // The sibling of the escalating supervisor kept its state.
    assert_eq!(ping("t-esc/bystander").await, 2);
    assert!(root.shutdown(None).await.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_reaches_the_process_root() {
    let (p, mut rx) = probe();
    let inner = ChildSpec::supervisor("inner", budget(0), vec![worker("w", &p, Mode::Normal)]);
    let root =
        Supervisor::start("t-root-esc", budget(0), vec![worker("first", &p, Mode::Normal), inner]).await.unwrap();
    next_start(&mut rx, "t-root-esc/inner/w").await;
    worker_ref("t-root-esc/inner/w").send_message(WorkerMsg::Panic).unwrap();

    let exit = tokio::time::timeout(PATIENCE, root.wait()).await.expect("tree ends");
    let SupervisorExit::Escalated(why) = &exit else {
        panic!("expected escalation, got {exit:?}");
    };
    assert!(why.contains("supervisor \"t-root-esc\""), "{why}");
    assert!(why.contains("t-root-esc/inner"), "{why}");
    assert!(!exit.is_success());
    // Everything was stopped and unregistered; the root stopped its other child in order.
    for name in ["t-root-esc", "t-root-esc/inner", "t-root-esc/inner/w", "t-root-esc/first"] {
        assert!(!registered(name), "{name} still registered");
    }
    let mut stopped = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Stopped(n) = e {
            stopped.push(n);
        }
    }
    assert_eq!(stopped, vec!["t-root-esc/first".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_shutdown_in_reverse_start_order() {
    let (p, mut rx) = probe();
    let root = Supervisor::start(
        "t-order",
        budget(10),
        vec![
            worker("a", &p, Mode::Normal),
            worker("b", &p, Mode::Normal),
            worker("slow", &p, Mode::SlowStop).shutdown_timeout(Duration::from_millis(50)),
            worker("c", &p, Mode::Normal),
        ],
    )
    .await
    .unwrap();
    let mut started = Vec::new();
    for _ in 0..4 {
        if let Event::Started(n, _) = next_event(&mut rx).await {
            started.push(n);
        }
    }
    assert_eq!(started, ["t-order/a", "t-order/b", "t-order/slow", "t-order/c"]);
    // A restart does not change a child's position.
    worker_ref("t-order/b").send_message(WorkerMsg::Panic).unwrap();
    next_start(&mut rx, "t-order/b").await;
    children_until(root.supervisor(), |l| find(l, "b").is_some_and(|c| c.status == ChildStatus::Running)).await;

    let exit = root.shutdown(Some("bye".into())).await;
    assert_eq!(exit, SupervisorExit::Shutdown(Some("bye".into())));
    let mut stopped = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Stopped(n) = e {
            stopped.push(n);
        }
    }
    // `slow` was killed after its timeout (no Stopped event) and the rest went in order.
    assert_eq!(stopped, ["t-order/c", "t-order/b", "t-order/a"]);
    for name in ["t-order", "t-order/a", "t-order/b", "t-order/c", "t-order/slow"] {
        assert!(!registered(name), "{name} still registered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_add_and_remove() {
    let (p, mut rx) = probe();
    let root = Supervisor::start("t-dyn", budget(10), vec![]).await.unwrap();
    let sup = root.supervisor().clone();
    assert!(sup.list_children().await.unwrap().is_empty());

    sup.add_child(worker("s1", &p, Mode::Normal).restart(Restart::Temporary)).await.unwrap();
    sup.add_child(worker("s2", &p, Mode::Normal)).await.unwrap();
    sup.add_child(worker("s3", &p, Mode::SlowStop).shutdown_timeout(Duration::from_millis(50))).await.unwrap();
    assert!(matches!(
        sup.add_child(worker("s2", &p, Mode::Normal)).await,
        Err(SupervisorError::DuplicateChild(n)) if n == "s2"
    ));
    let names: Vec<_> = sup.list_children().await.unwrap().into_iter().map(|c| c.registered_name).collect();
    assert_eq!(names, ["t-dyn/s1", "t-dyn/s2", "t-dyn/s3"]);
    assert_eq!(ping("t-dyn/s2").await, 1);

    // remove returns once the child has stopped (orderly)
    sup.remove_child("s1").await.unwrap();
    assert!(!registered("t-dyn/s1"));
    let mut saw_stop = false;
    while let Ok(e) = rx.try_recv() {
        saw_stop |= e == Event::Stopped("t-dyn/s1".into());
    }
    assert!(saw_stop);
    // a child that does not stop in time is killed
    sup.remove_child("s3").await.unwrap();
    assert!(!registered("t-dyn/s3"));
    assert!(matches!(sup.remove_child("nope").await, Err(SupervisorError::NoSuchChild(_))));
    let l = sup.list_children().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].name, "s2");
    // the name can be reused after removal
    sup.add_child(worker("s1", &p, Mode::Normal)).await.unwrap();
    assert_eq!(ping("t-dyn/s1").await, 1);

    // a factory that fails: error returned, child not kept
    let bad = ChildSpec::new("bad", |_name, _sup| async {
        Err::<ractor::ActorCell, _>(SpawnErr::StartupFailed("no resources".into()))
    });
    let err = sup.add_child(bad).await.unwrap_err();
    assert!(matches!(err, SupervisorError::SpawnFailed { .. }), "{err}");
    assert!(find(&sup.list_children().await.unwrap(), "bad").is_none());

    assert!(root.shutdown(None).await.is_success());
    assert!(matches!(sup.list_children().await, Err(SupervisorError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_registered_and_unregistered() {
    let (p, mut rx) = probe();
    let inner = ChildSpec::supervisor("inner", budget(10), vec![worker("w", &p, Mode::Normal)]);
    let root = Supervisor::start("t-names", budget(10), vec![inner]).await.unwrap();
    next_start(&mut rx, "t-names/inner/w").await;
    let all = ractor::registry::registered();
    for name in ["t-names", "t-names/inner", "t-names/inner/w"] {
        assert!(all.iter().any(|n| n == name), "{name} not registered: {all:?}");
    }
    assert!(SupervisorRef::where_is("t-names/inner").is_some());
    assert!(SupervisorRef::where_is("t-names/inner/w").is_none(), "type-checked lookup");

    // A second root with the same name is refused.
    assert!(Supervisor::start("t-names", budget(10), vec![]).await.is_err());

    root.shutdown(None).await;
    for name in ["t-names", "t-names/inner", "t-names/inner/w"] {
        assert!(!registered(name), "{name} still registered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_initial_child_fails_the_start_and_stops_the_others() {
    let (p, mut rx) = probe();
    let bad = ChildSpec::new("bad", |_name, _sup| async {
        Err::<ractor::ActorCell, _>(SpawnErr::StartupFailed("nope".into()))
    });
    let res = Supervisor::start("t-badstart", budget(10), vec![worker("ok", &p, Mode::Normal), bad]).await;
    assert!(res.is_err());
    assert!(matches!(next_event(&mut rx).await, Event::Started(n, _) if n == "t-badstart/ok"));
    assert_eq!(next_event(&mut rx).await, Event::Stopped("t-badstart/ok".into()));
    assert!(!registered("t-badstart") && !registered("t-badstart/ok"));
}
