//! Reading a stream from an index: which files were consumed, batches bounded in items
//! and bytes, and a live reader that waits on the change feed for writers.

use super::frames::{FrameDecoder, Item, StreamMode};
use super::index::{chunk_key, first_byte, ChunkIndex, EOF_FLAG};
use crate::dirscan::DirHandle;
use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::watch::Subscription;
use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::Arc;

/// Upper bound of chunk bytes one `next_many` call reads, so a slow consumer never makes
/// us hold more than this in memory.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

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
    /// A reader of `name` from `start_index` over `index`, woken by `sub` (the stream's
    /// change-feed subscription). The local World's `StreamReader::open` builds one.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::fixtures::{frame, ulid_at, write_chunk};
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
}
