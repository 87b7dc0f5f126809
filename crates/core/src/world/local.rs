//! The filesystem World, byte-compatible with `@workflow/world-local` 4.4.1: reads the
//! entities it writes, and creates the events the `Run` handle needs (`run_created`,
//! `run_cancelled`, `wait_completed`) through the shared state machine.

use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::machine::Created;
use crate::stream::ChunkIndex;
use crate::world::fsio::{list_dir, parse_json, read_json, read_json_sync};
use crate::world::model::{parse_event_summary, parse_run, EventSummary, Payload, RunSnapshot};
use crate::world::terminal::TerminalWaiters;
use crate::world::watch::{ChangeFeed, Subscription, Topic};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::machine::request::validate_run_id_time;
pub use crate::storage::CancelOutcome;
pub use crate::world::model::{payload_json, SPEC_VERSION_CURRENT};

/// Cheap to clone: the change feed and the chunk index are shared.
#[derive(Clone)]
pub struct LocalWorld {
    root: PathBuf,
    feed: Arc<ChangeFeed>,
    chunks: Arc<ChunkIndex>,
    /// Every `returnValue` waiting on this world (no thread, no poll per waiter).
    terminal: Arc<TerminalWaiters>,
    /// `(runId, stream)` pairs this world registered in `streams/runs/` (as world-local
    /// remembers them), so a stream write does not re-read the registration each time.
    pub(crate) registered_streams:
        Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

impl LocalWorld {
    /// `root` is the data directory; relative paths are resolved against the current
    /// directory now, as world-local resolves them when it is created.
    pub fn new(root: impl AsRef<Path>) -> Result<LocalWorld> {
        let root = root.as_ref();
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(root, e))?
                .join(root)
        };
        crate::world::durable::attach(&root)?;
        let feed = ChangeFeed::new(&root);
        let chunks = Arc::new(ChunkIndex::new(root.join("streams").join("chunks")));
        let terminal = TerminalWaiters::new(&root, &feed, |root, run_id| {
            LocalWorld::read_run(root, run_id, true)
        });
        Ok(LocalWorld {
            root,
            feed,
            chunks,
            terminal,
            registered_streams: Arc::default(),
        })
    }

    /// Another handle on this world (same feed and chunk index), for blocking tasks.
    pub(crate) fn handle(&self) -> LocalWorld {
        self.clone()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run_path(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(format!("{run_id}.json"))
    }

    pub fn chunks_dir(&self) -> PathBuf {
        self.root.join("streams").join("chunks")
    }

    /// The (cached) listing of stream chunk files.
    pub fn chunk_index(&self) -> Arc<ChunkIndex> {
        Arc::clone(&self.chunks)
    }

    /// The world's change feed (one OS watcher per world).
    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    pub fn subscribe(&self, topic: Topic, key: &str) -> Subscription {
        self.feed.subscribe(topic, key)
    }

    // ----------------------------------------------------------------- runs

    /// `runs.get(runId)`: one read, one parse. `with_data` = `resolveData: 'all'`.
    pub async fn get_run(&self, run_id: &str, with_data: bool) -> Result<RunSnapshot> {
        assert_safe_entity_id("runId", run_id)?;
        let path = self.run_path(run_id);
        match read_json(&path).await? {
            Some(v) => parse_run(&path, &v, with_data),
            None => Err(Error::RunNotFound {
                run_id: run_id.to_string(),
            }),
        }
    }

    /// Blocking twin of [`get_run`](Self::get_run) for callers already on a blocking thread.
    pub fn get_run_sync(&self, run_id: &str, with_data: bool) -> Result<RunSnapshot> {
        LocalWorld::read_run(&self.root, run_id, with_data)
    }

    /// [`get_run_sync`](Self::get_run_sync) of the world at `root`.
    pub(crate) fn read_run(root: &Path, run_id: &str, with_data: bool) -> Result<RunSnapshot> {
        assert_safe_entity_id("runId", run_id)?;
        let path = root.join("runs").join(format!("{run_id}.json"));
        match read_json_sync(&path)? {
            Some(v) => parse_run(&path, &v, with_data),
            None => Err(Error::RunNotFound {
                run_id: run_id.to_string(),
            }),
        }
    }

    /// Resolves once the run is completed, failed or cancelled (by this process or any
    /// other), with its data. Costs no thread and no poll per waiter: see
    /// [`TerminalWaiters`].
    pub async fn wait_terminal(&self, run_id: &str) -> Result<RunSnapshot> {
        self.terminal.wait(run_id).await
    }

    /// The registry of runs waited for (diagnostics, tests).
    pub fn terminal_waiters(&self) -> &Arc<TerminalWaiters> {
        &self.terminal
    }

    // --------------------------------------------------------------- events

    /// All events of one run in log order (createdAt, then eventId), reading only that
    /// run's files. Files that do not validate are skipped, as world-local skips them.
    pub async fn list_run_events(&self, run_id: &str) -> Result<Vec<EventSummary>> {
        assert_safe_entity_id("runId", run_id)?;
        let dir = self.root.join("events");
        let prefix = format!("{run_id}-");
        let mut names: Vec<String> = list_dir(&dir)
            .await?
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && n.ends_with(".json") && !n.contains(".tmp."))
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            if let Some(ev) = parse_json(&path, &bytes)
                .ok()
                .as_ref()
                .and_then(parse_event_summary)
            {
                out.push(ev);
            }
        }
        out.sort_by(|a, b| {
            a.created_at
                .total_cmp(&b.created_at)
                .then_with(|| a.event_id.cmp(&b.event_id))
        });
        Ok(out)
    }

    /// `events.create` through the state machine, on a blocking thread (the rules do a
    /// few small file operations each).
    pub(crate) async fn apply_event(
        &self,
        run_id: Option<&str>,
        request: Map<String, Value>,
    ) -> Result<Created> {
        let me = self.handle();
        let run_id = run_id.map(str::to_string);
        tokio::task::spawn_blocking(move || me.apply_event_sync(run_id.as_deref(), request))
            .await
            .map_err(|e| Error::Plain(format!("event creation task failed: {e}")))?
    }

    /// `events.create(runId, { eventType: 'run_cancelled', specVersion: 3 })`.
    pub async fn cancel_run(&self, run_id: &str) -> Result<CancelOutcome> {
        if run_id.is_empty() {
            return Err(Error::Plain(
                "runId is required for non-run_created events".into(),
            ));
        }
        let created = self
            .apply_event(Some(run_id), crate::storage::run_cancelled_request())
            .await?;
        Ok(created.applied.into())
    }

    /// `events.create(runId, { eventType: 'wait_completed', correlationId, specVersion,
    /// eventData: { resumeAt } })`, or the legacy form (`{ eventType, correlationId }`)
    /// when `legacy` is set.
    pub async fn complete_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> Result<()> {
        if run_id.is_empty() {
            return Err(Error::Plain(
                "runId is required for non-run_created events".into(),
            ));
        }
        assert_safe_entity_id("runId", run_id)?;
        let request = crate::storage::wait_completed_request(
            correlation_id,
            spec_version,
            resume_at_ms,
            legacy,
        );
        self.apply_event(Some(run_id), request).await?;
        Ok(())
    }

    /// `events.create(runId, { eventType: 'run_created', specVersion, eventData })`: the
    /// run file (created exclusively) and the event, in world-local's key order. Blocking
    /// (two small create-once files); see [`create_run`](Self::create_run).
    pub fn create_run_sync(&self, req: &CreateRun) -> Result<()> {
        assert_safe_entity_id("runId", &req.run_id)?;
        self.apply_event_sync(Some(&req.run_id), req.run_created_request())?;
        Ok(())
    }

    /// Async form of [`create_run_sync`](Self::create_run_sync), on a blocking thread.
    pub async fn create_run(self: &Arc<Self>, req: &CreateRun) -> Result<()> {
        let me = Arc::clone(self);
        let req = req.clone();
        tokio::task::spawn_blocking(move || me.create_run_sync(&req))
            .await
            .map_err(|e| Error::Plain(format!("run creation task failed: {e}")))?
    }
}

/// What `start()` writes for a new run.
#[derive(Debug, Clone)]
pub struct CreateRun {
    pub run_id: String,
    pub deployment_id: String,
    pub workflow_name: String,
    pub spec_version: i64,
    pub execution_context: Option<Value>,
    pub input: Payload,
}

impl CreateRun {
    /// The `run_created` request `start()` issues for it (both backends).
    pub fn run_created_request(&self) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("deploymentId".into(), json!(self.deployment_id));
        data.insert("workflowName".into(), json!(self.workflow_name));
        data.insert("input".into(), payload_json(&self.input));
        if let Some(ec) = &self.execution_context {
            data.insert("executionContext".into(), ec.clone());
        }
        let mut request = Map::new();
        request.insert("eventType".into(), json!("run_created"));
        request.insert("specVersion".into(), json!(self.spec_version));
        request.insert("eventData".into(), Value::Object(data));
        request
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
