//! The embedded engine's view of a run's event log: appends in batches and follows the
//! events *other* writers add.
//!
//! * [`Journal::append`] writes several events of one run in one blocking call, in order,
//!   through `events.create` (the same state machine as every other writer), stopping at
//!   the first refusal. The engine sends a step's closing event together with the next
//!   step's creation, so a step costs one call.
//! * [`Journal::follow`] gives a [`RunFollower`]: the run's new event files, as the change
//!   feed names them (no directory listing per change), minus the ones this journal wrote
//!   itself, so the engine is woken only by other writers (an API route resuming a hook,
//!   a `wakeUp()`, a `cancel()`, another process). A rescan of the run's files is the
//!   backstop when the kernel dropped notifications or none can be had.
//!
//! Telling own files from foreign ones without a race: a name is classified only once no
//! append of that run that had started when the name was seen is still running (an append
//! records the ids it wrote before it counts as done).

use crate::dirscan::for_each_name;
use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::machine::{
    self, Entity, EventResult, EventStore, Once, Request, RunState, StepState, TokenClaim,
};
use crate::world::durable::CommitWait;
use crate::world::fsio::parse_date_ms;
use crate::world::local::LocalWorld;
use crate::world::watch::{Subscription, Topic};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Appends of one run by this journal: how many started / finished, and the event file
/// names they wrote that no follower has seen yet.
#[derive(Default)]
struct RunAppends {
    started: u64,
    done: u64,
    own: HashSet<String>,
}

/// What a file looked like when it was read: a replaced file (a new inode, by rename) or
/// a rewritten one (size, times) no longer matches.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// `Ok(None)`: no such file.
    fn of(path: &std::path::Path) -> Result<Option<FileStamp>> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// What one run's appends know between batches, so a step does not read back the files
/// the previous batch wrote:
/// * the run as last read, with the stamp of its file: used again only while the file is
///   unchanged (one `stat` instead of a read and a parse; another writer's `cancel()`
///   replaces the file, and the next batch reads it);
/// * the step this journal wrote last, as it wrote it: step files of a run are written
///   only by the process executing it (under the run's lease), and a step's terminal
///   transition is claimed by a create-once lock file besides, so a step can never be
///   completed twice whatever a cache says. Dropped when a batch fails or the run's
///   execution here ends ([`Journal::forget`]).
#[derive(Default)]
struct RunCache {
    run: Option<(FileStamp, RunState)>,
    step: Option<(String, StepState)>,
}

/// Runs whose cache is kept at most; beyond it the cache starts over (runs executing at
/// once in one process are far fewer).
const RUN_CACHE_MAX: usize = 4096;

pub struct Journal {
    world: Arc<LocalWorld>,
    runs: Mutex<HashMap<String, RunAppends>>,
    cache: Mutex<HashMap<String, RunCache>>,
    /// Bumped after every append, so followers re-check names they could not classify.
    appended: watch::Sender<u64>,
    /// TEST ONLY (crash tests): see [`KILL_BEFORE_EVENT_ENV`].
    kill_before_event: Option<u64>,
    /// Events this journal was asked to write (for the test hook).
    requested: std::sync::atomic::AtomicU64,
}

/// TEST ONLY. `WORKFLOW_NATIVE_TEST_KILL_BEFORE_EVENT=<n>` (read once, when the journal is
/// created): the process sends itself SIGKILL while writing the n-th event this journal
/// is asked for (counting from 1), after that event's lock and entity files are written
/// and before the event file is — the crash window world-local's write order leaves. Unset
/// (the default, and the only setting meant for production) it does nothing.
pub const KILL_BEFORE_EVENT_ENV: &str = "WORKFLOW_NATIVE_TEST_KILL_BEFORE_EVENT";

