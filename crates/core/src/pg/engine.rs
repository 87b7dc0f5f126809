//! What the embedded engine needs from PostgreSQL beyond `events.create`: a run's events
//! appended in batches (one transaction per batch, fenced by the run's lease) and the
//! run leases themselves, in a schema of our own (`workflow_native`), beside the
//! world-postgres tables.
//!
//! A lease row names its owner and carries the owner's own time to live: a lease is stale
//! once `expires_at` (set by its holder at each renewal) has passed, whatever the time to
//! live of the process looking at it. Taking a stale lease over bumps `token` (the
//! fencing token).
//!
//! Fencing: a batch locks its run's lease row (`FOR SHARE`) in its transaction and is
//! written only if the row still names the batch's owner. A takeover is an `UPDATE` of
//! that row, so it waits for a batch in flight to commit, and every batch after it sees
//! the new owner and is refused whole (`LeaseLost`): a process that was taken over writes
//! nothing more for that run.

use super::listen::{Note, POLL};
use super::own::OwnEvents;
use super::{db_err, store, txn, PgWorld};
use crate::error::{Error, Result};
use crate::journal::AppendOutcome;
use crate::machine::Request;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// How far back of the newest event seen a follower looks again: events of one run get
/// ids in log order, but ids come from each writer's clock, and clocks of two machines
/// may disagree by this much.
const CLOCK_MARGIN_MS: u64 = 10_000;

fn event_id(ev: &Value) -> Option<&str> {
    ev.get("eventId").and_then(Value::as_str)
}

/// A lease as taken: whether `owner` holds it now, and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub held: bool,
    pub token: Option<i64>,
}

impl PgWorld {
    /// Takes the run's lease for a new execution by `owner`, for `ttl_ms`: free (never
    /// taken, released) or stale by its holder's own time to live. Every take bumps the
    /// fencing token, so an earlier execution — of another process, or of this one — is
    /// fenced off even if it still renews or writes.
    pub async fn acquire_lease(
        &self,
        run_id: &str,
        owner: &str,
        ttl_ms: u32,
    ) -> Result<LeaseGrant> {
        let c = self.client().await?;
        let ttl = i32::try_from(ttl_ms).unwrap_or(i32::MAX);
        let stmt = c
            .prepare_cached(
                "INSERT INTO workflow_native.leases AS l (run_id, owner, token, ttl_ms, expires_at)
                 VALUES ($1, $2, 1, $3::integer, now() + $3::integer * interval '1 millisecond')
                 ON CONFLICT (run_id) DO UPDATE SET
                   owner = EXCLUDED.owner,
                   token = l.token + 1,
                   ttl_ms = EXCLUDED.ttl_ms,
                   expires_at = EXCLUDED.expires_at,
                   updated_at = now()
                 WHERE l.owner = '' OR l.expires_at < now()
                 RETURNING token",
            )
            .await
            .map_err(db_err)?;
        let row = c
            .query_opt(&stmt, &[&run_id, &owner, &ttl])
            .await
            .map_err(db_err)?;
        Ok(LeaseGrant {
            held: row.is_some(),
            token: row.map(|r| r.get(0)),
        })
    }

