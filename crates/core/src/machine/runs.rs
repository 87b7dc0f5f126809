//! Run rules: creation (explicit, and the resilient start that creates a missing run),
//! `run_started`, the terminal transitions with their hook/wait cleanup, what a terminal
//! run refuses, and the pre-event-sourcing (legacy, spec ≤ 1) rules.

use super::entities::RunState;
use super::json::{error_message, error_stack, js_number_text, js_truthy, literal};
use super::request::{Applied, Created, Ctx, EventResult};
use super::store::EventStore;
use super::txn::after_commit;
use crate::error::{Error, Result};
use crate::ids::prefixed_id;
use crate::world::fsio::now_iso;
use crate::world::model::{parse_run, RunStatus, SPEC_VERSION_CURRENT};
use serde_json::{json, Map, Value};

pub use super::request::validate_run_id_time;

/// Every event reads the current run except these three (world-local skips the read).
pub(crate) fn reads_run(ty: &str) -> bool {
    !matches!(ty, "run_created" | "step_completed" | "step_retrying")
}

/// A new pending run as world-local creates it (key order included).
fn new_run_entity(ctx: &Ctx) -> Map<String, Value> {
    literal(vec![
        ("runId", Some(json!(ctx.run_id))),
        ("deploymentId", ctx.ed("deploymentId")),
        ("status", Some(json!("pending"))),
        ("workflowName", ctx.ed("workflowName")),
        ("specVersion", Some(ctx.spec.clone())),
        ("executionContext", ctx.ed("executionContext")),
        ("input", ctx.ed("input")),
        ("createdAt", Some(json!(ctx.now))),
        ("updatedAt", Some(json!(ctx.now))),
    ])
}

/// `run_created`: the run, create-once.
pub(crate) fn created<S: EventStore + ?Sized>(store: &S, ctx: &Ctx) -> Result<Value> {
    let run = new_run_entity(ctx);
    if !store.create_run(&ctx.run_id, &run, false)? {
        return Err(Error::EntityConflict(format!(
            "Workflow run \"{}\" already exists",
            ctx.run_id
        )));
    }
    Ok(Value::Object(run))
}

/// Resilient start: a `run_started` for a missing run that carries what `run_created`
/// needs creates the run (and its `run_created` event) first. Whoever loses the creation
/// race reads the winner's run.
pub(crate) fn start_implicitly<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
) -> Result<Option<RunState>> {
    let carries_run = ctx.data.get("eventData").is_some_and(js_truthy)
        && ctx.event_data.get("deploymentId").is_some_and(js_truthy)
        && ctx.event_data.get("workflowName").is_some_and(js_truthy)
        && ctx.event_data.contains_key("input");
    if ctx.ty != "run_started" || !carries_run {
        return Ok(None);
    }
    let created = new_run_entity(ctx);
    if !store.create_run(&ctx.run_id, &created, true)? {
        return store.load_run(&ctx.run_id);
    }
    let rc_id = prefixed_id(ctx.event_prefix);
    let rc = literal(vec![
        ("eventType", Some(json!("run_created"))),
        ("runId", Some(json!(ctx.run_id))),
        ("eventId", Some(json!(rc_id))),
        ("createdAt", Some(json!(ctx.now))),
        ("specVersion", Some(ctx.spec.clone())),
        (
            "eventData",
            Some(Value::Object(literal(vec![
                ("deploymentId", ctx.ed("deploymentId")),
                ("workflowName", ctx.ed("workflowName")),
                ("input", ctx.ed("input")),
                ("executionContext", ctx.ed("executionContext")),
            ]))),
        ),
    ]);
    store.store_event(&ctx.run_id, &rc_id, &rc)?;
    let snap = parse_run(
        &store.run_location(&ctx.run_id)?,
        &Value::Object(created.clone()),
        false,
    )?;
    Ok(Some(RunState {
        snap,
        view: created,
    }))
}

