//! The filesystem World, byte-compatible with `@workflow/world-local` 4.4.1: reads the
//! entities it writes and applies the `events.create` effects of the events the `Run`
//! handle creates (`run_cancelled`, `wait_completed`) exactly as it does.

use crate::error::{Error, Result};
use crate::ids::{assert_safe_entity_id, prefixed_id};
use crate::stream::ChunkIndex;
use crate::world::fsio::{
    list_dir, normalize_date, now_iso, parse_json, read_json, read_json_sync, remove_if_exists,
    to_pretty_json, write_exclusive, write_exclusive_sync, write_replace,
};
use crate::world::model::{
    parse_event_summary, parse_run, EventSummary, Payload, RunSnapshot, RunStatus,
};
use crate::world::watch::{ChangeFeed, Subscription, Topic};
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The spec version this World implements (`SPEC_VERSION_CURRENT`).
pub const SPEC_VERSION_CURRENT: i64 = 3;

pub struct LocalWorld {
    root: PathBuf,
    feed: Arc<ChangeFeed>,
    chunks: Arc<ChunkIndex>,
}

/// Result of creating a `run_cancelled` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run moved to `cancelled` (or did not exist: an orphan event was stored).
    Cancelled,
    /// The run was already cancelled; another `run_cancelled` event was appended.
    AlreadyCancelled,
    /// A legacy (spec ≤ 1) run was mutated directly, no event stored.
    LegacyCancelled,
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
        let feed = ChangeFeed::new(&root);
        let chunks = Arc::new(ChunkIndex::new(root.join("streams").join("chunks")));
        Ok(LocalWorld { root, feed, chunks })
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
        assert_safe_entity_id("runId", run_id)?;
        let path = self.run_path(run_id);
        match read_json_sync(&path)? {
            Some(v) => parse_run(&path, &v, with_data),
            None => Err(Error::RunNotFound {
                run_id: run_id.to_string(),
            }),
        }
    }

    pub(crate) async fn read_run_value(
        &self,
        run_id: &str,
    ) -> Result<Option<(RunSnapshot, Map<String, Value>)>> {
        let path = self.run_path(run_id);
        match read_json(&path).await? {
            None => Ok(None),
            Some(v) => {
                let snap = parse_run(&path, &v, false)?;
                match v {
                    Value::Object(m) => Ok(Some((snap, m))),
                    _ => Err(Error::corrupt(&path, "a run must be a JSON object")),
                }
            }
        }
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

    /// Publishes an event file exactly once (`writeExclusive`), world-local's key order:
    /// the request fields, then `runId`, `eventId`, `createdAt`, `specVersion`.
    pub(crate) async fn store_event(
        &self,
        run_id: &str,
        request: Map<String, Value>,
        spec_version: Value,
        created_at: &str,
    ) -> Result<String> {
        let event_id = prefixed_id("evnt");
        let mut ev = request;
        ev.insert("runId".into(), Value::String(run_id.to_string()));
        ev.insert("eventId".into(), Value::String(event_id.clone()));
        ev.insert("createdAt".into(), Value::String(created_at.to_string()));
        ev.insert("specVersion".into(), spec_version);
        let path = self
            .root
            .join("events")
            .join(format!("{run_id}-{event_id}.json"));
        let body = to_pretty_json(&Value::Object(ev));
        if !write_exclusive(&path, body.as_bytes()).await? {
            return Err(Error::EntityConflict(format!(
                "Event \"{event_id}\" already exists for run \"{run_id}\""
            )));
        }
        Ok(event_id)
    }

    /// Rebuilds a run file the way world-local's terminal transitions write it.
    fn terminal_run_value(old: &Map<String, Value>, status: RunStatus, now: &str) -> Value {
        let mut run = Map::new();
        for key in [
            "runId",
            "deploymentId",
            "workflowName",
            "specVersion",
            "executionContext",
            "input",
        ] {
            if let Some(v) = old.get(key) {
                if !v.is_null() {
                    run.insert(key.into(), v.clone());
                }
            }
        }
        for key in ["createdAt", "expiredAt", "startedAt"] {
            if let Some(v) = old.get(key).and_then(normalize_date) {
                run.insert(key.into(), v);
            }
        }
        run.insert("status".into(), Value::String(status.as_str().into()));
        run.insert("completedAt".into(), Value::String(now.to_string()));
        run.insert("updatedAt".into(), Value::String(now.to_string()));
        Value::Object(run)
    }

    /// `events.create(runId, { eventType: 'run_cancelled', specVersion: 3 })`.
    pub async fn cancel_run(&self, run_id: &str) -> Result<CancelOutcome> {
        if run_id.is_empty() {
            return Err(Error::Plain(
                "runId is required for non-run_created events".into(),
            ));
        }
        assert_safe_entity_id("runId", run_id)?;
        // One instant for the event and the entity, as world-local does.
        let now = now_iso();
        let current = self.read_run_value(run_id).await?;
        let request = |spec: i64| {
            let mut m = Map::new();
            m.insert("eventType".into(), json!("run_cancelled"));
            m.insert("specVersion".into(), json!(spec));
            m
        };
        if let Some((snap, old)) = &current {
            snap.check_supported()?;
            if snap.is_legacy() {
                // Legacy runs are mutated directly; no event is stored and waits are kept.
                let run = Self::terminal_run_value(old, RunStatus::Cancelled, &now);
                write_replace(&self.run_path(run_id), to_pretty_json(&run).as_bytes()).await?;
                self.delete_hooks_of_run(run_id).await?;
                return Ok(CancelOutcome::LegacyCancelled);
            }
            match snap.status {
                RunStatus::Cancelled => {
                    self.store_event(run_id, request(3), json!(3), &now).await?;
                    return Ok(CancelOutcome::AlreadyCancelled);
                }
                RunStatus::Completed | RunStatus::Failed => {
                    return Err(Error::EntityConflict(format!(
                        "Cannot transition run from terminal state \"{}\"",
                        snap.status.as_str()
                    )));
                }
                RunStatus::Pending | RunStatus::Running => {
                    let run = Self::terminal_run_value(old, RunStatus::Cancelled, &now);
                    write_replace(&self.run_path(run_id), to_pretty_json(&run).as_bytes()).await?;
                    self.delete_hooks_of_run(run_id).await?;
                    self.delete_waits_of_run(run_id).await?;
                }
            }
        }
        // world-local stores the event even when the run does not exist.
        self.store_event(run_id, request(3), json!(3), &now).await?;
        Ok(CancelOutcome::Cancelled)
    }

    /// `events.create(runId, { eventType: 'wait_completed', correlationId, specVersion,
    /// eventData: { resumeAt } })`, or the legacy form when `legacy` is set.
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
        assert_safe_entity_id("correlationId", correlation_id)?;
        let now = now_iso();
        let current = self.read_run_value(run_id).await?;
        let spec_json = |v: Option<f64>| match v {
            Some(v) if v.fract() == 0.0 => json!(v as i64),
            Some(v) => json!(v),
            None => json!(SPEC_VERSION_CURRENT),
        };
        let mut request = Map::new();
        request.insert("eventType".into(), json!("wait_completed"));
        request.insert("correlationId".into(), json!(correlation_id));
        if !legacy {
            request.insert("specVersion".into(), spec_json(spec_version));
            if let Some(ms) = resume_at_ms {
                request.insert(
                    "eventData".into(),
                    json!({ "resumeAt": crate::world::fsio::iso_from_ms(ms) }),
                );
            }
        }
        if let Some((snap, _)) = &current {
            snap.check_supported()?;
            if snap.is_legacy() {
                // Legacy runs: the event is appended, nothing else changes.
                self.store_event(run_id, request, json!(SPEC_VERSION_CURRENT), &now)
                    .await?;
                return Ok(());
            }
        }
        let spec = request
            .get("specVersion")
            .cloned()
            .unwrap_or(json!(SPEC_VERSION_CURRENT));
        let key = format!("{run_id}-{correlation_id}");
        let lock = self
            .root
            .join(".locks")
            .join("waits")
            .join(format!("{key}.completed"));
        if !write_exclusive(&lock, b"").await? {
            return Err(Error::EntityConflict(format!(
                "Wait \"{correlation_id}\" already completed"
            )));
        }
        let wait_path = self.root.join("waits").join(format!("{key}.json"));
        let existing = match read_json(&wait_path).await {
            Ok(Some(Value::Object(m))) => m,
            Ok(_) => {
                let _ = remove_if_exists(&lock).await;
                return Err(Error::World(format!("Wait \"{correlation_id}\" not found")));
            }
            Err(e) => {
                let _ = remove_if_exists(&lock).await;
                return Err(e);
            }
        };
        // Keys world-local's WaitSchema keeps, in their stored order, then the update.
        let mut wait = Map::new();
        for (k, v) in &existing {
            let keep = match k.as_str() {
                "waitId" | "runId" | "status" | "specVersion" => Some(v.clone()),
                "resumeAt" | "completedAt" | "createdAt" | "updatedAt" => normalize_date(v),
                _ => None,
            };
            if let Some(v) = keep {
                wait.insert(k.clone(), v);
            }
        }
        wait.insert("status".into(), json!("completed"));
        wait.insert("completedAt".into(), json!(now));
        wait.insert("updatedAt".into(), json!(now));
        write_replace(&wait_path, to_pretty_json(&Value::Object(wait)).as_bytes()).await?;
        self.store_event(run_id, request, spec, &now).await?;
        Ok(())
    }

    /// `events.create(runId, { eventType: 'run_created', specVersion, eventData })`: the
    /// run file (created exclusively) and the event, in world-local's key order. Blocking
    /// (two small create-once files); see [`create_run`](Self::create_run).
    pub fn create_run_sync(&self, req: &CreateRun) -> Result<()> {
        assert_safe_entity_id("runId", &req.run_id)?;
        validate_run_id_time(&req.run_id)?;
        let now = now_iso();
        let input = payload_json(&req.input);
        let mut run = Map::new();
        run.insert("runId".into(), json!(req.run_id));
        run.insert("deploymentId".into(), json!(req.deployment_id));
        run.insert("status".into(), json!("pending"));
        run.insert("workflowName".into(), json!(req.workflow_name));
        run.insert("specVersion".into(), json!(req.spec_version));
        if let Some(ec) = &req.execution_context {
            run.insert("executionContext".into(), ec.clone());
        }
        run.insert("input".into(), input.clone());
        run.insert("createdAt".into(), json!(now));
        run.insert("updatedAt".into(), json!(now));
        let path = self.run_path(&req.run_id);
        if !write_exclusive_sync(&path, to_pretty_json(&Value::Object(run)).as_bytes())? {
            return Err(Error::EntityConflict(format!(
                "Workflow run \"{}\" already exists",
                req.run_id
            )));
        }
        let mut data = Map::new();
        data.insert("deploymentId".into(), json!(req.deployment_id));
        data.insert("workflowName".into(), json!(req.workflow_name));
        data.insert("input".into(), input);
        if let Some(ec) = &req.execution_context {
            data.insert("executionContext".into(), ec.clone());
        }
        let mut ev = Map::new();
        ev.insert("eventType".into(), json!("run_created"));
        ev.insert("specVersion".into(), json!(req.spec_version));
        ev.insert("eventData".into(), Value::Object(data));
        let event_id = prefixed_id("evnt");
        ev.insert("runId".into(), json!(req.run_id));
        ev.insert("eventId".into(), json!(event_id));
        ev.insert("createdAt".into(), json!(now));
        let ev_path = self
            .root
            .join("events")
            .join(format!("{}-{event_id}.json", req.run_id));
        if !write_exclusive_sync(&ev_path, to_pretty_json(&Value::Object(ev)).as_bytes())? {
            return Err(Error::EntityConflict(format!(
                "Event \"{event_id}\" already exists for run \"{}\"",
                req.run_id
            )));
        }
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

    // ---------------------------------------------------------- side effects

    /// Deletes every live hook of the run with its token claim and recovery marker.
    async fn delete_hooks_of_run(&self, run_id: &str) -> Result<()> {
        let dir = self.root.join("hooks");
        for name in list_dir(&dir).await? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.contains(".tmp.") {
                continue;
            }
            let path = dir.join(&name);
            // A hook file we cannot parse is left alone rather than failing the cancel
            // half-way (the run file is already written).
            let Ok(Some(hook)) = read_json(&path).await else {
                continue;
            };
            let (Some(hook_run), Some(token), Some(hook_id)) = (
                hook.get("runId").and_then(Value::as_str),
                hook.get("token").and_then(Value::as_str),
                hook.get("hookId").and_then(Value::as_str),
            ) else {
                continue;
            };
            if hook_run != run_id {
                continue;
            }
            let tokens = dir.join("tokens");
            remove_if_exists(&tokens.join(format!("{}.json", sha256_hex(token.as_bytes()))))
                .await?;
            let marker = sha256_hex(format!("{token}\0{hook_run}\0{hook_id}").as_bytes());
            remove_if_exists(&tokens.join(format!("{marker}.recovery.json"))).await?;
            remove_if_exists(&path).await?;
        }
        Ok(())
    }

    async fn delete_waits_of_run(&self, run_id: &str) -> Result<()> {
        let dir = self.root.join("waits");
        let prefix = format!("{run_id}-");
        for name in list_dir(&dir).await? {
            if name.starts_with(&prefix) && name.ends_with(".json") {
                remove_if_exists(&dir.join(&name)).await?;
            }
        }
        Ok(())
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

/// A payload as world-local writes it in JSON.
pub fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Bytes(b) => json!({
            "__type": "Uint8Array",
            "data": base64::engine::general_purpose::STANDARD.encode(b),
        }),
        Payload::Json(v) => v.clone(),
    }
}

/// A client-supplied run id must be a ULID from the last 24 h or the next 5 min.
pub(crate) fn validate_run_id_time(run_id: &str) -> Result<()> {
    let raw = run_id.strip_prefix("wrun_").unwrap_or(run_id);
    let Some(ts) = crate::ids::ulid_time_ms(raw) else {
        return Err(Error::World(format!(
            "Invalid runId: \"{run_id}\" is not a valid ULID"
        )));
    };
    let now = crate::world::fsio::now_ms();
    let diff = now - ts as f64;
    let (past, future) = (24.0 * 3600.0 * 1000.0, 5.0 * 60.0 * 1000.0);
    if (diff > 0.0 && diff <= past) || (diff <= 0.0 && -diff <= future) {
        return Ok(());
    }
    let direction = if diff > 0.0 { "past" } else { "future" };
    let threshold = if diff > 0.0 { past } else { future };
    Err(Error::World(format!(
        "Invalid runId timestamp: embedded timestamp is {}s in the {direction} (threshold: {}s)",
        (diff.abs() / 1000.0).round() as i64,
        (threshold / 1000.0).round() as i64
    )))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
