//! The shared `events.create` rules ([`crate::machine`]) over one PostgreSQL transaction.
//!
//! The rules call a synchronous [`EventStore`]; here each call is a statement of one
//! transaction on a synchronous connection (`pg::sync`), from a blocking-pool thread.
//! The whole event — the entity lock, its checks, the entity
//! changes, the event row and the clean-ups — commits or rolls back as one, so the rules'
//! file-oriented undo log is not used ([`EventStore::transactional`]).
//!
//! Locks, taken before the rules read anything: an advisory transaction lock on the run
//! (every event of a run is applied one at a time, also across processes, and a `wevt_`
//! id is allocated after it, so ids follow the log order), row locks (`FOR UPDATE`) on
//! the rows read (which also orders us with world-postgres's own guarded updates), and an
//! advisory lock on a hook token while it is claimed (two runs racing for a token: one
//! wins, the other gets `hook_conflict`).

use super::rows::{self, location};
use crate::error::{Error, Result};
use crate::machine::{Entity, EventStore, Once, RunState, StepState, TokenClaim};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::path::PathBuf;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// One open transaction, statement by statement, from a thread that may block (a
/// synchronous connection driven on the calling thread itself: see `pg::sync`).
pub(crate) trait Sql {
    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, tokio_postgres::Error>;
    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, tokio_postgres::Error>;
    /// Queues a statement whose answer nobody needs: it goes out with the next statement
    /// that needs one, or with the commit.
    fn defer(&mut self, statement: Deferred);
    /// Puts `statement` in the place of the queued `INSERT` of the row kept under `key`
    /// (its `capture`), when that insert is still queued; `false` (nothing changed)
    /// when it was sent already.
    fn requeue_insert(&mut self, key: &str, statement: Deferred) -> bool;
    /// Whether a queued statement failed (the transaction is aborted: nothing of it
    /// commits, and it may be run again statement by statement).
    fn deferred_failed(&self) -> bool;
    /// The `xmin`s the queued writes with a `capture` key returned (once they were sent).
    fn take_captured(&mut self) -> Vec<(String, String)>;
    fn commit(&mut self) -> std::result::Result<(), tokio_postgres::Error>;
    fn rollback(&mut self) -> std::result::Result<(), tokio_postgres::Error>;
}

/// Owned statement parameters (a queued statement outlives the call that made it).
pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

macro_rules! params {
    ($($v:expr),* $(,)?) => {
        vec![$(Box::new($v) as Box<dyn ToSql + Sync + Send>),*]
    };
}

/// A statement and its parameters, sent later.
pub(crate) struct Deferred {
    pub(crate) sql: String,
    pub(crate) params: Params,
    /// For a write that returns its row's `xmin`: the entity key it is kept under.
    pub(crate) capture: Option<String>,
}

impl Deferred {
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// How a transaction's writes go out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Queued, sent with the next read or the commit; a write whose outcome the rules
    /// would branch on (an insert that may find its row there) fails the transaction
    /// instead, and the caller runs the whole transaction again [`Immediate`](Mode::Immediate).
    Pipelined,
    /// One statement at a time, each answer seen by the rules.
    Immediate,
}

/// What [`PgStore::finish`] did.
pub(crate) enum Finished {
    /// With what the next transaction of the run's execution may start from.
    Committed(Option<Box<Snapshot>>),
    /// A queued write failed: nothing was written; run the transaction again
    /// [`Mode::Immediate`].
    Replay,
}

const RUN_READ: &str =
    "SELECT {}, xmin::text AS wfn_xmin FROM workflow.workflow_runs WHERE id = $1 FOR UPDATE";
const STEP_READ: &str = "SELECT {}, xmin::text AS wfn_xmin FROM workflow.workflow_steps WHERE step_id = $1 AND run_id = $2 FOR UPDATE";

/// Guards of a transaction that starts from a [`Snapshot`] instead of reading (see
/// `pg::txn::Start::Cached`): each fails the transaction (a division by zero) unless the row is
/// still the one the snapshot knows — the same `xmin` (no writer changed it since), the
/// lease still this execution's.
const LEASE_GUARD: &str = "SELECT 1 / count(*)::int FROM (SELECT 1 FROM workflow_native.leases
     WHERE run_id = $1 AND owner = $2 AND token = $3 FOR SHARE) s";
const RUN_GUARD: &str = "SELECT 1 / count(*)::int FROM (SELECT 1 FROM workflow.workflow_runs
     WHERE id = $1 AND xmin::text = $2 FOR UPDATE) s";
