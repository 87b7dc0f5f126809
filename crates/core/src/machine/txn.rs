//! One `events.create` as all-or-nothing for storage failures.
//!
//! world-local writes an event's entity changes first and the event last; the event is
//! the commit point (the log is the record every reader trusts). When a write fails
//! before the event is stored — an I/O error, a directory replaced by a file — the
//! entity changes already made would otherwise stay: a run reading `failed` or
//! `cancelled` with no such event, a step `completed` whose event never lands, a wait's
//! once-only marker taken with no `wait_completed`. [`Txn`] records how to undo each
//! change as the rules make it and undoes them (newest first) when the event is not
//! stored, so a failed `events.create` leaves storage as it found it.
//!
//! A crash (the process killed between two writes) is another matter: nothing runs to
//! undo, and the window is world-local's own; readers recover from it (see the engine's
//! resume).

use super::entities::{RunState, StepState};
use super::request::Ctx;
use super::store::{Entity, EventStore, Once, TokenClaim};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

/// A clean-up after the commit point: reported, never the event's failure.
pub(crate) fn after_commit(ctx: &Ctx, what: &str, done: Result<()>) {
    if let Err(e) = done {
        crate::error::report(
            &format!(
                "\"{}\" of run {} is recorded, but {what} failed (repaired on a later access)",
                ctx.ty, ctx.run_id
            ),
            &e,
        );
    }
}

/// Whether an event of type `ty` replaces an entity of `kind` (what it held must then be
/// kept to take the change back).
fn replaces(ty: &str, kind: Entity) -> bool {
    match kind {
        Entity::Run => matches!(
            ty,
            "run_started" | "run_completed" | "run_failed" | "run_cancelled"
        ),
        Entity::Step => matches!(
            ty,
            "step_started" | "step_completed" | "step_failed" | "step_retrying"
        ),
        Entity::Wait => ty == "wait_completed",
    }
}

/// How to take one change back.
enum Undo {
    /// an entity this request created
    Remove(Entity, String),
    /// an entity this request replaced, with what it held before
    Restore(Entity, String, Map<String, Value>),
    /// a once-only marker this request took
    Release(Once),
}

/// Wraps the store of one request: passes every call through and remembers how to undo
/// the entity changes made since the last event it stored.
pub(crate) struct Txn<'s, S: EventStore + ?Sized> {
    inner: &'s S,
    event_type: String,
    undo: RefCell<Vec<Undo>>,
    /// the entities as they were before this request changed them
    known: RefCell<HashMap<(Entity, String), Map<String, Value>>>,
}

impl<'s, S: EventStore + ?Sized> Txn<'s, S> {
    pub(crate) fn new(inner: &'s S, event_type: &str) -> Self {
        Txn {
            inner,
            event_type: event_type.to_string(),
            undo: RefCell::new(Vec::new()),
            known: RefCell::new(HashMap::new()),
        }
    }

    /// An event is stored: the changes made so far are final.
    fn commit(&self) {
        self.undo.borrow_mut().clear();
    }

    /// Remembers what an entity held before this request changed it: the first reading
    /// counts (a payload-sized copy, once per entity and request).
    fn remember(&self, kind: Entity, key: &str, value: &Map<String, Value>) {
        if !replaces(&self.event_type, kind) {
            return; // read only: no copy
        }
        self.known
            .borrow_mut()
            .entry((kind, key.to_string()))
            .or_insert_with(|| value.clone());
    }

    /// Records the undo of replacing `key` (what it held before, when this request read it).
    fn before_replace(&self, kind: Entity, key: &str) {
        if let Some(prev) = self.known.borrow().get(&(kind, key.to_string())) {
            self.undo
                .borrow_mut()
                .push(Undo::Restore(kind, key.to_string(), prev.clone()));
        }
    }

    /// Takes back every change made since the last stored event, newest first. Returns the failures of
    /// the undo itself (the storage then holds a half-done change the caller must report).
    pub(crate) fn rollback(&self) -> Vec<Error> {
        let mut failures = Vec::new();
        let undo = std::mem::take(&mut *self.undo.borrow_mut());
        for u in undo.into_iter().rev() {
            let done = match &u {
                Undo::Remove(kind, key) => self.inner.remove_entity(*kind, key),
                Undo::Restore(Entity::Run, key, prev) => self.inner.replace_run(key, prev),
                Undo::Restore(Entity::Step, key, prev) => self.inner.replace_step(key, prev),
                Undo::Restore(Entity::Wait, key, prev) => self.inner.replace_wait(key, prev),
                Undo::Release(marker) => self.inner.release_once(marker),
            };
            if let Err(e) = done {
                failures.push(e);
            }
        }
        failures
    }
}

