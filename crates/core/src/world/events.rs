//! `events.create(runId, data)` of @workflow/world-local 4.4.1 for every event type, with
//! its entity effects, checks, lock files and key orders, plus the raw listings the JS
//! engine replays from.
//!
//! Everything here is blocking (small files, a few syscalls each); the async entry point
//! runs it on a blocking thread. Requests and results use world-local's JSON encoding:
//! binary payloads as `{"__type":"Uint8Array","data":<base64>}`, dates as ISO strings.
//!
//! Two JavaScript details decide the byte layout and are reproduced on purpose:
//! * the event is `{...request, runId, eventId, createdAt, specVersion}`: the request's
//!   keys first, in the caller's order;
//! * an updated entity is `{...stored, changes}` where `stored` went through a zod schema:
//!   its keys are in *schema* order (unknown keys dropped, dates re-printed), keys that
//!   were already there keep their place and new keys go to the end.

use crate::error::{Error, Result};
use crate::ids::{assert_safe_entity_id, prefixed_id, ulid_time_ms};
use crate::world::fsio::{
    iso_from_ms, list_dir_sync, normalize_date, now_iso, now_ms, parse_date_ms, parse_json,
    read_json_sync, remove_if_exists_sync, to_compact_json, to_pretty_json, write_exclusive_sync,
    write_new_sync, write_replace_sync,
};
use crate::world::hooks::{live_hook_event, parse_hook};
use crate::world::local::{sha256_hex, validate_run_id_time, LocalWorld, SPEC_VERSION_CURRENT};
use crate::world::model::{parse_run, RunSnapshot, RunStatus};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What `events.create` returns with `resolveData: 'all'`, in the on-disk encoding.
/// `event` is absent only for the idempotent `run_started` on a running run and for a
/// legacy `run_cancelled`, as in world-local.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventResult {
    pub event: Option<Value>,
    pub run: Option<Value>,
    pub step: Option<Value>,
    pub hook: Option<Value>,
    pub wait: Option<Value>,
}

impl EventResult {
    /// `{ event?, run?, step?, hook?, wait? }`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("event", &self.event),
            ("run", &self.run),
            ("step", &self.step),
            ("hook", &self.hook),
            ("wait", &self.wait),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        Value::Object(m)
    }

    pub fn to_json(&self) -> String {
        to_compact_json(&self.to_value())
    }
}

// ------------------------------------------------------------------ zod views

#[derive(Clone, Copy)]
enum Field {
    /// kept as is (strings, numbers, payloads, records)
    Any,
    /// `z.coerce.date()`: re-printed as an ISO string
    Date,
    /// `StructuredErrorSchema`: `{ message, stack?, code? }`
    Error,
}

use Field::{Any, Date, Error as Err_};

const RUN_SCHEMA: &[(&str, Field)] = &[
    ("runId", Any),
    ("status", Any),
    ("deploymentId", Any),
    ("workflowName", Any),
    ("specVersion", Any),
    ("executionContext", Any),
    ("input", Any),
    ("output", Any),
    ("error", Err_),
    ("expiredAt", Date),
    ("startedAt", Date),
    ("completedAt", Date),
    ("createdAt", Date),
    ("updatedAt", Date),
];

const STEP_SCHEMA: &[(&str, Field)] = &[
    ("runId", Any),
    ("stepId", Any),
    ("stepName", Any),
    ("status", Any),
    ("input", Any),
    ("output", Any),
    ("error", Err_),
    ("attempt", Any),
    ("startedAt", Date),
    ("completedAt", Date),
    ("createdAt", Date),
    ("updatedAt", Date),
    ("retryAfter", Date),
    ("specVersion", Any),
];

const WAIT_SCHEMA: &[(&str, Field)] = &[
    ("waitId", Any),
    ("runId", Any),
    ("status", Any),
    ("resumeAt", Date),
    ("completedAt", Date),
    ("createdAt", Date),
    ("updatedAt", Date),
    ("specVersion", Any),
];

/// The object a zod schema parse yields, as JSON: schema key order, unknown keys
/// dropped, dates normalised.
fn zod_view(obj: &Map<String, Value>, schema: &[(&str, Field)]) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, field) in schema {
        let Some(v) = obj.get(*key) else { continue };
        match field {
            Field::Any => {
                out.insert((*key).into(), v.clone());
            }
            Field::Date => {
                if let Some(d) = normalize_date(v) {
                    out.insert((*key).into(), d);
                }
            }
            Field::Error => match v {
                Value::Object(e) => {
                    let mut err = Map::new();
                    for k in ["message", "stack", "code"] {
                        if let Some(x) = e.get(k) {
                            err.insert(k.into(), x.clone());
                        }
                    }
                    out.insert((*key).into(), Value::Object(err));
                }
                other => {
                    out.insert((*key).into(), other.clone());
                }
            },
        }
    }
    out
}

