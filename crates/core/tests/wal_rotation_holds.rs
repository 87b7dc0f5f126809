//! A replace that needed no pre-image because the current log file holds its file's
//! acknowledged version relies on that file until its own commit is synced: when the log
//! rotates meanwhile, the old file is kept (its `syncfs` done, the rotation's thread
//! waiting) until that commit, then removed.

mod waltest;

use serde_json::json;
use waltest::{acknowledged, logged_run, step, step_completed};
use workflow_core::world::wal;

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

    // another thread's runs fill the log until it rotates
    let (w2, j2) = (
        std::sync::Arc::clone(&world),
        std::sync::Arc::clone(&journal),
    );
    let root2 = root.clone();
    let other = std::thread::spawn(move || {
        let created = w2
            .create_event_sync(
                None,
                &json!({
                    "eventType": "run_created", "specVersion": 3,
                    "eventData": {
                        "deploymentId": "dpl_test", "workflowName": "workflow//native//holds",
                        "input": {"__type": "Uint8Array", "data": "ZGV2bFtbXV0="}
                    }
                })
                .to_string(),
            )
            .unwrap();
        let run = created.event.unwrap()["runId"]
            .as_str()
            .unwrap()
            .to_string();
        acknowledged(
            &j2,
            &run,
            vec![waltest::req(
                json!({"eventType": "run_started", "specVersion": 3}),
            )],
        );
        for i in 0..80 {
            acknowledged(&j2, &run, step(&format!("other_{i:02}"), true));
            if wal::log_files(&root2).len() > 1 {
                return true;
            }
        }
        false
    });
    assert!(other.join().unwrap(), "the log rotated");

    // the rotation's thread has made everything durable and now waits for our commit
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !wal::waiting_on_holds(&root) {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not wait for the write relying on the old log"
        );
        std::thread::yield_now();
    }
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
    assert!(!wal::waiting_on_holds(&root));
}
