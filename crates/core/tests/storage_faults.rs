//! Storage faults in `events.create` and in the listings the engine resumes from: a
//! failed write before the event leaves storage as it was (the event is the commit
//! point); a clean-up that fails after it does not fail the event and is repaired later;
//! a file that is not readable is named, never a reason to stop listing the others.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use workflow_core::ids::prefixed_id;
use workflow_core::world::local::{sha256_hex, LocalWorld};

fn world() -> (tempfile::TempDir, LocalWorld) {
    let dir = tempfile::tempdir().unwrap();
    let w = LocalWorld::new(dir.path()).unwrap();
    (dir, w)
}

fn create(w: &LocalWorld, run_id: &str, req: Value) -> workflow_core::Result<Value> {
    w.create_event_sync(Some(run_id), &req.to_string())
        .map(|r| r.to_value())
}

fn new_run(w: &LocalWorld, started: bool) -> String {
    let run_id = prefixed_id("wrun");
    create(
        w,
        &run_id,
        json!({"eventType": "run_created", "specVersion": 3, "eventData": {
            "deploymentId": "dpl", "workflowName": "wf",
            "input": {"__type": "Uint8Array", "data": "AQ=="}
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

/// Every file under `root` except the events: its path and its contents (as JSON when
/// it parses, so an entity restored with another key order or spacing compares equal).
fn snapshot(root: &Path) -> BTreeMap<String, Value> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Value>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            // events, and our own bookkeeping (leases, the durability log)
            if rel == "events" || rel.starts_with("events.") || rel == ".workflow-native" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let v = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
                out.insert(rel, v);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn event_types(root: &Path, run_id: &str) -> Vec<String> {
    let mut evs: Vec<(String, String)> = std::fs::read_dir(root.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{run_id}-"))
        })
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (
                v["eventId"].as_str().unwrap().to_string(),
                v["eventType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    evs.sort();
    evs.into_iter().map(|(_, t)| t).collect()
}

/// Replaces the directory `rel` by a file; returns its repair.
fn break_dir(root: &Path, rel: &str) -> impl FnOnce() {
    let dir = root.join(rel);
    let aside = PathBuf::from(format!("{}.aside", dir.display()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    move || {
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&aside, &dir).unwrap();
    }
}

/// A run with a pending step, a running step, a waiting wait and a hook.
fn busy_run(w: &LocalWorld) -> String {
    let run_id = new_run(w, true);
    for s in ["step_p", "step_r"] {
        create(w, &run_id, json!({"eventType": "step_created", "specVersion": 3, "correlationId": s, "eventData": {"stepName": "s", "input": {"__type": "Uint8Array", "data": "AQ=="}}})).unwrap();
    }
    create(
        w,
        &run_id,
        json!({"eventType": "step_started", "specVersion": 3, "correlationId": "step_r"}),
    )
    .unwrap();
    create(w, &run_id, json!({"eventType": "wait_created", "specVersion": 3, "correlationId": "wait_1", "eventData": {"resumeAt": "2040-01-01T00:00:00.000Z"}})).unwrap();
    create(w, &run_id, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_1", "eventData": {"token": format!("tok-{run_id}")}})).unwrap();
    run_id
}

#[test]
fn an_event_that_cannot_be_stored_changes_nothing() {
    let requests: Vec<(&str, Value)> = vec![
        (
            "run_started on a pending run",
            json!({"eventType": "run_started", "specVersion": 3}),
        ),
        (
            "run_completed",
            json!({"eventType": "run_completed", "specVersion": 3, "eventData": {"output": {"__type": "Uint8Array", "data": "AQ=="}}}),
        ),
        (
            "run_failed",
            json!({"eventType": "run_failed", "specVersion": 3, "eventData": {"error": {"message": "m"}}}),
        ),
        (
            "run_cancelled",
            json!({"eventType": "run_cancelled", "specVersion": 3}),
        ),
        (
            "step_created",
            json!({"eventType": "step_created", "specVersion": 3, "correlationId": "step_new", "eventData": {"stepName": "s", "input": {"__type": "Uint8Array", "data": "AQ=="}}}),
        ),
        (
            "step_started",
            json!({"eventType": "step_started", "specVersion": 3, "correlationId": "step_p"}),
        ),
        (
            "step_completed",
            json!({"eventType": "step_completed", "specVersion": 3, "correlationId": "step_r", "eventData": {"result": {"__type": "Uint8Array", "data": "AQ=="}}}),
        ),
        (
            "step_failed",
            json!({"eventType": "step_failed", "specVersion": 3, "correlationId": "step_r", "eventData": {"error": "boom"}}),
        ),
        (
            "step_retrying",
            json!({"eventType": "step_retrying", "specVersion": 3, "correlationId": "step_r", "eventData": {"error": "again"}}),
        ),
        (
            "wait_created",
            json!({"eventType": "wait_created", "specVersion": 3, "correlationId": "wait_new", "eventData": {"resumeAt": "2040-01-01T00:00:00.000Z"}}),
        ),
        (
            "wait_completed",
            json!({"eventType": "wait_completed", "specVersion": 3, "correlationId": "wait_1"}),
        ),
        (
            "hook_disposed",
            json!({"eventType": "hook_disposed", "specVersion": 3, "correlationId": "hook_1"}),
        ),
    ];
    for (what, req) in requests {
        let (dir, w) = world();
        let run_id = if what.contains("pending") {
            new_run(&w, false)
        } else {
            busy_run(&w)
        };
        let before = snapshot(dir.path());
        let events_before = event_types(dir.path(), &run_id);
        let repair = break_dir(dir.path(), "events");
        let e = create(&w, &run_id, req.clone()).expect_err(what);
        assert_eq!(e.code().as_deref(), Some("ENOTDIR"), "{what}: {e}");
        assert!(e.to_string().contains("events"), "{what}: {e}");
        repair();
        assert_eq!(snapshot(dir.path()), before, "{what}: storage changed");
        assert_eq!(event_types(dir.path(), &run_id), events_before, "{what}");
        // and the same event goes through once the storage is fixed (no marker left taken)
        create(&w, &run_id, req).unwrap_or_else(|e| panic!("{what} after the repair: {e}"));
    }
}

#[test]
fn a_clean_up_that_fails_after_the_event_does_not_fail_it_and_is_repaired_later() {
    for (kind, broken) in [
        ("run_cancelled", "hooks"),
        ("run_completed", "hooks"),
        ("run_failed", "waits"),
    ] {
        let (dir, w) = world();
        let run_id = busy_run(&w);
        let token = format!("tok-{run_id}");
        let repair = break_dir(dir.path(), broken);
        let data = match kind {
            "run_completed" => json!({"output": {"__type": "Uint8Array", "data": "AQ=="}}),
            "run_failed" => json!({"error": {"message": "m"}}),
            _ => json!({}),
        };
        let mut req = json!({"eventType": kind, "specVersion": 3});
        if kind != "run_cancelled" {
            req["eventData"] = data;
        }
        let r = create(&w, &run_id, req).unwrap_or_else(|e| panic!("{kind}: {e}"));
        repair();
        let status = r["run"]["status"].as_str().unwrap().to_string();
        assert!(
            event_types(dir.path(), &run_id).contains(&kind.to_string()),
            "{kind}: the event is stored"
        );
        let run: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("runs/{run_id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(run["status"], status.as_str());

        // what was left behind reads as gone
        let e = create(&w, &run_id, json!({"eventType": "hook_received", "specVersion": 3, "correlationId": "hook_1", "eventData": {"payload": {"__type": "Uint8Array", "data": "AQ=="}}})).unwrap_err();
        assert_eq!(e.name(), "HookNotFoundError", "{kind}");
        let e = create(
            &w,
            &run_id,
            json!({"eventType": "wait_completed", "specVersion": 3, "correlationId": "wait_1"}),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Wait \"wait_1\" not found", "{kind}");
        assert!(
            !dir.path()
                .join(format!(".locks/waits/{run_id}-wait_1.completed"))
                .exists(),
            "{kind}: lock released"
        );
        // the token is free for another run (its stale claim is removed on the way)
        let other = new_run(&w, true);
        let r = create(&w, &other, json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_2", "eventData": {"token": token}})).unwrap();
        assert_eq!(r["event"]["eventType"], "hook_created", "{kind}");
        assert!(!dir.path().join("hooks/hook_1.json").exists(), "{kind}");
        if broken == "waits" {
            // a repeated cancel is refused (the run ended) but nothing is left to repair
            // here: the leftover wait is treated as gone, as checked above
            assert!(dir
                .path()
                .join(format!("waits/{run_id}-wait_1.json"))
                .exists());
        }
    }
}

#[tokio::test]
async fn a_hook_left_behind_is_not_found_and_is_removed() {
    let (dir, w) = world();
    let run_id = busy_run(&w);
    let token = format!("tok-{run_id}");
    let repair = break_dir(dir.path(), "hooks");
    create(
        &w,
        &run_id,
        json!({"eventType": "run_cancelled", "specVersion": 3}),
    )
    .unwrap();
    repair();
    assert!(dir
        .path()
        .join("hooks/tokens")
        .join(format!("{}.json", sha256_hex(token.as_bytes())))
        .exists());
    let e = w.get_hook_by_token(&token).await.unwrap_err();
    assert_eq!(e.name(), "HookNotFoundError");
    assert!(!dir.path().join("hooks/hook_1.json").exists(), "removed");
    assert!(
        !dir.path()
            .join("hooks/tokens")
            .join(format!("{}.json", sha256_hex(token.as_bytes())))
            .exists(),
        "its claim too"
    );

    // a disposed hook whose deletion failed: the same
    let run_b = busy_run(&w);
    let token_b = format!("tok-{run_b}");
    std::fs::create_dir_all(dir.path().join(".locks/hooks")).unwrap();
    std::fs::write(dir.path().join(".locks/hooks/hook_1.disposed"), b"").unwrap();
    let e = w.get_hook_by_token(&token_b).await.unwrap_err();
    assert_eq!(e.name(), "HookNotFoundError");
}

#[tokio::test]
async fn one_unreadable_hook_file_does_not_hide_the_others() {
    let (dir, w) = world();
    let run_a = busy_run(&w);
    std::fs::write(dir.path().join("hooks/zz_broken.json"), b"{nope").unwrap();
    // without its claim the hook is found by the search, past the broken file
    std::fs::remove_file(dir.path().join("hooks/tokens").join(format!(
        "{}.json",
        sha256_hex(format!("tok-{run_a}").as_bytes())
    )))
    .unwrap();
    let h = w.get_hook_by_token(&format!("tok-{run_a}")).await.unwrap();
    assert_eq!(h.run_id, run_a);
    // a token found nowhere: the broken file is the answer (the hook may be in it)
    let e = w.get_hook_by_token("unknown").await.unwrap_err();
    assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"));
    assert!(e.to_string().contains("zz_broken.json"), "{e}");
}

#[test]
fn listings_name_the_files_they_cannot_read() {
    let (dir, w) = world();
    let good = new_run(&w, true);
    let runs = dir.path().join("runs");
    std::fs::write(runs.join("wrun_BAD1.json"), b"\xff\xfe not utf-8").unwrap();
    std::fs::write(runs.join("wrun_BAD2.json"), b"[1,2,3]").unwrap();
    std::fs::create_dir(runs.join("wrun_BAD3.json")).unwrap();
    let (text, faults) = w.list_runs_report_sync(None).unwrap();
    let listed: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["runId"], good.as_str());
    let mut named: Vec<(String, String)> = faults
        .iter()
        .map(|e| {
            (
                e.fields()["path"].as_str().unwrap().to_string(),
                e.code().unwrap(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![
            (
                runs.join("wrun_BAD1.json").display().to_string(),
                "CORRUPT_FILE".into()
            ),
            (
                runs.join("wrun_BAD2.json").display().to_string(),
                "CORRUPT_FILE".into()
            ),
            (
                runs.join("wrun_BAD3.json").display().to_string(),
                "EISDIR".into()
            ),
        ]
    );
    // the lenient listing skips them, as world-local does
    assert_eq!(w.list_runs_json_sync(None).unwrap(), text);

    // a log with a bad file: the strict reading names it, the lenient one skips it
    let events = dir.path().join("events");
    let bad = events.join(format!("{good}-evnt_0000000000000000000000000Z.json"));
    for contents in [
        &b""[..],
        b"{\"eventType\":",
        b"[]",
        b"{\"eventType\":\"x\"}",
    ] {
        std::fs::write(&bad, contents).unwrap();
        let e = w.read_run_log_sync(&good).unwrap_err();
        assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"), "{e}");
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
        let lenient: Vec<Value> =
            serde_json::from_str(&w.list_events_json_sync(&good).unwrap()).unwrap();
        assert_eq!(lenient.len(), 2);
    }
    // an event of another run under this run's name is not this run's
    let other = new_run(&w, false);
    let foreign = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&other))
        .unwrap();
    std::fs::copy(&foreign, &bad).unwrap();
    let e = w.read_run_log_sync(&good).unwrap_err();
    assert!(e.to_string().contains("is not \""), "{e}");
    std::fs::remove_file(&bad).unwrap();
    std::fs::create_dir(&bad).unwrap();
    let e = w.read_run_log_sync(&good).unwrap_err();
    assert_eq!(e.code().as_deref(), Some("EISDIR"));
}

#[test]
fn recovery_does_not_rebuild_the_log_of_a_run_that_went_on() {
    let (dir, w) = world();
    let run_id = busy_run(&w);
    // the whole log lost (events/ emptied): not the crash window of a start
    let events = dir.path().join("events");
    for e in std::fs::read_dir(&events).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let before = snapshot(dir.path());
    let e = w.recover_run_sync(&run_id).unwrap_err();
    assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"), "{e}");
    assert!(e.to_string().contains(&events.display().to_string()), "{e}");
    assert!(e.to_string().contains("run_created"), "{e}");
    assert_eq!(
        std::fs::read_dir(&events).unwrap().count(),
        0,
        "nothing written"
    );
    assert_eq!(snapshot(dir.path()), before);

    // a pending run without its run_created is the crash window of a start: repaired
    let pending = new_run(&w, false);
    for e in std::fs::read_dir(&events).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&pending)
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let rec = w.recover_run_sync(&pending).unwrap();
    assert_eq!(rec.repairs.len(), 1, "{:?}", rec.repairs);
    assert_eq!(event_types(dir.path(), &pending), ["run_created"]);
}

#[test]
fn a_crash_between_a_disposal_lock_and_its_event_is_finished_by_recovery() {
    let (dir, w) = world();
    let run_id = busy_run(&w);
    // hook_disposed takes its lock, then stores its event, then removes the hook: killed
    // after the lock, the hook is still there and no event
    std::fs::create_dir_all(dir.path().join(".locks/hooks")).unwrap();
    std::fs::write(dir.path().join(".locks/hooks/hook_1.disposed"), b"").unwrap();
    let rec = w.recover_run_sync(&run_id).unwrap();
    assert!(
        rec.repairs
            .iter()
            .any(|r| r.starts_with("hook_disposed for hook_1")),
        "{:?}",
        rec.repairs
    );
    assert_eq!(
        event_types(dir.path(), &run_id).last().map(String::as_str),
        Some("hook_disposed")
    );
    assert!(!dir.path().join("hooks/hook_1.json").exists());
    let again = w.recover_run_sync(&run_id).unwrap();
    assert!(again.repairs.is_empty(), "{:?}", again.repairs);
}
