//! Reading a stream from an index: which files were consumed, batches bounded in items
//! and bytes, and a live reader that waits on the change feed for writers.
//!
//! # Order
//!
//! Chunks are delivered in chunk (ULID) order, and a chunk is delivered only once every
//! chunk that sorts before it is known to be there. Writers publish a chunk whole, under
//! its name, by rename (world-local) or link (this package), and a writer that awaits each
//! write publishes chunk k before it even names chunk k+1. What the reader can rely on:
//!
//! - A directory listing is not a snapshot: a file published while it runs may be missed
//!   while a later one is seen. But every file published before a listing *starts* is in
//!   it. So a listing confirms everything up to the largest key of the listing before it
//!   (those files were published before it started, and so were their predecessors); a
//!   listing known to be a snapshot (the directory did not change while it ran) confirms
//!   itself.
//! - On Linux the change feed reports every name published in the directory after the
//!   watch started, in the order the kernel saw them: when chunk k+1's name arrives, the
//!   names of the chunks published before it arrived first, or were published before the
//!   watch started (and so are in any listing started after that). So once one listing
//!   started while the directory was watched, each name from the feed confirms itself.
//!   When the kernel (or our queue) dropped names, the reader lists again.
//! - A writer that does not sequence its writes (world-local's `writeToStreamMulti`
//!   writes a batch in parallel) may publish k+1 before k. Its temp files
//!   (`<chunk file>.tmp.<id>`) show a write in flight: chunks after an in-flight one are
//!   held back until it lands, or until its temp file is [`TEMP_STALE`] old (a crash leaves
//!   it behind). But such a writer may publish k+1 before it even created k's temp file;
//!   nothing on disk tells a reader about k then. A chunk that appears after a later one
//!   was delivered (that case, or two unrelated writers of one stream) is delivered when
//!   seen, never dropped.

use super::frames::{chunk_kind, decode_chunk_file, ChunkKind, DecodeError, Item, StreamMode};
use super::index::{
    chunk_flag, chunk_key, directory_in_place, is_a_directory, temp_chunk_key, temp_created_ms,
    ChunkIndex, Listing, EOF_FLAG,
};
use crate::dirscan::DirHandle;
use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::watch::{FileChange, StreamFileEvent, Subscription};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bound of chunk bytes one `next_many` call reads, so a slow consumer never makes
/// us hold more than this in memory.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A temp file older than this is taken for a crashed writer's leftover, not a write in
/// flight: it no longer holds back the chunks after it.
pub const TEMP_STALE: Duration = Duration::from_secs(5);

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

/// What the change feed told a reader since its last round.
#[derive(Debug, Default)]
pub struct FeedInput {
    /// Stream files created or removed, in the order the kernel reported them.
    pub names: Vec<StreamFileEvent>,
    /// The feed reports every name of the directory (taken before `overflows` was read).
    pub names_reported: bool,
    /// The feed's overflow count, read after the names were taken.
    pub overflows: u64,
    /// Names were dropped since the last round.
    pub lost: bool,
    /// List the directory this round even if the feed says nothing changed.
    pub list: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The synchronous part of a reader: which files are known and consumed, and how far the
/// known files are complete.
pub struct StreamCursor {
    index: Arc<ChunkIndex>,
    /// the chunk directory, opened on first read
    dir: Option<DirHandle>,
    name: String,
    /// Keys of the files consumed (delivered, skipped, or the close marker).
    consumed: HashSet<u128>,
    /// Chunk files seen (listed or reported) and not consumed yet, in chunk order.
    known: BTreeMap<u128, String>,
    /// Every chunk file with a key up to this one is known or consumed.
    complete_to: Option<u128>,
    /// The largest key of any listing so far (the next listing confirms up to it).
    listed_max: Option<u128>,
    /// Names from the feed confirm themselves: a listing started while the feed reported
    /// every name, and nothing was dropped since.
    names_confirm: bool,
    /// The largest key of the listing that made names trustworthy: files up to it may
    /// predate the watch (no name will come for them), so only a listing confirms them.
    validating_max: Option<u128>,
    overflows: u64,
    /// Temp files of chunks in flight, by chunk key, with their creation time (ms): from
    /// the last listing, and from the feed since.
    temps_listed: HashMap<u128, u64>,
    temps_reported: HashMap<u128, u64>,
    /// A listing must run before anything else is trusted.
    must_list: bool,
    /// Files still to skip to honour a positive start index beyond the current end.
    skip: u64,
    started: bool,
    start_index: i64,
    mode: StreamMode,
    done: bool,
    /// files to read in the next round (sized by the chunks seen so far)
    round: usize,
    /// Nothing more will be written (the stream's run ended): the stream ends once every
    /// chunk a listing started after that shows is delivered.
    writer_gone: bool,
    /// Listings a test hands out instead of the directory's.
    #[cfg(test)]
    fake_listings: std::collections::VecDeque<Listing>,
}

/// One batch of items.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    pub done: bool,
}