    /// Creates a run started by a process that executes it itself (a worker's `start()`):
    /// `run_created`, the run's lease for `owner` and `run_started` in one transaction —
    /// one commit where creating, taking the lease and starting would be three. Returns the
    /// lease's fencing token and the run's `startedAt`.
    pub async fn create_run_leased(
        &self,
        req: &crate::world::local::CreateRun,
        owner: &str,
        ttl_ms: u32,
    ) -> Result<(i64, Option<String>)> {
        let created = Request::parse(Some(&req.run_id), req.run_created_request())?;
        let mut started_req = Map::new();
        started_req.insert("eventType".into(), Value::from("run_started"));
        started_req.insert("specVersion".into(), Value::from(req.spec_version));
        let started = Request::parse(Some(&req.run_id), started_req)?;
        let run_id = req.run_id.clone();
        let owner = owner.to_string();
        let ttl = i32::try_from(ttl_ms).unwrap_or(i32::MAX);
        let own = Arc::clone(&self.own);
        let pool = Arc::clone(&self.batches);
        let snapshots = Arc::clone(&self.snapshots);
        let slot = pool.reserve().await?;
        tokio::task::spawn_blocking(move || -> Result<(i64, Option<String>)> {
            let _slot = slot;
            let mut conn = pool.get()?;
            let ((token, started_at, _), snap) = txn::transact(
                &mut conn,
                Some(&run_id),
                &[],
                txn::Start::Fresh,
                |store, _| {
                    let first = crate::machine::apply(store, &created)?;
                    let token = store.take_lease(&run_id, &owner, ttl)?.ok_or_else(|| {
                        Error::Plain(format!("the lease of the new run {run_id} is held already"))
                    })?;
                    let second = crate::machine::apply(store, &started)?;
                    let started_at = second
                        .result
                        .run
                        .as_ref()
                        .and_then(|r| r.get("startedAt"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    // a worker elsewhere has nothing to claim (the lease is ours); our
                    // follower must not report these two as another writer's
                    let ids: Vec<String> = [&first.result, &second.result]
                        .iter()
                        .filter_map(|r| r.event.as_ref().and_then(event_id).map(str::to_string))
                        .collect();
                    own.add(&run_id, ids.iter().cloned());
                    Ok(txn::Decision::Commit((token, started_at, ids)))
                },
                |(_, _, ids)| own.remove(&run_id, ids),
            )?;
            snapshots.put(&run_id, &owner, token, snap);
            Ok((token, started_at))
        })
        .await
        .map_err(|e| Error::Plain(format!("run creation task failed: {e}")))?
    }

    /// Extends the lease `owner` took with `token` (see [`acquire_lease`](Self::acquire_lease));
    /// `false` once it is not theirs any more (taken over, released) — never taken back.
    pub async fn renew_lease(
        &self,
        run_id: &str,
        owner: &str,
        token: i64,
        ttl_ms: u32,
    ) -> Result<bool> {
        let c = self.client().await?;
        let ttl = i32::try_from(ttl_ms).unwrap_or(i32::MAX);
        let stmt = c
            .prepare_cached(
                "UPDATE workflow_native.leases
                 SET expires_at = now() + $4::integer * interval '1 millisecond', ttl_ms = $4::integer, updated_at = now()
                 WHERE run_id = $1 AND owner = $2 AND token = $3",
            )
            .await
            .map_err(db_err)?;
        let n = c
            .execute(&stmt, &[&run_id, &owner, &token, &ttl])
            .await
            .map_err(db_err)?;
        Ok(n == 1)
    }

    /// Gives up the lease `owner` took with `token` (nothing if it is not theirs). The row
    /// stays, marked free, so the next take still bumps the fencing token.
    pub async fn release_lease(&self, run_id: &str, owner: &str, token: Option<i64>) -> Result<()> {
        self.snapshots.forget(run_id);
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE workflow_native.leases SET owner = '', expires_at = now(), updated_at = now()
                 WHERE run_id = $1 AND owner = $2 AND ($3::bigint IS NULL OR token = $3)",
            )
            .await
            .map_err(db_err)?;
        c.execute(&stmt, &[&run_id, &owner, &token])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Runs a worker may claim now: pending or running, of one of `names`, and with no
    /// live lease (never taken, released, or stale by its holder's time to live); oldest
    /// first, at most `limit`. The claim itself is [`acquire_lease`](Self::acquire_lease)
    /// (two workers listing the same run: one takes it).
    pub async fn claimable_runs(
        &self,
        names: &[String],
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT r.id, r.name FROM workflow.workflow_runs r
                 LEFT JOIN workflow_native.leases l ON l.run_id = r.id
                 WHERE r.status IN ('pending', 'running') AND r.name = ANY($1)
                   AND (l.run_id IS NULL OR l.owner = '' OR l.expires_at < now())
                 ORDER BY r.created_at, r.id LIMIT $2",
                &[&names, &limit],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The runs whose lease is held (live, or left by a process that died).
    pub async fn leased_runs(&self) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT run_id FROM workflow_native.leases WHERE owner <> '' ORDER BY run_id",
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Appends `requests` to the run's log in order, in one transaction, through the
    /// shared rules: the events before a refused one are written, the refused one and
    /// those after it are not (a refusal aborts the transaction, and the events before it are written again in one of their own). With `owner`, the batch is
    /// written only while `owner` holds the run's lease under `token` (the take that
    /// began this execution; else refused whole: `LeaseLost`). A failed commit writes
    /// nothing: refused at index 0.
    pub async fn append_batch(
        &self,
        run_id: &str,
        requests: Vec<Map<String, Value>>,
        owner: Option<(&str, i64)>,
    ) -> AppendOutcome {
        self.append_batch_inner(run_id, requests, owner)
            .await
            .unwrap_or_else(refused)
    }

    async fn append_batch_inner(
        &self,
        run_id: &str,
        requests: Vec<Map<String, Value>>,
        owner: Option<(&str, i64)>,
    ) -> Result<AppendOutcome> {
        let job = self.parts().job(run_id, requests, owner)?;
        let slot = job.parts.pool.reserve().await?;
        tokio::task::spawn_blocking(move || job.run(slot))
            .await
            .map_err(|e| Error::Plain(format!("event batch task failed: {e}")))?
    }

    /// [`append_batch`](Self::append_batch), answered by calling `done` on the thread
    /// that wrote it: with a connection free, the batch goes straight to a blocking-pool
    /// thread, and no runtime task stands between the caller, that thread and `done`
    /// (each hop between threads is a wake-up, which on a small machine costs about what
    /// the batch's own work does). Else a task waits for a connection first. `requests`
    /// is called on that thread too (parsing costs the caller nothing); its error is
    /// `done`'s `Err`. Called within a Tokio runtime; `done` is called exactly once (with
    /// a refusal at index 0 when the batch could not be written, also when its thread
    /// panicked or the runtime went away before it ran).
    pub fn append_batch_then<R, D>(
        &self,
        run_id: String,
        requests: R,
        owner: Option<(String, i64)>,
        done: D,
    ) where
        R: FnOnce() -> Result<Vec<Map<String, Value>>> + Send + 'static,
        D: FnOnce(Result<AppendOutcome>) + Send + 'static,
    {
        let answer = Answer(Some(done));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return answer.send(Ok(refused(Error::Plain(
                "event batch: called outside a runtime".into(),
            ))));
        };
        let parts = self.parts();
        let pool = Arc::clone(&parts.pool);
        let write = move |slot: tokio::sync::OwnedSemaphorePermit| {
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let requests = requests()?;
                let fence = owner.as_ref().map(|(o, t)| (o.as_str(), *t));
                Ok(match parts.job(&run_id, requests, fence) {
                    Ok(job) => job.run(slot).unwrap_or_else(refused),
                    Err(e) => refused(e),
                })
            }));
            answer.send(written.unwrap_or_else(|p| {
                Ok(refused(Error::Plain(format!(
                    "event batch task failed: it panicked: {}",
                    crate::error::panic_message(p.as_ref())
                ))))
            }))
        };
        match pool.try_reserve() {
            Some(slot) => drop(rt.spawn_blocking(move || write(slot))),
            None => {
                let inner = rt.clone();
                drop(rt.spawn(async move {
                    // (a closed pool drops `write` unsent, which answers with a refusal)
                    if let Ok(slot) = pool.reserve().await {
                        drop(inner.spawn_blocking(move || write(slot)));
                    }
                }));
            }
        }
    }

    /// How many of the engine's batches were committed without waiting for their WAL
    /// flush: those that only record that work began (`run_started`, `step_created`,
    /// `step_started`), made durable by the run's next synchronous commit.
    pub fn commits_without_flush(&self) -> u64 {
        self.batches
            .unflushed_commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What a batch needs of this world, to be parsed and written on another thread.
    fn parts(&self) -> BatchParts {
        BatchParts {
            own: Arc::clone(&self.own),
            pool: Arc::clone(&self.batches),
            snapshots: Arc::clone(&self.snapshots),
        }
    }
}

