//! Crash recovery for the embedded engine: what a run's files say when a process died in
//! the middle of an `events.create`, and how the engine finishes it before replaying.
//!
//! world-local writes an event's effects in a fixed order — the once-only lock file, the
//! entity (step, wait, run), and only then the event — so a process killed in between
//! leaves an entity that is ahead of the log: a step file saying `completed` with no
//! `step_completed` event, a run file saying `running` with no `run_started`, a lock file
//! with no new state behind it. Everything the missing event would carry is in the entity
//! it changed (the step's `output` is the event's `result`, its `completedAt` the event's
//! `createdAt`), so [`LocalWorld::recover_run_sync`] writes that event, as the interrupted
//! writer would have, and removes lock files that guard nothing. The engine runs it once,
//! under the run's lease, before it reads the log to replay.
//!
//! The log is read strictly here ([`LocalWorld::read_run_log_sync`]): a file among the
//! run's events that is not a well-formed event is a storage fault reported as
//! `CORRUPT_FILE` naming the file, never skipped — a skipped `step_completed` would make
//! the engine run the step again, or wait for ever for an outcome that is on disk.

use crate::error::{Error, Result};
use crate::machine::json::literal;
use crate::machine::{EventStore, Once};
use crate::world::fsio::{iso_from_ms, now_ms, parse_date_ms};
use crate::world::local::LocalWorld;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// What recovery did to a run, and the run's log afterwards.
#[derive(Debug)]
pub struct Recovered {
    /// The run's status (its entity).
    pub status: String,
    /// Every event of the run, as stored, in log order (after the repairs).
    pub events_json: String,
    /// One line per repair, for logs and tests.
    pub repairs: Vec<String>,
}

/// A stored event as recovery reads it.
struct LogEvent {
    ty: String,
    corr: Option<String>,
    event_id: String,
}

const KNOWN_TYPES: &[&str] = &[
    "run_created",
    "run_started",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "step_created",
    "step_completed",
    "step_failed",
    "step_retrying",
    "step_started",
    "hook_created",
    "hook_received",
    "hook_disposed",
    "hook_conflict",
    "wait_created",
    "wait_completed",
];

/// Checks what the engine relies on in one stored event (the shape `EventSchema` gives
/// each type). Returns (createdAt ms, eventId, eventType, correlationId).
fn check_event(path: &Path, run_id: &str, v: &Value) -> Result<(f64, LogEvent)> {
    let bad = |detail: String| Error::corrupt(path, detail);
    let Some(o) = v.as_object() else {
        return Err(bad("not an event (expected a JSON object)".into()));
    };
    let ty = match o.get("eventType") {
        Some(Value::String(t)) if KNOWN_TYPES.contains(&t.as_str()) => t.clone(),
        Some(Value::String(t)) => return Err(bad(format!("unknown eventType \"{t}\""))),
        _ => return Err(bad("not an event: \"eventType\" must be a string".into())),
    };
    let event_id = match o.get("eventId") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(bad(format!("{ty} event without a string \"eventId\""))),
    };
    if o.get("runId").and_then(Value::as_str) != Some(run_id) {
        return Err(bad(format!(
            "{ty} event whose \"runId\" is not \"{run_id}\""
        )));
    }
    let Some(t) = o.get("createdAt").and_then(parse_date_ms) else {
        return Err(bad(format!("{ty} event without a valid \"createdAt\"")));
    };
    let corr = match o.get("correlationId") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => {
            return Err(bad(format!(
                "{ty} event whose \"correlationId\" is not a string"
            )))
        }
    };
    let needs_corr = ty.starts_with("step_") || ty.starts_with("hook_") || ty.starts_with("wait_");
    if needs_corr && corr.is_none() {
        return Err(bad(format!("{ty} event without a \"correlationId\"")));
    }
    let data = o.get("eventData");
    let data_obj = data.and_then(Value::as_object);
    // The payload-carrying fields are binary (tagged) from spec 2 on.
    let modern = o
        .get("specVersion")
        .and_then(Value::as_f64)
        .is_some_and(|s| s >= 2.0);
    let need_data = |fields: &[&str]| -> Result<()> {
        let Some(d) = data_obj else {
            return Err(bad(format!("{ty} event without \"eventData\"")));
        };
        for f in fields {
            if !d.contains_key(*f) {
                return Err(bad(format!("{ty} event without \"eventData.{f}\"")));
            }
        }
        Ok(())
    };
    match ty.as_str() {
        "run_created" => {
            need_data(&["workflowName", "input"])?;
        }
        "step_created" => {
            need_data(&["stepName", "input"])?;
        }
        "step_completed" => {
            if modern {
                need_data(&["result"])?;
            } else {
                need_data(&[])?;
            }
        }
        "step_failed" | "step_retrying" => need_data(&[])?,
        "hook_created" | "hook_conflict" => {
            need_data(&["token"])?;
        }
        "hook_received" => {
            if modern {
                need_data(&["payload"])?;
            } else {
                need_data(&[])?;
            }
        }
        "wait_created" => {
            need_data(&["resumeAt"])?;
            if data_obj
                .and_then(|d| d.get("resumeAt"))
                .and_then(parse_date_ms)
                .is_none()
            {
                return Err(bad(format!(
                    "{ty} event whose \"eventData.resumeAt\" is not a date"
                )));
            }
        }
        _ => {}
    }
    if needs_corr && data.is_some_and(|d| !d.is_object() && !d.is_null()) {
        return Err(bad(format!(
            "{ty} event whose \"eventData\" is not an object"
        )));
    }
    Ok((t, LogEvent { ty, corr, event_id }))
}

