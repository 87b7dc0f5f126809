//! One transaction of the shared rules on a batch connection ([`transact`]): how it
//! begins (reads, a new run, or where the execution's last one left the run), pipelined
//! first and run again statement by statement when a queued statement failed.

use super::store::{prefetch, Finished, Mode, PgStore, Snapshot};
use crate::error::{Error, Result};

/// How a transaction ([`transact`]) begins.
pub(crate) enum Start<'a> {
    /// It reads what it needs (the run and the named steps with its `BEGIN`).
    Read,
    /// It creates the run (a new id: no row, no lease): nothing to read.
    Fresh,
    /// It is the next of an execution holding the lease (`owner`, `token`) whose last
    /// transaction left `snap`.
    Cached {
        owner: &'a str,
        token: i64,
        snap: &'a Snapshot,
    },
}

/// What a transaction's body decided.
pub(crate) enum Decision<T> {
    Commit(T),
    Abort(T),
}

/// Runs `body` in one transaction on `conn`, [`Mode::Pipelined`]; when one of its queued
/// statements failed (a write that found its row there, a guard of a [`Start::Cached`]
/// start), once more [`Mode::Immediate`], begun with reads, where the rules see every
/// answer. `uncommitted` is told of a `Commit` whose commit failed (or that is run again).
/// With what the run's execution may start its next transaction from (see [`Snapshot`]).
///
/// How it begins, pipelined ([`Start`]): `Read` sends the run's and `step_ids`' reads
/// with its `BEGIN` ([`Pooled::begin`]) — two round trips in all; `Fresh` (the run is
/// created by it) and `Cached` read nothing and are one round trip in all.
///
/// [`Pooled::begin`]: super::sync::Pooled::begin
pub(crate) fn transact<T>(
    conn: &mut super::sync::Pooled<'_>,
    run_id: Option<&str>,
    step_ids: &[String],
    start: Start<'_>,
    mut body: impl FnMut(&PgStore<'_>, Option<(String, i64)>) -> Result<Decision<T>>,
    mut uncommitted: impl FnMut(&T),
) -> Result<(T, Option<Snapshot>)> {
    for mode in [Mode::Pipelined, Mode::Immediate] {
        let pipelined = mode == Mode::Pipelined;
        let (store, lease) = match (run_id, &start) {
            (Some(r), Start::Fresh) if pipelined => {
                let store = PgStore::over(Box::new(conn.begin_queued(r)?), mode);
                *store.run_memo.borrow_mut() = Some((r.to_string(), None));
                (store, None)
            }
            (Some(r), Start::Cached { owner, token, snap }) if pipelined => {
                let store = PgStore::over(Box::new(conn.begin_queued(r)?), mode)
                    .seeded(r, owner, *token, snap);
                (store, Some((owner.to_string(), *token)))
            }
            (Some(r), _) => {
                let (tx, lease, rows) = conn.begin(Some(r), prefetch(r, step_ids))?;
                (
                    PgStore::over(Box::new(tx), mode).prefetched(r, step_ids, rows),
                    lease,
                )
            }
            (None, _) => {
                let (tx, lease, _) = conn.begin(None, Vec::new())?;
                (PgStore::over(Box::new(tx), mode), lease)
            }
        };
        let decided = body(&store, lease);
        if store.replay_needed() {
            if let Ok(Decision::Commit(v)) = &decided {
                uncommitted(v);
            }
            store.abort();
            continue;
        }
        match decided {
            Err(e) => {
                store.abort();
                return Err(e);
            }
            Ok(Decision::Abort(v)) => {
                store.abort();
                return Ok((v, None));
            }
            Ok(Decision::Commit(v)) => match store.finish(run_id) {
                Ok(Finished::Committed(snap)) => return Ok((v, snap.map(|b| *b))),
                Ok(Finished::Replay) => uncommitted(&v),
                Err(e) => {
                    uncommitted(&v);
                    return Err(e);
                }
            },
        }
    }
    Err(Error::Plain(
        "PostgreSQL: a transaction's write failed twice".into(),
    ))
}