/// What a batch needs of its world (see [`PgWorld::append_batch_then`]).
struct BatchParts {
    own: Arc<OwnEvents>,
    pool: Arc<super::sync::SyncPool>,
    snapshots: Arc<super::snapshots::Snapshots>,
}

impl BatchParts {
    /// A batch parsed, and where its execution's last batch left the run.
    fn job(
        self,
        run_id: &str,
        requests: Vec<Map<String, Value>>,
        owner: Option<(&str, i64)>,
    ) -> Result<BatchJob> {
        crate::ids::assert_safe_entity_id("runId", run_id)?;
        // what cannot be parsed is refused where it stands, after the ones before it
        let mut parsed = Vec::with_capacity(requests.len());
        let mut bad = None;
        for (i, r) in requests.into_iter().enumerate() {
            match Request::parse(Some(run_id), r) {
                Ok(req) => parsed.push(req),
                Err(e) => {
                    bad = Some((i, e));
                    break;
                }
            }
        }
        let owner = owner.map(|(o, t)| (o.to_string(), t));
        // where the execution's last batch left the run (only its own lease's)
        let snap = owner
            .as_ref()
            .and_then(|(o, t)| self.snapshots.take(run_id, o, *t));
        Ok(BatchJob {
            run_id: run_id.to_string(),
            parsed,
            bad,
            owner,
            snap,
            parts: self,
        })
    }
}

