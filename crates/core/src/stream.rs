//! Run streams on disk: chunk listing, tail index, frame decoding and a live reader.
//!
//! A stream is the set of files `streams/chunks/<name>-chnk_<ULID>.bin` in file-name
//! (= ULID) order. Each file holds one flag byte (`0x00` data, `0x01` close marker) and the
//! chunk bytes. Object streams carry one `u32 BE length || "devl" || devalue text` frame per
//! chunk; byte streams carry raw bytes or `u32 BE length || bytes` frames (`framed-v1`).

use crate::dirscan::{for_each_name, DirHandle};
use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::local::LocalWorld;
use crate::world::watch::{Subscription, Topic};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const EOF_FLAG: u8 = 1;
const FRAME_HEADER: usize = 4;
const MAX_PLAUSIBLE_FRAME: u32 = 100_000_000;
/// Upper bound of chunk bytes one `next_many` call reads, so a slow consumer never makes
/// us hold more than this in memory.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Sorted chunk file names of one stream (temp files excluded), from a fresh listing.
pub fn list_chunk_files(chunks_dir: &Path, name: &str) -> Result<Vec<String>> {
    assert_safe_entity_id("streamName", name)?;
    scan_stream(chunks_dir, name)
}

/// One pass over the directory keeping only this stream's chunk files, sorted by chunk
/// ULID (= file name order, since they share the `<name>-` prefix).
fn scan_stream(chunks_dir: &Path, name: &str) -> Result<Vec<String>> {
    let prefix = format!("{name}-");
    let mut files: Vec<(u128, String)> = Vec::new();
    // Temp files end in `.tmp.<ULID>`, so the extension test excludes them.
    for_each_name(chunks_dir, |f| {
        if f.starts_with(&prefix) && (f.ends_with(".bin") || f.ends_with(".json")) {
            files.push((chunk_key(f), f.to_string()));
        }
    })
    .map_err(|e| Error::io(chunks_dir, e))?;
    files.sort_unstable();
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

/// Number of this stream's chunk files and the last one (by chunk order), in one pass
/// with no sorting: what the tail index needs.
fn scan_tail(chunks_dir: &Path, name: &str) -> Result<(usize, Option<String>)> {
    let prefix = format!("{name}-");
    let mut count = 0usize;
    let mut last: Option<(u128, String)> = None;
    for_each_name(chunks_dir, |f| {
        if f.starts_with(&prefix) && (f.ends_with(".bin") || f.ends_with(".json")) {
            count += 1;
            let key = chunk_key(f);
            if last
                .as_ref()
                .is_none_or(|(k, n)| (key, f) > (*k, n.as_str()))
            {
                last = Some((key, f.to_string()));
            }
        }
    })
    .map_err(|e| Error::io(chunks_dir, e))?;
    Ok((count, last.map(|(_, n)| n)))
}

fn first_byte(path: &Path) -> Result<Option<u8>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut b = [0u8; 1];
    match f.read(&mut b) {
        Ok(1) => Ok(Some(b[0])),
        Ok(_) => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    }
}

/// A directory modified at least this long before we listed it cannot change again
/// without its mtime changing too (file-system timestamps use a coarse clock).
const MTIME_SAFETY: Duration = Duration::from_millis(50);
/// Streams whose listings are kept.
const MAX_CACHED_STREAMS: usize = 256;

struct CachedListing {
    mtime: SystemTime,
    names: Arc<Vec<String>>,
}

/// Per-stream chunk listings, cached and revalidated by the directory's mtime, so a
/// question about a quiet stream costs one `stat` instead of a directory scan.
pub struct ChunkIndex {
    dir: PathBuf,
    cache: Mutex<HashMap<String, CachedListing>>,
    /// `(mtime, count, last file)` per stream, for the tail index.
    tails: Mutex<HashMap<String, CachedTail>>,
}

#[derive(Clone)]
struct CachedTail {
    mtime: SystemTime,
    count: usize,
    last: Option<String>,
}

