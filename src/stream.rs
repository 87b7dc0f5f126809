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

/// One batch. Object streams: the devalue texts joined into one string (`text`) with the
/// end offset of each (UTF-16 units, `ends`) — one JS string per batch instead of one per
/// chunk. Byte streams: `buffers`.
#[napi(object)]
pub struct StreamBatch {
    pub text: String,
    pub ends: Vec<u32>,
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
        text: String::new(),
        ends: Vec::new(),
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
        let mut text = String::new();
        let mut ends = Vec::new();
        let mut end = 0u32;
        let mut buffers = Vec::new();
        for item in batch.items {
            match item {
                Item::Text(t) => {
                    end += if t.is_ascii() {
                        t.len() as u32
                    } else {
                        t.encode_utf16().count() as u32
                    };
                    text.push_str(&t);
                    ends.push(end);
                }
                Item::Bytes(b) => buffers.push(Buffer::from(b)),
            }
        }
        Ok(StreamBatch {
            text,
            ends,
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
