//! The engine's journal: batched appends through `events.create`, and a follower that
//! reports the events other writers add to a run but never the journal's own.

use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use workflow_core::journal::Journal;
use workflow_core::world::local::LocalWorld;

mod waltest;
use waltest::req;

/// A fresh world with one pending run; returns (world, journal, run id).
fn setup() -> (tempfile::TempDir, Arc<LocalWorld>, Arc<Journal>, String) {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(LocalWorld::new(dir.path()).unwrap());
    let run_id = new_run(&world);
    let journal = Journal::new(Arc::clone(&world));
    (dir, world, journal, run_id)
}

/// A pending run created through `events.create`; returns its id.
fn new_run(world: &LocalWorld) -> String {
    waltest::create_run(world)
}

fn step_created(step: &str) -> Map<String, Value> {
    req(json!({
        "eventType": "step_created",
        "specVersion": 3,
        "correlationId": step,
        "eventData": {"stepName": "s", "input": {"__type": "Uint8Array", "data": "ZGV2bFtd"}}
    }))
}

fn step_started(step: &str) -> Map<String, Value> {
    req(
        json!({"eventType": "step_started", "specVersion": 3, "correlationId": step, "eventData": {"stepName": "s"}}),
    )
}

/// One field of every event in the run's log, in log order.
fn log_field(world: &LocalWorld, run_id: &str, field: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(&world.list_events_json_sync(run_id).unwrap()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_str().unwrap().to_string())
        .collect()
}

fn event_types(world: &LocalWorld, run_id: &str) -> Vec<String> {
    log_field(world, run_id, "eventType")
}

#[test]
fn a_batch_is_written_in_order_and_stops_at_the_first_refusal() {
    let (_dir, world, journal, run) = setup();
    let out = journal.append(
        &run,
        vec![
            req(json!({"eventType": "run_started", "specVersion": 3})),
            step_created("step_A"),
            step_started("step_A"),
            // refused: no such step
            step_started("step_missing"),
            // never attempted
            step_created("step_B"),
        ],
    );
    assert_eq!(out.results.len(), 3);
    let (index, err) = out.failed.expect("the fourth request is refused");
    assert_eq!(index, 3);
    assert_eq!(err.to_string(), "Step \"step_missing\" not found");
    assert_eq!(out.results[2].step.as_ref().unwrap()["attempt"], json!(1));
    assert_eq!(
        event_types(&world, &run),
        ["run_created", "run_started", "step_created", "step_started"]
    );
}

#[test]
fn an_unsafe_run_id_is_refused_before_anything_is_written() {
    let (_dir, _world, journal, _run) = setup();
    let out = journal.append("../x", vec![step_created("step_A")]);
    assert!(out.results.is_empty());
    let (index, err) = out.failed.unwrap();
    assert_eq!(index, 0);
    assert_eq!(err.name(), "UnsafeEntityIdError");
}

#[tokio::test]
async fn the_follower_reports_other_writers_events_and_never_the_journals_own() {
    let (_dir, world, journal, run) = setup();
    let mut follower = journal.follow(&run).unwrap();
    follower.known(ids_in_log(&world, &run));
    // our own writes, before and after a foreign one
    let own = journal.append(
        &run,
        vec![
            req(json!({"eventType": "run_started", "specVersion": 3})),
            step_created("step_A"),
            step_started("step_A"),
        ],
    );
    assert!(own.failed.is_none());
    let foreign = world
        .create_event_sync(Some(&run), &json!({"eventType": "wait_created", "specVersion": 3, "correlationId": "wait_X", "eventData": {"resumeAt": "2030-01-01T00:00:00.000Z"}}).to_string())
        .unwrap();
    let foreign_id = foreign.event.unwrap()["eventId"]
        .as_str()
        .unwrap()
        .to_string();
    let more = journal.append(&run, vec![step_created("step_B")]);
    assert!(more.failed.is_none());

    let got = tokio::time::timeout(Duration::from_secs(10), follower.next())
        .await
        .expect("the foreign event is reported")
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|e| e["eventId"].as_str().unwrap()).collect();
    assert_eq!(ids, [foreign_id.as_str()]);
    // nothing else is pending: a rescan finds no other foreign event
    assert!(follower.poll_now().unwrap().is_empty());
}

#[tokio::test]
async fn poll_now_sees_a_foreign_event_at_once_and_skips_known_ones() {
    let (_dir, world, journal, run) = setup();
    let first: Value = serde_json::from_str(&world.list_events_json_sync(&run).unwrap()).unwrap();
    let run_created_id = first[0]["eventId"].as_str().unwrap().to_string();
    let mut follower = journal.follow(&run).unwrap();
    follower.known([run_created_id]);
    assert!(follower.poll_now().unwrap().is_empty());
    world
        .create_event_sync(
            Some(&run),
            &json!({"eventType": "run_started", "specVersion": 3}).to_string(),
        )
        .unwrap();
    let got = follower.poll_now().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["eventType"], json!("run_started"));
    // reported once only
    assert!(follower.poll_now().unwrap().is_empty());
}