/// Whether a listing taken at `started` of a directory last modified at `mtime` can be
/// trusted until the mtime changes.
fn trusted(mtime: SystemTime, started: SystemTime) -> bool {
    started
        .duration_since(mtime)
        .is_ok_and(|age| age > MTIME_SAFETY)
}

impl ChunkIndex {
    pub fn new(dir: PathBuf) -> ChunkIndex {
        ChunkIndex {
            dir,
            cache: Mutex::new(HashMap::new()),
            tails: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sorted chunk files of one stream.
    pub fn stream_files(&self, name: &str) -> Result<Arc<Vec<String>>> {
        assert_safe_entity_id("streamName", name)?;
        let mtime = match std::fs::metadata(&self.dir) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Vec::new()));
            }
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        if let Some(m) = mtime {
            if let Some(c) = lock(&self.cache).get(name) {
                if c.mtime == m {
                    return Ok(Arc::clone(&c.names));
                }
            }
        }
        let started = SystemTime::now();
        let names = Arc::new(scan_stream(&self.dir, name)?);
        if let Some(m) = mtime.filter(|m| trusted(*m, started)) {
            let mut cache = lock(&self.cache);
            if cache.len() >= MAX_CACHED_STREAMS {
                cache.clear();
            }
            cache.insert(
                name.to_string(),
                CachedListing {
                    mtime: m,
                    names: Arc::clone(&names),
                },
            );
        } else {
            lock(&self.cache).remove(name);
        }
        Ok(names)
    }

    /// `{ tailIndex, done }`: the number of chunk files and the first byte of the last one.
    /// world-local reads the first byte of every file up to the first close marker; a close
    /// marker is the last file a writer produces, so the last file gives the same answer.
    /// Served from a cached listing when the directory has not changed, else from one
    /// unsorted counting pass.
    pub fn stream_info(&self, name: &str) -> Result<(i64, bool)> {
        assert_safe_entity_id("streamName", name)?;
        let mtime = std::fs::metadata(&self.dir)
            .ok()
            .and_then(|m| m.modified().ok());
        let listed = mtime.and_then(|m| {
            lock(&self.cache)
                .get(name)
                .filter(|c| c.mtime == m)
                .map(|c| (c.names.len(), c.names.last().cloned()))
        });
        let tail = mtime.and_then(|m| {
            lock(&self.tails)
                .get(name)
                .filter(|c| c.mtime == m)
                .map(|c| (c.count, c.last.clone()))
        });
        let (count, last) = match listed.or(tail) {
            Some(known) => known,
            None => {
                let started = SystemTime::now();
                let (count, last) = scan_tail(&self.dir, name)?;
                let mut tails = lock(&self.tails);
                match mtime.filter(|m| trusted(*m, started)) {
                    Some(m) => {
                        if tails.len() >= MAX_CACHED_STREAMS {
                            tails.clear();
                        }
                        tails.insert(
                            name.to_string(),
                            CachedTail {
                                mtime: m,
                                count,
                                last: last.clone(),
                            },
                        );
                    }
                    None => {
                        tails.remove(name);
                    }
                }
                (count, last)
            }
        };
        let Some(last) = last else {
            return Ok((-1, false));
        };
        let done = first_byte(&self.dir.join(last))? == Some(EOF_FLAG);
        let data = count as i64 - i64::from(done);
        Ok((data - 1, done))
    }
}

/// Reads a whole chunk file with open + read + close: no stat, and no second read to see
/// EOF when the first read returned less than the buffer (chunk files are small and never
/// change once published; a short read of a regular file means its end). Reads into a
/// per-thread buffer and returns an exact-size copy (no zeroed 16 KiB per chunk).
fn read_chunk(dir: &DirHandle, name: &str) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
    }
    let mut f = dir.open_file(name)?;
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut len = 0;
        loop {
            let n = f.read(&mut buf[len..])?;
            len += n;
            if n == 0 || len < buf.len() {
                return Ok(buf[..len].to_vec());
            }
            // Full buffer: a bigger file, grow (for this thread) and keep reading.
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
        }
    })
}