fn max_key(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
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
            known: BTreeMap::new(),
            complete_to: None,
            listed_max: None,
            names_confirm: false,
            validating_max: None,
            overflows: 0,
            temps_listed: HashMap::new(),
            temps_reported: HashMap::new(),
            must_list: true,
            skip: 0,
            started: false,
            start_index,
            mode,
            done: false,
            round: FIRST_ROUND,
            writer_gone: false,
            #[cfg(test)]
            fake_listings: std::collections::VecDeque::new(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether known chunks wait for a confirmation only another listing can give (then
    /// the caller should run another round at once rather than wait for a change).
    pub fn wants_listing(&self) -> bool {
        if self.done {
            return false;
        }
        let unconfirmed = |limit: Option<u128>| match (limit, self.complete_to) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(l), Some(c)) => l > c,
        };
        if self.names_confirm {
            // Later files come with their names; those of the validating listing may not.
            unconfirmed(self.validating_max)
        } else {
            unconfirmed(self.known.last_key_value().map(|(k, _)| *k))
        }
    }

    /// One listing: what it shows becomes known; it confirms what the listing before it
    /// showed (all of it when it is a snapshot).
    fn list(&mut self, names_reported: bool, overflows: u64) -> Result<()> {
        #[cfg(test)]
        let listing = match self.fake_listings.pop_front() {
            Some(l) => l,
            None => self.index.stream_files(&self.name)?,
        };
        #[cfg(not(test))]
        let listing = self.index.stream_files(&self.name)?;
        let Listing {
            names,
            temps,
            snapshot,
        } = listing;
        let mut max = None;
        for f in names.iter() {
            let key = chunk_key(f);
            max = max_key(max, Some(key));
            if !self.consumed.contains(&key) {
                self.known.entry(key).or_insert_with(|| f.clone());
            }
        }
        let confirmed = if snapshot { max } else { self.listed_max };
        self.complete_to = max_key(self.complete_to, confirmed);
        self.listed_max = max_key(self.listed_max, max);
        let seen_ms = now_ms();
        self.temps_listed = temps
            .iter()
            .map(|t| (temp_chunk_key(t), temp_created_ms(t).unwrap_or(seen_ms)))
            .collect();
        self.must_list = false;
        if names_reported && !self.names_confirm {
            self.validating_max = max;
        }
        self.names_confirm = names_reported;
        self.overflows = overflows;
        Ok(())
    }

    /// Takes in the names the feed reported.
    fn apply_names(&mut self, names: Vec<StreamFileEvent>) {
        let prefix = format!("{}-", self.name);
        for ev in names {
            // (The kernel reports single path components; anything else is not ours.)
            if !ev.name.starts_with(&prefix) || ev.name.contains(['/', '\0']) {
                continue;
            }
            if let Some(i) = ev.name.find(".tmp.") {
                let chunk = &ev.name[..i];
                if !(chunk.ends_with(".bin") || chunk.ends_with(".json")) {
                    continue;
                }
                let key = chunk_key(chunk);
                match ev.change {
                    FileChange::Appeared => {
                        let created = temp_created_ms(&ev.name).unwrap_or_else(now_ms);
                        self.temps_reported.insert(key, created);
                    }
                    // A write given up: its chunk will not come.
                    FileChange::Deleted => {
                        self.temps_reported.remove(&key);
                        self.temps_listed.remove(&key);
                    }
                    // Renamed to its chunk: in flight until the chunk's own name arrives
                    // (the reader may take the two names in different rounds).
                    FileChange::MovedAway | FileChange::Written => {}
                }
                continue;
            }
            if !(ev.name.ends_with(".bin") || ev.name.ends_with(".json"))
                || ev.change != FileChange::Appeared
            {
                continue;
            }
            let key = chunk_key(&ev.name);
            self.temps_reported.remove(&key);
            self.temps_listed.remove(&key);
            if !self.consumed.contains(&key) {
                self.known.entry(key).or_insert(ev.name);
            }
            if self.names_confirm {
                self.complete_to = max_key(self.complete_to, Some(key));
            }
        }
    }

    /// The largest key that may be delivered now: known complete up to there, and no
    /// write in flight before it.
    fn bound(&self) -> Option<u128> {
        let mut bound = self.complete_to?;
        let stale_before = now_ms().saturating_sub(TEMP_STALE.as_millis() as u64);
        for (key, created) in self.temps_listed.iter().chain(&self.temps_reported) {
            let landed = self.consumed.contains(key) || self.known.contains_key(key);
            if !landed && *created >= stale_before && *key <= bound {
                if *key == 0 {
                    return None;
                }
                bound = key - 1;
            }
        }
        Some(bound)
    }

    /// Applies the start index once the known files are complete up to somewhere. Files
    /// before the start are counted, not opened (as world-local skips them); only the last
    /// one is, to see whether it is the close marker.
    fn resolve_start(&mut self, bound: u128) -> Result<()> {
        let files: Vec<u128> = self.known.range(..=bound).map(|(k, _)| *k).collect();
        // A last file that cannot be classified is not a close marker: the reader reaches
        // it in order and reports it then.
        let closed = self
            .known
            .range(..=bound)
            .next_back()
            .is_some_and(|(_, last)| {
                matches!(chunk_flag(&self.index.dir().join(last)), Ok(Some(EOF_FLAG)))
            });
        let data = files.len() as u64 - u64::from(closed);
        let start = if self.start_index < 0 {
            (data as i64 + self.start_index).max(0) as u64
        } else {
            self.start_index as u64
        };
        if closed && start >= data {
            // Nothing left before the close marker.
            self.done = true;
            self.known.clear();
            return Ok(());
        }
        let skipped = start.min(data);
        for key in files.iter().take(skipped as usize) {
            self.known.remove(key);
            self.consumed.insert(*key);
        }
        self.skip = start - skipped;
        self.started = true;
        Ok(())
    }

    /// Reads whatever is available now, up to `max_items` items / `MAX_BATCH_BYTES`,
    /// listing the directory to find chunks (as a reader without a change feed does).
    /// An empty, not-done batch means "nothing new yet".
    pub fn read_available(&mut self, max_items: usize) -> Result<Batch> {
        self.read(
            max_items,
            FeedInput {
                list: true,
                ..FeedInput::default()
            },
        )
    }

    /// From now on nothing more will be written to the stream (its run is terminal): the
    /// reader ends, without a close marker, once it delivered every chunk published before
    /// this call. Every later round lists the directory; a listing started after this call
    /// holds every chunk published before it, so the stream ends when a round finds no
    /// listed chunk left to deliver and no chunk write in flight (a temp file younger than
    /// [`TEMP_STALE`]).
    pub fn end_when_drained(&mut self) {
        self.writer_gone = true;
    }

    /// A chunk's temp file (a write in flight, not a crashed writer's leftover) whose chunk
    /// has not landed.
    fn writes_in_flight(&self) -> bool {
        let stale_before = now_ms().saturating_sub(TEMP_STALE.as_millis() as u64);
        self.temps_listed
            .iter()
            .chain(&self.temps_reported)
            .any(|(key, created)| {
                *created >= stale_before
                    && !self.consumed.contains(key)
                    && !self.known.contains_key(key)
            })
    }

    /// One round: takes in what the feed reported (listing the directory when names
    /// cannot be trusted, were lost, or `feed.list` asks), then delivers the known chunks
    /// that are confirmed, in order. An empty, not-done batch means "nothing new yet";
    /// after [`end_when_drained`](Self::end_when_drained), an empty batch is the end.
    pub fn read(&mut self, max_items: usize, mut feed: FeedInput) -> Result<Batch> {
        let gone = self.writer_gone;
        if gone {
            feed.list = true;
        }
        let mut batch = self.read_round(max_items, feed)?;
        if gone
            && !batch.done
            && batch.items.is_empty()
            && self.known.is_empty()
            && !self.writes_in_flight()
        {
            self.done = true;
            self.known.clear();
            batch.done = true;
        }
        Ok(batch)
    }

    fn read_round(&mut self, max_items: usize, feed: FeedInput) -> Result<Batch> {
        if self.done {
            return Ok(Batch {
                items: Vec::new(),
                done: true,
            });
        }
        let FeedInput {
            names,
            names_reported,
            overflows,
            lost,
            list,
        } = feed;
        if lost || overflows != self.overflows || !names_reported {
            // Names may be missing: only a listing started from now on can tell.
            self.names_confirm = false;
            self.must_list = true;
        }
        let mut listings = 0;
        if self.must_list || list || !self.names_confirm {
            self.list(names_reported, overflows)?;
            listings += 1;
        }
        self.apply_names(names);
        loop {
            let bound = self.bound();
            if !self.started {
                match bound {
                    Some(b) => self.resolve_start(b)?,
                    None if listings < 2 && self.wants_listing() => {
                        self.list(names_reported, overflows)?;
                        listings += 1;
                        continue;
                    }
                    None => return Ok(Batch::default()),
                }
                if self.done {
                    return Ok(Batch {
                        items: Vec::new(),
                        done: true,
                    });
                }
            }
            let batch = self.deliver(max_items, self.bound())?;
            if !batch.items.is_empty() || batch.done || listings >= 2 || !self.wants_listing() {
                return Ok(batch);
            }
            // Chunks wait for a confirmation: the next listing gives it.
            self.list(names_reported, overflows)?;
            listings += 1;
        }
    }

    /// A chunk that cannot be read: the items of the chunks before it go out first (they
    /// are consumed), the error on the next call (the bad chunk stays where it is, so the
    /// error repeats: nothing is skipped past it).
    fn fail(&mut self, mut batch: Batch, e: Error) -> Result<Batch> {
        if batch.items.is_empty() {
            return Err(e);
        }
        batch.done = false;
        Ok(batch)
    }

    /// Reads and decodes the known chunks up to `bound`, in order.
    fn deliver(&mut self, max_items: usize, bound: Option<u128>) -> Result<Batch> {
        let mut batch = Batch::default();
        let Some(bound) = bound else {
            return Ok(batch);
        };
        let mut bytes_read = 0usize;
        'rounds: loop {
            let room = max_items.max(1).saturating_sub(batch.items.len());
            if room == 0 || bytes_read >= MAX_BATCH_BYTES {
                break;
            }
            let take = room.min(self.round);
            let names: Vec<(u128, String)> = self
                .known
                .range(..=bound)
                .take(take)
                .map(|(k, n)| (*k, n.clone()))
                .collect();
            if names.is_empty() {
                break;
            }
            if self.dir.is_none() {
                self.dir = Some(
                    DirHandle::open(self.index.dir())
                        .map_err(|e| Error::io(self.index.dir(), e))?,
                );
            }
            let Some(dir) = self.dir.as_ref() else {
                break;
            };
            let files: Vec<String> = names.iter().map(|(_, n)| n.clone()).collect();
            let contents = read_chunks(dir, &files);
            let mut round_bytes = 0usize;
            for ((key, name), data) in names.iter().zip(contents) {
                let path = self.index.dir().join(name);
                let data = match data {
                    Ok(Some(d)) => d,
                    // Vanished since it was listed (deleted by someone): nothing to read.
                    Ok(None) => {
                        self.known.remove(key);
                        self.consumed.insert(*key);
                        continue;
                    }
                    Err(e) => {
                        let e = if is_a_directory(&e) {
                            directory_in_place(&path)
                        } else {
                            Error::io(&path, e)
                        };
                        return self.fail(batch, e);
                    }
                };
                let corrupt = |e: DecodeError| match e {
                    DecodeError::Corrupt(why) => Error::corrupt(&path, why),
                    DecodeError::UnknownFormat(_) => Error::Runtime(e.message()),
                    DecodeError::Encrypted => Error::Decryption(e.message()),
                };
                if self.skip > 0 && chunk_kind(&data) == Ok(ChunkKind::Data) {
                    // Before the start index: counted, not decoded (as world-local).
                    self.known.remove(key);
                    self.consumed.insert(*key);
                    self.skip -= 1;
                    continue;
                }
                round_bytes += data.len();
                let before = batch.items.len();
                match decode_chunk_file(self.mode, &data, &mut batch.items) {
                    Ok(ChunkKind::Data) => {}
                    Ok(ChunkKind::Close) => {
                        self.done = true;
                        self.known.clear();
                        self.consumed.insert(*key);
                        break 'rounds;
                    }
                    Err(e) => {
                        batch.items.truncate(before);
                        return self.fail(batch, corrupt(e));
                    }
                }
                self.known.remove(key);
                self.consumed.insert(*key);
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

/// With names from the feed, one quiet backstop interval in this many lists the
/// directory (a lost notification, or a watch that stopped working).
const BACKSTOP_LIST_EVERY: u32 = 10;

/// How many live readers may read their files at once (each read runs on a blocking
/// thread): waiting readers cost no thread, reading ones at most this many.
const READS_AT_ONCE: usize = 4;
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS_AT_ONCE);

/// A live reader: batches of items, waiting on the change feed when nothing is new.
/// Resolves with the time the stream's writer ended (its run became terminal), or `None`
/// when that cannot be known (the reader then ends only at a close marker).
pub type WriterEnd =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<SystemTime>> + Send>>;

/// How long after its writer ended a stream still takes chunks before a reader may end it:
/// the official runtime flushes a step's stream writes in the background (`waitUntil`)
/// after it records `step_completed`, so the last chunks of a run can land just after the
/// run ended. A reader that starts later ends as soon as it is drained.
pub const LATE_WRITES: Duration = Duration::from_millis(500);

/// What woke a reader waiting for writers.
enum Woke {
    /// the change feed (`notified`) or the backstop interval; whether the directory is watched
    Change(bool, bool),
    /// the stream's writer ended at that time (`None`: cannot be followed)
    WriterEnd(Option<SystemTime>),
    /// [`LATE_WRITES`] after the writer's end
    LateWritesOver,
}

/// `LATE_WRITES` after `ended`, on the runtime's clock (now if that is past).
fn late_writes_over(ended: SystemTime) -> tokio::time::Instant {
    let over = ended + LATE_WRITES;
    let left = over
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left
}

/// Waits for `at`, or for ever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub struct StreamReader {
    cursor: Option<StreamCursor>,
    sub: Subscription,
    /// List the directory in the next round.
    list: bool,
    quiet_polls: u32,
    writer_end: Option<WriterEnd>,
    /// When the stream may end once drained (its writer ended `LATE_WRITES` before).
    end_at: Option<tokio::time::Instant>,
}

impl StreamReader {
    /// A reader of `name` from `start_index` over `index`, woken by `sub` (the stream's
    /// change-feed subscription, made before this call). The local World's
    /// `StreamReader::open` builds one.
    pub fn new(
        index: Arc<ChunkIndex>,
        sub: Subscription,
        name: &str,
        start_index: i64,
        mode: StreamMode,
    ) -> Result<StreamReader> {
        let cursor = StreamCursor::new(index, name, start_index, mode)?;
        Ok(StreamReader {
            cursor: Some(cursor),
            sub,
            list: false,
            quiet_polls: 0,
            writer_end: None,
            end_at: None,
        })
    }

    /// Ends the stream, close marker or not, once `end` resolved to the time its writer
    /// ended, [`LATE_WRITES`] passed since, and every chunk published by then is delivered.
    /// `end` is first polled when the reader has nothing to deliver (a stream that is read
    /// to its close marker never polls it).
    pub fn end_with(mut self, end: WriterEnd) -> StreamReader {
        self.writer_end = Some(end);
        self
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
            // The order matters: whether names are reported, then the names, then the
            // overflow count (a name taken after an overflow comes with the new count).
            let names_reported = self.sub.names_reported();
            let (names, lost) = self.sub.take_stream_names();
            let feed = FeedInput {
                names,
                names_reported,
                overflows: self.sub.overflow_count(),
                lost,
                list: std::mem::take(&mut self.list),
            };
            // At most READS_AT_ONCE readers read at a time: thousands of live readers
            // waking together (the backstop) queue here instead of each taking a thread.
            let permit = READS
                .acquire()
                .await
                .map_err(|e| Error::Plain(format!("stream reader task failed: {e}")))?;
            let (cursor, res) = tokio::task::spawn_blocking(move || {
                let r = cursor.read(max_items, feed);
                (cursor, r)
            })
            .await
            .map_err(|e| Error::Plain(format!("stream reader task failed: {e}")))?;
            drop(permit);
            let wants_listing = cursor.wants_listing();
            self.cursor = Some(cursor);
            let batch = res?;
            if !batch.items.is_empty() || batch.done {
                return Ok(batch);
            }
            if wants_listing {
                self.list = true;
                continue;
            }
            let woke = if self.writer_end.is_none() && self.end_at.is_none() {
                let (n, w) = self.sub.wait_change().await;
                Woke::Change(n, w)
            } else {
                let end_at = self.end_at;
                let writer_end = self.writer_end.as_mut();
                tokio::select! {
                    (n, w) = self.sub.wait_change() => Woke::Change(n, w),
                    ended = async {
                        match writer_end {
                            Some(end) => end.await,
                            None => std::future::pending().await,
                        }
                    } => Woke::WriterEnd(ended),
                    () = until(end_at) => Woke::LateWritesOver,
                }
            };
            let (notified, watched) = match woke {
                Woke::Change(n, w) => (n, w),
                Woke::WriterEnd(ended) => {
                    self.writer_end = None;
                    self.end_at = ended.map(late_writes_over);
                    continue;
                }
                Woke::LateWritesOver => {
                    self.end_at = None;
                    if let Some(c) = self.cursor.as_mut() {
                        c.end_when_drained();
                    }
                    self.list = true;
                    continue;
                }
            };
            if notified {
                self.quiet_polls = 0;
            } else {
                self.quiet_polls += 1;
                if !watched || self.quiet_polls.is_multiple_of(BACKSTOP_LIST_EVERY) {
                    self.list = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::fixtures::{frame, ulid_at, write_chunk};
    use crate::stream::index::DATA_FLAG;
    use std::path::Path;

    fn idx(d: &Path) -> Arc<ChunkIndex> {
        Arc::new(ChunkIndex::new(d.to_path_buf()))
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

    fn texts(items: Vec<Item>) -> Vec<String> {
        items
            .into_iter()
            .map(|i| match i {
                Item::Text(t) => t,
                Item::Bytes(_) => unreachable!(),
            })
            .collect()
    }

    fn chunk_name(i: u64) -> String {
        format!("s-chnk_{}.bin", ulid_at(i))
    }

    fn listing(ids: &[u64], snapshot: bool) -> Listing {
        Listing {
            names: Arc::new(ids.iter().map(|i| chunk_name(*i)).collect()),
            temps: Arc::new(Vec::new()),
            snapshot,
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
            texts(items)
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

    /// The heart of the ordering: a listing that missed chunk 2 (published while it ran)
    /// but saw chunk 3 must not make us deliver 3 before 2.
    #[test]
    fn a_listing_that_missed_a_chunk_delivers_nothing_past_what_it_can_confirm() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 1..=4 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame(&format!("[{i}]")));
        }
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        // L0 saw 1 and 3 (2 was published while it ran); L1 (started after L0 ended)
        // confirms up to 3 and sees 2; 4 is not confirmed by anything yet.
        c.fake_listings.push_back(listing(&[1, 3], false));
        c.fake_listings.push_back(listing(&[1, 2, 3, 4], false));
        let b = c.read_available(100).unwrap();
        assert_eq!(texts(b.items), ["[1]", "[2]", "[3]"]);
        assert!(c.wants_listing(), "4 waits for the next listing");
        // The next listing (the real directory) confirms 4.
        let b = c.read_available(100).unwrap();
        assert_eq!(texts(b.items), ["[4]"]);
        assert!(!c.wants_listing());
    }

    #[test]
    fn a_snapshot_listing_confirms_itself() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 1..=3 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame(&format!("[{i}]")));
        }
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        c.fake_listings.push_back(listing(&[1, 2, 3], true));
        let b = c.read_available(100).unwrap();
        assert_eq!(texts(b.items), ["[1]", "[2]", "[3]"]);
        assert!(c.fake_listings.is_empty() && !c.wants_listing());
    }

    fn feed(names: &[(&str, bool)]) -> FeedInput {
        FeedInput {
            names: names
                .iter()
                .map(|(n, gone)| StreamFileEvent {
                    name: n.to_string(),
                    change: if *gone {
                        FileChange::MovedAway
                    } else {
                        FileChange::Appeared
                    },
                })
                .collect(),
            names_reported: true,
            ..FeedInput::default()
        }
    }

    /// With names from the feed: the first listing is confirmed by a second one (its
    /// files may predate the watch), later names confirm themselves, and a name that
    /// arrives before its predecessor's is held back... only by a temp file in flight.
    #[test]
    fn names_from_the_feed_confirm_themselves_after_one_confirmed_listing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 1..=6 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame(&format!("[{i}]")));
        }
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        c.fake_listings.push_back(listing(&[1, 3], false));
        c.fake_listings.push_back(listing(&[1, 2, 3, 4], false));
        let b = c.read(100, feed(&[])).unwrap();
        assert_eq!(texts(b.items), ["[1]", "[2]", "[3]"]);
        assert!(
            !c.wants_listing(),
            "4 was published after the watch started: its name will come"
        );
        // No listing now: the names say 4 and 5 landed.
        let b = c
            .read(
                100,
                feed(&[(&chunk_name(4), false), (&chunk_name(5), false)]),
            )
            .unwrap();
        assert_eq!(texts(b.items), ["[4]", "[5]"]);
        assert!(c.fake_listings.is_empty());
        // 7's temp file is in flight and 8 landed first (a parallel writer): 8 waits.
        write_chunk(d, "s", &ulid_at(7), 0, &frame("[7]"));
        write_chunk(d, "s", &ulid_at(8), 0, &frame("[8]"));
        let temp7 = format!("{}.tmp.{}", chunk_name(7), ulid::Ulid::new());
        let b = c
            .read(
                100,
                feed(&[
                    (&chunk_name(6), false),
                    (&temp7, false),
                    (&chunk_name(8), false),
                ]),
            )
            .unwrap();
        assert_eq!(texts(b.items), ["[6]"]);
        // The rename is reported as two names; a round may take only the first.
        let b = c.read(100, feed(&[(&temp7, true)])).unwrap();
        assert!(b.items.is_empty(), "7 is still on its way");
        let b = c.read(100, feed(&[(&chunk_name(7), false)])).unwrap();
        assert_eq!(texts(b.items), ["[7]", "[8]"]);
        // A temp file deleted (a write given up) no longer holds anything back.
        write_chunk(d, "s", &ulid_at(10), 0, &frame("[10]"));
        let temp9 = format!("{}.tmp.{}", chunk_name(9), ulid::Ulid::new());
        let b = c
            .read(100, feed(&[(&temp9, false), (&chunk_name(10), false)]))
            .unwrap();
        assert!(b.items.is_empty(), "10 waits for 9");
        let mut input = feed(&[]);
        input.names.push(StreamFileEvent {
            name: temp9,
            change: FileChange::Deleted,
        });
        let b = c.read(100, input).unwrap();
        assert_eq!(texts(b.items), ["[10]"]);
    }

    #[test]
    fn a_stale_temp_file_does_not_hold_the_stream_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "s", &ulid_at(2), 0, &frame("[2]"));
        let old = ulid::Ulid::from_parts(1_000, 1);
        let fresh = ulid::Ulid::new();
        for (temp_id, delivered) in [(fresh, false), (old, true)] {
            let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
            c.fake_listings.push_back(Listing {
                names: Arc::new(vec![chunk_name(2)]),
                temps: Arc::new(vec![format!("{}.tmp.{temp_id}", chunk_name(1))]),
                snapshot: true,
            });
            let b = c.read_available(10).unwrap();
            assert_eq!(!b.items.is_empty(), delivered, "temp {temp_id}");
        }
    }

    #[test]
    fn lost_names_or_an_overflow_make_the_reader_list_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "s", &ulid_at(1), 0, &frame("[1]"));
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        c.fake_listings.push_back(listing(&[1], true));
        assert_eq!(c.read(10, feed(&[])).unwrap().items.len(), 1);
        write_chunk(d, "s", &ulid_at(2), 0, &frame("[2]"));
        write_chunk(d, "s", &ulid_at(3), 0, &frame("[3]"));
        // 2's name was dropped (published before the drop, so before any listing that
        // starts now); 3's arrived. The reader lists, and 2 goes out before 3.
        let mut input = feed(&[(&chunk_name(3), false)]);
        input.lost = true;
        c.fake_listings.push_back(listing(&[1, 2, 3], false));
        let b = c.read(10, input).unwrap();
        assert_eq!(texts(b.items), ["[2]", "[3]"]);
        assert!(c.fake_listings.is_empty(), "it listed");
        // The same for a kernel overflow.
        write_chunk(d, "s", &ulid_at(4), 0, &frame("[4]"));
        write_chunk(d, "s", &ulid_at(5), 0, &frame("[5]"));
        let mut input = feed(&[(&chunk_name(5), false)]);
        input.overflows = 1;
        c.fake_listings.push_back(listing(&[1, 2, 3, 4, 5], false));
        let b = c.read(10, input).unwrap();
        assert_eq!(texts(b.items), ["[4]", "[5]"]);
        assert!(c.fake_listings.is_empty(), "it listed");
        // Names alone (nothing lost): no listing.
        write_chunk(d, "s", &ulid_at(6), 0, &frame("[6]"));
        c.fake_listings.push_back(listing(&[], false));
        let mut input = feed(&[(&chunk_name(6), false)]);
        input.overflows = 1;
        let b = c.read(10, input).unwrap();
        assert_eq!(texts(b.items), ["[6]"]);
        assert_eq!(c.fake_listings.len(), 1, "it did not list");
    }

    #[test]
    fn any_flag_but_one_is_data_as_world_local_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "s", &ulid_at(1), 7, &frame("[1]"));
        write_chunk(d, "s", &ulid_at(2), 1, b"");
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        let (items, done) = read_all(&mut c);
        assert_eq!(texts(items), ["[1]"]);
        assert!(done);
        assert_eq!(idx(d).stream_info("s").unwrap(), (0, true));
    }

    fn corrupt_path(e: &Error) -> Option<String> {
        match e {
            Error::CorruptFile { path, .. } => Some(path.display().to_string()),
            _ => None,
        }
    }

    #[test]
    fn corrupt_chunk_files_are_typed_errors_naming_the_file() {
        type Corrupt = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Corrupt)> = vec![
            (
                "empty",
                Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
            ),
            (
                "truncated",
                Box::new(|p: &Path| {
                    let mut data = vec![0u8];
                    data.extend_from_slice(&frame("[\"a long value\"]")[..9]);
                    std::fs::write(p, data).unwrap()
                }),
            ),
            (
                "0xFFFFFFFF prefix",
                Box::new(|p: &Path| std::fs::write(p, b"\0\xFF\xFF\xFF\xFFdevl[1]").unwrap()),
            ),
            (
                "garbage",
                Box::new(|p: &Path| std::fs::write(p, b"\0\x01\x02not json").unwrap()),
            ),
            (
                "close marker with more bytes",
                Box::new(|p: &Path| std::fs::write(p, b"\x01[1]").unwrap()),
            ),
            (
                "directory",
                Box::new(|p: &Path| std::fs::create_dir(p).unwrap()),
            ),
        ];
        for ((what, corrupt), last) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
            let what = format!("{what}{}", if last { " (last)" } else { "" });
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            write_chunk(d, "s", &ulid_at(1), 0, &frame("[1]"));
            let bad = d.join(chunk_name(2));
            corrupt(&bad);
            if !last {
                write_chunk(d, "s", &ulid_at(3), 0, &frame("[3]"));
            }
            // From the start, or (last) the last two chunks: the same outcome.
            let start = if last { -2 } else { 0 };
            let mut c = StreamCursor::new(idx(d), "s", start, StreamMode::Objects).unwrap();
            // The chunk before the bad one is delivered, then the error names the file.
            let b = c.read_available(10).unwrap();
            assert_eq!(texts(b.items), ["[1]"], "{what}");
            let e = c.read_available(10).unwrap_err();
            assert_eq!(
                corrupt_path(&e).as_deref(),
                Some(bad.display().to_string().as_str()),
                "{what}: {e}"
            );
            assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"), "{what}");
            // It stays an error (nothing is skipped past it).
            assert!(c.read_available(10).is_err(), "{what}");
        }
    }

    /// A writer publishing chunks one after the other as world-local does (temp file,
    /// then rename), in a directory big enough that a listing takes many `getdents` calls.
    fn sequential_writer(d: &Path, name: &str, n: u64) -> std::thread::JoinHandle<()> {
        let d = d.to_path_buf();
        let name = name.to_string();
        std::thread::spawn(move || {
            for i in 0..=n {
                let id = crate::ids::monotonic_ulid();
                let path = d.join(format!("{name}-chnk_{id}.bin"));
                let tmp = d.join(format!("{name}-chnk_{id}.bin.tmp.{}", ulid::Ulid::new()));
                let data = if i == n {
                    vec![EOF_FLAG]
                } else {
                    let mut v = vec![DATA_FLAG];
                    v.extend(frame(&format!("[{i}]")));
                    v
                };
                std::fs::write(&tmp, data).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
        })
    }

    fn filler(d: &Path, files: u64) {
        for i in 0..files {
            write_chunk(
                d,
                "strm_01ARZ3NDEKTSV4RRFFQ69G5FAV_user_ZmlsbGVy",
                &ulid_at(i),
                0,
                b"",
            );
        }
    }

    /// Positions holding a smaller value than the one before, and positions not holding
    /// their own index.
    fn audit(values: &[String]) -> (usize, usize) {
        let nums: Vec<u64> = values
            .iter()
            .map(|t| t.trim_matches(|c| c == '[' || c == ']').parse().unwrap())
            .collect();
        let inversions = nums.windows(2).filter(|w| w[1] < w[0]).count();
        let wrong = nums
            .iter()
            .enumerate()
            .filter(|(i, v)| *i as u64 != **v)
            .count();
        (inversions, wrong)
    }

    const LIVE_CHUNKS: u64 = 6_000;

    #[test]
    fn live_reads_by_listing_alone_are_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        filler(d, 20_000);
        let writer = sequential_writer(d, "s", LIVE_CHUNKS);
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        let mut got = Vec::new();
        let started = std::time::Instant::now();
        loop {
            let b = c.read_available(10_000).unwrap();
            got.extend(texts(b.items));
            if b.done {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "hang guard");
        }
        writer.join().unwrap();
        assert_eq!(got.len() as u64, LIVE_CHUNKS);
        assert_eq!(audit(&got), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_reads_with_names_from_the_feed_are_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let d = root.join("streams").join("chunks");
        std::fs::create_dir_all(&d).unwrap();
        filler(&d, 20_000);
        let feed = crate::world::watch::ChangeFeed::new(root);
        let sub = feed.subscribe(crate::world::watch::Topic::Stream, "s");
        assert!(sub.names_reported(), "inotify watches the chunk directory");
        let mut reader = StreamReader::new(idx(&d), sub, "s", 0, StreamMode::Objects).unwrap();
        let writer = sequential_writer(&d, "s", LIVE_CHUNKS);
        let mut got = Vec::new();
        let read = async {
            loop {
                let b = reader.next_many(1000).await.unwrap();
                got.extend(texts(b.items));
                if b.done {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("hang guard");
        writer.join().unwrap();
        assert_eq!(got.len() as u64, LIVE_CHUNKS);
        assert_eq!(audit(&got), (0, 0));
    }

    #[test]
    fn a_stream_whose_writer_is_gone_ends_once_every_listed_chunk_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 1..=3 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame(&format!("[{i}]")));
        }
        let mut c = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        let (items, done) = read_all(&mut c);
        assert_eq!(texts(items), ["[1]", "[2]", "[3]"]);
        assert!(!done, "no close marker: still open");
        write_chunk(d, "s", &ulid_at(4), 0, &frame("[4]"));
        c.end_when_drained();
        // A listing that cannot confirm its last chunk yet does not end the stream before it
        // (a listing started after the end holds every chunk published before it).
        c.fake_listings.push_back(listing(&[1, 2, 3, 4], false));
        let b = c.read_available(100).unwrap();
        assert_eq!(texts(b.items), ["[4]"]);
        assert!(!b.done);
        let b = c.read_available(100).unwrap();
        assert!(b.items.is_empty() && b.done, "drained: the end");
        assert!(c.is_done());
    }

    #[test]
    fn a_gone_writer_ends_an_empty_stream_and_a_start_index_past_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut empty = StreamCursor::new(idx(d), "s", 0, StreamMode::Objects).unwrap();
        assert!(!empty.read_available(10).unwrap().done);
        empty.end_when_drained();
        assert!(empty.read_available(10).unwrap().done);
        write_chunk(d, "s", &ulid_at(1), 0, &frame("[1]"));
        let mut past = StreamCursor::new(idx(d), "s", 5, StreamMode::Objects).unwrap();
        past.end_when_drained();
        let b = past.read_available(10).unwrap();
        assert!(b.items.is_empty() && b.done);
        let mut last = StreamCursor::new(idx(d), "s", -1, StreamMode::Objects).unwrap();
        last.end_when_drained();
        let (items, done) = read_all(&mut last);
        assert_eq!(texts(items), ["[1]"]);
        assert!(done);
    }

    #[tokio::test]
    async fn a_live_reader_ends_once_its_writer_ended_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let d = root.join("streams").join("chunks");
        std::fs::create_dir_all(&d).unwrap();
        let feed = crate::world::watch::ChangeFeed::new(root);
        let open = |end: tokio::sync::oneshot::Receiver<Option<SystemTime>>| {
            let sub = feed.subscribe(crate::world::watch::Topic::Stream, "s");
            StreamReader::new(idx(&d), sub, "s", 0, StreamMode::Objects)
                .unwrap()
                .end_with(Box::pin(async move { end.await.ok().flatten() }))
        };
        write_chunk(&d, "s", &ulid_at(1), 0, &frame("[1]"));
        let (gone, end) = tokio::sync::oneshot::channel();
        let mut reader = open(end);
        let b = reader.next_many(10).await.unwrap();
        assert_eq!(texts(b.items), ["[1]"]);
        assert!(!b.done);
        // The last chunk lands, then the writer is gone (long enough ago for late writes):
        // the chunk is delivered, then the end.
        write_chunk(&d, "s", &ulid_at(2), 0, &frame("[2]"));
        gone.send(Some(UNIX_EPOCH)).unwrap();
        let mut got = Vec::new();
        let done = loop {
            let b = tokio::time::timeout(Duration::from_secs(60), reader.next_many(10))
                .await
                .expect("hang guard")
                .unwrap();
            got.extend(texts(b.items));
            if b.done {
                break true;
            }
        };
        assert!(done);
        assert_eq!(got, ["[2]"]);

        // `None` (the run cannot be followed): the close marker still ends it.
        let (unknown, end) = tokio::sync::oneshot::channel();
        let mut reader = open(end);
        unknown.send(None).unwrap();
        let b = reader.next_many(10).await.unwrap();
        assert_eq!(texts(b.items), ["[1]", "[2]"]);
        assert!(!b.done);
        write_chunk(&d, "s", &ulid_at(3), 1, b"");
        let b = tokio::time::timeout(Duration::from_secs(60), reader.next_many(10))
            .await
            .expect("hang guard")
            .unwrap();
        assert!(b.items.is_empty() && b.done);
    }

    #[tokio::test]
    async fn a_chunk_write_in_flight_when_the_writer_ended_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let d = root.join("streams").join("chunks");
        std::fs::create_dir_all(&d).unwrap();
        let feed = crate::world::watch::ChangeFeed::new(root);
        write_chunk(&d, "s", &ulid_at(1), 0, &frame("[1]"));
        // A writer's temp file for chunk 2 (world-local: temp file, then rename).
        let temp = d.join(format!("{}.tmp.{}", chunk_name(2), ulid::Ulid::new()));
        let mut data = vec![DATA_FLAG];
        data.extend_from_slice(&frame("[2]"));
        std::fs::write(&temp, data).unwrap();
        let sub = feed.subscribe(crate::world::watch::Topic::Stream, "s");
        let mut reader = StreamReader::new(idx(&d), sub, "s", 0, StreamMode::Objects)
            .unwrap()
            .end_with(Box::pin(async { Some(UNIX_EPOCH) }));
        let b = reader.next_many(10).await.unwrap();
        assert_eq!(texts(b.items), ["[1]"]);
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let b = reader.next_many(10).await.unwrap();
                got.extend(texts(b.items));
                if b.done {
                    return got;
                }
            }
        });
        // The write lands after the reader learnt that the writer ended: still delivered.
        tokio::task::yield_now().await;
        std::fs::rename(&temp, d.join(chunk_name(2))).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .expect("hang guard")
            .unwrap();
        assert_eq!(got, ["[2]"]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever names the feed reports (foreign, malformed, temp or not), a round never
        /// panics and never delivers a file that is not there.
        #[test]
        fn any_names_from_the_feed_are_handled(
            names in proptest::collection::vec(("s-(chnk_)?\\PC{0,40}(\\.bin|\\.json|\\.tmp\\.\\PC{0,30})?", 0u8..3), 0..12)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut c = StreamCursor::new(idx(dir.path()), "s", 0, StreamMode::Objects).unwrap();
            let mut input = feed(&[]);
            input.names = names
                .into_iter()
                .map(|(name, change)| StreamFileEvent {
                    name,
                    change: match change {
                        0 => FileChange::Appeared,
                        1 => FileChange::MovedAway,
                        _ => FileChange::Deleted,
                    },
                })
                .collect();
            let b = c.read(10, input).unwrap();
            proptest::prop_assert!(b.items.is_empty() && !b.done);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A directory of arbitrary chunk files (any bytes, some empty, some directories,
        /// temp files): reading to the end and the tail index give values or typed
        /// errors, never a panic; the reader never yields more values than there are
        /// chunk files.
        #[test]
        fn arbitrary_chunk_files_read_or_fail_typed(
            files in proptest::collection::vec((0u64..40, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24), 0u8..8), 0..12),
            start in -5i64..5,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut chunk_files = 0usize;
            for (id, bytes, kind) in files {
                let name = chunk_name(id);
                let path = d.join(&name);
                if path.exists() {
                    continue;
                }
                match kind {
                    0 => std::fs::create_dir(&path).unwrap(),
                    1 => std::fs::write(d.join(format!("{name}.tmp.{}", ulid::Ulid::new())), &bytes).unwrap(),
                    2 => std::fs::write(&path, frame(&String::from_utf8_lossy(&bytes))).unwrap(),
                    _ => std::fs::write(&path, &bytes).unwrap(),
                }
                if kind != 1 {
                    chunk_files += 1;
                }
            }
            let _ = idx(d).stream_info("s");
            for mode in [StreamMode::Objects, StreamMode::BytesRaw, StreamMode::BytesFramed] {
                let mut c = StreamCursor::new(idx(d), "s", start, mode).unwrap();
                let mut items = 0usize;
                for _ in 0..(chunk_files + 4) {
                    match c.read_available(7) {
                        Ok(b) => {
                            items += b.items.len();
                            if b.done || b.items.is_empty() {
                                break;
                            }
                        }
                        Err(e) => {
                            proptest::prop_assert!(matches!(
                                e,
                                Error::CorruptFile { .. } | Error::Runtime(_) | Error::Decryption(_) | Error::Io { .. }
                            ), "{e:?}");
                            break;
                        }
                    }
                }
                if mode != StreamMode::Objects {
                    proptest::prop_assert!(items <= chunk_files * 6);
                }
            }
        }
    }
}
