//! The durability log rotates when full, the `syncfs` that makes everything before it
//! durable running off the writers' path: at most two log files while a rotation retires
//! the old one, one once it is done, and a power loss after several rotations — every file
//! changed since the newest log's `t0` or the durable mark lost, emptied or torn — recovers
//! exactly the acknowledged state, files older than that (replaced since: pre-images)
//! included.

mod waltest;

use waltest::{acknowledged, differing, logged_run, power_loss, snapshot, step, step_completed};
use workflow_core::world::wal;

#[test]
fn rotation_keeps_one_log_and_a_power_loss_after_it_recovers_the_acknowledged_state() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let Some((root, world, journal, run_id)) = logged_run(base.path()) else {
        return;
    };
    let first_log = wal::log_files(&root);
    // ~2 kB per step: 16 kB logs rotate every few steps
    for i in 1..40 {
        acknowledged(&journal, &run_id, step(&format!("step_{i:02}"), true));
        assert!(
            wal::log_files(&root).len() <= 2,
            "the log and the one it replaces"
        );
        wal::settle(&root);
        assert_eq!(wal::log_files(&root).len(), 1, "one log file once retired");
    }
    assert_ne!(wal::log_files(&root), first_log, "the log rotated");
    // a step begun before the newest rotation and completed after it: its step file is
    // older than the log (the completion logged its pre-image first)
    acknowledged(&journal, &run_id, step("step_zz", false));
    // steps until the log rotates again (how many depends on the bytes a step logs)
    let before = wal::log_files(&root);
    for i in 40..80 {
        acknowledged(&journal, &run_id, step(&format!("step_{i:02}"), true));
        wal::settle(&root);
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
        acknowledged(&journal, &run_id, step(&format!("step_{i:02}"), true));
    }
    acknowledged(&journal, &run_id, vec![step_completed("step_zz")]);
    let acked = snapshot(&root);
    drop(journal);
    drop(world);
    wal::settle(&root);
    let logs = wal::log_files(&root);
    assert_eq!(logs.len(), 1);
    let (header, _) = wal::read_log(&logs[0]).unwrap();
    let durable_until = header.t0.max(wal::durable_mark(&root));
    wal::detach(&root);

    // power loss: only what changed after the newest log's t0 and the durable mark (the
    // last syncfs) can be lost
    let hit = power_loss(&root, &acked, durable_until);
    assert!(hit > 3, "{hit}");
    assert!(hit < acked.len(), "older files are durable already");
    std::env::set_var("WORKFLOW_NATIVE_TEST_BOOT_ID", "rotation-next-boot");
    let r = wal::recover(&root).unwrap();
    assert_eq!(r.replayed_logs, 1, "{r:?}");
    let diff = differing(&root, &acked);
    assert!(diff.is_empty(), "differ after recovery: {diff:?}");
    std::env::remove_var("WORKFLOW_NATIVE_TEST_BOOT_ID");
}
