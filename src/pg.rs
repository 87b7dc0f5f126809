//! `NativePgWorld`: the `workflow/api` operations over a world-postgres database. Same
//! method names and shapes as `NativeWorld` where the JS layer uses both; every I/O call
//! is async (nothing blocks the JS thread on the network).

use crate::stream::{StreamBatch, StreamReadMode};
use crate::world::{CancelOutcome, CreateRunRequest, HookInfo, RunInfo, StreamInfo, WakeUpResult};
use crate::{error_json, guard, guarded, to_napi};
use napi::bindgen_prelude::{within_runtime_if_available, Buffer, Object};
use napi::Env;
use napi_derive::napi;
use std::sync::Arc;
use workflow_core::pg::streams::{PgSource, PgStreamReader};
use workflow_core::pg::{Config, PgWorld};
use workflow_core::queue::QueueMessage;
use workflow_core::stream::readahead::PrefetchReader;
use workflow_core::world::model::Payload;

#[napi]
pub struct NativePgWorld {
    pub(crate) inner: Arc<PgWorld>,
}

/// Where the database is (the JS layer reads the environment, as world-postgres does).
#[napi(object)]
pub struct PgConnectOptions {
    pub url: String,
    pub max_pool_size: Option<u32>,
    pub job_prefix: Option<String>,
}

/// Connects, creates the schema when missing and starts the listener; rejects within
/// seconds when the server cannot be reached.
#[napi(catch_unwind)]
pub async fn pg_connect(options: PgConnectOptions) -> napi::Result<NativePgWorld> {
    guarded(async move {
        let mut cfg = Config::new(&options.url);
        if let Some(n) = options.max_pool_size.filter(|n| *n > 0) {
            cfg.max_pool_size = n as usize;
        }
        if let Some(p) = options.job_prefix.filter(|p| !p.is_empty()) {
            cfg.job_prefix = p;
        }
        let inner = PgWorld::connect(cfg).await.map_err(to_napi)?;
        Ok(NativePgWorld { inner })
    })
    .await
}

fn hook_info(h: workflow_core::world::model::Hook) -> HookInfo {
    let has_metadata = h.metadata.is_some();
    let (metadata, metadata_json) = match h.metadata {
        Some(Payload::Bytes(b)) => (Some(Buffer::from(b)), None),
        Some(Payload::Json(v)) => (None, Some(v.to_string())),
        None => (None, None),
    };
    HookInfo {
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
    }
}

#[napi]
impl NativePgWorld {
    /// The run. The promise is settled from the thread that read it
    /// (`PgWorld::get_run_then`).
    #[napi(catch_unwind, ts_return_type = "Promise<RunInfo>")]
    pub fn get_run<'e>(
        &self,
        env: &'e Env,
        run_id: String,
        with_data: bool,
    ) -> napi::Result<Object<'e>> {
        let (deferred, promise) = env.create_deferred::<RunInfo, _>()?;
        let w = Arc::clone(&self.inner);
        within_runtime_if_available(|| {
            w.get_run_then(run_id, with_data, move |out| match out {
                Ok(run) => deferred.resolve(move |_| Ok(RunInfo::from(run))),
                Err(e) => deferred.reject(to_napi(e)),
            })
        });
        Ok(promise)
    }

    /// The run's status. The promise is settled from the thread that read it
    /// (`PgWorld::run_status_then`).
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn run_status<'e>(&self, env: &'e Env, run_id: String) -> napi::Result<Object<'e>> {
        let (deferred, promise) = env.create_deferred::<String, _>()?;
        let w = Arc::clone(&self.inner);
        within_runtime_if_available(|| {
            w.run_status_then(run_id, move |out| match out {
                Ok(s) => {
                    let text = s.as_str().to_string();
                    deferred.resolve(move |_| Ok(text))
                }
                Err(e) => deferred.reject(to_napi(e)),
            })
        });
        Ok(promise)
    }

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
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let (tail_index, done) = w.stream_tail(&name).await.map_err(to_napi)?;
            Ok(StreamInfo { tail_index, done })
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn create_run(&self, req: CreateRunRequest) -> napi::Result<()> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let create = crate::world::create_run_of(req)?;
            w.create_run(&create).await.map_err(to_napi)
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn get_hook_by_token(&self, token: String) -> napi::Result<HookInfo> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.get_hook_by_token(&token)
                .await
                .map(hook_info)
                .map_err(to_napi)
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
            let payload = crate::world::payload_from(payload, payload_json)?;
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
            w.append_stream(&name, &run_id, &chunks)
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

    /// `events.create(runId, request)` with the request and the result as JSON text in
    /// world-local's encoding (binary as `{"__type":"Uint8Array","data":…}`).
    #[napi(catch_unwind)]
    pub async fn create_event(
        &self,
        run_id: Option<String>,
        request: String,
    ) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            let request: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&request).map_err(|e| {
                    to_napi(workflow_core::Error::InvalidArgument(format!(
                        "invalid event request: {e}"
                    )))
                })?;
            w.create_event(run_id.as_deref(), request)
                .await
                .map(|r| r.result.to_json())
                .map_err(to_napi)
        })
        .await
    }

    /// All events of the run in log order, as one JSON array text.
    #[napi(catch_unwind)]
    pub async fn list_events_json(&self, run_id: String) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move { w.list_events_json(&run_id).await.map_err(to_napi) }).await
    }

    /// Runs (as stored) whose status is in `statuses` (all when null), as one JSON array text.
    #[napi(catch_unwind)]
    pub async fn list_runs_json(&self, statuses: Option<Vec<String>>) -> napi::Result<String> {
        let w = Arc::clone(&self.inner);
        guarded(async move { w.list_runs_json(statuses).await.map_err(to_napi) }).await
    }

    /// Hands a queue message to the graphile-worker queue of an official world-postgres app.
    #[napi(catch_unwind)]
    pub async fn enqueue(
        &self,
        queue_name: String,
        message_id: String,
        body: String,
        idempotency_key: Option<String>,
        delay_seconds: Option<f64>,
    ) -> napi::Result<()> {
        let w = Arc::clone(&self.inner);
        guarded(async move {
            w.enqueue_graphile(
                &queue_name,
                &message_id,
                body.as_bytes(),
                idempotency_key.as_deref(),
                delay_seconds,
            )
            .await
            .map_err(to_napi)
        })
        .await
    }

    /// A live reader of stream `name` from chunk `startIndex`, decoded as `mode` says.
    #[napi(catch_unwind)]
    pub fn open_stream(
        &self,
        name: String,
        start_index: i64,
        mode: StreamReadMode,
    ) -> napi::Result<NativePgStreamReader> {
        guard(|| {
            let inner = Arc::new(self.inner.open_stream(&name, start_index, mode.into()));
            Ok(NativePgStreamReader {
                ahead: Arc::new(
                    Arc::clone(&inner)
                        .prefetching()
                        .with_batch_bytes(crate::stream::BATCH_BYTES),
                ),
                inner,
            })
        })
    }
}

