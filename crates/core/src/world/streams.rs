//! Writing run streams in world-local's format: one `.bin` file per chunk (flag byte
//! `0x00` + bytes), a one-byte `0x01` file to close, and the stream's name registered in
//! `streams/runs/<runId>.json`.

use crate::error::Result;
use crate::ids::{assert_safe_entity_id, prefixed_id};
use crate::stream::{StreamMode, StreamReader};
use crate::world::fsio::{
    read_json, to_pretty_json, write_exclusive, write_exclusive_all, write_replace,
};
use crate::world::local::LocalWorld;
use crate::world::watch::Topic;
use serde_json::{json, Value};
use std::sync::Arc;

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

    /// `{ tailIndex, done }` of stream `name` (`-1` when it has no data chunk yet).
    pub fn stream_tail(&self, name: &str) -> Result<(i64, bool)> {
        self.chunk_index().stream_info(name)
    }

    async fn register_stream(&self, name: &str, run_id: &str) -> Result<()> {
        assert_safe_entity_id("runId", run_id)?;
        assert_safe_entity_id("streamName", name)?;
        let path = self
            .root()
            .join("streams")
            .join("runs")
            .join(format!("{run_id}.json"));
        let mut streams: Vec<Value> = match read_json(&path).await {
            Ok(Some(v)) => v
                .get("streams")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if streams.iter().any(|s| s.as_str() == Some(name)) {
            return Ok(());
        }
        streams.push(json!(name));
        write_replace(
            &path,
            to_pretty_json(&json!({ "streams": streams })).as_bytes(),
        )
        .await
    }

    /// `writeToStream` / `writeToStreamMulti`: one file per chunk, ULIDs drawn in order.
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
        // Written in order, made durable together (one directory sync for the lot).
        let files = ids
            .iter()
            .zip(chunks)
            .map(|(id, chunk)| {
                let mut data = Vec::with_capacity(chunk.len() + 1);
                data.push(0u8);
                data.extend_from_slice(chunk);
                (dir.join(format!("{name}-{id}.bin")), data)
            })
            .collect();
        write_exclusive_all(files).await?;
        Ok(())
    }

    /// `closeStream`: the close-marker file.
    pub async fn close_stream(&self, name: &str, run_id: &str) -> Result<()> {
        let id = prefixed_id("chnk");
        self.register_stream(name, run_id).await?;
        write_exclusive(&self.chunks_dir().join(format!("{name}-{id}.bin")), &[1u8]).await?;
        Ok(())
    }
}
