//! The durability log (the default mode on Linux disks): a simulated power loss — every
//! world file written since the log began torn, emptied or lost, the log itself intact —
//! is recovered to exactly the acknowledged state, and unacknowledged writes are gone.
//! One test function: the mode, the observer and the boot id are process-wide.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use workflow_core::journal::Journal;
use workflow_core::world::durable::{self, Mode, SyncPoint};
use workflow_core::world::local::LocalWorld;
use workflow_core::world::wal;

mod waltest;
use waltest::req;

fn run_created() -> String {
    json!({
        "eventType": "run_created", "specVersion": 3,
        "eventData": {
            "deploymentId": "dpl_test", "workflowName": "workflow//native//wal-test",
            "input": {"__type": "Uint8Array", "data": "ZGV2bFtbXV0="}
        }
    })
    .to_string()
}

fn run_started() -> Map<String, Value> {
    req(json!({"eventType": "run_started", "specVersion": 3}))
}

fn step(step: &str) -> Vec<Map<String, Value>> {
    waltest::step(step, true)
}

/// Every file of the world (not our own `.workflow-native` directory), with its bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    waltest::snapshot(root)
        .into_iter()
        .map(|(rel, (bytes, _))| (rel, bytes))
        .collect()
}

/// Asserts two snapshots are equal, naming the files that differ.
#[track_caller]
fn assert_same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    let mut diff = Vec::new();
    for k in got.keys().chain(want.keys()) {
        match (got.get(k), want.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => diff.push(format!(
                "{k}: got {:?} want {:?}",
                a.map(|v| String::from_utf8_lossy(v)
                    .chars()
                    .take(60)
                    .collect::<String>()),
                b.map(|v| String::from_utf8_lossy(v)
                    .chars()
                    .take(60)
                    .collect::<String>())
            )),
        }
    }
    diff.dedup();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// A power loss as a file system without a journal may leave it: each file changed since
/// `before` is lost, emptied, torn or kept, in turn.
fn power_loss(root: &Path, before: &BTreeMap<String, Vec<u8>>) -> usize {
    let mut hit = 0;
    let mut changed = 0;
    for (rel, bytes) in snapshot(root).iter() {
        if before.get(rel) == Some(bytes) {
            continue;
        }
        changed += 1;
        let p = root.join(rel);
        match (changed - 1) % 4 {
            0 => std::fs::remove_file(&p).unwrap(),
            1 => std::fs::write(&p, b"").unwrap(),
            2 => std::fs::write(&p, b"\0\0{\"torn").unwrap(),
            _ => continue,
        }
        hit += 1;
    }
    hit
}

