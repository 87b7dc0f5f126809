//! Which chunk files a stream has: sorted listings cached per stream and revalidated by
//! the directory's mtime, and the tail index (`{ tailIndex, done }`).

use crate::dirscan::for_each_name;
use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// The flag byte of a close-marker file.
pub(crate) const EOF_FLAG: u8 = 1;

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

/// The flag byte of a chunk file (`None` if it vanished or is empty).
pub(crate) fn first_byte(path: &Path) -> Result<Option<u8>> {
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

/// The order key of a chunk file.
pub(crate) fn chunk_key(name: &str) -> u128 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::fixtures::{frame, ulid_at, write_chunk};

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
}
