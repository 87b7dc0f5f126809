//! The embedded engine's calls on a PostgreSQL World (`NativePgWorld`), with the names and
//! answers of the local World's (see `engine.rs`), so the JS engine runs on either: event
//! batches appended in one transaction each, fenced by the run's lease; run leases; runs
//! to resume; a run's log; following what other writers add. All async: the JS thread
//! never waits on the network.

use crate::engine::{follow_message, outcome_json, parse_requests, poll_answer};
use crate::pg::NativePgWorld;
use crate::{guard, guarded, to_napi};
use napi::bindgen_prelude::{within_runtime_if_available, Object};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use workflow_core::pg::engine::PgFollower;
use workflow_core::pg::listen::Note;

#[napi]
impl NativePgWorld {
    /// Appends one batch (`requests`: the JSON text of an array of event requests) to the
    /// run's log in one transaction; with `leaseOwner`, only while it holds the run's
    /// lease. Resolves to the JSON text of `{ results, failed? }` (as the local journal
    /// writer answers). The promise is settled from the thread that wrote the batch
    /// (`PgWorld::append_batch_then`): no runtime task in between.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn append_batch<'e>(
        &self,
        env: &'e Env,
        run_id: String,
        requests: String,
        lease_owner: Option<String>,
        lease_token: Option<i64>,
    ) -> napi::Result<Object<'e>> {
        let (deferred, promise) = env.create_deferred::<String, _>()?;
        // an execution without a token (none was granted) holds nothing: fenced off
        let fence = lease_owner.map(|o| (o, lease_token.unwrap_or(0)));
        let w = Arc::clone(&self.inner);
        within_runtime_if_available(|| {
            w.append_batch_then(
                run_id,
                move || parse_requests(&requests),
                fence,
                move |out| match out {
                    Ok(out) => {
                        let text = outcome_json(&out);
                        deferred.resolve(move |_| Ok(text))
                    }
                    Err(e) => deferred.reject(to_napi(e)),
                },
            )
        });
        Ok(promise)
    }

    /// Creates a run this process executes itself (a worker's `start()`): `run_created`,
    /// its lease for `owner` and `run_started` in one transaction. Resolves to the JSON text
    /// of `{ token, startedAt }`.
    #[napi(catch_unwind)]
    pub async fn create_run_leased(
        &self,
        req: crate::world::CreateRunRequest,
        owner: String,
        ttl_ms: u32,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let create = crate::world::create_run_of(req)?;
            let (token, started_at) = w
                .create_run_leased(&create, &owner, ttl_ms)
                .await
                .map_err(to_napi)?;
            Ok(json!({ "token": token, "startedAt": started_at }).to_string())
        })
        .await
    }

    /// Takes the run's lease for a new execution by `owner`: the JSON text of
    /// `{ held, token? }` (the fencing token its batches carry).
    #[napi(catch_unwind)]
    pub async fn acquire_lease(
        &self,
        run_id: String,
        owner: String,
        ttl_ms: u32,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let g = w
                .acquire_lease(&run_id, &owner, ttl_ms)
                .await
                .map_err(to_napi)?;
            Ok(json!({ "held": g.held, "token": g.token }).to_string())
        })
        .await
    }

    /// Extends the lease taken with `token`: the JSON text of `{ held }` (`false` once it
    /// was taken over or released: never taken back).
    #[napi(catch_unwind)]
    pub async fn renew_lease(
        &self,
        run_id: String,
        owner: String,
        token: i64,
        ttl_ms: u32,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let held = w
                .renew_lease(&run_id, &owner, token, ttl_ms)
                .await
                .map_err(to_napi)?;
            Ok(json!({ "held": held }).to_string())
        })
        .await
    }

    /// Gives the run's lease up if `owner` holds it (under `token`, when given).
    #[napi(catch_unwind)]
    pub async fn release_lease(
        &self,
        run_id: String,
        owner: String,
        token: Option<i64>,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.release_lease(&run_id, &owner, token)
                .await
                .map_err(to_napi)?;
            Ok(String::new())
        })
        .await
    }

    /// The runs with a lease row: the JSON text of an array of run ids.
    #[napi(catch_unwind)]
    pub async fn leased_runs(&self) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let ids = w.leased_runs().await.map_err(to_napi)?;
            Ok(Value::from(ids).to_string())
        })
        .await
    }

    /// Runs of `names` a worker may claim now (no live lease), oldest first, at most
    /// `limit`: the JSON text of `{ runs: [{ runId, workflowName }], faults: [] }`.
    #[napi(catch_unwind)]
    pub async fn claimable_runs(&self, names: Vec<String>, limit: u32) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let runs = w
                .claimable_runs(&names, i64::from(limit))
                .await
                .map_err(to_napi)?;
            let list: Vec<Value> = runs
                .into_iter()
                .map(|(id, name)| json!({ "runId": id, "workflowName": name }))
                .collect();
            Ok(json!({ "runs": list, "faults": [] }).to_string())
        })
        .await
    }

    /// The runs whose status is in `statuses`: `{ runs: [...], faults: [] }` (a row is
    /// never an unreadable file).
    #[napi(catch_unwind)]
    pub async fn read_runs(&self, statuses: Option<Vec<String>>) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let runs = w.list_runs_json(statuses).await.map_err(to_napi)?;
            Ok(format!("{{\"runs\":{runs},\"faults\":[]}}"))
        })
        .await
    }

    /// The run's status and whole log: `{ status, repairs: [], events }` (each event was
    /// one transaction: a crash leaves nothing to repair).
    #[napi(catch_unwind)]
    pub async fn recover_run(&self, run_id: String) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let run = w.get_run(&run_id, false).await.map_err(to_napi)?;
            let events = w.list_events_json(&run_id).await.map_err(to_napi)?;
            Ok(format!(
                "{{\"status\":{},\"repairs\":[],\"events\":{events}}}",
                Value::String(run.status.as_str().to_string())
            ))
        })
        .await
    }

    /// Calls `callback` (with the new run's id) whenever a run is created in the database,
    /// and with `""` when notifications may have been missed (the listener reconnected):
    /// a worker looks for runs to claim then. Does not keep the process alive.
    #[napi(catch_unwind)]
    pub fn watch_new_runs(
        &self,
        callback: ThreadsafeFunction<String, (), String, Status, false, true>,
    ) -> napi::Result<PgRunsWatch> {
        guard(|| {
            let mut rx = self.inner.subscribe();
            let (stop, mut stopped) = oneshot::channel::<()>();
            napi::bindgen_prelude::spawn(async move {
                loop {
                    let id = tokio::select! {
                        _ = &mut stopped => return,
                        n = rx.recv() => match n {
                            Ok(Note::NewRun(id)) => id,
                            // the World is gone
                            Err(RecvError::Closed) => return,
                            Ok(Note::Resync) | Err(RecvError::Lagged(_)) => String::new(),
                            Ok(_) => continue,
                        },
                    };
                    if callback.call(id, ThreadsafeFunctionCallMode::NonBlocking) == Status::Closing
                    {
                        return;
                    }
                }
            });
            Ok(PgRunsWatch { stop: Some(stop) })
        })
    }

    /// Follows the events other writers add to `runId` (this process's appends are not
    /// reported); `callback` gets the JSON text of `{ events }` or `{ error }`, as the
    /// local World's follower sends it.
    #[napi(catch_unwind)]
    pub fn follow_run(
        &self,
        run_id: String,
        known_ids: Vec<String>,
        callback: ThreadsafeFunction<String, (), String, Status, false, true>,
    ) -> napi::Result<PgRunFollower> {
        guard(|| {
            let mut follower = self.inner.follow(&run_id).map_err(to_napi)?;
            follower.known(known_ids);
            let (tx, rx) = mpsc::unbounded_channel();
            napi::bindgen_prelude::spawn(async move {
                let looped = guarded(async move {
                    follow_loop(follower, rx, callback).await;
                    Ok(())
                });
                if let Err(e) = looped.await {
                    eprintln!("[workflow-native] following a run's events stopped: {e}");
                }
            });
            Ok(PgRunFollower { tx })
        })
    }
}

