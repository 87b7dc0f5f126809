//! Synchronous connections for the engine's event batches. A batch runs the shared rules,
//! which call the store synchronously, statement by statement; on a pooled async
//! connection each statement crosses threads twice (the blocking thread hands it to the
//! runtime that drives the socket, and waits to be woken), which costs more than the
//! statement itself on a local server. A `postgres::Client` drives its socket on the
//! calling thread: one round trip per statement and no thread hop. Its statements are
//! prepared once per connection.
//!
//! Used only from threads that may block (`spawn_blocking`), never from async code: a
//! `postgres::Client` runs a runtime of its own, which must not be started or dropped on
//! a runtime thread — idle connections are dropped on a thread of their own.

use super::dberr::db_err;
use super::store::Sql;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// One connection and the statements prepared on it.
pub(crate) struct SyncConn {
    client: postgres::Client,
    stmts: HashMap<String, postgres::Statement>,
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

    /// A connection (blocks until one is free, or made: within the connect timeout; with a
    /// slot [`reserve`](Self::reserve)d, one is free or can be made).
    pub(crate) fn get(&self) -> Result<Pooled<'_>> {
        let mut st = self.lock();
        loop {
            if let Some(conn) = st.idle.pop() {
                if !conn.client.is_closed() {
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
        let cfg = postgres::Config::from(self.cfg.clone());
        let client = if self.cfg.get_ssl_mode() == SslMode::Disable {
            cfg.connect(tokio_postgres::NoTls)
        } else {
            cfg.connect(super::config::tls(self.verify)?)
        }
        .map_err(|e| {
            Error::Plain(format!(
                "Could not connect to PostgreSQL for the engine's writes: {e}"
            ))
        })?;
        Ok(SyncConn {
            client,
            stmts: HashMap::new(),
        })
    }

    fn put_back(&self, conn: SyncConn) {
        let mut st = self.lock();
        if conn.client.is_closed() {
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

impl Pooled<'_> {
    /// Begins a transaction on this connection; with `run_id`, also takes the run's
    /// advisory lock (every event of a run is applied one at a time) and reads its lease
    /// row locked `FOR SHARE` (see `pg::engine`) — all in one round trip.
    pub(crate) fn begin(
        &mut self,
        run_id: Option<&str>,
    ) -> Result<(SyncTx<'_>, Option<(String, i64)>)> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Plain("the connection was returned".into()))?;
        let SyncConn { client, stmts } = conn;
        let mut lease = None;
        match run_id {
            None => client.batch_execute("BEGIN").map_err(db_err)?,
            Some(run_id) => {
                let lit = postgres_protocol::escape::escape_literal(run_id);
                let sql = format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('wfn-run:' || {lit}, 0)); \
                     SELECT owner, token FROM workflow_native.leases WHERE run_id = {lit} FOR SHARE"
                );
                let msgs = match client.simple_query(&sql) {
                    Ok(m) => m,
                    Err(e) => {
                        // (a failed statement leaves the transaction open, aborted)
                        let _ = client.batch_execute("ROLLBACK");
                        return Err(db_err(e));
                    }
                };
                for m in msgs {
                    if let postgres::SimpleQueryMessage::Row(row) = m {
                        if row.len() == 2 {
                            let owner = row.get(0).unwrap_or_default().to_string();
                            let token = row.get(1).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
                            lease = Some((owner, token));
                        }
                    }
                }
            }
        }
        Ok((
            SyncTx {
                client,
                stmts,
                done: false,
            },
            lease,
        ))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

/// An open transaction (rolled back when dropped unfinished).
pub(crate) struct SyncTx<'c> {
    client: &'c mut postgres::Client,
    stmts: &'c mut HashMap<String, postgres::Statement>,
    done: bool,
}

impl SyncTx<'_> {
    fn statement(
        &mut self,
        sql: &str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn end(&mut self, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
        self.done = true;
        self.client.batch_execute(sql)
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
    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, tokio_postgres::Error> {
        let stmt = self.statement(sql)?;
        self.client.query_opt(&stmt, params)
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let stmt = self.statement(sql)?;
        self.client.execute(&stmt, params)
    }

    fn commit(mut self: Box<Self>) -> std::result::Result<(), tokio_postgres::Error> {
        self.end("COMMIT")
    }

    fn rollback(mut self: Box<Self>) -> std::result::Result<(), tokio_postgres::Error> {
        self.end("ROLLBACK")
    }
}
