//! `LocalWorld::create_event_sync`: world-local 4.4.1's `events.create` effects for every
//! event type, checked on the files it leaves behind.

use serde_json::{json, Value};
use std::path::Path;
use workflow_core::ids::prefixed_id;
use workflow_core::world::local::{sha256_hex, LocalWorld};
use workflow_core::Error;

fn world() -> (tempfile::TempDir, LocalWorld) {
    let dir = tempfile::tempdir().unwrap();
    let w = LocalWorld::new(dir.path()).unwrap();
    (dir, w)
}

fn read(root: &Path, rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(root.join(rel)).unwrap()).unwrap()
}

fn text(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn create(w: &LocalWorld, run_id: &str, req: Value) -> workflow_core::Result<Value> {
    w.create_event_sync(Some(run_id), &req.to_string())
        .map(|r| r.to_value())
}

const INPUT: &str = "ZGV2bFtbMSwyXSwxLDJd";

fn bin(b64: &str) -> Value {
    json!({"__type": "Uint8Array", "data": b64})
}

/// A fresh run, created and (optionally) started.
fn new_run(w: &LocalWorld, started: bool) -> String {
    let run_id = prefixed_id("wrun");
    create(
        w,
        &run_id,
        json!({"eventType": "run_created", "specVersion": 3, "eventData": {
            "deploymentId": "dpl_local@4.4.1", "workflowName": "wf", "input": bin(INPUT),
            "executionContext": {"features": {"encryption": false}}
        }}),
    )
    .unwrap();
    if started {
        create(
            w,
            &run_id,
            json!({"eventType": "run_started", "specVersion": 3}),
        )
        .unwrap();
    }
    run_id
}

fn step(
    w: &LocalWorld,
    run_id: &str,
    ty: &str,
    step_id: &str,
    data: Option<Value>,
) -> workflow_core::Result<Value> {
    let mut req = json!({"eventType": ty, "specVersion": 3, "correlationId": step_id});
    if let Some(d) = data {
        req["eventData"] = d;
    }
    create(w, run_id, req)
}

fn event_files(root: &Path, run_id: &str) -> Vec<Value> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&format!("{run_id}-")))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| read(root, &format!("events/{n}")))
        .collect()
}

