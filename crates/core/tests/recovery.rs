//! The engine's crash recovery (`LocalWorld::recover_run_sync`): the event a writer killed
//! between an entity and its event left out is written from the entity, once; a lock that
//! guards nothing is removed; a corrupt event stops recovery with `CORRUPT_FILE` naming
//! the file before anything is written.

use serde_json::{json, Value};
use std::path::Path;
use workflow_core::world::local::LocalWorld;

fn create(world: &LocalWorld, run_id: Option<&str>, req: Value) -> Value {
    let res = world.create_event_sync(run_id, &req.to_string()).unwrap();
    res.event.unwrap()
}

fn bytes(text: &str) -> Value {
    use base64::Engine;
    json!({"__type": "Uint8Array", "data": base64::engine::general_purpose::STANDARD.encode(text)})
}

/// A running run with one started step; returns (run id, step id).
fn run_with_started_step(world: &LocalWorld) -> (String, String) {
    let run_id = create(
        world,
        None,
        json!({"eventType": "run_created", "specVersion": 3, "eventData": {
            "deploymentId": "dpl_test", "workflowName": "workflow//native//rec", "input": bytes("devl[[]]")}}),
    )["runId"]
        .as_str()
        .unwrap()
        .to_string();
    create(
        world,
        Some(&run_id),
        json!({"eventType": "run_started", "specVersion": 3}),
    );
    let step = "step_01M8TSB9JAT4N19QBB9SPCT4YN".to_string();
    create(
        world,
        Some(&run_id),
        json!({"eventType": "step_created", "specVersion": 3, "correlationId": step,
            "eventData": {"stepName": "s", "input": bytes("devl[{\"args\":1},[]]")}}),
    );
    create(
        world,
        Some(&run_id),
        json!({"eventType": "step_started", "specVersion": 3, "correlationId": step, "eventData": {"stepName": "s"}}),
    );
    (run_id, step)
}

fn event_path(root: &Path, ev: &Value) -> std::path::PathBuf {
    root.join("events").join(format!(
        "{}-{}.json",
        ev["runId"].as_str().unwrap(),
        ev["eventId"].as_str().unwrap()
    ))
}

fn types(events_json: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(events_json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_step_completed_lost_after_the_step_file_is_written_from_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let world = LocalWorld::new(dir.path()).unwrap();
    let (run_id, step) = run_with_started_step(&world);
    let done = create(
        &world,
        Some(&run_id),
        json!({"eventType": "step_completed", "specVersion": 3, "correlationId": step,
            "eventData": {"stepName": "s", "result": bytes("devl[42]")}}),
    );
    std::fs::remove_file(event_path(dir.path(), &done)).unwrap();

    let rec = world.recover_run_sync(&run_id).unwrap();
    assert_eq!(rec.status, "running");
    assert_eq!(rec.repairs.len(), 1, "{:?}", rec.repairs);
    assert_eq!(
        types(&rec.events_json),
        [
            "run_created",
            "run_started",
            "step_created",
            "step_started",
            "step_completed"
        ]
    );
    let evs: Value = serde_json::from_str(&rec.events_json).unwrap();
    let repaired = &evs[4];
    assert_eq!(repaired["eventData"]["result"], bytes("devl[42]"));
    assert_eq!(repaired["createdAt"], done["createdAt"]);
    assert_eq!(repaired["correlationId"], json!(step));
    // the official reader takes it: the step's outcome through events.create is refused
    // as before (terminal), and a second recovery has nothing to do
    let again = world.recover_run_sync(&run_id).unwrap();
    assert!(again.repairs.is_empty(), "{:?}", again.repairs);
    assert_eq!(again.events_json, rec.events_json);
}

#[test]
fn a_stale_terminal_lock_is_removed_and_the_step_can_complete() {
    let dir = tempfile::tempdir().unwrap();
    let world = LocalWorld::new(dir.path()).unwrap();
    let (run_id, step) = run_with_started_step(&world);
    let lock = dir
        .path()
        .join(".locks/steps")
        .join(format!("{run_id}-{step}.terminal"));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "").unwrap();
    let refused = world.create_event_sync(
        Some(&run_id),
        &json!({"eventType": "step_completed", "specVersion": 3, "correlationId": step,
            "eventData": {"result": bytes("devl[1]")}})
        .to_string(),
    );
    assert_eq!(refused.unwrap_err().name(), "EntityConflictError");
    let rec = world.recover_run_sync(&run_id).unwrap();
    assert_eq!(rec.repairs.len(), 1, "{:?}", rec.repairs);
    assert!(!lock.exists());
    create(
        &world,
        Some(&run_id),
        json!({"eventType": "step_completed", "specVersion": 3, "correlationId": step,
            "eventData": {"result": bytes("devl[1]")}}),
    );
}

#[test]
fn a_corrupt_event_is_reported_naming_the_file_and_nothing_is_written() {
    for corrupt in [
        "",
        "{\"eventType\":",
        "[1]",
        "{\"eventType\":\"step_completed\"}",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let world = LocalWorld::new(dir.path()).unwrap();
        let (run_id, step) = run_with_started_step(&world);
        let done = create(
            &world,
            Some(&run_id),
            json!({"eventType": "step_completed", "specVersion": 3, "correlationId": step,
                "eventData": {"stepName": "s", "result": bytes("devl[42]")}}),
        );
        let path = event_path(dir.path(), &done);
        std::fs::write(&path, corrupt).unwrap();
        let count = || {
            std::fs::read_dir(dir.path().join("events"))
                .unwrap()
                .count()
        };
        let before = count();
        let err = world.recover_run_sync(&run_id).unwrap_err();
        assert_eq!(
            err.code().as_deref(),
            Some("CORRUPT_FILE"),
            "{corrupt:?}: {err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(count(), before, "nothing written for {corrupt:?}");
    }
}

#[test]
fn a_step_completed_without_its_result_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let world = LocalWorld::new(dir.path()).unwrap();
    let (run_id, step) = run_with_started_step(&world);
    let done = create(
        &world,
        Some(&run_id),
        json!({"eventType": "step_completed", "specVersion": 3, "correlationId": step,
            "eventData": {"stepName": "s", "result": bytes("devl[42]")}}),
    );
    let path = event_path(dir.path(), &done);
    let mut ev: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    ev["eventData"].as_object_mut().unwrap().remove("result");
    std::fs::write(&path, ev.to_string()).unwrap();
    let err = world.read_run_log_sync(&run_id).unwrap_err();
    assert_eq!(err.code().as_deref(), Some("CORRUPT_FILE"));
    assert!(err.to_string().contains("eventData.result"), "{err}");
}
