//! Entities as world-local stores them, validated the way its zod schemas validate them.

use crate::error::{Error, Result};
use crate::world::fsio::parse_date_ms;
use base64::Engine;
use serde_json::{Map, Value};
use std::path::Path;

/// The spec version this World implements (`SPEC_VERSION_CURRENT`).
pub const SPEC_VERSION_CURRENT: i64 = 3;

/// A stored payload: bytes (`{"__type":"Uint8Array","data":<base64>}`, spec ≥ 2) or a
/// plain JSON value (legacy spec-1 data).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Bytes(Vec<u8>),
    Json(Value),
}

impl Payload {
    /// Decodes a JSON field the way world-local's `jsonReviver` does.
    pub fn from_json(path: &Path, v: &Value) -> Result<Payload> {
        if let Some(obj) = v.as_object() {
            if obj.get("__type").and_then(Value::as_str) == Some("Uint8Array") {
                if let Some(data) = obj.get("data").and_then(Value::as_str) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|e| {
                            Error::corrupt(path, format!("invalid base64 payload ({e})"))
                        })?;
                    return Ok(Payload::Bytes(bytes));
                }
            }
        }
        Ok(Payload::Json(v.clone()))
    }
}

/// A payload as world-local writes it in JSON.
pub fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Bytes(b) => serde_json::json!({
            "__type": "Uint8Array",
            "data": base64::engine::general_purpose::STANDARD.encode(b),
        }),
        Payload::Json(v) => v.clone(),
    }
}

/// A hook entity (`world.hooks.getByToken`).
#[derive(Debug, Clone)]
pub struct Hook {
    pub run_id: String,
    pub hook_id: String,
    pub token: String,
    pub owner_id: String,
    pub project_id: String,
    pub environment: String,
    pub metadata: Option<Payload>,
    pub created_at: f64,
    pub spec_version: Option<f64>,
    /// `isWebhook ?? true` (hooks written before the flag existed count as webhooks)
    pub is_webhook: bool,
}

impl Hook {
    pub fn is_legacy(&self) -> bool {
        self.spec_version.is_none_or(|v| v <= 1.0)
    }
}

pub fn parse_hook(path: &Path, v: &Value) -> Result<Hook> {
    let o = v
        .as_object()
        .ok_or_else(|| Error::corrupt(path, "a hook must be a JSON object"))?;
    let s = |k: &str| -> Result<String> {
        o.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::corrupt(path, format!("field \"{k}\" must be a string")))
    };
    Ok(Hook {
        run_id: s("runId")?,
        hook_id: s("hookId")?,
        token: s("token")?,
        owner_id: s("ownerId")?,
        project_id: s("projectId")?,
        environment: s("environment")?,
        metadata: match o.get("metadata") {
            None | Some(Value::Null) => None,
            Some(m) => Some(Payload::from_json(path, m)?),
        },
        created_at: o
            .get("createdAt")
            .and_then(parse_date_ms)
            .ok_or_else(|| Error::corrupt(path, "field \"createdAt\" is not a valid date"))?,
        spec_version: o.get("specVersion").and_then(Value::as_f64),
        is_webhook: o.get("isWebhook").and_then(Value::as_bool).unwrap_or(true),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StructuredError {
    pub message: String,
    pub stack: Option<String>,
    pub code: Option<String>,
}

/// What a `runs.get` returns.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    pub run_id: String,
    pub status: RunStatus,
    pub deployment_id: String,
    pub workflow_name: String,
    pub spec_version: Option<f64>,
    pub execution_context: Option<Value>,
    pub input: Option<Payload>,
    pub output: Option<Payload>,
    pub error: Option<StructuredError>,
    pub created_at: f64,
    pub updated_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub expired_at: Option<f64>,
}

impl RunSnapshot {
    /// `isLegacySpecVersion`: absent or ≤ 1.
    pub fn is_legacy(&self) -> bool {
        self.spec_version.is_none_or(|v| v <= 1.0)
    }

    /// `RunNotSupportedError` for runs of a newer spec than this World (`requiresNewerWorld`).
    pub fn check_supported(&self) -> Result<()> {
        let current = SPEC_VERSION_CURRENT;
        match self.spec_version {
            Some(v) if v > current as f64 => Err(Error::RunNotSupported {
                run_spec_version: v as i64,
                world_spec_version: current,
            }),
            _ => Ok(()),
        }
    }
}

fn req_str(path: &Path, obj: &Map<String, Value>, key: &str) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(Error::corrupt(
            path,
            format!("field \"{key}\" must be a string"),
        )),
    }
}

fn opt_date(path: &Path, obj: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_date_ms(v)
            .map(Some)
            .ok_or_else(|| Error::corrupt(path, format!("field \"{key}\" is not a valid date"))),
    }
}

fn req_date(path: &Path, obj: &Map<String, Value>, key: &str) -> Result<f64> {
    opt_date(path, obj, key)?
        .ok_or_else(|| Error::corrupt(path, format!("field \"{key}\" is required")))
}

