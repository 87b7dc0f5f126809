//! The embedded engine's native calls. All of them run off the JS thread: file work on
//! the libuv pool (`AsyncTask`, one hop there and back), following a run's log on the
//! tokio runtime, with an unref'd callback so a run waiting for others never keeps the
//! process alive.

use crate::world::NativeWorld;
use crate::{error_json, guard, panic_error, to_napi};
use napi::bindgen_prelude::{AsyncTask, Env};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Status, Task};
use napi_derive::napi;
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use workflow_core::journal::{GroupCommit, Journal, RunFollower};
use workflow_core::world::durable::CommitWait;
use workflow_core::world::events::EventResult;
use workflow_core::world::spare;

/// Blocking work for the libuv pool; a panic inside becomes a rejected promise.
pub struct Blocking {
    work: Option<Box<dyn FnOnce() -> napi::Result<String> + Send>>,
}

impl Blocking {
    pub(crate) fn task(
        f: impl FnOnce() -> napi::Result<String> + Send + 'static,
    ) -> AsyncTask<Blocking> {
        AsyncTask::new(Blocking {
            work: Some(Box::new(f)),
        })
    }
}

impl Task for Blocking {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<String> {
        let Some(work) = self.work.take() else {
            return Err(napi::Error::from_reason("task already ran"));
        };
        catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|p| Err(panic_error(p)))
    }

    fn resolve(&mut self, _env: Env, output: String) -> napi::Result<String> {
        Ok(output)
    }
}

/// One batch of the journal writer: the answer's JSON text, and whether it may be given
/// before the batch is synced.
fn append_json(
    journal: &Journal,
    run_id: &str,
    requests: &str,
    owner: Option<&str>,
) -> napi::Result<(String, bool)> {
    let reqs = parse_requests(requests).map_err(to_napi)?;
    let early = workflow_core::journal::answer_before_sync(&reqs);
    let out = journal.append_fenced(run_id, reqs, owner);
    Ok((outcome_json(&out), early))
}

/// A batch of event requests: the JSON text of an array of objects.
pub(crate) fn parse_requests(requests: &str) -> workflow_core::Result<Vec<Map<String, Value>>> {
    match serde_json::from_str::<Value>(requests) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(workflow_core::Error::InvalidArgument(
                    "each event request must be a JSON object".into(),
                )),
            })
            .collect(),
        _ => Err(workflow_core::Error::InvalidArgument(
            "event requests must be a JSON array".into(),
        )),
    }
}

/// A batch's answer as the engine reads it: `{ results: [brief…], failed?: { index, error } }`.
pub(crate) fn outcome_json(out: &workflow_core::journal::AppendOutcome) -> String {
    let mut res = Map::new();
    res.insert(
        "results".into(),
        Value::Array(out.results.iter().map(brief).collect()),
    );
    if let Some((index, e)) = &out.failed {
        res.insert(
            "failed".into(),
            json!({ "index": index, "error": error_data(e) }),
        );
    }
    Value::Object(res).to_string()
}

/// How long the journal thread keeps looking for the next append before it sleeps: an
/// engine running steps sends the next one within tens of microseconds, and waking a
/// sleeping thread costs more than that on virtual machines.
const WRITER_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// How long the journal thread waits for more work before it syncs writes it answered
/// early (a step's attempt): long enough for the step to finish and send its outcome,
/// whose sync then covers both, short enough that an attempt is soon durable anyway.
const IDLE_SYNC_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// How many journal threads a writer runs: the runs are spread over them by id (each run's
/// appends stay on one thread, in order). On a disk, a step's file writes are mostly
/// kernel time in the file system; with many runs in flight one thread is the engine's
/// bottleneck while the cores have time left. `WORKFLOW_NATIVE_JOURNAL_THREADS` (1–16)
/// overrides the default: the machine's cores, at most 4.
fn journal_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let default = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let Ok(v) = std::env::var("WORKFLOW_NATIVE_JOURNAL_THREADS") else {
            return default;
        };
        match v.trim().parse::<usize>() {
            Ok(n) if (1..=16).contains(&n) => n,
            _ => {
                eprintln!(
                    "workflow-native: WORKFLOW_NATIVE_JOURNAL_THREADS={v:?} is not a number \
                     from 1 to 16; using {default} journal thread(s)"
                );
                default
            }
        }
    })
}