fn kill_point_from_env() -> Option<u64> {
    std::env::var(KILL_BEFORE_EVENT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
}

/// The test hook's crash: SIGKILL to this process (nothing runs after it, as with a kill
/// from outside).
fn kill_self() -> ! {
    // SAFETY: sending a signal to our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// The world as one batch of appends sees it: a run or step the batch read is not read
/// again within the batch unless the batch wrote it. A batch runs in microseconds on one
/// thread; a change another process makes meanwhile is seen by the next batch, exactly as
/// if it had landed a moment later.
struct BatchStore<'a> {
    world: &'a LocalWorld,
    run: RefCell<Option<(String, Option<RunState>)>>,
    step: RefCell<Option<(String, StepState)>>,
    /// The run as an earlier batch read it, used if its file is unchanged; replaced by
    /// this batch's own read (with the stamp taken before reading), `None` once the batch
    /// wrote the run.
    stamped_run: RefCell<Option<(FileStamp, RunState)>>,
    /// The batch wrote the run file (its stamp is unknown: the next batch reads it).
    run_written: std::cell::Cell<bool>,
    /// `step` is as this journal wrote it (not as read from disk).
    step_written: std::cell::Cell<bool>,
    /// TEST ONLY: the event being applied is the one to die before (see
    /// [`KILL_BEFORE_EVENT_ENV`]).
    kill_before_publish: std::cell::Cell<bool>,
    /// The request being applied is a `step_created` whose `step_started` follows in this
    /// batch: its step file is held back (see [`HeldStep`]).
    hold_next_create: std::cell::Cell<bool>,
    held: RefCell<Option<HeldStep>>,
    /// Writing a held step (file or event) failed: the failure is `step_created`'s.
    held_failed: std::cell::Cell<bool>,
    /// The step whose held writes failed: a take-back restoring it must not create it.
    dropped: RefCell<Option<String>>,
}

/// A fresh step's `step_created`, held back while the `step_started` that follows it in
/// the same batch is applied, so the step file is written once, already in its state
/// after `step_started` (world-local writes it twice: `pending`, then `running`).
///
/// Write order, and what a crash can leave: the step file (running, attempt 1), then the
/// `step_created` event, then the `step_started` event. A crash before the first leaves
/// nothing of the step; between the file and `step_created`, a step file without events
/// (world-local's own "entity ahead of its event" window for `step_created`); between the
/// two events, a running step without its `step_started` — the window world-local leaves
/// for `step_started`, which crash recovery completes. No state outside world-local's
/// own windows; nothing is acknowledged before all of it is written (and synced).
struct HeldStep {
    key: String,
    created: Map<String, Value>,
    /// `step_created`'s event: (run id, event id, event)
    event: Option<(String, String, Map<String, Value>)>,
}

impl<'a> BatchStore<'a> {
    fn new(world: &'a LocalWorld) -> Self {
        BatchStore {
            world,
            run: RefCell::new(None),
            step: RefCell::new(None),
            stamped_run: RefCell::new(None),
            run_written: std::cell::Cell::new(false),
            step_written: std::cell::Cell::new(false),
            kill_before_publish: std::cell::Cell::new(false),
            hold_next_create: std::cell::Cell::new(false),
            held: RefCell::new(None),
            held_failed: std::cell::Cell::new(false),
            dropped: RefCell::new(None),
        }
    }

    /// Writes a held step as `step_created` left it (its `step_started` did not write it).
    fn flush_held(&self) -> Result<()> {
        let Some(h) = self.held.borrow_mut().take() else {
            return Ok(());
        };
        self.write_held(h, None)
    }

    /// Writes a held step: its file (`step`, or as created), then `step_created`'s event.
    /// On failure nothing of it stays and `held_failed` is set.
    fn write_held(&self, h: HeldStep, step: Option<&Map<String, Value>>) -> Result<()> {
        let body = step.unwrap_or(&h.created);
        self.step.replace(None);
        let written = self.world.create_step(&h.key, body).and_then(|()| {
            let Some((run_id, event_id, event)) = &h.event else {
                return Ok(());
            };
            self.world
                .publish_event(run_id, event_id, event)
                .map(|_| ())
                .inspect_err(|_| {
                    let _ = self.world.remove_entity(Entity::Step, &h.key);
                })
        });
        match written {
            Ok(()) => {
                self.remember_step(&h.key, body);
                Ok(())
            }
            Err(e) => {
                self.held_failed.set(true);
                self.dropped.replace(Some(h.key));
                Err(e)
            }
        }
    }

    /// Starts from what earlier batches of the run knew (see [`RunCache`]).
    fn seeded(world: &'a LocalWorld, cache: RunCache) -> Self {
        let store = BatchStore::new(world);
        store.stamped_run.replace(cache.run);
        store.step_written.set(cache.step.is_some());
        store.step.replace(cache.step);
        store
    }

    /// What the next batch of the run may start from.
    fn into_cache(self) -> RunCache {
        RunCache {
            run: if self.run_written.get() {
                None
            } else {
                self.stamped_run.into_inner()
            },
            step: if self.step_written.get() {
                self.step.into_inner()
            } else {
                None
            },
        }
    }

    /// A step this batch just wrote is known without reading it back.
    fn remember_step(&self, step_key: &str, step: &Map<String, Value>) {
        if let Ok(st) = StepState::parse(std::path::Path::new(step_key), step) {
            self.step.replace(Some((step_key.to_string(), st)));
            self.step_written.set(true);
        }
    }

    fn forget(&self) {
        self.run.replace(None);
        self.step.replace(None);
        self.stamped_run.replace(None);
        self.run_written.set(true);
        self.step_written.set(false);
    }

    fn apply(&self, run_id: &str, req: Map<String, Value>) -> Result<EventResult> {
        if req.get("eventType").and_then(Value::as_str) == Some("hook_created") {
            // hook creation serialises with other writers of the token: the world's path
            self.forget();
            return self.world.create_event_value_sync(Some(run_id), req);
        }
        let req = Request::parse(Some(run_id), req)?;
        machine::apply(self, &req).map(|c| c.result)
    }
}

impl EventStore for BatchStore<'_> {
    fn run_location(&self, run_id: &str) -> Result<PathBuf> {
        self.world.run_location(run_id)
    }
    fn load_run(&self, run_id: &str) -> Result<Option<RunState>> {
        if let Some((id, run)) = &*self.run.borrow() {
            if id == run_id {
                return Ok(run.clone());
            }
        }
        let path = self.world.run_location(run_id)?;
        let stamp = FileStamp::of(&path)?;
        let run = match (stamp, &*self.stamped_run.borrow()) {
            (Some(now), Some((then, cached))) if now == *then => Some(Some(cached.clone())),
            _ => None,
        };
        let run = match run {
            Some(run) => run,
            None => {
                let run = self.world.load_run(run_id)?;
                let stamped = match (stamp, &run) {
                    (Some(st), Some(r)) if !self.run_written.get() => Some((st, r.clone())),
                    _ => None,
                };
                self.stamped_run.replace(stamped);
                run
            }
        };
        self.run.replace(Some((run_id.to_string(), run.clone())));
        Ok(run)
    }
    fn create_run(&self, run_id: &str, run: &Map<String, Value>, implicit: bool) -> Result<bool> {
        self.run.replace(None);
        self.run_written.set(true);
        self.world.create_run(run_id, run, implicit)
    }
    fn replace_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()> {
        self.flush_held()?;
        self.run.replace(None);
        self.run_written.set(true);
        self.world.replace_run(run_id, run)
    }
    fn delete_hooks_of_run(&self, run_id: &str) -> Result<()> {
        self.world.delete_hooks_of_run(run_id)
    }
    fn delete_waits_of_run(&self, run_id: &str) -> Result<()> {
        self.world.delete_waits_of_run(run_id)
    }
    fn load_step(&self, step_key: &str) -> Result<Option<StepState>> {
        if let Some((key, step)) = &*self.step.borrow() {
            if key == step_key {
                return Ok(Some(step.clone()));
            }
        }
        let step = self.world.load_step(step_key)?;
        self.step_written.set(false);
        self.step
            .replace(step.as_ref().map(|st| (step_key.to_string(), st.clone())));
        Ok(step)
    }
    fn create_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        if self.hold_next_create.replace(false) && self.held.borrow().is_none() {
            self.held.replace(Some(HeldStep {
                key: step_key.to_string(),
                created: step.clone(),
                event: None,
            }));
            // the step as created, for the step_started that follows
            self.remember_step(step_key, step);
            return Ok(());
        }
        self.flush_held()?;
        self.step.replace(None);
        self.world.create_step(step_key, step)?;
        self.remember_step(step_key, step);
        Ok(())
    }
    fn replace_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        let held = {
            let mut held = self.held.borrow_mut();
            match &*held {
                Some(h) if h.key == step_key && h.event.is_some() => held.take(),
                _ => None,
            }
        };
        if let Some(h) = held {
            // the step file once, already as this request leaves it
            return self.write_held(h, Some(step));
        }
        if self.dropped.borrow().as_deref() == Some(step_key) {
            // the take-back of a step whose held writes failed: it does not exist
            return Ok(());
        }
        self.flush_held()?;
        self.step.replace(None);
        self.world.replace_step(step_key, step)?;
        self.remember_step(step_key, step);
        Ok(())
    }
    fn hook_exists(&self, hook_id: &str) -> Result<bool> {
        self.world.hook_exists(hook_id)
    }
    fn claim_token(
        &self,
        token: &str,
        claim: &Map<String, Value>,
        hook_id_text: &str,
    ) -> Result<TokenClaim> {
        self.world.claim_token(token, claim, hook_id_text)
    }
    fn write_hook(&self, hook_id: &str, hook: &Map<String, Value>, overwrite: bool) -> Result<()> {
        self.world.write_hook(hook_id, hook, overwrite)
    }
    fn delete_hook(&self, hook_id: &str) -> Result<()> {
        self.world.delete_hook(hook_id)
    }
    fn repair_hook(&self, run_id: &str, hook_id: &str, event_id: &str) -> Result<()> {
        self.world.repair_hook(run_id, hook_id, event_id)
    }
    fn load_wait(&self, wait_key: &str) -> Result<Option<Map<String, Value>>> {
        self.world.load_wait(wait_key)
    }
    fn create_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        self.flush_held()?;
        self.world.create_wait(wait_key, wait)
    }
    fn replace_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        self.world.replace_wait(wait_key, wait)
    }
    fn remove_entity(&self, kind: Entity, key: &str) -> Result<()> {
        if kind == Entity::Step {
            let mut held = self.held.borrow_mut();
            if held.as_ref().is_some_and(|h| h.key == key) {
                // the take-back of a held step: it was never written
                *held = None;
                return Ok(());
            }
        }
        self.flush_held()?;
        self.forget();
        self.world.remove_entity(kind, key)
    }
    fn claim_once(&self, marker: &Once) -> Result<bool> {
        self.flush_held()?;
        self.world.claim_once(marker)
    }
    fn release_once(&self, marker: &Once) -> Result<()> {
        self.world.release_once(marker)
    }
    fn store_event(&self, run_id: &str, event_id: &str, event: &Map<String, Value>) -> Result<()> {
        self.flush_held()?;
        self.world.store_event(run_id, event_id, event)
    }
    fn publish_event(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<bool> {
        if self.kill_before_publish.get() {
            kill_self();
        }
        {
            let mut held = self.held.borrow_mut();
            if let Some(h) = held.as_mut() {
                if h.event.is_none() {
                    // step_created's event: written after its step file (see HeldStep)
                    h.event = Some((run_id.to_string(), event_id.to_string(), event.clone()));
                    return Ok(true);
                }
            }
        }
        self.flush_held()?;
        self.world.publish_event(run_id, event_id, event)
    }
}

