//! Waiting for runs to become terminal (`run.returnValue`) at no thread and no poll per
//! waiter: one registry per world holds every waiter, keyed by run id. The world's change
//! feed tells it which run files changed (inotify, on the watcher's own thread); one task
//! re-reads only those, in one blocking call per batch, and answers their waiters. A
//! backstop sweep over the waited runs (for file systems without change events, such as
//! network mounts, and for lost events) looks at each file's metadata and re-reads only
//! the files that changed.
//!
//! So 10,000 pending `returnValue`s cost 10,000 small entries in a map, one task, and at
//! most one blocking thread while a batch is read.

use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::model::RunSnapshot;
use crate::world::watch::{ChangeFeed, RunListener, Topic, BACKSTOP_UNWATCHED, BACKSTOP_WATCHED};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{oneshot, Notify};

/// Reads one run file with its data (`runs.get(runId, { resolveData: 'all' })`), blocking.
pub type RunReader = fn(&Path, &str) -> Result<RunSnapshot>;

type Reply = oneshot::Sender<Result<RunSnapshot>>;

/// What identifies one version of a run file: world-local replaces run files by rename,
/// so a new version has a new inode (and usually another size and mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
    #[cfg(not(unix))]
    {
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        Some(Stamp {
            dev: 0,
            ino: 0,
            len: m.len(),
            mtime_ns,
        })
    }
}

/// The waiters of one run.
struct Waiting {
    replies: Vec<Reply>,
    /// The run file as last read (non-terminal); a sweep skips it while it is unchanged.
    seen: Option<Stamp>,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, Waiting>,
    /// Runs to re-read now: new waiters, and runs whose file the feed saw change.
    dirty: HashSet<String>,
    /// Whether the worker task is alive.
    worker: bool,
}

/// One run to look at in a batch.
struct Check {
    run_id: String,
    /// How many waiters it had when the batch was taken.
    waiters: usize,
    /// `Some`: a sweep, skip the read if the file still has this stamp.
    unless: Option<Option<Stamp>>,
}

/// What a batch found about one run.
enum Found {
    /// A sweep found the file unchanged.
    Unchanged,
    /// Not terminal yet; the stamp of the version read.
    Pending(Option<Stamp>),
    Terminal(Box<RunSnapshot>),
    /// The read failed: one outcome per waiter (each read anew, since errors are not
    /// `Clone`), in waiter order.
    Failed(Vec<Result<RunSnapshot>>),
}

/// The registry of `returnValue` waiters of one world.
pub struct TerminalWaiters {
    root: PathBuf,
    runs_dir: PathBuf,
    read: RunReader,
    feed: Arc<ChangeFeed>,
    state: Mutex<State>,
    wake: Notify,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl RunListener for TerminalWaiters {
    fn run_changed(&self, run_id: &str) {
        let mut st = lock(&self.state);
        if st.runs.contains_key(run_id) {
            st.dirty.insert(run_id.to_string());
            drop(st);
            self.wake.notify_one();
        }
    }

    fn all_changed(&self) {
        let mut st = lock(&self.state);
        let ids: Vec<String> = st.runs.keys().cloned().collect();
        st.dirty.extend(ids);
        drop(st);
        self.wake.notify_one();
    }
}

/// Ends the worker's tenure even if it panics: the flag is cleared and the waiters it
/// leaves behind are answered (their senders dropped: an internal error), so nothing
/// waits for a worker that is gone.
struct Tenure(Arc<TerminalWaiters>);

impl Drop for Tenure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = lock(&self.0.state);
            st.worker = false;
            st.runs.clear();
            st.dirty.clear();
        }
    }
}

impl TerminalWaiters {
    /// A registry for the world at `root`, told about run file changes by `feed`.
    pub fn new(root: &Path, feed: &Arc<ChangeFeed>, read: RunReader) -> Arc<TerminalWaiters> {
        let me = Arc::new(TerminalWaiters {
            root: root.to_path_buf(),
            runs_dir: root.join("runs"),
            read,
            feed: Arc::clone(feed),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        let weak: std::sync::Weak<TerminalWaiters> = Arc::downgrade(&me);
        feed.set_run_listener(weak);
        me
    }

    /// Resolves once the run is completed, failed or cancelled, with that snapshot (data
    /// included). Unknown runs and unreadable files fail at once, as the official poll's
    /// first `runs.get` does.
    pub async fn wait(self: &Arc<Self>, run_id: &str) -> Result<RunSnapshot> {
        assert_safe_entity_id("runId", run_id)?;
        // Watch first: a change after this point is either seen by the first read or
        // reported by the feed.
        self.feed.is_watching(Topic::Run);
        let (tx, rx) = oneshot::channel();
        let start_worker = {
            let mut st = lock(&self.state);
            st.runs
                .entry(run_id.to_string())
                .or_insert_with(|| Waiting {
                    replies: Vec::new(),
                    seen: None,
                })
                .replies
                .push(tx);
            st.dirty.insert(run_id.to_string());
            !std::mem::replace(&mut st.worker, true)
        };
        if start_worker {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(Arc::clone(self).work());
                }
                Err(_) => {
                    let mut st = lock(&self.state);
                    st.worker = false;
                    st.runs.remove(run_id);
                    st.dirty.remove(run_id);
                    return Err(Error::Plain(
                        "waiting for a run needs a Tokio runtime".into(),
                    ));
                }
            }
        } else {
            self.wake.notify_one();
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(Error::World(format!(
                "workflow-native internal error (a bug; please report it): the wait for run {run_id} was dropped"
            ))),
        }
    }