/// Reads files in order, on two threads for runs of small files. `None` = file vanished.
fn read_chunks(dir: &DirHandle, names: &[String]) -> Vec<std::io::Result<Option<Vec<u8>>>> {
    let read_one = |n: &String| match read_chunk(dir, n) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    if names.len() < 16 {
        return names.iter().map(read_one).collect();
    }
    let (a, b) = names.split_at(names.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| b.iter().map(read_one).collect::<Vec<_>>());
        let mut out: Vec<_> = a.iter().map(read_one).collect();
        match other.join() {
            Ok(rest) => out.extend(rest),
            // The reader thread cannot panic on I/O; if it somehow did, read serially.
            Err(_) => out.extend(b.iter().map(read_one)),
        }
        out
    })
}

/// Files read per round once chunks are known to be small (≤ 16 KiB on average): large
/// enough to amortise the helper thread.
const ROUND: usize = 256;
/// Files read in the first round of a batch (and for medium chunks), so a round of
/// unusually big chunks stays bounded.
const FIRST_ROUND: usize = 32;

/// How the chunk bytes are turned into items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// devalue-framed object stream: items are the frame texts.
    Objects,
    /// raw byte stream: items are the chunk bytes as stored.
    BytesRaw,
    /// `framed-v1` byte stream: items are the frame payloads.
    BytesFramed,
}

/// One decoded item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// devalue text to parse (the `devl` prefix already removed)
    Text(String),
    Bytes(Vec<u8>),
}

/// Turns chunk payloads into items, re-grouping frames that span chunks.
#[derive(Debug)]
pub struct FrameDecoder {
    mode: StreamMode,
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(mode: StreamMode) -> Self {
        FrameDecoder {
            mode,
            buf: Vec::new(),
        }
    }