/// The ULID of a repaired event: the instant the interrupted writer stood at, and the
/// largest random part (less `k`), so the event sorts after everything that writer had
/// already stored in that millisecond — where the lost event would have been.
fn repair_event_id(ms: f64, k: u128) -> String {
    let time = if ms.is_finite() && ms > 0.0 {
        ms as u64
    } else {
        0
    };
    let random = ((1u128 << 80) - 1) - k;
    format!("evnt_{}", ulid::Ulid::from_parts(time, random))
}

fn exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The time part of a prefixed ULID (`evnt_…`), 0 when it is not one.
fn ulid_ms(id: &str) -> f64 {
    id.split_once('_')
        .and_then(|(_, u)| ulid::Ulid::from_string(u).ok())
        .map(|u| u.timestamp_ms() as f64)
        .unwrap_or(0.0)
}

fn modified_ms(path: &Path) -> Option<f64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_millis() as f64)
}

fn date_ms(m: &Map<String, Value>, keys: &[&str]) -> f64 {
    keys.iter()
        .find_map(|k| m.get(*k).and_then(parse_date_ms))
        .unwrap_or_else(now_ms)
}

impl LocalWorld {
    /// Every event of the run, in log order (createdAt, then eventId), as one JSON array
    /// text. Strict: a file among the run's events that cannot be read or is not a
    /// well-formed event is an error naming it (`CORRUPT_FILE`, or the I/O error).
    pub fn read_run_log_sync(&self, run_id: &str) -> Result<String> {
        Ok(self.read_log(run_id)?.0)
    }