#[test]
fn run_created_and_started_write_world_local_files() {
    let (dir, w) = world();
    let run_id = prefixed_id("wrun");
    let r = create(
        &w,
        &run_id,
        json!({"eventType": "run_created", "specVersion": 3, "eventData": {
            "deploymentId": "d", "workflowName": "wf", "input": bin(INPUT)}}),
    )
    .unwrap();
    let run = read(dir.path(), &format!("runs/{run_id}.json"));
    assert_eq!(
        keys(&run),
        [
            "runId",
            "deploymentId",
            "status",
            "workflowName",
            "specVersion",
            "input",
            "createdAt",
            "updatedAt"
        ]
    );
    assert_eq!(r["run"], run);
    assert_eq!(r["event"]["createdAt"], run["createdAt"], "one instant");
    assert_eq!(
        keys(&r["event"]),
        [
            "eventType",
            "specVersion",
            "eventData",
            "runId",
            "eventId",
            "createdAt"
        ]
    );
    // pretty JSON, no trailing newline
    let t = text(dir.path(), &format!("runs/{run_id}.json"));
    assert!(t.starts_with("{\n  \"runId\": ") && t.ends_with('}'));

    let r = create(
        &w,
        &run_id,
        json!({"eventType": "run_started", "specVersion": 3, "eventData": {"x": 1}}),
    )
    .unwrap();
    let run = read(dir.path(), &format!("runs/{run_id}.json"));
    assert_eq!(run["status"], "running");
    assert_eq!(run["startedAt"], r["event"]["createdAt"]);
    assert!(
        r["event"].get("eventData").is_none(),
        "run_started drops eventData"
    );
    assert_eq!(
        keys(&run),
        [
            "runId",
            "deploymentId",
            "workflowName",
            "specVersion",
            "input",
            "createdAt",
            "status",
            "startedAt",
            "updatedAt"
        ]
    );
    // idempotent on a running run: no event, the run as stored
    let again = create(
        &w,
        &run_id,
        json!({"eventType": "run_started", "specVersion": 3}),
    )
    .unwrap();
    assert!(again.get("event").is_none());
    assert_eq!(again["run"], run);
    assert_eq!(event_files(dir.path(), &run_id).len(), 2);

    // generated id when none is given; a duplicate is a conflict
    let gen = w
        .create_event_sync(None, &json!({"eventType": "run_created", "eventData": {"deploymentId": "d", "workflowName": "w", "input": bin(INPUT)}}).to_string())
        .unwrap()
        .to_value();
    assert!(gen["run"]["runId"].as_str().unwrap().starts_with("wrun_"));
    assert_eq!(
        gen["event"]["specVersion"], 3,
        "specVersion defaults to current"
    );
    let dup = create(&w, &run_id, json!({"eventType": "run_created", "eventData": {"deploymentId": "d", "workflowName": "w", "input": bin(INPUT)}})).unwrap_err();
    assert_eq!(dup.name(), "EntityConflictError");
    assert_eq!(
        dup.to_string(),
        format!("Workflow run \"{run_id}\" already exists")
    );
    // non run_created without a run id
    let e = w
        .create_event_sync(None, r#"{"eventType":"run_started"}"#)
        .unwrap_err();
    assert_eq!(
        (e.name(), e.to_string().as_str()),
        ("Error", "runId is required for non-run_created events")
    );
    // stale client run id
    let e = create(
        &w,
        "wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        json!({"eventType": "run_created", "eventData": {}}),
    )
    .unwrap_err();
    assert_eq!(e.name(), "WorkflowWorldError");
    assert!(e
        .to_string()
        .starts_with("Invalid runId timestamp: embedded timestamp is "));
}

#[test]
fn resilient_start_creates_the_missing_run() {
    let (dir, w) = world();
    let run_id = prefixed_id("wrun");
    let r = create(
        &w,
        &run_id,
        json!({"eventType": "run_started", "specVersion": 3, "eventData": {
            "deploymentId": "d", "workflowName": "wf", "input": bin(INPUT)}}),
    )
    .unwrap();
    assert_eq!(r["run"]["status"], "running");
    let evs = event_files(dir.path(), &run_id);
    // run_started's id was drawn first, so it sorts before run_created
    assert_eq!(evs[0]["eventType"], "run_started");
    assert_eq!(evs[1]["eventType"], "run_created");
    assert_eq!(evs[0]["createdAt"], evs[1]["createdAt"]);
    assert_eq!(
        keys(&evs[1]),
        [
            "eventType",
            "runId",
            "eventId",
            "createdAt",
            "specVersion",
            "eventData"
        ]
    );
}

#[test]
fn steps_count_attempts_retry_and_finish() {
    let (dir, w) = world();
    let run_id = new_run(&w, true);
    let path = format!("steps/{run_id}-step_1.json");
    let r = step(
        &w,
        &run_id,
        "step_created",
        "step_1",
        Some(json!({"stepName": "s", "input": bin("eA==")})),
    )
    .unwrap();
    let s = read(dir.path(), &path);
    assert_eq!(r["step"], s);
    assert_eq!(
        keys(&s),
        [
            "runId",
            "stepId",
            "stepName",
            "status",
            "input",
            "attempt",
            "createdAt",
            "updatedAt",
            "specVersion"
        ]
    );
    assert_eq!(s["attempt"], 0);
    let dup = step(
        &w,
        &run_id,
        "step_created",
        "step_1",
        Some(json!({"stepName": "s"})),
    )
    .unwrap_err();
    assert_eq!(dup.name(), "EntityConflictError");
    assert!(dup.to_string().ends_with(&format!(
        "{run_id}-step_1.json already exists and 'overwrite' is false"
    )));

    let r = step(&w, &run_id, "step_started", "step_1", None).unwrap();
    let s = read(dir.path(), &path);
    assert_eq!(
        (s["status"].clone(), s["attempt"].clone()),
        (json!("running"), json!(1))
    );
    assert_eq!(s["startedAt"], r["event"]["createdAt"]);
    assert_eq!(s["updatedAt"], r["event"]["createdAt"]);
    // startedAt is new: appended after the stored keys
    assert_eq!(keys(&s).last(), Some(&"startedAt"));
    let first_start = s["startedAt"].clone();

    // retry with a string error and a past retryAfter
    step(
        &w,
        &run_id,
        "step_retrying",
        "step_1",
        Some(json!({"error": "flaky", "retryAfter": "2000-01-01T00:00:00.000Z"})),
    )
    .unwrap();
    let s = read(dir.path(), &path);
    assert_eq!(s["status"], "pending");
    assert_eq!(s["error"], json!({"message": "flaky"}));
    assert_eq!(s["retryAfter"], "2000-01-01T00:00:00.000Z");
    // a second start: attempt 2, startedAt kept, retryAfter cleared
    step(&w, &run_id, "step_started", "step_1", None).unwrap();
    let s = read(dir.path(), &path);
    assert_eq!(s["attempt"], 2);
    assert_eq!(s["startedAt"], first_start);
    assert!(s.get("retryAfter").is_none());
    // zod order on re-write: error moves to its schema place
    assert_eq!(
        keys(&s),
        [
            "runId",
            "stepId",
            "stepName",
            "status",
            "input",
            "error",
            "attempt",
            "startedAt",
            "createdAt",
            "updatedAt",
            "specVersion"
        ]
    );

    // a future retryAfter: TooEarlyError
    step(&w, &run_id, "step_retrying", "step_1", Some(json!({"error": {"message": "m", "stack": "ignored"}, "stack": "S", "retryAfter": "2999-01-01T00:00:00.000Z"}))).unwrap();
    let s = read(dir.path(), &path);
    assert_eq!(s["error"], json!({"message": "m", "stack": "S"}));
    let e = step(&w, &run_id, "step_started", "step_1", None).unwrap_err();
    assert_eq!(e.name(), "TooEarlyError");
    assert_eq!(
        e.to_string(),
        "Cannot start step \"step_1\": retryAfter timestamp has not been reached yet"
    );
    assert!(e.fields()["retryAfter"].as_i64().unwrap() > 0);

    // complete (without a start, from pending: allowed) with the terminal lock
    let r = step(
        &w,
        &run_id,
        "step_completed",
        "step_1",
        Some(json!({"result": bin("AQ==")})),
    )
    .unwrap();
    let s = read(dir.path(), &path);
    assert_eq!(r["step"], s);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["output"], bin("AQ=="));
    assert_eq!(&keys(&s)[keys(&s).len() - 2..], ["output", "completedAt"]);
    assert!(dir
        .path()
        .join(format!(".locks/steps/{run_id}-step_1.terminal"))
        .exists());
    let e = step(
        &w,
        &run_id,
        "step_completed",
        "step_1",
        Some(json!({"result": bin("AQ==")})),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cannot modify step in terminal state \"completed\""
    );

    // failure
    step(
        &w,
        &run_id,
        "step_created",
        "step_2",
        Some(json!({"stepName": "s2"})),
    )
    .unwrap();
    step(
        &w,
        &run_id,
        "step_failed",
        "step_2",
        Some(json!({"error": {"message": "bad"}, "stack": "st"})),
    )
    .unwrap();
    let s = read(dir.path(), &format!("steps/{run_id}-step_2.json"));
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error"], json!({"message": "bad", "stack": "st"}));
    // unknown step
    let e = step(&w, &run_id, "step_started", "step_9", None).unwrap_err();
    assert_eq!(
        (e.name(), e.to_string()),
        (
            "WorkflowWorldError",
            "Step \"step_9\" not found".to_string()
        )
    );
}