#[napi]
pub struct NativePgStreamReader {
    inner: Arc<PgStreamReader>,
    ahead: Arc<PrefetchReader<PgSource>>,
}

#[napi]
impl NativePgStreamReader {
    /// Up to `max` items already read ahead, without waiting; `null` when none are ready
    /// (then call `nextMany`).
    #[napi(catch_unwind)]
    pub fn next_many_sync(&self, max: u32) -> napi::Result<Option<StreamBatch>> {
        guard(|| match self.ahead.try_next_many(max as usize) {
            None => Ok(None),
            Some(r) => r.map(crate::stream::to_js).map(Some).map_err(to_napi),
        })
    }

    /// Up to `max` items; waits for writers while the stream is open and drained.
    #[napi(catch_unwind)]
    pub async fn next_many(&self, max: u32) -> napi::Result<StreamBatch> {
        let ahead = Arc::clone(&self.ahead);
        guarded(async move {
            ahead
                .next_many(max as usize)
                .await
                .map(crate::stream::to_js)
                .map_err(to_napi)
        })
        .await
    }

    /// Stops the reader, also while a `nextMany` is waiting.
    #[napi(catch_unwind)]
    pub fn close(&self) -> napi::Result<()> {
        guard(|| {
            self.ahead.close();
            self.inner.close();
            Ok(())
        })
    }
}

/// Tests: the CBOR bytes world-postgres columns get for `json` (world-local's JSON form;
/// keys named in `dateKeys` holding ISO strings become dates), to compare with cbor-x.
#[napi(catch_unwind)]
pub fn pg_cbor_encode_for_test(json: String, date_keys: Vec<String>) -> napi::Result<Buffer> {
    guard(|| {
        let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
            to_napi(workflow_core::Error::InvalidArgument(format!(
                "invalid JSON: {e}"
            )))
        })?;
        let keys: Vec<&str> = date_keys.iter().map(String::as_str).collect();
        Ok(Buffer::from(
            workflow_core::pg::cbor::Cbor::from_json(&v, &keys).encode(),
        ))
    })
}

/// Tests: CBOR bytes decoded to world-local's JSON form (text).
#[napi(catch_unwind)]
pub fn pg_cbor_decode_for_test(bytes: Buffer) -> napi::Result<String> {
    guard(|| {
        workflow_core::pg::cbor::decode_json(&bytes)
            .map(|v| v.to_string())
            .map_err(|e| to_napi(workflow_core::Error::InvalidArgument(e.0)))
    })
}
