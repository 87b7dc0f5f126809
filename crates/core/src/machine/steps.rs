//! Step rules: creation, what a step mutation requires (the step exists, is not
//! terminal, and a terminal run only lets a running step finish), `step_started` with
//! its retry delay, the once-only terminal transition, and retries.

use super::entities::{RunState, StepState};
use super::json::{error_message, literal, number, spread};
use super::request::Ctx;
use super::store::{EventStore, Once};
use crate::error::{Error, Result};
use crate::world::fsio::now_ms;
use serde_json::{json, Value};

fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

fn terminal_conflict(status: &str) -> Error {
    Error::EntityConflict(format!("Cannot modify step in terminal state \"{status}\""))
}

/// For step mutations naming a step: the step, checked against its own state and the
/// run's. `None` for other events.
pub(crate) fn check<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    run: Option<&RunState>,
) -> Result<Option<StepState>> {
    if !matches!(
        ctx.ty,
        "step_started" | "step_completed" | "step_failed" | "step_retrying"
    ) {
        return Ok(None);
    }
    let Some(c) = ctx.corr else { return Ok(None) };
    let st = store
        .load_step(&format!("{}-{c}", ctx.run_id))?
        .ok_or_else(|| Error::World(format!("Step \"{c}\" not found")))?;
    if is_terminal(&st.status) {
        return Err(terminal_conflict(&st.status));
    }
    if let Some(run) = run {
        if run.snap.status.is_terminal() && st.status != "running" {
            return Err(Error::RunExpired(format!(
                "Cannot modify non-running step on run in terminal state \"{}\"",
                run.snap.status.as_str()
            )));
        }
    }
    Ok(Some(st))
}

/// `step_created`: a pending step at attempt 0, create-once.
pub(crate) fn created<S: EventStore + ?Sized>(store: &S, ctx: &Ctx) -> Result<Value> {
    let step = literal(vec![
        ("runId", Some(json!(ctx.run_id))),
        ("stepId", ctx.corr_raw.clone()),
        ("stepName", ctx.ed("stepName")),
        ("status", Some(json!("pending"))),
        ("input", ctx.ed("input")),
        ("attempt", Some(json!(0))),
        ("createdAt", Some(json!(ctx.now))),
        ("updatedAt", Some(json!(ctx.now))),
        ("specVersion", Some(ctx.spec.clone())),
    ]);
    store.create_step(&ctx.entity_key(), &step)?;
    Ok(Value::Object(step))
}

/// `step_started`: refused before `retryAfter`; otherwise running, next attempt.
pub(crate) fn started<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    st: &StepState,
) -> Result<Value> {
    if let Some(ra) = st.retry_after {
        let wall = now_ms();
        if ra > wall {
            return Err(Error::TooEarly {
                message: format!(
                    "Cannot start step \"{}\": retryAfter timestamp has not been reached yet",
                    ctx.corr_text
                ),
                retry_after: ((ra - wall) / 1000.0).ceil() as i64,
            });
        }
    }
    let key = ctx.entity_key();
    // Re-read: the step may have become terminal meanwhile.
    if let Some(fresh) = store.load_step(&key)? {
        if is_terminal(&fresh.status) {
            return Err(terminal_conflict(&fresh.status));
        }
    }
    let started = st
        .view
        .get("startedAt")
        .cloned()
        .unwrap_or_else(|| json!(ctx.now));
    let step = spread(
        &st.view,
        vec![
            ("status", Some(json!("running"))),
            ("startedAt", Some(started)),
            ("attempt", Some(number(st.attempt + 1.0))),
            ("retryAfter", None),
            ("updatedAt", Some(json!(ctx.now))),
        ],
    );
    store.replace_step(&key, &step)?;
    Ok(Value::Object(step))
}

/// The `{ message, stack? }` of `step_failed` / `step_retrying`.
fn step_error(ctx: &Ctx) -> Value {
    Value::Object(literal(vec![
        ("message", Some(error_message(ctx.event_data.get("error")))),
        ("stack", ctx.ed("stack")),
    ]))
}

/// `step_completed` / `step_failed`: once only (the first finisher wins).
pub(crate) fn finished<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    st: &StepState,
) -> Result<Value> {
    let key = ctx.entity_key();
    if !store.claim_once(&Once::StepTerminal(key.clone()))? {
        return Err(Error::EntityConflict(
            "Cannot modify step in terminal state".into(),
        ));
    }
    let step = if ctx.ty == "step_completed" {
        spread(
            &st.view,
            vec![
                ("status", Some(json!("completed"))),
                ("output", ctx.ed("result")),
                ("completedAt", Some(json!(ctx.now))),
                ("updatedAt", Some(json!(ctx.now))),
            ],
        )
    } else {
        spread(
            &st.view,
            vec![
                ("status", Some(json!("failed"))),
                ("error", Some(step_error(ctx))),
                ("completedAt", Some(json!(ctx.now))),
                ("updatedAt", Some(json!(ctx.now))),
            ],
        )
    };
    store.replace_step(&key, &step)?;
    Ok(Value::Object(step))
}

/// `step_retrying`: pending again, with the error and the delay.
pub(crate) fn retrying<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    st: &StepState,
) -> Result<Value> {
    let step = spread(
        &st.view,
        vec![
            ("status", Some(json!("pending"))),
            ("error", Some(step_error(ctx))),
            ("retryAfter", ctx.ed("retryAfter")),
            ("updatedAt", Some(json!(ctx.now))),
        ],
    );
    store.replace_step(&ctx.entity_key(), &step)?;
    Ok(Value::Object(step))
}