const STEP_GUARD: &str = "SELECT 1 / count(*)::int FROM (SELECT 1 FROM workflow.workflow_steps
     WHERE step_id = $1 AND run_id = $2 AND xmin::text = $3 FOR UPDATE) s";

/// A run's rows as one of its transactions left them: the run and its unfinished steps,
/// each with the `xmin` of its row version. The next transaction of the same execution
/// starts from it instead of reading them (one round trip in all), guarded.
#[derive(Clone)]
pub(crate) struct Snapshot {
    run: (RunState, String),
    steps: Vec<(String, StepState, String)>,
}

fn run_read_sql() -> String {
    RUN_READ.replacen("{}", rows::RUN_COLS, 1)
}

fn step_read_sql() -> String {
    STEP_READ.replacen("{}", rows::STEP_COLS, 1)
}

/// The reads a transaction on `run_id` will need, to send with its `BEGIN`: the run, and
/// the steps of `step_ids`. [`PgStore::prefetched`] takes their rows.
pub(crate) fn prefetch(run_id: &str, step_ids: &[String]) -> Vec<Deferred> {
    let mut out = vec![Deferred {
        sql: run_read_sql(),
        params: params![run_id.to_string()],
        capture: None,
    }];
    for step_id in step_ids {
        out.push(Deferred {
            sql: step_read_sql(),
            params: params![step_id.clone(), run_id.to_string()],
            capture: None,
        });
    }
    out
}

pub(crate) struct PgStore<'t> {
    tx: RefCell<Box<dyn Sql + 't>>,
    mode: Mode,
    /// The first statement failure: the transaction is aborted from then on, and the
    /// event must not be reported as stored even if a rule chose to ignore the error.
    failed: RefCell<Option<String>>,
    /// The run and the steps as this transaction read them (rows it holds `FOR UPDATE`)
    /// or wrote them since: the rules read the run for every event of a batch, and a step
    /// more than once per event.
    pub(crate) run_memo: RefCell<Option<(String, Option<RunState>)>>,
    step_memo: RefCell<std::collections::HashMap<String, Option<StepState>>>,
    /// The `xmin` of each run or step row (by run id / step key) as read or written here.
    xmins: RefCell<std::collections::HashMap<String, String>>,
}

/// `<runId>-<correlationId>` → (runId, correlationId); run ids never hold `-`.
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('-').unwrap_or((key, ""))
}

