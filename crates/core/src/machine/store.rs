//! The storage primitives a backend gives the rules.

use super::entities::{RunState, StepState};
use crate::error::Result;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// A once-only marker: the first writer wins, later ones get a conflict. Lock files in
/// the local World (`.locks/<kind>/<id>.<suffix>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// a step reached `completed` / `failed` (key `<runId>-<stepId>`)
    StepTerminal(String),
    /// a hook was disposed (key: hook id)
    HookDisposed(String),
    /// a wait was completed (key `<runId>-<waitId>`)
    WaitCompleted(String),
}

/// The entities whose creation an `events.create` may have to take back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Run,
    Step,
    Wait,
}

/// Who holds a hook token after [`EventStore::claim_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenClaim {
    /// The token was free and is now this hook's.
    Claimed,
    /// This very hook already holds it (a retry): converge on the claim's event id.
    Retry { event_id: String },
    /// Another live hook holds it (its run, when the claim names one).
    Taken { run_id: Option<String> },
}

/// The storage primitives the rules need while applying one event. Reads return the
/// validated entity (or `None` when absent); create-once writes return `false` when the
/// entity already exists; every other failure is an `Err` the rules pass on unchanged.
pub trait EventStore {
    /// Where the run is stored, as corruption errors name it.
    fn run_location(&self, run_id: &str) -> Result<PathBuf>;
    fn load_run(&self, run_id: &str) -> Result<Option<RunState>>;
    /// Create-once. `implicit`: created by a resilient `run_started` (world-local writes
    /// that one compact).
    fn create_run(&self, run_id: &str, run: &Map<String, Value>, implicit: bool) -> Result<bool>;
    fn replace_run(&self, run_id: &str, run: &Map<String, Value>) -> Result<()>;
    /// Removes every hook of the run with its token claim.
    fn delete_hooks_of_run(&self, run_id: &str) -> Result<()>;
    fn delete_waits_of_run(&self, run_id: &str) -> Result<()>;

    fn load_step(&self, step_key: &str) -> Result<Option<StepState>>;
    /// Refuses (with an error) to overwrite an existing step.
    fn create_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()>;
    fn replace_step(&self, step_key: &str, step: &Map<String, Value>) -> Result<()>;

    fn hook_exists(&self, hook_id: &str) -> Result<bool>;
    /// Claims `token` for the hook described by `claim` (`{token, hookId, runId,
    /// eventId}`), restoring a claim the log still proves live first.
    fn claim_token(
        &self,
        token: &str,
        claim: &Map<String, Value>,
        hook_id_text: &str,
    ) -> Result<TokenClaim>;
    fn write_hook(&self, hook_id: &str, hook: &Map<String, Value>, overwrite: bool) -> Result<()>;
    /// Removes the hook with its token claim.
    fn delete_hook(&self, hook_id: &str) -> Result<()>;
    /// After a lost `hook_created` publish race: restores the hook entity from the
    /// already published event, if it is missing.
    fn repair_hook(&self, run_id: &str, hook_id: &str, event_id: &str) -> Result<()>;

    /// The wait as `WaitSchema` yields it.
    fn load_wait(&self, wait_key: &str) -> Result<Option<Map<String, Value>>>;
    /// Refuses (with an error) to overwrite an existing wait.
    fn create_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()>;
    fn replace_wait(&self, wait_key: &str, wait: &Map<String, Value>) -> Result<()>;

    /// Deletes a run, step or wait (absent is fine): the undo of its creation when the
    /// event that created it could not be stored.
    fn remove_entity(&self, kind: Entity, key: &str) -> Result<()>;

    /// `false` when the marker was already taken.
    fn claim_once(&self, marker: &Once) -> Result<bool>;
    fn release_once(&self, marker: &Once) -> Result<()>;

    /// Stores an event that cannot collide (fresh id); refuses to overwrite.
    fn store_event(&self, run_id: &str, event_id: &str, event: &Map<String, Value>) -> Result<()>;
    /// Publishes the event exactly once: `false` when that event id already exists.
    fn publish_event(
        &self,
        run_id: &str,
        event_id: &str,
        event: &Map<String, Value>,
    ) -> Result<bool>;

    /// The prefix of the event ids this backend allocates (`evnt` in world-local,
    /// `wevt` in world-postgres).
    fn event_id_prefix(&self) -> &'static str {
        "evnt"
    }

    /// `true` when every call runs inside one database transaction that the backend
    /// rolls back itself on failure: the rules then keep no undo log.
    fn transactional(&self) -> bool {
        false
    }

    /// `true` when a run transition (`run_started` without the data to create the run,
    /// `run_completed`, `run_failed`, `run_cancelled`) of a run that does not exist is
    /// refused with `WorkflowRunNotFoundError`, as world-postgres refuses it (world-local
    /// stores the event).
    fn transitions_need_the_run(&self) -> bool {
        false
    }
}
