//! Synchronous connections for the engine's event batches. A batch runs the shared rules,
//! which call the store synchronously; on a pooled async connection each statement would
//! cross threads twice (the blocking thread hands it to the runtime that drives the
//! socket, and waits to be woken), which costs more than the statement itself on a local
//! server. A [`SyncConn`] drives its socket on the calling thread, on a single-threaded
//! runtime of its own, and prepares each statement once.
//!
//! Pipelining: statements whose answer the rules do not need (an entity written, an event
//! inserted, a notification) are not sent when the rules issue them but queued
//! ([`Sql::defer`]), and go out back to back with the next statement that needs an answer
//! — in the end, with the `COMMIT`: one round trip for all the writes of a batch. The
//! reads a batch will need (its run, its steps) are sent with the `BEGIN` (see
//! [`Pooled::begin`]). A queued statement that fails aborts the transaction, as it would
//! have right away; the caller learns which of them failed ([`Sql::deferred_failed`]).
//!
//! Used only from threads that may block (`spawn_blocking`), never from async code: a
//! connection's runtime must not be started or dropped on a runtime thread — idle
//! connections are dropped on a thread of their own.

use super::dberr::db_err;
use super::store::{Deferred, Sql};
use crate::error::{Error, Result};
use futures_util::future::join_all;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Poll;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, Statement};

type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// The task that reads and writes a connection's socket (`tokio_postgres::Connection`).
type Driver = Pin<Box<dyn Future<Output = PgResult<()>> + Send>>;

/// One connection, the runtime that drives it, and the statements prepared on it.
pub(crate) struct SyncConn {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// `None` once the connection ended
    driver: Option<Driver>,
    stmts: HashMap<String, Statement>,
}

impl SyncConn {
    fn connect(cfg: &tokio_postgres::Config, verify: bool) -> Result<SyncConn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Plain(format!("could not start a connection runtime: {e}")))?;
        let tls = if cfg.get_ssl_mode() == SslMode::Disable {
            None
        } else {
            Some(super::config::tls(verify)?)
        };
        let connected: PgResult<(tokio_postgres::Client, Driver)> = rt.block_on(async {
            Ok(match tls {
                None => {
                    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                    (client, Box::pin(conn) as Driver)
                }
                Some(tls) => {
                    let (client, conn) = cfg.connect(tls).await?;
                    (client, Box::pin(conn) as Driver)
                }
            })
        });
        let (client, driver) = connected.map_err(|e| Error::Database {
            message: format!("Could not connect to PostgreSQL for the engine's writes: {e}"),
            sqlstate: e.as_db_error().map(|d| d.code().code().to_string()),
        })?;
        Ok(SyncConn {
            rt,
            client,
            driver: Some(driver),
            stmts: HashMap::new(),
        })
    }

    /// Reads what the server sent while nobody used the connection (a termination
    /// notice, the end of the stream), without waiting.
    fn refresh(&mut self) {
        let SyncConn { rt, driver, .. } = self;
        let Some(d) = driver.as_mut() else { return };
        let ended = rt.block_on(async {
            // one turn of the runtime's I/O driver (with no wait) first: what arrived on
            // the socket is only seen through it
            tokio::task::yield_now().await;
            std::future::poll_fn(|cx| Poll::Ready(d.as_mut().poll(cx).is_ready())).await
        });
        if ended {
            *driver = None;
        }
    }

    fn is_closed(&self) -> bool {
        self.driver.is_none() || self.client.is_closed()
    }

    /// Runs `f` to completion on this thread, driving the socket meanwhile. Once the
    /// connection ended, its requests fail (they never hang).
    fn run<F: Future>(
        rt: &tokio::runtime::Runtime,
        driver: &mut Option<Driver>,
        f: F,
    ) -> F::Output {
        rt.block_on(async move {
            let mut f = std::pin::pin!(f);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    return Poll::Ready(v);
                }
                if let Some(d) = driver.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        // ended: dropping it fails every request still waiting
                        *driver = None;
                        return f.as_mut().poll(cx);
                    }
                }
                Poll::Pending
            })
            .await
        })
    }

    /// The statement for `sql`, prepared once per connection.
    fn prepare(&mut self, sql: &str) -> PgResult<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let SyncConn {
            rt, client, driver, ..
        } = self;
        let s = Self::run(rt, driver, client.prepare(sql))?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn simple(&mut self, sql: &str) -> PgResult<Vec<SimpleQueryMessage>> {
        let SyncConn {
            rt, client, driver, ..
        } = self;
        Self::run(rt, driver, client.simple_query(sql))
    }
}