impl<'t> PgStore<'t> {
    pub(crate) fn over(tx: Box<dyn Sql + 't>, mode: Mode) -> PgStore<'t> {
        PgStore {
            tx: RefCell::new(tx),
            mode,
            failed: RefCell::new(None),
            run_memo: RefCell::new(None),
            step_memo: RefCell::new(Default::default()),
            xmins: RefCell::new(Default::default()),
        }
    }

    /// Takes the rows of the reads [`prefetch`] made (in its order) as read by this
    /// transaction. A row that does not parse is left to be read again (and reported).
    pub(crate) fn prefetched(
        self,
        run_id: &str,
        step_ids: &[String],
        rows: Vec<Option<Row>>,
    ) -> Self {
        let mut rows = rows.into_iter();
        if let Some(row) = rows.next() {
            self.note_xmin(run_id, row.as_ref());
            let run = match row {
                None => Some(None),
                Some(row) => rows::run_json(&row)
                    .and_then(|v| RunState::parse(&location("workflow_runs", run_id), &v))
                    .ok()
                    .map(Some),
            };
            if let Some(run) = run {
                *self.run_memo.borrow_mut() = Some((run_id.to_string(), run));
            }
        }
        for (step_id, row) in step_ids.iter().zip(rows) {
            self.note_xmin(&format!("{run_id}-{step_id}"), row.as_ref());
            let step = match row {
                None => Some(None),
                Some(row) => rows::step_json(&row)
                    .and_then(|m| StepState::parse(&location("workflow_steps", step_id), &m))
                    .ok()
                    .map(Some),
            };
            if let Some(step) = step {
                self.step_memo
                    .borrow_mut()
                    .insert(format!("{run_id}-{step_id}"), step);
            }
        }
        self
    }

    /// Gives up the lease `owner` took with `token` with this transaction's commit (see
    /// `pg::engine::release_lease`).
    pub(crate) fn release_lease(&self, run_id: &str, owner: &str, token: i64) -> Result<()> {
        const SQL: &str =
            "UPDATE workflow_native.leases SET owner = '', expires_at = now(), updated_at = now()
                 WHERE run_id = $1 AND owner = $2 AND token = $3";
        self.write(
            SQL,
            SQL,
            params![run_id.to_string(), owner.to_string(), token],
        )
        .map(|_| ())
    }

    fn note_xmin(&self, key: &str, row: Option<&Row>) {
        if let Some(x) = row.and_then(|r| r.try_get::<_, String>("wfn_xmin").ok()) {
            self.xmins.borrow_mut().insert(key.to_string(), x);
        }
    }

    /// Starts from `snap` instead of reading: the run and its steps as the execution's
    /// last transaction left them, each guarded (as is the lease of `owner`/`token`) by a
    /// queued statement that fails the transaction unless its row is unchanged.
    pub(crate) fn seeded(self, run_id: &str, owner: &str, token: i64, snap: &Snapshot) -> Self {
        let defer = |sql: &str, params: Params| {
            self.tx.borrow_mut().defer(Deferred {
                sql: sql.to_string(),
                params,
                capture: None,
            })
        };
        defer(
            LEASE_GUARD,
            params![run_id.to_string(), owner.to_string(), token],
        );
        let (run, xmin) = &snap.run;
        defer(RUN_GUARD, params![run_id.to_string(), xmin.clone()]);
        *self.run_memo.borrow_mut() = Some((run_id.to_string(), Some(run.clone())));
        self.xmins
            .borrow_mut()
            .insert(run_id.to_string(), xmin.clone());
        for (key, step, xmin) in &snap.steps {
            let (_, step_id) = split_key(key);
            defer(
                STEP_GUARD,
                params![step_id.to_string(), run_id.to_string(), xmin.clone()],
            );
            self.step_memo
                .borrow_mut()
                .insert(key.clone(), Some(step.clone()));
            self.xmins.borrow_mut().insert(key.clone(), xmin.clone());
        }
        self
    }

    /// What the next transaction of this execution may start from, once this one
    /// committed: the run and its unfinished steps, where every `xmin` is known. `None`
    /// once the run ended (or when a row's version is not known).
    fn snapshot(&self, run_id: &str) -> Option<Snapshot> {
        let mut xmins = self.xmins.borrow_mut();
        xmins.extend(self.tx.borrow_mut().take_captured());
        let run = match &*self.run_memo.borrow() {
            Some((id, Some(run))) if id == run_id && !run.snap.status.is_terminal() => {
                (run.clone(), xmins.get(run_id)?.clone())
            }
            _ => return None,
        };
        let mut steps = Vec::new();
        for (key, step) in self.step_memo.borrow().iter() {
            let Some(step) = step else { continue };
            if matches!(step.status.as_str(), "completed" | "failed" | "cancelled") {
                continue;
            }
            steps.push((key.clone(), step.clone(), xmins.get(key)?.clone()));
        }
        Some(Snapshot { run, steps })
    }

    /// Whether a queued write failed: the transaction must be run again
    /// [`Mode::Immediate`] (whatever the rules made of the failure).
    pub(crate) fn replay_needed(&self) -> bool {
        self.tx.borrow().deferred_failed()
    }

    /// A write: queued when pipelined (`strict` then: the statement that fails where
    /// `sql` would have found nothing to do), else executed, with its row count.
    fn write(&self, sql: &str, strict: &str, params: Params) -> Result<Option<u64>> {
        self.write_row(sql, strict, params, None)
    }

    /// [`write`](Self::write) of a run or step row (`key`: the run id, or the step key):
    /// pipelined, the row's new `xmin` is kept for the [`Snapshot`] (known once sent).
    fn write_row(
        &self,
        sql: &str,
        strict: &str,
        params: Params,
        key: Option<&str>,
    ) -> Result<Option<u64>> {
        if let Some(k) = key {
            self.xmins.borrow_mut().remove(k);
        }
        if self.mode == Mode::Pipelined {
            if self.failed.borrow().is_none() {
                self.tx.borrow_mut().defer(Deferred {
                    sql: match key {
                        Some(_) => format!("{strict} RETURNING xmin::text"),
                        None => strict.to_string(),
                    },
                    params,
                    capture: key.map(str::to_string),
                });
            }
            return Ok(None);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        self.execute(sql, &refs).map(Some)
    }

    /// The run as just written by this transaction.
    fn remember_run(&self, run_id: &str, run: &Map<String, Value>) {
        let v = Value::Object(run.clone());
        *self.run_memo.borrow_mut() = RunState::parse(&location("workflow_runs", run_id), &v)
            .ok()
            .map(|r| (run_id.to_string(), Some(r)));
    }

    /// The step as just written by this transaction.
    fn remember_step(&self, step_key: &str, step: &Map<String, Value>) {
        let (_, step_id) = split_key(step_key);
        let mut memo = self.step_memo.borrow_mut();
        match StepState::parse(&location("workflow_steps", step_id), step) {
            Ok(state) => memo.insert(step_key.to_string(), Some(state)),
            Err(_) => memo.remove(step_key),
        };
    }

    fn note<T>(&self, r: std::result::Result<T, tokio_postgres::Error>) -> Result<T> {
        r.map_err(|e| {
            let err = super::dberr::db_err(e);
            self.failed
                .borrow_mut()
                .get_or_insert_with(|| err.to_string());
            err
        })
    }

    fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let r = self.tx.borrow_mut().query_opt(sql, params);
        self.note(r)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let r = self.tx.borrow_mut().execute(sql, params);
        self.note(r)
    }

    /// This transaction's commit does not wait for its WAL to reach the disk: for a batch
    /// that only records that work began (see [`crate::journal::records_only_beginnings`]).
    /// PostgreSQL writes the WAL in order, so the next synchronous commit of the run (its
    /// step's outcome, which the workflow waits for) makes this one durable too; until
    /// then a crash of the server or the machine may lose it — and the step runs again, as
    /// a step in flight at a crash does. What anyone is told (an outcome, a result, a
    /// started run) is never committed this way.
    pub(crate) fn commit_without_flush(&self) -> Result<()> {
        const SQL: &str = "SET LOCAL synchronous_commit TO OFF";
        self.write(SQL, SQL, Vec::new()).map(|_| ())
    }

    pub(crate) fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        const SQL: &str = "SELECT pg_notify($1, $2)";
        self.write(SQL, SQL, params![channel.to_string(), payload.to_string()])
            .map(|_| ())
    }

