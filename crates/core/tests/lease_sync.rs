//! Leases sync nothing (see `lease`'s module note): taking, renewing and releasing one
//! leaves no sync of the durability layer and nothing waiting for the next commit of the
//! thread (the process's owner file, written once, is synced by itself). One test
//! function (the sync observer is process-wide), on the project's disk, never on tmpfs.

use std::sync::{Arc, Mutex};
use workflow_core::lease;
use workflow_core::world::durable::{self, Mode, SyncPoint};

#[test]
fn taking_renewing_and_releasing_a_lease_syncs_nothing() {
    durable::set_mode(Mode::Log);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = base.path().join("data");
    // a world makes the data directory and its durability log
    let _world = workflow_core::world::local::LocalWorld::new(&root).unwrap();
    let syncs: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&syncs);
    durable::set_observer(Some(Arc::new(move |p: SyncPoint<'_>| {
        let what = match p {
            SyncPoint::Data(f)
            | SyncPoint::Published(f)
            | SyncPoint::Dir(f)
            | SyncPoint::Log(f) => f.display().to_string(),
        };
        seen.lock().unwrap().push(what);
        Ok(())
    })));

    // a first commit shows whether this disk is synced at all (not on tmpfs)
    durable::committed(|| {
        workflow_core::world::fsio::write_exclusive_sync(&root.join("probe"), b"x").map(|_| ())
    })
    .unwrap();
    if std::mem::take(&mut *syncs.lock().unwrap()).is_empty() {
        eprintln!("skipped: {} is on a memory file system", root.display());
        durable::set_observer(None);
        return;
    }
    // the first lease of a process writes its owner file (synced by itself, not logged)
    assert!(lease::acquire(&root, "wrun_A", "me", 60_000).unwrap());
    // then: leases taken, renewed and released without a sync
    assert!(lease::acquire(&root, "wrun_B", "me", 60_000).unwrap());
    assert!(lease::renew(&root, "wrun_A", "me").unwrap());
    lease::release(&root, "wrun_A", "me").unwrap();
    lease::release(&root, "wrun_B", "me").unwrap();
    let after: Vec<String> = std::mem::take(&mut *syncs.lock().unwrap());
    assert!(after.is_empty(), "no sync for a lease: {after:?}");
    let owners = root.join(".workflow-native").join("owners");
    let owner = std::fs::read_to_string(owners.join("me.json")).unwrap();
    assert!(owner.contains("\"pid\""), "{owner}");
    assert_eq!(
        std::fs::read_dir(&owners).unwrap().count(),
        1,
        "no temporary file left"
    );
    assert!(
        !durable::has_pending(),
        "no lease write waits for a later commit"
    );
    // a lease another owner holds is not released by us
    assert!(lease::acquire(&root, "wrun_C", "other", 60_000).unwrap());
    lease::release(&root, "wrun_C", "me").unwrap();
    let other: Vec<String> = std::mem::take(&mut *syncs.lock().unwrap());
    durable::set_observer(None);
    assert!(
        other.is_empty(),
        "no sync the durability layer sees: {other:?}"
    );
    assert!(!durable::has_pending());
    let leases = root.join(".workflow-native").join("leases");
    assert!(!leases.join("wrun_A.json").exists());
    assert!(!leases.join("wrun_B.json").exists());
    assert!(
        leases.join("wrun_C.json").exists(),
        "another owner's lease stays"
    );
}
