//! What the embedded engine needs from PostgreSQL: batches appended in one transaction
//! (partial on a refusal, nothing on a lost lease), run leases (taken, renewed, taken over
//! only once stale by the holder's own time to live, released), and following the events
//! other writers add. Needs a server (see `pgtest`).

mod pgtest;
use pgtest::*;

use serde_json::{json, Map, Value};
use std::time::Duration;
use workflow_core::pg::engine::LeaseGrant;
use workflow_core::pg::{Config, PgWorld};

fn step_reqs(step: &str) -> Vec<Map<String, Value>> {
    vec![
        req(
            json!({"eventType": "step_created", "specVersion": 2, "correlationId": step,
            "eventData": {"stepName": "s", "input": bin(b"i")}}),
        ),
        req(json!({"eventType": "step_started", "specVersion": 2, "correlationId": step})),
    ]
}

async fn types(db: &TestDb, run_id: &str) -> Vec<String> {
    let c = db.sql().await;
    c.query(
        "SELECT type FROM workflow.workflow_events WHERE run_id = $1 ORDER BY id",
        &[&run_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The status column of a step row.
async fn step_status(db: &TestDb, run_id: &str, step_id: &str) -> String {
    db.sql()
        .await
        .query_one(
            "SELECT status::text FROM workflow.workflow_steps WHERE run_id = $1 AND step_id = $2",
            &[&run_id, &step_id],
        )
        .await
        .unwrap()
        .get(0)
}

/// A run started by the process that executes it (`create_run_leased`).
fn create_request(run_id: &str) -> workflow_core::world::local::CreateRun {
    workflow_core::world::local::CreateRun {
        run_id: run_id.to_string(),
        deployment_id: "dpl_1".into(),
        workflow_name: "wf//./flow".into(),
        spec_version: 2,
        execution_context: None,
        input: workflow_core::world::model::Payload::Bytes(b"in".to_vec()),
    }
}

/// Moves the run's lease past its expiry (as its holder's time to live running out would).
async fn expire(db: &TestDb, run_id: &str) {
    let c = db.sql().await;
    let n = c
        .execute(
            "UPDATE workflow_native.leases SET expires_at = now() - interval '1 second' WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_written_in_order_up_to_a_refusal() {
    let Some(db) = TestDb::new("batch").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    let mut reqs = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    reqs.extend(step_reqs("step_a"));
    let out = w.append_batch(&run, reqs, None).await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert_eq!(out.results.len(), 3);
    let step = out.results[2].step.as_ref().unwrap();
    assert_eq!(step["status"], "running");
    assert_eq!(step["attempt"], 1);

    // the second step_completed of a step is refused: the first one and nothing after it stays
    let done = |v: &[u8]| {
        req(
            json!({"eventType": "step_completed", "specVersion": 2, "correlationId": "step_a",
            "eventData": {"result": bin(v)}}),
        )
    };
    let mut reqs = vec![done(b"1"), done(b"2")];
    reqs.extend(step_reqs("step_b"));
    let out = w.append_batch(&run, reqs, None).await;
    assert_eq!(out.results.len(), 1);
    let (index, err) = out.failed.expect("refused");
    assert_eq!(index, 1);
    assert_eq!(err.name(), "EntityConflictError", "{err}");
    assert_eq!(
        types(&db, &run).await,
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_completed"
        ]
    );
    // the transaction went on after the refused event: the batch's first event committed
    assert_eq!(step_status(&db, &run, "step_a").await, "completed");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_taken_renewed_taken_over_when_stale_and_released_never_taken_back() {
    let Some(db) = TestDb::new("lease").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    let a = w.acquire_lease(&run, "a", 60_000).await.unwrap();
    assert_eq!(
        a,
        LeaseGrant {
            held: true,
            token: Some(1)
        }
    );
    assert!(w.renew_lease(&run, "a", 1, 60_000).await.unwrap());
    // a live lease is not taken, not even by its own owner (a new execution)
    assert!(!w.acquire_lease(&run, "b", 1).await.unwrap().held);
    assert!(!w.acquire_lease(&run, "a", 1).await.unwrap().held);
    assert_eq!(w.leased_runs().await.unwrap(), vec![run.clone()]);

    // a stale lease (by the holder's time to live) is taken over with a new token
    let short = new_run(&w).await;
    assert!(w.acquire_lease(&short, "a", 100).await.unwrap().held);
    expire(&db, &short).await;
    let b = w.acquire_lease(&short, "b", 60_000).await.unwrap();
    assert_eq!(
        b,
        LeaseGrant {
            held: true,
            token: Some(2)
        }
    );
    // the old holder's renewal fails: it is fenced off
    assert!(!w.renew_lease(&short, "a", 1, 60_000).await.unwrap());

    // release by a non-holder (or an old token) does nothing; by the holder, the lease
    // is free, and a renewal after it never takes it back
    w.release_lease(&short, "a", Some(1)).await.unwrap();
    w.release_lease(&short, "b", Some(1)).await.unwrap();
    assert!(w.leased_runs().await.unwrap().contains(&short));
    w.release_lease(&short, "b", Some(2)).await.unwrap();
    assert!(!w.leased_runs().await.unwrap().contains(&short));
    assert!(!w.renew_lease(&short, "b", 2, 60_000).await.unwrap());
    assert!(!w.leased_runs().await.unwrap().contains(&short));
    // the next take still bumps the token
    let c = w.acquire_lease(&short, "a", 60_000).await.unwrap();
    assert_eq!(
        c,
        LeaseGrant {
            held: true,
            token: Some(3)
        }
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_refused_whole_unless_its_execution_holds_the_lease() {
    let Some(db) = TestDb::new("fence").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    assert!(w.acquire_lease(&run, "a", 100).await.unwrap().held);
    let started = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    let out = w.append_batch(&run, started, Some(("a", 1))).await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    expire(&db, &run).await;
    // stale but not taken over: still the holder's
    let out = w
        .append_batch(&run, step_reqs("step_a"), Some(("a", 1)))
        .await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert!(w.acquire_lease(&run, "b", 60_000).await.unwrap().held);
    let lost = |out: workflow_core::journal::AppendOutcome| {
        assert!(out.results.is_empty());
        let (index, err) = out.failed.expect("fenced");
        assert_eq!(index, 0);
        assert_eq!(err.code().as_deref(), Some("LEASE_LOST"), "{err}");
    };
    lost(
        w.append_batch(&run, step_reqs("step_b"), Some(("a", 1)))
            .await,
    );
    // released by b and taken again by a: a's earlier execution (token 1) stays fenced off
    w.release_lease(&run, "b", Some(2)).await.unwrap();
    lost(
        w.append_batch(&run, step_reqs("step_b"), Some(("b", 2)))
            .await,
    );
    assert_eq!(
        w.acquire_lease(&run, "a", 60_000).await.unwrap().token,
        Some(3)
    );
    lost(
        w.append_batch(&run, step_reqs("step_b"), Some(("a", 1)))
            .await,
    );
    let out = w
        .append_batch(&run, step_reqs("step_c"), Some(("a", 3)))
        .await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    // no lease row at all: refused too
    let other = new_run(&w).await;
    lost(
        w.append_batch(
            &other,
            vec![req(json!({"eventType": "run_started", "specVersion": 2}))],
            Some(("a", 1)),
        )
        .await,
    );
    assert_eq!(
        types(&db, &run).await,
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_created",
            "step_started"
        ]
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reports_what_other_writers_add_and_not_its_own_appends() {
    let Some(db) = TestDb::new("follow").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    let mut f = w.follow(&run).unwrap();
    // what was there before: reported unless known
    let first = f.poll_now().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["eventType"], "run_created");
    let out = w
        .append_batch(
            &run,
            vec![req(json!({"eventType": "run_started", "specVersion": 2}))],
            None,
        )
        .await;
    assert!(out.failed.is_none());
    assert!(
        f.poll_now().await.unwrap().is_empty(),
        "its own append was reported"
    );

    // another writer (the api side): woken by its notification
    let writer = db.world().await;
    let waiting = tokio::spawn(async move { f.next().await.map(|evs| (evs, f)) });
    writer
        .create_event(
            Some(&run),
            req(json!({"eventType": "run_cancelled", "specVersion": 2})),
        )
        .await
        .unwrap();
    let (evs, mut f) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken")
        .unwrap()
        .unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["eventType"], "run_cancelled");
    assert!(f.poll_now().await.unwrap().is_empty());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_still_sees_foreign_events_when_its_listener_connection_is_killed() {
    let Some(db) = TestDb::new("follow_kill").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    let mut f = w.follow(&run).unwrap();
    assert_eq!(f.poll_now().await.unwrap().len(), 1);
    // the LISTEN connection dies (and keeps dying while we write)
    let sql = db.sql().await;
    let killed: i64 = sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "no listener connection found");
    let waiting = tokio::spawn(async move { f.next().await });
    let writer = db.world().await;
    writer
        .create_event(
            Some(&run),
            req(json!({"eventType": "run_cancelled", "specVersion": 2})),
        )
        .await
        .unwrap();
    // woken by the listener's reconnection or by the polling backstop, never stuck
    let evs = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the follower saw the event")
        .unwrap()
        .unwrap();
    assert_eq!(evs[0]["eventType"], "run_cancelled");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_by_its_executor_is_created_leased_and_started_in_one_commit() {
    let Some(db) = TestDb::new("leased_start").await else {
        return;
    };
    let w = db.world().await;
    let run_id = workflow_core::ids::prefixed_id("wrun");
    let req = create_request(&run_id);
    let mut f = w.follow(&run_id).unwrap();
    let (token, started_at) = w.create_run_leased(&req, "a", 60_000).await.unwrap();
    assert_eq!(token, 1);
    assert!(started_at.is_some());
    assert_eq!(types(&db, &run_id).await, ["run_created", "run_started"]);
    assert_eq!(
        w.get_run(&run_id, false).await.unwrap().status.as_str(),
        "running"
    );
    assert_eq!(w.leased_runs().await.unwrap(), vec![run_id.clone()]);
    // the lease is the execution's: its batches pass, another owner's do not
    let out = w
        .append_batch(&run_id, step_reqs("step_a"), Some(("a", 1)))
        .await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert!(!w.acquire_lease(&run_id, "b", 60_000).await.unwrap().held);
    // none of it is another writer's
    assert!(f.poll_now().await.unwrap().is_empty());
    // the same run again: refused whole, nothing written
    assert!(w.create_run_leased(&req, "b", 60_000).await.is_err());
    assert_eq!(
        types(&db, &run_id).await,
        ["run_created", "run_started", "step_created", "step_started"]
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_queued_write_fails_is_run_again_with_the_exact_refusal() {
    let Some(db) = TestDb::new("replay").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    let mut reqs = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    reqs.extend(step_reqs("step_a"));
    assert!(w.append_batch(&run, reqs, None).await.failed.is_none());
    // step_a again, between two writes of step_c: its insert, queued with the commit,
    // fails the pipelined transaction; run again statement by statement, step_c's
    // creation before it is written and the refusal is the rules' own
    let created = |s: &str| {
        req(
            json!({"eventType": "step_created", "specVersion": 2, "correlationId": s,
            "eventData": {"stepName": "s", "input": bin(b"i")}}),
        )
    };
    let reqs = vec![
        created("step_c"),
        created("step_a"),
        req(json!({"eventType": "step_started", "specVersion": 2, "correlationId": "step_c"})),
    ];
    let out = w.append_batch(&run, reqs, None).await;
    assert_eq!(out.results.len(), 1, "{:?}", out.failed);
    let (index, err) = out.failed.expect("refused");
    assert_eq!(index, 1);
    assert_eq!(err.name(), "EntityConflictError", "{err}");
    assert_eq!(
        types(&db, &run).await,
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_created"
        ]
    );
    assert_eq!(step_status(&db, &run, "step_c").await, "pending");
    // the same through events.create: the conflict, nothing written
    let err = w
        .create_event(Some(&run), created("step_a"))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "EntityConflictError", "{err}");
    assert_eq!(types(&db, &run).await.len(), 5);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_that_ends_a_run_releases_its_lease_in_the_same_commit() {
    let Some(db) = TestDb::new("end_release").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    assert!(w.acquire_lease(&run, "a", 60_000).await.unwrap().held);
    let mut reqs = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    reqs.extend(step_reqs("step_a"));
    assert!(w
        .append_batch(&run, reqs, Some(("a", 1)))
        .await
        .failed
        .is_none());
    assert_eq!(w.leased_runs().await.unwrap(), vec![run.clone()]);
    let reqs = vec![
        req(
            json!({"eventType": "step_completed", "specVersion": 2, "correlationId": "step_a",
            "eventData": {"result": bin(b"r")}}),
        ),
        req(
            json!({"eventType": "run_completed", "specVersion": 2, "eventData": {"output": bin(b"o")}}),
        ),
    ];
    let out = w.append_batch(&run, reqs, Some(("a", 1))).await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert!(w.leased_runs().await.unwrap().is_empty());
    // a refused terminal batch releases nothing
    let run2 = new_run(&w).await;
    assert!(w.acquire_lease(&run2, "a", 60_000).await.unwrap().held);
    let reqs = vec![
        req(json!({"eventType": "run_started", "specVersion": 2})),
        req(
            json!({"eventType": "step_completed", "specVersion": 2, "correlationId": "nope",
            "eventData": {"result": bin(b"r")}}),
        ),
        req(
            json!({"eventType": "run_completed", "specVersion": 2, "eventData": {"output": bin(b"o")}}),
        ),
    ];
    let out = w.append_batch(&run2, reqs, Some(("a", 1))).await;
    assert_eq!(out.results.len(), 1);
    assert_eq!(w.leased_runs().await.unwrap(), vec![run2.clone()]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_started_from_the_last_ones_rows_sees_what_other_writers_changed() {
    let Some(db) = TestDb::new("snapshot").await else {
        return;
    };
    let w = db.world().await;
    let run_id = workflow_core::ids::prefixed_id("wrun");
    let create = create_request(&run_id);
    let (token, _) = w.create_run_leased(&create, "a", 60_000).await.unwrap();
    let owner = Some(("a", token));
    // batches of the execution: each starts from where the last one left the run
    for s in ["step_a", "step_b"] {
        let out = w.append_batch(&run_id, step_reqs(s), owner).await;
        assert!(out.failed.is_none(), "{:?}", out.failed);
    }
    let done = |s: &str| {
        req(
            json!({"eventType": "step_completed", "specVersion": 2, "correlationId": s,
            "eventData": {"result": bin(b"r")}}),
        )
    };
    let out = w.append_batch(&run_id, vec![done("step_a")], owner).await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    // another writer changes the step behind the execution's back (as an official
    // runtime's write would): the next batch must not trust what it knew
    let c = db.sql().await;
    c.execute(
        "UPDATE workflow.workflow_steps SET status = 'completed' WHERE run_id = $1 AND step_id = 'step_b'",
        &[&run_id],
    )
    .await
    .unwrap();
    let out = w.append_batch(&run_id, vec![done("step_b")], owner).await;
    let (index, err) = out.failed.expect("refused: the step is completed");
    assert_eq!(index, 0);
    assert_eq!(err.name(), "EntityConflictError", "{err}");
    // the run cancelled by another process: the execution's next batch sees it
    w.create_event(
        Some(&run_id),
        req(json!({"eventType": "run_cancelled", "specVersion": 2})),
    )
    .await
    .unwrap();
    let more = vec![req(
        json!({"eventType": "step_created", "specVersion": 2, "correlationId": "step_c",
        "eventData": {"stepName": "s", "input": bin(b"i")}}),
    )];
    let out = w.append_batch(&run_id, more, owner).await;
    let (index, err) = out.failed.expect("refused: the run is cancelled");
    assert_eq!(index, 0);
    assert_eq!(err.name(), "EntityConflictError", "{err}");
    assert!(
        err.to_string().contains("terminal state \"cancelled\""),
        "{err}"
    );
    assert_eq!(
        types(&db, &run_id).await,
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_created",
            "step_started",
            "step_completed",
            "run_cancelled"
        ]
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answered_from_their_writing_thread_are_answered_once_also_when_waiting_for_a_connection(
) {
    let Some(db) = TestDb::new("then").await else {
        return;
    };
    // one batch connection: the batches sent together wait for it in turn
    let mut cfg = Config::new(&db.url);
    cfg.max_pool_size = 1;
    let w = PgWorld::connect(cfg).await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(new_run(&w).await);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, run) in runs.iter().enumerate() {
        let mut reqs = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
        reqs.extend(step_reqs(&format!("step_{i}")));
        let tx = tx.clone();
        w.append_batch_then(
            run.clone(),
            move || Ok(reqs),
            None,
            move |out| {
                let _ = tx.send((i, out.unwrap()));
            },
        );
    }
    // a run id that is not one: refused, through the same answer
    let tx_bad = tx.clone();
    w.append_batch_then(
        "../x".into(),
        || Ok(Vec::new()),
        None,
        move |out| {
            let _ = tx_bad.send((usize::MAX, out.unwrap()));
        },
    );
    // requests that are not a batch: the caller's error, not a refusal
    let (tx_err, rx_err) = tokio::sync::oneshot::channel();
    w.append_batch_then(
        runs[0].clone(),
        || {
            Err(workflow_core::Error::InvalidArgument(
                "event requests must be a JSON array".into(),
            ))
        },
        None,
        move |out| {
            let _ = tx_err.send(out.err().map(|e| e.name()));
        },
    );
    assert_eq!(rx_err.await.unwrap(), Some("TypeError"));
    drop(tx);
    let mut answered = Vec::new();
    while let Some((i, out)) = rx.recv().await {
        if i == usize::MAX {
            let (index, err) = out.failed.expect("refused");
            assert_eq!(index, 0);
            assert!(err.to_string().contains("runId"), "{err}");
            answered.push(i);
            continue;
        }
        assert!(out.failed.is_none(), "{:?}", out.failed);
        assert_eq!(out.results.len(), 3);
        assert_eq!(
            types(&db, &runs[i]).await,
            ["run_created", "run_started", "step_created", "step_started"]
        );
        answered.push(i);
    }
    // every batch answered, each once (the channel closes when every answer is dropped)
    answered.sort();
    assert_eq!(answered, [0, 1, 2, 3, 4, 5, usize::MAX]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_created_and_started_in_one_batch_is_the_row_two_separate_events_leave() {
    let Some(db) = TestDb::new("coalesce").await else {
        return;
    };
    let w = db.world().await;
    // the columns of a step row, as text, that do not depend on when it was written
    let row = |run: String| {
        let db = &db;
        async move {
            let c = db.sql().await;
            let r = c
                .query_one(
                    "SELECT step_name, status::text, attempt, encode(input_cbor, 'hex'),
                        output_cbor IS NULL, error_cbor IS NULL, started_at IS NOT NULL,
                        completed_at IS NULL, retry_after IS NULL, spec_version,
                        started_at = updated_at, created_at <= started_at
                     FROM workflow.workflow_steps WHERE run_id = $1",
                    &[&run],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i32>(2),
                r.get::<_, String>(3),
                (
                    r.get::<_, bool>(4),
                    r.get::<_, bool>(5),
                    r.get::<_, bool>(6),
                ),
                (r.get::<_, bool>(7), r.get::<_, bool>(8)),
                r.get::<_, Option<i32>>(9),
                (r.get::<_, bool>(10), r.get::<_, bool>(11)),
            )
        }
    };
    // one batch (pipelined: the step's INSERT carries its started state)
    let batched = new_run(&w).await;
    let mut reqs = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    reqs.extend(step_reqs("step_a"));
    let out = w.append_batch(&batched, reqs, None).await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    // the same events one at a time (an INSERT, then an UPDATE)
    let single = new_run(&w).await;
    let mut reqs = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    reqs.extend(step_reqs("step_b")); // (step ids are unique across runs)
    for r in reqs {
        w.create_event(Some(&single), r).await.unwrap();
    }
    let (a, b) = (row(batched.clone()).await, row(single.clone()).await);
    assert_eq!(a, b);
    assert_eq!(a.1, "running");
    assert_eq!(a.2, 1);
    // and the step goes on from there: completed in the next batch
    let done = req(
        json!({"eventType": "step_completed", "specVersion": 2, "correlationId": "step_a",
        "eventData": {"result": bin(b"r")}}),
    );
    let out = w.append_batch(&batched, vec![done], None).await;
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert_eq!(step_status(&db, &batched, "step_a").await, "completed");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_batches_recording_that_work_began_commit_without_waiting_for_the_flush() {
    use workflow_core::journal::records_only_beginnings;
    assert!(records_only_beginnings(["step_created", "step_started"]));
    assert!(records_only_beginnings(["run_started"]));
    assert!(!records_only_beginnings([]));
    assert!(!records_only_beginnings(["step_started", "step_completed"]));
    for outcome in [
        "step_completed",
        "step_failed",
        "step_retrying",
        "run_completed",
        "run_failed",
        "run_cancelled",
        "hook_created",
        "wait_created",
        "run_created",
    ] {
        assert!(!records_only_beginnings([outcome]), "{outcome}");
    }

    let Some(db) = TestDb::new("unflushed").await else {
        return;
    };
    let w = db.world().await;
    let run = new_run(&w).await;
    let before = w.commits_without_flush();
    let started = vec![req(json!({"eventType": "run_started", "specVersion": 2}))];
    assert!(w.append_batch(&run, started, None).await.failed.is_none());
    assert_eq!(w.commits_without_flush(), before + 1);
    assert!(w
        .append_batch(&run, step_reqs("step_a"), None)
        .await
        .failed
        .is_none());
    assert_eq!(w.commits_without_flush(), before + 2);
    // an outcome (alone, or with the next step's beginning) waits for its flush
    let done = req(
        json!({"eventType": "step_completed", "specVersion": 2, "correlationId": "step_a",
        "eventData": {"result": bin(b"1")}}),
    );
    let mut reqs = vec![done];
    reqs.extend(step_reqs("step_b"));
    assert!(w.append_batch(&run, reqs, None).await.failed.is_none());
    assert_eq!(w.commits_without_flush(), before + 2);
    // a refused beginning commits nothing
    let unknown = vec![req(
        json!({"eventType": "step_started", "specVersion": 2, "correlationId": "step_zz"}),
    )];
    assert!(w.append_batch(&run, unknown, None).await.failed.is_some());
    assert_eq!(w.commits_without_flush(), before + 2);
    // every event is there for other connections, in order
    assert_eq!(
        types(&db, &run).await,
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_completed",
            "step_created",
            "step_started"
        ]
    );
    assert_eq!(step_status(&db, &run, "step_b").await, "running");
    db.drop_db().await;
}