    /// Decodes a format-prefixed frame body.
    fn frame_body(body: &[u8]) -> Result<Item> {
        if body.len() < 4 {
            return Err(Error::Plain(format!(
                "Data too short to contain format prefix: expected at least 4 bytes, got {}",
                body.len()
            )));
        }
        match &body[..4] {
            b"devl" => Ok(Item::Text(String::from_utf8_lossy(&body[4..]).into_owned())),
            b"encr" => Err(Error::Decryption(
                "Encrypted stream data encountered but no encryption key is available. Encryption is not configured or no key was provided for this run.".into(),
            )),
            other => Err(Error::Runtime(format!(
                "Unknown serialization format: \"{}\". Known formats: devl, encr",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn drain_frames(&mut self, out: &mut Vec<Item>) -> Result<()> {
        let mut start = 0;
        while self.buf.len() - start >= FRAME_HEADER {
            let h = &self.buf[start..start + FRAME_HEADER];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if self.buf.len() - start < FRAME_HEADER + len {
                break;
            }
            let body = &self.buf[start + FRAME_HEADER..start + FRAME_HEADER + len];
            match self.mode {
                StreamMode::Objects => out.push(Self::frame_body(body)?),
                _ => {
                    if !body.is_empty() {
                        out.push(Item::Bytes(body.to_vec()))
                    }
                }
            }
            start += FRAME_HEADER + len;
        }
        self.buf.drain(..start);
        Ok(())
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Item>) -> Result<()> {
        match self.mode {
            StreamMode::BytesRaw => {
                if !chunk.is_empty() {
                    out.push(Item::Bytes(chunk.to_vec()));
                }
                Ok(())
            }
            StreamMode::BytesFramed => {
                self.buf.extend_from_slice(chunk);
                if self.buf.len() >= FRAME_HEADER {
                    let h = &self.buf[..FRAME_HEADER];
                    if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) > MAX_PLAUSIBLE_FRAME {
                        return Err(Error::Plain(
                            "Byte stream frame exceeds the maximum frame size (100000000 bytes)"
                                .into(),
                        ));
                    }
                }
                self.drain_frames(out)
            }
            StreamMode::Objects => {
                if self.buf.is_empty() && chunk.len() >= FRAME_HEADER {
                    let n = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    if n > 0 && n < MAX_PLAUSIBLE_FRAME {
                        self.buf.extend_from_slice(chunk);
                        return self.drain_frames(out);
                    }
                } else if !self.buf.is_empty() {
                    self.buf.extend_from_slice(chunk);
                    return self.drain_frames(out);
                }
                // Legacy: newline-separated devalue texts, no framing.
                let text = String::from_utf8_lossy(chunk);
                for line in text.split('\n') {
                    if !line.is_empty() {
                        out.push(Item::Text(line.to_string()));
                    }
                }
                Ok(())
            }
        }
    }
}

fn chunk_key(name: &str) -> u128 {
    // The part after `-chnk_` is a ULID; fall back to a hash for foreign names.
    name.rfind("chnk_")
        .and_then(|i| name.get(i + 5..i + 31))
        .and_then(|u| ulid::Ulid::from_string(u).ok())
        .map(|u| u.0)
        .unwrap_or_else(|| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            u128::from(h.finish()) | (1u128 << 127)
        })
}

/// The synchronous part of a reader: which files were consumed, what is buffered.
pub struct StreamCursor {
    index: Arc<ChunkIndex>,
    /// the chunk directory, opened on first read
    dir: Option<DirHandle>,
    name: String,
    consumed: HashSet<u128>,
    /// Listed but not yet consumed files, in order; refilled by a new listing when empty.
    pending: VecDeque<String>,
    /// Files still to skip to honour a positive start index beyond the current end.
    skip: u64,
    started: bool,
    start_index: i64,
    decoder: FrameDecoder,
    done: bool,
    /// files to read in the next round (sized by the chunks seen so far)
    round: usize,
}

/// One batch of items.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    pub done: bool,
}

impl StreamCursor {
    pub fn new(
        index: Arc<ChunkIndex>,
        name: &str,
        start_index: i64,
        mode: StreamMode,
    ) -> Result<Self> {
        assert_safe_entity_id("streamName", name)?;
        Ok(StreamCursor {
            index,
            dir: None,
            name: name.to_string(),
            consumed: HashSet::new(),
            pending: VecDeque::new(),
            skip: 0,
            started: false,
            start_index,
            decoder: FrameDecoder::new(mode),
            done: false,
            round: FIRST_ROUND,
        })
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn resolve_start(&mut self, files: &[String]) -> Result<()> {
        let start = if self.start_index < 0 {
            let mut count = files.len() as i64;
            if let Some(last) = files.last() {
                if first_byte(&self.index.dir().join(last))? == Some(EOF_FLAG) {
                    count -= 1;
                }
            }
            (count + self.start_index).max(0) as u64
        } else {
            self.start_index as u64
        };
        let mut skipped = 0u64;
        for f in files.iter().take(start as usize) {
            if first_byte(&self.index.dir().join(f))? == Some(EOF_FLAG) {
                // A start index past the close marker: nothing left to read.
                self.done = true;
                return Ok(());
            }
            self.consumed.insert(chunk_key(f));
            skipped += 1;
        }
        self.skip = start - skipped;
        self.started = true;
        Ok(())
    }

    /// Reads whatever is available now, up to `max_items` items / `MAX_BATCH_BYTES`.
    /// An empty, not-done batch means "nothing new yet".
    pub fn read_available(&mut self, max_items: usize) -> Result<Batch> {
        let mut batch = Batch::default();
        if self.done {
            batch.done = true;
            return Ok(batch);
        }
        if self.pending.is_empty() {
            let files = self.index.stream_files(&self.name)?;
            let files: &[String] = &files;
            if !self.started {
                self.resolve_start(files)?;
                if self.done {
                    batch.done = true;
                    return Ok(batch);
                }
            }
            let consumed = &self.consumed;
            self.pending = files
                .iter()
                .filter(|f| !consumed.contains(&chunk_key(f)))
                .cloned()
                .collect();
        }
        let mut bytes_read = 0usize;
        'rounds: while !self.pending.is_empty() {
            let room = max_items.max(1).saturating_sub(batch.items.len());
            if room == 0 || bytes_read >= MAX_BATCH_BYTES {
                break;
            }
            let take = room.min(self.round).min(self.pending.len());
            let names: Vec<String> = self.pending.drain(..take).collect();
            if self.dir.is_none() {
                self.dir = Some(
                    DirHandle::open(self.index.dir())
                        .map_err(|e| Error::io(self.index.dir(), e))?,
                );
            }
            let Some(dir) = self.dir.as_ref() else {
                break;
            };
            let contents = read_chunks(dir, &names);
            let mut round_bytes = 0usize;
            for (name, data) in names.iter().zip(contents) {
                let key = chunk_key(name);
                if self.consumed.contains(&key) {
                    continue;
                }
                let Some(data) = data.map_err(|e| Error::io(&self.index.dir().join(name), e))?
                else {
                    continue;
                };
                if data.first() == Some(&EOF_FLAG) {
                    self.done = true;
                    self.pending.clear();
                    break 'rounds;
                }
                self.consumed.insert(key);
                if self.skip > 0 {
                    self.skip -= 1;
                    continue;
                }
                round_bytes += data.len();
                if data.len() > 1 {
                    self.decoder.push(&data[1..], &mut batch.items)?;
                }
            }
            bytes_read += round_bytes;
            // Size the next round by what this one saw: many small chunks per round,
            // one file at a time for big ones (bounds memory).
            let avg = round_bytes / take.max(1);
            self.round = if avg > 256 * 1024 {
                1
            } else if avg > 16 * 1024 {
                FIRST_ROUND
            } else {
                ROUND
            };
        }
        batch.done = self.done;
        Ok(batch)
    }
}

/// A live reader: batches of items, waiting on the change feed when nothing is new.
pub struct StreamReader {
    cursor: Option<StreamCursor>,
    sub: Subscription,
}

impl StreamReader {
    pub fn open(
        world: &Arc<LocalWorld>,
        name: &str,
        start_index: i64,
        mode: StreamMode,
    ) -> Result<StreamReader> {
        let cursor = StreamCursor::new(world.chunk_index(), name, start_index, mode)?;
        let sub = world.subscribe(Topic::Stream, name);
        Ok(StreamReader {
            cursor: Some(cursor),
            sub,
        })
    }

    /// Next items (at least one unless the stream is done). Waits for writers when the
    /// stream is open and fully consumed.
    pub async fn next_many(&mut self, max_items: usize) -> Result<Batch> {
        loop {
            self.sub.mark_seen();
            let Some(mut cursor) = self.cursor.take() else {
                return Ok(Batch {
                    items: Vec::new(),
                    done: true,
                });
            };
            let (cursor, res) = tokio::task::spawn_blocking(move || {
                let r = cursor.read_available(max_items);
                (cursor, r)
            })
            .await
            .map_err(|e| Error::Plain(format!("stream reader task failed: {e}")))?;
            self.cursor = Some(cursor);
            let batch = res?;
            if !batch.items.is_empty() || batch.done {
                return Ok(batch);
            }
            self.sub.changed().await;
        }
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
pub struct PrefetchReader {
    shared: Arc<PrefetchShared>,
    reader: Mutex<Option<StreamReader>>,
}

impl PrefetchReader {
    pub fn new(reader: StreamReader) -> PrefetchReader {
        PrefetchReader {
            shared: Arc::new(PrefetchShared {
                state: Mutex::new(PrefetchState::default()),
                ready: tokio::sync::Notify::new(),
                room: tokio::sync::Notify::new(),
                closed: tokio::sync::watch::channel(false).0,
            }),
            reader: Mutex::new(Some(reader)),
        }
    }

    /// Takes up to `max` ready items; `None` when nothing is ready yet (or the read-ahead
    /// task has not been started: only [`next_many`](Self::next_many) starts it).
    pub fn try_next_many(&self, max: usize) -> Option<Result<Batch>> {
        let mut st = lock(&self.shared.state);
        if !st.items.is_empty() {
            let n = max.max(1).min(st.items.len());
            let items: Vec<Item> = st.items.drain(..n).collect();
            st.bytes -= items.iter().map(item_len).sum::<usize>();
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

async fn produce(mut reader: StreamReader, shared: Arc<PrefetchShared>) {
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
            r = reader.next_many(256) => r,
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

    fn frame(text: &str) -> Vec<u8> {
        let body = format!("devl{text}");
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body.as_bytes());
        v
    }

    fn write_chunk(dir: &Path, name: &str, id: &str, flag: u8, payload: &[u8]) {
        let mut data = vec![flag];
        data.extend_from_slice(payload);
        std::fs::write(dir.join(format!("{name}-chnk_{id}.bin")), data).unwrap();
    }

    fn idx(d: &Path) -> Arc<ChunkIndex> {
        Arc::new(ChunkIndex::new(d.to_path_buf()))
    }

    fn ulid_at(i: u64) -> String {
        ulid::Ulid::from_parts(1_700_000_000_000 + i, 7).to_string()
    }

    #[test]
    fn decodes_frames_split_across_chunks() {
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut out = Vec::new();
        let mut both = frame("[1]");
        both.extend(frame("[\"two\"]"));
        let (a, b) = both.split_at(6);
        d.push(a, &mut out).unwrap();
        assert!(out.is_empty());
        d.push(b, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Text("[1]".into()), Item::Text("[\"two\"]".into())]
        );
    }

    #[test]
    fn legacy_newline_chunks_are_split_into_values() {
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut out = Vec::new();
        d.push(b"[1]\n[2]\n", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Text("[1]".into()), Item::Text("[2]".into())]
        );
    }

    #[test]
    fn unknown_and_encrypted_formats_are_errors() {
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut out = Vec::new();
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(b"xxxx[1]!");
        let e = d.push(&f, &mut out).unwrap_err();
        assert!(e
            .to_string()
            .contains("Unknown serialization format: \"xxxx\""));
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(b"encr1234");
        assert_eq!(
            d.push(&f, &mut out).unwrap_err().name(),
            "RuntimeDecryptionError"
        );
    }

    #[test]
    fn tail_index_and_done_from_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(
            ChunkIndex::new(d.to_path_buf())
                .stream_info("strm_A_user")
                .unwrap(),
            (-1, false)
        );
        write_chunk(d, "strm_A_user", &ulid_at(1), 0, &frame("[1]"));
        write_chunk(d, "strm_A_user", &ulid_at(2), 0, &frame("[2]"));
        write_chunk(d, "strm_A_user_bnM", &ulid_at(3), 0, &frame("[3]"));
        std::fs::write(
            d.join(format!("strm_A_user-chnk_{}.bin.tmp.X", ulid_at(4))),
            b"\0",
        )
        .unwrap();
        assert_eq!(
            ChunkIndex::new(d.to_path_buf())
                .stream_info("strm_A_user")
                .unwrap(),
            (1, false)
        );
        write_chunk(d, "strm_A_user", &ulid_at(5), 1, b"");
        assert_eq!(
            ChunkIndex::new(d.to_path_buf())
                .stream_info("strm_A_user")
                .unwrap(),
            (1, true)
        );
    }

    fn age_dir(d: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(d).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn cached_listing_is_revalidated_by_the_directory_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "s", &ulid_at(1), 0, &frame("[1]"));
        age_dir(d);
        let index = ChunkIndex::new(d.to_path_buf());
        assert_eq!(index.stream_info("s").unwrap(), (0, false));
        assert!(
            !index.tails.lock().unwrap().is_empty(),
            "an old directory is cached"
        );
        // A new chunk (by any writer) changes the directory's mtime: the cache is dropped.
        write_chunk(d, "s", &ulid_at(2), 0, &frame("[2]"));
        assert_eq!(index.stream_info("s").unwrap(), (1, false));
        assert!(
            index.tails.lock().unwrap().is_empty(),
            "a just-modified directory is not trusted"
        );
        write_chunk(d, "s", &ulid_at(3), 1, b"");
        assert_eq!(index.stream_info("s").unwrap(), (1, true));
    }

    #[test]
    fn listings_do_not_mix_streams_sharing_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "a", &ulid_at(2), 0, b"x");
        write_chunk(d, "a", &ulid_at(1), 0, b"x");
        write_chunk(d, "a_x", &ulid_at(3), 0, b"x");
        write_chunk(d, "ab", &ulid_at(4), 0, b"x");
        let a = list_chunk_files(d, "a").unwrap();
        assert_eq!(
            a,
            [
                format!("a-chnk_{}.bin", ulid_at(1)),
                format!("a-chnk_{}.bin", ulid_at(2))
            ]
        );
        assert_eq!(list_chunk_files(d, "a_x").unwrap().len(), 1);
        assert!(list_chunk_files(d, "zzz").unwrap().is_empty());
    }