/// At most `max` connections, made on demand; a caller waits for a free one.
pub(crate) struct SyncPool {
    /// One permit per connection, taken (asynchronously) before a blocking thread is
    /// used: callers beyond the pool's size wait as tasks, not as parked threads.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    cfg: tokio_postgres::Config,
    verify: bool,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
    /// Batches committed without waiting for their WAL flush (see
    /// `PgStore::commit_without_flush`), counted for operators and tests.
    pub(crate) unflushed_commits: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<SyncConn>,
    open: usize,
}

impl SyncPool {
    pub(crate) fn new(cfg: tokio_postgres::Config, verify: bool, max: usize) -> SyncPool {
        SyncPool {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            cfg,
            verify,
            max: max.max(1),
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            unflushed_commits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Waits (as a task) for a connection slot; hold it while using [`get`](Self::get).
    pub(crate) async fn reserve(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        std::sync::Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| Error::Plain("the PostgreSQL batch pool is closed".into()))
    }

    /// A connection slot if one is free now.
    pub(crate) fn try_reserve(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        std::sync::Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// A connection (blocks until one is free, or made: within the connect timeout; with a
    /// slot [`reserve`](Self::reserve)d, one is free or can be made).
    pub(crate) fn get(&self) -> Result<Pooled<'_>> {
        let mut st = self.lock();
        loop {
            if let Some(mut conn) = st.idle.pop() {
                // a connection the server ended while it was idle (a restart) is
                // noticed here, not by the batch that would have used it
                conn.refresh();
                if !conn.is_closed() {
                    return Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    });
                }
                st.open -= 1;
                drop_off_runtime(conn);
                continue;
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.connect() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            st = match self.freed.wait(st) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }

    fn connect(&self) -> Result<SyncConn> {
        SyncConn::connect(&self.cfg, self.verify)
    }

    fn put_back(&self, conn: SyncConn) {
        let mut st = self.lock();
        if conn.is_closed() {
            st.open -= 1;
            drop_off_runtime(conn);
        } else {
            st.idle.push(conn);
        }
        drop(st);
        self.freed.notify_one();
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        for conn in self.lock().idle.drain(..) {
            drop_off_runtime(conn);
        }
    }
}

/// Drops a connection where its own runtime may be dropped (not on a runtime thread).
fn drop_off_runtime(conn: SyncConn) {
    if tokio::runtime::Handle::try_current().is_err() {
        drop(conn);
        return;
    }
    let _ = std::thread::Builder::new()
        .name("workflow-native-pg-close".into())
        .spawn(move || drop(conn));
}

/// A connection lent by the pool (returned when dropped).
pub(crate) struct Pooled<'p> {
    pool: &'p SyncPool,
    conn: Option<SyncConn>,
}

/// Every event of a run is applied one at a time, also across processes.
const RUN_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('wfn-run:' || $1, 0))";
/// The run's lease, which a takeover updates (so it waits for this transaction).
const LEASE_READ: &str =
    "SELECT owner, token FROM workflow_native.leases WHERE run_id = $1 FOR SHARE";

/// A read sent ahead with [`Pooled::begin`]: its statement and its parameters.
pub(crate) type Prefetch = Deferred;

/// A lease row as read: its owner and fencing token.
pub(crate) type LeaseRow = Option<(String, i64)>;