/// `req` is a `step_created` and `next` the `step_started` of the same step.
fn starts_step_created(req: &Map<String, Value>, next: &Map<String, Value>) -> bool {
    let field =
        |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    field(req, "eventType").as_deref() == Some("step_created")
        && field(next, "eventType").as_deref() == Some("step_started")
        && field(req, "correlationId").is_some()
        && field(req, "correlationId") == field(next, "correlationId")
}

/// Records an append as done (with the files it wrote) when dropped.
struct AppendDone<'a> {
    journal: &'a Journal,
    run_id: &'a str,
    written: Vec<String>,
}

impl Drop for AppendDone<'_> {
    fn drop(&mut self) {
        {
            let mut runs = lock(&self.journal.runs);
            let entry = runs.entry(self.run_id.to_string()).or_default();
            entry.own.extend(std::mem::take(&mut self.written));
            entry.done += 1;
        }
        self.journal
            .appended
            .send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Whether a batch may be answered before it is durable: only when every event in it
/// records that work *began* — `run_started`, `step_created`, `step_started`. The engine
/// then runs the workflow body (no side effects) or the step's code (run at least once
/// anyway): if the machine loses power before the next sync, the attempt is not on disk
/// and the step runs again, as a step in flight at a crash does. Everything else — a
/// step's outcome, a run's result, hooks, waits, cancellations — is answered only after
/// the sync ([`GroupCommit`]), so nothing anyone was told, and no outcome the workflow
/// acted on, can be lost.
pub fn answer_before_sync(requests: &[Map<String, Value>]) -> bool {
    records_only_beginnings(
        requests
            .iter()
            .map(|r| r.get("eventType").and_then(Value::as_str).unwrap_or("")),
    )
}

/// Whether a batch of these event types (not empty) only records that work began (see
/// [`answer_before_sync`]): the PostgreSQL backend commits such a batch without waiting
/// for its WAL flush, the next synchronous commit flushing it.
pub fn records_only_beginnings<'a>(event_types: impl IntoIterator<Item = &'a str>) -> bool {
    let mut types = event_types.into_iter().peekable();
    types.peek().is_some()
        && types.all(|t| matches!(t, "run_started" | "step_created" | "step_started"))
}