#[test]
fn a_power_loss_is_recovered_to_exactly_the_acknowledged_state() {
    durable::set_mode(Mode::Log);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = base.path().join("data");
    let syncs: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&syncs);
    let fail_log = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = Arc::clone(&fail_log);
    durable::set_observer(Some(Arc::new(move |p: SyncPoint<'_>| {
        if let SyncPoint::Log(f) | SyncPoint::Dir(f) = p {
            seen.lock().unwrap().push(f.display().to_string());
        }
        if matches!(p, SyncPoint::Log(_)) && failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        Ok(())
    })));

    // ---- 1. acknowledged writes, then unacknowledged ones, then the machine dies
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let created = world.create_event_sync(None, &run_created()).unwrap();
    let run_id = created.event.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let logged: Vec<String> = std::mem::take(&mut *syncs.lock().unwrap());
    if logged.is_empty() {
        eprintln!("skipped: {} is on a memory file system", root.display());
        durable::set_observer(None);
        return;
    }
    assert!(
        logged.iter().all(|p| p.contains(".workflow-native/log/")),
        "log mode syncs the log only, never a directory: {logged:?}"
    );
    let journal = Journal::new(Arc::clone(&world));
    let mut batch = vec![run_started()];
    batch.extend(step("step_01A"));
    assert!(journal.append(&run_id, batch).failed.is_none());
    journal.commit().unwrap();
    assert!(journal.append(&run_id, step("step_01B")).failed.is_none());
    journal.commit().unwrap();
    assert!(!durable::has_pending());
    let acknowledged = snapshot(&root);
    assert!(acknowledged.keys().any(|k| k.starts_with("events/")));
    assert!(acknowledged.keys().any(|k| k.starts_with("steps/")));
    // a third step, then a second run created on the same thread: its commit covers
    // every write of the thread, the third step's included
    assert!(journal.append(&run_id, step("step_01C")).failed.is_none());
    assert!(durable::has_pending());
    world.create_event_sync(None, &run_created()).unwrap();
    assert!(!durable::has_pending());
    let acknowledged_2 = snapshot(&root);
    assert!(journal.append(&run_id, step("step_01D")).failed.is_none());
    durable::discard(); // the process dies before its commit
    let unacknowledged = snapshot(&root);
    assert!(unacknowledged.len() > acknowledged_2.len());
    drop(journal);
    drop(world);
    wal::detach(&root); // the process is gone: its log is closed and unlocked
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 1, "{logs:?}");

    let hit = power_loss(&root, &BTreeMap::new());
    assert!(hit > 5, "{hit}");
    assert!(snapshot(&root) != acknowledged_2);

    // ---- 2. the next boot opens the directory: exactly the acknowledged state
    std::env::set_var("WORKFLOW_NATIVE_TEST_BOOT_ID", "wal-test-next-boot");
    let world = LocalWorld::new(&root).unwrap();
    assert!(
        wal::log_files(&root).is_empty(),
        "replayed logs are removed"
    );
    assert_same(&snapshot(&root), &acknowledged_2, "after the power loss");
    // and it reads as a consistent world: the run, its log, three completed steps
    let events = world.list_events_json_sync(&run_id).unwrap();
    let events: Vec<Value> = serde_json::from_str(&events).unwrap();
    let completed = events
        .iter()
        .filter(|e| e["eventType"] == "step_completed")
        .count();
    assert_eq!(completed, 3, "{events:?}");
    drop(world);
    wal::detach(&root);

    // ---- 3. pre-images: a file older than the log, replaced without acknowledgement
    let before = snapshot(&root);
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let journal = Journal::new(Arc::clone(&world));
    syncs.lock().unwrap().clear();
    // run_completed replaces the run file (older than this log): its acknowledged
    // contents are logged and synced before the replace
    let done = req(json!({
        "eventType": "run_completed", "specVersion": 3,
        "eventData": {"output": {"__type": "Uint8Array", "data": "ZGV2bFsyXQ=="}}
    }));
    assert!(journal.append(&run_id, vec![done]).failed.is_none());
    assert!(
        !syncs.lock().unwrap().is_empty(),
        "the pre-image is synced before the replace"
    );
    durable::discard(); // never acknowledged
    drop(journal);
    drop(world);
    wal::detach(&root);
    std::env::set_var("WORKFLOW_NATIVE_TEST_BOOT_ID", "wal-test-third-boot");
    let hit = power_loss(&root, &before);
    assert!(hit >= 1, "{hit}");
    let world = LocalWorld::new(&root).unwrap();
    assert_same(
        &snapshot(&root),
        &before,
        "the run's acknowledged version is back",
    );
    drop(world);
    wal::detach(&root);

    // ---- 4. the log of a dead process of this boot: its writes are in the page cache,
    // one syncfs makes them durable; the log is removed, nothing is replayed
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let journal = Journal::new(Arc::clone(&world));
    assert!(journal.append(&run_id, step("step_01S")).failed.is_none());
    journal.commit().unwrap();
    assert!(journal.append(&run_id, step("step_01T")).failed.is_none());
    durable::discard();
    drop(journal);
    drop(world);
    wal::detach(&root);
    let before = snapshot(&root);
    let r = wal::recover(&root).unwrap();
    assert_eq!((r.flushed_logs, r.replayed_logs), (1, 0), "{r:?}");
    assert!(wal::log_files(&root).is_empty());
    assert_same(
        &snapshot(&root),
        &before,
        "a same-boot recovery changes nothing",
    );

    // ---- 5. a live log (its process holds the lock) is never touched
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let journal = Journal::new(Arc::clone(&world));
    assert!(journal.append(&run_id, step("step_01E")).failed.is_none());
    journal.commit().unwrap();
    std::env::set_var("WORKFLOW_NATIVE_TEST_BOOT_ID", "wal-test-fourth-boot");
    let r = wal::recover(&root).unwrap();
    assert_eq!(r, wal::Recovered::default());
    assert_eq!(wal::log_files(&root).len(), 1);

    // ---- 6. a failed log sync fails the commit loudly, naming the log, and every later one
    fail_log.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(journal.append(&run_id, step("step_01F")).failed.is_none());
    let err = journal.commit().unwrap_err().to_string();
    assert!(err.contains(".workflow-native/log/"), "{err}");
    fail_log.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        journal.append(&run_id, step("step_01G")).failed.is_some(),
        "a log that failed to sync refuses further writes"
    );
    drop(journal);
    drop(world);
    wal::detach(&root);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 1);

    // ---- 7. a damaged record followed by a whole one: corrupt, named, nothing applied
    let mut bytes = std::fs::read(&logs[0]).unwrap();
    bytes[4096 + 20] ^= 0xff; // inside the first record's payload
    std::fs::write(&logs[0], &bytes).unwrap();
    let err = wal::recover(&root).unwrap_err();
    assert_eq!(err.name(), "WorkflowWorldError", "{err}");
    assert!(
        err.to_string().contains(&logs[0].display().to_string()),
        "{err}"
    );
    let _ = err;

    std::env::remove_var("WORKFLOW_NATIVE_TEST_BOOT_ID");
    durable::set_observer(None);
}