/// The journal thread of `run_id` among `n`.
fn shard_of(run_id: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run_id.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// Test hook: `WORKFLOW_NATIVE_TEST_NO_IDLE_SYNC=1` leaves writes answered early to the
/// next group's sync (never an idle one), so a test that counts syncs does not depend on
/// how long a step takes.
fn idle_sync_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| {
        std::env::var("WORKFLOW_NATIVE_TEST_NO_IDLE_SYNC").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// The next job. Spins briefly, then sleeps; writes answered before their sync are
/// synced first when nothing comes within [`IDLE_SYNC_AFTER`] (or the writer closes).
fn next_job(
    rx: &std::sync::mpsc::Receiver<WriteJob>,
    journal: &Journal,
    commits: &mut GroupCommit,
) -> Option<WriteJob> {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    if let Some(job) = PEEKED.with(|p| p.borrow_mut().take()) {
        return Some(job);
    }
    let until = std::time::Instant::now() + WRITER_SPIN;
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => {
                commits.idle(journal);
                return None;
            }
            Err(TryRecvError::Empty) => {
                if std::time::Instant::now() >= until {
                    break;
                }
                // idle time: the next appends' files are opened, the last ones' closed
                if !spare::work() {
                    std::hint::spin_loop();
                }
            }
        }
    }
    if commits.has_unsynced() && !idle_sync_disabled() {
        match rx.recv_timeout(IDLE_SYNC_AFTER) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) => commits.idle(journal),
            Err(RecvTimeoutError::Disconnected) => {
                commits.idle(journal);
                return None;
            }
        }
    }
    rx.recv().ok()
}

/// Every answer of a group whose commit failed: the same refusal (nothing of it may be
/// acknowledged as written).
fn fail_all(answers: &mut [(u32, String)], e: &workflow_core::Error) {
    let failed = json!({
        "results": [],
        "failed": { "index": 0, "error": error_data(e) },
    })
    .to_string();
    for a in answers {
        a.1 = failed.clone();
    }
}

/// The leases of the runs a group created go back when its commit failed: those runs
/// were not acknowledged, and nobody executes them here.
fn give_back(journal: &Journal, owner: Option<&str>, created: &[String]) {
    if let Some(owner) = owner {
        for run_id in created {
            journal.give_back_lease(run_id, owner);
        }
    }
}

/// Posts a group's answers (pinging a parked JS side); `false` once the JS side is gone.
fn answer(
    mailbox: &Mailbox,
    on_ready: &ThreadsafeFunction<u32, (), u32, Status, false, true>,
    answers: Vec<(u32, String)>,
) -> bool {
    let last = answers.last().map(|a| a.0).unwrap_or(0);
    for (id, text) in answers {
        mailbox.post(id, text);
    }
    !(mailbox.parked.load(Ordering::SeqCst)
        && on_ready.call(last, ThreadsafeFunctionCallMode::NonBlocking) == Status::Closing)
}

/// Whether appends are waiting now (without taking them).
fn rx_has_jobs(rx: &std::sync::mpsc::Receiver<WriteJob>) -> bool {
    // std's Receiver has no peek: the journal loop's `next_job` takes them next
    PEEKED.with(|p| {
        if p.borrow().is_some() {
            return true;
        }
        loop {
            match rx.try_recv() {
                // a wake-up is no work (see `warm`)
                Ok(job) if job.run_id.is_empty() => continue,
                Ok(job) => {
                    *p.borrow_mut() = Some(job);
                    return true;
                }
                Err(_) => return false,
            }
        }
    })
}

thread_local! {
    /// A job `rx_has_jobs` took to look: the journal loop's next one.
    static PEEKED: std::cell::RefCell<Option<WriteJob>> = const { std::cell::RefCell::new(None) };
}