/// The journal writer's group commit: after each group of appends (every batch waiting,
/// all runs), one sync when any answer must wait for it; writes answered before their
/// sync (see [`answer_before_sync`]) are synced with the next group that needs it, or
/// as soon as the writer has nothing else to do.
#[derive(Default)]
pub struct GroupCommit {
    unsynced: bool,
    /// A sync made while idle failed: the next group is refused with it (loudly), since
    /// the writes it covered were already answered.
    fault: Option<Error>,
}

impl GroupCommit {
    /// After a group of appends. `Err`: the group's writes are not durable; none of its
    /// answers may say they were written.
    pub fn finish_group(&mut self, journal: &Journal, answer_before_sync: bool) -> Result<()> {
        match self.finish_group_begin(journal, answer_before_sync)? {
            Some(sync) => sync.wait(),
            None => Ok(()),
        }
    }

    /// [`finish_group`](Self::finish_group) without waiting for the device: `Ok(Some)`
    /// when the group's answers must wait for that sync (any thread may wait, while this
    /// one appends the next group), `Ok(None)` when they may be given now.
    pub fn finish_group_begin(
        &mut self,
        journal: &Journal,
        answer_before_sync: bool,
    ) -> Result<Option<CommitWait>> {
        if let Some(e) = self.fault.take() {
            self.unsynced = false;
            let _ = journal.commit();
            return Err(e);
        }
        if answer_before_sync {
            self.unsynced = true;
            return Ok(None);
        }
        self.unsynced = false;
        journal.commit_begin().map(Some)
    }