async fn follow_loop(
    mut follower: PgFollower,
    mut rx: mpsc::UnboundedReceiver<oneshot::Sender<String>>,
    callback: ThreadsafeFunction<String, (), String, Status, false, true>,
) {
    loop {
        tokio::select! {
            req = rx.recv() => match req {
                None => return,
                Some(reply) => {
                    let got = follower.poll_now().await;
                    let _ = reply.send(follow_message(got, Vec::new()));
                }
            },
            got = follower.next() => {
                let failed = got.is_err();
                if callback.call(follow_message(got, Vec::new()), ThreadsafeFunctionCallMode::NonBlocking)
                    == Status::Closing
                {
                    return;
                }
                if failed {
                    // the database is unreachable: reported; try again later rather than spin
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// A watch on new runs (see `NativePgWorld#watchNewRuns`).
#[napi]
pub struct PgRunsWatch {
    stop: Option<oneshot::Sender<()>>,
}

#[napi]
impl PgRunsWatch {
    /// Stops watching (idempotent).
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> napi::Result<()> {
        guard(|| {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            Ok(())
        })
    }
}

/// A run's follower on PostgreSQL (see `NativePgWorld#followRun`).
#[napi]
pub struct PgRunFollower {
    tx: mpsc::UnboundedSender<oneshot::Sender<String>>,
}

#[napi]
impl PgRunFollower {
    /// Looks now: the JSON text of `{ events }` / `{ error }` with what other writers added
    /// and was not reported yet.
    #[napi(catch_unwind)]
    pub async fn poll(&self) -> napi::Result<String> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(reply).is_ok();
        poll_answer(sent, answer).await
    }

    /// Stops following (idempotent).
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> napi::Result<()> {
        guard(|| {
            let (tx, _) = mpsc::unbounded_channel();
            drop(std::mem::replace(&mut self.tx, tx));
            Ok(())
        })
    }
}
