//! `NativeWorld`: one data directory, the operations the `Run` handle needs.

use crate::stream::{NativeStreamReader, StreamReadMode};
use crate::{error_json, guard, guarded, join_error, to_napi};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use std::sync::Arc;
use workflow_core::queue::QueueMessage;
use workflow_core::world::local::{CancelOutcome as CoreCancelOutcome, CreateRun, LocalWorld};
use workflow_core::world::model::{Payload, RunSnapshot};
use workflow_core::Error as CoreError;

#[napi]
pub struct NativeWorld {
    pub(crate) inner: Arc<LocalWorld>,
    /// The engine's journal over this world (created on first use).
    journal: std::sync::OnceLock<Arc<workflow_core::journal::Journal>>,
}

impl NativeWorld {
    pub(crate) fn journal(&self) -> Arc<workflow_core::journal::Journal> {
        Arc::clone(
            self.journal
                .get_or_init(|| workflow_core::journal::Journal::new(Arc::clone(&self.inner))),
        )
    }
}

/// A run as `runs.get` returns it; dates are epoch milliseconds.
#[napi(object)]
pub struct RunInfo {
    pub run_id: String,
    pub status: String,
    pub deployment_id: String,
    pub workflow_name: String,
    pub spec_version: Option<f64>,
    pub created_at: f64,
    pub updated_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub expired_at: Option<f64>,
    /// `output` bytes (spec ≥ 2)
    pub output: Option<Buffer>,
    /// `output` as JSON text (legacy spec-1 runs)
    pub output_json: Option<String>,
    pub has_output: bool,
    pub error_message: Option<String>,
    pub error_stack: Option<String>,
    pub error_code: Option<String>,
    pub execution_context: Option<serde_json::Value>,
}

impl From<RunSnapshot> for RunInfo {
    fn from(s: RunSnapshot) -> Self {
        let has_output = s.output.is_some();
        let (output, output_json) = match s.output {
            Some(Payload::Bytes(b)) => (Some(Buffer::from(b)), None),
            Some(Payload::Json(v)) => (None, Some(v.to_string())),
            None => (None, None),
        };
        let (error_message, error_stack, error_code) = match s.error {
            Some(e) => (Some(e.message), e.stack, e.code),
            None => (None, None, None),
        };
        RunInfo {
            run_id: s.run_id,
            status: s.status.as_str().to_string(),
            deployment_id: s.deployment_id,
            workflow_name: s.workflow_name,
            spec_version: s.spec_version,
            created_at: s.created_at,
            updated_at: s.updated_at,
            started_at: s.started_at,
            completed_at: s.completed_at,
            expired_at: s.expired_at,
            output,
            output_json,
            has_output,
            error_message,
            error_stack,
            error_code,
            execution_context: s.execution_context,
        }
    }
}

#[napi(object)]
pub struct StreamInfo {
    pub tail_index: i64,
    pub done: bool,
}

/// What `cancel` did.
#[napi(string_enum = "camelCase")]
pub enum CancelOutcome {
    /// The run moved to `cancelled` (or did not exist: an orphan event was stored).
    Cancelled,
    /// The run was already cancelled; another `run_cancelled` event was appended.
    AlreadyCancelled,
    /// A legacy (spec ≤ 1) run was cancelled in place, no event stored.
    LegacyCancelled,
}

impl From<CoreCancelOutcome> for CancelOutcome {
    fn from(o: CoreCancelOutcome) -> Self {
        match o {
            CoreCancelOutcome::Cancelled => CancelOutcome::Cancelled,
            CoreCancelOutcome::AlreadyCancelled => CancelOutcome::AlreadyCancelled,
            CoreCancelOutcome::LegacyCancelled => CancelOutcome::LegacyCancelled,
        }
    }
}

#[napi(object)]
pub struct WakeUpResult {
    pub stopped_count: u32,
    pub pending_count: u32,
    /// Errors of waits that could not be completed: `{ name, message, ... }` JSON each.
    pub errors: Vec<String>,
    pub message: Option<crate::queue::JsQueueMessage>,
}