/// `{...base, k1: v1, ...}`: existing keys keep their place, new keys are appended, and
/// `None` (JS `undefined`) makes the key disappear from the JSON.
fn spread(base: &Map<String, Value>, changes: Vec<(&str, Option<Value>)>) -> Map<String, Value> {
    let mut m = base.clone();
    let mut removed: Vec<&str> = Vec::new();
    for (k, v) in changes {
        match v {
            Some(v) => {
                m.insert(k.into(), v);
                removed.retain(|r| *r != k);
            }
            None => {
                if m.contains_key(k) {
                    removed.push(k);
                }
            }
        }
    }
    if removed.is_empty() {
        return m;
    }
    m.into_iter()
        .filter(|(k, _)| !removed.contains(&k.as_str()))
        .collect()
}

/// A JS object literal: `None` values (undefined) are left out.
/// A new pending run as world-local creates it (key order included).
fn new_run_entity(
    run_id: &str,
    event_data: &Map<String, Value>,
    spec: &Value,
    now: &str,
) -> Map<String, Value> {
    let ed = |k: &str| event_data.get(k).cloned();
    literal(vec![
        ("runId", Some(json!(run_id))),
        ("deploymentId", ed("deploymentId")),
        ("status", Some(json!("pending"))),
        ("workflowName", ed("workflowName")),
        ("specVersion", Some(spec.clone())),
        ("executionContext", ed("executionContext")),
        ("input", ed("input")),
        ("createdAt", Some(json!(now))),
        ("updatedAt", Some(json!(now))),
    ])
}

fn literal(fields: Vec<(&str, Option<Value>)>) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    }
    m
}

fn js_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// `String(n)` for the numbers world-local prints in messages.
fn js_number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// `typeof e === 'string' ? e : (e?.message ?? 'Unknown error')`
fn error_message(e: Option<&Value>) -> Value {
    match e {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Object(o)) => match o.get("message") {
            Some(m) if !m.is_null() => m.clone(),
            _ => json!("Unknown error"),
        },
        _ => json!("Unknown error"),
    }
}

/// `e?.stack` (strings have no `stack`).
fn error_stack(e: Option<&Value>) -> Option<Value> {
    match e {
        Some(Value::Object(o)) => o.get("stack").cloned(),
        _ => None,
    }
}

fn step_is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

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

// -------------------------------------------------------------- stored state

struct RunState {
    snap: RunSnapshot,
    /// the run as `WorkflowRunSchema` yields it
    view: Map<String, Value>,
}

struct StepState {
    view: Map<String, Value>,
    status: String,
    attempt: f64,
    retry_after: Option<f64>,
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

fn parse_step(path: &Path, m: &Map<String, Value>) -> Result<StepState> {
    for k in ["runId", "stepId", "stepName"] {
        if !m.get(k).is_some_and(Value::is_string) {
            return Err(Error::corrupt(
                path,
                format!("field \"{k}\" must be a string"),
            ));
        }
    }
    let status = m
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| {
            matches!(
                *s,
                "pending" | "running" | "completed" | "failed" | "cancelled"
            )
        })
        .ok_or_else(|| Error::corrupt(path, "field \"status\" is not a step status"))?
        .to_string();
    let attempt = m
        .get("attempt")
        .and_then(Value::as_f64)
        .ok_or_else(|| Error::corrupt(path, "field \"attempt\" must be a number"))?;
    for k in ["createdAt", "updatedAt"] {
        if m.get(k).and_then(parse_date_ms).is_none() {
            return Err(Error::corrupt(
                path,
                format!("field \"{k}\" is not a valid date"),
            ));
        }
    }
    Ok(StepState {
        view: zod_view(m, STEP_SCHEMA),
        status,
        attempt,
        retry_after: m.get("retryAfter").and_then(parse_date_ms),
    })
}

