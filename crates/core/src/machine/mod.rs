//! The `events.create` state machine of @workflow/world-local 4.4.1, independent of how
//! entities are stored: which event may do what to which entity, in which order, and
//! every error it raises (with world-local's exact messages).
//!
//! One module per entity holds its rules ([`runs`], [`steps`], [`hooks`], [`waits`]);
//! this module parses the request, routes it and publishes the event. A backend supplies
//! the storage primitives through [`EventStore`] (files and lock files for the local
//! World); the rules call them in a fixed order, so a backend only decides *how* a
//! create-once write or a once-only marker is made atomic, never *whether* it happens.
//!
//! Entities and events are JSON objects in world-local's encoding: binary payloads as
//! `{"__type":"Uint8Array","data":<base64>}`, dates as ISO strings. Two JavaScript
//! details decide their key order and are reproduced on purpose (see [`json`]):
//! * the event is `{...request, runId, eventId, createdAt, specVersion}`: the request's
//!   keys first, in the caller's order;
//! * an updated entity is `{...stored, changes}` where `stored` went through a zod schema:
//!   its keys are in *schema* order (unknown keys dropped, dates re-printed), keys that
//!   were already there keep their place and new keys go to the end.

pub mod hooks;
pub(crate) mod json;
pub mod runs;
pub mod steps;
pub mod waits;

use crate::error::{Error, Result};
use crate::ids::{assert_safe_entity_id, prefixed_id};
use crate::world::fsio::{now_iso, to_compact_json};
use crate::world::model::SPEC_VERSION_CURRENT;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

pub use runs::RunState;
pub use steps::StepState;

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

/// How an accepted event was applied; callers with typed outcomes (`cancel_run`) need
/// to tell a first transition from a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event's effects were applied (or it needed none) and the event was stored.
    Transition,
    /// The entity was already in the requested state: `run_started` on a running run
    /// (nothing stored) or `run_cancelled` on a cancelled run (the event is stored).
    Repeat,
    /// A legacy (spec ≤ 1) run: handled by the pre-event-sourcing rules.
    Legacy,
}

/// The result of [`apply`].
#[derive(Debug, Clone)]
pub struct Created {
    pub result: EventResult,
    pub applied: Applied,
}

impl Created {
    fn new(result: EventResult) -> Created {
        Created {
            result,
            applied: Applied::Transition,
        }
    }
}

/// A once-only marker: the first writer wins, later ones get a conflict. Lock files in
/// the local World (`.locks/<kind>/<id>.<suffix>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// a step reached `completed` / `failed` (key `<runId>-<stepId>`)
    StepTerminal(String),
    /// a hook was disposed (key: hook id)
    HookDisposed(String),
    /// a wait was completed (key `<runId>-<waitId>`)
    WaitCompleted(String),
}

/// Who holds a hook token after [`EventStore::claim_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenClaim {
    /// The token was free and is now this hook's.
    Claimed,
    /// This very hook already holds it (a retry): converge on the claim's event id.
    Retry { event_id: String },
    /// Another live hook holds it (its run, when the claim names one).
    Taken { run_id: Option<String> },
}

/// The storage primitives the rules need while applying one event. Reads return the
/// validated entity (or `None` when absent); create-once writes return `false` when the
/// entity already exists; every other failure is an `Err` the rules pass on unchanged.
pub trait EventStore {
    /// Where the run is stored, as corruption errors name it.
    fn run_location(&self, run_id: &str) -> Result<PathBuf>;
    fn load_run(&self, run_id: &str) -> Result<Option<RunState>>;
    /// Create-once. `implicit`: created by a resilient `run_started` (world-local writes
    /// that one compact).
    fn create_run(&self, run_id: &str, run: &Map<String, Value>, implicit: bool) -> Result<bool>;
    fn replace_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()>;
    /// Removes every hook of the run with its token claim.
    fn delete_hooks_of_run(&self, run_id: &str) -> Result<()>;
    fn delete_waits_of_run(&self, run_id: &str) -> Result<()>;

    fn load_step(&self, step_key: &str) -> Result<Option<StepState>>;
    /// Refuses (with an error) to overwrite an existing step.
    fn create_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()>;
    fn replace_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()>;