struct WriteJob {
    id: u32,
    run_id: String,
    requests: String,
    /// A run to create instead of appending `requests` (see `JournalWriter#createRun`).
    create: Option<Box<CreateJob>>,
}

/// `start()` of a run the engine executes here: created, leased and started on the
/// run's journal thread, made durable by that thread's group commit.
struct CreateJob {
    create: workflow_core::world::local::CreateRun,
    ttl_ms: u64,
}

/// The answer to a create job: the JSON text of `{ startedAt }`, `null` (only the run was
/// created) or `{ nativeError }`.
fn create_json(journal: &Journal, job: &CreateJob, owner: Option<&str>) -> (String, bool) {
    let Some(owner) = owner else {
        let e =
            napi::Error::from_reason("the journal writer has no lease owner to create runs with");
        return (json!({ "nativeError": e.reason }).to_string(), false);
    };
    match journal.create_run_started_uncommitted(&job.create, owner, job.ttl_ms) {
        Ok(Some(at)) => (json!({ "startedAt": at }).to_string(), true),
        Ok(None) => ("null".to_string(), true),
        Err(e) => (
            json!({ "nativeError": to_napi(e).reason }).to_string(),
            false,
        ),
    }
}

/// Answers of the journal thread, waiting to be taken by the JS thread.
#[derive(Default)]
struct Mailbox {
    answers: std::sync::Mutex<Vec<WriteAnswer>>,
    /// The JS side stopped polling and waits for a ping.
    parked: AtomicBool,
}

impl Mailbox {
    fn post(&self, id: u32, text: String) {
        let mut answers = match self.answers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        answers.push(WriteAnswer { id, text });
    }
}

/// One append's answer.
#[napi(object)]
pub struct WriteAnswer {
    pub id: u32,
    pub text: String,
}

/// A group handed to the syncer: its commit to wait for, its answers, and the runs it
/// created (see `give_back`).
type SyncJob = (CommitWait, Vec<(u32, String)>, Vec<String>);

/// One journal thread: the appends of its share of the runs, in order, group-committed.
struct JournalThread {
    journal: Arc<Journal>,
    mailbox: Arc<Mailbox>,
    on_ready: Arc<ThreadsafeFunction<u32, (), u32, Status, false, true>>,
    sync_tx: std::sync::mpsc::Sender<SyncJob>,
    lease_owner: Option<String>,
}

impl JournalThread {
    fn run(self, rx: &std::sync::mpsc::Receiver<WriteJob>) {
        let root = self.journal.world().root().to_path_buf();
        spare::remove_abandoned(&root);
        spare::enable(Some(&root));
        let mut commits = GroupCommit::default();
        while let Some(first) = next_job(rx, &self.journal, &mut commits) {
            // Every append waiting now is one group: appended in order, then
            // made durable by one commit, then answered.
            let mut group = vec![first];
            while let Ok(job) = rx.try_recv() {
                group.push(job);
            }
            // wake-ups (see `warm`) only got the thread looking for work
            group.retain(|job| !job.run_id.is_empty());
            if group.is_empty() {
                continue;
            }
            let mut early = true;
            // runs created in this group (their leases go back if its commit fails)
            let mut created: Vec<String> = Vec::new();
            let mut answers: Vec<(u32, String)> = group
                .iter()
                .map(|job| {
                    if let Some(c) = &job.create {
                        // a new run is acknowledged only once durable
                        early = false;
                        let text = match catch_unwind(AssertUnwindSafe(|| {
                            create_json(&self.journal, c, self.lease_owner.as_deref())
                        })) {
                            Ok((text, ok)) => {
                                if ok {
                                    created.push(job.run_id.clone());
                                }
                                text
                            }
                            Err(p) => json!({ "nativeError": panic_error(p).reason }).to_string(),
                        };
                        return (job.id, text);
                    }
                    let text = match catch_unwind(AssertUnwindSafe(|| {
                        append_json(
                            &self.journal,
                            &job.run_id,
                            &job.requests,
                            self.lease_owner.as_deref(),
                        )
                    })) {
                        Ok(Ok((text, ok_early))) => {
                            early &= ok_early;
                            text
                        }
                        Ok(Err(e)) => json!({ "nativeError": e.reason }).to_string(),
                        Err(p) => json!({ "nativeError": panic_error(p).reason }).to_string(),
                    };
                    (job.id, text)
                })
                .collect();
            match commits.finish_group_begin(&self.journal, early) {
                Err(e) => {
                    fail_all(&mut answers, &e);
                    give_back(&self.journal, self.lease_owner.as_deref(), &created);
                }
                Ok(None) => {}
                Ok(Some(sync)) => {
                    // More appends waiting: the syncer waits for the device
                    // while this thread writes them (pipelined group commit);
                    // else waiting here costs no thread hand-off.
                    if rx_has_jobs(rx) {
                        if self.sync_tx.send((sync, answers, created)).is_err() {
                            return;
                        }
                        continue;
                    }
                    if let Err(e) = sync.wait() {
                        fail_all(&mut answers, &e);
                        give_back(&self.journal, self.lease_owner.as_deref(), &created);
                    }
                }
            }
            if !answer(&self.mailbox, &self.on_ready, answers) {
                return;
            }
        }
    }
}

