//! Read-ahead: a live reader drained on a background task into a bounded buffer — a
//! local stream reader or any other [`Source`] (the PostgreSQL one).

use super::cursor::{Batch, StreamReader, MAX_BATCH_BYTES};
use super::frames::Item;
use super::index::lock;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// A live reader the read-ahead task drains: the next items (at least one unless the
/// stream is done), waiting for writers while the stream is open and fully read.
pub trait Source: Send + 'static {
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Result<Batch>> + Send;
}

impl Source for StreamReader {
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Result<Batch>> + Send {
        self.next_many(max)
    }
}

/// Items the read-ahead task may hold before it waits for the consumer.
const PREFETCH_ITEMS: usize = 2048;

#[derive(Default)]
struct PrefetchState {
    items: VecDeque<Item>,
    bytes: usize,
    done: bool,
    error: Option<Error>,
}

struct PrefetchShared {
    state: Mutex<PrefetchState>,
    /// wakes the consumer when items, the end or an error arrive
    ready: tokio::sync::Notify,
    /// wakes the producer when the consumer made room
    room: tokio::sync::Notify,
    closed: tokio::sync::watch::Sender<bool>,
}

fn item_len(i: &Item) -> usize {
    match i {
        Item::Text(t) => t.len(),
        Item::Bytes(b) => b.len(),
    }
}

/// A live reader that reads ahead on a background task into a bounded buffer
/// (`PREFETCH_ITEMS` items / `MAX_BATCH_BYTES` bytes), so the consumer usually takes
/// ready items synchronously, with no thread hop, while files are being read.
pub struct PrefetchReader<S: Source = StreamReader> {
    shared: Arc<PrefetchShared>,
    reader: Mutex<Option<S>>,
    /// The most bytes one batch hands out (at least one item whatever its size).
    batch_bytes: usize,
}

impl<S: Source> PrefetchReader<S> {
    pub fn new(reader: S) -> PrefetchReader<S> {
        PrefetchReader {
            shared: Arc::new(PrefetchShared {
                state: Mutex::new(PrefetchState::default()),
                ready: tokio::sync::Notify::new(),
                room: tokio::sync::Notify::new(),
                closed: tokio::sync::watch::channel(false).0,
            }),
            reader: Mutex::new(Some(reader)),
            batch_bytes: MAX_BATCH_BYTES,
        }
    }