#[tokio::test]
async fn events_of_other_runs_are_not_reported() {
    let (_dir, world, journal, run) = setup();
    let other = new_run(&world);
    let mut follower = journal.follow(&run).unwrap();
    world
        .create_event_sync(
            Some(&other),
            &json!({"eventType": "run_started", "specVersion": 3}).to_string(),
        )
        .unwrap();
    world
        .create_event_sync(
            Some(&run),
            &json!({"eventType": "run_started", "specVersion": 3}).to_string(),
        )
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), follower.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["runId"], json!(run));
}

fn ids_in_log(world: &LocalWorld, run_id: &str) -> Vec<String> {
    log_field(world, run_id, "eventId")
}

/// `run_started`, then `step`'s creation and start, in one batch (as the engine sends them).
fn start_with_step(journal: &Journal, run: &str, step: &str) {
    let out = journal.append(
        run,
        vec![
            req(json!({"eventType": "run_started", "specVersion": 3})),
            step_created(step),
            step_started(step),
        ],
    );
    assert!(out.failed.is_none(), "{:?}", out.failed);
}

/// Appends one batch that must be written whole.
fn append_ok(journal: &Journal, run: &str, requests: Vec<Map<String, Value>>) {
    let out = journal.append(run, requests);
    assert!(out.failed.is_none(), "{:?}", out.failed);
}