/// The journal's writer threads (see `NativeWorld#journalWriter`).
#[napi]
pub struct JournalWriter {
    /// One sender per journal thread; empty once closed.
    txs: Vec<std::sync::mpsc::Sender<WriteJob>>,
    mailbox: Arc<Mailbox>,
}

#[napi]
impl JournalWriter {
    /// Queues one append; its answer comes to the writer's callback with `id`.
    #[napi(catch_unwind)]
    pub fn write(&self, id: u32, run_id: String, requests: String) -> napi::Result<()> {
        guard(|| {
            if self.txs.is_empty() {
                return Err(napi::Error::from_reason("the journal writer is closed"));
            }
            let tx = &self.txs[shard_of(&run_id, self.txs.len())];
            tx.send(WriteJob {
                id,
                run_id,
                requests,
                create: None,
            })
            .map_err(|_| napi::Error::from_reason("the journal thread stopped"))
        })
    }

    /// `start()` of a run this process's engine executes, on the run's journal thread:
    /// `run_created`, the run's lease for the writer's owner and `run_started` (see
    /// `Journal::create_run_started`), made durable by the thread's group commit. Its
    /// answer comes with `id` like an append's: the JSON text of `{ startedAt }`, `null`
    /// (only the run was created: the engine then leases and starts it itself), `{
    /// nativeError }` or a refused group's `{ results: [], failed }`. The run's appends
    /// then find their thread awake.
    #[napi(catch_unwind)]
    pub fn create_run(
        &self,
        id: u32,
        req: crate::world::CreateRunRequest,
        ttl_ms: u32,
    ) -> napi::Result<()> {
        guard(|| {
            if self.txs.is_empty() {
                return Err(napi::Error::from_reason("the journal writer is closed"));
            }
            let create = crate::world::create_run_of(req)?;
            let run_id = create.run_id.clone();
            let tx = &self.txs[shard_of(&run_id, self.txs.len())];
            tx.send(WriteJob {
                id,
                run_id,
                requests: String::new(),
                create: Some(Box::new(CreateJob {
                    create,
                    ttl_ms: u64::from(ttl_ms),
                })),
            })
            .map_err(|_| napi::Error::from_reason("the journal thread stopped"))
        })
    }

    /// Wakes `runId`'s thread without work: it then looks for the next append for a
    /// while before it sleeps again. Sent when a write is about to come (a run just
    /// started executing) so that the write does not wait for the thread's wake-up, which
    /// on virtual machines costs more than the append.
    #[napi(catch_unwind)]
    pub fn warm(&self, run_id: String) -> napi::Result<()> {
        guard(|| {
            if !self.txs.is_empty() {
                let tx = &self.txs[shard_of(&run_id, self.txs.len())];
                // a closed or stopped writer has nothing to warm up
                let _ = tx.send(WriteJob {
                    id: 0,
                    run_id: String::new(),
                    requests: String::new(),
                    create: None,
                });
            }
            Ok(())
        })
    }

