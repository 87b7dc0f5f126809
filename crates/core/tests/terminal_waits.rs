//! `LocalWorld::wait_terminal`: many waiters, one registry, answers for each.

use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use workflow_core::world::local::LocalWorld;
use workflow_core::world::model::RunStatus;

fn run_file(run_id: &str, status: &str) -> Value {
    let mut v = json!({
        "runId": run_id,
        "deploymentId": "dpl_local@4.4.1",
        "workflowName": "workflow//./wf.js//myWf",
        "specVersion": 3,
        "input": {"__type": "Uint8Array", "data": "ZGV2bFtbMSwyXSwxLDJd"},
        "createdAt": "2026-11-29T03:28:16.940Z",
        "status": status,
        "startedAt": "2026-11-29T03:28:16.943Z",
        "updatedAt": "2026-11-29T03:28:16.943Z"
    });
    if status == "completed" || status == "failed" || status == "cancelled" {
        v["completedAt"] = json!("2026-11-29T03:28:17.000Z");
    }
    if status == "completed" {
        v["output"] = json!({"__type": "Uint8Array", "data": "ZGV2bFs0Ml0="});
    }
    if status == "failed" {
        v["error"] = json!({"message": "boom", "code": "USER_ERROR"});
    }
    v
}

/// Replaces a run file the way world-local does (temp file + rename).
fn replace(root: &Path, run_id: &str, status: &str) {
    let dir = root.join("runs");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!("{run_id}.json.tmp.{status}"));
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&run_file(run_id, status)).unwrap(),
    )
    .unwrap();
    std::fs::rename(tmp, dir.join(format!("{run_id}.json"))).unwrap();
}

fn run_id(i: usize) -> String {
    format!("wrun_{i:026}")
}

/// Waits (bounded) until `cond` holds; a hang guard, not a timing assertion.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

const STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_waiters_on_hundreds_of_runs_each_get_their_run_s_final_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    const RUNS: usize = 300;
    const PER_RUN: usize = 10;
    for i in 0..RUNS {
        replace(&root, &run_id(i), "running");
    }
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let mut tasks = Vec::new();
    for i in 0..RUNS {
        for _ in 0..PER_RUN {
            let w = Arc::clone(&world);
            tasks.push((
                i,
                tokio::spawn(async move { w.wait_terminal(&run_id(i)).await }),
            ));
        }
    }
    let reg = Arc::clone(world.terminal_waiters());
    until("every waiter registered", || {
        reg.waiter_count() == RUNS * PER_RUN
    })
    .await;
    // An intermediate rewrite that is not terminal wakes nobody for good.
    for i in (0..RUNS).step_by(7) {
        replace(&root, &run_id(i), "running");
    }
    // Completions written from another thread (another process, as far as the world
    // knows), in an order unrelated to the waiters'.
    let writer_root = root.clone();
    std::thread::spawn(move || {
        for k in 0..RUNS {
            let i = (k * 7919) % RUNS;
            replace(&writer_root, &run_id(i), STATUSES[i % 3]);
        }
    })
    .join()
    .unwrap();
    for (i, t) in tasks {
        let snap = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("the waiter was answered")
            .unwrap()
            .unwrap();
        assert_eq!(snap.run_id, run_id(i));
        assert_eq!(snap.status.as_str(), STATUSES[i % 3]);
        if snap.status == RunStatus::Completed {
            assert!(snap.output.is_some(), "the output is read with the state");
        }
    }
    assert_eq!(reg.waiter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_runs_and_unreadable_files_fail_every_waiter_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("runs")).unwrap();
    std::fs::write(root.join("runs/wrun_CORRUPT.json"), b"{\"runId\": tru").unwrap();
    replace(root, "wrun_RUNNING", "running");
    let world = Arc::new(LocalWorld::new(root).unwrap());
    let mut unknown = Vec::new();
    let mut corrupt = Vec::new();
    for _ in 0..5 {
        let w = Arc::clone(&world);
        unknown.push(tokio::spawn(
            async move { w.wait_terminal("wrun_NOPE").await },
        ));
        let w = Arc::clone(&world);
        corrupt.push(tokio::spawn(async move {
            w.wait_terminal("wrun_CORRUPT").await
        }));
    }
    // A run still running does not hold the others up.
    let w = Arc::clone(&world);
    let running = tokio::spawn(async move { w.wait_terminal("wrun_RUNNING").await });
    for t in unknown {
        let e = t.await.unwrap().unwrap_err();
        assert!(e.is_run_not_found(), "{e}");
        assert_eq!(e.to_string(), "Workflow run \"wrun_NOPE\" not found");
    }
    for t in corrupt {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"), "{e}");
        assert!(e.to_string().contains("wrun_CORRUPT.json"), "{e}");
    }
    assert!(!running.is_finished());
    replace(root, "wrun_RUNNING", "cancelled");
    let snap = running.await.unwrap().unwrap();
    assert_eq!(snap.status, RunStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_ids_are_rejected_before_registering() {
    let dir = tempfile::tempdir().unwrap();
    let world = LocalWorld::new(dir.path()).unwrap();
    for bad in ["", "../x", "a/b", "a\0b", "x.json"] {
        let e = world.wait_terminal(bad).await.unwrap_err();
        assert_eq!(e.name(), "UnsafeEntityIdError", "{bad:?}");
    }
    assert_eq!(world.terminal_waiters().waiter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_wait_is_forgotten_and_a_later_one_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    replace(root, "wrun_A", "running");
    let world = Arc::new(LocalWorld::new(root).unwrap());
    let w = Arc::clone(&world);
    let abandoned = tokio::spawn(async move { w.wait_terminal("wrun_A").await });
    let reg = Arc::clone(world.terminal_waiters());
    until("the waiter registered", || reg.waiter_count() == 1).await;
    abandoned.abort();
    // The next change of the file makes the registry look again and drop the entry.
    replace(root, "wrun_A", "running");
    until("the abandoned waiter is released", || {
        reg.waiter_count() == 0
    })
    .await;
    let w = Arc::clone(&world);
    let later = tokio::spawn(async move { w.wait_terminal("wrun_A").await });
    until("the new waiter registered", || reg.waiter_count() == 1).await;
    replace(root, "wrun_A", "completed");
    assert_eq!(later.await.unwrap().unwrap().status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_already_terminal_answers_at_once_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    replace(dir.path(), "wrun_DONE", "completed");
    let world = LocalWorld::new(dir.path()).unwrap();
    let snap = world.wait_terminal("wrun_DONE").await.unwrap();
    assert_eq!(snap.status, RunStatus::Completed);
    assert_eq!(
        snap.output,
        Some(workflow_core::world::model::Payload::Bytes(
            b"devl[42]".to_vec()
        ))
    );
}
