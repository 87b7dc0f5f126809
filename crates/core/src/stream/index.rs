//! Which chunk files a stream has: sorted listings cached per stream and revalidated by
//! the directory's mtime, and the tail index (`{ tailIndex, done }`).
//!
//! A directory listing is not a snapshot: `getdents` returns a big directory in several
//! calls, so a file published while the listing runs may be missed while a later one is
//! seen. A listing therefore says whether it is known to be a snapshot (the directory did
//! not change while it ran), and readers confirm what it shows with the next listing (see
//! `cursor`).

use super::frames::{chunk_kind, ChunkKind};
use crate::dirscan::for_each_name;
use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// The flag byte of a data chunk file.
pub(crate) const DATA_FLAG: u8 = 0;
/// The flag byte of a close-marker file.
pub(crate) const EOF_FLAG: u8 = 1;

/// Whether `f` (a name in the chunk directory) is a published chunk file of the stream
/// whose names start with `prefix`: world-local lists `.bin` files (tagged ones too) and
/// legacy `.json` ones; temp files end in `.tmp.<ULID>`, so the extension test excludes them.
fn is_chunk_file(f: &str, prefix: &str) -> bool {
    f.starts_with(prefix) && (f.ends_with(".bin") || f.ends_with(".json"))
}

/// Whether `f` is a temp file of one of the stream's chunks (a write in flight, or one a
/// crash left behind): `<chunk file>.tmp.<id>`.
fn is_chunk_temp(f: &str, prefix: &str) -> bool {
    f.starts_with(prefix)
        && f.find(".tmp.").is_some_and(|i| {
            let chunk = &f[..i];
            chunk.ends_with(".bin") || chunk.ends_with(".json")
        })
}

/// Sorted chunk file names of one stream (temp files excluded), from a fresh listing.
pub fn list_chunk_files(chunks_dir: &Path, name: &str) -> Result<Vec<String>> {
    assert_safe_entity_id("streamName", name)?;
    Ok(scan_stream(chunks_dir, name)?.0)
}

/// One pass over the directory keeping only this stream's chunk files, sorted by chunk
/// ULID (= file name order, since they share the `<name>-` prefix), and its temp files.
fn scan_stream(chunks_dir: &Path, name: &str) -> Result<(Vec<String>, Vec<String>)> {
    let prefix = format!("{name}-");
    let mut files: Vec<(u128, String)> = Vec::new();
    let mut temps: Vec<String> = Vec::new();
    for_each_name(chunks_dir, |f| {
        if is_chunk_file(f, &prefix) {
            files.push((chunk_key(f), f.to_string()));
        } else if is_chunk_temp(f, &prefix) {
            temps.push(f.to_string());
        }
    })
    .map_err(|e| Error::io(chunks_dir, e))?;
    files.sort_unstable();
    Ok((files.into_iter().map(|(_, f)| f).collect(), temps))
}

