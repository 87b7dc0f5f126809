//! The storage interface every World operation goes through. A backend (the local
//! filesystem World today; PostgreSQL next) implements [`Storage`]; the operations
//! behind the `Run` handle ([`crate::run`]) are written against it.
//!
//! `events.create` itself is backend-neutral: [`crate::machine`] holds its rules and asks
//! the backend for storage primitives through [`crate::machine::EventStore`].

use crate::error::Result;
use crate::machine::Created;
use crate::stream::{StreamMode, StreamReader};
use crate::world::model::{EventSummary, Hook, RunSnapshot};
use crate::world::watch::{Subscription, Topic};
use serde_json::{Map, Value};
use std::future::Future;

/// How a `run_cancelled` event was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run moved to `cancelled` (or did not exist: an orphan event was stored).
    Cancelled,
    /// The run was already cancelled; another `run_cancelled` event was appended.
    AlreadyCancelled,
    /// A legacy (spec ≤ 1) run was mutated directly, no event stored.
    LegacyCancelled,
}

impl From<crate::machine::Applied> for CancelOutcome {
    fn from(applied: crate::machine::Applied) -> Self {
        use crate::machine::Applied;
        match applied {
            Applied::Transition => CancelOutcome::Cancelled,
            Applied::Repeat => CancelOutcome::AlreadyCancelled,
            Applied::Legacy => CancelOutcome::LegacyCancelled,
        }
    }
}

/// The `run_cancelled` request every backend sends: `{ eventType, specVersion }`.
pub(crate) fn run_cancelled_request() -> Map<String, Value> {
    let mut request = Map::new();
    request.insert("eventType".into(), Value::from("run_cancelled"));
    request.insert(
        "specVersion".into(),
        Value::from(crate::world::model::SPEC_VERSION_CURRENT),
    );
    request
}

/// The `wait_completed` request every backend sends: `{ eventType, correlationId,
/// specVersion, eventData: { resumeAt } }`, or the bare legacy form (`{ eventType,
/// correlationId }`) for spec ≤ 1 runs.
pub(crate) fn wait_completed_request(
    correlation_id: &str,
    spec_version: Option<f64>,
    resume_at_ms: Option<f64>,
    legacy: bool,
) -> Map<String, Value> {
    let mut request = Map::new();
    request.insert("eventType".into(), Value::from("wait_completed"));
    request.insert("correlationId".into(), Value::from(correlation_id));
    if !legacy {
        let spec = match spec_version {
            Some(v) if v.fract() == 0.0 => Value::from(v as i64),
            Some(v) => Value::from(v),
            None => Value::from(crate::world::model::SPEC_VERSION_CURRENT),
        };
        request.insert("specVersion".into(), spec);
        if let Some(ms) = resume_at_ms {
            let mut data = Map::new();
            data.insert(
                "resumeAt".into(),
                Value::from(crate::world::fsio::iso_from_ms(ms)),
            );
            request.insert("eventData".into(), Value::Object(data));
        }
    }
    request
}

/// One World's durable state: runs, steps, hooks, waits, the event log, streams, leases
/// and change notifications.
pub trait Storage: Send + Sync + 'static {
    // ------------------------------------------------------------------ runs
    /// `runs.get(runId)`; `with_data` = `resolveData: 'all'`. `RunNotFound` when absent.
    fn get_run(
        &self,
        run_id: &str,
        with_data: bool,
    ) -> impl Future<Output = Result<RunSnapshot>> + Send;
    /// Resolves once the run is completed, failed or cancelled, with its data;
    /// `RunNotFound` and read errors at once.
    fn wait_terminal(&self, run_id: &str) -> impl Future<Output = Result<RunSnapshot>> + Send;
    /// Every run whose status is one of `statuses` (all when `None`), as stored, ordered
    /// by createdAt then runId, as one JSON array text.
    fn list_runs_json(
        &self,
        statuses: Option<Vec<String>>,
    ) -> impl Future<Output = Result<String>> + Send;

    // ---------------------------------------------------------------- events
    /// `events.create(runId, request)` through the shared state machine.
    fn create_event(
        &self,
        run_id: Option<&str>,
        request: Map<String, Value>,
    ) -> impl Future<Output = Result<Created>> + Send;
    /// `run_cancelled`, with a typed outcome.
    fn cancel_run(&self, run_id: &str) -> impl Future<Output = Result<CancelOutcome>> + Send;
    /// `wait_completed` (the legacy request form when `legacy`).
    fn complete_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The run's events in log order (createdAt, then eventId), summarised.
    fn list_run_events(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Vec<EventSummary>>> + Send;
    /// The run's events exactly as stored, in log order, as one JSON array text.
    fn list_events_json(&self, run_id: &str) -> impl Future<Output = Result<String>> + Send;

    // ----------------------------------------------------------------- hooks
    /// `hooks.getByToken`; `HookNotFound` when no live hook holds the token.
    fn get_hook_by_token(&self, token: &str) -> impl Future<Output = Result<Hook>> + Send;

    // --------------------------------------------------------------- streams
    /// Appends chunks to a run's stream, in order.
    fn append_stream(
        &self,
        name: &str,
        run_id: &str,
        chunks: &[Vec<u8>],
    ) -> impl Future<Output = Result<()>> + Send;
    fn close_stream(&self, name: &str, run_id: &str) -> impl Future<Output = Result<()>> + Send;
    /// A live reader from `start_index` (negative: from the end).
    fn open_stream(&self, name: &str, start_index: i64, mode: StreamMode) -> Result<StreamReader>;
    /// `{ tailIndex, done }`.
    fn stream_tail(&self, name: &str) -> Result<(i64, bool)>;

    // ------------------------------------------------- notifications, leases
    /// Wakes on changes to one run (`Topic::Run`) or stream (`Topic::Stream`), made by
    /// this process or another.
    fn subscribe(&self, topic: Topic, key: &str) -> Subscription;
    /// Takes or renews the run's lease for `owner`; `false` when another owner holds it.
    fn acquire_lease(&self, run_id: &str, owner: &str, ttl_ms: u64) -> Result<bool>;
    fn release_lease(&self, run_id: &str, owner: &str) -> Result<()>;
}

/// The three operations `wakeUp` needs ([`crate::run::wake_up`]), for backends that do
/// not implement all of [`Storage`] (PostgreSQL, whose streams and notifications are
/// not file-shaped). Every [`Storage`] has them.
pub trait WaitOps: Send + Sync + 'static {
    fn run_snapshot(&self, run_id: &str) -> impl Future<Output = Result<RunSnapshot>> + Send;
    fn run_event_summaries(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Vec<EventSummary>>> + Send;
    fn finish_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl<T: Storage> WaitOps for T {
    fn run_snapshot(&self, run_id: &str) -> impl Future<Output = Result<RunSnapshot>> + Send {
        Storage::get_run(self, run_id, false)
    }

    fn run_event_summaries(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Vec<EventSummary>>> + Send {
        Storage::list_run_events(self, run_id)
    }

    fn finish_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        Storage::complete_wait(
            self,
            run_id,
            correlation_id,
            spec_version,
            resume_at_ms,
            legacy,
        )
    }
}