/// An outcome that refuses the whole batch with `e`.
fn refused(e: Error) -> AppendOutcome {
    AppendOutcome {
        results: Vec::new(),
        failed: Some((0, e)),
    }
}

/// Calls its function once: with [`send`](Answer::send)'s answer, or, when dropped
/// unsent (the task that held it never ran), with a refusal.
struct Answer<F: FnOnce(Result<AppendOutcome>)>(Option<F>);

impl<F: FnOnce(Result<AppendOutcome>)> Answer<F> {
    fn send(mut self, out: Result<AppendOutcome>) {
        if let Some(f) = self.0.take() {
            f(out)
        }
    }
}

impl<F: FnOnce(Result<AppendOutcome>)> Drop for Answer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Ok(refused(Error::Plain(
                "the event batch was not written: its task was dropped before it ran \
                 (the runtime is shutting down, or the batch pool closed)"
                    .into(),
            ))))
        }
    }
}

/// One parsed batch, to be written on a thread that may block ([`BatchJob::run`]).
struct BatchJob {
    run_id: String,
    parsed: Vec<Request>,
    /// the first request that could not be parsed (refused where it stands)
    bad: Option<(usize, Error)>,
    owner: Option<(String, i64)>,
    snap: Option<store::Snapshot>,
    parts: BatchParts,
}