    /// The answers ready now (possibly none). Never waits.
    #[napi(catch_unwind)]
    pub fn take(&self) -> napi::Result<Vec<WriteAnswer>> {
        guard(|| {
            let mut answers = match self.mailbox.answers.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            Ok(std::mem::take(&mut *answers))
        })
    }

    /// `true`: the JS side waits for a ping before it looks again; `false`: it polls.
    #[napi(catch_unwind)]
    pub fn park(&self, parked: bool) -> napi::Result<()> {
        guard(|| {
            self.mailbox.parked.store(parked, Ordering::SeqCst);
            Ok(())
        })
    }

    /// Stops the threads once the queued appends are done (idempotent).
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> napi::Result<()> {
        guard(|| {
            self.txs.clear();
            Ok(())
        })
    }
}

/// `{ name, message, ...fields }` of a core error, as the JS layer rebuilds it.
fn error_data(e: &workflow_core::Error) -> Value {
    serde_json::from_str(&error_json(e)).unwrap_or(Value::Null)
}

/// What the engine needs back from an event it wrote: the event's identity, the run's
/// start time and the step's attempt (payloads stay in Rust).
fn brief(r: &EventResult) -> Value {
    let mut out = Map::new();
    if let Some(Value::Object(ev)) = &r.event {
        let mut e = Map::new();
        for k in ["eventId", "eventType", "correlationId", "createdAt"] {
            if let Some(v) = ev.get(k) {
                e.insert(k.into(), v.clone());
            }
        }
        // a conflict's data names the run holding the token (`getConflict()`)
        if ev.get("eventType").and_then(Value::as_str) == Some("hook_conflict") {
            if let Some(v) = ev.get("eventData") {
                e.insert("eventData".into(), v.clone());
            }
        }
        out.insert("event".into(), Value::Object(e));
    }
    let pick = |v: &Option<Value>, keys: &[&str]| -> Option<Value> {
        let Some(Value::Object(m)) = v else {
            return None;
        };
        let mut o = Map::new();
        for k in keys {
            if let Some(x) = m.get(*k) {
                o.insert((*k).into(), x.clone());
            }
        }
        Some(Value::Object(o))
    };
    if let Some(run) = pick(&r.run, &["status", "startedAt"]) {
        out.insert("run".into(), run);
    }
    if let Some(step) = pick(&r.step, &["status", "attempt", "startedAt"]) {
        out.insert("step".into(), step);
    }
    Value::Object(out)
}

