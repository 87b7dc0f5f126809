//! `NativeStreamReader`: batches of decoded items for the JS `ReadableStream` wrapper.

use crate::to_napi;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use std::sync::Arc;
use tokio::sync::{watch, Mutex};
use workflow_core::stream::{Item, StreamMode, StreamReader};
use workflow_core::world::local::LocalWorld;

#[napi]
pub struct NativeStreamReader {
    reader: Arc<Mutex<Option<StreamReader>>>,
    closed: watch::Sender<bool>,
}

/// One batch: `texts` for object streams (devalue texts), `buffers` for byte streams.
#[napi(object)]
pub struct StreamBatch {
    pub texts: Vec<String>,
    pub buffers: Vec<Buffer>,
    pub done: bool,
}

impl NativeStreamReader {
    pub fn open(world: &Arc<LocalWorld>, name: &str, start: i64, mode: &str) -> napi::Result<Self> {
        let mode = match mode {
            "bytes" => StreamMode::BytesRaw,
            "bytes-framed" => StreamMode::BytesFramed,
            _ => StreamMode::Objects,
        };
        let reader = StreamReader::open(world, name, start, mode).map_err(to_napi)?;
        Ok(NativeStreamReader {
            reader: Arc::new(Mutex::new(Some(reader))),
            closed: watch::channel(false).0,
        })
    }
}

fn done_batch() -> StreamBatch {
    StreamBatch {
        texts: Vec::new(),
        buffers: Vec::new(),
        done: true,
    }
}

#[napi]
impl NativeStreamReader {
    /// Up to `max` items; waits for writers while the stream is open and drained.
    #[napi]
    pub async fn next_many(&self, max: u32) -> napi::Result<StreamBatch> {
        let reader = Arc::clone(&self.reader);
        let mut closed = self.closed.subscribe();
        let mut guard = reader.lock().await;
        let Some(r) = guard.as_mut() else {
            return Ok(done_batch());
        };
        let res = tokio::select! {
            res = r.next_many(max as usize) => Some(res),
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(res) = res else {
            *guard = None; // closed while waiting: release the watcher subscription now
            return Ok(done_batch());
        };
        let batch = res.map_err(to_napi)?;
        if batch.done {
            *guard = None;
        }
        let mut texts = Vec::new();
        let mut buffers = Vec::new();
        for item in batch.items {
            match item {
                Item::Text(t) => texts.push(t),
                Item::Bytes(b) => buffers.push(Buffer::from(b)),
            }
        }
        Ok(StreamBatch {
            texts,
            buffers,
            done: batch.done,
        })
    }

    /// Stops the reader and releases its resources, also while a `nextMany` is waiting.
    #[napi]
    pub fn close(&self) {
        let _ = self.closed.send(true);
        if let Ok(mut g) = self.reader.try_lock() {
            *g = None;
        }
    }
}
