//! A checked `events.create` request, what the rules derive from it, and what they
//! return.

use crate::error::{Error, Result};
use crate::ids::{assert_safe_entity_id, prefixed_id};
use crate::world::fsio::{now_iso, to_compact_json};
use crate::world::model::SPEC_VERSION_CURRENT;
use serde_json::{json, Map, Value};

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
    pub(crate) fn new(result: EventResult) -> Created {
        Created {
            result,
            applied: Applied::Transition,
        }
    }
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
    /// A request whose ids name files (world-local): ids with `.`, `/`, `\\` or NUL are
    /// refused (`UnsafeEntityIdError`).
    pub fn parse(run_id: Option<&str>, data: Map<String, Value>) -> Result<Request> {
        Self::parse_ids(run_id, data, true)
    }

    /// A request whose ids are only ever query parameters (world-postgres checks none:
    /// an id no run has is simply not found).
    pub fn parse_any_ids(run_id: Option<&str>, data: Map<String, Value>) -> Result<Request> {
        Self::parse_ids(run_id, data, false)
    }

    fn parse_ids(run_id: Option<&str>, data: Map<String, Value>, check: bool) -> Result<Request> {
        let run_id = run_id.filter(|r| !r.is_empty());
        if let (Some(r), true) = (run_id, check) {
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
                if check {
                    assert_safe_entity_id("correlationId", s)?;
                }
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
    /// the backend's event id prefix (`evnt` / `wevt`)
    pub event_prefix: &'static str,
    /// one instant for the event and the entities it changes, as world-local does
    pub now: String,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(req: &'a Request, event_prefix: &'static str) -> Result<Ctx<'a>> {
        let ty = req.event_type.as_str();
        let data = &req.data;
        let event_id = prefixed_id(event_prefix);
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
            validate_run_id_time(&run_id)?;
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
            event_prefix,
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

/// A client-supplied run id must be a ULID from the last 24 h or the next 5 min.
pub fn validate_run_id_time(run_id: &str) -> Result<()> {
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