impl BatchJob {
    /// Writes the batch on a pooled connection (`slot` reserves one), blocking.
    fn run(self, slot: tokio::sync::OwnedSemaphorePermit) -> Result<AppendOutcome> {
        let _slot = slot;
        let BatchJob {
            run_id,
            parsed,
            bad,
            owner,
            snap,
            parts,
        } = self;
        let mut conn = parts.pool.get()?;
        let mut batch = Batch {
            conn: &mut conn,
            run_id: &run_id,
            owner: owner.as_ref().map(|(o, t)| (o.as_str(), *t)),
            own: &parts.own,
            snap,
        };
        // A refusal aborts the whole transaction: the events before it are written
        // again, in a transaction of their own (rare: the run changed under us).
        let mut upto = parsed.len();
        let mut refusal = bad;
        loop {
            match batch.write(&parsed[..upto])? {
                Written::All(results) => {
                    if began_only(&parsed[..upto]) {
                        parts
                            .pool
                            .unflushed_commits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let (Some((o, t)), Some(snap)) = (&owner, batch.snap.take()) {
                        if refusal.is_none() {
                            parts.snapshots.put(&run_id, o, *t, Some(snap));
                        }
                    }
                    return Ok(AppendOutcome {
                        results,
                        failed: refusal,
                    });
                }
                Written::Refused(0, e) => return Ok(refused(e)),
                Written::Refused(i, e) => {
                    upto = i;
                    refusal = Some((i, e));
                }
            }
        }
    }
}

/// One batch's transaction (see [`PgWorld::append_batch`]).
struct Batch<'a, 'p> {
    conn: &'a mut super::sync::Pooled<'p>,
    run_id: &'a str,
    owner: Option<(&'a str, i64)>,
    own: &'a OwnEvents,
    /// Where the execution's last batch left the run: the next one starts from it
    /// (taken by the first transaction; replaced by what a committed one left).
    snap: Option<store::Snapshot>,
}

enum Written {
    /// every event, committed
    All(Vec<crate::machine::EventResult>),
    /// refused at this index: nothing written
    Refused(usize, Error),
}

impl Batch<'_, '_> {
    /// The events in one transaction: all committed, or none (`Err`: the database failed;
    /// `Refused`: the rules refused one, the lease was lost).
    fn write(&mut self, requests: &[Request]) -> Result<Written> {
        // the steps the batch names (not those it creates), read with the BEGIN
        let mut step_ids: Vec<String> = Vec::new();
        let mut created: Vec<&str> = Vec::new();
        for r in requests {
            let Some(c) = r.correlation_id.as_deref() else {
                continue;
            };
            if r.event_type == "step_created" {
                created.push(c);
            } else if r.event_type.starts_with("step_")
                && !created.contains(&c)
                && !step_ids.iter().any(|s| s == c)
            {
                step_ids.push(c.to_string());
            }
        }
        let (run_id, owner, own) = (self.run_id, self.owner, self.own);
        let snap = self.snap.take();
        let start = match (owner, &snap) {
            (Some((owner, token)), Some(snap)) => txn::Start::Cached { owner, token, snap },
            _ => txn::Start::Read,
        };
        let (written, left) = txn::transact(
            self.conn,
            Some(run_id),
            &step_ids,
            start,
            |store, holder| {
                if let Some((owner, token)) = owner {
                    if holder.as_ref().map(|(o, t)| (o.as_str(), *t)) != Some((owner, token)) {
                        return Ok(txn::Decision::Abort(Written::Refused(
                            0,
                            Error::LeaseLost {
                                run_id: run_id.to_string(),
                            },
                        )));
                    }
                }
                let mut results = Vec::with_capacity(requests.len());
                let mut ended = false;
                for (i, req) in requests.iter().enumerate() {
                    match crate::machine::apply(store, req) {
                        Ok(created) => {
                            ended |= matches!(
                                req.event_type.as_str(),
                                "run_completed" | "run_failed" | "run_cancelled"
                            );
                            results.push(created.result);
                        }
                        Err(e) => return Ok(txn::Decision::Abort(Written::Refused(i, e))),
                    }
                }
                if ended {
                    store.notify(super::listen::RUN_CHANNEL, run_id)?;
                }
                if began_only(requests) {
                    store.commit_without_flush()?;
                }
                if let (true, Some((owner, token))) = (ended, owner) {
                    // the run ended: its lease goes with the same commit
                    store.release_lease(run_id, owner, token)?;
                }
                // known as ours before the commit makes them visible to our follower
                own.add(run_id, event_ids(&results));
                Ok(txn::Decision::Commit(Written::All(results)))
            },
            |w| {
                if let Written::All(results) = w {
                    own.remove(run_id, &event_ids(results));
                }
            },
        )?;
        self.snap = left;
        Ok(written)
    }
}

/// The batch only records that work began: committed without waiting for its WAL flush.
fn began_only(requests: &[Request]) -> bool {
    crate::journal::records_only_beginnings(requests.iter().map(|r| r.event_type.as_str()))
}

fn event_ids(results: &[crate::machine::EventResult]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| r.event.as_ref().and_then(event_id).map(str::to_string))
        .collect()
}

impl PgWorld {
    /// The run's events with ids above `after` (all when `None`), in log order.
    async fn events_after(&self, run_id: &str, after: Option<&str>) -> Result<Vec<Value>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {} FROM workflow.workflow_events WHERE run_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id",
            super::rows::EVENT_COLS
        );
        let stmt = c.prepare_cached(&sql).await.map_err(db_err)?;
        let rows = c.query(&stmt, &[&run_id, &after]).await.map_err(db_err)?;
        rows.iter().map(super::rows::event_json).collect()
    }

    /// Follows the events other writers add to `run_id` (this process's appends are not
    /// reported).
    pub fn follow(self: &Arc<Self>, run_id: &str) -> Result<PgFollower> {
        crate::ids::assert_safe_entity_id("runId", run_id)?;
        Ok(PgFollower {
            world: Arc::clone(self),
            run_id: run_id.to_string(),
            known: HashSet::new(),
            newest: None,
            rx: self.subscribe(),
        })
    }
}

