//! The durability log rotates when full (after a `syncfs`, which makes everything before
//! it durable): one log file at a time, and a power loss after several rotations — every
//! file changed since the newest log began lost, emptied or torn — recovers exactly the
//! acknowledged state, files older than that log (replaced since: pre-images) included.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use workflow_core::journal::Journal;
use workflow_core::world::durable::{self, Mode};
use workflow_core::world::local::LocalWorld;
use workflow_core::world::wal;

fn req(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("test requests are objects"),
    }
}

fn step(step: &str, done: bool) -> Vec<Map<String, Value>> {
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
        v.push(req(json!({
            "eventType": "step_completed", "specVersion": 3, "correlationId": step,
            "eventData": {"result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}
        })));
    }
    v
}

fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, i64)> {
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

#[test]
fn rotation_keeps_one_log_and_a_power_loss_after_it_recovers_the_acknowledged_state() {
    std::env::set_var("WORKFLOW_NATIVE_TEST_LOG_MAX", "16384");
    durable::set_mode(Mode::Log);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = base.path().join("data");
    let world = Arc::new(LocalWorld::new(&root).unwrap());
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
    if wal::log_files(&root).is_empty() {
        eprintln!("skipped: {} is on a memory file system", root.display());
        return;
    }
    let run_id = created.event.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let journal = Journal::new(Arc::clone(&world));
    let mut first = vec![req(json!({"eventType": "run_started", "specVersion": 3}))];
    first.extend(step("step_00", true));
    assert!(journal.append(&run_id, first).failed.is_none());
    journal.commit().unwrap();
    let first_log = wal::log_files(&root);
    // ~2 kB per step: 16 kB logs rotate every few steps
    for i in 1..40 {
        assert!(journal
            .append(&run_id, step(&format!("step_{i:02}"), true))
            .failed
            .is_none());
        journal.commit().unwrap();
        assert_eq!(wal::log_files(&root).len(), 1, "one log file at a time");
    }
    assert_ne!(wal::log_files(&root), first_log, "the log rotated");
    // a step begun before the newest rotation and completed after it: its step file is
    // older than the log (the completion logged its pre-image first)
    assert!(journal
        .append(&run_id, step("step_zz", false))
        .failed
        .is_none());
    journal.commit().unwrap();
    // steps until the log rotates again (how many depends on the bytes a step logs)
    let before = wal::log_files(&root);
    for i in 40..80 {
        assert!(journal
            .append(&run_id, step(&format!("step_{i:02}"), true))
            .failed
            .is_none());
        journal.commit().unwrap();
        if wal::log_files(&root) != before {
            break;
        }
    }
    assert_ne!(
        wal::log_files(&root),
        before,
        "the log rotated after step_zz began"
    );
    // a little more in the newest log, before step_zz completes
    for i in 80..82 {
        assert!(journal
            .append(&run_id, step(&format!("step_{i:02}"), true))
            .failed
            .is_none());
        journal.commit().unwrap();
    }
    let done = vec![req(json!({
        "eventType": "step_completed", "specVersion": 3, "correlationId": "step_zz",
        "eventData": {"result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}
    }))];
    assert!(journal.append(&run_id, done).failed.is_none());
    journal.commit().unwrap();
    let acked = snapshot(&root);
    drop(journal);
    drop(world);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 1);
    let (header, _) = wal::read_log(&logs[0]).unwrap();
    wal::detach(&root);

    // power loss: only what changed since the newest log began can be lost
    let mut hit = 0;
    for (rel, (_, mtime)) in &acked {
        if *mtime <= header.t0 {
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
    assert!(hit > 3, "{hit}");
    assert!(hit < acked.len(), "older files are durable already");
    std::env::set_var("WORKFLOW_NATIVE_TEST_BOOT_ID", "rotation-next-boot");
    let r = wal::recover(&root).unwrap();
    assert_eq!(r.replayed_logs, 1, "{r:?}");
    let after = snapshot(&root);
    let differing: Vec<&String> = acked
        .keys()
        .chain(after.keys())
        .filter(|k| acked.get(*k).map(|v| &v.0) != after.get(*k).map(|v| &v.0))
        .collect();
    assert!(differing.is_empty(), "differ after recovery: {differing:?}");
    std::env::remove_var("WORKFLOW_NATIVE_TEST_BOOT_ID");
}