    fn hook_exists(&self, hook_id: &str) -> Result<bool>;
    /// Claims `token` for the hook described by `claim` (`{token, hookId, runId,
    /// eventId}`), restoring a claim the log still proves live first.
    fn claim_token(
        &self,
        token: &str,
        claim: &Map<String, Value>,
        hook_id_text: &str,
    ) -> Result<TokenClaim>;
    fn write_hook(&self, hook_id: &str, hook: &Map<String, Value>, overwrite: bool) -> Result<()>;
    /// Removes the hook with its token claim.
    fn delete_hook(&self, hook_id: &str) -> Result<()>;
    /// After a lost `hook_created` publish race: restores the hook entity from the
    /// already published event, if it is missing.
    fn repair_hook(&self, run_id: &str, hook_id: &str, event_id: &str) -> Result<()>;

    /// The wait as `WaitSchema` yields it.
    fn load_wait(&self, wait_key: &str) -> Result<Option<Map<String, Value>>>;
    /// Refuses (with an error) to overwrite an existing wait.
    fn create_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()>;
    fn replace_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()>;

    /// `false` when the marker was already taken.
    fn claim_once(&self, marker: &Once) -> Result<bool>;
    fn release_once(&self, marker: &Once) -> Result<()>;

    /// Stores an event that cannot collide (fresh id); refuses to overwrite.
    fn store_event(&self, run_id: &str, event_id: &str, event: &Map<String, Value>) -> Result<()>;
    /// Publishes the event exactly once: `false` when that event id already exists.
    fn publish_event(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<bool>;
}

/// A checked `events.create(runId, data)` request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `None` for an absent or empty run id
    pub run_id: Option<String>,
    pub event_type: String,
    /// a safe entity id when present
    pub correlation_id: Option<String>,
    /// the request object as given (`{ eventType, correlationId?, specVersion?, eventData? }`)
    pub data: Map<String, Value>,
}

impl Request {
    pub fn parse(run_id: Option<&str>, data: Map<String, Value>) -> Result<Request> {
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
        let correlation_id = match data.get("correlationId") {
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
        Ok(Request {
            run_id: run_id.map(str::to_string),
            event_type,
            correlation_id,
            data,
        })
    }
}

/// Everything the rules derive from one request before touching storage.
pub(crate) struct Ctx<'a> {
    pub ty: &'a str,
    pub run_id: String,
    pub corr: Option<&'a str>,
    /// `${data.correlationId}` as JS interpolates it into file names and messages
    pub corr_text: String,
    pub corr_raw: Option<Value>,
    pub spec: Value,
    pub has_data: bool,
    pub event_data: Map<String, Value>,
    pub data: &'a Map<String, Value>,
    pub event_id: String,
    /// one instant for the event and the entities it changes, as world-local does
    pub now: String,
}

impl<'a> Ctx<'a> {
    fn new(req: &'a Request) -> Result<Ctx<'a>> {
        let ty = req.event_type.as_str();
        let data = &req.data;
        let event_id = prefixed_id("evnt");
        let now = now_iso();
        let run_id = match &req.run_id {
            None if ty == "run_created" => prefixed_id("wrun"),
            None => {
                return Err(Error::Plain(
                    "runId is required for non-run_created events".into(),
                ))
            }
            Some(r) => r.clone(),
        };
        if ty == "run_created" && req.run_id.is_some() {
            runs::validate_run_id_time(&run_id)?;
        }
        let corr_text = match data.get("correlationId") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) => "null".to_string(),
            _ => "undefined".to_string(),
        };
        Ok(Ctx {
            ty,
            run_id,
            corr: req.correlation_id.as_deref(),
            corr_text,
            corr_raw: data.get("correlationId").cloned(),
            spec: match data.get("specVersion") {
                None | Some(Value::Null) => json!(SPEC_VERSION_CURRENT),
                Some(v) => v.clone(),
            },
            has_data: data.contains_key("eventData"),
            event_data: match data.get("eventData") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            },
            data,
            event_id,
            now,
        })
    }

    /// `eventData[k]`
    pub fn ed(&self, k: &str) -> Option<Value> {
        self.event_data.get(k).cloned()
    }

    /// The `<runId>-<correlationId>` key of steps and waits.
    pub fn entity_key(&self) -> String {
        format!("{}-{}", self.run_id, self.corr_text)
    }

    /// `{...data, runId, eventId, createdAt, specVersion}`
    pub fn event_with(&self, event_id: &str, created_at: &str, spec: &Value) -> Map<String, Value> {
        let mut ev = self.data.clone();
        ev.insert("runId".into(), json!(self.run_id));
        ev.insert("eventId".into(), json!(event_id));
        ev.insert("createdAt".into(), json!(created_at));
        ev.insert("specVersion".into(), spec.clone());
        ev
    }

    /// The event this request stores, with its own id and instant.
    pub fn event(&self) -> Map<String, Value> {
        self.event_with(&self.event_id, &self.now, &self.spec)
    }
}

