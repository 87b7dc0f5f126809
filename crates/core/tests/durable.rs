//! Durability in the in-place mode (`WORKFLOW_NATIVE_SYNC=files`): the order of pushes, publications and directory syncs, and what a failed
//! sync does. One test function (the sync observer is process-wide), run on the
//! project's disk (`CARGO_TARGET_TMPDIR`), never on tmpfs, where nothing is synced.

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use workflow_core::journal::{answer_before_sync, GroupCommit, Journal};
use workflow_core::world::durable::{self, SyncPoint};
use workflow_core::world::local::LocalWorld;

mod waltest;
use waltest::req;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Data(PathBuf),
    Published(PathBuf),
    Dir(PathBuf),
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Records every sync point; `fail` decides which point fails.
fn observe(log: &Log, fail: impl Fn(&SyncPoint<'_>) -> bool + Send + Sync + 'static) {
    let log = Arc::clone(log);
    durable::set_observer(Some(Arc::new(move |p: SyncPoint<'_>| {
        let seen = match p {
            SyncPoint::Data(f) => Seen::Data(f.to_path_buf()),
            SyncPoint::Published(f) => Seen::Published(f.to_path_buf()),
            SyncPoint::Dir(d) | SyncPoint::Log(d) => Seen::Dir(d.to_path_buf()),
        };
        log.lock().unwrap().push(seen);
        if fail(&p) {
            Err(std::io::Error::from_raw_os_error(EIO))
        } else {
            Ok(())
        }
    })));
}

/// `EIO`, the error a failing disk gives.
const EIO: i32 = 5;

fn take(log: &Log) -> Vec<Seen> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn run_created() -> String {
    json!({
        "eventType": "run_created",
        "specVersion": 3,
        "eventData": {
            "deploymentId": "dpl_test",
            "workflowName": "workflow//native//durable-test",
            "input": {"__type": "Uint8Array", "data": "ZGV2bFtbXV0="}
        }
    })
    .to_string()
}

fn step_events(step: &str) -> Vec<Map<String, Value>> {
    waltest::step(step, false)
}

/// Every publication was preceded by the push of its contents; returns the files published.
fn assert_pushed_before_published(seen: &[Seen]) -> Vec<PathBuf> {
    let mut published = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        if let Seen::Published(p) = s {
            published.push(p.clone());
            // removals publish nothing new: only files that exist now had contents
            if p.exists() {
                assert!(
                    seen[..i].contains(&Seen::Data(p.clone())),
                    "{} was published before its contents were pushed: {seen:?}",
                    p.display()
                );
            }
        }
    }
    published
}

fn has_dir_sync(seen: &[Seen], under: &Path) -> bool {
    seen.iter()
        .any(|s| matches!(s, Seen::Dir(d) if d.starts_with(under)))
}