fn parse_wait(path: &Path, m: &Map<String, Value>) -> Result<Map<String, Value>> {
    for k in ["waitId", "runId"] {
        if !m.get(k).is_some_and(Value::is_string) {
            return Err(Error::corrupt(
                path,
                format!("field \"{k}\" must be a string"),
            ));
        }
    }
    if !matches!(
        m.get("status").and_then(Value::as_str),
        Some("waiting" | "completed")
    ) {
        return Err(Error::corrupt(
            path,
            "field \"status\" is not a wait status",
        ));
    }
    Ok(zod_view(m, WAIT_SCHEMA))
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

    fn read_run_state(&self, run_id: &str) -> Result<Option<RunState>> {
        let path = self.path_of("runs", run_id)?;
        let Some(v) = read_json_sync(&path)? else {
            return Ok(None);
        };
        let snap = parse_run(&path, &v, false)?;
        let view = match &v {
            Value::Object(m) => zod_view(m, RUN_SCHEMA),
            _ => Map::new(),
        };
        Ok(Some(RunState { snap, view }))
    }

    fn read_step_state(&self, key: &str) -> Result<Option<StepState>> {
        let path = self.path_of("steps", key)?;
        match read_object(&path)? {
            None => Ok(None),
            Some(m) => parse_step(&path, &m).map(Some),
        }
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

    /// world-local's `write` of a new event file (refuses to overwrite).
    fn store_event_file(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<()> {
        let path = self.path_of("events", &format!("{run_id}-{event_id}"))?;
        write_new_sync(
            &path,
            to_pretty_json(&Value::Object(event.clone())).as_bytes(),
        )
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
        let run_id = run_id.filter(|r| !r.is_empty());
        if let Some(r) = run_id {
            assert_safe_entity_id("runId", r)?;
        }
        let event_type = match data.get("eventType") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(Error::InvalidArgument(
                    "event request needs a string \"eventType\"".into(),
                ))
            }
        };
        let corr = match data.get("correlationId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                assert_safe_entity_id("correlationId", s)?;
                Some(s.clone())
            }
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "\"correlationId\" must be a string".into(),
                ))
            }
        };
        if let (true, Some(r), Some(c)) = (event_type == "hook_created", run_id, &corr) {
            let key = format!("{}\0{r}-{c}.hook", self.root().display());
            return with_hook_lock(key, || {
                self.create_impl(run_id, &event_type, corr.as_deref(), data)
            });
        }
        self.create_impl(run_id, &event_type, corr.as_deref(), data)
    }

    fn create_impl(
        &self,
        run_id_in: Option<&str>,
        ty: &str,
        corr: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<EventResult> {
        let mut event_id = prefixed_id("evnt");
        let now = now_iso();
        let run_id = match run_id_in {
            None if ty == "run_created" => prefixed_id("wrun"),
            None => {
                return Err(Error::Plain(
                    "runId is required for non-run_created events".into(),
                ))
            }
            Some(r) => r.to_string(),
        };
        if ty == "run_created" && run_id_in.is_some() {
            validate_run_id_time(&run_id)?;
        }
        // `${data.correlationId}` as JS interpolates it into file names and messages.
        let corr_text = match data.get("correlationId") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) => "null".to_string(),
            _ => "undefined".to_string(),
        };
        let corr_raw = data.get("correlationId").cloned();
        let spec = match data.get("specVersion") {
            None | Some(Value::Null) => json!(SPEC_VERSION_CURRENT),
            Some(v) => v.clone(),
        };
        let has_data = data.contains_key("eventData");
        let event_data: Map<String, Value> = match data.get("eventData") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let ed = |k: &str| event_data.get(k).cloned();

        // ---- current run (not read for run_created, step_completed, step_retrying)
        let mut current: Option<RunState> = None;
        if !matches!(ty, "run_created" | "step_completed" | "step_retrying") {
            current = self.read_run_state(&run_id)?;
            if ty == "run_started"
                && current.is_none()
                && data.get("eventData").is_some_and(js_truthy)
                && event_data.get("deploymentId").is_some_and(js_truthy)
                && event_data.get("workflowName").is_some_and(js_truthy)
                && event_data.contains_key("input")
            {
                // Resilient start: the run is created first (compact JSON, create-once).
                let created = new_run_entity(&run_id, &event_data, &spec, &now);
                let run_path = self.path_of("runs", &run_id)?;
                let created_value = Value::Object(created.clone());
                if write_exclusive_sync(&run_path, to_compact_json(&created_value).as_bytes())? {
                    let rc_id = prefixed_id("evnt");
                    let rc = literal(vec![
                        ("eventType", Some(json!("run_created"))),
                        ("runId", Some(json!(run_id))),
                        ("eventId", Some(json!(rc_id))),
                        ("createdAt", Some(json!(now))),
                        ("specVersion", Some(spec.clone())),
                        (
                            "eventData",
                            Some(Value::Object(literal(vec![
                                ("deploymentId", ed("deploymentId")),
                                ("workflowName", ed("workflowName")),
                                ("input", ed("input")),
                                ("executionContext", ed("executionContext")),
                            ]))),
                        ),
                    ]);
                    self.store_event_file(&run_id, &rc_id, &rc)?;
                    let snap = parse_run(&run_path, &created_value, false)?;
                    current = Some(RunState {
                        snap,
                        view: created,
                    });
                } else {
                    current = self.read_run_state(&run_id)?;
                }
            }
        }

        // ---- spec version routing
        if let Some(cur) = &current {
            cur.snap.check_supported()?;
            if cur.snap.is_legacy() {
                return self.legacy_event(&run_id, ty, data, cur);
            }
        }

        // ---- terminal run checks
        if let Some(cur) = &current {
            let status = cur.snap.status;
            if status.is_terminal() {
                if ty == "run_cancelled" && status == RunStatus::Cancelled {
                    let event = self.event_of(&data, &run_id, &event_id, &now, &spec);
                    self.store_event_file(&run_id, &event_id, &event)?;
                    return Ok(EventResult {
                        event: Some(Value::Object(event)),
                        run: Some(Value::Object(cur.view.clone())),
                        ..EventResult::default()
                    });
                }
                if ty == "run_started" {
                    return Err(Error::RunExpired(format!(
                        "Workflow run \"{run_id}\" is already in terminal state \"{}\"",
                        status.as_str()
                    )));
                }
                if matches!(
                    ty,
                    "run_started" | "run_completed" | "run_failed" | "run_cancelled"
                ) {
                    return Err(Error::EntityConflict(format!(
                        "Cannot transition run from terminal state \"{}\"",
                        status.as_str()
                    )));
                }
                if matches!(ty, "step_created" | "hook_created" | "wait_created") {
                    return Err(Error::EntityConflict(format!(
                        "Cannot create new entities on run in terminal state \"{}\"",
                        status.as_str()
                    )));
                }
            }
        }

        // ---- step checks
        let mut validated_step: Option<StepState> = None;
        if matches!(
            ty,
            "step_started" | "step_completed" | "step_failed" | "step_retrying"
        ) {
            if let Some(c) = corr {
                let st = self
                    .read_step_state(&format!("{run_id}-{c}"))?
                    .ok_or_else(|| Error::World(format!("Step \"{c}\" not found")))?;
                if step_is_terminal(&st.status) {
                    return Err(Error::EntityConflict(format!(
                        "Cannot modify step in terminal state \"{}\"",
                        st.status
                    )));
                }
                if let Some(cur) = &current {
                    if cur.snap.status.is_terminal() && st.status != "running" {
                        return Err(Error::RunExpired(format!(
                            "Cannot modify non-running step on run in terminal state \"{}\"",
                            cur.snap.status.as_str()
                        )));
                    }
                }
                validated_step = Some(st);
            }
        }

        // ---- hook existence
        if matches!(ty, "hook_disposed" | "hook_received") {
            if let Some(c) = corr {
                if self.read_hook_value(c)?.is_none() {
                    return Err(Error::HookNotFound {
                        token: c.to_string(),
                    });
                }
            }
        }

        let mut event = self.event_of(&data, &run_id, &event_id, &now, &spec);
        if ty == "run_started" {
            event = spread(&event, vec![("eventData", None)]);
        }

        let mut result = EventResult::default();
        let mut hook_write: Option<(Map<String, Value>, bool)> = None;
        let step_key = format!("{run_id}-{corr_text}");

        match ty {
            "run_created" if has_data => {
                let run = new_run_entity(&run_id, &event_data, &spec, &now);
                let path = self.path_of("runs", &run_id)?;
                if !write_exclusive_sync(
                    &path,
                    to_pretty_json(&Value::Object(run.clone())).as_bytes(),
                )? {
                    return Err(Error::EntityConflict(format!(
                        "Workflow run \"{run_id}\" already exists"
                    )));
                }
                result.run = Some(Value::Object(run));
            }
            "run_started" => {
                if let Some(cur) = &current {
                    if cur.snap.status == RunStatus::Running {
                        // Idempotent: nothing is written, no event.
                        return Ok(EventResult {
                            run: Some(Value::Object(cur.view.clone())),
                            ..EventResult::default()
                        });
                    }
                    let v = &cur.view;
                    let run = literal(vec![
                        ("runId", v.get("runId").cloned()),
                        ("deploymentId", v.get("deploymentId").cloned()),
                        ("workflowName", v.get("workflowName").cloned()),
                        ("specVersion", v.get("specVersion").cloned()),
                        ("executionContext", v.get("executionContext").cloned()),
                        ("input", v.get("input").cloned()),
                        ("createdAt", v.get("createdAt").cloned()),
                        ("expiredAt", v.get("expiredAt").cloned()),
                        ("status", Some(json!("running"))),
                        (
                            "startedAt",
                            Some(v.get("startedAt").cloned().unwrap_or_else(|| json!(now))),
                        ),
                        ("updatedAt", Some(json!(now))),
                    ]);
                    self.write_run(&run_id, &run)?;
                    result.run = Some(Value::Object(run));
                }
            }
            "run_completed" | "run_failed" | "run_cancelled"
                if has_data || ty == "run_cancelled" =>
            {
                if let Some(cur) = &current {
                    let run = self.terminal_run(cur, ty, &event_data, &now);
                    self.write_run(&run_id, &run)?;
                    self.delete_hooks_of_run_sync(&run_id)?;
                    self.delete_waits_of_run_sync(&run_id)?;
                    result.run = Some(Value::Object(run));
                }
            }
            "step_created" if has_data => {
                let step = literal(vec![
                    ("runId", Some(json!(run_id))),
                    ("stepId", corr_raw.clone()),
                    ("stepName", ed("stepName")),
                    ("status", Some(json!("pending"))),
                    ("input", ed("input")),
                    ("attempt", Some(json!(0))),
                    ("createdAt", Some(json!(now))),
                    ("updatedAt", Some(json!(now))),
                    ("specVersion", Some(spec.clone())),
                ]);
                let path = self.path_of("steps", &step_key)?;
                write_new_sync(
                    &path,
                    to_pretty_json(&Value::Object(step.clone())).as_bytes(),
                )?;
                result.step = Some(Value::Object(step));
            }
            "step_started" => {
                if let Some(st) = &validated_step {
                    if let Some(ra) = st.retry_after {
                        let wall = now_ms();
                        if ra > wall {
                            return Err(Error::TooEarly {
                                message: format!(
                                    "Cannot start step \"{corr_text}\": retryAfter timestamp has not been reached yet"
                                ),
                                retry_after: ((ra - wall) / 1000.0).ceil() as i64,
                            });
                        }
                    }
                    // Re-read: the step may have become terminal meanwhile.
                    if let Some(fresh) = self.read_step_state(&step_key)? {
                        if step_is_terminal(&fresh.status) {
                            return Err(Error::EntityConflict(format!(
                                "Cannot modify step in terminal state \"{}\"",
                                fresh.status
                            )));
                        }
                    }
                    let started = st
                        .view
                        .get("startedAt")
                        .cloned()
                        .unwrap_or_else(|| json!(now));
                    let step = spread(
                        &st.view,
                        vec![
                            ("status", Some(json!("running"))),
                            ("startedAt", Some(started)),
                            ("attempt", Some(number(st.attempt + 1.0))),
                            ("retryAfter", None),
                            ("updatedAt", Some(json!(now))),
                        ],
                    );
                    write_replace_sync(
                        &self.path_of("steps", &step_key)?,
                        to_pretty_json(&Value::Object(step.clone())).as_bytes(),
                    )?;
                    result.step = Some(Value::Object(step));
                }
            }
            "step_completed" | "step_failed" if has_data => {
                if let Some(st) = &validated_step {
                    let lock = self
                        .root()
                        .join(".locks")
                        .join("steps")
                        .join(format!("{step_key}.terminal"));
                    if !write_exclusive_sync(&lock, b"")? {
                        return Err(Error::EntityConflict(
                            "Cannot modify step in terminal state".into(),
                        ));
                    }
                    let step = if ty == "step_completed" {
                        spread(
                            &st.view,
                            vec![
                                ("status", Some(json!("completed"))),
                                ("output", ed("result")),
                                ("completedAt", Some(json!(now))),
                                ("updatedAt", Some(json!(now))),
                            ],
                        )
                    } else {
                        let error = literal(vec![
                            ("message", Some(error_message(event_data.get("error")))),
                            ("stack", ed("stack")),
                        ]);
                        spread(
                            &st.view,
                            vec![
                                ("status", Some(json!("failed"))),
                                ("error", Some(Value::Object(error))),
                                ("completedAt", Some(json!(now))),
                                ("updatedAt", Some(json!(now))),
                            ],
                        )
                    };
                    write_replace_sync(
                        &self.path_of("steps", &step_key)?,
                        to_pretty_json(&Value::Object(step.clone())).as_bytes(),
                    )?;
                    result.step = Some(Value::Object(step));
                }
            }
            "step_retrying" if has_data => {
                if let Some(st) = &validated_step {
                    let error = literal(vec![
                        ("message", Some(error_message(event_data.get("error")))),
                        ("stack", ed("stack")),
                    ]);
                    let step = spread(
                        &st.view,
                        vec![
                            ("status", Some(json!("pending"))),
                            ("error", Some(Value::Object(error))),
                            ("retryAfter", ed("retryAfter")),
                            ("updatedAt", Some(json!(now))),
                        ],
                    );
                    write_replace_sync(
                        &self.path_of("steps", &step_key)?,
                        to_pretty_json(&Value::Object(step.clone())).as_bytes(),
                    )?;
                    result.step = Some(Value::Object(step));
                }
            }
            "hook_created" if has_data => {
                let token = match event_data.get("token") {
                    Some(Value::String(t)) => t.clone(),
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "The \"data\" argument must be of type string or an instance of Buffer, TypedArray, or DataView. Received {}",
                            match other {
                                None => "undefined".to_string(),
                                Some(v) => to_compact_json(v),
                            }
                        )))
                    }
                };
                let claim_path = self.token_claim_path(&token);
                if read_claim(&claim_path)?.is_none() {
                    // No claim: the log is the only record of a live hook for this token.
                    self.rebuild_live_hook_sync(&token)?;
                }
                let claim = literal(vec![
                    ("token", Some(json!(token))),
                    ("hookId", corr_raw.clone()),
                    ("runId", Some(json!(run_id))),
                    ("eventId", Some(json!(event_id))),
                ]);
                let claimed = write_exclusive_sync(
                    &claim_path,
                    to_compact_json(&Value::Object(claim)).as_bytes(),
                )?;
                let mut overwrite = false;
                if !claimed {
                    let existing = read_claim(&claim_path)?;
                    let same_hook = existing
                        .as_ref()
                        .is_some_and(|c| c.run_id == run_id && c.hook_id.as_deref() == corr);
                    if let (true, Some(existing)) = (same_hook, &existing) {
                        // A retry of this very hook: converge on the claim's event id.
                        let canonical = match &existing.event_id {
                            Some(id) => id.clone(),
                            None => {
                                self.pin_legacy_claim(&token, &run_id, &corr_text, &event_id)?
                            }
                        };
                        event_id = canonical;
                        let created = event_id
                            .strip_prefix("evnt_")
                            .and_then(ulid_time_ms)
                            .map(|ms| iso_from_ms(ms as f64))
                            .unwrap_or_else(|| now.clone());
                        event = self.event_of(&data, &run_id, &event_id, &created, &spec);
                        overwrite = true;
                    } else {
                        // The token belongs to another live hook.
                        let mut conflict_data = Map::new();
                        conflict_data.insert("token".into(), json!(token));
                        if let Some(c) = &existing {
                            conflict_data.insert("conflictingRunId".into(), json!(c.run_id));
                        }
                        let conflict = literal(vec![
                            ("eventType", Some(json!("hook_conflict"))),
                            ("correlationId", corr_raw.clone()),
                            ("eventData", Some(Value::Object(conflict_data))),
                            ("runId", Some(json!(run_id))),
                            ("eventId", Some(json!(event_id))),
                            ("createdAt", Some(json!(now))),
                            ("specVersion", Some(spec.clone())),
                        ]);
                        self.store_event_file(&run_id, &event_id, &conflict)?;
                        return Ok(EventResult {
                            event: Some(Value::Object(conflict)),
                            ..EventResult::default()
                        });
                    }
                }
                let hook = literal(vec![
                    ("runId", Some(json!(run_id))),
                    ("hookId", corr_raw.clone()),
                    ("token", Some(json!(token))),
                    ("metadata", ed("metadata")),
                    ("ownerId", Some(json!("local-owner"))),
                    ("projectId", Some(json!("local-project"))),
                    ("environment", Some(json!("local"))),
                    ("createdAt", event.get("createdAt").cloned()),
                    ("specVersion", Some(spec.clone())),
                    (
                        "isWebhook",
                        Some(match event_data.get("isWebhook") {
                            None | Some(Value::Null) => json!(false),
                            Some(v) => v.clone(),
                        }),
                    ),
                ]);
                hook_write = Some((hook, overwrite));
            }
            "hook_disposed" => {
                let lock = self
                    .root()
                    .join(".locks")
                    .join("hooks")
                    .join(format!("{corr_text}.disposed"));
                assert_safe_entity_id("fileId", &corr_text)?;
                if !write_exclusive_sync(&lock, b"")? {
                    return Err(Error::EntityConflict(format!(
                        "Hook \"{corr_text}\" already disposed"
                    )));
                }
                let hook_path = self.path_of("hooks", &corr_text)?;
                if let Some(h) = self.read_hook_value(&corr_text)? {
                    let s = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let (token, h_run, h_id) = (s("token"), s("runId"), s("hookId"));
                    remove_if_exists_sync(&self.token_claim_path(&token))?;
                    remove_if_exists_sync(&self.recovery_marker_path(&token, &h_run, &h_id))?;
                }
                remove_if_exists_sync(&hook_path)?;
            }
            "wait_created" if has_data => {
                let path = self.path_of("waits", &step_key)?;
                if let Some(m) = read_object(&path)? {
                    parse_wait(&path, &m)?;
                    return Err(Error::EntityConflict(format!(
                        "Wait \"{corr_text}\" already exists"
                    )));
                }
                let wait = literal(vec![
                    ("waitId", Some(json!(step_key))),
                    ("runId", Some(json!(run_id))),
                    ("status", Some(json!("waiting"))),
                    ("resumeAt", ed("resumeAt")),
                    ("createdAt", Some(json!(now))),
                    ("updatedAt", Some(json!(now))),
                    ("specVersion", Some(spec.clone())),
                ]);
                write_new_sync(
                    &path,
                    to_pretty_json(&Value::Object(wait.clone())).as_bytes(),
                )?;
                result.wait = Some(Value::Object(wait));
            }
            "wait_completed" => {
                let path = self.path_of("waits", &step_key)?;
                let lock = self
                    .root()
                    .join(".locks")
                    .join("waits")
                    .join(format!("{step_key}.completed"));
                if !write_exclusive_sync(&lock, b"")? {
                    return Err(Error::EntityConflict(format!(
                        "Wait \"{corr_text}\" already completed"
                    )));
                }
                let Some(m) = read_object(&path)? else {
                    let _ = remove_if_exists_sync(&lock);
                    return Err(Error::World(format!("Wait \"{corr_text}\" not found")));
                };
                let view = parse_wait(&path, &m)?;
                let wait = spread(
                    &view,
                    vec![
                        ("status", Some(json!("completed"))),
                        ("completedAt", Some(json!(now))),
                        ("updatedAt", Some(json!(now))),
                    ],
                );
                write_replace_sync(
                    &path,
                    to_pretty_json(&Value::Object(wait.clone())).as_bytes(),
                )?;
                result.wait = Some(Value::Object(wait));
            }
            // hook_received, hook_conflict and anything else: the event only.
            _ => {}
        }

        // ---- publish the event exactly once
        let event_path = self.path_of("events", &format!("{run_id}-{event_id}"))?;
        if !write_exclusive_sync(
            &event_path,
            to_pretty_json(&Value::Object(event.clone())).as_bytes(),
        )? {
            if ty == "hook_created" {
                if let Some(c) = corr {
                    self.repair_hook_from_event(&run_id, c, &event_id)?;
                }
            }
            return Err(Error::EntityConflict(format!(
                "Event \"{event_id}\" already exists for run \"{run_id}\""
            )));
        }

        // ---- the hook entity, only once its event is committed
        if let Some((hook, overwrite)) = hook_write {
            let path = self.path_of("hooks", &corr_text)?;
            let body = to_pretty_json(&Value::Object(hook.clone()));
            if overwrite {
                write_replace_sync(&path, body.as_bytes())?;
            } else {
                write_new_sync(&path, body.as_bytes())?;
            }
            result.hook = Some(Value::Object(hook));
        }

        result.event = Some(Value::Object(event));
        Ok(result)
    }

    /// `{...data, runId, eventId, createdAt, specVersion}`
    fn event_of(
        &self,
        data: &Map<String, Value>,
        run_id: &str,
        event_id: &str,
        created_at: &str,
        spec: &Value,
    ) -> Map<String, Value> {
        let mut ev = data.clone();
        ev.insert("runId".into(), json!(run_id));
        ev.insert("eventId".into(), json!(event_id));
        ev.insert("createdAt".into(), json!(created_at));
        ev.insert("specVersion".into(), spec.clone());
        ev
    }

    fn write_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()> {
        write_replace_sync(
            &self.path_of("runs", run_id)?,
            to_pretty_json(&Value::Object(run.clone())).as_bytes(),
        )
    }

    /// The run file of `run_completed` / `run_failed` / `run_cancelled`.
    fn terminal_run(
        &self,
        cur: &RunState,
        ty: &str,
        event_data: &Map<String, Value>,
        now: &str,
    ) -> Map<String, Value> {
        let v = &cur.view;
        let g = |k: &str| v.get(k).cloned();
        let (status, output, error) = match ty {
            "run_completed" => ("completed", event_data.get("output").cloned(), None),
            "run_failed" => {
                let e = event_data.get("error");
                let error = literal(vec![
                    ("message", Some(error_message(e))),
                    ("stack", error_stack(e)),
                    ("code", event_data.get("errorCode").cloned()),
                ]);
                ("failed", None, Some(Value::Object(error)))
            }
            _ => ("cancelled", None, None),
        };
        literal(vec![
            ("runId", g("runId")),
            ("deploymentId", g("deploymentId")),
            ("workflowName", g("workflowName")),
            ("specVersion", g("specVersion")),
            ("executionContext", g("executionContext")),
            ("input", g("input")),
            ("createdAt", g("createdAt")),
            ("expiredAt", g("expiredAt")),
            ("startedAt", g("startedAt")),
            ("status", Some(json!(status))),
            ("output", output),
            ("error", error),
            ("completedAt", Some(json!(now))),
            ("updatedAt", Some(json!(now))),
        ])
    }

    /// Events on pre-event-sourcing runs (spec ≤ 1).
    fn legacy_event(
        &self,
        run_id: &str,
        ty: &str,
        data: Map<String, Value>,
        cur: &RunState,
    ) -> Result<EventResult> {
        match ty {
            "run_cancelled" => {
                let now = now_iso();
                let run = self.terminal_run(cur, ty, &Map::new(), &now);
                self.write_run(run_id, &run)?;
                self.delete_hooks_of_run_sync(run_id)?;
                Ok(EventResult {
                    run: Some(Value::Object(run)),
                    ..EventResult::default()
                })
            }
            "wait_completed" | "hook_received" => {
                let event_id = prefixed_id("evnt");
                let now = now_iso();
                let event =
                    self.event_of(&data, run_id, &event_id, &now, &json!(SPEC_VERSION_CURRENT));
                self.store_event_file(run_id, &event_id, &event)?;
                Ok(EventResult {
                    event: Some(Value::Object(event)),
                    ..EventResult::default()
                })
            }
            _ => {
                let spec = match cur.snap.spec_version {
                    Some(v) if v != 0.0 && !v.is_nan() => js_number_text(v),
                    _ => "undefined".to_string(),
                };
                Err(Error::Plain(format!(
                    "Event type '{ty}' not supported for legacy runs (specVersion: {spec}). Please upgrade 'workflow' package."
                )))
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
            return Err(Error::EntityConflict(format!(
                "Hook \"{hook_id}\" already created"
            )));
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
        pinned.ok_or_else(|| Error::EntityConflict(format!("Hook \"{hook_id}\" already created")))
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
        if let Some(run) = self.read_run_state(run_id)? {
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

    /// Deletes every hook of the run with its token claim and recovery marker.
    fn delete_hooks_of_run_sync(&self, run_id: &str) -> Result<()> {
        let dir = self.root().join("hooks");
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
            let token = s("token");
            remove_if_exists_sync(&self.token_claim_path(&token))?;
            remove_if_exists_sync(&self.recovery_marker_path(&token, run_id, &s("hookId")))?;
            remove_if_exists_sync(&path)?;
        }
        Ok(())
    }

    fn delete_waits_of_run_sync(&self, run_id: &str) -> Result<()> {
        let dir = self.root().join("waits");
        let prefix = format!("{run_id}-");
        for name in list_dir_sync(&dir)? {
            if name.starts_with(&prefix) && name.ends_with(".json") {
                remove_if_exists_sync(&dir.join(&name))?;
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- listings

    /// Every event of the run, exactly as stored, in log order (createdAt, then eventId,
    /// as `events.list` sorts; with monotonic ULIDs that is event-id order), as one JSON
    /// array text. Files that are not events are skipped.
    pub fn list_events_json_sync(&self, run_id: &str) -> Result<String> {
        assert_safe_entity_id("runId", run_id)?;
        let dir = self.root().join("events");
        let prefix = format!("{run_id}-");
        let mut items: Vec<(f64, String, String)> = Vec::new();
        for name in list_dir_sync(&dir)? {
            if !name.starts_with(&prefix) || !name.ends_with(".json") {
                continue;
            }
            let path = dir.join(&name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
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
        let dir = self.root().join("runs");
        let mut items: Vec<(f64, String, String)> = Vec::new();
        for name in list_dir_sync(&dir)? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.is_empty() {
                continue;
            }
            let path = dir.join(&name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let Ok(snap) = parse_run(&path, &v, false) else {
                continue;
            };
            if let Some(wanted) = statuses {
                if !wanted.iter().any(|s| s == snap.status.as_str()) {
                    continue;
                }
            }
            items.push((snap.created_at, snap.run_id, text));
        }
        items.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(join_array(items.into_iter().map(|i| i.2)))
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

/// A JSON number for a JS number (integers without a fraction).
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
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
