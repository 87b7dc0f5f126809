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

pub mod entities;
pub mod hooks;
pub(crate) mod json;
pub mod request;
pub mod runs;
pub mod steps;
pub mod store;
mod txn;
pub mod waits;

use crate::error::{Error, Result};
use request::Ctx;
use serde_json::{Map, Value};

pub use entities::{RunState, StepState};
pub use request::{Applied, Created, EventResult, Request};
pub use store::{Entity, EventStore, Once, TokenClaim};

/// `events.create` on `store`: checks, entity effects and the event, in world-local's
/// order. Callers serialise concurrent `hook_created` for one hook themselves
/// (world-local's per-instance mutex).
///
/// All or nothing for storage failures: the event is the commit point. A failure before
/// it takes back the entity changes already made (see [`txn`]) and is returned; the
/// clean-ups after it (a finished run's hooks and waits, a disposed hook, a new hook's
/// entity) cannot fail the event any more: their failures are reported and repaired by
/// later accesses (a hook lookup, a repeated cancel, world-local's own rebuilds).
pub fn apply<S: EventStore + ?Sized>(store: &S, req: &Request) -> Result<Created> {
    if store.transactional() {
        return apply_in(store, req);
    }
    let txn = txn::Txn::new(store, &req.event_type);
    let out = apply_in(&txn, req);
    if let Err(e) = &out {
        for failed in txn.rollback() {
            crate::error::report(
                &format!(
                    "Could not take back a change of a failed \"{}\" ({e})",
                    req.event_type
                ),
                &failed,
            );
        }
    }
    out
}

fn apply_in<S: EventStore + ?Sized>(store: &S, req: &Request) -> Result<Created> {
    let ctx = Ctx::new(req, store.event_id_prefix())?;
    let ty = ctx.ty;

    let current = if runs::reads_run(ty) {
        match store.load_run(&ctx.run_id)? {
            None => runs::start_implicitly(store, &ctx)?,
            found => found,
        }
    } else {
        None
    };

    if current.is_none()
        && store.transitions_need_the_run()
        && matches!(
            ty,
            "run_started" | "run_completed" | "run_failed" | "run_cancelled"
        )
    {
        return Err(Error::RunNotFound {
            run_id: ctx.run_id.clone(),
        });
    }
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
    hooks::check_exists(store, &ctx, current.as_ref())?;

    let mut event = ctx.event();
    let mut result = EventResult::default();
    let mut hook_write: Option<(Map<String, Value>, bool)> = None;
    let mut run_finished = false;
    let mut hook_disposed = false;
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
                run_finished = true;
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
        "hook_disposed" => {
            hooks::disposed(store, &ctx)?;
            hook_disposed = true;
        }
        "wait_created" if ctx.has_data => result.wait = Some(waits::created(store, &ctx)?),
        "wait_completed" => {
            result.wait = Some(waits::completed(store, &ctx, current.as_ref())?);
        }
        // hook_received, hook_conflict and anything else: the event only.
        _ => {}
    }

    publish(store, &ctx, &event)?;
    // Committed. The hook entity only once its event is (a missing one is rebuilt from
    // the event by a lookup, as world-local rebuilds it).
    if let Some((hook, overwrite)) = hook_write {
        txn::after_commit(
            &ctx,
            "writing the hook",
            store.write_hook(&ctx.corr_text, &hook, overwrite),
        );
        result.hook = Some(Value::Object(hook));
    }
    if run_finished {
        runs::clean_up(store, &ctx);
    }
    if hook_disposed {
        txn::after_commit(&ctx, "deleting the hook", store.delete_hook(&ctx.corr_text));
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