#[test]
fn a_stale_terminal_lock_blocks_completion() {
    let (dir, w) = world();
    let run_id = new_run(&w, true);
    step(
        &w,
        &run_id,
        "step_created",
        "step_1",
        Some(json!({"stepName": "s"})),
    )
    .unwrap();
    step(&w, &run_id, "step_started", "step_1", None).unwrap();
    std::fs::create_dir_all(dir.path().join(".locks/steps")).unwrap();
    std::fs::write(
        dir.path()
            .join(format!(".locks/steps/{run_id}-step_1.terminal")),
        "",
    )
    .unwrap();
    let e = step(
        &w,
        &run_id,
        "step_failed",
        "step_1",
        Some(json!({"error": "x"})),
    )
    .unwrap_err();
    assert_eq!(
        (e.name(), e.to_string()),
        (
            "EntityConflictError",
            "Cannot modify step in terminal state".to_string()
        )
    );
}

#[test]
fn terminal_runs_reject_transitions_and_new_entities() {
    let (dir, w) = world();
    let run_id = new_run(&w, true);
    step(
        &w,
        &run_id,
        "step_created",
        "step_run",
        Some(json!({"stepName": "s"})),
    )
    .unwrap();
    step(&w, &run_id, "step_started", "step_run", None).unwrap();
    step(
        &w,
        &run_id,
        "step_created",
        "step_pend",
        Some(json!({"stepName": "s"})),
    )
    .unwrap();
    create(&w, &run_id, json!({"eventType": "wait_created", "correlationId": "wait_1", "eventData": {"resumeAt": "2040-01-01T00:00:00.000Z"}})).unwrap();
    create(&w, &run_id, json!({"eventType": "hook_created", "correlationId": "hook_t1", "eventData": {"token": "tok-terminal"}})).unwrap();
    let r = create(&w, &run_id, json!({"eventType": "run_failed", "specVersion": 3, "eventData": {"error": {"message": "boom", "stack": "S"}, "errorCode": "USER_ERROR"}})).unwrap();
    let run = read(dir.path(), &format!("runs/{run_id}.json"));
    assert_eq!(r["run"], run);
    assert_eq!(
        run["error"],
        json!({"message": "boom", "stack": "S", "code": "USER_ERROR"})
    );
    assert_eq!(run["completedAt"], r["event"]["createdAt"]);
    // hooks, claims and waits of the run are gone
    assert!(!dir.path().join("hooks/hook_t1.json").exists());
    assert!(!dir
        .path()
        .join(format!("hooks/tokens/{}.json", sha256_hex(b"tok-terminal")))
        .exists());
    assert!(!dir
        .path()
        .join(format!("waits/{run_id}-wait_1.json"))
        .exists());

    let err = |req: Value| create(&w, &run_id, req).unwrap_err();
    let e = err(json!({"eventType": "run_started"}));
    assert_eq!(
        (e.name(), e.to_string()),
        (
            "RunExpiredError",
            format!("Workflow run \"{run_id}\" is already in terminal state \"failed\"")
        )
    );
    for ty in ["run_completed", "run_failed", "run_cancelled"] {
        let e = err(json!({"eventType": ty, "eventData": {}}));
        assert_eq!(
            (e.name(), e.to_string()),
            (
                "EntityConflictError",
                "Cannot transition run from terminal state \"failed\"".to_string()
            )
        );
    }
    for ty in ["step_created", "hook_created", "wait_created"] {
        let e = err(json!({"eventType": ty, "correlationId": "x_1", "eventData": {"token": "t"}}));
        assert_eq!(
            e.to_string(),
            "Cannot create new entities on run in terminal state \"failed\""
        );
    }
    // a running step may still finish; a pending one may not move
    let e = step(&w, &run_id, "step_started", "step_pend", None).unwrap_err();
    assert_eq!(
        (e.name(), e.to_string()),
        (
            "RunExpiredError",
            "Cannot modify non-running step on run in terminal state \"failed\"".to_string()
        )
    );
    step(
        &w,
        &run_id,
        "step_completed",
        "step_run",
        Some(json!({"result": bin("AQ==")})),
    )
    .unwrap();

    // run_cancelled: idempotent only on a cancelled run
    let run2 = new_run(&w, false);
    create(
        &w,
        &run2,
        json!({"eventType": "run_cancelled", "specVersion": 3}),
    )
    .unwrap();
    let again = create(
        &w,
        &run2,
        json!({"eventType": "run_cancelled", "specVersion": 3}),
    )
    .unwrap();
    assert_eq!(again["run"], read(dir.path(), &format!("runs/{run2}.json")));
    assert_eq!(event_files(dir.path(), &run2).len(), 3);
    // run_completed
    let run3 = new_run(&w, true);
    create(&w, &run3, json!({"eventType": "run_completed", "specVersion": 3, "eventData": {"output": bin("AQ==")}})).unwrap();
    let run = read(dir.path(), &format!("runs/{run3}.json"));
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
            "output",
            "completedAt",
            "updatedAt"
        ]
    );
}