    /// Takes the lease of a run created in this transaction for `owner` (see
    /// `pg::engine::acquire_lease`); its fencing token, `None` if a live lease is there.
    pub(crate) fn take_lease(&self, run_id: &str, owner: &str, ttl_ms: i32) -> Result<Option<i64>> {
        if self.mode == Mode::Pipelined {
            // a new run has no lease row yet: the first take, token 1 (a row there fails
            // the transaction, which is then run again and takes it as below)
            const FIRST: &str =
                "INSERT INTO workflow_native.leases (run_id, owner, token, ttl_ms, expires_at)
                 VALUES ($1, $2, 1, $3::integer, now() + $3::integer * interval '1 millisecond')";
            self.write(
                FIRST,
                FIRST,
                params![run_id.to_string(), owner.to_string(), ttl_ms],
            )?;
            return Ok(Some(1));
        }
        Ok(self
            .query_opt(
                "INSERT INTO workflow_native.leases AS l (run_id, owner, token, ttl_ms, expires_at)
                 VALUES ($1, $2, 1, $3::integer, now() + $3::integer * interval '1 millisecond')
                 ON CONFLICT (run_id) DO UPDATE SET
                   owner = EXCLUDED.owner, token = l.token + 1, ttl_ms = EXCLUDED.ttl_ms,
                   expires_at = EXCLUDED.expires_at, updated_at = now()
                 WHERE l.owner = '' OR l.expires_at < now()
                 RETURNING token",
                &[&run_id, &owner, &ttl_ms],
            )?
            .map(|r| r.get(0)))
    }

    /// Commits, unless a statement failed (then the transaction is rolled back).
    /// `Replay` when a queued write failed: nothing was written.
    pub(crate) fn finish(self, run_id: Option<&str>) -> Result<Finished> {
        let failed = self.failed.borrow_mut().take();
        if self.tx.borrow().deferred_failed() {
            let _ = self.tx.borrow_mut().rollback();
            return Ok(Finished::Replay);
        }
        if let Some(why) = failed {
            let _ = self.tx.borrow_mut().rollback();
            return Err(Error::Database {
                message: format!("PostgreSQL: the event was not stored: {why}"),
                sqlstate: None,
            });
        }
        let committed = self.tx.borrow_mut().commit();
        match committed {
            Ok(()) => Ok(Finished::Committed(match (self.mode, run_id) {
                (Mode::Pipelined, Some(r)) => self.snapshot(r).map(Box::new),
                _ => None,
            })),
            Err(_) if self.tx.borrow().deferred_failed() => Ok(Finished::Replay),
            Err(e) => Err(super::dberr::db_err(e)),
        }
    }