/// A run's follower: woken by `workflow_native_events` notifications for its run (not by
/// its end, which its own engine announces), by a listener reconnect, and every [`POLL`]
/// in any case.
pub struct PgFollower {
    world: Arc<PgWorld>,
    run_id: String,
    known: HashSet<String>,
    /// the newest event id seen
    newest: Option<String>,
    rx: tokio::sync::broadcast::Receiver<Note>,
}

impl PgFollower {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Event ids the caller has read already.
    pub fn known(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            if self.newest.as_deref().is_none_or(|n| id.as_str() > n) {
                self.newest = Some(id.clone());
            }
            self.known.insert(id);
        }
    }

    /// Where the next look starts: [`CLOCK_MARGIN_MS`] before the newest id seen.
    fn floor(&self) -> Option<String> {
        let newest = self.newest.as_deref()?;
        let (prefix, ulid) = newest.split_once('_')?;
        let t = ulid::Ulid::from_string(ulid).ok()?.timestamp_ms();
        let back = ulid::Ulid::from_parts(t.saturating_sub(CLOCK_MARGIN_MS), 0);
        Some(format!("{prefix}_{back}"))
    }

    /// What other writers added and was not reported yet (looks now).
    pub async fn poll_now(&mut self) -> Result<Vec<Value>> {
        let floor = self.floor();
        let got = self
            .world
            .events_after(&self.run_id, floor.as_deref())
            .await?;
        let mut out = Vec::new();
        for ev in got {
            let Some(id) = event_id(&ev).map(str::to_string) else {
                continue;
            };
            if !self.known.insert(id.clone()) {
                continue;
            }
            if self.newest.as_deref().is_none_or(|n| id.as_str() > n) {
                self.newest = Some(id.clone());
            }
            if self.world.own.take(&self.run_id, &id) {
                continue;
            }
            out.push(ev);
        }
        Ok(out)
    }

    /// Waits for events other writers add, and returns them (never empty).
    pub async fn next(&mut self) -> Result<Vec<Value>> {
        loop {
            let deadline = tokio::time::sleep(POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    n = self.rx.recv() => match n {
                        // (not `Note::Run`: every writer of an event from outside sends
                        // `Note::Events` too; a run's end alone is its own engine's)
                        Ok(Note::Events(id)) if id == self.run_id => break,
                        Ok(Note::Resync) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
            let got = self.poll_now().await?;
            if !got.is_empty() {
                return Ok(got);
            }
        }
    }
}

impl Drop for PgFollower {
    fn drop(&mut self) {
        self.world.own.forget(&self.run_id);
    }
}