#[napi]
impl NativeWorld {
    #[napi(constructor, catch_unwind)]
    pub fn new(data_dir: String) -> napi::Result<Self> {
        guard(|| {
            Ok(NativeWorld {
                inner: Arc::new(LocalWorld::new(data_dir).map_err(to_napi)?),
                journal: std::sync::OnceLock::new(),
            })
        })
    }

    /// Absolute data directory.
    #[napi(getter, catch_unwind)]
    pub fn data_dir(&self) -> napi::Result<String> {
        guard(|| Ok(self.inner.root().display().to_string()))
    }

    #[napi(catch_unwind)]
    pub async fn get_run(&self, run_id: String, with_data: bool) -> napi::Result<RunInfo> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.get_run(&run_id, with_data)
                .await
                .map(RunInfo::from)
                .map_err(to_napi)
        })
        .await
    }

    /// The run's status: the hot path of `run.status`, converted as a plain string.
    #[napi(catch_unwind)]
    pub async fn run_status(&self, run_id: String) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.get_run(&run_id, false)
                .await
                .map(|r| r.status.as_str().to_string())
                .map_err(to_napi)
        })
        .await
    }

    /// Synchronous `runs.get`: one small file read and parse on the calling thread
    /// (~10 µs), cheaper than any thread hop. Used by the metadata getters.
    #[napi(catch_unwind)]
    pub fn get_run_sync(&self, run_id: String) -> napi::Result<RunInfo> {
        guard(|| {
            self.inner
                .get_run_sync(&run_id, false)
                .map(RunInfo::from)
                .map_err(to_napi)
        })
    }

    /// Synchronous status read (the hot path of `run.status`).
    #[napi(catch_unwind)]
    pub fn run_status_sync(&self, run_id: String) -> napi::Result<String> {
        guard(|| {
            self.inner
                .get_run_sync(&run_id, false)
                .map(|r| r.status.as_str().to_string())
                .map_err(to_napi)
        })
    }

    /// Resolves once the run is terminal (woken by the filesystem watcher).
    #[napi(catch_unwind)]
    pub async fn wait_terminal(&self, run_id: String) -> napi::Result<RunInfo> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.wait_terminal(&run_id)
                .await
                .map(RunInfo::from)
                .map_err(to_napi)
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn cancel(&self, run_id: String) -> napi::Result<CancelOutcome> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.cancel_run(&run_id)
                .await
                .map(CancelOutcome::from)
                .map_err(to_napi)
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn wake_up(
        &self,
        run_id: String,
        correlation_ids: Option<Vec<String>>,
        queue_namespace: Option<String>,
    ) -> napi::Result<WakeUpResult> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let out = workflow_core::run::wake_up(
                &w,
                &run_id,
                correlation_ids.as_deref(),
                queue_namespace.as_deref(),
            )
            .await
            .map_err(to_napi)?;
            Ok(WakeUpResult {
                stopped_count: out.stopped_count,
                pending_count: out.pending_count,
                errors: out.errors.iter().map(error_json).collect(),
                message: out.message.map(|m: QueueMessage| m.into()),
            })
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn stream_info(&self, name: String) -> napi::Result<StreamInfo> {
        let index = self.inner.chunk_index();
        guarded(async move {
            let (tail_index, done) = tokio::task::spawn_blocking(move || index.stream_info(&name))
                .await
                .map_err(join_error)?
                .map_err(to_napi)?;
            Ok(StreamInfo { tail_index, done })
        })
        .await
    }

    /// Writes the run and its `run_created` event (two small create-once files) on the
    /// calling thread: cheaper than the thread hops of an async call.
    #[napi(catch_unwind)]
    pub fn create_run_sync(&self, req: CreateRunRequest) -> napi::Result<()> {
        guard(|| {
            let create = create_run_of(req)?;
            self.inner.create_run_sync(&create).map_err(to_napi)
        })
    }

    /// `createRunSync` off the JS thread (one hop to the libuv pool and back).
    #[napi(catch_unwind)]
    pub fn create_run(
        &self,
        req: CreateRunRequest,
    ) -> napi::Result<napi::bindgen_prelude::AsyncTask<crate::engine::Blocking>> {
        guard(|| {
            let create = create_run_of(req)?;
            let world = Arc::clone(&self.inner);
            Ok(crate::engine::Blocking::task(move || {
                world
                    .create_run_sync(&create)
                    .map(|()| String::new())
                    .map_err(to_napi)
            }))
        })
    }

    #[napi(catch_unwind)]
    pub async fn get_hook_by_token(&self, token: String) -> napi::Result<HookInfo> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let h = w.get_hook_by_token(&token).await.map_err(to_napi)?;
            let has_metadata = h.metadata.is_some();
            let (metadata, metadata_json) = match h.metadata {
                Some(Payload::Bytes(b)) => (Some(Buffer::from(b)), None),
                Some(Payload::Json(v)) => (None, Some(v.to_string())),
                None => (None, None),
            };
            Ok(HookInfo {
                run_id: h.run_id,
                hook_id: h.hook_id,
                token: h.token,
                owner_id: h.owner_id,
                project_id: h.project_id,
                environment: h.environment,
                metadata,
                metadata_json,
                has_metadata,
                created_at: h.created_at,
                spec_version: h.spec_version,
                is_webhook: h.is_webhook,
            })
        })
        .await
    }

    /// The `hook_received` event; returns the event id.
    #[napi(catch_unwind)]
    pub async fn hook_received(
        &self,
        run_id: String,
        hook_id: String,
        token: Option<String>,
        payload: Option<Buffer>,
        payload_json: Option<String>,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let payload = payload_from(payload, payload_json)?;
            w.hook_received(&run_id, &hook_id, token.as_deref(), &payload)
                .await
                .map_err(to_napi)
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn write_stream_chunks(
        &self,
        name: String,
        run_id: String,
        chunks: Vec<Buffer>,
    ) -> napi::Result<()> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let chunks: Vec<Vec<u8>> = chunks.into_iter().map(|b| b.to_vec()).collect();
            w.write_stream_chunks(&name, &run_id, &chunks)
                .await
                .map_err(to_napi)
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn close_stream(&self, name: String, run_id: String) -> napi::Result<()> {
        let w = Arc::clone(&self.inner);
        guarded(async move { w.close_stream(&name, &run_id).await.map_err(to_napi) }).await
    }

    /// world-local's `events.create(runId, request)`: `request` is the JSON text of
    /// `{ eventType, correlationId?, specVersion?, eventData? }` in world-local's JSON
    /// encoding; returns the JSON text of `{ event?, run?, step?, hook?, wait? }`.
    /// `runId` is null only for `run_created` (the id is generated then).
    #[napi(catch_unwind)]
    pub fn create_event_sync(
        &self,
        run_id: Option<String>,
        request: String,
    ) -> napi::Result<String> {
        guard(|| {
            self.inner
                .create_event_sync(run_id.as_deref(), &request)
                .map(|r| r.to_json())
                .map_err(to_napi)
        })
    }

    /// Async form of `createEventSync` (runs on a blocking thread).
    #[napi(catch_unwind)]
    pub async fn create_event(
        &self,
        run_id: Option<String>,
        request: String,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.create_event(run_id, request)
                .await
                .map(|r| r.to_json())
                .map_err(to_napi)
        })
        .await
    }

    /// All events of the run, as stored, in log order: one JSON array text.
    #[napi(catch_unwind)]
    pub fn list_events_json(&self, run_id: String) -> napi::Result<String> {
        guard(|| self.inner.list_events_json_sync(&run_id).map_err(to_napi))
    }

    /// All runs (as stored) whose status is in `statuses` (all when null): one JSON array text.
    #[napi(catch_unwind)]
    pub fn list_runs_json(&self, statuses: Option<Vec<String>>) -> napi::Result<String> {
        guard(|| {
            self.inner
                .list_runs_json_sync(statuses.as_deref())
                .map_err(to_napi)
        })
    }

    /// A reader of stream `name` from chunk `startIndex`, decoded as `mode` says. With
    /// `endWithRun`, the reader also ends once that run is terminal and every chunk
    /// written before is delivered (a run's stream that was never closed).
    #[napi(catch_unwind)]
    pub fn open_stream(
        &self,
        name: String,
        start_index: i64,
        mode: StreamReadMode,
        end_with_run: Option<String>,
    ) -> napi::Result<NativeStreamReader> {
        guard(|| {
            NativeStreamReader::open(
                &self.inner,
                &name,
                start_index,
                mode,
                end_with_run.as_deref(),
            )
        })
    }
}

