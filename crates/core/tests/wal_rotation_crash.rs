//! A crash in the middle of a rotation of the durability log: the new file takes the
//! appends at once, and the old one is removed only after a `syncfs` made what it holds
//! durable in place. A power loss before that `syncfs` — both files on disk, the durable
//! mark not raised, every file changed since the old file's `t0` lost, emptied or torn —
//! recovers exactly the acknowledged state from the two files: the files the old file
//! protects (written in it, replaced since without a pre-image, and one replaced by a write
//! nobody acknowledged) included.

mod waltest;

use waltest::{acknowledged, differing, logged_run, power_loss, snapshot, step, step_completed};
use workflow_core::world::wal;

#[test]
fn a_power_loss_while_a_rotation_retires_the_old_log_recovers_from_both_files() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let Some((root, world, journal, run_id)) = logged_run(base.path()) else {
        return;
    };
    let mark_before = wal::durable_mark(&root);
    // the rotation's thread stops before its syncfs, as a crash right after the switch
    wal::abandon_rotations(&root);
    // two steps begun in the first file: one completed after the rotation (acknowledged),
    // one whose completion after it is never acknowledged
    acknowledged(&journal, &run_id, step("step_yy", false));
    acknowledged(&journal, &run_id, step("step_zz", false));
    let first_log = wal::log_files(&root);
    assert_eq!(first_log.len(), 1);
    for i in 1..80 {
        acknowledged(&journal, &run_id, step(&format!("step_{i:02}"), true));
        wal::settle(&root);
        if wal::log_files(&root).len() == 2 {
            break;
        }
    }
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 2, "rotated, the old file not retired: {logs:?}");
    assert!(logs.contains(&first_log[0]));
    let headers: Vec<i64> = logs
        .iter()
        .map(|l| wal::read_log(l).unwrap().0.t0)
        .collect();
    assert_eq!(headers[0], headers[1], "the new file repeats the old t0");
    assert_eq!(
        wal::durable_mark(&root),
        mark_before,
        "no syncfs was recorded"
    );
    acknowledged(&journal, &run_id, vec![step_completed("step_zz")]);
    acknowledged(&journal, &run_id, step("step_90", true));
    let acked = snapshot(&root);
    // written, never committed: must not survive the power loss
    assert!(journal
        .append(&run_id, vec![step_completed("step_yy")])
        .failed
        .is_none());
    // the crash: the uncommitted group goes with the process
    workflow_core::world::durable::discard();
    drop(journal);
    drop(world);
    wal::detach(&root);

    let hit = power_loss(&root, &snapshot(&root), headers[0].max(mark_before));
    assert!(hit > 3, "{hit}");
    std::env::set_var("WORKFLOW_NATIVE_TEST_BOOT_ID", "rotation-crash-next-boot");
    let r = wal::recover(&root).unwrap();
    assert_eq!(r.replayed_logs, 2, "{r:?}");
    assert!(
        !r.removed.is_empty(),
        "the unacknowledged completion is removed: {r:?}"
    );
    let diff = differing(&root, &acked);
    assert!(diff.is_empty(), "differ after recovery: {diff:?}");
    assert!(wal::log_files(&root).is_empty());
}
