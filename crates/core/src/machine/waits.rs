//! Wait rules: a wait is created once per correlation id and completed once.

use super::entities::RunState;
use super::json::{literal, spread};
use super::request::Ctx;
use super::store::{EventStore, Once};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// `wait_created`: a waiting wait, refused when one exists.
pub(crate) fn created<S: EventStore + ?Sized>(store: &S, ctx: &Ctx) -> Result<Value> {
    let key = ctx.entity_key();
    if store.load_wait(&key)?.is_some() {
        return Err(Error::EntityConflict(format!(
            "Wait \"{}\" already exists",
            ctx.corr_text
        )));
    }
    let wait = literal(vec![
        ("waitId", Some(json!(key))),
        ("runId", Some(json!(ctx.run_id))),
        ("status", Some(json!("waiting"))),
        ("resumeAt", ctx.ed("resumeAt")),
        ("createdAt", Some(json!(ctx.now))),
        ("updatedAt", Some(json!(ctx.now))),
        ("specVersion", Some(ctx.spec.clone())),
    ]);
    store.create_wait(&key, &wait)?;
    Ok(Value::Object(wait))
}

/// `wait_completed`: once only. A missing wait gives its marker back, so a later
/// `wait_created` + `wait_completed` still works. The waits of a run that ended are gone
/// (its end removes them; one a failed clean-up left behind counts as removed).
pub(crate) fn completed<S: EventStore + ?Sized>(
    store: &S,
    ctx: &Ctx,
    run: Option<&RunState>,
) -> Result<Value> {
    let key = ctx.entity_key();
    let marker = Once::WaitCompleted(key.clone());
    if !store.claim_once(&marker)? {
        return Err(Error::EntityConflict(format!(
            "Wait \"{}\" already completed",
            ctx.corr_text
        )));
    }
    let run_ended = run.is_some_and(|r| r.snap.status.is_terminal());
    let found = if run_ended {
        None
    } else {
        store.load_wait(&key)?
    };
    let Some(view) = found else {
        let _ = store.release_once(&marker);
        return Err(Error::World(format!(
            "Wait \"{}\" not found",
            ctx.corr_text
        )));
    };
    let wait = spread(
        &view,
        vec![
            ("status", Some(json!("completed"))),
            ("completedAt", Some(json!(ctx.now))),
            ("updatedAt", Some(json!(ctx.now))),
        ],
    );
    store.replace_wait(&key, &wait)?;
    Ok(Value::Object(wait))
}
