//! N-API binding for workflow-native. Conversion only: every decision lives in
//! `workflow-core`. Errors cross the boundary as data (see [`to_napi`]) and become
//! proper JS error classes in `lib/native.js`, the one place that wraps this binding.
//!
//! Every export carries `#[napi(catch_unwind)]` and runs its body under [`guard`] /
//! [`guarded`]: a panic (a bug) becomes a rejected promise or a thrown `WorkflowWorldError`
//! with code `INTERNAL_PANIC` instead of aborting the Node process.

mod engine;
mod lease;
mod pg;
mod pg_engine;
mod queue;
mod stream;
mod world;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use workflow_core::Error as CoreError;

/// The addon's Rust allocations (not Node's) go to mimalloc: the journal thread allocates
/// what the JS thread frees (answers) and the other way round (requests), a pattern glibc's
/// per-thread arenas handle poorly — measured on a 1,000-step run on tmpfs, the append work
/// per batch went from ~100 µs to ~55 µs and the run from ~380 ms to ~260 ms (interleaved).
/// mimalloc 2.x (the crate's `v2` feature): 3.x crashes the second worker thread that loads
/// the addon once the first one ended (microsoft/mimalloc#1287; addon-workers.test.mjs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for blocking file work (reads and writes of the async calls). Bounded: a
/// thousand waiters woken at once (returnValues, live stream readers, API calls) queue for
/// these instead of each growing the pool by a thread.
const BLOCKING_THREADS: usize = 8;

/// The runtime of the async exports: tokio's defaults except the bounded blocking pool.
#[napi_derive::module_init]
fn init() {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => napi::bindgen_prelude::create_custom_tokio_runtime(rt),
        // napi-rs then builds its default runtime
        Err(e) => eprintln!("[workflow-native] could not build the async runtime: {e}"),
    }
}

/// Marker that starts the reason of every error this binding produced; the JS layer
/// parses the JSON after it into `{ name, message, ...fields }`. JS reads it from
/// [`error_marker`], so this is its only definition.
const ERROR_MARKER: &str = "\u{1}WFN:";

/// `code` of the error a panic becomes.
const PANIC_CODE: &str = "INTERNAL_PANIC";

/// The marker that starts the message of every error carrying core error data.
#[napi_derive::napi(catch_unwind)]
pub fn error_marker() -> String {
    ERROR_MARKER.to_string()
}

/// `{ name, message, ...fields }` of a core error as JSON text (also used for errors
/// returned as data, such as `wakeUp`'s per-wait failures).
pub(crate) fn error_json(e: &CoreError) -> String {
    let mut obj = e.fields();
    obj.insert("name".into(), e.name().into());
    obj.insert("message".into(), e.to_string().into());
    serde_json::Value::Object(obj).to_string()
}

fn marked(json: String) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("{ERROR_MARKER}{json}"),
    )
}

pub(crate) fn to_napi(e: CoreError) -> napi::Error {
    marked(error_json(&e))
}

/// The error a caught panic becomes: a `WorkflowWorldError` with code `INTERNAL_PANIC`
/// and the panic message (the panic hook has already printed where it happened).
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> napi::Error {
    let what = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    };
    let json = serde_json::json!({
        "name": "WorkflowWorldError",
        "message": format!("workflow-native internal error (a bug; please report it): panicked: {what}"),
        "code": PANIC_CODE,
    });
    marked(json.to_string())
}

/// A failed `spawn_blocking`/`spawn` task: its panic as [`panic_error`], a cancellation as
/// a plain error.
pub(crate) fn join_error(e: tokio::task::JoinError) -> napi::Error {
    match e.try_into_panic() {
        Ok(payload) => panic_error(payload),
        Err(e) => napi::Error::from_reason(format!("native task failed: {e}")),
    }
}

/// Runs the body of a synchronous export, turning a panic into [`panic_error`].
/// (`#[napi(catch_unwind)]` stays as the backstop for argument and return conversions.)
pub(crate) fn guard<T>(f: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    // The state a panicking body touched is not used again by this call; shared state
    // (locks) recovers from poisoning in the core.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_error(p)))
}

/// Runs the future of an async export, turning a panic in any poll into [`panic_error`]
/// (napi's own handler would reject with a bare message, or none for formatted panics).
pub(crate) fn guarded<T, F>(fut: F) -> Guarded<F>
where
    F: Future<Output = napi::Result<T>>,
{
    Guarded(Some(Box::pin(fut)))
}

pub(crate) struct Guarded<F>(Option<Pin<Box<F>>>);

impl<T, F: Future<Output = napi::Result<T>>> Future for Guarded<F> {
    type Output = napi::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.0.as_mut() else {
            // Polled after a panic was reported: nothing more to give.
            return Poll::Ready(Err(napi::Error::from_reason("polled after completion")));
        };
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(payload) => {
                // A future that panicked must never be polled again.
                self.0 = None;
                Poll::Ready(Err(panic_error(payload)))
            }
        }
    }
}

/// Test-only: panics on the JS thread (proves a sync export's panic becomes a JS error).
#[napi_derive::napi(js_name = "__panicForTest", catch_unwind)]
pub fn panic_for_test(message: String) -> napi::Result<()> {
    guard(|| panic!("{message}"))
}

/// Test-only: panics inside an async export, in the future itself (`place: "future"`) or
/// in a `spawn_blocking` task it awaits (`place: "blocking"`).
#[napi_derive::napi(js_name = "__panicForTestAsync", catch_unwind)]
pub async fn panic_for_test_async(message: String, place: String) -> napi::Result<()> {
    guarded(async move {
        if place == "blocking" {
            tokio::task::spawn_blocking(move || -> napi::Result<()> { panic!("{message}") })
                .await
                .map_err(join_error)?
        } else {
            tokio::task::yield_now().await;
            panic!("{message}")
        }
    })
    .await
}
