//! Stored entities as the rules see them, validated the way world-local's zod schemas
//! validate them (the runs' own validation is [`parse_run`]).

use super::json::{zod_view, RUN_SCHEMA, STEP_SCHEMA, WAIT_SCHEMA};
use crate::error::{Error, Result};
use crate::world::fsio::parse_date_ms;
use crate::world::model::{parse_run, RunSnapshot};
use serde_json::{Map, Value};
use std::path::Path;

/// A stored run as the rules see it.
#[derive(Clone)]
pub struct RunState {
    pub snap: RunSnapshot,
    /// the run as `WorkflowRunSchema` yields it
    pub view: Map<String, Value>,
}

impl RunState {
    /// Validates a stored run (`path` names it in corruption errors).
    pub fn parse(path: &Path, v: &Value) -> Result<RunState> {
        let snap = parse_run(path, v, false)?;
        let view = match v {
            Value::Object(m) => zod_view(m, RUN_SCHEMA),
            _ => Map::new(),
        };
        Ok(RunState { snap, view })
    }
}

/// A stored step as the rules see it.
#[derive(Clone)]
pub struct StepState {
    /// the step as `StepSchema` yields it
    pub view: Map<String, Value>,
    pub status: String,
    pub attempt: f64,
    /// `retryAfter` as epoch ms
    pub retry_after: Option<f64>,
}

impl StepState {
    /// Validates a stored step (`path` names it in corruption errors).
    pub fn parse(path: &Path, m: &Map<String, Value>) -> Result<StepState> {
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
}

/// Validates a stored wait and returns it as `WaitSchema` yields it (`path` names it in
/// corruption errors).
pub fn parse_wait(path: &Path, m: &Map<String, Value>) -> Result<Map<String, Value>> {
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