#[test]
fn hooks_claim_tokens_conflict_and_dispose() {
    let (dir, w) = world();
    let run_a = new_run(&w, true);
    let run_b = new_run(&w, true);
    let r = create(&w, &run_a, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_a", "eventData": {"token": "tok", "metadata": bin("AQ==")}})).unwrap();
    let hook = read(dir.path(), "hooks/hook_a.json");
    assert_eq!(r["hook"], hook);
    assert_eq!(
        keys(&hook),
        [
            "runId",
            "hookId",
            "token",
            "metadata",
            "ownerId",
            "projectId",
            "environment",
            "createdAt",
            "specVersion",
            "isWebhook"
        ]
    );
    assert_eq!(hook["isWebhook"], false);
    let claim_path = format!("hooks/tokens/{}.json", sha256_hex(b"tok"));
    let claim = text(dir.path(), &claim_path);
    assert_eq!(
        claim,
        format!(
            r#"{{"token":"tok","hookId":"hook_a","runId":"{run_a}","eventId":"{}"}}"#,
            r["event"]["eventId"].as_str().unwrap()
        )
    );

    // another run, same token: hook_conflict, no hook entity
    let r = create(&w, &run_b, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_b", "eventData": {"token": "tok"}})).unwrap();
    assert_eq!(r["event"]["eventType"], "hook_conflict");
    assert_eq!(
        r["event"]["eventData"],
        json!({"token": "tok", "conflictingRunId": run_a})
    );
    assert_eq!(
        keys(&r["event"]),
        [
            "eventType",
            "correlationId",
            "eventData",
            "runId",
            "eventId",
            "createdAt",
            "specVersion"
        ]
    );
    assert!(r.get("hook").is_none());
    assert!(!dir.path().join("hooks/hook_b.json").exists());

    // a retry of the same hook converges on the claim's event id: duplicate → conflict
    let e = create(&w, &run_a, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_a", "eventData": {"token": "tok"}})).unwrap_err();
    assert_eq!(e.name(), "EntityConflictError");
    assert!(e.to_string().starts_with("Event \"evnt_"));
    assert_eq!(
        read(dir.path(), "hooks/hook_a.json"),
        hook,
        "committed hook untouched"
    );

    // hook_received: event only
    let r = create(&w, &run_a, json!({"eventType": "hook_received", "specVersion": 3, "correlationId": "hook_a", "eventData": {"payload": bin("AQ==")}})).unwrap();
    assert_eq!(r["event"]["eventType"], "hook_received");
    // dispose: hook and claim gone, lock left; twice → conflict
    create(
        &w,
        &run_a,
        json!({"eventType": "hook_disposed", "specVersion": 3, "correlationId": "hook_a"}),
    )
    .unwrap();
    assert!(!dir.path().join("hooks/hook_a.json").exists());
    assert!(!dir.path().join(&claim_path).exists());
    assert!(dir.path().join(".locks/hooks/hook_a.disposed").exists());
    let e = create(
        &w,
        &run_a,
        json!({"eventType": "hook_disposed", "correlationId": "hook_a"}),
    )
    .unwrap_err();
    assert_eq!(e.name(), "HookNotFoundError");
    let e = create(
        &w,
        &run_a,
        json!({"eventType": "hook_received", "correlationId": "hook_a", "eventData": {}}),
    )
    .unwrap_err();
    assert_eq!(
        (e.name(), e.fields()["token"].clone()),
        ("HookNotFoundError", json!("hook_a"))
    );

    // the token is free again
    let r = create(&w, &run_b, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_c", "eventData": {"token": "tok", "isWebhook": true}})).unwrap();
    assert_eq!(r["hook"]["isWebhook"], true);
}

#[test]
fn a_retry_after_a_crash_before_the_event_publishes_it() {
    let (dir, w) = world();
    let run_id = new_run(&w, true);
    // a claim with an event id but neither event nor entity (crash after the claim)
    let eid = prefixed_id("evnt");
    let claim_path = dir
        .path()
        .join(format!("hooks/tokens/{}.json", sha256_hex(b"tk")));
    std::fs::create_dir_all(claim_path.parent().unwrap()).unwrap();
    std::fs::write(
        &claim_path,
        json!({"token": "tk", "hookId": "hook_x", "runId": run_id, "eventId": eid}).to_string(),
    )
    .unwrap();
    let r = create(&w, &run_id, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_x", "eventData": {"token": "tk"}})).unwrap();
    assert_eq!(
        r["event"]["eventId"],
        eid.as_str(),
        "canonical id from the claim"
    );
    assert!(dir
        .path()
        .join(format!("events/{run_id}-{eid}.json"))
        .exists());
    assert!(dir.path().join("hooks/hook_x.json").exists());
}

#[test]
fn a_lost_claim_is_rebuilt_from_the_log_before_claiming() {
    let (dir, w) = world();
    let run_a = new_run(&w, true);
    let run_b = new_run(&w, true);
    create(&w, &run_a, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_a", "eventData": {"token": "tk2"}})).unwrap();
    // the caches are lost
    std::fs::remove_file(
        dir.path()
            .join(format!("hooks/tokens/{}.json", sha256_hex(b"tk2"))),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("hooks/hook_a.json")).unwrap();
    let r = create(&w, &run_b, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_b", "eventData": {"token": "tk2"}})).unwrap();
    assert_eq!(r["event"]["eventType"], "hook_conflict");
    let rebuilt = read(dir.path(), "hooks/hook_a.json");
    assert_eq!(
        rebuilt["isWebhook"], true,
        "rebuilt hooks default to webhooks"
    );
}

#[test]
fn waits_are_created_once_and_completed_once() {
    let (dir, w) = world();
    let run_id = new_run(&w, true);
    let r = create(&w, &run_id, json!({"eventType": "wait_created", "specVersion": 3, "correlationId": "wait_1", "eventData": {"resumeAt": "2040-01-01T00:00:00.000Z"}})).unwrap();
    let path = format!("waits/{run_id}-wait_1.json");
    let wv = read(dir.path(), &path);
    assert_eq!(r["wait"], wv);
    assert_eq!(
        keys(&wv),
        [
            "waitId",
            "runId",
            "status",
            "resumeAt",
            "createdAt",
            "updatedAt",
            "specVersion"
        ]
    );
    assert_eq!(wv["waitId"], format!("{run_id}-wait_1"));
    let e = create(
        &w,
        &run_id,
        json!({"eventType": "wait_created", "correlationId": "wait_1", "eventData": {}}),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "Wait \"wait_1\" already exists");

    let r = create(
        &w,
        &run_id,
        json!({"eventType": "wait_completed", "specVersion": 3, "correlationId": "wait_1"}),
    )
    .unwrap();
    let wv = read(dir.path(), &path);
    assert_eq!(wv["status"], "completed");
    assert_eq!(wv["completedAt"], r["event"]["createdAt"]);
    assert_eq!(keys(&wv).last(), Some(&"completedAt"));
    let e = create(
        &w,
        &run_id,
        json!({"eventType": "wait_completed", "correlationId": "wait_1"}),
    )
    .unwrap_err();
    assert_eq!(
        (e.name(), e.to_string()),
        (
            "EntityConflictError",
            "Wait \"wait_1\" already completed".to_string()
        )
    );
    let e = create(
        &w,
        &run_id,
        json!({"eventType": "wait_completed", "correlationId": "wait_2"}),
    )
    .unwrap_err();
    assert_eq!(
        (e.name(), e.to_string()),
        (
            "WorkflowWorldError",
            "Wait \"wait_2\" not found".to_string()
        )
    );
    assert!(
        !dir.path()
            .join(format!(".locks/waits/{run_id}-wait_2.completed"))
            .exists(),
        "lock released"
    );
}

#[test]
fn ids_are_validated_before_any_file_access() {
    let (dir, w) = world();
    for (run, corr, kind) in [
        ("../x", "c", "runId"),
        ("wrun_A", "a/b", "correlationId"),
        ("wrun_A", "", "correlationId"),
    ] {
        let e = w
            .create_event_sync(
                Some(run),
                &json!({"eventType": "step_created", "correlationId": corr, "eventData": {}})
                    .to_string(),
            )
            .unwrap_err();
        assert!(
            matches!(&e, Error::UnsafeEntityId { kind: k, .. } if k == kind),
            "{e:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
    let e = w.create_event_sync(Some("wrun_A"), "not json").unwrap_err();
    assert_eq!(e.name(), "TypeError");
}

#[test]
fn legacy_runs_take_the_legacy_paths() {
    let (dir, w) = world();
    let run_id = "wrun_LEGACY";
    std::fs::create_dir_all(dir.path().join("runs")).unwrap();
    std::fs::write(
        dir.path().join(format!("runs/{run_id}.json")),
        json!({"runId": run_id, "deploymentId": "d", "workflowName": "w", "status": "running", "input": [1],
               "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}).to_string(),
    )
    .unwrap();
    let e = create(
        &w,
        run_id,
        json!({"eventType": "step_created", "correlationId": "s", "eventData": {}}),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Event type 'step_created' not supported for legacy runs (specVersion: undefined). Please upgrade 'workflow' package."
    );
    let r = create(&w, run_id, json!({"eventType": "hook_received", "specVersion": 1, "correlationId": "h", "eventData": {}})).unwrap();
    assert_eq!(
        r["event"]["specVersion"], 3,
        "legacy events get the current spec version"
    );
    let r = create(&w, run_id, json!({"eventType": "run_cancelled"})).unwrap();
    assert!(r.get("event").is_none());
    assert_eq!(r["run"]["status"], "cancelled");
    assert_eq!(event_files(dir.path(), run_id).len(), 1);
}

#[test]
fn listings_return_stored_entities() {
    let (dir, w) = world();
    let a = new_run(&w, true);
    let b = new_run(&w, false);
    create(&w, &a, json!({"eventType": "run_completed", "specVersion": 3, "eventData": {"output": bin("AQ==")}})).unwrap();
    let evs: Value = serde_json::from_str(&w.list_events_json_sync(&a).unwrap()).unwrap();
    let types: Vec<&str> = evs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["run_created", "run_started", "run_completed"]);
    assert_eq!(evs[2], event_files(dir.path(), &a)[2]);
    let all: Value = serde_json::from_str(&w.list_runs_json_sync(None).unwrap()).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let pending: Value = serde_json::from_str(
        &w.list_runs_json_sync(Some(&["pending".to_string()]))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pending,
        json!([read(dir.path(), &format!("runs/{b}.json"))])
    );
    assert!(w.list_events_json_sync("../x").is_err());
    assert_eq!(w.list_events_json_sync("wrun_NONE").unwrap(), "[]");
}
