//! The JavaScript object semantics world-local's entities and events inherit, as JSON:
//! zod schema views (key order, dropped keys, re-printed dates), object spreads and
//! literals (`undefined` disappears), truthiness and number printing.
//!
//! They decide the byte layout of every file the local World writes, so they are shared
//! by all the rules rather than re-derived per entity.

use crate::world::fsio::normalize_date;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy)]
pub(crate) enum Field {
    /// kept as is (strings, numbers, payloads, records)
    Any,
    /// `z.coerce.date()`: re-printed as an ISO string
    Date,
    /// `StructuredErrorSchema`: `{ message, stack?, code? }`
    Error,
}

use Field::{Any, Date, Error as Err_};

pub(crate) const RUN_SCHEMA: &[(&str, Field)] = &[
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

pub(crate) const STEP_SCHEMA: &[(&str, Field)] = &[
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

pub(crate) const WAIT_SCHEMA: &[(&str, Field)] = &[
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
pub(crate) fn zod_view(obj: &Map<String, Value>, schema: &[(&str, Field)]) -> Map<String, Value> {
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
pub(crate) fn spread(
    base: &Map<String, Value>,
    changes: Vec<(&str, Option<Value>)>,
) -> Map<String, Value> {
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
pub(crate) fn literal(fields: Vec<(&str, Option<Value>)>) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    }
    m
}

pub(crate) fn js_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// `String(n)` for the numbers world-local prints in messages.
pub(crate) fn js_number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A JSON number for a JS number (integers without a fraction).
pub(crate) fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// `typeof e === 'string' ? e : (e?.message ?? 'Unknown error')`
pub(crate) fn error_message(e: Option<&Value>) -> Value {
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
pub(crate) fn error_stack(e: Option<&Value>) -> Option<Value> {
    match e {
        Some(Value::Object(o)) => o.get("stack").cloned(),
        _ => None,
    }
}