    /// The writer has nothing to do: sync what was answered early.
    pub fn idle(&mut self, journal: &Journal) {
        if self.unsynced {
            self.unsynced = false;
            if let Err(e) = journal.commit() {
                self.fault = Some(e);
            }
        }
    }

    /// Whether writes answered early still wait for their sync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }
}

/// The outcome of one [`Journal::append`]: the results of the events written, in order,
/// and the refusal that stopped the batch (the events after it were not attempted).
#[derive(Debug)]
pub struct AppendOutcome {
    pub results: Vec<EventResult>,
    pub failed: Option<(usize, Error)>,
}

impl Journal {
    pub fn new(world: Arc<LocalWorld>) -> Arc<Journal> {
        let journal = Arc::new(Journal {
            world,
            runs: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            appended: watch::channel(0).0,
            kill_before_event: kill_point_from_env(),
            requested: std::sync::atomic::AtomicU64::new(0),
        });
        // the followers of its runs are not woken by its own appends
        let weak: std::sync::Weak<dyn crate::world::watch::OwnEventFilter> =
            Arc::downgrade(&journal) as _;
        journal.world.feed().set_event_filter(weak);
        journal
    }

    pub fn world(&self) -> &Arc<LocalWorld> {
        &self.world
    }

    /// Makes every append this thread made since its last commit durable (one sync per
    /// directory changed, see [`crate::world::durable`]). Appends are acknowledged only
    /// after it returned `Ok`: the engine's writer appends every batch waiting (all runs)
    /// and commits once for the group — group commit. On `Err` (naming the directory)
    /// none of them may be acknowledged as written.
    pub fn commit(&self) -> Result<()> {
        crate::world::durable::commit()
    }

    /// [`commit`](Self::commit) in two halves (see [`crate::world::durable::commit_begin`]).
    pub fn commit_begin(&self) -> Result<CommitWait> {
        crate::world::durable::commit_begin()
    }

    /// Writes `requests` (`{ eventType, correlationId?, specVersion?, eventData? }` each)
    /// for `run_id`, in order, not yet durable: see [`commit`](Self::commit). Blocking:
    /// call it from a blocking thread.
    pub fn append(&self, run_id: &str, requests: Vec<Map<String, Value>>) -> AppendOutcome {
        self.append_fenced(run_id, requests, None)
    }

