//! The local World's side of `events.create`: the storage primitives the shared state
//! machine ([`crate::machine`]) runs on — files, create-once links and lock files, in
//! world-local 4.4.1's layout — the token-claim recovery world-local performs, and the
//! raw listings the JS engine replays from.
//!
//! Everything here is blocking (small files, a few syscalls each); the async entry point
//! runs it on a blocking thread.

use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::machine::json::literal;
use crate::machine::{
    self, Created, Entity, EventStore, Once, Request, RunState, StepState, TokenClaim,
};
use crate::world::fsio::{
    list_dir_sync, normalize_date, parse_date_ms, parse_json, read_json_sync,
    remove_if_exists_sync, to_compact_json, to_pretty_json, write_exclusive_sync, write_new_sync,
    write_replace_sync,
};
use crate::world::hooks::{live_hook_event, parse_hook};
use crate::world::local::{sha256_hex, LocalWorld};
use crate::world::model::parse_run;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use crate::machine::EventResult;

/// world-local's tag suffix on a file id (`.vitest-0`); an untagged world ignores tagged
/// files when it rebuilds hooks from the log.
fn has_tag(stem: &str) -> bool {
    match stem.rfind('.') {
        None => false,
        Some(i) => {
            let tag = &stem[i + 1..];
            let mut chars = tag.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
    }
}

/// A token claim (`hooks/tokens/<sha256>.json`) that passes world-local's schema.
struct Claim {
    run_id: String,
    hook_id: Option<String>,
    event_id: Option<String>,
}

fn read_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    match read_json_sync(path)? {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(Error::corrupt(path, "expected a JSON object")),
    }
}

fn read_claim(path: &Path) -> Result<Option<Claim>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    // Unparsable or schema-invalid claims count as absent, as in world-local.
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    let opt = |k: &str| -> std::result::Result<Option<String>, ()> {
        match m.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(()),
        }
    };
    let (Some(Value::String(run_id)), Ok(hook_id), Ok(event_id)) =
        (m.get("runId"), opt("hookId"), opt("eventId"))
    else {
        return Ok(None);
    };
    Ok(Some(Claim {
        run_id: run_id.clone(),
        hook_id,
        event_id,
    }))
}

/// A minimally valid stored event (what `EventSchema` would accept for our purposes).
fn event_keys(v: &Value) -> Option<(f64, String)> {
    let o = v.as_object()?;
    o.get("eventType")?.as_str()?;
    o.get("runId")?.as_str()?;
    if let Some(c) = o.get("correlationId") {
        c.as_str()?;
    }
    let t = parse_date_ms(o.get("createdAt")?)?;
    Some((t, o.get("eventId")?.as_str()?.to_string()))
}

/// In-process serialisation of `hook_created` per (data dir, run, hook), like
/// world-local's per-instance mutex; other processes are arbitrated by the claim files.
fn hook_locks() -> &'static Mutex<HashMap<String, Arc<Mutex<()>>>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    LOCKS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn with_hook_lock<T>(key: String, f: impl FnOnce() -> T) -> T {
    let lock = {
        let mut map = hook_locks().lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key.clone()).or_default())
    };
    let out = {
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        f()
    };
    let mut map = hook_locks().lock().unwrap_or_else(|p| p.into_inner());
    // The map and this call hold the only references: nobody else waits on it.
    if Arc::strong_count(&lock) == 2 {
        map.remove(&key);
    }
    out
}

// ------------------------------------------------------------------ the World

impl LocalWorld {
    fn path_of(&self, dir: &str, file_id: &str) -> Result<PathBuf> {
        assert_safe_entity_id("fileId", file_id)?;
        Ok(self.root().join(dir).join(format!("{file_id}.json")))
    }

    fn token_claim_path(&self, token: &str) -> PathBuf {
        self.root()
            .join("hooks")
            .join("tokens")
            .join(format!("{}.json", sha256_hex(token.as_bytes())))
    }

    fn recovery_marker_path(&self, token: &str, run_id: &str, hook_id: &str) -> PathBuf {
        let key = sha256_hex(format!("{token}\0{run_id}\0{hook_id}").as_bytes());
        self.root()
            .join("hooks")
            .join("tokens")
            .join(format!("{key}.recovery.json"))
    }