#[napi]
impl NativeWorld {
    /// The journal's writer: one thread that performs `write(id, runId, requests)` calls
    /// (`requests`: JSON array text of `{ eventType, correlationId?, specVersion?,
    /// eventData? }`) in order; answers (`{ results: [{ event, run?, step? }], failed?: {
    /// index, error } }` — a refusal stops the batch — or `{ nativeError }`) are collected with `take()`. While the JS side is parked (`park(true)`), each answer
    /// also pings `onReady` (which does not keep the process alive; the JS side does
    /// while calls are pending). With `leaseOwner`, each batch is written only while that
    /// owner holds the run's lease (else refused whole: `LEASE_LOST`).
    #[napi(catch_unwind)]
    pub fn journal_writer(
        &self,
        on_ready: ThreadsafeFunction<u32, (), u32, Status, false, true>,
        lease_owner: Option<String>,
    ) -> napi::Result<JournalWriter> {
        guard(|| {
            let journal = self.journal();
            let mailbox = Arc::new(Mailbox::default());
            let on_ready = Arc::new(on_ready);
            // The syncer: waits for the syncs of groups a journal thread handed over (it
            // had more appends waiting), then answers them. Each thread's groups are
            // handed over in order and answered in that order.
            let (sync_tx, sync_rx) = std::sync::mpsc::channel::<SyncJob>();
            let syncer_mailbox = Arc::clone(&mailbox);
            let syncer_ready = Arc::clone(&on_ready);
            let syncer_journal = Arc::clone(&journal);
            let syncer_owner = lease_owner.clone();
            std::thread::Builder::new()
                .name("workflow-native-sync".into())
                .spawn(move || {
                    while let Ok((sync, mut answers, created)) = sync_rx.recv() {
                        // a panic (a bug) refuses the group instead of leaving it unanswered
                        let failed = match catch_unwind(AssertUnwindSafe(|| sync.wait())) {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e),
                            Err(p) => Some(workflow_core::Error::Plain(panic_error(p).reason)),
                        };
                        if let Some(e) = failed {
                            fail_all(&mut answers, &e);
                            give_back(&syncer_journal, syncer_owner.as_deref(), &created);
                        }
                        if !answer(&syncer_mailbox, &syncer_ready, answers) {
                            return;
                        }
                    }
                })
                .map_err(|e| {
                    napi::Error::from_reason(format!("cannot start the journal's sync thread: {e}"))
                })?;
            let mut txs = Vec::new();
            for i in 0..journal_threads() {
                let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
                let writer = JournalThread {
                    journal: Arc::clone(&journal),
                    mailbox: Arc::clone(&mailbox),
                    on_ready: Arc::clone(&on_ready),
                    sync_tx: sync_tx.clone(),
                    lease_owner: lease_owner.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("wfn-journal-{i}"))
                    .spawn(move || writer.run(&rx))
                    .map_err(|e| {
                        napi::Error::from_reason(format!("cannot start the journal thread: {e}"))
                    })?;
                txs.push(tx);
            }
            Ok(JournalWriter { txs, mailbox })
        })
    }

    /// Every event of the run, as stored, in log order: one JSON array text (off the JS
    /// thread).
    #[napi(catch_unwind)]
    pub fn read_events(&self, run_id: String) -> AsyncTask<Blocking> {
        let world = Arc::clone(&self.inner);
        Blocking::task(move || world.list_events_json_sync(&run_id).map_err(to_napi))
    }

    /// Crash recovery of one run before the engine replays it (call it holding the run's
    /// lease): writes the events a killed writer left out, removes locks that guard
    /// nothing, and reads the log strictly (a corrupt file is an error naming it). Resolves
    /// to the JSON text of `{ status, events: [...], repairs: [...] }` (off the JS thread).
    #[napi(catch_unwind)]
    pub fn recover_run(&self, run_id: String) -> AsyncTask<Blocking> {
        let world = Arc::clone(&self.inner);
        Blocking::task(move || {
            let r = world.recover_run_sync(&run_id).map_err(to_napi)?;
            let mut out = String::with_capacity(r.events_json.len() + 64);
            out.push_str("{\"status\":");
            out.push_str(&Value::String(r.status).to_string());
            out.push_str(",\"repairs\":");
            out.push_str(&Value::from(r.repairs).to_string());
            out.push_str(",\"events\":");
            out.push_str(&r.events_json);
            out.push('}');
            Ok(out)
        })
    }

    /// The ids of the runs that have a lease file (executing somewhere, or left by a
    /// process that died): one JSON array text (off the JS thread).
    #[napi(catch_unwind)]
    pub fn leased_runs(&self) -> AsyncTask<Blocking> {
        let root: PathBuf = self.inner.root().to_path_buf();
        Blocking::task(move || {
            workflow_core::lease::leased_runs(&root)
                .map(|ids| Value::from(ids).to_string())
                .map_err(to_napi)
        })
    }

    /// The runs (as stored) whose status is in `statuses`, off the JS thread: the JSON text
    /// of `{ runs: [...], faults: [{ name, message, path, code }] }`, one fault per file
    /// that is not a readable run. Rejects only when `runs/` cannot be listed.
    #[napi(catch_unwind)]
    pub fn read_runs(&self, statuses: Option<Vec<String>>) -> AsyncTask<Blocking> {
        let world = Arc::clone(&self.inner);
        Blocking::task(move || {
            let (runs, faults) = world
                .list_runs_report_sync(statuses.as_deref())
                .map_err(to_napi)?;
            let faults: Vec<Value> = faults.iter().map(error_data).collect();
            Ok(format!(
                "{{\"runs\":{runs},\"faults\":{}}}",
                Value::Array(faults)
            ))
        })
    }

    /// Takes or renews a run's lease for `owner`; resolves to the JSON text of `{ held,
    /// replaced? }`: `held` false when another live owner holds it, `replaced` the error
    /// naming a lease file that was not a lease (corrupt, a directory) and was taken over.
    #[napi(catch_unwind)]
    pub fn acquire_lease(&self, run_id: String, owner: String, ttl_ms: u32) -> AsyncTask<Blocking> {
        let root: PathBuf = self.inner.root().to_path_buf();
        Blocking::task(move || {
            let got =
                workflow_core::lease::acquire_reporting(&root, &run_id, &owner, u64::from(ttl_ms))
                    .map_err(to_napi)?;
            let mut out = Map::new();
            out.insert("held".into(), Value::Bool(got.held));
            if let Some(e) = &got.replaced {
                out.insert("replaced".into(), error_data(e));
            }
            Ok(Value::Object(out).to_string())
        })
    }

    /// Renews the lease `owner` holds (its heartbeat): resolves to the JSON text of
    /// `{ held }`, `false` once it is not `owner`'s any more (never taken back).
    #[napi(catch_unwind)]
    pub fn renew_lease(&self, run_id: String, owner: String) -> AsyncTask<Blocking> {
        let root: PathBuf = self.inner.root().to_path_buf();
        Blocking::task(move || {
            let held = workflow_core::lease::renew(&root, &run_id, &owner).map_err(to_napi)?;
            Ok(json!({ "held": held }).to_string())
        })
    }

    /// Gives a run's lease up if `owner` holds it.
    #[napi(catch_unwind)]
    pub fn release_lease(&self, run_id: String, owner: String) -> AsyncTask<Blocking> {
        let root: PathBuf = self.inner.root().to_path_buf();
        Blocking::task(move || {
            workflow_core::lease::release(&root, &run_id, &owner)
                .map(|()| String::new())
                .map_err(to_napi)
        })
    }

    /// Follows the events other writers add to `runId` (the engine's own appends are not
    /// reported). `callback` receives the JSON text of `{ events: [...] }` (log order) or
    /// `{ error: { name, message, ... } }`; it does not keep the process alive.
    /// `knownIds`: event ids already read from the log.
    #[napi(catch_unwind)]
    pub fn follow_run(
        &self,
        run_id: String,
        known_ids: Vec<String>,
        callback: ThreadsafeFunction<String, (), String, Status, false, true>,
    ) -> napi::Result<RunEventFollower> {
        guard(|| {
            let journal = self.journal();
            let mut follower = journal.follow(&run_id).map_err(to_napi)?;
            follower.known(known_ids);
            let (tx, rx) = mpsc::unbounded_channel();
            napi::bindgen_prelude::spawn(async move {
                let looped = crate::guarded(async move {
                    follow_loop(follower, rx, callback).await;
                    Ok(())
                });
                if let Err(e) = looped.await {
                    // a bug: say so loudly (the run's engine falls back to its refreshes)
                    eprintln!("[workflow-native] following a run's events stopped: {e}");
                }
            });
            Ok(RunEventFollower {
                tx,
                journal,
                run_id,
            })
        })
    }
}