    fn read_log(&self, run_id: &str) -> Result<(String, Vec<LogEvent>)> {
        let mut items: Vec<(f64, String, String, LogEvent)> = Vec::new();
        for (path, bytes) in self.run_event_files(run_id)? {
            let text =
                String::from_utf8(bytes).map_err(|_| Error::corrupt(&path, "not valid UTF-8"))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::corrupt(&path, format!("invalid JSON ({e})")))?;
            let (t, ev) = check_event(&path, run_id, &v)?;
            items.push((t, ev.event_id.clone(), text, ev));
        }
        items.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = String::from("[");
        let mut events = Vec::with_capacity(items.len());
        for (i, (_, _, text, ev)) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(text.trim());
            events.push(ev);
        }
        out.push(']');
        Ok((out, events))
    }

    /// Stores an event the interrupted writer did not get to: `{eventType, specVersion,
    /// correlationId?, eventData?}` as the engine sends it, then `runId`, `eventId` and
    /// `createdAt` as `events.create` adds them.
    fn store_repair(
        &self,
        run_id: &str,
        ty: &str,
        corr: Option<&str>,
        data: Option<Map<String, Value>>,
        spec: &Value,
        created_ms: f64,
    ) -> Result<()> {
        for k in 0..64u128 {
            let event_id = repair_event_id(created_ms, k);
            let event = literal(vec![
                ("eventType", Some(json!(ty))),
                ("specVersion", Some(spec.clone())),
                ("correlationId", corr.map(|c| json!(c))),
                ("eventData", data.clone().map(Value::Object)),
                ("runId", Some(json!(run_id))),
                ("eventId", Some(json!(event_id))),
                ("createdAt", Some(json!(iso_from_ms(created_ms)))),
            ]);
            if EventStore::publish_event(self, run_id, &event_id, &event)? {
                return Ok(());
            }
        }
        Err(Error::Plain(format!(
            "could not find a free event id to repair {ty} of run \"{run_id}\""
        )))
    }

    /// Finishes what a writer killed in the middle of `events.create` left of the run (see
    /// the module doc), then reads the log strictly. Call it while holding the run's lease:
    /// nothing else may be writing the run's events meanwhile.
    pub fn recover_run_sync(&self, run_id: &str) -> Result<Recovered> {
        // The log first: a corrupt file stops everything before anything is written.
        let (first_json, log) = self.read_log(run_id)?;
        let run = EventStore::load_run(self, run_id)?.ok_or_else(|| Error::RunNotFound {
            run_id: run_id.to_string(),
        })?;
        let status = run.snap.status;
        let mut repairs = Vec::new();
        if !run.snap.is_legacy() {
            // durable before the engine goes on from them, as any API write
            crate::world::durable::committed(|| self.repair(run_id, &run, &log, &mut repairs))?;
        }
        // Nothing written: the log read above is current.
        let events_json = if repairs.is_empty() {
            first_json
        } else {
            self.read_log(run_id)?.0
        };
        Ok(Recovered {
            status: status.as_str().to_string(),
            events_json,
            repairs,
        })
    }

    fn repair(
        &self,
        run_id: &str,
        run: &crate::machine::RunState,
        log: &[LogEvent],
        repairs: &mut Vec<String>,
    ) -> Result<()> {
        let view = &run.view;
        let spec = view.get("specVersion").cloned().unwrap_or(json!(3));
        let has = |ty: &str| log.iter().any(|e| e.ty == ty);
        let get = |k: &str| view.get(k).cloned();
        let status = run.snap.status;

        // The run itself, in the order its events come. A run file without its
        // `run_created` is the crash window of a start (the run file is written first)
        // only while the run is pending: a run that went on had its log, and lost it (a
        // storage fault: replaying the code from nothing would run its steps again).
        if !has("run_created") && status.as_str() != "pending" {
            return Err(Error::corrupt(
                &self.root().join("events"),
                format!(
                    "missing: the {} run \"{run_id}\" has no run_created event",
                    status.as_str()
                ),
            ));
        }
        if !has("run_created") {
            let data = literal(vec![
                ("deploymentId", get("deploymentId")),
                ("workflowName", get("workflowName")),
                ("input", get("input")),
                ("executionContext", get("executionContext")),
            ]);
            let at = date_ms(view, &["createdAt"]);
            self.store_repair(run_id, "run_created", None, Some(data), &spec, at)?;
            repairs.push("run_created (the run file exists)".into());
        }
        if status.as_str() == "running" && !has("run_started") {
            let at = date_ms(view, &["startedAt", "updatedAt"]);
            self.store_repair(run_id, "run_started", None, None, &spec, at)?;
            repairs.push("run_started (the run file says running)".into());
        }
        let terminal_logged = has("run_completed") || has("run_failed") || has("run_cancelled");
        if status.is_terminal() {
            if !terminal_logged {
                // What the terminal transition does after the run file: hooks (with their
                // token claims) and waits go, then the event.
                EventStore::delete_hooks_of_run(self, run_id)?;
                EventStore::delete_waits_of_run(self, run_id)?;
                let (ty, data) = match status.as_str() {
                    "completed" => (
                        "run_completed",
                        Some(literal(vec![("output", get("output"))])),
                    ),
                    "failed" => {
                        let e = view.get("error").and_then(Value::as_object);
                        let f = |k: &str| e.and_then(|e| e.get(k)).cloned();
                        let error = literal(vec![("message", f("message")), ("stack", f("stack"))]);
                        (
                            "run_failed",
                            Some(literal(vec![
                                ("error", Some(Value::Object(error))),
                                ("errorCode", f("code")),
                            ])),
                        )
                    }
                    _ => ("run_cancelled", None),
                };
                let at = date_ms(view, &["completedAt", "updatedAt"]);
                self.store_repair(run_id, ty, None, data, &spec, at)?;
                repairs.push(format!("{ty} (the run file says {})", status.as_str()));
            }
            // A finished run's steps, waits and hooks are not continued.
            return Ok(());
        }

        // Per correlation id, in log order of first appearance.
        let mut order: Vec<&str> = Vec::new();
        let mut by_corr: HashMap<&str, Vec<&LogEvent>> = HashMap::new();
        for e in log {
            if let Some(c) = e.corr.as_deref() {
                let list = by_corr.entry(c).or_default();
                if list.is_empty() {
                    order.push(c);
                }
                list.push(e);
            }
        }
        for corr in order {
            let evs = &by_corr[corr];
            let count = |ty: &str| evs.iter().filter(|e| e.ty == ty).count();
            if count("step_created") > 0 {
                self.repair_step(run_id, corr, &count, view, &spec, repairs)?;
            } else if count("wait_created") > 0 && count("wait_completed") == 0 {
                self.repair_wait(run_id, corr, &spec, repairs)?;
            } else if let Some(created) = evs.iter().find(|e| e.ty == "hook_created") {
                if count("hook_disposed") == 0 {
                    self.repair_hook_state(run_id, corr, &created.event_id, &spec, repairs)?;
                }
            }
        }
        Ok(())
    }

    fn repair_step(
        &self,
        run_id: &str,
        corr: &str,
        count: &dyn Fn(&str) -> usize,
        run: &Map<String, Value>,
        spec: &Value,
        repairs: &mut Vec<String>,
    ) -> Result<()> {
        if count("step_completed") > 0 || count("step_failed") > 0 {
            return Ok(());
        }
        let key = format!("{run_id}-{corr}");
        let path = self.root().join("steps").join(format!("{key}.json"));
        let Some(st) = EventStore::load_step(self, &key)? else {
            return Err(Error::corrupt(
                &path,
                format!(
                    "missing: the event log of run \"{run_id}\" records step_created for {corr}"
                ),
            ));
        };
        let v = &st.view;
        let step_name = v.get("stepName").cloned();
        let error_parts = || {
            let e = v.get("error");
            let message = match e {
                Some(Value::Object(o)) => o.get("message").cloned(),
                Some(Value::String(s)) => Some(json!(s)),
                _ => None,
            };
            let stack = e
                .and_then(Value::as_object)
                .and_then(|o| o.get("stack"))
                .cloned();
            (message, stack)
        };
        let started = count("step_started") as f64;
        let retried = count("step_retrying") as f64;
        match st.status.as_str() {
            "completed" => {
                let Some(output) = v.get("output").cloned() else {
                    return Err(Error::corrupt(
                        &path,
                        "status \"completed\" without \"output\"",
                    ));
                };
                let data = literal(vec![
                    ("stepName", step_name),
                    ("workflowName", run.get("workflowName").cloned()),
                    ("result", Some(output)),
                ]);
                let at = date_ms(v, &["completedAt", "updatedAt"]);
                self.store_repair(run_id, "step_completed", Some(corr), Some(data), spec, at)?;
                repairs.push(format!(
                    "step_completed for {corr} (the step file says completed)"
                ));
            }
            "failed" => {
                let (message, stack) = error_parts();
                let data = literal(vec![
                    ("stepName", step_name),
                    ("error", Some(message.unwrap_or(json!("Step failed")))),
                    ("stack", stack),
                ]);
                let at = date_ms(v, &["completedAt", "updatedAt"]);
                self.store_repair(run_id, "step_failed", Some(corr), Some(data), spec, at)?;
                repairs.push(format!(
                    "step_failed for {corr} (the step file says failed)"
                ));
            }
            status @ ("running" | "pending") => {
                // The terminal lock comes before the step file: a lock with a step that is
                // not terminal guards an outcome that was never written.
                let lock = self.marker_path(&Once::StepTerminal(key.clone()))?;
                if exists(&lock)? {
                    EventStore::release_once(self, &Once::StepTerminal(key.clone()))?;
                    repairs.push(format!("removed the stale terminal lock of {corr}"));
                }
                let at = date_ms(v, &["updatedAt"]);
                if status == "running" && started + 1.0 == st.attempt {
                    let data = literal(vec![("stepName", step_name)]);
                    self.store_repair(run_id, "step_started", Some(corr), Some(data), spec, at)?;
                    repairs.push(format!(
                        "step_started for {corr} (the step file says running)"
                    ));
                } else if status == "pending"
                    && st.attempt >= 1.0
                    && started == st.attempt
                    && retried + 1.0 == st.attempt
                {
                    let (message, stack) = error_parts();
                    let data = literal(vec![
                        ("stepName", step_name),
                        ("error", Some(message.unwrap_or(json!("Step failed")))),
                        ("stack", stack),
                        ("retryAfter", v.get("retryAfter").cloned()),
                    ]);
                    self.store_repair(run_id, "step_retrying", Some(corr), Some(data), spec, at)?;
                    repairs.push(format!("step_retrying for {corr} (the step file says pending after a failed attempt)"));
                }
            }
            // a status no writer of this log produces: left for the engine to report
            _ => {}
        }
        Ok(())
    }

    fn repair_wait(
        &self,
        run_id: &str,
        corr: &str,
        spec: &Value,
        repairs: &mut Vec<String>,
    ) -> Result<()> {
        let key = format!("{run_id}-{corr}");
        let path = self.root().join("waits").join(format!("{key}.json"));
        let Some(w) = EventStore::load_wait(self, &key)? else {
            return Err(Error::corrupt(
                &path,
                format!(
                    "missing: the event log of run \"{run_id}\" records wait_created for {corr}"
                ),
            ));
        };
        if w.get("status").and_then(Value::as_str) == Some("completed") {
            let data = literal(vec![("resumeAt", w.get("resumeAt").cloned())]);
            let at = date_ms(&w, &["completedAt", "updatedAt"]);
            self.store_repair(run_id, "wait_completed", Some(corr), Some(data), spec, at)?;
            repairs.push(format!(
                "wait_completed for {corr} (the wait file says completed)"
            ));
        } else {
            let marker = Once::WaitCompleted(key);
            if exists(&self.marker_path(&marker)?)? {
                EventStore::release_once(self, &marker)?;
                repairs.push(format!("removed the stale completion lock of {corr}"));
            }
        }
        Ok(())
    }

    fn repair_hook_state(
        &self,
        run_id: &str,
        corr: &str,
        created_event_id: &str,
        spec: &Value,
        repairs: &mut Vec<String>,
    ) -> Result<()> {
        let marker = Once::HookDisposed(corr.to_string());
        let lock = self.marker_path(&marker)?;
        if exists(&lock)? {
            // Disposed (the lock taken; world-local removes the hook next, this world
            // once the event is stored) but its event never written.
            // the lock's time (the file system's coarse clock, which may lag the clock
            // that named the hook_created event by a tick), never before that event
            let at = modified_ms(&lock)
                .unwrap_or_else(now_ms)
                .max(ulid_ms(created_event_id));
            self.store_repair(run_id, "hook_disposed", Some(corr), None, spec, at)?;
            EventStore::delete_hook(self, corr)?;
            repairs.push(format!(
                "hook_disposed for {corr} (its disposal lock is there)"
            ));
        } else if EventStore::hook_exists(self, corr)? {
            return Ok(());
        } else {
            // hook_created publishes its event before the hook file: restore the file.
            EventStore::repair_hook(self, run_id, corr, created_event_id)?;
            if EventStore::hook_exists(self, corr)? {
                repairs.push(format!(
                    "restored the hook file of {corr} from its hook_created event"
                ));
            }
        }
        Ok(())
    }
}