    pub(crate) fn abort(self) {
        let _ = self.tx.into_inner().rollback();
    }

    fn insert_wait(&self, wait: &Map<String, Value>, key: &str) -> Result<bool> {
        let (run_id, _) = split_key(key);
        const COLS: &str = "INSERT INTO workflow.workflow_waits (wait_id, run_id, status, resume_at, created_at, updated_at, spec_version)
             VALUES ($1, $2, $3::text::workflow.wait_status, $4, $5, $6, $7)";
        let n = self.write(
            &format!("{COLS} ON CONFLICT DO NOTHING"),
            COLS,
            params![
                key.to_string(),
                run_id.to_string(),
                wait.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("waiting")
                    .to_string(),
                rows::ts(wait.get("resumeAt")),
                rows::ts(wait.get("createdAt")),
                rows::ts(wait.get("updatedAt")),
                rows::spec_int(wait.get("specVersion")),
            ],
        )?;
        Ok(n.is_none_or(|n| n == 1))
    }
}

/// The values of a step row's INSERT, in its column order (`run_id`, `step_id`,
/// `step_name`, `status`, `input_cbor`, `attempt`, `created_at`, `updated_at`,
/// `spec_version`).
fn step_insert_params(run_id: &str, step_id: &str, step: &Map<String, Value>) -> Params {
    params![
        run_id.to_string(),
        step_id.to_string(),
        s(step, "stepName").to_string(),
        s(step, "status").to_string(),
        rows::cbor(step.get("input"), &[]),
        step.get("attempt").and_then(Value::as_f64).unwrap_or(0.0) as i32,
        rows::ts(step.get("createdAt")),
        rows::ts(step.get("updatedAt")),
        rows::spec_int(step.get("specVersion")),
    ]
}

fn s<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