/// Number of this stream's chunk files and the last one (by chunk order), in one pass
/// with no sorting: what the tail index needs.
fn scan_tail(chunks_dir: &Path, name: &str) -> Result<(usize, Option<String>)> {
    let prefix = format!("{name}-");
    let mut count = 0usize;
    let mut last: Option<(u128, String)> = None;
    for_each_name(chunks_dir, |f| {
        if is_chunk_file(f, &prefix) {
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

/// Whether an I/O error says the path is a directory.
pub(crate) fn is_a_directory(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::IsADirectory || e.raw_os_error() == Some(libc::EISDIR)
}

/// The error for a chunk "file" that is a directory.
pub(crate) fn directory_in_place(path: &Path) -> Error {
    Error::corrupt(path, "a directory where a stream chunk file should be")
}

/// The kind of a chunk file, as its data flag or close-marker flag (`None` if it vanished).
/// Empty files, directories and close markers with more bytes are corrupt.
pub(crate) fn chunk_flag(path: &Path) -> Result<Option<u8>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if is_a_directory(&e) => return Err(directory_in_place(path)),
        Err(e) => return Err(Error::io(path, e)),
    };
    // Two bytes: the flag, and whether anything follows a close marker's. (Chunk files
    // are published whole; a short read of a regular file means its end.)
    let mut b = [0u8; 2];
    let n = match f.read(&mut b) {
        Ok(n) => n,
        Err(e) if is_a_directory(&e) => return Err(directory_in_place(path)),
        Err(e) => return Err(Error::io(path, e)),
    };
    match chunk_kind(&b[..n]) {
        Ok(ChunkKind::Data) => Ok(Some(DATA_FLAG)),
        Ok(ChunkKind::Close) => Ok(Some(EOF_FLAG)),
        Err(e) => Err(Error::corrupt(path, e.message())),
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
    temps: Arc<Vec<String>>,
}

/// One stream's chunk files as one listing saw them.
#[derive(Clone)]
pub struct Listing {
    /// Chunk file names in chunk order.
    pub names: Arc<Vec<String>>,
    /// The stream's temp files (`<chunk file>.tmp.<id>`): writes in flight, or leftovers.
    pub temps: Arc<Vec<String>>,
    /// Nothing was added to or removed from the directory while it was listed, so every
    /// chunk file published before the listing ended is in `names`.
    pub snapshot: bool,
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

/// Whether a listing taken at `started` of a directory last modified at `mtime` (and
/// still at `mtime` after the listing: `after`) was a snapshot, which can be trusted until
/// the mtime changes.
fn trusted(mtime: SystemTime, started: SystemTime, after: Option<SystemTime>) -> bool {
    after == Some(mtime)
        && started
            .duration_since(mtime)
            .is_ok_and(|age| age > MTIME_SAFETY)
}

fn dir_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir).ok().and_then(|m| m.modified().ok())
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

    /// The chunk files of one stream: a cached snapshot while the directory's mtime says
    /// nothing changed, else a fresh listing.
    pub fn stream_files(&self, name: &str) -> Result<Listing> {
        assert_safe_entity_id("streamName", name)?;
        let mtime = match std::fs::metadata(&self.dir) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Listing {
                    names: Arc::new(Vec::new()),
                    temps: Arc::new(Vec::new()),
                    snapshot: false,
                });
            }
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        if let Some(m) = mtime {
            if let Some(c) = lock(&self.cache).get(name) {
                if c.mtime == m {
                    return Ok(Listing {
                        names: Arc::clone(&c.names),
                        temps: Arc::clone(&c.temps),
                        snapshot: true,
                    });
                }
            }
        }
        let started = SystemTime::now();
        let (names, temps) = scan_stream(&self.dir, name)?;
        let (names, temps) = (Arc::new(names), Arc::new(temps));
        let after = dir_mtime(&self.dir);
        let snapshot = mtime.is_some_and(|m| trusted(m, started, after));
        if let (true, Some(m)) = (snapshot, mtime) {
            let mut cache = lock(&self.cache);
            if cache.len() >= MAX_CACHED_STREAMS {
                cache.clear();
            }
            cache.insert(
                name.to_string(),
                CachedListing {
                    mtime: m,
                    names: Arc::clone(&names),
                    temps: Arc::clone(&temps),
                },
            );
        } else {
            lock(&self.cache).remove(name);
        }
        Ok(Listing {
            names,
            temps,
            snapshot,
        })
    }

    /// `(count, last file, snapshot)` of one stream: from a cached listing when the
    /// directory has not changed, else from one unsorted counting pass.
    fn tail_listing(&self, name: &str) -> Result<(usize, Option<String>, bool)> {
        let mtime = dir_mtime(&self.dir);
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
        if let Some((count, last)) = listed.or(tail) {
            return Ok((count, last, true));
        }
        let started = SystemTime::now();
        let (count, last) = scan_tail(&self.dir, name)?;
        let after = dir_mtime(&self.dir);
        let snapshot = mtime.is_some_and(|m| trusted(m, started, after));
        let mut tails = lock(&self.tails);
        match mtime.filter(|_| snapshot) {
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
        Ok((count, last, snapshot))
    }

    /// `{ tailIndex, done }`: the number of chunk files and the flag byte of the last one.
    /// world-local reads the first byte of every file up to the first close marker; a close
    /// marker is the last file a writer produces, so the last file gives the same answer.
    /// Every chunk file counts as a chunk (as world-local counts them); only the last one
    /// is opened, so a corrupt file (empty, a directory, an unknown flag byte) is reported
    /// here when it is the last one, and by the reader wherever it is.
    pub fn stream_info(&self, name: &str) -> Result<(i64, bool)> {
        assert_safe_entity_id("streamName", name)?;
        let (mut count, mut last, snapshot) = self.tail_listing(name)?;
        let mut done = match &last {
            Some(l) => chunk_flag(&self.dir.join(l))? == Some(EOF_FLAG),
            None => false,
        };
        if done && !snapshot {
            // A close marker comes after every chunk of its stream was published, so a
            // listing started now holds all of them (the one above may have missed a
            // chunk published while it ran).
            (count, last) = scan_tail(&self.dir, name)?;
            done = match &last {
                Some(l) => chunk_flag(&self.dir.join(l))? == Some(EOF_FLAG),
                None => false,
            };
        }
        if last.is_none() {
            return Ok((-1, false));
        }
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

/// The key of the chunk a temp file is being written for (`<chunk file>.tmp.<id>`).
pub(crate) fn temp_chunk_key(temp: &str) -> u128 {
    chunk_key(temp.find(".tmp.").map_or(temp, |i| &temp[..i]))
}

/// When a temp file was created, from the ULID after `.tmp.` (world-local and this
/// package both name temp files so), in ms since the epoch.
pub(crate) fn temp_created_ms(temp: &str) -> Option<u64> {
    let i = temp.rfind(".tmp.")?;
    let id = temp.get(i + 5..i + 31)?;
    ulid::Ulid::from_string(id).ok().map(|u| u.timestamp_ms())
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

    #[test]
    fn tail_index_counts_every_chunk_file_and_reports_a_corrupt_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_chunk(d, "s", &ulid_at(1), 0, &frame("[1]"));
        // A corrupt file in the middle is a chunk (it is not opened here).
        std::fs::write(d.join(format!("s-chnk_{}.bin", ulid_at(2))), b"").unwrap();
        write_chunk(d, "s", &ulid_at(3), 0, &frame("[3]"));
        assert_eq!(
            ChunkIndex::new(d.to_path_buf()).stream_info("s").unwrap(),
            (2, false)
        );
        let last = d.join(format!("s-chnk_{}.bin", ulid_at(4)));
        for (what, make) in [
            (
                "empty",
                Box::new(|p: &Path| std::fs::write(p, b"").unwrap()) as Box<dyn Fn(&Path)>,
            ),
            (
                "close marker with more bytes",
                Box::new(|p: &Path| std::fs::write(p, b"\x01[1]").unwrap()),
            ),
            (
                "directory",
                Box::new(|p: &Path| std::fs::create_dir(p).unwrap()),
            ),
        ] {
            make(&last);
            let e = ChunkIndex::new(d.to_path_buf())
                .stream_info("s")
                .unwrap_err();
            assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"), "{what}: {e}");
            assert!(
                e.to_string().contains(&last.display().to_string()),
                "{what}: {e}"
            );
            let _ = std::fs::remove_file(&last);
            let _ = std::fs::remove_dir(&last);
        }
    }

    #[test]
    fn the_tail_of_a_closed_stream_is_counted_from_a_listing_started_after_the_close() {
        // A listing that is not a snapshot may miss a chunk published while it ran; with a
        // close marker in it, a second listing gives the exact count.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..3 {
            write_chunk(d, "s", &ulid_at(i), 0, &frame("[0]"));
        }
        write_chunk(d, "s", &ulid_at(9), 1, b"");
        // Just written: the directory's mtime is too recent for a snapshot.
        let index = ChunkIndex::new(d.to_path_buf());
        assert!(!index.tail_listing("s").unwrap().2);
        assert_eq!(index.stream_info("s").unwrap(), (2, true));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any file name: the key, temp key, temp time and filters never panic.
        #[test]
        fn any_name_parses_without_panicking(name in "\\PC{0,80}") {
            let _ = chunk_key(&name);
            let _ = temp_chunk_key(&name);
            let _ = temp_created_ms(&name);
            let _ = is_chunk_file(&name, "s-") || is_chunk_temp(&name, "s-");
        }

        /// Chunk names sort by key exactly as world-local sorts them (by file name), and a
        /// temp file's key is its chunk's.
        #[test]
        fn keys_order_like_file_names(a in any::<u128>(), b in any::<u128>(), t in 0u64..(1 << 48)) {
            let (ua, ub) = (ulid::Ulid(a), ulid::Ulid(b));
            let (na, nb) = (format!("s-chnk_{ua}.bin"), format!("s-chnk_{ub}.bin"));
            prop_assert_eq!(chunk_key(&na), a);
            prop_assert_eq!(chunk_key(&na).cmp(&chunk_key(&nb)), na.cmp(&nb));
            let temp = format!("{na}.tmp.{}", ulid::Ulid::from_parts(t, 5));
            prop_assert!(is_chunk_temp(&temp, "s-") && !is_chunk_file(&temp, "s-"));
            prop_assert_eq!(temp_chunk_key(&temp), a);
            prop_assert_eq!(temp_created_ms(&temp), Some(t));
        }
    }
}