    /// [`append`](Self::append) by the holder of the run's lease: with `owner`, the batch
    /// is written only while `owner` holds the lease (checked before its first event);
    /// otherwise it is refused whole with `LeaseLost` — a process that was taken over
    /// (stopped longer than the lease's time to live, then resumed) writes nothing more.
    pub fn append_fenced(
        &self,
        run_id: &str,
        requests: Vec<Map<String, Value>>,
        owner: Option<&str>,
    ) -> AppendOutcome {
        if let Err(e) = assert_safe_entity_id("runId", run_id) {
            return AppendOutcome {
                results: Vec::new(),
                failed: Some((0, e)),
            };
        }
        if let Some(owner) = owner {
            let refused = match crate::lease::holds(self.world.root(), run_id, owner) {
                Ok(true) => None,
                Ok(false) => Some(Error::LeaseLost {
                    run_id: run_id.to_string(),
                }),
                Err(e) => Some(e),
            };
            if let Some(e) = refused {
                lock(&self.cache).remove(run_id);
                return AppendOutcome {
                    results: Vec::new(),
                    failed: Some((0, e)),
                };
            }
        }
        lock(&self.runs)
            .entry(run_id.to_string())
            .or_default()
            .started += 1;
        // Counted as done however this ends (a panic included): followers never wait for
        // an append that will not finish.
        let mut done = AppendDone {
            journal: self,
            run_id,
            written: Vec::with_capacity(requests.len()),
        };
        let mut results = Vec::with_capacity(requests.len());
        let mut failed = None;
        let seed = lock(&self.cache).remove(run_id).unwrap_or_default();
        let store = BatchStore::seeded(&self.world, seed);
        let mut requests = requests.into_iter().enumerate().peekable();
        while let Some((i, req)) = requests.next() {
            if let Some(n) = self.kill_before_event {
                let ordinal = self
                    .requested
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1;
                store.kill_before_publish.set(ordinal == n);
            }
            // a fresh step's creation and start, sent together: one step file write
            let holds = requests
                .peek()
                .is_some_and(|(_, next)| starts_step_created(&req, next));
            store.hold_next_create.set(holds);
            store.dropped.replace(None);
            let applied = store.apply(run_id, req);
            store.hold_next_create.set(false);
            let mut held_error = None;
            if holds {
                if applied.is_err() {
                    // refused before its step_started: nothing of it was written
                    store.held.replace(None);
                }
            } else if let Err(e) = store.flush_held() {
                // a held step_created its step_started did not write (refused first)
                held_error = Some(e);
            }
            if store.held_failed.replace(false) {
                // Writing the held step failed: the failure is step_created's (the request
                // before this one), and nothing of either request was left.
                let e = match (held_error, applied) {
                    (Some(e), _) | (None, Err(e)) => e,
                    (None, Ok(_)) => Error::Plain("the step could not be written".into()),
                };
                if results.pop().is_some() {
                    done.written.pop();
                }
                failed = Some((i.saturating_sub(1), e));
                break;
            }
            match applied {
                Ok(r) => {
                    if let Some(id) = r
                        .event
                        .as_ref()
                        .and_then(|e| e.get("eventId"))
                        .and_then(Value::as_str)
                    {
                        done.written.push(format!("{run_id}-{id}.json"));
                    }
                    results.push(r);
                }
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if failed.is_none() {
            let mut cache = lock(&self.cache);
            if cache.len() >= RUN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(run_id.to_string(), store.into_cache());
        }
        drop(done);
        AppendOutcome { results, failed }
    }

    /// `start()` of a run this process's engine executes: `run_created`, the run's lease
    /// for `owner` and `run_started` (through this journal, fenced by that lease), made
    /// durable by one commit — `run_started` rides on the sync `run_created` needs anyway,
    /// and the engine skips a lease call and a batch. Blocking.
    ///
    /// `Ok(Some(startedAt))` when all three were written; `Ok(None)` when only the run was
    /// created (its lease held by another process, or `run_started` refused): the engine
    /// then takes the ordinary path (and reports what it meets). `Err`: the run could not
    /// be created or made durable — `start()` rejects, and a lease taken is given back.
    pub fn create_run_started(
        &self,
        req: &crate::world::local::CreateRun,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>> {
        let created = self.create_run_started_uncommitted(req, owner, ttl_ms);
        let synced = crate::world::durable::commit();
        match (created, synced) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => {
                // a new run, so a lease of `owner` on it is the one just taken
                self.give_back_lease(&req.run_id, owner);
                Err(e)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// [`create_run_started`](Self::create_run_started) without its commit: what it
    /// writes joins this thread's pending writes, and the caller commits them (the journal
    /// thread, whose group commit covers a run's creation together with the appends of
    /// that group) and acknowledges nothing before that commit returned. When it fails
    /// the caller gives the lease back ([`give_back_lease`](Self::give_back_lease)): the
    /// run is new, so a lease of `owner` on it is the one this took. An error here gave it
    /// back already.
    pub fn create_run_started_uncommitted(
        &self,
        req: &crate::world::local::CreateRun,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>> {
        assert_safe_entity_id("runId", &req.run_id)?;
        let run_id = req.run_id.as_str();
        let root = self.world.root().to_path_buf();
        let mut leased = false;
        let out = (|| {
            self.world
                .apply_event_uncommitted(Some(run_id), req.run_created_request())?;
            // a storage fault taking the lease is the engine's to report, on its own path
            if !crate::lease::acquire(&root, run_id, owner, ttl_ms).unwrap_or(false) {
                return Ok(None);
            }
            leased = true;
            let mut started = Map::new();
            started.insert("eventType".into(), Value::from("run_started"));
            started.insert("specVersion".into(), Value::from(req.spec_version));
            let out = self.append_fenced(run_id, vec![started], Some(owner));
            if out.failed.is_some() {
                return Ok(None);
            }
            Ok(out
                .results
                .first()
                .and_then(|r| r.run.as_ref())
                .and_then(|run| run.get("startedAt"))
                .and_then(Value::as_str)
                .map(str::to_owned))
        })();
        if out.is_err() && leased {
            self.give_back_lease(run_id, owner);
        }
        out
    }

    /// Gives up `owner`'s lease of a run whose creation was not acknowledged (its write or
    /// its commit failed): nobody executes it here. A lease that is not `owner`'s stays;
    /// a failure to remove it is left to the lease's expiry (it is not a live owner's once
    /// this process is gone).
    pub fn give_back_lease(&self, run_id: &str, owner: &str) {
        let _ = crate::lease::release(self.world.root(), run_id, owner);
    }

    /// Follows the events other writers add to `run_id` from now on. Events already in the
    /// log when this is called are not delivered unless a rescan meets them; call
    /// [`RunFollower::known`] with the ids the caller has already read.
    pub fn follow(self: &Arc<Self>, run_id: &str) -> Result<RunFollower> {
        assert_safe_entity_id("runId", run_id)?;
        let feed = self.world.feed();
        let sub = feed.subscribe(Topic::Event, run_id);
        Ok(RunFollower {
            journal: Arc::clone(self),
            run_id: run_id.to_string(),
            events_dir: self.world.root().join("events"),
            sub,
            seen: HashSet::new(),
            pending: Vec::new(),
            overflows: feed.overflow_count(),
            scanned_mtime: None,
            appended: self.appended.subscribe(),
            faults: Vec::new(),
        })
    }

    /// Forgets a run's bookkeeping (its execution here ended).
    pub fn forget(&self, run_id: &str) {
        lock(&self.cache).remove(run_id);
        let mut runs = lock(&self.runs);
        if runs.get(run_id).is_some_and(|r| r.started == r.done) {
            runs.remove(run_id);
        }
    }

    /// Whether `name` was written by this journal (and forgets it), or `None` while an
    /// append that started before `seen_at` may still claim it.
    fn is_own(&self, run_id: &str, name: &str, seen_at: u64) -> Option<bool> {
        let mut runs = lock(&self.runs);
        let Some(r) = runs.get_mut(run_id) else {
            return Some(false);
        };
        if r.own.remove(name) {
            return Some(true);
        }
        if r.done < seen_at {
            return None;
        }
        Some(false)
    }

    fn started(&self, run_id: &str) -> u64 {
        lock(&self.runs).get(run_id).map_or(0, |r| r.started)
    }
}

impl crate::world::watch::OwnEventFilter for Journal {
    /// An event file a finished append of this journal wrote. It stays known as its own
    /// (a rescan of the follower classifies it with [`Journal::is_own`]) until the run is
    /// forgotten.
    fn is_own_event(&self, run_id: &str, name: &str) -> bool {
        lock(&self.runs)
            .get(run_id)
            .is_some_and(|r| r.own.contains(name))
    }
}

/// With OS notifications, one backstop interval in this many rescans the run's files.
const BACKSTOP_RESCAN_EVERY: u32 = 10;

/// A name seen in the directory or the feed, not yet classified.
struct Pending {
    name: String,
    /// appends of the run started when the name was seen
    seen_at: u64,
}

/// New events of one run written by others. See [`Journal::follow`].
pub struct RunFollower {
    journal: Arc<Journal>,
    run_id: String,
    events_dir: PathBuf,
    sub: Subscription,
    seen: HashSet<String>,
    pending: Vec<Pending>,
    overflows: u64,
    scanned_mtime: Option<SystemTime>,
    appended: watch::Receiver<u64>,
    /// Files among the run's events that could not be used (reported, then skipped).
    faults: Vec<Error>,
}

impl RunFollower {
    /// The faults met since the last call (files skipped because they are not events).
    pub fn take_faults(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.faults)
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Event ids the caller already has (read from the log): never delivered.
    pub fn known(&mut self, event_ids: impl IntoIterator<Item = String>) {
        for id in event_ids {
            self.seen.insert(format!("{}-{id}.json", self.run_id));
        }
    }

    /// Waits until other writers added events, and returns them in log order (createdAt,
    /// then eventId). Returns an empty list only when it met faults to report
    /// ([`take_faults`](Self::take_faults)). Cancel-safe: dropping the future loses
    /// nothing (names stay queued in the feed or in `pending`).
    pub async fn next(&mut self) -> Result<Vec<Value>> {
        let mut quiet_polls = 0u32;
        let mut rescan = false;
        loop {
            self.sub.mark_seen();
            self.appended.borrow_and_update();
            let overflows = self.journal.world.feed().overflow_count();
            if overflows != self.overflows {
                self.overflows = overflows;
                rescan = true;
            }
            let events = self.collect(rescan)?;
            rescan = false;
            if !events.is_empty() || !self.faults.is_empty() {
                return Ok(events);
            }
            if !self.pending.is_empty() {
                // Names an append in progress may own: decided when it finishes.
                tokio::select! {
                    _ = self.appended.changed() => {}
                    _ = self.sub.wait_change() => {}
                }
                continue;
            }
            let (notified, watched) = self.sub.wait_change().await;
            if notified {
                quiet_polls = 0;
                continue;
            }
            // The backstop: without OS notifications every poll rescans; with them, a
            // rescan now and then (only if the directory changed) covers a lost one.
            quiet_polls += 1;
            if !watched || quiet_polls.is_multiple_of(BACKSTOP_RESCAN_EVERY) {
                rescan = true;
            }
        }
    }

    /// Events other writers added that are visible now (a rescan of the run's files):
    /// used when something says "look now" (a queue message for the run).
    pub fn poll_now(&mut self) -> Result<Vec<Value>> {
        self.scanned_mtime = None;
        self.collect(true)
    }

    /// Takes the names the feed queued (and rescans the directory when asked), classifies
    /// them, and reads the foreign ones.
    fn collect(&mut self, rescan: bool) -> Result<Vec<Value>> {
        let names = self.journal.world.feed().take_event_names(&self.run_id);
        // Read after the names were taken: an append that started before this read may
        // own them (it records its files when done); one that starts later cannot.
        let seen_at = self.journal.started(&self.run_id);
        for name in names {
            if !self.seen.contains(&name) {
                self.pending.push(Pending { name, seen_at });
            }
        }
        if rescan {
            self.rescan()?;
        }
        Ok(self.take_ready()?.unwrap_or_default())
    }

    fn rescan(&mut self) -> Result<()> {
        let mtime = std::fs::metadata(&self.events_dir)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.scanned_mtime {
            return Ok(());
        }
        let prefix = format!("{}-", self.run_id);
        let mut found = Vec::new();
        for_each_name(&self.events_dir, |name| {
            if name.starts_with(&prefix) && name.ends_with(".json") && !name.contains(".tmp.") {
                found.push(name.to_string());
            }
        })
        .map_err(|e| Error::io(&self.events_dir, e))?;
        self.scanned_mtime = mtime;
        // After the listing, as for names from the feed.
        let seen_at = self.journal.started(&self.run_id);
        for name in found {
            if !self.seen.contains(&name) && !self.pending.iter().any(|p| p.name == name) {
                self.pending.push(Pending { name, seen_at });
            }
        }
        Ok(())
    }

    /// Classifies pending names; reads and returns the foreign events that are decided.
    fn take_ready(&mut self) -> Result<Option<Vec<Value>>> {
        let mut foreign = Vec::new();
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if self.seen.contains(&p.name) {
                continue;
            }
            match self.journal.is_own(&self.run_id, &p.name, p.seen_at) {
                None => still.push(p),
                Some(true) => {
                    self.seen.insert(p.name);
                }
                Some(false) => {
                    self.seen.insert(p.name.clone());
                    foreign.push(p.name);
                }
            }
        }
        self.pending = still;
        let mut events: Vec<(f64, String, Value)> = Vec::new();
        for name in foreign {
            let path = self.events_dir.join(&name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            // A file that is not an event is skipped, as the log listing skips it, and
            // reported: the operator should know.
            let parsed = match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    self.faults
                        .push(Error::corrupt(&path, format!("invalid JSON ({e})")));
                    continue;
                }
            };
            let (Some(t), Some(id), Some(_)) = (
                parsed.get("createdAt").and_then(parse_date_ms),
                parsed
                    .get("eventId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                parsed.get("eventType").and_then(Value::as_str),
            ) else {
                self.faults.push(Error::corrupt(
                    &path,
                    "not an event (needs eventType, eventId and createdAt)",
                ));
                continue;
            };
            events.push((t, id, parsed));
        }
        if events.is_empty() {
            return Ok(None);
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(Some(events.into_iter().map(|e| e.2).collect()))
    }
}