    /// `events.create(runId, request)` where `request` is the JSON text of
    /// `{ eventType, correlationId?, specVersion?, eventData? }`.
    pub fn create_event_sync(&self, run_id: Option<&str>, request: &str) -> Result<EventResult> {
        let data = match serde_json::from_str::<Value>(request) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(Error::InvalidArgument(
                    "event request must be a JSON object".into(),
                ))
            }
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "event request is not valid JSON: {e}"
                )))
            }
        };
        self.create_event_value_sync(run_id, data)
    }

    /// Async form of [`create_event_sync`](Self::create_event_sync), on a blocking thread.
    pub async fn create_event(
        self: &Arc<Self>,
        run_id: Option<String>,
        request: String,
    ) -> Result<EventResult> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.create_event_sync(run_id.as_deref(), &request))
            .await
            .map_err(|e| Error::Plain(format!("event creation task failed: {e}")))?
    }

    /// `events.create` with an already parsed request object.
    pub fn create_event_value_sync(
        &self,
        run_id: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<EventResult> {
        self.apply_event_sync(run_id, data).map(|c| c.result)
    }

    /// `events.create` through the state machine, telling how the event was applied.
    /// Returns once what it wrote is durable (see [`crate::world::durable`]).
    pub(crate) fn apply_event_sync(
        &self,
        run_id: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<Created> {
        crate::world::durable::committed(|| self.apply_event_uncommitted(run_id, data))
    }

    pub(crate) fn apply_event_uncommitted(
        &self,
        run_id: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<Created> {
        let req = Request::parse(run_id, data)?;
        if let (true, Some(r), Some(c)) = (
            req.event_type == "hook_created",
            &req.run_id,
            &req.correlation_id,
        ) {
            let key = format!("{}\0{r}-{c}.hook", self.root().display());
            return with_hook_lock(key, || machine::apply(self, &req));
        }
        machine::apply(self, &req)
    }

    /// world-local's `write` of a new event file (refuses to overwrite).
    fn store_event_file(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<()> {
        let path = self.path_of("events", &format!("{run_id}-{event_id}"))?;
        write_new_sync(&path, to_pretty_json(event).as_bytes())
    }

    fn write_entity(&self, dir: &str, id: &str, entity: &Map<String, Value>) -> Result<()> {
        write_replace_sync(&self.path_of(dir, id)?, to_pretty_json(entity).as_bytes())
    }

    fn write_new_entity(&self, dir: &str, id: &str, entity: &Map<String, Value>) -> Result<()> {
        write_new_sync(&self.path_of(dir, id)?, to_pretty_json(entity).as_bytes())
    }

    /// `.locks/<kind>/<id>.<suffix>`
    pub(crate) fn marker_path(&self, marker: &Once) -> Result<PathBuf> {
        let (kind, id, suffix) = match marker {
            Once::StepTerminal(k) => ("steps", k, "terminal"),
            Once::HookDisposed(k) => ("hooks", k, "disposed"),
            Once::WaitCompleted(k) => ("waits", k, "completed"),
        };
        assert_safe_entity_id("fileId", id)?;
        Ok(self
            .root()
            .join(".locks")
            .join(kind)
            .join(format!("{id}.{suffix}")))
    }

    /// A hook entity that passes `HookSchema`, as stored.
    fn read_hook_value(&self, hook_id: &str) -> Result<Option<Map<String, Value>>> {
        let path = self.path_of("hooks", hook_id)?;
        match read_json_sync(&path)? {
            None => Ok(None),
            Some(v) => {
                parse_hook(&path, &v)?;
                match v {
                    Value::Object(m) => Ok(Some(m)),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Pins a canonical `hook_created` event id for a claim written without one (older
    /// world-local): an already published event wins (its entity is repaired and the
    /// retry is a conflict), otherwise the first retry's id, through a recovery marker.
    fn pin_legacy_claim(
        &self,
        token: &str,
        run_id: &str,
        hook_id: &str,
        candidate: &str,
    ) -> Result<String> {
        let dir = self.root().join("events");
        let prefix = format!("{run_id}-");
        let mut newest: Option<(f64, String)> = None;
        for name in list_dir_sync(&dir)? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if !stem.starts_with(&prefix) {
                continue;
            }
            let path = dir.join(&name);
            let Ok(Some(v)) = read_json_sync(&path) else {
                continue;
            };
            let Some((t, id)) = event_keys(&v) else {
                continue;
            };
            if v.get("eventType").and_then(Value::as_str) != Some("hook_created")
                || v.get("correlationId").and_then(Value::as_str) != Some(hook_id)
            {
                continue;
            }
            let newer = match &newest {
                None => true,
                Some((nt, nid)) => t > *nt || (t == *nt && id > *nid),
            };
            if newer {
                newest = Some((t, id));
            }
        }
        if let Some((_, published)) = newest {
            self.repair_hook_from_event(run_id, hook_id, &published)?;
            return Err(machine::hooks::already_created(hook_id));
        }
        let marker = self.recovery_marker_path(token, run_id, hook_id);
        let body = to_compact_json(&json!({ "eventId": candidate }));
        if write_exclusive_sync(&marker, body.as_bytes())? {
            return Ok(candidate.to_string());
        }
        let pinned = match std::fs::read(&marker) {
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| v.get("eventId").and_then(Value::as_str).map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&marker, e)),
        };
        pinned.ok_or_else(|| machine::hooks::already_created(hook_id))
    }

    /// Rewrites a missing hook entity from its persisted `hook_created` event (never from
    /// the retry's request), create-once.
    fn repair_hook_from_event(&self, run_id: &str, hook_id: &str, event_id: &str) -> Result<()> {
        let path = self.path_of("events", &format!("{run_id}-{event_id}"))?;
        let Some(ev) = read_json_sync(&path)? else {
            return Ok(());
        };
        if event_keys(&ev).is_none()
            || ev.get("eventType").and_then(Value::as_str) != Some("hook_created")
            || ev.get("correlationId").and_then(Value::as_str) != Some(hook_id)
        {
            return Ok(());
        }
        if self.read_hook_value(hook_id)?.is_some() {
            return Ok(());
        }
        let Some(token) = ev.pointer("/eventData/token").and_then(Value::as_str) else {
            return Ok(());
        };
        let hook = hook_from_event(&ev, run_id, hook_id, token);
        write_exclusive_sync(
            &self.path_of("hooks", hook_id)?,
            to_pretty_json(&Value::Object(hook)).as_bytes(),
        )?;
        Ok(())
    }

    /// world-local's `rebuildLiveHookByTokenFromEventLog`: the last `hook_created` for the
    /// token not closed by its `hook_disposed` or a terminal run event (and whose run is
    /// not terminal) gets its claim and entity files back.
    fn rebuild_live_hook_sync(&self, token: &str) -> Result<()> {
        let dir = self.root().join("events");
        let mut events: Vec<(f64, String, Value)> = Vec::new();
        for name in list_dir_sync(&dir)? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if has_tag(stem) {
                continue;
            }
            let path = dir.join(&name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let Ok(v) = parse_json(&path, &bytes) else {
                continue;
            };
            if let Some((t, id)) = event_keys(&v) {
                events.push((t, id, v));
            }
        }
        let live = live_hook_event(&mut events, token);
        let Some(ev) = live else { return Ok(()) };
        let run_id = ev.get("runId").and_then(Value::as_str).unwrap_or("");
        let hook_id = ev
            .get("correlationId")
            .and_then(Value::as_str)
            .unwrap_or("");
        if assert_safe_entity_id("runId", run_id).is_err()
            || assert_safe_entity_id("hookId", hook_id).is_err()
        {
            return Ok(());
        }
        if let Some(run) = EventStore::load_run(self, run_id)? {
            if run.snap.status.is_terminal() {
                return Ok(());
            }
        }
        let claim = json!({
            "token": token,
            "hookId": hook_id,
            "runId": run_id,
            "eventId": ev.get("eventId").cloned().unwrap_or(Value::Null),
        });
        write_exclusive_sync(
            &self.token_claim_path(token),
            to_compact_json(&claim).as_bytes(),
        )?;
        let hook = hook_from_event(ev, run_id, hook_id, token);
        write_exclusive_sync(
            &self.path_of("hooks", hook_id)?,
            to_pretty_json(&Value::Object(hook)).as_bytes(),
        )?;
        Ok(())
    }

    /// Whether a token claim only stands because a clean-up failed: its run ended, or
    /// its hook was disposed. Unreadable runs count as live (the claim stays).
    fn claim_left_behind(&self, c: &Claim) -> bool {
        if assert_safe_entity_id("runId", &c.run_id).is_err() {
            return false;
        }
        if let Ok(Some(run)) = EventStore::load_run(self, &c.run_id) {
            if run.snap.status.is_terminal() {
                return true;
            }
        }
        match &c.hook_id {
            Some(h) => self
                .marker_path(&Once::HookDisposed(h.clone()))
                .is_ok_and(|p| p.symlink_metadata().is_ok()),
            None => false,
        }
    }

    /// Deletes every hook of the run with its token claim and recovery marker.
    fn delete_hooks_of_run_sync(&self, run_id: &str) -> Result<()> {
        let dir = self.root().join("hooks");
        let mut first_error = None;
        for name in list_dir_sync(&dir)? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.is_empty() {
                continue;
            }
            let path = dir.join(&name);
            // Unreadable hook files are left alone (the run file is already written).
            let Ok(Some(v)) = read_json_sync(&path) else {
                continue;
            };
            if parse_hook(&path, &v).is_err() {
                continue;
            }
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            if s("runId") != run_id {
                continue;
            }
            // Every hook is tried (one that cannot be removed does not keep the others),
            // the hook itself first: a claim left behind is freed by the next claim.
            let token = s("token");
            for removed in [
                remove_if_exists_sync(&path),
                remove_if_exists_sync(&self.token_claim_path(&token)),
                remove_if_exists_sync(&self.recovery_marker_path(&token, run_id, &s("hookId"))),
            ] {
                if let Err(e) = removed {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn delete_waits_of_run_sync(&self, run_id: &str) -> Result<()> {
        let dir = self.root().join("waits");
        let prefix = format!("{run_id}-");
        let mut first_error = None;
        for name in list_dir_sync(&dir)? {
            if name.starts_with(&prefix) && name.ends_with(".json") {
                if let Err(e) = remove_if_exists_sync(&dir.join(&name)) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    // -------------------------------------------------------------- listings

    /// The event files of a run (`events/<runId>-*.json`) with their bytes, unordered; a
    /// file removed between the listing and its read is left out.
    pub(crate) fn run_event_files(&self, run_id: &str) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        assert_safe_entity_id("runId", run_id)?;
        let dir = self.root().join("events");
        let prefix = format!("{run_id}-");
        let mut out = Vec::new();
        for name in list_dir_sync(&dir)? {
            if !name.starts_with(&prefix) || !name.ends_with(".json") {
                continue;
            }
            let path = dir.join(&name);
            match std::fs::read(&path) {
                Ok(b) => out.push((path, b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(out)
    }

    /// Every event of the run, exactly as stored, in log order (createdAt, then eventId,
    /// as `events.list` sorts; with monotonic ULIDs that is event-id order), as one JSON
    /// array text. Files that are not events are skipped.
    pub fn list_events_json_sync(&self, run_id: &str) -> Result<String> {
        let mut items: Vec<(f64, String, String)> = Vec::new();
        for (path, bytes) in self.run_event_files(run_id)? {
            let text = String::from_utf8(bytes).map_err(|_| {
                let e = std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                );
                Error::io(&path, e)
            })?;
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some((t, id)) = event_keys(&v) {
                items.push((t, id, text));
            }
        }
        items.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(join_array(items.into_iter().map(|i| i.2)))
    }

    /// Every run entity, exactly as stored, whose status is one of `statuses` (all when
    /// `None`), ordered by createdAt then runId, as one JSON array text. Files that are
    /// not valid runs are skipped.
    pub fn list_runs_json_sync(&self, statuses: Option<&[String]>) -> Result<String> {
        self.list_runs_report_sync(statuses).map(|(text, _)| text)
    }

    /// [`list_runs_json_sync`](Self::list_runs_json_sync) with the files it skipped: one
    /// error naming each file that is not a readable run (`CORRUPT_FILE` for bad
    /// contents, the I/O error otherwise). Only a `runs` directory that cannot be listed
    /// fails the whole listing.
    pub fn list_runs_report_sync(
        &self,
        statuses: Option<&[String]>,
    ) -> Result<(String, Vec<Error>)> {
        let dir = self.root().join("runs");
        let mut items: Vec<(f64, String, String)> = Vec::new();
        let mut faults = Vec::new();
        for name in list_dir_sync(&dir)? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.is_empty() {
                continue;
            }
            let path = dir.join(&name);
            let text = match read_text(&path) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    faults.push(e);
                    continue;
                }
            };
            let snap = match parse_json(&path, text.as_bytes())
                .and_then(|v| parse_run(&path, &v, false))
            {
                Ok(s) => s,
                Err(e) => {
                    faults.push(e);
                    continue;
                }
            };
            if let Some(wanted) = statuses {
                if !wanted.iter().any(|s| s == snap.status.as_str()) {
                    continue;
                }
            }
            items.push((snap.created_at, snap.run_id, text));
        }
        items.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok((join_array(items.into_iter().map(|i| i.2)), faults))
    }
}

/// A file's text; `None` when it is gone. Not UTF-8 is a corrupt file.
fn read_text(path: &Path) -> Result<Option<String>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| Error::corrupt(path, format!("not valid UTF-8 ({e})")))
}

/// The rules' storage primitives on world-local's files: entities as pretty JSON,
/// create-once files by hard link, once-only markers as lock files.
impl EventStore for LocalWorld {
    fn run_location(&self, run_id: &str) -> Result<PathBuf> {
        self.path_of("runs", run_id)
    }

    fn load_run(&self, run_id: &str) -> Result<Option<RunState>> {
        let path = self.path_of("runs", run_id)?;
        match read_json_sync(&path)? {
            None => Ok(None),
            Some(v) => RunState::parse(&path, &v).map(Some),
        }
    }

    fn create_run(&self, run_id: &str, run: &Map<String, Value>, implicit: bool) -> Result<bool> {
        let run = Value::Object(run.clone());
        // world-local writes the run of a resilient start without indentation.
        let body = if implicit {
            to_compact_json(&run)
        } else {
            to_pretty_json(&run)
        };
        write_exclusive_sync(&self.path_of("runs", run_id)?, body.as_bytes())
    }

    fn replace_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()> {
        self.write_entity("runs", run_id, run)
    }

    fn delete_hooks_of_run(&self, run_id: &str) -> Result<()> {
        self.delete_hooks_of_run_sync(run_id)
    }

    fn delete_waits_of_run(&self, run_id: &str) -> Result<()> {
        self.delete_waits_of_run_sync(run_id)
    }

    fn load_step(&self, step_key: &str) -> Result<Option<StepState>> {
        let path = self.path_of("steps", step_key)?;
        match read_object(&path)? {
            None => Ok(None),
            Some(m) => StepState::parse(&path, &m).map(Some),
        }
    }

    fn create_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        self.write_new_entity("steps", step_key, step)
    }

    fn replace_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        self.write_entity("steps", step_key, step)
    }

    fn hook_exists(&self, hook_id: &str) -> Result<bool> {
        Ok(self.read_hook_value(hook_id)?.is_some())
    }

    fn claim_token(
        &self,
        token: &str,
        claim: &Map<String, Value>,
        hook_id_text: &str,
    ) -> Result<TokenClaim> {
        let claim_path = self.token_claim_path(token);
        if read_claim(&claim_path)?.is_none() {
            // No claim: the log is the only record of a live hook for this token.
            self.rebuild_live_hook_sync(token)?;
        }
        let body = to_compact_json(claim);
        if write_exclusive_sync(&claim_path, body.as_bytes())? {
            return Ok(TokenClaim::Claimed);
        }
        let existing = read_claim(&claim_path)?;
        let field = |k: &str| claim.get(k).and_then(Value::as_str);
        let (run_id, hook_id) = (field("runId").unwrap_or(""), field("hookId"));
        match existing {
            Some(c) if c.run_id == run_id && c.hook_id.as_deref() == hook_id => {
                let event_id = match c.event_id {
                    Some(id) => id,
                    None => {
                        let candidate = field("eventId").unwrap_or("");
                        self.pin_legacy_claim(token, run_id, hook_id_text, candidate)?
                    }
                };
                Ok(TokenClaim::Retry { event_id })
            }
            Some(c) if self.claim_left_behind(&c) => {
                // A clean-up that failed after the holder's run ended (or its hook was
                // disposed) left the claim: remove it with its hook, claim again once.
                let freed = remove_if_exists_sync(&claim_path).and_then(|()| match &c.hook_id {
                    Some(h) => remove_if_exists_sync(&self.path_of("hooks", h)?),
                    None => Ok(()),
                });
                if let Err(e) = freed {
                    crate::error::report("Could not remove a hook token claim left behind", &e);
                } else if write_exclusive_sync(&claim_path, body.as_bytes())? {
                    return Ok(TokenClaim::Claimed);
                }
                Ok(TokenClaim::Taken {
                    run_id: read_claim(&claim_path)?.map(|c| c.run_id),
                })
            }
            other => Ok(TokenClaim::Taken {
                run_id: other.map(|c| c.run_id),
            }),
        }
    }

    fn write_hook(&self, hook_id: &str, hook: &Map<String, Value>, overwrite: bool) -> Result<()> {
        if overwrite {
            self.write_entity("hooks", hook_id, hook)
        } else {
            self.write_new_entity("hooks", hook_id, hook)
        }
    }

    fn delete_hook(&self, hook_id: &str) -> Result<()> {
        let hook_path = self.path_of("hooks", hook_id)?;
        if let Some(h) = self.read_hook_value(hook_id)? {
            let s = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (token, h_run, h_id) = (s("token"), s("runId"), s("hookId"));
            remove_if_exists_sync(&self.token_claim_path(&token))?;
            remove_if_exists_sync(&self.recovery_marker_path(&token, &h_run, &h_id))?;
        }
        remove_if_exists_sync(&hook_path)
    }

    fn repair_hook(&self, run_id: &str, hook_id: &str, event_id: &str) -> Result<()> {
        self.repair_hook_from_event(run_id, hook_id, event_id)
    }

    fn load_wait(&self, wait_key: &str) -> Result<Option<Map<String, Value>>> {
        let path = self.path_of("waits", wait_key)?;
        match read_object(&path)? {
            None => Ok(None),
            Some(m) => machine::entities::parse_wait(&path, &m).map(Some),
        }
    }

    fn create_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        self.write_new_entity("waits", wait_key, wait)
    }

    fn replace_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        self.write_entity("waits", wait_key, wait)
    }

    fn remove_entity(&self, kind: Entity, key: &str) -> Result<()> {
        let dir = match kind {
            Entity::Run => "runs",
            Entity::Step => "steps",
            Entity::Wait => "waits",
        };
        remove_if_exists_sync(&self.path_of(dir, key)?)
    }

    fn claim_once(&self, marker: &Once) -> Result<bool> {
        write_exclusive_sync(&self.marker_path(marker)?, b"")
    }

    fn release_once(&self, marker: &Once) -> Result<()> {
        remove_if_exists_sync(&self.marker_path(marker)?)
    }

    fn store_event(&self, run_id: &str, event_id: &str, event: &Map<String, Value>) -> Result<()> {
        self.store_event_file(run_id, event_id, event)
    }

    fn publish_event(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<bool> {
        let path = self.path_of("events", &format!("{run_id}-{event_id}"))?;
        write_exclusive_sync(&path, to_pretty_json(event).as_bytes())
    }
}

fn join_array(texts: impl Iterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, t) in texts.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(t.trim());
    }
    out.push(']');
    out
}

/// The hook entity world-local rebuilds from a `hook_created` event (`isWebhook ?? true`).
fn hook_from_event(ev: &Value, run_id: &str, hook_id: &str, token: &str) -> Map<String, Value> {
    let created = ev.get("createdAt").and_then(normalize_date);
    literal(vec![
        ("runId", Some(json!(run_id))),
        ("hookId", Some(json!(hook_id))),
        ("token", Some(json!(token))),
        ("metadata", ev.pointer("/eventData/metadata").cloned()),
        ("ownerId", Some(json!("local-owner"))),
        ("projectId", Some(json!("local-project"))),
        ("environment", Some(json!("local"))),
        ("createdAt", created),
        ("specVersion", ev.get("specVersion").cloned()),
        (
            "isWebhook",
            Some(match ev.pointer("/eventData/isWebhook") {
                None | Some(Value::Null) => json!(true),
                Some(v) => v.clone(),
            }),
        ),
    ])
}
