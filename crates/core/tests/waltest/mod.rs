//! Shared by the journal and durability-log tests: requests, a new run, a journaled run on
//! a real disk, a model of a power loss, and the comparison of a directory with its
//! acknowledged state.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use workflow_core::journal::Journal;
use workflow_core::world::durable::{self, Mode};
use workflow_core::world::local::LocalWorld;
use workflow_core::world::wal;

pub fn req(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("test requests are objects"),
    }
}

/// A step's `step_created` and `step_started`, and with `done` its `step_completed`.
pub fn step(step: &str, done: bool) -> Vec<Map<String, Value>> {
    let mut v = vec![
        req(json!({
            "eventType": "step_created", "specVersion": 3, "correlationId": step,
            "eventData": {"stepName": "s", "input": {"__type": "Uint8Array", "data": "ZGV2bFtd"}}
        })),
        req(json!({
            "eventType": "step_started", "specVersion": 3, "correlationId": step,
            "eventData": {"stepName": "s"}
        })),
    ];
    if done {
        v.push(step_completed(step));
    }
    v
}

pub fn step_completed(step: &str) -> Map<String, Value> {
    req(json!({
        "eventType": "step_completed", "specVersion": 3, "correlationId": step,
        "eventData": {"result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}
    }))
}

/// Every world file under `root` (the engine's own directory left out): contents and mtime.
pub fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, i64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, i64)>) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if rel.starts_with(".workflow-native") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let m = e.metadata().unwrap();
                let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
                out.insert(rel, (std::fs::read(&p).unwrap(), mtime));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A run in a fresh data directory under `base`, logged with 16 kB log files (they rotate
/// every few steps), and its journal. `None` when `base` is on a memory file system (no
/// log there).
pub fn logged_run(base: &Path) -> Option<(PathBuf, Arc<LocalWorld>, Arc<Journal>, String)> {
    std::env::set_var("WORKFLOW_NATIVE_TEST_LOG_MAX", "16384");
    durable::set_mode(Mode::Log);
    let root = base.join("data");
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let run_id = create_run(&world);
    if wal::log_files(&root).is_empty() {
        eprintln!("skipped: {} is on a memory file system", root.display());
        return None;
    }
    let journal = Journal::new(Arc::clone(&world));
    let mut first = vec![req(json!({"eventType": "run_started", "specVersion": 3}))];
    first.extend(step("step_00", true));
    assert!(journal.append(&run_id, first).failed.is_none());
    journal.commit().unwrap();
    Some((root, world, journal, run_id))
}

/// A new run (its `run_created` event): its id.
pub fn create_run(world: &LocalWorld) -> String {
    let created = world
        .create_event_sync(
            None,
            &json!({
                "eventType": "run_created", "specVersion": 3,
                "eventData": {
                    "deploymentId": "dpl_test", "workflowName": "workflow//native//rot",
                    "input": {"__type": "Uint8Array", "data": "ZGV2bFtbXV0="}
                }
            })
            .to_string(),
        )
        .unwrap();
    created.event.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Appends `events` to the run and commits them (acknowledged).
pub fn acknowledged(journal: &Journal, run_id: &str, events: Vec<Map<String, Value>>) {
    assert!(journal.append(run_id, events).failed.is_none());
    journal.commit().unwrap();
}

/// A power loss: every file changed after `durable_until` is lost, emptied or torn, in
/// turn. Returns how many were hit.
pub fn power_loss(
    root: &Path,
    files: &BTreeMap<String, (Vec<u8>, i64)>,
    durable_until: i64,
) -> usize {
    let mut hit = 0;
    for (rel, (_, mtime)) in files {
        if *mtime <= durable_until {
            continue;
        }
        let p = root.join(rel);
        match hit % 3 {
            0 => std::fs::remove_file(&p).unwrap(),
            1 => std::fs::write(&p, b"").unwrap(),
            _ => std::fs::write(&p, b"\0torn").unwrap(),
        }
        hit += 1;
    }
    hit
}

/// The files whose contents differ between `acked` and the directory now (or that only one
/// of them has).
pub fn differing(root: &Path, acked: &BTreeMap<String, (Vec<u8>, i64)>) -> Vec<String> {
    let after = snapshot(root);
    acked
        .keys()
        .chain(after.keys())
        .filter(|k| acked.get(*k).map(|v| &v.0) != after.get(*k).map(|v| &v.0))
        .cloned()
        .collect()
}
