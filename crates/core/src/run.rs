//! Operations behind the `Run` handle: snapshots, waiting for a terminal state, waking up
//! sleeps, cancelling.

use crate::error::{Error, Result};
use crate::queue::{workflow_queue_name, QueueMessage};
use crate::storage::{Storage, WaitOps};
use crate::world::model::RunSnapshot;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

/// Waits until the run is completed, failed or cancelled and returns that snapshot (with
/// its output). Woken when the run file is replaced, by this process or any other; no
/// thread and no poll per waiter. Unknown runs and unreadable files fail at once, like the
/// official poll.
pub async fn wait_until_terminal<S: Storage>(world: &Arc<S>, run_id: &str) -> Result<RunSnapshot> {
    world.wait_terminal(run_id).await
}

/// The outcome of `wakeUp`.
#[derive(Debug)]
pub struct WakeUpOutcome {
    pub stopped_count: u32,
    pub pending_count: u32,
    /// Errors of the waits that could not be completed (→ `AggregateError`).
    pub errors: Vec<Error>,
    /// The re-enqueue message to deliver when something was stopped.
    pub message: Option<QueueMessage>,
}

/// `wakeUpRun`: completes pending sleeps found in the run's own event log, copying each
/// sleep's original `resumeAt`, and prepares the re-enqueue message.
///
/// Errors that the official code wraps in `Failed to wake up run …` are returned as `Err`;
/// per-wait failures are collected in `errors`.
pub async fn wake_up<S: WaitOps>(
    world: &Arc<S>,
    run_id: &str,
    correlation_ids: Option<&[String]>,
    queue_namespace: Option<&str>,
) -> Result<WakeUpOutcome> {
    let run = world.run_snapshot(run_id).await?;
    let legacy = run.is_legacy();
    let events = world.run_event_summaries(run_id).await?;
    let completed: HashSet<&str> = events
        .iter()
        .filter(|e| e.event_type == "wait_completed")
        .filter_map(|e| e.correlation_id.as_deref())
        .collect();
    let wanted: Option<HashSet<&str>> = correlation_ids
        .filter(|ids| !ids.is_empty())
        .map(|ids| ids.iter().map(String::as_str).collect());
    let pending: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "wait_created")
        .filter(|e| {
            e.correlation_id
                .as_deref()
                .is_some_and(|c| !completed.contains(c))
        })
        .filter(|e| match &wanted {
            Some(w) => e.correlation_id.as_deref().is_some_and(|c| w.contains(c)),
            None => true,
        })
        .collect();

    let mut stopped = 0u32;
    let mut errors = Vec::new();
    for w in &pending {
        let Some(corr) = w.correlation_id.as_deref() else {
            continue;
        };
        match world
            .finish_wait(run_id, corr, run.spec_version, w.resume_at, legacy)
            .await
        {
            Ok(()) => stopped += 1,
            Err(e) if e.is_entity_conflict() => stopped += 1,
            Err(e) => errors.push(e),
        }
    }
    let message = if stopped > 0 {
        let queue = workflow_queue_name(&run.workflow_name, queue_namespace)?;
        Some(QueueMessage::new(queue, &json!({ "runId": run_id })))
    } else {
        None
    };
    Ok(WakeUpOutcome {
        stopped_count: stopped,
        pending_count: pending.len() as u32,
        errors,
        message,
    })
}