impl<S: EventStore + ?Sized> EventStore for Txn<'_, S> {
    fn event_id_prefix(&self) -> &'static str {
        self.inner.event_id_prefix()
    }

    fn run_location(&self, run_id: &str) -> Result<PathBuf> {
        self.inner.run_location(run_id)
    }

    fn load_run(&self, run_id: &str) -> Result<Option<RunState>> {
        let run = self.inner.load_run(run_id)?;
        if let Some(r) = &run {
            self.remember(Entity::Run, run_id, &r.view);
        }
        Ok(run)
    }

    fn create_run(&self, run_id: &str, run: &Map<String, Value>, implicit: bool) -> Result<bool> {
        let created = self.inner.create_run(run_id, run, implicit)?;
        if created {
            self.undo
                .borrow_mut()
                .push(Undo::Remove(Entity::Run, run_id.to_string()));
            // the resilient start replaces it in the same request
            self.remember(Entity::Run, run_id, run);
        }
        Ok(created)
    }

    fn replace_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()> {
        self.before_replace(Entity::Run, run_id);
        self.inner.replace_run(run_id, run)
    }

    fn delete_hooks_of_run(&self, run_id: &str) -> Result<()> {
        self.inner.delete_hooks_of_run(run_id)
    }

    fn delete_waits_of_run(&self, run_id: &str) -> Result<()> {
        self.inner.delete_waits_of_run(run_id)
    }

    fn load_step(&self, step_key: &str) -> Result<Option<StepState>> {
        let step = self.inner.load_step(step_key)?;
        if let Some(st) = &step {
            self.remember(Entity::Step, step_key, &st.view);
        }
        Ok(step)
    }

    // (a created step or wait is not changed again by the same request: nothing to remember)
    fn create_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        self.inner.create_step(step_key, step)?;
        self.undo
            .borrow_mut()
            .push(Undo::Remove(Entity::Step, step_key.to_string()));
        Ok(())
    }

    fn replace_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()> {
        self.before_replace(Entity::Step, step_key);
        self.inner.replace_step(step_key, step)
    }

    fn hook_exists(&self, hook_id: &str) -> Result<bool> {
        self.inner.hook_exists(hook_id)
    }

    fn claim_token(
        &self,
        token: &str,
        claim: &Map<String, Value>,
        hook_id_text: &str,
    ) -> Result<TokenClaim> {
        // Not undone: a claim without its event is world-local's recovery shape (a retry
        // of the same hook converges on the claim's event id).
        self.inner.claim_token(token, claim, hook_id_text)
    }

    fn write_hook(&self, hook_id: &str, hook: &Map<String, Value>, overwrite: bool) -> Result<()> {
        self.inner.write_hook(hook_id, hook, overwrite)
    }

    fn delete_hook(&self, hook_id: &str) -> Result<()> {
        self.inner.delete_hook(hook_id)
    }

    fn repair_hook(&self, run_id: &str, hook_id: &str, event_id: &str) -> Result<()> {
        self.inner.repair_hook(run_id, hook_id, event_id)
    }

    fn load_wait(&self, wait_key: &str) -> Result<Option<Map<String, Value>>> {
        let wait = self.inner.load_wait(wait_key)?;
        if let Some(w) = &wait {
            self.remember(Entity::Wait, wait_key, w);
        }
        Ok(wait)
    }

    fn create_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        self.inner.create_wait(wait_key, wait)?;
        self.undo
            .borrow_mut()
            .push(Undo::Remove(Entity::Wait, wait_key.to_string()));
        Ok(())
    }

    fn replace_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()> {
        self.before_replace(Entity::Wait, wait_key);
        self.inner.replace_wait(wait_key, wait)
    }

    fn remove_entity(&self, kind: Entity, key: &str) -> Result<()> {
        self.inner.remove_entity(kind, key)
    }

    fn claim_once(&self, marker: &Once) -> Result<bool> {
        let claimed = self.inner.claim_once(marker)?;
        if claimed {
            self.undo.borrow_mut().push(Undo::Release(marker.clone()));
        }
        Ok(claimed)
    }

    fn release_once(&self, marker: &Once) -> Result<()> {
        self.inner.release_once(marker)
    }

    fn store_event(&self, run_id: &str, event_id: &str, event: &Map<String, Value>) -> Result<()> {
        self.inner.store_event(run_id, event_id, event)?;
        self.commit();
        Ok(())
    }

    fn publish_event(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<bool> {
        let published = self.inner.publish_event(run_id, event_id, event)?;
        if published {
            self.commit();
        }
        Ok(published)
    }
}
