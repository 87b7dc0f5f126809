//! The PostgreSQL World: the tables of `@workflow/world-postgres` 4.3.7, byte for byte
//! (CBOR columns as cbor-x writes them, UTC timestamps, `wrun_`/`wevt_`/`chnk_` ULIDs),
//! with `events.create` through the shared rules of [`crate::machine`] in one transaction
//! per event, live reads woken by LISTEN/NOTIFY with a polling backstop, and queue
//! messages for runs an official world-postgres app executes handed to its
//! graphile-worker queue through `graphile_worker.add_job`.

pub mod cbor;
pub mod config;
mod dberr;
pub mod engine;
pub mod listen;
mod own;
pub mod rows;
pub mod schema;
mod snapshots;
mod store;
pub mod streams;
mod sync;
mod txn;

use crate::error::{Error, Result};
use crate::machine::{Created, Request};
use crate::storage::CancelOutcome;
use crate::world::local::CreateRun;
use crate::world::model::{
    parse_event_summary, parse_hook, parse_run, payload_json, EventSummary, Hook, Payload,
    RunSnapshot, RunStatus,
};
use config::{redact, PgConfig};
pub(crate) use dberr::db_err;
use deadpool_postgres::{Object, Pool};
use listen::{Listener, Note, POLL};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub use config::PgConfig as Config;

/// One database: a pool, a listener, the schema made sure of.
/// A callback answered exactly once: by [`send`](Reply::send), or, when the task holding
/// it is dropped before it ran (the runtime shutting down), with an error saying so.
struct Reply<T, F: FnOnce(Result<T>)>(Option<F>, std::marker::PhantomData<fn(T)>);

impl<T, F: FnOnce(Result<T>)> Reply<T, F> {
    fn new(f: F) -> Self {
        Reply(Some(f), std::marker::PhantomData)
    }

    fn send(mut self, out: Result<T>) {
        if let Some(f) = self.0.take() {
            f(out)
        }
    }
}

impl<T, F: FnOnce(Result<T>)> Drop for Reply<T, F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(Error::Plain(
                "PostgreSQL: the read's task was dropped before it ran (the runtime is \
                 shutting down)"
                    .into(),
            )))
        }
    }
}

/// How many synchronous connections serve `status` reads (beyond them, the async pool).
const READ_CONNECTIONS: usize = 2;

const STATUS_SQL: &str = "SELECT status::text FROM workflow.workflow_runs WHERE id = $1";

/// A run's row.
static RUN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM workflow.workflow_runs WHERE id = $1",
        rows::RUN_COLS
    )
});

/// The run in a [`RUN_SQL`] answer.
fn run_of(run_id: &str, row: Option<tokio_postgres::Row>, with_data: bool) -> Result<RunSnapshot> {
    match row {
        None => Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        }),
        Some(row) => parse_run(
            &rows::location("workflow_runs", run_id),
            &rows::run_json(&row)?,
            with_data,
        ),
    }
}

/// The status in a [`STATUS_SQL`] answer.
fn status_of(run_id: &str, row: Option<tokio_postgres::Row>) -> Result<RunStatus> {
    let Some(row) = row else {
        return Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        });
    };
    let status: String = row.try_get(0).map_err(db_err)?;
    RunStatus::parse(&status).ok_or_else(|| {
        Error::corrupt(
            &rows::location("workflow_runs", run_id),
            format!("unknown run status \"{status}\""),
        )
    })
}

pub struct PgWorld {
    pool: Pool,
    listener: Arc<Listener>,
    config: PgConfig,
    /// Event ids this process's engine appended, per run, not yet seen by its follower
    /// (which reports only what other writers added).
    pub(crate) own: Arc<own::OwnEvents>,
    /// Synchronous connections for the engine's batches (see `sync`).
    pub(crate) batches: Arc<sync::SyncPool>,
    /// A few synchronous connections for the hottest point read, `status` (see
    /// [`PgWorld::run_status_then`]).
    reads: Arc<sync::SyncPool>,
    /// Where this process's executions left their runs (see `snapshots`).
    pub(crate) snapshots: Arc<snapshots::Snapshots>,
}