#[test]
fn writes_are_pushed_before_published_and_acknowledged_after_the_directory_sync() {
    // this file pins the in-place mode (`files`); tests/wal.rs pins the log mode
    durable::set_mode(durable::Mode::Files);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let log: Log = Arc::default();
    observe(&log, |_| false);
    let world = Arc::new(LocalWorld::new(base.path()).unwrap());

    // an API write: the run's creation returns after its directories were synced
    let created = world.create_event_sync(None, &run_created()).unwrap();
    let run_id = created.event.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = take(&log);
    if seen.is_empty() {
        // the target directory is on a memory file system: nothing is synced there
        eprintln!(
            "skipped: {} is not on a synced file system",
            base.path().display()
        );
        durable::set_observer(None);
        return;
    }
    let published = assert_pushed_before_published(&seen);
    assert!(published
        .iter()
        .any(|p| p.starts_with(base.path().join("runs"))));
    assert!(published
        .iter()
        .any(|p| p.starts_with(base.path().join("events"))));
    let last_publish = seen
        .iter()
        .rposition(|s| matches!(s, Seen::Published(_)))
        .unwrap();
    let first_dir = seen.iter().position(|s| matches!(s, Seen::Dir(_))).unwrap();
    assert!(
        first_dir > last_publish,
        "a directory synced before the last publication: {seen:?}"
    );

    // the journal: appends are not durable until commit(), which syncs once for the group
    let journal = Journal::new(Arc::clone(&world));
    let a = journal.append(&run_id, step_events("step_01A"));
    assert!(a.failed.is_none(), "{:?}", a.failed);
    let b = journal.append(&run_id, step_events("step_01B"));
    assert!(b.failed.is_none(), "{:?}", b.failed);
    let before_commit = take(&log);
    assert_pushed_before_published(&before_commit);
    assert!(
        !has_dir_sync(&before_commit, base.path()),
        "appends synced before the commit point: {before_commit:?}"
    );
    journal.commit().unwrap();
    let at_commit = take(&log);
    assert!(
        has_dir_sync(&at_commit, &base.path().join("events")),
        "{at_commit:?}"
    );
    assert!(
        at_commit.iter().all(|s| matches!(s, Seen::Dir(_))),
        "the commit only syncs directories: {at_commit:?}"
    );
    // nothing left to sync: a second commit does nothing
    journal.commit().unwrap();
    assert!(take(&log).is_empty());

    // group commit: a batch answered before its sync (a step's attempt) is synced when a
    // later group needs a sync, or when the writer is idle
    let mut group = GroupCommit::default();
    assert!(answer_before_sync(&step_events("step_01X")));
    let completed = req(json!({
        "eventType": "step_completed", "specVersion": 3, "correlationId": "step_01A",
        "eventData": {"result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}
    }));
    assert!(!answer_before_sync(std::slice::from_ref(&completed)));
    assert!(!answer_before_sync(&[]));
    let mut mixed = step_events("step_01Y");
    mixed.push(completed);
    assert!(!answer_before_sync(&mixed));
    let d = journal.append(&run_id, step_events("step_01D"));
    assert!(d.failed.is_none(), "{:?}", d.failed);
    group.finish_group(&journal, true).unwrap();
    assert!(group.has_unsynced());
    assert!(!has_dir_sync(&take(&log), base.path()));
    group.idle(&journal);
    assert!(!group.has_unsynced());
    assert!(has_dir_sync(&take(&log), &base.path().join("events")));
    // an idle sync that fails refuses the next group, loudly
    observe(&log, |p| matches!(p, SyncPoint::Dir(_)));
    let e = journal.append(&run_id, step_events("step_01E"));
    assert!(e.failed.is_none(), "{:?}", e.failed);
    group.finish_group(&journal, true).unwrap();
    group.idle(&journal);
    observe(&log, |_| false);
    let err = group.finish_group(&journal, true).unwrap_err();
    // the directory named: events/ (journaled: the one changed last), or the first
    // changed one (no journal: every changed directory is synced)
    let text = format!("{err}");
    assert!(text.contains("events") || text.contains("steps"), "{err}");
    take(&log);

    // a failed directory sync fails the write loudly, naming the directory
    observe(&log, |p| matches!(p, SyncPoint::Dir(_)));
    let err = world.create_event_sync(None, &run_created()).unwrap_err();
    let text = format!("{err}");
    assert!(text.contains(&base.path().display().to_string()), "{text}");
    let a = journal.append(&run_id, step_events("step_01C"));
    assert!(a.failed.is_none());
    let err = journal.commit().unwrap_err();
    let text = format!("{err}");
    assert!(text.contains("events") || text.contains("steps"), "{err}");

    // a failed push: the file is never published under its name
    take(&log);
    observe(&log, |p| matches!(p, SyncPoint::Data(_)));
    let err = world.create_event_sync(None, &run_created()).unwrap_err();
    let seen = take(&log);
    let pushed: Vec<&PathBuf> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Data(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.len(), 1, "{seen:?}");
    assert!(
        !pushed[0].exists(),
        "{} was published after its push failed",
        pushed[0].display()
    );
    assert!(
        format!("{err}").contains(&pushed[0].display().to_string()),
        "{err}"
    );

    // opted out: nothing is pushed or synced
    observe(&log, |_| false);
    durable::set_enabled(false);
    world.create_event_sync(None, &run_created()).unwrap();
    assert!(take(&log).is_empty());
    durable::set_mode(durable::Mode::Files);
    durable::set_observer(None);
}