/// `events.create` on `store`: checks, entity effects and the event, in world-local's
/// order. Callers serialise concurrent `hook_created` for one hook themselves
/// (world-local's per-instance mutex).
pub fn apply<S: EventStore + ?Sized>(store: &S, req: &Request) -> Result<Created> {
    let ctx = Ctx::new(req)?;
    let ty = ctx.ty;

    let current = if runs::reads_run(ty) {
        match store.load_run(&ctx.run_id)? {
            None => runs::start_implicitly(store, &ctx)?,
            found => found,
        }
    } else {
        None
    };

    if let Some(cur) = &current {
        cur.snap.check_supported()?;
        if cur.snap.is_legacy() {
            return runs::legacy_event(store, &ctx, cur);
        }
        if let Some(repeat) = runs::check_terminal(store, &ctx, cur)? {
            return Ok(repeat);
        }
    }
    let step = steps::check(store, &ctx, current.as_ref())?;
    hooks::check_exists(store, &ctx)?;

    let mut event = ctx.event();
    let mut result = EventResult::default();
    let mut hook_write: Option<(Map<String, Value>, bool)> = None;
    match ty {
        "run_created" if ctx.has_data => result.run = Some(runs::created(store, &ctx)?),
        "run_started" => {
            event = json::spread(&event, vec![("eventData", None)]);
            if let Some(cur) = &current {
                match runs::started(store, &ctx, cur)? {
                    Some(run) => result.run = Some(run),
                    None => {
                        return Ok(Created {
                            result: EventResult {
                                run: Some(Value::Object(cur.view.clone())),
                                ..EventResult::default()
                            },
                            applied: Applied::Repeat,
                        })
                    }
                }
            }
        }
        "run_completed" | "run_failed" | "run_cancelled"
            if ctx.has_data || ty == "run_cancelled" =>
        {
            if let Some(cur) = &current {
                result.run = Some(runs::finished(store, &ctx, cur)?);
            }
        }
        "step_created" if ctx.has_data => result.step = Some(steps::created(store, &ctx)?),
        "step_started" => {
            if let Some(st) = &step {
                result.step = Some(steps::started(store, &ctx, st)?);
            }
        }
        "step_completed" | "step_failed" if ctx.has_data => {
            if let Some(st) = &step {
                result.step = Some(steps::finished(store, &ctx, st)?);
            }
        }
        "step_retrying" if ctx.has_data => {
            if let Some(st) = &step {
                result.step = Some(steps::retrying(store, &ctx, st)?);
            }
        }
        "hook_created" if ctx.has_data => match hooks::created(store, &ctx)? {
            hooks::HookCreated::Conflict(conflict) => return Ok(*conflict),
            hooks::HookCreated::Write {
                event: canonical,
                hook,
                overwrite,
            } => {
                event = canonical;
                hook_write = Some((hook, overwrite));
            }
        },
        "hook_disposed" => hooks::disposed(store, &ctx)?,
        "wait_created" if ctx.has_data => result.wait = Some(waits::created(store, &ctx)?),
        "wait_completed" => result.wait = Some(waits::completed(store, &ctx)?),
        // hook_received, hook_conflict and anything else: the event only.
        _ => {}
    }

    publish(store, &ctx, &event)?;
    // The hook entity only once its event is committed.
    if let Some((hook, overwrite)) = hook_write {
        store.write_hook(&ctx.corr_text, &hook, overwrite)?;
        result.hook = Some(Value::Object(hook));
    }
    result.event = Some(Value::Object(event));
    Ok(Created::new(result))
}

/// Publishes the event exactly once; a lost race on a `hook_created` first repairs the
/// hook entity the winner may not have written yet.
fn publish<S: EventStore + ?Sized>(store: &S, ctx: &Ctx, event: &Map<String, Value>) -> Result<()> {
    let event_id = event
        .get("eventId")
        .and_then(Value::as_str)
        .unwrap_or(&ctx.event_id);
    if store.publish_event(&ctx.run_id, event_id, event)? {
        return Ok(());
    }
    if ctx.ty == "hook_created" {
        if let Some(c) = ctx.corr {
            store.repair_hook(&ctx.run_id, c, event_id)?;
        }
    }
    Err(Error::EntityConflict(format!(
        "Event \"{event_id}\" already exists for run \"{}\"",
        ctx.run_id
    )))
}