impl PgWorld {
    /// Connects (within the connect timeout: a wrong URL fails in seconds), creates the
    /// schema when the database has none, and starts the listener.
    pub async fn connect(config: PgConfig) -> Result<Arc<PgWorld>> {
        let (pool, cfg, verify) = config::pool(&config)?;
        let mut client = pool.get().await.map_err(|e| Error::Database {
            message: format!(
                "Could not connect to PostgreSQL at {}: {}",
                redact(&config.url),
                pool_err_text(&e)
            ),
            sqlstate: None,
        })?;
        schema::ensure(&mut client).await?;
        drop(client);
        let batches = Arc::new(sync::SyncPool::new(
            cfg.clone(),
            verify,
            config.max_pool_size,
        ));
        let reads = Arc::new(sync::SyncPool::new(cfg.clone(), verify, READ_CONNECTIONS));
        let listener = Listener::start(cfg, verify);
        Ok(Arc::new(PgWorld {
            pool,
            listener,
            config,
            own: Default::default(),
            batches,
            reads,
            snapshots: Default::default(),
        }))
    }

    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    pub(crate) async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| Error::Database {
            message: format!(
                "Could not get a PostgreSQL connection ({}): {}",
                redact(&self.config.url),
                pool_err_text(&e)
            ),
            sqlstate: None,
        })
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Note> {
        self.listener.subscribe()
    }

    // ------------------------------------------------------------------ runs

    /// The run's status alone (`getRun(id).status`): one column, nothing decoded;
    /// `RunNotFound` when absent. Answered by calling `done` on the thread that read it
    /// (see [`point_read_then`](Self::point_read_then)).
    pub fn run_status_then<D>(self: &Arc<Self>, run_id: String, done: D)
    where
        D: FnOnce(Result<RunStatus>) + Send + 'static,
    {
        self.point_read_then(STATUS_SQL, run_id, status_of, done)
    }

    /// [`get_run`](Self::get_run), answered by calling `done` on the thread that read
    /// it (see [`point_read_then`](Self::point_read_then)).
    pub fn get_run_then<D>(self: &Arc<Self>, run_id: String, with_data: bool, done: D)
    where
        D: FnOnce(Result<RunSnapshot>) + Send + 'static,
    {
        self.point_read_then(
            &RUN_SQL,
            run_id,
            move |run_id, row| run_of(run_id, row, with_data),
            done,
        )
    }

    /// One statement with the run id as its parameter, its row (or none) turned into
    /// the answer by `parse`, and `done` called with it exactly once. With one of the
    /// [`READ_CONNECTIONS`] free, the read goes straight to a blocking-pool thread that
    /// drives that connection's socket itself, so no runtime task stands between the
    /// caller, the socket and `done` (each hop between threads is a wake-up, about a
    /// third of a local round trip). With none free, the pooled async path. Called
    /// within a Tokio runtime.
    fn point_read_then<T, P, D>(
        self: &Arc<Self>,
        sql: &'static str,
        run_id: String,
        parse: P,
        done: D,
    ) where
        T: Send + 'static,
        P: FnOnce(&str, Option<tokio_postgres::Row>) -> Result<T> + Send + 'static,
        D: FnOnce(Result<T>) + Send + 'static,
    {
        let done = Reply::new(done);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return done.send(Err(Error::Plain("read: called outside a runtime".into())));
        };
        let Some(slot) = self.reads.try_reserve() else {
            let me = Arc::clone(self);
            drop(rt.spawn(async move {
                let read = me.point_read(sql, &run_id).await;
                done.send(read.and_then(|row| parse(&run_id, row)))
            }));
            return;
        };
        let reads = Arc::clone(&self.reads);
        drop(rt.spawn_blocking(move || {
            let _slot = slot;
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut conn = reads.get()?;
                let row = match conn.query_opt(sql, &[&run_id]) {
                    Ok(row) => row,
                    Err(_) => {
                        // the server may have ended this connection while it sat idle (a
                        // restart, a terminated backend) without that being seen yet when
                        // it was lent: once more on a new one (the read changes nothing)
                        conn.discard();
                        reads.get()?.query_opt(sql, &[&run_id])?
                    }
                };
                parse(&run_id, row)
            }));
            done.send(read.unwrap_or_else(|p| {
                Err(Error::Plain(format!(
                    "read failed: it panicked: {}",
                    crate::error::panic_message(p.as_ref())
                )))
            }))
        }));
    }

    /// `runs.get(runId)`; `RunNotFound` when absent.
    pub async fn get_run(&self, run_id: &str, with_data: bool) -> Result<RunSnapshot> {
        let row = self.point_read(&RUN_SQL, run_id).await?;
        run_of(run_id, row, with_data)
    }

    /// One statement with the run id as its parameter, on the async pool: its row, if any.
    async fn point_read(&self, sql: &str, run_id: &str) -> Result<Option<tokio_postgres::Row>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
        c.query_opt(&stmt, &[&run_id]).await.map_err(db_err)
    }

    /// Resolves once the run is completed, failed or cancelled: woken by our NOTIFY,
    /// re-checked on every listener reconnect and every [`POLL`] (runs ended by an
    /// official app send no notification).
    pub async fn wait_terminal(&self, run_id: &str) -> Result<RunSnapshot> {
        let mut rx = self.subscribe();
        loop {
            let run = self.get_run(run_id, true).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            let deadline = tokio::time::sleep(POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    n = rx.recv() => match n {
                        Ok(Note::Run(id)) if id == run_id => break,
                        Ok(Note::Resync) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
    }

    /// Every run (optionally of some statuses) as stored, by creation, as a JSON array.
    pub async fn list_runs_json(&self, statuses: Option<Vec<String>>) -> Result<String> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {} FROM workflow.workflow_runs
             WHERE $1::text[] IS NULL OR status::text = ANY($1) ORDER BY created_at, id",
            rows::RUN_COLS
        );
        let rows_ = c.query(&sql, &[&statuses]).await.map_err(db_err)?;
        let list = rows_
            .iter()
            .map(rows::run_json)
            .collect::<Result<Vec<_>>>()?;
        Ok(Value::Array(list).to_string())
    }

    // ---------------------------------------------------------------- events

    /// `events.create(runId, request)` through the shared rules, in one transaction.
    pub async fn create_event(
        &self,
        run_id: Option<&str>,
        request: Map<String, Value>,
    ) -> Result<Created> {
        let req = Request::parse_any_ids(run_id, request)?;
        let pool = Arc::clone(&self.batches);
        let slot = pool.reserve().await?;
        tokio::task::spawn_blocking(move || -> Result<Created> {
            let _slot = slot;
            let mut conn = pool.get()?;
            let steps: Vec<String> = match (&req.correlation_id, req.event_type.as_str()) {
                (Some(c), t) if t.starts_with("step_") && t != "step_created" => vec![c.clone()],
                _ => Vec::new(),
            };
            // (with a run id: its advisory lock taken)
            txn::transact(
                &mut conn,
                req.run_id.as_deref(),
                &steps,
                if req.event_type == "run_created" {
                    txn::Start::Fresh
                } else {
                    txn::Start::Read
                },
                |store, _| {
                    let created = crate::machine::apply(store, &req)?;
                    let ended = matches!(
                        req.event_type.as_str(),
                        "run_completed" | "run_failed" | "run_cancelled"
                    );
                    if let (true, Some(r)) = (ended, created.result.run.as_ref()) {
                        if let Some(id) = r.get("runId").and_then(Value::as_str) {
                            store.notify(listen::RUN_CHANNEL, id)?;
                        }
                    }
                    // workers look for runs to claim; an engine executing the run looks
                    // at its new events
                    if let Some(r) = &req.run_id {
                        let channel = if req.event_type == "run_created" {
                            listen::RUNS_CHANNEL
                        } else {
                            listen::EVENTS_CHANNEL
                        };
                        store.notify(channel, r)?;
                    }
                    Ok(txn::Decision::Commit(created))
                },
                |_| {},
            )
            .map(|(created, _)| created)
        })
        .await
        .map_err(|e| Error::Plain(format!("event creation task failed: {e}")))?
    }

    /// `run_cancelled`, with a typed outcome.
    pub async fn cancel_run(&self, run_id: &str) -> Result<CancelOutcome> {
        if run_id.is_empty() {
            return Err(Error::Plain(
                "runId is required for non-run_created events".into(),
            ));
        }
        let created = self
            .create_event(Some(run_id), crate::storage::run_cancelled_request())
            .await?;
        Ok(created.applied.into())
    }

    /// `wait_completed` (`eventData.resumeAt` when given; the bare legacy request for
    /// spec ≤ 1 runs).
    pub async fn complete_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> Result<()> {
        let request = crate::storage::wait_completed_request(
            correlation_id,
            spec_version,
            resume_at_ms,
            legacy,
        );
        self.create_event(Some(run_id), request).await?;
        Ok(())
    }

    /// The run's events in log order (by id, as world-postgres lists them).
    pub async fn list_events(&self, run_id: &str) -> Result<Vec<Value>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {} FROM workflow.workflow_events WHERE run_id = $1 ORDER BY id",
            rows::EVENT_COLS
        );
        let stmt = c.prepare_cached(&sql).await.map_err(db_err)?;
        let rows_ = c.query(&stmt, &[&run_id]).await.map_err(db_err)?;
        rows_.iter().map(rows::event_json).collect()
    }

    pub async fn list_run_events(&self, run_id: &str) -> Result<Vec<EventSummary>> {
        Ok(self
            .list_events(run_id)
            .await?
            .iter()
            .filter_map(parse_event_summary)
            .collect())
    }

    pub async fn list_events_json(&self, run_id: &str) -> Result<String> {
        Ok(Value::Array(self.list_events(run_id).await?).to_string())
    }

    // ----------------------------------------------------------------- hooks

    /// `hooks.getByToken`; `HookNotFound` when no hook holds the token.
    pub async fn get_hook_by_token(&self, token: &str) -> Result<Hook> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {} FROM workflow.workflow_hooks WHERE token = $1 ORDER BY created_at LIMIT 1",
            rows::HOOK_COLS
        );
        match c.query_opt(&sql, &[&token]).await.map_err(db_err)? {
            None => Err(Error::HookNotFound {
                token: token.to_string(),
            }),
            Some(row) => {
                let id: String = row.get("hook_id");
                parse_hook(
                    &rows::location("workflow_hooks", &id),
                    &rows::hook_json(&row)?,
                )
            }
        }
    }

    /// `start()`'s `run_created`.
    pub async fn create_run(&self, req: &CreateRun) -> Result<()> {
        self.create_event(Some(&req.run_id), req.run_created_request())
            .await?;
        Ok(())
    }

    /// `hook_received` with the payload; the event id.
    pub async fn hook_received(
        &self,
        run_id: &str,
        hook_id: &str,
        token: Option<&str>,
        payload: &Payload,
    ) -> Result<String> {
        let payload = payload_json(payload);
        let mut data = Map::new();
        if let Some(t) = token {
            data.insert("token".into(), json!(t));
        }
        data.insert("payload".into(), payload);
        let mut request = Map::new();
        request.insert("eventType".into(), json!("hook_received"));
        request.insert("correlationId".into(), json!(hook_id));
        request.insert(
            "specVersion".into(),
            json!(crate::world::model::SPEC_VERSION_CURRENT),
        );
        request.insert("eventData".into(), Value::Object(data));
        let created = self.create_event(Some(run_id), request).await?;
        Ok(created
            .result
            .event
            .as_ref()
            .and_then(|e| e.get("eventId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    // ----------------------------------------------------------------- queue

    /// Hands a queue message to an official app's graphile-worker queue, as
    /// world-postgres's `queue()` does: task `<prefix>flows` / `<prefix>steps`, payload
    /// `{attempt, messageId, idempotencyKey?, id, data: base64(body)}`, job key =
    /// idempotency key or message id, 3 attempts.
    pub async fn enqueue_graphile(
        &self,
        queue_name: &str,
        message_id: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
        delay_seconds: Option<f64>,
    ) -> Result<()> {
        use base64::Engine;
        let (kind, id) = split_queue_name(queue_name)
            .ok_or_else(|| Error::Queue(format!("Invalid queue name \"{queue_name}\"")))?;
        let task = format!(
            "{}{}",
            self.config.job_prefix,
            if kind == "workflow" { "flows" } else { "steps" }
        );
        let mut payload = Map::new();
        payload.insert("attempt".into(), json!(1));
        payload.insert("messageId".into(), json!(message_id));
        if let Some(k) = idempotency_key {
            payload.insert("idempotencyKey".into(), json!(k));
        }
        payload.insert("id".into(), json!(id));
        payload.insert(
            "data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
        );
        let payload = Value::Object(payload).to_string();
        let job_key = idempotency_key.unwrap_or(message_id);
        let delay = delay_seconds.filter(|d| *d > 0.0).unwrap_or(0.0);
        let c = self.client().await?;
        c.execute(
            "SELECT graphile_worker.add_job($1::text, $2::text::json, job_key => $3::text,
                run_at => now() + make_interval(secs => $4::float8), max_attempts => 3)",
            &[&task, &payload, &job_key, &delay],
        )
        .await
        .map_err(|e| {
            let missing = e
                .as_db_error()
                .is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::UNDEFINED_FUNCTION
                    || d.code() == &tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME);
            if missing {
                Error::Queue(format!(
                    "Cannot enqueue {queue_name}: the database has no graphile-worker queue (no world-postgres app has started on it)"
                ))
            } else {
                db_err(e)
            }
        })?;
        Ok(())
    }
}

impl crate::storage::WaitOps for PgWorld {
    fn run_snapshot(
        &self,
        run_id: &str,
    ) -> impl std::future::Future<Output = Result<RunSnapshot>> + Send {
        self.get_run(run_id, false)
    }

    fn run_event_summaries(
        &self,
        run_id: &str,
    ) -> impl std::future::Future<Output = Result<Vec<EventSummary>>> + Send {
        self.list_run_events(run_id)
    }

    fn finish_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        self.complete_wait(run_id, correlation_id, spec_version, resume_at_ms, legacy)
    }
}