/// What `start()` writes (`run_created`).
#[napi(object)]
pub struct CreateRunRequest {
    pub run_id: String,
    pub deployment_id: String,
    pub workflow_name: String,
    pub spec_version: i64,
    pub execution_context: Option<serde_json::Value>,
    /// `"devl"`-prefixed bytes (spec ≥ 2)
    pub input: Option<Buffer>,
    /// legacy (spec 1): the devalue JSON text
    pub input_json: Option<String>,
}

/// A hook entity; `createdAt` in epoch ms.
#[napi(object)]
pub struct HookInfo {
    pub run_id: String,
    pub hook_id: String,
    pub token: String,
    pub owner_id: String,
    pub project_id: String,
    pub environment: String,
    pub metadata: Option<Buffer>,
    pub metadata_json: Option<String>,
    pub has_metadata: bool,
    pub created_at: f64,
    pub spec_version: Option<f64>,
    pub is_webhook: bool,
}

/// The core's run creation request for `start()`'s.
pub(crate) fn create_run_of(req: CreateRunRequest) -> napi::Result<CreateRun> {
    Ok(CreateRun {
        run_id: req.run_id,
        deployment_id: req.deployment_id,
        workflow_name: req.workflow_name,
        spec_version: req.spec_version,
        execution_context: req.execution_context,
        input: payload_from(req.input, req.input_json)?,
    })
}

