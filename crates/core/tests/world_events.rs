//! The `events.create` effects the Run handle relies on, checked on data laid out exactly
//! as @workflow/world-local 4.4.1 writes it.

use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use workflow_core::run::{wait_until_terminal, wake_up};
use workflow_core::world::local::{sha256_hex, CancelOutcome, LocalWorld};
use workflow_core::world::model::RunStatus;

const RUN: &str = "wrun_01M8JNHA0J7QWBMGSVD78BF4ZY";
const OTHER: &str = "wrun_01M8JNHA0J7QWBMGSVD78BF500";

fn write(root: &Path, rel: &str, v: &Value) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn read(root: &Path, rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(root.join(rel)).unwrap()).unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn run_file(run_id: &str, status: &str, spec: Option<i64>) -> Value {
    let mut v = json!({
        "runId": run_id,
        "deploymentId": "dpl_local@4.4.1",
        "workflowName": "workflow//./wf.js//myWf",
        "specVersion": 3,
        "executionContext": {"traceCarrier": {}, "workflowCoreVersion": "4.8.9", "features": {"encryption": false}},
        "input": {"__type": "Uint8Array", "data": "ZGV2bFtbMSwyXSwxLDJd"},
        "createdAt": "2026-11-29T03:28:16.940Z",
        "status": status,
        "startedAt": "2026-11-29T03:28:16.943Z",
        "updatedAt": "2026-11-29T03:28:16.943Z"
    });
    match spec {
        Some(s) => v["specVersion"] = json!(s),
        None => {
            v.as_object_mut().unwrap().remove("specVersion");
        }
    }
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

fn hook(root: &Path, run_id: &str, hook_id: &str, token: &str) {
    write(
        root,
        &format!("hooks/{hook_id}.json"),
        &json!({"runId": run_id, "hookId": hook_id, "token": token, "ownerId": "local-owner",
                "projectId": "local-project", "environment": "local",
                "createdAt": "2026-11-29T03:29:06.314Z", "specVersion": 3, "isWebhook": false}),
    );
    let claim = json!({"token": token, "hookId": hook_id, "runId": run_id, "eventId": "evnt_X"});
    std::fs::create_dir_all(root.join("hooks/tokens")).unwrap();
    std::fs::write(
        root.join(format!(
            "hooks/tokens/{}.json",
            sha256_hex(token.as_bytes())
        )),
        claim.to_string(),
    )
    .unwrap();
}

fn wait(root: &Path, run_id: &str, corr: &str, created_event: &str) {
    write(
        root,
        &format!("waits/{run_id}-{corr}.json"),
        &json!({"waitId": format!("{run_id}-{corr}"), "runId": run_id, "status": "waiting",
                "resumeAt": "2026-11-29T04:28:17.102Z", "createdAt": "2026-11-29T03:28:17.103Z",
                "updatedAt": "2026-11-29T03:28:17.103Z", "specVersion": 3}),
    );
    write(
        root,
        &format!("events/{run_id}-{created_event}.json"),
        &json!({"eventType": "wait_created", "specVersion": 3, "correlationId": corr,
                "eventData": {"resumeAt": "2026-11-29T04:28:17.102Z"}, "runId": run_id,
                "eventId": created_event, "createdAt": "2026-11-29T03:28:17.103Z"}),
    );
}

fn events_of(root: &Path, run_id: &str) -> Vec<Value> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("events"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with(run_id))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| read(root, &format!("events/{n}")))
        .collect()
}

fn world(root: &Path) -> Arc<LocalWorld> {
    Arc::new(LocalWorld::new(root).unwrap())
}

