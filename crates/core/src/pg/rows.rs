//! Rows of the `workflow` tables to and from the entity and event objects of the rest of
//! the core (world-local's JSON encoding), with world-postgres's column rules: CBOR in the
//! `*_cbor` columns (legacy `jsonb`/`text` columns read as fallbacks), UTC in
//! `timestamp without time zone`, `spec_version` as text on runs.

use super::cbor::{decode_json, Cbor};
use crate::error::{Error, Result};
use crate::world::fsio::parse_date_ms;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use tokio_postgres::Row;

/// Event data keys world-postgres stores as CBOR dates (JS `Date`s in the runtime's
/// events: `wait_created.resumeAt`, `wait_completed.resumeAt`, `step_retrying.retryAfter`).
pub const EVENT_DATE_KEYS: [&str; 2] = ["resumeAt", "retryAfter"];

/// Where a row lives, as corruption errors name it.
pub fn location(table: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("postgres:workflow.{table}/{key}"))
}

pub fn iso(t: NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(t, Utc).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An ISO date of the core's JSON as a UTC timestamp column value.
pub fn ts(v: Option<&Value>) -> Option<NaiveDateTime> {
    let ms = parse_date_ms(v?)?;
    DateTime::<Utc>::from_timestamp_millis(ms as i64).map(|d| d.naive_utc())
}

pub fn now_ts(now_iso: &str) -> NaiveDateTime {
    ts(Some(&Value::String(now_iso.to_string()))).unwrap_or_else(|| Utc::now().naive_utc())
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        if !v.is_null() {
            m.insert(k.into(), v);
        }
    }
}

fn date_col(row: &Row, col: &str) -> Option<Value> {
    row.get::<_, Option<NaiveDateTime>>(col)
        .map(|t| Value::String(iso(t)))
}

/// A CBOR column, or the legacy JSON text column when the CBOR one is empty.
fn cbor_col(row: &Row, cbor: &str, legacy: Option<&str>, loc: &Path) -> Result<Option<Value>> {
    if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(cbor) {
        return decode_json(&bytes).map(Some).map_err(|e| {
            Error::corrupt(loc, format!("column \"{cbor}\" is not valid CBOR: {}", e.0))
        });
    }
    match legacy.and_then(|c| row.get::<_, Option<String>>(c)) {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::corrupt(loc, format!("legacy JSON column: {e}"))),
        None => Ok(None),
    }
}

/// Encodes a value of the core's JSON for a CBOR column (`None` stays SQL NULL).
pub fn cbor(v: Option<&Value>, dates: &[&str]) -> Option<Vec<u8>> {
    v.filter(|v| !v.is_null())
        .map(|v| Cbor::from_json(v, dates).encode())
}

/// An error object as world-postgres writes it: every key of `keys` present, absent
/// ones as CBOR `undefined` (what cbor-x writes for a JS `undefined` property).
pub fn error_cbor(v: Option<&Value>, keys: &[&str]) -> Option<Vec<u8>> {
    let m = v?.as_object()?;
    let entries = keys
        .iter()
        .map(|k| {
            let c = match m.get(*k) {
                None => Cbor::Undefined,
                Some(x) => Cbor::from_json(x, &[]),
            };
            (k.to_string(), c)
        })
        .collect();
    Some(Cbor::Map(entries).encode())
}

pub const RUN_COLS: &str = "id, deployment_id, status::text AS status, name, spec_version, \
    input_cbor, output_cbor, execution_context_cbor, error_cbor, input::text AS input, \
    output::text AS output, execution_context::text AS execution_context, error, \
    created_at, updated_at, started_at, completed_at, expired_at";

/// The legacy `error` text column as world-postgres reads it.
fn legacy_error(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) if o.contains_key("message") => {
            let mut e = Map::new();
            put(&mut e, "message", o.get("message").cloned());
            put(&mut e, "stack", o.get("stack").cloned());
            put(&mut e, "code", o.get("code").cloned());
            Value::Object(e)
        }
        Ok(Value::String(s)) => json!({ "message": s }),
        Ok(other) => json!({ "message": other.to_string() }),
        Err(_) => json!({ "message": text }),
    }
}