fn step_completed(step: &str) -> Map<String, Value> {
    req(json!({
        "eventType": "step_completed",
        "specVersion": 3,
        "correlationId": step,
        "eventData": {"stepName": "s", "result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}
    }))
}

/// The journal keeps the run it read and the step it wrote between batches: a change
/// another writer makes to the run in between (a cancel) is seen by the next batch.
#[test]
fn a_cancel_between_batches_is_seen_by_the_next_batch() {
    let (_dir, world, journal, run) = setup();
    start_with_step(&journal, &run, "step_A");
    append_ok(&journal, &run, vec![step_completed("step_A")]);
    // the run is read (and kept) by this batch, and used again by the next
    append_ok(&journal, &run, vec![step_created("step_B")]);
    append_ok(&journal, &run, vec![step_started("step_B")]);
    // another writer (an API route) cancels the run
    world
        .create_event_sync(
            Some(&run),
            &json!({"eventType": "run_cancelled", "specVersion": 3}).to_string(),
        )
        .unwrap();
    // no new step may be created: the journal must have seen the cancel
    let out = journal.append(&run, vec![step_created("step_C")]);
    let (index, err) = out.failed.expect("the cancelled run refuses a new step");
    assert_eq!(index, 0);
    assert_eq!(err.name(), "EntityConflictError", "{err:?}");
    assert!(
        err.to_string().contains("terminal state \"cancelled\""),
        "{err}"
    );
    let created = event_types(&world, &run)
        .iter()
        .filter(|t| *t == "step_created")
        .count();
    assert_eq!(created, 2);
}

/// Steps written by an earlier batch are known without reading them back; a run that is
/// still running is used again while its file is unchanged. The outcome is the same as
/// reading everything: attempts counted, a second completion refused.
#[test]
fn batches_continue_from_what_the_previous_batch_wrote() {
    let (_dir, world, journal, run) = setup();
    start_with_step(&journal, &run, "step_A");
    // a retry: the step's second attempt, counted from the step as the journal wrote it
    let out = journal.append(
        &run,
        vec![req(json!({
            "eventType": "step_retrying", "specVersion": 3, "correlationId": "step_A",
            "eventData": {"stepName": "s", "error": "boom"}
        }))],
    );
    assert!(out.failed.is_none(), "{:?}", out.failed);
    let out = journal.append(&run, vec![step_started("step_A")]);
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert_eq!(out.results[0].step.as_ref().unwrap()["attempt"], json!(2));
    append_ok(&journal, &run, vec![step_completed("step_A")]);
    // completing it again is refused, cache or not
    let out = journal.append(&run, vec![step_completed("step_A")]);
    assert!(out.failed.is_some(), "a second completion must be refused");
    let _ = &world;
    let step: Value = serde_json::from_slice(
        &std::fs::read(_dir.path().join("steps").join(format!("{run}-step_A.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(step["status"], json!("completed"));
    assert_eq!(step["attempt"], json!(2));
}

/// A step rewritten behind the journal's back (crash recovery, before the run executes
/// here again) is read again once the execution that cached it ended (`forget`).
#[test]
fn forget_drops_what_the_journal_remembered() {
    let (dir, world, journal, run) = setup();
    start_with_step(&journal, &run, "step_A");
    // the step file is completed by someone else (as a repair would)
    let path = dir.path().join("steps").join(format!("{run}-step_A.json"));
    let mut step: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    step["status"] = json!("completed");
    std::fs::write(&path, serde_json::to_vec_pretty(&step).unwrap()).unwrap();
    journal.forget(&run);
    let out = journal.append(&run, vec![step_started("step_A")]);
    assert!(
        out.failed.is_some(),
        "a completed step cannot start again: the journal must have read the file"
    );
    let _ = world;
}

/// A batch written for a lease owner goes through only while that owner holds the run's
/// lease; once another owner took the run over, it is refused whole (`LEASE_LOST`).
#[test]
fn fenced_batches_are_refused_once_the_lease_is_lost() {
    let (dir, world, journal, run) = setup();
    assert!(workflow_core::lease::acquire(dir.path(), &run, "owner-a", 60_000).unwrap());
    let out = journal.append_fenced(
        &run,
        vec![req(json!({"eventType": "run_started", "specVersion": 3}))],
        Some("owner-a"),
    );
    assert!(out.failed.is_none(), "{:?}", out.failed);
    // owner B takes the lease over (A's heartbeat judged stale: a zero time to live)
    assert!(workflow_core::lease::acquire(dir.path(), &run, "owner-b", 0).unwrap());
    let out = journal.append_fenced(&run, vec![step_created("step_A")], Some("owner-a"));
    assert!(out.results.is_empty());
    let (index, err) = out.failed.expect("a batch of a lost lease is refused");
    assert_eq!(index, 0);
    assert_eq!(err.name(), "WorkflowRuntimeError");
    assert_eq!(err.code().as_deref(), Some("LEASE_LOST"));
    assert!(err.to_string().contains(&run), "{err}");
    assert_eq!(event_types(&world, &run), ["run_created", "run_started"]);
    // the new owner writes
    let out = journal.append_fenced(&run, vec![step_created("step_A")], Some("owner-b"));
    assert!(out.failed.is_none(), "{:?}", out.failed);
    // unfenced appends are not checked
    append_ok(&journal, &run, vec![step_started("step_A")]);
}

fn step_file(dir: &tempfile::TempDir, run: &str, step: &str) -> std::path::PathBuf {
    dir.path().join("steps").join(format!("{run}-{step}.json"))
}

/// A fresh step's creation and start in one batch write its step file once, already
/// running; the files are what two separate batches write (same fields, same events).
#[test]
fn a_step_created_and_started_together_is_written_as_separately() {
    let (dir, world, journal, run) = setup();
    let out = journal.append(
        &run,
        vec![
            req(json!({"eventType": "run_started", "specVersion": 3})),
            step_created("step_A"),
            step_started("step_A"),
        ],
    );
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert_eq!(out.results.len(), 3);
    assert_eq!(
        out.results[1].step.as_ref().unwrap()["status"],
        json!("pending")
    );
    assert_eq!(
        out.results[2].step.as_ref().unwrap()["status"],
        json!("running")
    );
    // the same, in two batches
    assert!(journal
        .append(&run, vec![step_created("step_B")])
        .failed
        .is_none());
    assert!(journal
        .append(&run, vec![step_started("step_B")])
        .failed
        .is_none());
    let read = |step: &str| -> Value {
        serde_json::from_slice(&std::fs::read(step_file(&dir, &run, step)).unwrap()).unwrap()
    };
    let (a, b) = (read("step_A"), read("step_B"));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "same fields in the same order");
    for k in ["status", "attempt", "stepName", "input", "runId"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    assert_eq!(a["status"], json!("running"));
    assert_eq!(
        event_types(&world, &run),
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_created",
            "step_started"
        ]
    );
}

/// The held step file cannot be written (a file of that name is in the way): the failure
/// is step_created's, nothing of either request is written, the file in the way is left.
#[test]
fn a_held_step_that_cannot_be_written_fails_its_creation_and_leaves_nothing() {
    let (dir, world, journal, run) = setup();
    assert!(journal
        .append(
            &run,
            vec![req(json!({"eventType": "run_started", "specVersion": 3}))]
        )
        .failed
        .is_none());
    let path = step_file(&dir, &run, "step_A");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"in\": \"the way\"}").unwrap();
    let out = journal.append(&run, vec![step_created("step_A"), step_started("step_A")]);
    assert!(out.results.is_empty(), "{:?}", out.results.len());
    let (index, err) = out.failed.expect("refused");
    assert_eq!(index, 0, "the failure is step_created's");
    assert_eq!(err.name(), "EntityConflictError", "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"in\": \"the way\"}");
    assert_eq!(event_types(&world, &run), ["run_created", "run_started"]);
}