/// `__wkf_workflow_<name>` / `__<ns>_wkf_step_<name>` → (kind, name).
pub fn split_queue_name(q: &str) -> Option<(&'static str, &str)> {
    for (marker, kind) in [("wkf_workflow_", "workflow"), ("wkf_step_", "step")] {
        if let Some(at) = q.find(marker) {
            if q.starts_with("__") {
                return Some((kind, &q[at + marker.len()..]));
            }
        }
    }
    None
}

fn pool_err_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(b) => match b.as_db_error() {
            Some(d) => format!("{} ({})", d.message(), d.code().code()),
            None => {
                let mut s = b.to_string();
                let mut src = std::error::Error::source(b);
                while let Some(x) = src {
                    s.push_str(": ");
                    s.push_str(&x.to_string());
                    src = x.source();
                }
                s
            }
        },
        deadpool_postgres::PoolError::Timeout(_) => "timed out while connecting".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod reply_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_reply_is_answered_once_and_a_dropped_one_with_an_error() {
        let got: Arc<Mutex<Vec<Result<u8>>>> = Arc::default();
        let g = Arc::clone(&got);
        Reply::new(move |r| g.lock().unwrap().push(r)).send(Ok(7));
        let g = Arc::clone(&got);
        drop(Reply::new(move |r: Result<u8>| g.lock().unwrap().push(r)));
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Ok(7)));
        assert!(got[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("dropped before it ran")));
    }
}