impl Pooled<'_> {
    /// Begins a transaction on this connection; with `run_id`, also takes the run's
    /// advisory lock (every event of a run is applied one at a time) and reads its lease
    /// row locked `FOR SHARE` (see `pg::engine`), and sends the reads of `prefetch` — all
    /// in one round trip. Returns the lease (owner, token) and each read's row.
    pub(crate) fn begin(
        &mut self,
        run_id: Option<&str>,
        prefetch: Vec<Prefetch>,
    ) -> Result<(SyncTx<'_>, LeaseRow, Vec<Option<Row>>)> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Plain("the connection was returned".into()))?;
        let Some(run_id) = run_id else {
            conn.simple("BEGIN").map_err(db_err)?;
            return Ok((SyncTx::new(conn), None, Vec::new()));
        };
        let lock = conn.prepare(RUN_LOCK).map_err(db_err)?;
        let lease_read = conn.prepare(LEASE_READ).map_err(db_err)?;
        let id: &(dyn ToSql + Sync) = &run_id;
        let mut reqs = vec![
            Req::Simple("BEGIN".into()),
            Req::Execute(lock, vec![id]),
            Req::Query(lease_read, vec![id]),
        ];
        for p in &prefetch {
            reqs.push(Req::Query(conn.prepare(&p.sql).map_err(db_err)?, p.refs()));
        }
        let mut answers = pipeline(conn, reqs).into_iter();
        let mut lease = None;
        let mut first_err = None;
        for _ in 0..3 {
            match answers.next() {
                Some(Ok(Ans::Rows(rows))) => {
                    if let Some(row) = rows.first() {
                        lease = Some((
                            row.try_get(0).map_err(db_err)?,
                            row.try_get(1).map_err(db_err)?,
                        ));
                    }
                }
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                _ => {}
            }
        }
        let mut rows = Vec::with_capacity(prefetch.len());
        for a in answers {
            match a {
                Ok(Ans::Rows(r)) => rows.push(r.into_iter().next()),
                Ok(_) => rows.push(None),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            // (a failed statement leaves the transaction open, aborted)
            let _ = conn.simple("ROLLBACK");
            return Err(db_err(e));
        }
        Ok((SyncTx::new(conn), lease, rows))
    }

    /// A transaction on a run created by it (no lease, nothing to read yet) that costs
    /// no round trip of its own: its `BEGIN` and the run's advisory lock are queued, and
    /// go out with its first statement that needs an answer, or its commit.
    pub(crate) fn begin_queued(&mut self, run_id: &str) -> Result<SyncTx<'_>> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Plain("the connection was returned".into()))?;
        let mut tx = SyncTx::new(conn);
        tx.queued.push(Deferred {
            sql: "BEGIN".into(),
            params: Vec::new(),
            capture: None,
        });
        tx.queued.push(Deferred {
            sql: RUN_LOCK.into(),
            params: vec![Box::new(run_id.to_string())],
            capture: None,
        });
        Ok(tx)
    }
}

/// A request of a pipeline.
enum Req<'a> {
    Simple(String),
    Query(Statement, Vec<&'a (dyn ToSql + Sync)>),
    Execute(Statement, Vec<&'a (dyn ToSql + Sync)>),
}

enum Ans {
    Simple,
    Rows(Vec<Row>),
    Count(u64),
}

/// Sends `reqs` back to back (each goes out when its future is first polled, in order)
/// and collects every answer, in order.
fn pipeline(conn: &mut SyncConn, reqs: Vec<Req<'_>>) -> Vec<PgResult<Ans>> {
    let SyncConn {
        rt, client, driver, ..
    } = conn;
    let client = &*client;
    type Fut<'f> = Pin<Box<dyn Future<Output = PgResult<Ans>> + 'f>>;
    let futs: Vec<Fut<'_>> = reqs
        .iter()
        .map(|r| -> Fut<'_> {
            match r {
                Req::Simple(sql) => {
                    Box::pin(async move { client.simple_query(sql).await.map(|_| Ans::Simple) })
                }
                Req::Query(st, p) => {
                    Box::pin(async move { client.query(st, p).await.map(Ans::Rows) })
                }
                Req::Execute(st, p) => {
                    Box::pin(async move { client.execute(st, p).await.map(Ans::Count) })
                }
            }
        })
        .collect();
    SyncConn::run(rt, driver, join_all(futs))
}

impl Pooled<'_> {
    /// Closes this connection instead of returning it to the pool (after a failure that
    /// may have left it unusable: the server ending it is not always seen at once).
    pub(crate) fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().open -= 1;
            drop_off_runtime(conn);
            self.pool.freed.notify_one();
        }
    }

    /// One statement on its own (no transaction): its row, if any.
    pub(crate) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Plain("the connection was returned".into()))?;
        let stmt = conn.prepare(sql).map_err(db_err)?;
        let SyncConn {
            rt, client, driver, ..
        } = conn;
        SyncConn::run(rt, driver, client.query_opt(&stmt, params)).map_err(db_err)
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

