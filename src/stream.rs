//! `NativeStreamReader`: batches of decoded items for the JS `ReadableStream` wrapper.
//! The core reads ahead into a bounded buffer; `nextManySync` takes what is ready without
//! leaving the JS thread, `nextMany` waits for more.

use crate::{guard, guarded, to_napi};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use std::sync::Arc;
use workflow_core::stream::{Batch, Item, PrefetchReader, StreamMode, StreamReader};
use workflow_core::world::local::LocalWorld;

#[napi]
pub struct NativeStreamReader {
    inner: Arc<PrefetchReader>,
}

/// How a stream's chunks are decoded.
#[napi(string_enum = "kebab-case")]
pub enum StreamReadMode {
    /// devalue-framed object stream: items are the frame texts.
    Objects,
    /// raw byte stream: items are the chunk bytes as stored.
    Bytes,
    /// `framed-v1` byte stream: items are the frame payloads.
    BytesFramed,
}

impl From<StreamReadMode> for StreamMode {
    fn from(m: StreamReadMode) -> Self {
        match m {
            StreamReadMode::Objects => StreamMode::Objects,
            StreamReadMode::Bytes => StreamMode::BytesRaw,
            StreamReadMode::BytesFramed => StreamMode::BytesFramed,
        }
    }
}

/// One batch. Object streams: the devalue texts as the elements of one JSON array (`text`,
/// `[t1,t2,…]`, empty when the batch has none) — one JS string and one `JSON.parse` per
/// batch instead of one per chunk; every text was checked to be JSON when decoded, so the
/// array parses. Byte streams: `buffers`.
#[napi(object, object_from_js = false)]
pub struct StreamBatch {
    #[napi(ts_type = "string")]
    pub text: BatchText,
    pub buffers: Vec<Buffer>,
    pub done: bool,
}

impl NativeStreamReader {
    pub fn open(
        world: &Arc<LocalWorld>,
        name: &str,
        start: i64,
        mode: StreamReadMode,
        run_id: Option<&str>,
    ) -> napi::Result<Self> {
        let reader = match run_id {
            Some(run_id) => world.open_run_stream(name, start, mode.into(), run_id),
            None => StreamReader::open(world, name, start, mode.into()),
        }
        .map_err(to_napi)?;
        Ok(NativeStreamReader {
            inner: Arc::new(PrefetchReader::new(reader).with_batch_bytes(BATCH_BYTES)),
        })
    }
}

/// A batch's joined texts. Made a JS string as Latin-1 when every text is ASCII (V8 then
/// copies the bytes as they are; as UTF-8 it decodes them one by one), else as UTF-8.
pub struct BatchText {
    text: String,
    ascii: bool,
}

impl napi::bindgen_prelude::TypeName for BatchText {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::String
    }
}

impl napi::bindgen_prelude::ToNapiValue for BatchText {
    unsafe fn to_napi_value(
        env: napi::sys::napi_env,
        val: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        if !val.ascii {
            // SAFETY: forwarded as napi-rs converts any String (same env, same contract)
            return unsafe { String::to_napi_value(env, val.text) };
        }
        let mut out = std::ptr::null_mut();
        // SAFETY: `env` is the live env napi-rs passes in; the bytes are ASCII, hence
        // valid Latin-1, and are copied by the call before `val` is dropped.
        let status = unsafe {
            napi::sys::napi_create_string_latin1(
                env,
                val.text.as_ptr().cast(),
                val.text.len() as isize,
                &mut out,
            )
        };
        if status != napi::sys::Status::napi_ok {
            return Err(napi::Error::new(
                napi::Status::GenericFailure,
                "could not create a string for a stream batch",
            ));
        }
        Ok(out)
    }
}

/// The most bytes a batch hands to JS. A batch's texts cross as one string: V8 gives a
/// string above 128 KiB (its largest regular heap object) pages of its own, freshly
/// mapped and faulted in for every batch; below that it comes from the young generation,
/// whose pages are reused (a 10,000 × 1 KiB stream read from PostgreSQL: 15 → 11 ms of
/// JS-thread CPU).
pub(crate) const BATCH_BYTES: usize = 96 * 1024;

pub(crate) fn to_js(batch: Batch) -> StreamBatch {
    let (size, texts) = batch.items.iter().fold((0, 0), |(size, n), i| match i {
        Item::Text(t) => (size + t.len() + 1, n + 1),
        Item::Bytes(_) => (size, n),
    });
    let mut text = String::with_capacity(if texts > 0 { size + 1 } else { 0 });
    let mut buffers = Vec::new();
    for item in batch.items {
        match item {
            Item::Text(t) => {
                text.push(if text.is_empty() { '[' } else { ',' });
                text.push_str(&t);
            }
            Item::Bytes(b) => buffers.push(Buffer::from(b)),
        }
    }
    if !text.is_empty() {
        text.push(']');
    }
    let ascii = text.is_ascii();
    StreamBatch {
        text: BatchText { text, ascii },
        buffers,
        done: batch.done,
    }
}

#[napi]
impl NativeStreamReader {
    /// Ready items, or `null` when none are ready yet (then call `nextMany`).
    #[napi(catch_unwind)]
    pub fn next_many_sync(&self, max: u32) -> napi::Result<Option<StreamBatch>> {
        guard(|| match self.inner.try_next_many(max as usize) {
            Some(Ok(b)) => Ok(Some(to_js(b))),
            Some(Err(e)) => Err(to_napi(e)),
            None => Ok(None),
        })
    }

    /// Up to `max` items; waits for writers while the stream is open and drained.
    #[napi(catch_unwind)]
    pub async fn next_many(&self, max: u32) -> napi::Result<StreamBatch> {
        let inner = Arc::clone(&self.inner);
        guarded(async move {
            inner
                .next_many(max as usize)
                .await
                .map(to_js)
                .map_err(to_napi)
        })
        .await
    }

    /// Stops the reader and releases its resources, also while a `nextMany` is waiting.
    #[napi(catch_unwind)]
    pub fn close(&self) -> napi::Result<()> {
        guard(|| {
            self.inner.close();
            Ok(())
        })
    }
}