pub(crate) fn payload_from(bytes: Option<Buffer>, json: Option<String>) -> napi::Result<Payload> {
    match (bytes, json) {
        (Some(b), _) => Ok(Payload::Bytes(b.to_vec())),
        (None, Some(j)) => serde_json::from_str(&j).map(Payload::Json).map_err(|e| {
            to_napi(CoreError::InvalidArgument(format!(
                "invalid legacy payload: {e}"
            )))
        }),
        (None, None) => Err(to_napi(CoreError::InvalidArgument(
            "a payload is required".into(),
        ))),
    }
}

/// `strm_<run ULID>_user[_<base64url(namespace)>]`
#[napi(catch_unwind)]
pub fn run_stream_name(run_id: String, namespace: Option<String>) -> napi::Result<String> {
    guard(|| {
        Ok(workflow_core::ids::run_stream_name(
            &run_id,
            namespace.as_deref(),
        ))
    })
}

/// A process-wide monotonic ULID (for run and stream ids).
#[napi(catch_unwind)]
pub fn new_ulid() -> napi::Result<String> {
    guard(|| Ok(workflow_core::ids::monotonic_ulid()))
}

/// `__wkf_workflow_<name>` (validates the workflow name like WDK).
#[napi(catch_unwind)]
pub fn workflow_queue_name(
    workflow_name: String,
    namespace: Option<String>,
) -> napi::Result<String> {
    guard(|| {
        workflow_core::queue::workflow_queue_name(&workflow_name, namespace.as_deref())
            .map_err(to_napi)
    })
}