/// A `workflow_runs` row as the run object of world-local's `RunSchema`.
pub fn run_json(row: &Row) -> Result<Value> {
    let id: String = row.get("id");
    let loc = location("workflow_runs", &id);
    let mut m = Map::new();
    m.insert("runId".into(), json!(id));
    m.insert(
        "deploymentId".into(),
        json!(row.get::<_, String>("deployment_id")),
    );
    m.insert("status".into(), json!(row.get::<_, String>("status")));
    m.insert("workflowName".into(), json!(row.get::<_, String>("name")));
    if let Some(s) = row.get::<_, Option<String>>("spec_version") {
        let n: f64 = s
            .trim()
            .parse()
            .map_err(|_| Error::corrupt(&loc, format!("spec_version \"{s}\" is not a number")))?;
        m.insert("specVersion".into(), super::cbor::Cbor::Number(n).to_json());
    }
    put(
        &mut m,
        "executionContext",
        cbor_col(
            row,
            "execution_context_cbor",
            Some("execution_context"),
            &loc,
        )?,
    );
    put(
        &mut m,
        "input",
        cbor_col(row, "input_cbor", Some("input"), &loc)?,
    );
    put(
        &mut m,
        "output",
        cbor_col(row, "output_cbor", Some("output"), &loc)?,
    );
    let error = match cbor_col(row, "error_cbor", None, &loc)? {
        Some(e) => Some(e),
        None => row
            .get::<_, Option<String>>("error")
            .map(|t| legacy_error(&t)),
    };
    put(&mut m, "error", error);
    put(&mut m, "expiredAt", date_col(row, "expired_at"));
    put(&mut m, "startedAt", date_col(row, "started_at"));
    put(&mut m, "completedAt", date_col(row, "completed_at"));
    put(&mut m, "createdAt", date_col(row, "created_at"));
    put(&mut m, "updatedAt", date_col(row, "updated_at"));
    Ok(Value::Object(m))
}

pub const STEP_COLS: &str = "run_id, step_id, step_name, status::text AS status, input_cbor, \
    output_cbor, error_cbor, input::text AS input, output::text AS output, error, attempt, \
    started_at, completed_at, created_at, updated_at, retry_after, spec_version";

/// A `workflow_steps` row as the step object of `StepSchema`.
pub fn step_json(row: &Row) -> Result<Map<String, Value>> {
    let id: String = row.get("step_id");
    let loc = location("workflow_steps", &id);
    let mut m = Map::new();
    m.insert("runId".into(), json!(row.get::<_, String>("run_id")));
    m.insert("stepId".into(), json!(id));
    m.insert("stepName".into(), json!(row.get::<_, String>("step_name")));
    m.insert("status".into(), json!(row.get::<_, String>("status")));
    put(
        &mut m,
        "input",
        cbor_col(row, "input_cbor", Some("input"), &loc)?,
    );
    put(
        &mut m,
        "output",
        cbor_col(row, "output_cbor", Some("output"), &loc)?,
    );
    let error = match cbor_col(row, "error_cbor", None, &loc)? {
        Some(e) => Some(e),
        None => row
            .get::<_, Option<String>>("error")
            .map(|t| legacy_error(&t)),
    };
    put(&mut m, "error", error);
    m.insert("attempt".into(), json!(row.get::<_, i32>("attempt")));
    put(&mut m, "startedAt", date_col(row, "started_at"));
    put(&mut m, "completedAt", date_col(row, "completed_at"));
    put(&mut m, "createdAt", date_col(row, "created_at"));
    put(&mut m, "updatedAt", date_col(row, "updated_at"));
    put(&mut m, "retryAfter", date_col(row, "retry_after"));
    put(
        &mut m,
        "specVersion",
        row.get::<_, Option<i32>>("spec_version").map(|v| json!(v)),
    );
    Ok(m)
}