/// An open transaction (rolled back when dropped unfinished), with the statements
/// queued for the next round trip.
pub(crate) struct SyncTx<'c> {
    conn: &'c mut SyncConn,
    queued: Vec<Deferred>,
    deferred_failed: bool,
    /// what the queued writes with a capture key returned: (key, xmin)
    captured: Vec<(String, String)>,
    done: bool,
}

impl<'c> SyncTx<'c> {
    fn new(conn: &'c mut SyncConn) -> SyncTx<'c> {
        SyncTx {
            conn,
            queued: Vec::new(),
            deferred_failed: false,
            captured: Vec::new(),
            done: false,
        }
    }

    /// Sends the queued statements and then `last` in one round trip: `last`'s answer,
    /// or the error of the first queued statement that failed (the transaction is
    /// aborted then, and `deferred_failed` set).
    fn flush_with(&mut self, last: Req<'_>) -> PgResult<Ans> {
        let queued = std::mem::take(&mut self.queued);
        let mut stmts = Vec::with_capacity(queued.len());
        for q in &queued {
            match self.conn.prepare(&q.sql) {
                Ok(st) => stmts.push(st),
                Err(e) => {
                    // the queued writes are dropped: the transaction must not commit
                    self.deferred_failed = true;
                    return Err(e);
                }
            }
        }
        let mut reqs: Vec<Req<'_>> = queued
            .iter()
            .zip(stmts)
            .map(|(q, st)| match q.capture {
                Some(_) => Req::Query(st, q.refs()),
                None => Req::Execute(st, q.refs()),
            })
            .collect();
        reqs.push(last);
        let mut answers = pipeline(self.conn, reqs).into_iter();
        for q in &queued {
            match answers.next() {
                Some(Err(e)) => {
                    self.deferred_failed = true;
                    return Err(e);
                }
                Some(Ok(Ans::Rows(rows))) => {
                    let xmin = rows.first().and_then(|r| r.try_get::<_, String>(0).ok());
                    if let (Some(key), Some(xmin)) = (&q.capture, xmin) {
                        self.captured.push((key.clone(), xmin));
                    }
                }
                _ => {}
            }
        }
        match answers.next() {
            Some(a) => a,
            None => Ok(Ans::Count(0)),
        }
    }

    fn end(&mut self, sql: &str) -> PgResult<()> {
        self.done = true;
        self.conn.simple(sql).map(|_| ())
    }
}

impl Drop for SyncTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.end("ROLLBACK");
        }
    }
}

impl Sql for SyncTx<'_> {
    fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<Option<Row>> {
        let st = self.conn.prepare(sql)?;
        match self.flush_with(Req::Query(st, params.to_vec()))? {
            Ans::Rows(rows) => Ok(rows.into_iter().next()),
            _ => Ok(None),
        }
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<u64> {
        let st = self.conn.prepare(sql)?;
        match self.flush_with(Req::Execute(st, params.to_vec()))? {
            Ans::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    fn defer(&mut self, statement: Deferred) {
        self.queued.push(statement);
    }

    fn requeue_insert(&mut self, key: &str, statement: Deferred) -> bool {
        let queued = self
            .queued
            .iter_mut()
            .rev()
            .find(|q| q.capture.as_deref() == Some(key));
        match queued {
            Some(q) if q.sql.trim_start().starts_with("INSERT") => {
                *q = statement;
                true
            }
            _ => false,
        }
    }

    fn deferred_failed(&self) -> bool {
        self.deferred_failed
    }

    fn take_captured(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.captured)
    }

    /// The queued statements and the `COMMIT` in one round trip. After a failed queued
    /// statement the server answers the `COMMIT` with a rollback: nothing is written.
    fn commit(&mut self) -> PgResult<()> {
        self.done = true;
        let r = self.flush_with(Req::Simple("COMMIT".into())).map(|_| ());
        if r.is_err() && !self.conn.is_closed() {
            // ends the transaction when the COMMIT was never sent (nothing else to do)
            let _ = self.conn.simple("ROLLBACK");
        }
        r
    }

    fn rollback(&mut self) -> PgResult<()> {
        self.queued.clear();
        self.end("ROLLBACK")
    }
}