#[tokio::test]
async fn cancel_moves_a_running_run_to_cancelled_and_deletes_its_hooks_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", Some(3)),
    );
    hook(root, RUN, "hook_A", "tok-a");
    hook(root, OTHER, "hook_B", "tok-b");
    wait(root, RUN, "wait_A", "evnt_01M8JNHA6F37X13DBS54QPX5RB");
    wait(root, OTHER, "wait_B", "evnt_01M8JNHA6F37X13DBS54QPX5RC");

    let w = world(root);
    assert_eq!(w.cancel_run(RUN).await.unwrap(), CancelOutcome::Cancelled);

    let run = read(root, &format!("runs/{RUN}.json"));
    assert_eq!(
        keys(&run),
        [
            "runId",
            "deploymentId",
            "workflowName",
            "specVersion",
            "executionContext",
            "input",
            "createdAt",
            "startedAt",
            "status",
            "completedAt",
            "updatedAt"
        ]
    );
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["completedAt"], run["updatedAt"]);
    assert_eq!(run["input"]["data"], "ZGV2bFtbMSwyXSwxLDJd");
    // this run's hook, claim and wait are gone; the other run's are untouched
    assert!(!root.join("hooks/hook_A.json").exists());
    assert!(!root
        .join(format!("hooks/tokens/{}.json", sha256_hex(b"tok-a")))
        .exists());
    assert!(root.join("hooks/hook_B.json").exists());
    assert!(root
        .join(format!("hooks/tokens/{}.json", sha256_hex(b"tok-b")))
        .exists());
    assert!(!root.join(format!("waits/{RUN}-wait_A.json")).exists());
    assert!(root.join(format!("waits/{OTHER}-wait_B.json")).exists());

    let evs = events_of(root, RUN);
    let cancel = evs
        .iter()
        .find(|e| e["eventType"] == "run_cancelled")
        .unwrap();
    assert_eq!(
        keys(cancel),
        ["eventType", "specVersion", "runId", "eventId", "createdAt"]
    );
    assert_eq!(cancel["specVersion"], 3);
    assert!(cancel["eventId"].as_str().unwrap().starts_with("evnt_"));
    // the file is 2-space-indented JSON without a trailing newline
    let name = format!("events/{RUN}-{}.json", cancel["eventId"].as_str().unwrap());
    let text = std::fs::read_to_string(root.join(name)).unwrap();
    assert!(text.starts_with("{\n  \"eventType\": \"run_cancelled\",\n  \"specVersion\": 3,"));
    assert!(!text.ends_with('\n'));
}

#[tokio::test]
async fn cancel_is_idempotent_on_a_cancelled_run_and_conflicts_on_finished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "pending", Some(3)),
    );
    let w = world(root);
    w.cancel_run(RUN).await.unwrap();
    let before = std::fs::read(root.join(format!("runs/{RUN}.json"))).unwrap();
    assert_eq!(
        w.cancel_run(RUN).await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(
        std::fs::read(root.join(format!("runs/{RUN}.json"))).unwrap(),
        before,
        "the run is returned unchanged"
    );
    assert_eq!(
        events_of(root, RUN)
            .iter()
            .filter(|e| e["eventType"] == "run_cancelled")
            .count(),
        2
    );

    for status in ["completed", "failed"] {
        write(
            root,
            &format!("runs/{OTHER}.json"),
            &run_file(OTHER, status, Some(3)),
        );
        let e = w.cancel_run(OTHER).await.unwrap_err();
        assert_eq!(e.name(), "EntityConflictError");
        assert_eq!(
            e.to_string(),
            format!("Cannot transition run from terminal state \"{status}\"")
        );
        assert!(events_of(root, OTHER).is_empty(), "nothing written");
    }
}

#[tokio::test]
async fn cancel_of_an_unknown_run_stores_an_orphan_event_like_world_local() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    assert_eq!(w.cancel_run(RUN).await.unwrap(), CancelOutcome::Cancelled);
    assert!(!dir.path().join(format!("runs/{RUN}.json")).exists());
    assert_eq!(events_of(dir.path(), RUN).len(), 1);
}

#[tokio::test]
async fn legacy_runs_are_cancelled_in_place_without_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", None),
    );
    wait(root, RUN, "wait_A", "evnt_01M8JNHA6F37X13DBS54QPX5RB");
    let w = world(root);
    assert_eq!(
        w.cancel_run(RUN).await.unwrap(),
        CancelOutcome::LegacyCancelled
    );
    assert_eq!(
        read(root, &format!("runs/{RUN}.json"))["status"],
        "cancelled"
    );
    assert_eq!(events_of(root, RUN).len(), 1, "only the wait_created event");
    assert!(root.join(format!("waits/{RUN}-wait_A.json")).exists());
}

