//! `start()` of a run the engine of this process executes: `run_created`, the run's lease
//! and `run_started` written by one call and made durable by ONE commit (one sync of the
//! durability log), and a commit that fails gives the lease back. One test function (the
//! sync observer is process-wide), on the project's disk, never on tmpfs.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use workflow_core::journal::Journal;
use workflow_core::lease;
use workflow_core::world::durable::{self, Mode, SyncPoint};
use workflow_core::world::local::{CreateRun, LocalWorld};
use workflow_core::world::model::Payload;

fn create(run_id: &str) -> CreateRun {
    CreateRun {
        run_id: run_id.to_string(),
        deployment_id: "dpl_test".into(),
        workflow_name: "workflow//native//started-test".into(),
        spec_version: 3,
        execution_context: None,
        input: Payload::Bytes(b"devl[[]]".to_vec()),
    }
}

fn events_of(root: &std::path::Path, run_id: &str) -> Vec<String> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root.join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{run_id}-")))
        .map(|n| {
            let text = std::fs::read_to_string(root.join("events").join(&n)).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            (n, v["eventType"].as_str().unwrap().to_string())
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, t)| t).collect()
}

#[test]
fn run_created_its_lease_and_run_started_take_one_commit_and_a_failed_one_gives_the_lease_back() {
    durable::set_mode(Mode::Log);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = base.path().join("data");
    let world = Arc::new(LocalWorld::new(&root).unwrap());
    let journal = Journal::new(Arc::clone(&world));
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let fail = Arc::new(AtomicBool::new(false));
    let (seen, failing) = (Arc::clone(&logs), Arc::clone(&fail));
    durable::set_observer(Some(Arc::new(move |p: SyncPoint<'_>| {
        if let SyncPoint::Log(f) = p {
            seen.lock().unwrap().push(f.display().to_string());
            if failing.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
        Ok(())
    })));
    // a first commit shows whether this disk is synced at all (not on tmpfs)
    durable::committed(|| {
        workflow_core::world::fsio::write_exclusive_sync(&root.join("probe"), b"x").map(|_| ())
    })
    .unwrap();
    if std::mem::take(&mut *logs.lock().unwrap()).is_empty() {
        eprintln!("skipped: {} is on a memory file system", root.display());
        durable::set_observer(None);
        return;
    }

    let run_id = workflow_core::ids::prefixed_id("wrun");
    let run = run_id.as_str();
    let started = journal
        .create_run_started(&create(run), "me", 60_000)
        .unwrap()
        .expect("created, leased and started");
    assert_eq!(
        logs.lock().unwrap().len(),
        1,
        "one sync of the log for all three"
    );
    assert!(!durable::has_pending(), "nothing left for a later commit");
    assert_eq!(events_of(&root, run), ["run_created", "run_started"]);
    let run_file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("runs").join(format!("{run}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(run_file["status"], "running");
    assert_eq!(run_file["startedAt"].as_str(), Some(started.as_str()));
    assert!(
        lease::holds(&root, run, "me").unwrap(),
        "the lease is the caller's"
    );
    // the journal continues from there: the run's next batch is fenced by that lease
    let out = journal.append_fenced(
        run,
        vec![serde_json::from_str(r#"{"eventType":"run_completed","specVersion":3,"eventData":{"output":{"__type":"Uint8Array","data":"ZGV2bFsxXQ=="}}}"#).unwrap()],
        Some("me"),
    );
    assert!(out.failed.is_none(), "{:?}", out.failed);

    // the same id again: the run exists, nothing more is written and no lease is taken
    let again = journal.create_run_started(&create(run), "other", 60_000);
    assert!(again.is_err(), "a second run_created is refused");
    assert!(!lease::holds(&root, run, "other").unwrap());

    // the same id again by the owner executing it: refused, and the lease it holds stays
    // (only a lease the call took itself is given back)
    assert!(journal
        .create_run_started_uncommitted(&create(run), "me", 60_000)
        .is_err());
    assert!(
        lease::holds(&root, run, "me").unwrap(),
        "still the caller's"
    );
    durable::discard();

    // without its commit (the journal thread's group commit makes it durable): nothing is
    // synced until the caller commits, then one sync covers it
    let before = logs.lock().unwrap().len();
    let run3_id = workflow_core::ids::prefixed_id("wrun");
    let run3 = run3_id.as_str();
    assert!(journal
        .create_run_started_uncommitted(&create(run3), "me", 60_000)
        .unwrap()
        .is_some());
    assert_eq!(logs.lock().unwrap().len(), before, "not synced yet");
    assert!(durable::has_pending(), "left for the caller's commit");
    durable::commit().unwrap();
    assert_eq!(logs.lock().unwrap().len(), before + 1);
    assert_eq!(events_of(&root, run3), ["run_created", "run_started"]);
    journal.give_back_lease(run3, "me");
    assert!(!lease::holds(&root, run3, "me").unwrap(), "given back");

    // a commit that fails: start() rejects, and the lease it took is given back
    fail.store(true, Ordering::SeqCst);
    let run2_id = workflow_core::ids::prefixed_id("wrun");
    let run2 = run2_id.as_str();
    let e = journal
        .create_run_started(&create(run2), "me", 60_000)
        .unwrap_err();
    assert!(e.to_string().contains(".wal"), "names the log: {e}");
    assert!(
        !lease::holds(&root, run2, "me").unwrap(),
        "lease given back"
    );
    durable::set_observer(None);
}
