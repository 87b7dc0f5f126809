//! Writing run streams in world-local's format: one `.bin` file per chunk (flag byte
//! `0x00` + bytes), a one-byte `0x01` file to close, and the stream's name registered in
//! `streams/runs/<runId>.json`.

use crate::error::{Error, Result};
use crate::ids::{assert_safe_entity_id, prefixed_id};
use crate::stream::{StreamMode, StreamReader};
use crate::world::fsio::{read_json, to_pretty_json, write_exclusive_sync, write_replace};
use crate::world::local::LocalWorld;
use crate::world::watch::Topic;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl StreamReader {
    /// A live reader of one of the world's streams from `start_index` (negative: from
    /// the end), woken by the world's change feed.
    pub fn open(
        world: &Arc<LocalWorld>,
        name: &str,
        start_index: i64,
        mode: StreamMode,
    ) -> Result<StreamReader> {
        world.open_stream(name, start_index, mode)
    }
}

impl LocalWorld {
    /// A live reader of stream `name` from `start_index`.
    pub fn open_stream(
        &self,
        name: &str,
        start_index: i64,
        mode: StreamMode,
    ) -> Result<StreamReader> {
        // Validated before subscribing, so a bad name registers nothing.
        assert_safe_entity_id("streamName", name)?;
        let sub = self.subscribe(Topic::Stream, name);
        StreamReader::new(self.chunk_index(), sub, name, start_index, mode)
    }

    /// A live reader of a stream of run `run_id` that also ends once the run is terminal
    /// (completed, failed or cancelled) and every chunk written before is delivered, close
    /// marker or not. A run that cannot be read (unknown, a corrupt file) when the reader
    /// first waits leaves it ending at the close marker only.
    pub fn open_run_stream(
        &self,
        name: &str,
        start_index: i64,
        mode: StreamMode,
        run_id: &str,
    ) -> Result<StreamReader> {
        assert_safe_entity_id("runId", run_id)?;
        let reader = self.open_stream(name, start_index, mode)?;
        let waiters = Arc::clone(self.terminal_waiters());
        let run_id = run_id.to_string();
        Ok(reader.end_with(Box::pin(async move {
            let run = waiters.wait(&run_id).await.ok()?;
            // When it ended (now if the run file does not say).
            let ended = run
                .completed_at
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map_or_else(SystemTime::now, |ms| {
                    UNIX_EPOCH + Duration::from_millis(ms as u64)
                });
            Some(ended)
        })))
    }

    /// `{ tailIndex, done }` of stream `name` (`-1` when it has no data chunk yet).
    pub fn stream_tail(&self, name: &str) -> Result<(i64, bool)> {
        self.chunk_index().stream_info(name)
    }

    async fn register_stream(&self, name: &str, run_id: &str) -> Result<()> {
        assert_safe_entity_id("runId", run_id)?;
        assert_safe_entity_id("streamName", name)?;
        let key = (run_id.to_string(), name.to_string());
        if crate::stream::index::lock(&self.registered_streams).contains(&key) {
            return Ok(());
        }
        let path = self
            .root()
            .join("streams")
            .join("runs")
            .join(format!("{run_id}.json"));
        // A registration file we cannot read or parse is reported, not overwritten (that
        // would drop the run's other streams).
        let mut streams: Vec<Value> = match read_json(&path).await? {
            Some(v) => match v.get("streams").and_then(Value::as_array) {
                Some(list) => list.clone(),
                None => {
                    return Err(Error::corrupt(
                        &path,
                        "expected an object with a \"streams\" array",
                    ))
                }
            },
            None => Vec::new(),
        };
        if !streams.iter().any(|s| s.as_str() == Some(name)) {
            streams.push(json!(name));
            write_replace(
                &path,
                to_pretty_json(&json!({ "streams": streams })).as_bytes(),
            )
            .await?;
        }
        crate::stream::index::lock(&self.registered_streams).insert(key);
        Ok(())
    }

    /// `writeToStream` / `writeToStreamMulti`: one file per chunk, ULIDs drawn in order,
    /// published one after the other (each whole, under its name) on one blocking task, so
    /// a reader never sees chunk k+1 before chunk k.
    pub async fn write_stream_chunks(
        &self,
        name: &str,
        run_id: &str,
        chunks: &[Vec<u8>],
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = chunks.iter().map(|_| prefixed_id("chnk")).collect();
        self.register_stream(name, run_id).await?;
        let dir = self.chunks_dir();
        let files: Vec<(std::path::PathBuf, Vec<u8>)> = ids
            .iter()
            .zip(chunks)
            .map(|(id, chunk)| {
                let mut data = Vec::with_capacity(chunk.len() + 1);
                data.push(0u8);
                data.extend_from_slice(chunk);
                (dir.join(format!("{name}-{id}.bin")), data)
            })
            .collect();
        publish_in_order(files).await
    }

    /// `closeStream`: the close-marker file.
    pub async fn close_stream(&self, name: &str, run_id: &str) -> Result<()> {
        let id = prefixed_id("chnk");
        self.register_stream(name, run_id).await?;
        let path = self.chunks_dir().join(format!("{name}-{id}.bin"));
        publish_in_order(vec![(path, vec![1u8])]).await
    }
}

/// Publishes create-once files in order on a blocking task. Each name holds a fresh ULID;
/// should one exist already, it is left untouched (as the async publish did).
async fn publish_in_order(files: Vec<(std::path::PathBuf, Vec<u8>)>) -> Result<()> {
    // Published in order, then made durable together (one directory sync for the lot)
    // before the write resolves.
    tokio::task::spawn_blocking(move || {
        crate::world::durable::committed(|| {
            for (path, data) in &files {
                write_exclusive_sync(path, data)?;
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| Error::Plain(format!("stream write task failed: {e}")))?
}