#[tokio::test]
async fn runs_from_a_newer_spec_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", Some(4)),
    );
    let e = world(dir.path()).cancel_run(RUN).await.unwrap_err();
    assert_eq!(e.name(), "RunNotSupportedError");
    assert_eq!(
        e.to_string(),
        "Run requires spec version 4, but world supports version 3. Please upgrade 'workflow' package."
    );
}

#[tokio::test]
async fn wait_completed_claims_the_lock_updates_the_wait_and_copies_resume_at() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", Some(3)),
    );
    wait(root, RUN, "wait_A", "evnt_01M8JNHA6F37X13DBS54QPX5RB");
    let w = world(root);
    let resume = workflow_core::world::fsio::parse_date_ms(&json!("2026-11-29T04:28:17.102Z"));
    w.complete_wait(RUN, "wait_A", Some(3.0), resume, false)
        .await
        .unwrap();

    assert!(root
        .join(format!(".locks/waits/{RUN}-wait_A.completed"))
        .exists());
    let wf = read(root, &format!("waits/{RUN}-wait_A.json"));
    assert_eq!(
        keys(&wf),
        [
            "waitId",
            "runId",
            "status",
            "resumeAt",
            "createdAt",
            "updatedAt",
            "specVersion",
            "completedAt"
        ]
    );
    assert_eq!(wf["status"], "completed");
    let ev = events_of(root, RUN)
        .into_iter()
        .find(|e| e["eventType"] == "wait_completed")
        .unwrap();
    assert_eq!(
        keys(&ev),
        [
            "eventType",
            "correlationId",
            "specVersion",
            "eventData",
            "runId",
            "eventId",
            "createdAt"
        ]
    );
    assert_eq!(ev["eventData"]["resumeAt"], "2026-11-29T04:28:17.102Z");

    let again = w
        .complete_wait(RUN, "wait_A", Some(3.0), resume, false)
        .await
        .unwrap_err();
    assert_eq!(again.name(), "EntityConflictError");
    assert_eq!(again.to_string(), "Wait \"wait_A\" already completed");

    let missing = w
        .complete_wait(RUN, "wait_Z", Some(3.0), resume, false)
        .await
        .unwrap_err();
    assert_eq!(missing.name(), "WorkflowWorldError");
    assert_eq!(missing.to_string(), "Wait \"wait_Z\" not found");
    assert!(
        !root
            .join(format!(".locks/waits/{RUN}-wait_Z.completed"))
            .exists(),
        "the lock is released when the wait does not exist"
    );
}

#[tokio::test]
async fn wake_up_completes_only_pending_waits_and_prepares_the_reenqueue() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", Some(3)),
    );
    wait(root, RUN, "wait_A", "evnt_01M8JNHA6F37X13DBS54QPX5RB");
    wait(root, RUN, "wait_B", "evnt_01M8JNHA6F37X13DBS54QPX5RC");
    wait(root, RUN, "wait_C", "evnt_01M8JNHA6F37X13DBS54QPX5RD");
    // wait_C was already completed
    write(
        root,
        &format!("events/{RUN}-evnt_01M8JNHA6F37X13DBS54QPX5RE.json"),
        &json!({"eventType": "wait_completed", "specVersion": 3, "correlationId": "wait_C",
                "runId": RUN, "eventId": "evnt_01M8JNHA6F37X13DBS54QPX5RE",
                "createdAt": "2026-11-29T03:29:00.000Z"}),
    );
    // an unparsable event file is skipped, as world-local's listing skips it
    std::fs::write(
        root.join(format!("events/{RUN}-evnt_01M8JNHA6F37X13DBS54QPX5RF.json")),
        b"{not json",
    )
    .unwrap();
    let w = world(root);

    let only_b = ["wait_B".to_string(), "wait_nope".to_string()];
    let out = wake_up(&w, RUN, Some(&only_b), None).await.unwrap();
    assert_eq!(out.stopped_count, 1);
    assert!(out.errors.is_empty());
    let msg = out.message.unwrap();
    assert_eq!(msg.queue_name, "__wkf_workflow_workflow//./wf.js//myWf");
    assert_eq!(msg.body, format!("{{\"runId\":\"{RUN}\"}}"));
    assert!(msg.message_id.starts_with("msg_"));

    let out = wake_up(&w, RUN, None, None).await.unwrap();
    assert_eq!(out.stopped_count, 1, "only wait_A is left");
    let out = wake_up(&w, RUN, None, None).await.unwrap();
    assert_eq!(out.stopped_count, 0);
    assert!(
        out.message.is_none(),
        "nothing is enqueued when nothing stopped"
    );
}