enum FollowRequest {
    Poll(oneshot::Sender<String>),
}

async fn follow_loop(
    mut follower: RunFollower,
    mut rx: mpsc::UnboundedReceiver<FollowRequest>,
    callback: ThreadsafeFunction<String, (), String, Status, false, true>,
) {
    loop {
        tokio::select! {
            req = rx.recv() => match req {
                // closed: the JS side is done with this run
                None => return,
                Some(FollowRequest::Poll(reply)) => {
                    // a rescan lists the events directory: not on a runtime worker's time
                    let got = tokio::task::block_in_place(|| follower.poll_now());
                    let faults = follower.take_faults();
                    let _ = reply.send(follow_message(got, faults));
                }
            },
            got = follower.next() => {
                let failed = got.is_err();
                let faults = follower.take_faults();
                if callback.call(follow_message(got, faults), ThreadsafeFunctionCallMode::NonBlocking)
                    == Status::Closing
                {
                    return;
                }
                if failed {
                    // a storage fault: reported; try again later rather than spin
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// `{ events, faults? }` or `{ error, faults? }` as the JS side reads it.
pub(crate) fn follow_message(
    got: workflow_core::Result<Vec<Value>>,
    faults: Vec<workflow_core::Error>,
) -> String {
    let mut msg = Map::new();
    match got {
        Ok(events) => {
            msg.insert("events".into(), Value::Array(events));
        }
        Err(e) => {
            msg.insert("error".into(), error_data(&e));
        }
    }
    if !faults.is_empty() {
        msg.insert(
            "faults".into(),
            Value::Array(faults.iter().map(error_data).collect()),
        );
    }
    Value::Object(msg).to_string()
}

/// A follower's answer to `poll()`: what its loop sent back, or no events once the loop
/// is gone (the follower was closed).
pub(crate) async fn poll_answer(
    sent: bool,
    answer: oneshot::Receiver<String>,
) -> napi::Result<String> {
    let none = || json!({ "events": [] }).to_string();
    if !sent {
        return Ok(none());
    }
    crate::guarded(async move { Ok(answer.await.unwrap_or_else(|_| none())) }).await
}

/// A run's follower (see `NativeWorld#followRun`).
#[napi]
pub struct RunEventFollower {
    tx: mpsc::UnboundedSender<FollowRequest>,
    journal: Arc<Journal>,
    run_id: String,
}

#[napi]
impl RunEventFollower {
    /// Looks now (a rescan of the run's files) and resolves to the JSON text of
    /// `{ events }` / `{ error }` with what other writers added and was not reported yet.
    #[napi(catch_unwind)]
    pub async fn poll(&self) -> napi::Result<String> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(FollowRequest::Poll(reply)).is_ok();
        poll_answer(sent, answer).await
    }

    /// Stops following (idempotent).
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> napi::Result<()> {
        guard(|| {
            let (tx, _) = mpsc::unbounded_channel();
            drop(std::mem::replace(&mut self.tx, tx));
            self.journal.forget(&self.run_id);
            Ok(())
        })
    }
}

/// The file-system floor of one engine step, for the benchmark: `steps` times, three
/// create-once files of `event_bytes` and one replaced file of `step_bytes` in `dir`
/// (with `format`: every write world-local's format makes per step), written the way the
/// engine writes them. Resolves to the elapsed milliseconds.
#[napi(catch_unwind)]
pub fn fs_floor(
    dir: String,
    steps: u32,
    event_bytes: u32,
    step_bytes: u32,
    format: Option<bool>,
) -> AsyncTask<Blocking> {
    Blocking::task(move || {
        workflow_core::world::fsio::step_floor(
            std::path::Path::new(&dir),
            steps,
            event_bytes as usize,
            step_bytes as usize,
            format.unwrap_or(false),
        )
        .map(|ms| ms.to_string())
        .map_err(to_napi)
    })
}

/// The durability floor (see `workflow_core::world::fsio::sync_floor`): `steps` small
/// files each created, synced and its directory synced. Resolves to the elapsed
/// milliseconds.
#[napi(catch_unwind)]
pub fn fs_sync_floor(dir: String, steps: u32, bytes: u32) -> AsyncTask<Blocking> {
    Blocking::task(move || {
        workflow_core::world::fsio::sync_floor(std::path::Path::new(&dir), steps, bytes as usize)
            .map(|ms| ms.to_string())
            .map_err(to_napi)
    })
}