/// Validates a run file and extracts what callers need. With `with_data` false the
/// input/output payloads are not decoded (`resolveData: 'none'`).
pub fn parse_run(path: &Path, v: &Value, with_data: bool) -> Result<RunSnapshot> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::corrupt(path, "a run must be a JSON object"))?;
    let status_str = req_str(path, obj, "status")?;
    let status = RunStatus::parse(&status_str)
        .ok_or_else(|| Error::corrupt(path, format!("unknown run status \"{status_str}\"")))?;
    let spec_version = match obj.get("specVersion") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => {
            return Err(Error::corrupt(
                path,
                "field \"specVersion\" must be a number",
            ))
        }
    };
    let error = match obj.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::Object(e)) => Some(StructuredError {
            message: req_str(path, e, "message")?,
            stack: e.get("stack").and_then(Value::as_str).map(str::to_string),
            code: e.get("code").and_then(Value::as_str).map(str::to_string),
        }),
        Some(_) => return Err(Error::corrupt(path, "field \"error\" must be an object")),
    };
    let completed_at = opt_date(path, obj, "completedAt")?;
    if status.is_terminal() && completed_at.is_none() {
        return Err(Error::corrupt(
            path,
            format!("a {} run must have \"completedAt\"", status.as_str()),
        ));
    }
    if status == RunStatus::Failed && error.is_none() {
        return Err(Error::corrupt(path, "a failed run must have \"error\""));
    }
    let payload = |key: &str| -> Result<Option<Payload>> {
        if !with_data {
            return Ok(None);
        }
        match obj.get(key) {
            None => Ok(None),
            Some(v) => Payload::from_json(path, v).map(Some),
        }
    };
    Ok(RunSnapshot {
        run_id: req_str(path, obj, "runId")?,
        status,
        deployment_id: req_str(path, obj, "deploymentId")?,
        workflow_name: req_str(path, obj, "workflowName")?,
        spec_version,
        execution_context: obj
            .get("executionContext")
            .filter(|v| v.is_object())
            .cloned(),
        input: payload("input")?,
        output: if status == RunStatus::Completed {
            payload("output")?
        } else {
            None
        },
        error: if status == RunStatus::Failed {
            error
        } else {
            None
        },
        created_at: req_date(path, obj, "createdAt")?,
        updated_at: req_date(path, obj, "updatedAt")?,
        started_at: opt_date(path, obj, "startedAt")?,
        completed_at,
        expired_at: opt_date(path, obj, "expiredAt")?,
    })
}

/// The few event fields the Run operations need.
#[derive(Debug, Clone)]
pub struct EventSummary {
    pub event_id: String,
    pub event_type: String,
    pub correlation_id: Option<String>,
    pub created_at: f64,
    /// `eventData.resumeAt` of `wait_created`, as epoch ms.
    pub resume_at: Option<f64>,
}

/// Parses an event file; `None` for files that do not validate (world-local skips those
/// when listing).
pub fn parse_event_summary(v: &Value) -> Option<EventSummary> {
    let obj = v.as_object()?;
    let event_type = obj.get("eventType")?.as_str()?.to_string();
    let created_at = parse_date_ms(obj.get("createdAt")?)?;
    let event_id = obj.get("eventId")?.as_str()?.to_string();
    obj.get("runId")?.as_str()?;
    let correlation_id = match obj.get("correlationId") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let resume_at = obj
        .get("eventData")
        .and_then(|d| d.get("resumeAt"))
        .and_then(parse_date_ms);
    if event_type == "wait_created" && (correlation_id.is_none() || resume_at.is_none()) {
        return None;
    }
    Some(EventSummary {
        event_id,
        event_type,
        correlation_id,
        created_at,
        resume_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p() -> &'static Path {
        Path::new("runs/x.json")
    }

    #[test]
    fn parses_a_completed_run_with_bytes() {
        let v = json!({
            "runId": "wrun_A", "deploymentId": "d", "workflowName": "w", "specVersion": 3,
            "status": "completed", "output": {"__type": "Uint8Array", "data": "ZGV2bFs0Ml0="},
            "createdAt": "2026-11-29T03:28:16.940Z", "updatedAt": "2026-11-29T03:28:16.940Z",
            "completedAt": "2026-11-29T03:28:17.000Z"
        });
        let r = parse_run(p(), &v, true).unwrap();
        assert_eq!(r.status, RunStatus::Completed);
        assert_eq!(r.output, Some(Payload::Bytes(b"devl[42]".to_vec())));
        assert!(!r.is_legacy());
    }

    #[test]
    fn rejects_failed_run_without_error() {
        let v = json!({
            "runId": "wrun_A", "deploymentId": "d", "workflowName": "w",
            "status": "failed", "createdAt": "2026-11-29T03:28:16.940Z",
            "updatedAt": "2026-11-29T03:28:16.940Z", "completedAt": "2026-11-29T03:28:16.940Z"
        });
        let e = parse_run(p(), &v, true).unwrap_err();
        assert!(e.to_string().contains("runs/x.json"));
    }

    #[test]
    fn legacy_payloads_stay_json() {
        let v = json!([{"a": 1}, 2]);
        assert_eq!(
            Payload::from_json(p(), &v).unwrap(),
            Payload::Json(v.clone())
        );
    }
}