impl EventStore for PgStore<'_> {
    fn event_id_prefix(&self) -> &'static str {
        "wevt"
    }

    fn transactional(&self) -> bool {
        true
    }

    fn transitions_need_the_run(&self) -> bool {
        true
    }

    fn run_location(&self, run_id: &str) -> Result<PathBuf> {
        Ok(location("workflow_runs", run_id))
    }

    fn load_run(&self, run_id: &str) -> Result<Option<RunState>> {
        if let Some((id, run)) = &*self.run_memo.borrow() {
            if id == run_id {
                return Ok(run.clone());
            }
        }
        let row = self.query_opt(&run_read_sql(), &[&run_id])?;
        self.note_xmin(run_id, row.as_ref());
        let run = match row {
            None => None,
            Some(row) => {
                let v = rows::run_json(&row)?;
                Some(RunState::parse(&location("workflow_runs", run_id), &v)?)
            }
        };
        *self.run_memo.borrow_mut() = Some((run_id.to_string(), run.clone()));
        Ok(run)
    }

    fn create_run(&self, run_id: &str, run: &Map<String, Value>, _implicit: bool) -> Result<bool> {
        const SQL: &str =
            "INSERT INTO workflow.workflow_runs (id, deployment_id, status, name, spec_version,
                input_cbor, execution_context_cbor, created_at, updated_at)
             VALUES ($1, $2, $3::text::workflow.status, $4, $5, $6, $7, $8, $9)";
        let n = self.write_row(
            &format!("{SQL} ON CONFLICT DO NOTHING"),
            SQL,
            params![
                run_id.to_string(),
                s(run, "deploymentId").to_string(),
                s(run, "status").to_string(),
                s(run, "workflowName").to_string(),
                rows::spec_text(run.get("specVersion")),
                rows::cbor(run.get("input"), &[]),
                rows::cbor(run.get("executionContext"), &[]),
                rows::ts(run.get("createdAt")),
                rows::ts(run.get("updatedAt")),
            ],
            Some(run_id),
        )?;
        let created = n.is_none_or(|n| n == 1);
        if created {
            self.remember_run(run_id, run);
        } else {
            self.run_memo.borrow_mut().take();
        }
        Ok(created)
    }

    fn replace_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()> {
        const SQL: &str = "UPDATE workflow.workflow_runs SET status = $2::text::workflow.status,
                output_cbor = $3, error_cbor = $4, started_at = $5, completed_at = $6,
                expired_at = $7, updated_at = $8
             WHERE id = $1";
        self.write_row(
            SQL,
            SQL,
            params![
                run_id.to_string(),
                s(run, "status").to_string(),
                rows::cbor(run.get("output"), &[]),
                rows::error_cbor(run.get("error"), &["message", "stack", "code"]),
                rows::ts(run.get("startedAt")),
                rows::ts(run.get("completedAt")),
                rows::ts(run.get("expiredAt")),
                rows::ts(run.get("updatedAt")),
            ],
            Some(run_id),
        )?;
        self.remember_run(run_id, run);
        Ok(())
    }

    fn delete_hooks_of_run(&self, run_id: &str) -> Result<()> {
        const SQL: &str = "DELETE FROM workflow.workflow_hooks WHERE run_id = $1";
        self.write(SQL, SQL, params![run_id.to_string()])
            .map(|_| ())
    }

    fn delete_waits_of_run(&self, run_id: &str) -> Result<()> {
        const SQL: &str = "DELETE FROM workflow.workflow_waits WHERE run_id = $1";
        self.write(SQL, SQL, params![run_id.to_string()])
            .map(|_| ())
    }

    fn load_step(&self, step_key: &str) -> Result<Option<StepState>> {
        if let Some(step) = self.step_memo.borrow().get(step_key) {
            return Ok(step.clone());
        }
        let (run_id, step_id) = split_key(step_key);
        let row = self.query_opt(&step_read_sql(), &[&step_id, &run_id])?;
        self.note_xmin(step_key, row.as_ref());
        let step = match row {
            None => None,
            Some(row) => {
                let m = rows::step_json(&row)?;
                Some(StepState::parse(&location("workflow_steps", step_id), &m)?)
            }
        };
        self.step_memo
            .borrow_mut()
            .insert(step_key.to_string(), step.clone());
        Ok(step)
    }

    fn create_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        let (run_id, step_id) = split_key(step_key);
        const SQL: &str =
            "INSERT INTO workflow.workflow_steps (run_id, step_id, step_name, status, input_cbor,
                attempt, created_at, updated_at, spec_version)
             VALUES ($1, $2, $3, $4::text::workflow.step_status, $5, $6, $7, $8, $9)";
        let n = self.write_row(
            &format!("{SQL} ON CONFLICT DO NOTHING"),
            SQL,
            step_insert_params(run_id, step_id, step),
            Some(step_key),
        )?;
        if n == Some(0) {
            self.step_memo.borrow_mut().remove(step_key);
            return Err(Error::EntityConflict(format!(
                "Step \"{step_id}\" already exists"
            )));
        }
        // read back as written (the step_started of the same batch reads it next)
        self.remember_step(step_key, step);
        Ok(())
    }

    fn replace_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        let (run_id, step_id) = split_key(step_key);
        if self.mode == Mode::Pipelined && self.failed.borrow().is_none() {
            // A step created by this transaction whose INSERT has not gone out yet (its
            // step_started in the same batch, the usual case) is inserted as it is now,
            // instead of inserted and then updated: the same row, one statement and one
            // row version fewer.
            const INSERT: &str =
                "INSERT INTO workflow.workflow_steps (run_id, step_id, step_name, status,
                    input_cbor, attempt, created_at, updated_at, spec_version, output_cbor,
                    error_cbor, started_at, completed_at, retry_after)
                 VALUES ($1, $2, $3, $4::text::workflow.step_status, $5, $6, $7, $8, $9, $10,
                    $11, $12, $13, $14) RETURNING xmin::text";
            let whole = Deferred {
                sql: INSERT.to_string(),
                params: {
                    let mut p = step_insert_params(run_id, step_id, step);
                    p.extend(params![
                        rows::cbor(step.get("output"), &[]),
                        rows::error_cbor(step.get("error"), &["message", "stack"]),
                        rows::ts(step.get("startedAt")),
                        rows::ts(step.get("completedAt")),
                        rows::ts(step.get("retryAfter")),
                    ]);
                    p
                },
                capture: Some(step_key.to_string()),
            };
            if self.tx.borrow_mut().requeue_insert(step_key, whole) {
                self.remember_step(step_key, step);
                return Ok(());
            }
        }
        const SQL: &str =
            "UPDATE workflow.workflow_steps SET status = $3::text::workflow.step_status,
                output_cbor = $4, error_cbor = $5, attempt = $6, started_at = $7,
                completed_at = $8, updated_at = $9, retry_after = $10
             WHERE step_id = $1 AND run_id = $2";
        self.write_row(
            SQL,
            SQL,
            params![
                step_id.to_string(),
                run_id.to_string(),
                s(step, "status").to_string(),
                rows::cbor(step.get("output"), &[]),
                rows::error_cbor(step.get("error"), &["message", "stack"]),
                step.get("attempt").and_then(Value::as_f64).unwrap_or(0.0) as i32,
                rows::ts(step.get("startedAt")),
                rows::ts(step.get("completedAt")),
                rows::ts(step.get("updatedAt")),
                rows::ts(step.get("retryAfter")),
            ],
            Some(step_key),
        )?;
        self.remember_step(step_key, step);
        Ok(())
    }

    fn hook_exists(&self, hook_id: &str) -> Result<bool> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM workflow.workflow_hooks WHERE hook_id = $1 FOR UPDATE",
                &[&hook_id],
            )?
            .is_some())
    }

    fn claim_token(
        &self,
        token: &str,
        claim: &Map<String, Value>,
        hook_id_text: &str,
    ) -> Result<TokenClaim> {
        // Held to commit: the hook row written after this claim is the token's only holder.
        self.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('wfn-token:' || $1, 0))",
            &[&token],
        )?;
        let holder = self.query_opt(
            "SELECT hook_id, run_id FROM workflow.workflow_hooks WHERE token = $1 LIMIT 1 FOR UPDATE",
            &[&token],
        )?;
        let Some(row) = holder else {
            return Ok(TokenClaim::Claimed);
        };
        let (hook_id, run_id): (String, String) = (row.get(0), row.get(1));
        if run_id == s(claim, "runId") && hook_id == hook_id_text {
            let created = self.query_opt(
                "SELECT id FROM workflow.workflow_events
                 WHERE run_id = $1 AND correlation_id = $2 AND type = 'hook_created' LIMIT 1",
                &[&run_id, &hook_id],
            )?;
            return match created {
                // world-postgres: the same hook twice is a conflict, not a retry
                Some(_) => Err(crate::machine::hooks::already_created(hook_id_text)),
                // a hook row without its event (an interrupted writer): take it over
                None => {
                    self.delete_hook(&hook_id)?;
                    Ok(TokenClaim::Claimed)
                }
            };
        }
        Ok(TokenClaim::Taken {
            run_id: Some(run_id),
        })
    }

    fn write_hook(&self, hook_id: &str, hook: &Map<String, Value>, overwrite: bool) -> Result<()> {
        if overwrite {
            self.delete_hook(hook_id)?;
        }
        const SQL: &str =
            "INSERT INTO workflow.workflow_hooks (run_id, hook_id, token, owner_id, project_id,
                environment, created_at, metadata_cbor, spec_version, is_webhook)
             VALUES ($1, $2, $3, '', '', '', $4, $5, $6, $7)";
        let n = self.write(
            &format!("{SQL} ON CONFLICT DO NOTHING"),
            SQL,
            params![
                s(hook, "runId").to_string(),
                hook_id.to_string(),
                s(hook, "token").to_string(),
                rows::ts(hook.get("createdAt")),
                rows::cbor(hook.get("metadata"), &[]),
                rows::spec_int(hook.get("specVersion")),
                hook.get("isWebhook").and_then(Value::as_bool),
            ],
        )?;
        if n == Some(0) {
            // another run's hook has this id: the event must not commit without its hook
            let msg = format!("Hook \"{hook_id}\" already exists");
            self.failed.borrow_mut().get_or_insert_with(|| msg.clone());
            return Err(Error::EntityConflict(msg));
        }
        Ok(())
    }

    fn delete_hook(&self, hook_id: &str) -> Result<()> {
        const SQL: &str = "DELETE FROM workflow.workflow_hooks WHERE hook_id = $1";
        self.write(SQL, SQL, params![hook_id.to_string()])
            .map(|_| ())
    }

    fn repair_hook(&self, _run_id: &str, _hook_id: &str, _event_id: &str) -> Result<()> {
        // The hook row and its event commit together: nothing to repair.
        Ok(())
    }

    fn load_wait(&self, wait_key: &str) -> Result<Option<Map<String, Value>>> {
        let sql = format!(
            "SELECT {} FROM workflow.workflow_waits WHERE wait_id = $1 FOR UPDATE",
            rows::WAIT_COLS
        );
        match self.query_opt(&sql, &[&wait_key])? {
            None => Ok(None),
            Some(row) => crate::machine::entities::parse_wait(
                &location("workflow_waits", wait_key),
                &rows::wait_json(&row),
            )
            .map(Some),
        }
    }

    fn create_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        if !self.insert_wait(wait, wait_key)? {
            return Err(Error::EntityConflict(format!(
                "Wait \"{wait_key}\" already exists"
            )));
        }
        Ok(())
    }

    fn replace_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        const SQL: &str =
            "UPDATE workflow.workflow_waits SET status = $2::text::workflow.wait_status,
                completed_at = $3, updated_at = $4
             WHERE wait_id = $1";
        self.write(
            SQL,
            SQL,
            params![
                wait_key.to_string(),
                s(wait, "status").to_string(),
                rows::ts(wait.get("completedAt")),
                rows::ts(wait.get("updatedAt")),
            ],
        )
        .map(|_| ())
    }

    fn remove_entity(&self, kind: Entity, key: &str) -> Result<()> {
        // Only the file backend's undo log calls this; a transaction rolls back instead.
        let (run_id, id) = split_key(key);
        let r = match kind {
            Entity::Run => {
                self.run_memo.borrow_mut().take();
                self.execute("DELETE FROM workflow.workflow_runs WHERE id = $1", &[&key])
            }
            Entity::Step => {
                self.step_memo.borrow_mut().remove(key);
                self.execute(
                    "DELETE FROM workflow.workflow_steps WHERE step_id = $1 AND run_id = $2",
                    &[&id, &run_id],
                )
            }
            Entity::Wait => self.execute(
                "DELETE FROM workflow.workflow_waits WHERE wait_id = $1",
                &[&key],
            ),
        };
        r.map(|_| ())
    }

    fn claim_once(&self, marker: &Once) -> Result<bool> {
        // The rows are locked and their state checked by the rules: only a completed
        // wait needs its own answer (the file backend keeps a marker for it).
        match marker {
            Once::WaitCompleted(key) => Ok(self
                .query_opt(
                    "SELECT status::text FROM workflow.workflow_waits WHERE wait_id = $1 FOR UPDATE",
                    &[key],
                )?
                .map(|r| r.get::<_, String>(0))
                .as_deref()
                != Some("completed")),
            Once::HookDisposed(hook_id) => self.hook_exists(hook_id),
            Once::StepTerminal(_) => Ok(true),
        }
    }

    fn release_once(&self, _marker: &Once) -> Result<()> {
        Ok(())
    }

    fn store_event(&self, run_id: &str, event_id: &str, event: &Map<String, Value>) -> Result<()> {
        if self.publish_event(run_id, event_id, event)? {
            Ok(())
        } else {
            Err(Error::EntityConflict(format!(
                "Event {event_id} could not be created"
            )))
        }
    }

    fn publish_event(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<bool> {
        let ty = s(event, "eventType");
        // run_started stores no event data (world-postgres drops it)
        let data = if ty == "run_started" {
            None
        } else {
            rows::cbor(event.get("eventData"), &rows::EVENT_DATE_KEYS)
        };
        const SQL: &str = "INSERT INTO workflow.workflow_events (id, type, correlation_id, created_at, run_id, payload_cbor, spec_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let params = params![
            event_id.to_string(),
            ty.to_string(),
            event
                .get("correlationId")
                .and_then(Value::as_str)
                .map(str::to_string),
            rows::ts(event.get("createdAt")),
            run_id.to_string(),
            data,
            rows::spec_int(event.get("specVersion")),
        ];
        if self.mode == Mode::Pipelined {
            // (a duplicate fails the transaction; run again, it is answered below)
            self.write(SQL, SQL, params)?;
            return Ok(true);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let r = self.tx.borrow_mut().query_opt(
            &format!("{SQL} ON CONFLICT (id) DO NOTHING RETURNING id"),
            &refs,
        );
        match r {
            Ok(row) => Ok(row.is_some()),
            Err(e)
                if super::dberr::is_unique_violation(
                    &e,
                    "workflow_events_entity_creation_unique",
                ) =>
            {
                self.failed
                    .borrow_mut()
                    .get_or_insert_with(|| "duplicate entity creation".into());
                let what = match ty {
                    "step_created" => "Step",
                    "hook_created" => "Hook",
                    _ => "Wait",
                };
                Err(Error::EntityConflict(format!(
                    "{what} \"{}\" already exists",
                    s(event, "correlationId")
                )))
            }
            Err(e) => self.note(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_split_at_the_first_dash() {
        assert_eq!(
            super::split_key("wrun_01AB-step_01CD"),
            ("wrun_01AB", "step_01CD")
        );
        assert_eq!(super::split_key("wrun_01AB-a-b"), ("wrun_01AB", "a-b"));
    }
}