pub const HOOK_COLS: &str = "run_id, hook_id, token, owner_id, project_id, environment, \
    created_at, metadata_cbor, metadata::text AS metadata, spec_version, is_webhook";

/// A `workflow_hooks` row as the hook object of `HookSchema`.
pub fn hook_json(row: &Row) -> Result<Value> {
    let id: String = row.get("hook_id");
    let loc = location("workflow_hooks", &id);
    let mut m = Map::new();
    m.insert("runId".into(), json!(row.get::<_, String>("run_id")));
    m.insert("hookId".into(), json!(id));
    m.insert("token".into(), json!(row.get::<_, String>("token")));
    m.insert("ownerId".into(), json!(row.get::<_, String>("owner_id")));
    m.insert(
        "projectId".into(),
        json!(row.get::<_, String>("project_id")),
    );
    m.insert(
        "environment".into(),
        json!(row.get::<_, String>("environment")),
    );
    put(
        &mut m,
        "metadata",
        cbor_col(row, "metadata_cbor", Some("metadata"), &loc)?,
    );
    put(&mut m, "createdAt", date_col(row, "created_at"));
    put(
        &mut m,
        "specVersion",
        row.get::<_, Option<i32>>("spec_version").map(|v| json!(v)),
    );
    put(
        &mut m,
        "isWebhook",
        row.get::<_, Option<bool>>("is_webhook").map(Value::Bool),
    );
    Ok(Value::Object(m))
}

pub const WAIT_COLS: &str = "wait_id, run_id, status::text AS status, resume_at, completed_at, \
    created_at, updated_at, spec_version";

pub fn wait_json(row: &Row) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("waitId".into(), json!(row.get::<_, String>("wait_id")));
    m.insert("runId".into(), json!(row.get::<_, String>("run_id")));
    m.insert("status".into(), json!(row.get::<_, String>("status")));
    put(&mut m, "resumeAt", date_col(row, "resume_at"));
    put(&mut m, "completedAt", date_col(row, "completed_at"));
    put(&mut m, "createdAt", date_col(row, "created_at"));
    put(&mut m, "updatedAt", date_col(row, "updated_at"));
    put(
        &mut m,
        "specVersion",
        row.get::<_, Option<i32>>("spec_version").map(|v| json!(v)),
    );
    m
}

pub const EVENT_COLS: &str = "id, type, correlation_id, created_at, run_id, payload_cbor, \
    payload::text AS payload, spec_version";

/// A `workflow_events` row as the event object (`{eventType, correlationId?, eventData?,
/// runId, eventId, createdAt, specVersion?}`).
pub fn event_json(row: &Row) -> Result<Value> {
    let id: String = row.get("id");
    let loc = location("workflow_events", &id);
    let mut m = Map::new();
    m.insert("eventType".into(), json!(row.get::<_, String>("type")));
    put(
        &mut m,
        "correlationId",
        row.get::<_, Option<String>>("correlation_id")
            .map(Value::String),
    );
    put(
        &mut m,
        "eventData",
        cbor_col(row, "payload_cbor", Some("payload"), &loc)?,
    );
    m.insert("runId".into(), json!(row.get::<_, String>("run_id")));
    m.insert("eventId".into(), json!(id));
    put(&mut m, "createdAt", date_col(row, "created_at"));
    put(
        &mut m,
        "specVersion",
        row.get::<_, Option<i32>>("spec_version").map(|v| json!(v)),
    );
    Ok(Value::Object(m))
}

/// A JSON number as the `integer` spec_version columns take it.
pub fn spec_int(v: Option<&Value>) -> Option<i32> {
    v.and_then(Value::as_f64).map(|f| f as i32)
}

/// The runs' `spec_version` text (`"3"`, as Drizzle writes a number into the varchar).
pub fn spec_text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_f64)
        .map(crate::machine::json::js_number_text)
}