#[tokio::test]
async fn wake_up_on_a_cancelled_run_collects_the_missing_waits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", Some(3)),
    );
    wait(root, RUN, "wait_A", "evnt_01M8JNHA6F37X13DBS54QPX5RB");
    let w = world(root);
    w.cancel_run(RUN).await.unwrap();
    let out = wake_up(&w, RUN, None, None).await.unwrap();
    assert_eq!(out.stopped_count, 0);
    assert_eq!(out.pending_count, 1);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].to_string(), "Wait \"wait_A\" not found");
}

#[tokio::test]
async fn wake_up_of_an_unknown_run_fails() {
    let dir = tempfile::tempdir().unwrap();
    let e = wake_up(&world(dir.path()), RUN, None, None)
        .await
        .unwrap_err();
    assert!(e.is_run_not_found());
}

#[tokio::test]
async fn wait_until_terminal_is_woken_by_a_completion_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write(
        &root,
        &format!("runs/{RUN}.json"),
        &run_file(RUN, "running", Some(3)),
    );
    let w = world(&root);
    let waiter = {
        let w = Arc::clone(&w);
        tokio::spawn(async move { wait_until_terminal(&w, RUN).await })
    };
    // The waiter subscribes before its first read, so a completion written at any point
    // after it started is seen; writing from another thread models another process.
    let writer = std::thread::spawn(move || {
        let body = serde_json::to_string_pretty(&run_file(RUN, "completed", Some(3))).unwrap();
        let tmp = root.join(format!("runs/{RUN}.json.tmp.1"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(tmp, root.join(format!("runs/{RUN}.json"))).unwrap();
    });
    writer.join().unwrap();
    let snap = waiter.await.unwrap().unwrap();
    assert_eq!(snap.status, RunStatus::Completed);
    assert_eq!(
        snap.output,
        Some(workflow_core::world::model::Payload::Bytes(
            b"devl[42]".to_vec()
        ))
    );
}

#[tokio::test]
async fn unsafe_ids_are_rejected_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    for bad in [
        "",
        ".",
        "..",
        "../etc/passwd",
        "a/b",
        "a\\b",
        "a\0b",
        ".locks",
        "wrun_x.json",
    ] {
        assert_eq!(
            w.get_run(bad, true).await.unwrap_err().name(),
            "UnsafeEntityIdError"
        );
        let e = w.cancel_run(bad).await.unwrap_err();
        if bad.is_empty() {
            // events.create treats an empty runId as missing, like world-local
            assert_eq!(
                e.to_string(),
                "runId is required for non-run_created events"
            );
        } else {
            assert_eq!(e.name(), "UnsafeEntityIdError");
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[tokio::test]
async fn corrupt_run_files_give_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("runs")).unwrap();
    std::fs::write(
        dir.path().join(format!("runs/{RUN}.json")),
        b"{\"runId\": \"wr",
    )
    .unwrap();
    let e = world(dir.path()).get_run(RUN, true).await.unwrap_err();
    assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"));
    assert!(e.to_string().contains(&format!("{RUN}.json")), "{e}");
}