    /// Batches of at most `bytes` bytes (and at least one item): a consumer that turns
    /// each batch into one allocation keeps them below a size it handles cheaply.
    pub fn with_batch_bytes(mut self, bytes: usize) -> PrefetchReader<S> {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Takes up to `max` ready items; `None` when nothing is ready yet (or the read-ahead
    /// task has not been started: only [`next_many`](Self::next_many) starts it).
    pub fn try_next_many(&self, max: usize) -> Option<Result<Batch>> {
        let mut st = lock(&self.shared.state);
        if !st.items.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            for item in st.items.iter().take(max.max(1)) {
                let len = item_len(item);
                if n > 0 && bytes + len > self.batch_bytes {
                    break;
                }
                n += 1;
                bytes += len;
            }
            let items: Vec<Item> = st.items.drain(..n).collect();
            st.bytes -= bytes;
            let done = st.done && st.items.is_empty() && st.error.is_none();
            drop(st);
            self.shared.room.notify_one();
            return Some(Ok(Batch { items, done }));
        }
        if let Some(e) = st.error.take() {
            st.done = true;
            return Some(Err(e));
        }
        if st.done {
            return Some(Ok(Batch {
                items: Vec::new(),
                done: true,
            }));
        }
        None
    }

    /// Up to `max` items, waiting for the read-ahead task when none are ready. Must run
    /// inside a Tokio runtime (it starts the task on first use).
    pub async fn next_many(&self, max: usize) -> Result<Batch> {
        self.start();
        loop {
            let ready = self.shared.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(r) = self.try_next_many(max) {
                return r;
            }
            if *self.shared.closed.borrow() {
                return Ok(Batch {
                    items: Vec::new(),
                    done: true,
                });
            }
            ready.await;
        }
    }

    fn start(&self) {
        let Some(reader) = lock(&self.reader).take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        tokio::spawn(produce(reader, shared));
    }

    /// Stops reading ahead and releases the reader (its watcher subscription) promptly,
    /// also while the task waits for writers.
    pub fn close(&self) {
        let _ = self.shared.closed.send(true);
        lock(&self.reader).take();
        {
            let mut st = lock(&self.shared.state);
            st.items.clear();
            st.bytes = 0;
            st.done = true;
        }
        self.shared.ready.notify_waiters();
        self.shared.room.notify_one();
    }
}

async fn produce<S: Source>(mut reader: S, shared: Arc<PrefetchShared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        // Wait for room in the buffer.
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if *closed.borrow() {
                return;
            }
            {
                let st = lock(&shared.state);
                if st.items.len() < PREFETCH_ITEMS && st.bytes < MAX_BATCH_BYTES {
                    break;
                }
            }
            room.await;
        }
        let res = tokio::select! {
            r = reader.next_batch(256) => r,
            _ = closed.wait_for(|c| *c) => return,
        };
        let finished = {
            let mut st = lock(&shared.state);
            match res {
                Ok(batch) => {
                    st.bytes += batch.items.iter().map(item_len).sum::<usize>();
                    st.items.extend(batch.items);
                    st.done = batch.done;
                    batch.done
                }
                Err(e) => {
                    st.error = Some(e);
                    true
                }
            }
        };
        shared.ready.notify_waiters();
        if finished {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::fixtures::{frame, ulid_at, write_chunk};
    use crate::stream::frames::StreamMode;
    use crate::stream::index::ChunkIndex;
    use crate::world::watch::{ChangeFeed, Topic};
    use std::path::Path;

    /// The chunk directory of a data directory, created.
    fn chunk_dir(root: &Path) -> std::path::PathBuf {
        let chunks = root.join("streams/chunks");
        std::fs::create_dir_all(&chunks).unwrap();
        chunks
    }

    /// A live object-stream reader of a data directory, as the local World opens one.
    fn reader_of(root: &Path, name: &str) -> StreamReader {
        let index = Arc::new(ChunkIndex::new(root.join("streams").join("chunks")));
        let sub = ChangeFeed::new(root).subscribe(Topic::Stream, name);
        StreamReader::new(index, sub, name, 0, StreamMode::Objects).unwrap()
    }

    #[tokio::test]
    async fn prefetch_reader_delivers_everything_in_order_and_bounds_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let chunks = chunk_dir(root);
        for i in 0..5000u64 {
            write_chunk(
                &chunks,
                "strm_A_user",
                &ulid_at(i),
                0,
                &frame(&format!("[{i}]")),
            );
        }
        write_chunk(&chunks, "strm_A_user", &ulid_at(9999), 1, b"");
        let reader = reader_of(root, "strm_A_user");
        let p = PrefetchReader::new(reader);
        assert!(
            p.try_next_many(10).is_none(),
            "nothing is read before the first next_many"
        );
        let mut got = Vec::new();
        loop {
            let b = p.next_many(300).await.unwrap();
            assert!(b.items.len() <= 300);
            assert!(lock(&p.shared.state).items.len() <= PREFETCH_ITEMS + 256);
            got.extend(b.items);
            if b.done {
                break;
            }
        }
        assert_eq!(got.len(), 5000);
        assert_eq!(got[4999], Item::Text("[4999]".into()));
        assert!(matches!(
            p.try_next_many(1),
            Some(Ok(Batch { done: true, .. }))
        ));
    }

    #[tokio::test]
    async fn batches_stay_within_their_byte_budget_and_hold_at_least_one_item() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let chunks = chunk_dir(root);
        // texts of ~100 bytes, one of 5,000 (larger than the budget on its own)
        let text = |i: u64| {
            let pad = if i == 37 { 5000 } else { 90 };
            format!("[{i},\"{}\"]", "x".repeat(pad))
        };
        for i in 0..100u64 {
            write_chunk(&chunks, "strm_C_user", &ulid_at(i), 0, &frame(&text(i)));
        }
        write_chunk(&chunks, "strm_C_user", &ulid_at(999), 1, b"");
        let p = PrefetchReader::new(reader_of(root, "strm_C_user")).with_batch_bytes(1000);
        let mut got = Vec::new();
        loop {
            let b = p.next_many(500).await.unwrap();
            let bytes: usize = b.items.iter().map(item_len).sum();
            assert!(
                bytes <= 1000 || b.items.len() == 1,
                "a batch of {} items, {bytes} bytes",
                b.items.len()
            );
            got.extend(b.items);
            if b.done {
                break;
            }
        }
        assert_eq!(got.len(), 100);
        for (i, item) in got.iter().enumerate() {
            assert_eq!(item, &Item::Text(text(i as u64)), "item {i}");
        }
    }

    #[tokio::test]
    async fn closing_a_prefetch_reader_ends_a_pending_wait() {
        let dir = tempfile::tempdir().unwrap();
        let reader = reader_of(dir.path(), "strm_B_user");
        let p = Arc::new(PrefetchReader::new(reader));
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.next_many(10).await })
        };
        tokio::task::yield_now().await;
        p.close();
        let b = waiter.await.unwrap().unwrap();
        assert!(b.done && b.items.is_empty());
    }
}
