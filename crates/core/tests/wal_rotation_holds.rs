//! A replace that needed no pre-image because the current log file holds its file's
//! acknowledged version relies on that file until its own commit is synced: when the log
//! rotates meanwhile, the old file is kept (the rotation's thread waiting) until that
//! commit, then removed — also when the rotation is made the synchronous way because the
//! previous rotation's thread still waits.

mod waltest;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use waltest::{acknowledged, logged_run, req, step, step_completed};
use workflow_core::journal::Journal;
use workflow_core::world::local::LocalWorld;
use workflow_core::world::wal;

/// A new started run.
fn new_run(world: &LocalWorld, journal: &Journal) -> String {
    let run = waltest::create_run(world);
    acknowledged(
        journal,
        &run,
        vec![req(json!({"eventType": "run_started", "specVersion": 3}))],
    );
    run
}

/// On another thread, a run's steps until the log has a file `known` does not list.
fn fill_until_rotated(world: &Arc<LocalWorld>, journal: &Arc<Journal>, root: &Path, tag: &str) {
    let known = wal::log_files(root);
    let (w, j, root, tag) = (
        Arc::clone(world),
        Arc::clone(journal),
        root.to_path_buf(),
        tag.to_string(),
    );
    let rotated = std::thread::spawn(move || {
        let run = new_run(&w, &j);
        for i in 0..80 {
            acknowledged(&j, &run, step(&format!("{tag}_{i:02}"), true));
            if wal::log_files(&root).iter().any(|f| !known.contains(f)) {
                return true;
            }
        }
        false
    });
    assert!(rotated.join().unwrap(), "the log rotated");
}

/// Until `n` rotations' threads wait for holds.
fn until_waiting(root: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while wal::waiting_on_holds(root) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} rotation thread(s) waiting for the writes relying on their old log, not {n}",
            wal::waiting_on_holds(root)
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_rotated_log_stays_until_the_writes_relying_on_it_are_committed() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let Some((root, world, journal, run_id)) = logged_run(base.path()) else {
        return;
    };
    acknowledged(&journal, &run_id, step("step_yy", false));
    let first = wal::log_files(&root);
    assert_eq!(first.len(), 1);
    // written, not committed yet: the step file is replaced without a pre-image (the
    // current log holds its acknowledged version)
    assert!(journal
        .append(&run_id, vec![step_completed("step_yy")])
        .failed
        .is_none());
    fill_until_rotated(&world, &journal, &root, "other");
    // the rotation's thread has made everything durable and now waits for our commit
    until_waiting(&root, 1);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs.contains(&first[0]), "the old log is kept meanwhile");

    journal.commit().unwrap();
    wal::settle(&root);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        !logs.contains(&first[0]),
        "removed once the write is committed"
    );
    assert_eq!(wal::waiting_on_holds(&root), 0);
}

#[test]
fn a_synchronous_rotation_also_keeps_its_old_log_for_the_writes_relying_on_it() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let Some((root, world, journal, run_id)) = logged_run(base.path()) else {
        return;
    };
    // a write relying on the first log, not committed: the first rotation's thread waits
    acknowledged(&journal, &run_id, step("first_yy", false));
    let first: PathBuf = wal::log_files(&root).remove(0);
    assert!(journal
        .append(&run_id, vec![step_completed("first_yy")])
        .failed
        .is_none());
    fill_until_rotated(&world, &journal, &root, "a");
    until_waiting(&root, 1);
    let second: PathBuf = wal::log_files(&root)
        .into_iter()
        .find(|f| *f != first)
        .unwrap();

    // on another thread, a write relying on the second log, committed only when told
    let (to_commit, commit) = std::sync::mpsc::channel::<()>();
    let (held_tx, held) = std::sync::mpsc::channel::<()>();
    let (w, j) = (Arc::clone(&world), Arc::clone(&journal));
    let holder = std::thread::spawn(move || {
        let run = new_run(&w, &j);
        acknowledged(&j, &run, step("second_yy", false));
        assert!(j
            .append(&run, vec![step_completed("second_yy")])
            .failed
            .is_none());
        held_tx.send(()).unwrap();
        commit.recv().unwrap();
        j.commit().unwrap();
    });
    held.recv().unwrap();
    assert!(
        wal::log_files(&root).contains(&second),
        "still the current log"
    );

    // the second rotation comes while the first one's thread waits: made synchronously
    fill_until_rotated(&world, &journal, &root, "b");
    until_waiting(&root, 2);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert!(logs.contains(&second), "the second log is kept meanwhile");

    to_commit.send(()).unwrap();
    holder.join().unwrap();
    until_waiting_at_most(&root, 1);
    let logs = wal::log_files(&root);
    assert!(
        !logs.contains(&second),
        "removed once its write is committed: {logs:?}"
    );
    assert!(logs.contains(&first), "still held: {logs:?}");

    journal.commit().unwrap();
    wal::settle(&root);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(!logs.contains(&first));
}

/// Until at most `n` rotations' threads wait, and the files they removed are gone.
fn until_waiting_at_most(root: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while wal::waiting_on_holds(root) > n || wal::log_files(root).len() > n + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation's thread did not finish"
        );
        std::thread::yield_now();
    }
}