/// What a terminal run refuses. A `run_cancelled` on a cancelled run is accepted as a
/// repeat: its event is stored and the run returned unchanged.
pub(crate) fn check_terminal<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    cur: &RunState,
) -> Result<Option<Created>> {
    let status = cur.snap.status;
    if !status.is_terminal() {
        return Ok(None);
    }
    let ty = ctx.ty;
    if ty == "run_cancelled" && status == RunStatus::Cancelled {
        let event = ctx.event();
        store.store_event(&ctx.run_id, &ctx.event_id, &event)?;
        // what the first cancel could not remove (nothing, normally)
        clean_up(store, ctx);
        return Ok(Some(Created {
            result: EventResult {
                event: Some(Value::Object(event)),
                run: Some(Value::Object(cur.view.clone())),
                ..EventResult::default()
            },
            applied: Applied::Repeat,
        }));
    }
    if ty == "run_started" {
        return Err(Error::RunExpired(format!(
            "Workflow run \"{}\" is already in terminal state \"{}\"",
            ctx.run_id,
            status.as_str()
        )));
    }
    if matches!(ty, "run_completed" | "run_failed" | "run_cancelled") {
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
    Ok(None)
}

/// `run_started`: the running run, or `None` when it already runs (idempotent: nothing
/// is written and no event stored).
pub(crate) fn started<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    cur: &RunState,
) -> Result<Option<Value>> {
    if cur.snap.status == RunStatus::Running {
        return Ok(None);
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
            Some(
                v.get("startedAt")
                    .cloned()
                    .unwrap_or_else(|| json!(ctx.now)),
            ),
        ),
        ("updatedAt", Some(json!(ctx.now))),
    ]);
    store.replace_run(&ctx.run_id, &run)?;
    Ok(Some(Value::Object(run)))
}

/// `run_completed` / `run_failed` / `run_cancelled`: the terminal run. Its hooks (with
/// their token claims) and waits are removed once the event is stored ([`clean_up`]).
pub(crate) fn finished<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    cur: &RunState,
) -> Result<Value> {
    let run = terminal_run(cur, ctx.ty, &ctx.event_data, &ctx.now);
    store.replace_run(&ctx.run_id, &run)?;
    Ok(Value::Object(run))
}

/// After a run ended (its event stored): its hooks and waits go. world-local removes them
/// before the event; here a failure cannot undo the run's end, so it is reported and
/// the leftovers are treated as gone by every reader and removed again by a repeated
/// cancel or a hook lookup.
pub(crate) fn clean_up<S: EventStore + ?Sized>(store: &S, ctx: &Ctx) {
    after_commit(
        ctx,
        "deleting its hooks",
        store.delete_hooks_of_run(&ctx.run_id),
    );
    after_commit(
        ctx,
        "deleting its waits",
        store.delete_waits_of_run(&ctx.run_id),
    );
}

/// The run of `run_completed` / `run_failed` / `run_cancelled`.
fn terminal_run(
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

/// Events on pre-event-sourcing runs (spec ≤ 1): a cancel mutates the run directly (no
/// event; waits are kept), `wait_completed` and `hook_received` only append their event
/// (at the current spec), anything else is refused. Each draws its own instant.
pub(crate) fn legacy_event<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    cur: &RunState,
) -> Result<Created> {
    let legacy = |result| {
        Ok(Created {
            result,
            applied: Applied::Legacy,
        })
    };
    match ctx.ty {
        "run_cancelled" => {
            let now = now_iso();
            let run = terminal_run(cur, ctx.ty, &Map::new(), &now);
            store.replace_run(&ctx.run_id, &run)?;
            after_commit(
                ctx,
                "deleting its hooks",
                store.delete_hooks_of_run(&ctx.run_id),
            );
            legacy(EventResult {
                run: Some(Value::Object(run)),
                ..EventResult::default()
            })
        }
        "wait_completed" | "hook_received" => {
            let event_id = prefixed_id(ctx.event_prefix);
            let event = ctx.event_with(&event_id, &now_iso(), &json!(SPEC_VERSION_CURRENT));
            store.store_event(&ctx.run_id, &event_id, &event)?;
            legacy(EventResult {
                event: Some(Value::Object(event)),
                ..EventResult::default()
            })
        }
        ty => {
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