    fn read_all(c: &mut StreamCursor) -> (Vec<Item>, bool) {
        let mut items = Vec::new();
        loop {
            let b = c.read_available(2).unwrap();
            let empty = b.items.is_empty();
            items.extend(b.items);
            if b.done || empty {
                return (items, b.done);
            }
        }
    }

    #[test]
    fn start_indexes_positive_negative_and_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..5 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame(&format!("[{i}]")));
        }
        write_chunk(d, "s", &ulid_at(9), 1, b"");
        let texts = |start: i64| {
            let mut c = StreamCursor::new(idx(d), "s", start, StreamMode::Objects).unwrap();
            let (items, done) = read_all(&mut c);
            assert!(done);
            items
                .into_iter()
                .map(|i| match i {
                    Item::Text(t) => t,
                    Item::Bytes(_) => unreachable!(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(0), ["[0]", "[1]", "[2]", "[3]", "[4]"]);
        assert_eq!(texts(3), ["[3]", "[4]"]);
        assert_eq!(texts(-2), ["[3]", "[4]"]);
        assert_eq!(texts(-50), ["[0]", "[1]", "[2]", "[3]", "[4]"]);
        assert!(texts(5).is_empty());
        assert!(texts(7).is_empty(), "past the close marker ends the stream");
    }

    #[test]
    fn late_chunks_with_smaller_ulids_are_still_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "s", &ulid_at(2), 0, &frame("[2]"));
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        assert_eq!(c.read_available(10).unwrap().items.len(), 1);
        // A parallel writer's earlier chunk lands after we listed.
        write_chunk(d, "s", &ulid_at(1), 0, &frame("[1]"));
        let b = c.read_available(10).unwrap();
        assert_eq!(b.items, vec![Item::Text("[1]".into())]);
        assert!(!b.done);
    }

    #[test]
    fn batches_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..100 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame("[0]"));
        }
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        assert_eq!(c.read_available(7).unwrap().items.len(), 7);
        assert_eq!(c.read_available(1000).unwrap().items.len(), 93);
    }

    #[tokio::test]
    async fn prefetch_reader_delivers_everything_in_order_and_bounds_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let chunks = root.join("streams/chunks");
        std::fs::create_dir_all(&chunks).unwrap();
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
        let world = Arc::new(LocalWorld::new(root).unwrap());
        let reader = StreamReader::open(&world, "strm_A_user", 0, StreamMode::Objects).unwrap();
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
    async fn closing_a_prefetch_reader_ends_a_pending_wait() {
        let dir = tempfile::tempdir().unwrap();
        let world = Arc::new(LocalWorld::new(dir.path()).unwrap());
        let reader = StreamReader::open(&world, "strm_B_user", 0, StreamMode::Objects).unwrap();
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

    #[test]
    fn byte_modes() {
        let mut raw = FrameDecoder::new(StreamMode::BytesRaw);
        let mut out = Vec::new();
        raw.push(b"\x00\x01abc", &mut out).unwrap();
        assert_eq!(out, vec![Item::Bytes(b"\x00\x01abc".to_vec())]);
        let mut framed = FrameDecoder::new(StreamMode::BytesFramed);
        let mut out = Vec::new();
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&2u32.to_be_bytes());
        framed.push(&data, &mut out).unwrap();
        framed.push(b"de", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Bytes(b"abc".to_vec()), Item::Bytes(b"de".to_vec())]
        );
    }
}
