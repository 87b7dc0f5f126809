//! Hook rules: a hook event names an existing hook; `hook_created` claims its token
//! (one live hook per token: a retry of the same hook converges on the first event, any
//! other hook gets a `hook_conflict` event instead); `hook_disposed` happens once.

use super::entities::RunState;
use super::json::literal;
use super::request::{Created, Ctx, EventResult};
use super::store::{EventStore, Once, TokenClaim};
use super::txn::after_commit;
use crate::error::{Error, Result};
use crate::ids::ulid_time_ms;
use crate::world::fsio::{iso_from_ms, to_compact_json};
use serde_json::{json, Map, Value};

/// `hook_disposed` / `hook_received` need the hook to exist (`HookNotFoundError` carrying
/// the hook id, as world-local reports it). A hook of a run that ended does not: the
/// run's end removes it, and one a failed clean-up left behind is as good as gone.
pub(crate) fn check_exists<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    run: Option<&RunState>,
) -> Result<()> {
    if !matches!(ctx.ty, "hook_disposed" | "hook_received") {
        return Ok(());
    }
    let Some(c) = ctx.corr else { return Ok(()) };
    let run_ended = run.is_some_and(|r| r.snap.status.is_terminal());
    if run_ended || !store.hook_exists(c)? {
        return Err(Error::HookNotFound {
            token: c.to_string(),
        });
    }
    Ok(())
}

/// The error of a retried `hook_created` whose first attempt is already published.
pub fn already_created(hook_id: &str) -> Error {
    Error::EntityConflict(format!("Hook \"{hook_id}\" already created"))
}

/// What `hook_created` does after claiming the token.
pub(crate) enum HookCreated {
    /// The token belongs to another hook: only a `hook_conflict` event was stored.
    Conflict(Box<Created>),
    /// Publish `event`, then write `hook` (replacing it for a retry).
    Write {
        event: Map<String, Value>,
        hook: Map<String, Value>,
        overwrite: bool,
    },
}

pub(crate) fn created<S: EventStore + ?Sized>(store: &S, ctx: &Ctx) -> Result<HookCreated> {
    let token = match ctx.event_data.get("token") {
        Some(Value::String(t)) => t.clone(),
        other => {
            // What node's hash.update() throws for a token that is not a string.
            return Err(Error::InvalidArgument(format!(
                "The \"data\" argument must be of type string or an instance of Buffer, TypedArray, or DataView. Received {}",
                match other {
                    None => "undefined".to_string(),
                    Some(v) => to_compact_json(v),
                }
            )));
        }
    };
    let claim = literal(vec![
        ("token", Some(json!(token))),
        ("hookId", ctx.corr_raw.clone()),
        ("runId", Some(json!(ctx.run_id))),
        ("eventId", Some(json!(ctx.event_id))),
    ]);
    let (event, overwrite) = match store.claim_token(&token, &claim, &ctx.corr_text)? {
        TokenClaim::Claimed => (ctx.event(), false),
        TokenClaim::Retry { event_id } => {
            // The first attempt's instant is in its event id.
            let created = event_id
                .strip_prefix(ctx.event_prefix)
                .and_then(|rest| rest.strip_prefix('_'))
                .and_then(ulid_time_ms)
                .map(|ms| iso_from_ms(ms as f64))
                .unwrap_or_else(|| ctx.now.clone());
            (ctx.event_with(&event_id, &created, &ctx.spec), true)
        }
        TokenClaim::Taken { run_id } => {
            let mut conflict_data = Map::new();
            conflict_data.insert("token".into(), json!(token));
            if let Some(r) = run_id {
                conflict_data.insert("conflictingRunId".into(), json!(r));
            }
            let conflict = literal(vec![
                ("eventType", Some(json!("hook_conflict"))),
                ("correlationId", ctx.corr_raw.clone()),
                ("eventData", Some(Value::Object(conflict_data))),
                ("runId", Some(json!(ctx.run_id))),
                ("eventId", Some(json!(ctx.event_id))),
                ("createdAt", Some(json!(ctx.now))),
                ("specVersion", Some(ctx.spec.clone())),
            ]);
            store.store_event(&ctx.run_id, &ctx.event_id, &conflict)?;
            return Ok(HookCreated::Conflict(Box::new(Created::new(EventResult {
                event: Some(Value::Object(conflict)),
                ..EventResult::default()
            }))));
        }
    };
    let hook = literal(vec![
        ("runId", Some(json!(ctx.run_id))),
        ("hookId", ctx.corr_raw.clone()),
        ("token", Some(json!(token))),
        ("metadata", ctx.ed("metadata")),
        ("ownerId", Some(json!("local-owner"))),
        ("projectId", Some(json!("local-project"))),
        ("environment", Some(json!("local"))),
        ("createdAt", event.get("createdAt").cloned()),
        ("specVersion", Some(ctx.spec.clone())),
        (
            "isWebhook",
            Some(match ctx.event_data.get("isWebhook") {
                None | Some(Value::Null) => json!(false),
                Some(v) => v.clone(),
            }),
        ),
    ]);
    Ok(HookCreated::Write {
        event,
        hook,
        overwrite,
    })
}

/// `hook_disposed`: once only. The hook and its token claim go once the event is stored
/// (world-local deletes them first: a failed event would leave a hook gone for good).
/// A repeat deletes what a failed clean-up of the first one left.
pub(crate) fn disposed<S: EventStore + ?Sized>(store: &S, ctx: &Ctx) -> Result<()> {
    if !store.claim_once(&Once::HookDisposed(ctx.corr_text.clone()))? {
        after_commit(ctx, "deleting the hook", store.delete_hook(&ctx.corr_text));
        return Err(Error::EntityConflict(format!(
            "Hook \"{}\" already disposed",
            ctx.corr_text
        )));
    }
    Ok(())
}