    /// How many waiters are registered (for tests and diagnostics).
    pub fn waiter_count(&self) -> usize {
        lock(&self.state)
            .runs
            .values()
            .map(|w| w.replies.len())
            .sum()
    }

    /// The worker: reads what changed, answers waiters, sweeps now and then; ends when
    /// nobody waits.
    async fn work(self: Arc<Self>) {
        let _tenure = Tenure(Arc::clone(&self));
        let mut next_sweep = Instant::now() + self.sweep_interval();
        loop {
            let now = Instant::now();
            let sweep = now >= next_sweep;
            let batch: Vec<Check> = {
                let mut st = lock(&self.state);
                // Waiters whose future was dropped go.
                st.runs.retain(|_, w| {
                    w.replies.retain(|r| !r.is_closed());
                    !w.replies.is_empty()
                });
                if st.runs.is_empty() {
                    st.dirty.clear();
                    st.worker = false;
                    return;
                }
                let dirty = std::mem::take(&mut st.dirty);
                if sweep {
                    st.runs
                        .iter()
                        .map(|(id, w)| Check {
                            run_id: id.clone(),
                            waiters: w.replies.len(),
                            unless: if dirty.contains(id) {
                                None
                            } else {
                                Some(w.seen)
                            },
                        })
                        .collect()
                } else {
                    dirty
                        .into_iter()
                        .filter_map(|id| {
                            st.runs.get(&id).map(|w| Check {
                                waiters: w.replies.len(),
                                run_id: id,
                                unless: None,
                            })
                        })
                        .collect()
                }
            };
            if sweep {
                next_sweep = now + self.sweep_interval();
            }
            if batch.is_empty() {
                let wait = next_sweep.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(wait, self.wake.notified()).await;
                continue;
            }
            let me = Arc::clone(&self);
            let found = match tokio::task::spawn_blocking(move || me.check_all(batch)).await {
                Ok(found) => found,
                // A panic while reading: answer everyone (the tenure guard cannot, the
                // panic did not unwind through this task).
                Err(e) => {
                    let what = match e.try_into_panic() {
                        Ok(p) => crate::error::panic_message(p.as_ref()),
                        Err(e) => e.to_string(),
                    };
                    let mut st = lock(&self.state);
                    for (_, w) in st.runs.drain() {
                        for r in w.replies {
                            let _ = r.send(Err(Error::World(format!(
                                "workflow-native internal error (a bug; please report it): reading run files failed: {what}"
                            ))));
                        }
                    }
                    st.dirty.clear();
                    continue;
                }
            };
            self.answer(found);
        }
    }

    fn sweep_interval(&self) -> std::time::Duration {
        if self.feed.is_watching(Topic::Run) {
            BACKSTOP_WATCHED
        } else {
            BACKSTOP_UNWATCHED
        }
    }

    /// Reads a batch (on a blocking thread).
    fn check_all(&self, batch: Vec<Check>) -> Vec<(String, Found)> {
        batch
            .into_iter()
            .map(|c| {
                let found = self.check(&c);
                (c.run_id, found)
            })
            .collect()
    }

    fn check(&self, c: &Check) -> Found {
        let path = self.runs_dir.join(format!("{}.json", c.run_id));
        let before = stamp(&path);
        if let Some(seen) = c.unless {
            if seen.is_some() && before == seen {
                return Found::Unchanged;
            }
        }
        match (self.read)(&self.root, &c.run_id) {
            Ok(snap) if snap.status.is_terminal() => Found::Terminal(Box::new(snap)),
            Ok(_) => Found::Pending(before),
            Err(first) => {
                let mut out = Vec::with_capacity(c.waiters.max(1));
                out.push(Err(first));
                for _ in 1..c.waiters {
                    out.push((self.read)(&self.root, &c.run_id));
                }
                Found::Failed(out)
            }
        }
    }

    fn answer(&self, found: Vec<(String, Found)>) {
        let mut st = lock(&self.state);
        for (run_id, f) in found {
            match f {
                Found::Unchanged => {}
                Found::Pending(stamp) => {
                    if let Some(w) = st.runs.get_mut(&run_id) {
                        w.seen = stamp;
                    }
                }
                Found::Terminal(snap) => {
                    // Terminal is final: waiters that came during the read get it too.
                    if let Some(w) = st.runs.remove(&run_id) {
                        for r in w.replies {
                            let _ = r.send(Ok((*snap).clone()));
                        }
                    }
                }
                Found::Failed(outcomes) => {
                    let Some(w) = st.runs.get_mut(&run_id) else {
                        continue;
                    };
                    // One outcome per waiter present when the batch was taken (the
                    // first ones; later waiters asked for their own read).
                    let taken: Vec<Reply> = w
                        .replies
                        .drain(..outcomes.len().min(w.replies.len()))
                        .collect();
                    let mut keep = Vec::new();
                    for (r, o) in taken.into_iter().zip(outcomes) {
                        match o {
                            Ok(s) if !s.status.is_terminal() => keep.push(r),
                            other => {
                                let _ = r.send(other);
                            }
                        }
                    }
                    let rest = std::mem::take(&mut w.replies);
                    w.replies = keep;
                    w.replies.extend(rest);
                    w.seen = None;
                    if w.replies.is_empty() {
                        st.runs.remove(&run_id);
                    }
                }
            }
        }
    }
}
