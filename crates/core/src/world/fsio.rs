//! File primitives with world-local's atomicity discipline and JSON encoding.
//!
//! * replaceable files: write `<path>.tmp.<ULID>` then `rename` over the target;
//! * create-once files (events, locks): write the temp file, `link` it to the target
//!   (fails if another writer got there first), unlink the temp file;
//! * JSON as `JSON.stringify(value, replacer, 2)` writes it (2-space indent, no trailing
//!   newline), dates as ISO-8601 with milliseconds.
//!
//! Every write pushes its contents before publishing the name and records the directory
//! it changed, for the caller's commit point (see [`super::durable`]).

use crate::error::{Error, Result};
use crate::ids::monotonic_ulid;
use crate::world::{durable, spare};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Reads and parses a JSON file. `Ok(None)` when the file does not exist.
pub async fn read_json(path: &Path) -> Result<Option<Value>> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    parse_json(path, &bytes).map(Some)
}

/// Synchronous twin of [`read_json`] for hot paths that run on a blocking thread: the file
/// is read into a per-thread buffer (open, read until end of file, close — no size query,
/// no allocation per file) and parsed from there.
pub fn read_json_sync(path: &Path) -> Result<Option<Value>> {
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let out = match read_small(path, &mut buf) {
            Ok(len) => parse_json(path, &buf[..len]).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        };
        if buf.len() > READ_BUF_KEEP {
            *buf = vec![0; READ_BUF_START];
        }
        out
    })
}

const READ_BUF_START: usize = 16 * 1024;

/// A per-thread read buffer larger than this is given back after use (one huge run file
/// must not pin its size for the life of the thread).
const READ_BUF_KEEP: usize = 1024 * 1024;

thread_local! {
    /// Zero-filled once; files are read into it, never cleared.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_BUF_START]);
}

/// Reads a whole file into `buf` (growing it when full) until a read says end of file:
/// short reads are not trusted, network and FUSE file systems return them mid-file.
/// Returns the file's length.
fn read_small(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            let grown = (buf.len() * 2).max(READ_BUF_START);
            buf.resize(grown, 0);
        }
        match f.read(&mut buf[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn parse_json(path: &Path, bytes: &[u8]) -> Result<Value> {
    if bytes.is_empty() {
        return Err(Error::corrupt(path, "file is empty"));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(path, format!("invalid JSON ({e})")))
}

/// `JSON.stringify(value, null, 2)`.
pub fn to_pretty_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // serde_json's pretty printer uses two spaces and `": "`, like JSON.stringify.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string())
}

/// `JSON.stringify(value)`.
pub fn to_compact_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".tmp.{}", monotonic_ulid()));
    PathBuf::from(s)
}

/// Runs a blocking write of `path` off the async threads and commits it (see
/// [`durable::commit`]): the future resolves once the write is durable.
async fn blocking_committed<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || durable::committed(f))
        .await
        .map_err(|e| {
            Error::io(
                path,
                std::io::Error::other(format!("write task failed: {e}")),
            )
        })?
}

/// Atomic replace: temp file + rename. Last writer wins. Durable when it resolves.
pub async fn write_replace(path: &Path, data: &[u8]) -> Result<()> {
    let (p, d) = (path.to_path_buf(), data.to_vec());
    blocking_committed(path, move || write_replace_sync(&p, &d)).await
}

/// Atomic create-once: temp file + hard link. Returns `false` if the target already
/// existed (another writer published it first); the existing file is left untouched.
/// Durable when it resolves.
pub async fn write_exclusive(path: &Path, data: &[u8]) -> Result<bool> {
    let (p, d) = (path.to_path_buf(), data.to_vec());
    blocking_committed(path, move || write_exclusive_sync(&p, &d)).await
}

/// Creates `dir` (and missing parents), recording the change for the commit.
fn create_dirs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    durable::dir_created(dir);
    Ok(())
}

/// Writes `data` to a new file at `tmp` and pushes it (the durability barrier for `name`).
fn write_file_pushed(tmp: &Path, name: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    f.write_all(data)?;
    let pushed = durable::data_barrier(&f, name);
    spare::retire(f);
    pushed
}

fn write_temp_sync(path: &Path, data: &[u8]) -> Result<PathBuf> {
    let tmp = temp_path(path);
    match write_file_pushed(&tmp, path, data) {
        Ok(()) => Ok(tmp),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                create_dirs(parent)?;
            }
            write_file_pushed(&tmp, path, data).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(&tmp, e)
            })?;
            Ok(tmp)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Error::io(&tmp, e))
        }
    }
}

/// Blocking twin of [`write_exclusive`], for callers that batch several small writes
/// on one thread instead of paying a thread hop per file operation. On Linux the file is
/// written unnamed (`O_TMPFILE`) and then linked under its name: readers never see half a
/// file, and no temp name is created and removed.
pub fn write_exclusive_sync(path: &Path, data: &[u8]) -> Result<bool> {
    durable::before_write(path, false)?;
    let published = |linked: bool| {
        if linked {
            durable::changed(path);
            durable::after_write(path, Some(data));
        }
        Ok(linked)
    };
    if data.is_empty() && (!spare::enabled() || durable::needs_named_temp(path)) {
        // An empty file (a lock, a marker) has no content to tear: created in place,
        // exclusively, which is atomic by itself. (A thread keeping spare files links
        // one instead: the file's creation was paid in idle time.)
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        };
        let created = match create() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    create_dirs(parent)?;
                }
                create()
            }
            other => other,
        };
        return match created {
            Ok(_) => published(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        };
    }
    let unnamed = if durable::needs_named_temp(path) {
        Ok(None)
    } else {
        anon::publish(path, data)
    };
    match unnamed {
        Ok(Some(linked)) => return published(linked),
        Ok(None) => {} // not supported here (or not safe to sync): temp file + link
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                create_dirs(parent)?;
            }
            match anon::publish(path, data) {
                Ok(Some(linked)) => return published(linked),
                Ok(None) => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Err(e) => return Err(Error::io(path, e)),
    }
    let tmp = write_temp_sync(path, data)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => published(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(target_os = "linux")]
mod anon {
    //! Create-once files written unnamed, then linked: `open(dir, O_TMPFILE)`, `write`,
    //! `linkat(/proc/self/fd/N → name)`.
    use crate::world::spare::{self, c_path};
    use std::io::{self, Write};
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Cleared once the file system (or a missing /proc) refuses: then temp files are used.
    static SUPPORTED: AtomicBool = AtomicBool::new(true);
    /// Cleared once `linkat(AT_EMPTY_PATH)` is refused (no privilege, older kernel).
    static EMPTY_PATH_LINK: AtomicBool = AtomicBool::new(true);

    /// `Some(true)`: published; `Some(false)`: the name exists (left untouched); `None`:
    /// unnamed files are not available here.
    pub fn publish(path: &Path, data: &[u8]) -> io::Result<Option<bool>> {
        if !SUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(dir) = path.parent() else {
            return Ok(None);
        };
        if let Some(spare) = spare::take(dir) {
            match link(spare, path, data) {
                Ok(out) => return Ok(out),
                // a spare opened before the directory was replaced, moved to another
                // file system, ...: the write is made again with a file opened now
                Err(_) => return publish_opened(open_in(dir)?, path, data),
            }
        }
        publish_opened(open_in(dir)?, path, data)
    }

    /// An unnamed file opened in `dir` now; `None`: unnamed files are not available here.
    fn open_in(dir: &Path) -> io::Result<Option<std::fs::File>> {
        match spare::open_unnamed_in(&c_path(dir)?) {
            Ok(f) => Ok(Some(f)),
            Err(e) => match e.raw_os_error() {
                Some(libc::EISDIR | libc::EOPNOTSUPP | libc::EINVAL) => {
                    SUPPORTED.store(false, Ordering::Relaxed);
                    Ok(None)
                }
                _ => Err(e),
            },
        }
    }

    fn publish_opened(
        file: Option<std::fs::File>,
        path: &Path,
        data: &[u8],
    ) -> io::Result<Option<bool>> {
        match file {
            Some(file) => link(file, path, data),
            None => Ok(None),
        }
    }

    /// Writes `data` into the unnamed `file` and links it as `path` (the file is then
    /// closed, in idle time where the thread keeps spares).
    fn link(mut file: std::fs::File, path: &Path, data: &[u8]) -> io::Result<Option<bool>> {
        let out = link_inner(&mut file, path, data);
        spare::retire(file);
        out
    }

    fn link_inner(file: &mut std::fs::File, path: &Path, data: &[u8]) -> io::Result<Option<bool>> {
        if !data.is_empty() {
            file.write_all(data)?;
            crate::world::durable::data_barrier(file, path)?;
        }
        let target = c_path(path)?;
        if EMPTY_PATH_LINK.load(Ordering::Relaxed) {
            // `linkat(fd, "", AT_EMPTY_PATH)`: no walk through /proc. Allowed to processes
            // with CAP_DAC_READ_SEARCH, and since Linux 6.10 to the opener of the file;
            // refused otherwise (EPERM, or ENOENT while the target's directory exists),
            // then /proc is used from now on.
            match link_at(file.as_raw_fd(), c"", &target, libc::AT_EMPTY_PATH) {
                Ok(linked) => return Ok(Some(linked)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EPERM | libc::EINVAL) => {
                        EMPTY_PATH_LINK.store(false, Ordering::Relaxed)
                    }
                    Some(libc::ENOENT) if path.parent().is_some_and(Path::exists) => {
                        EMPTY_PATH_LINK.store(false, Ordering::Relaxed)
                    }
                    _ => return Err(e),
                },
            }
        }
        let proc_path = c_path(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
        match link_at(libc::AT_FDCWD, &proc_path, &target, libc::AT_SYMLINK_FOLLOW) {
            Ok(linked) => Ok(Some(linked)),
            Err(e) => match e.raw_os_error() {
                // no /proc: fall back for good
                Some(libc::ENOENT) if !Path::new("/proc/self/fd").exists() => {
                    SUPPORTED.store(false, Ordering::Relaxed);
                    Ok(None)
                }
                _ => Err(e),
            },
        }
    }

    /// `linkat(dirfd, from, AT_FDCWD, to, flags)`: `Ok(false)` when `to` exists.
    fn link_at(
        dirfd: libc::c_int,
        from: &std::ffi::CStr,
        to: &std::ffi::CStr,
        flags: libc::c_int,
    ) -> io::Result<bool> {
        // SAFETY: NUL-terminated paths; `dirfd` is an open descriptor or AT_FDCWD.
        let rc = unsafe { libc::linkat(dirfd, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(false);
        }
        Err(e)
    }
}

#[cfg(not(target_os = "linux"))]
mod anon {
    pub fn publish(_path: &std::path::Path, _data: &[u8]) -> std::io::Result<Option<bool>> {
        Ok(None)
    }
}

/// Blocking twin of [`write_replace`].
pub fn write_replace_sync(path: &Path, data: &[u8]) -> Result<()> {
    durable::before_write(path, true)?;
    if spare::replace(path, data).map_err(|e| Error::io(path, e))? {
        durable::changed(path);
        durable::after_write(path, Some(data));
        return Ok(());
    }
    let tmp = write_temp_sync(path, data)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    durable::changed(path);
    durable::after_write(path, Some(data));
    Ok(())
}

/// world-local's `write` without `overwrite`: refuses (`EntityConflictError`, naming the
/// file) when the target exists. Published create-once (see [`write_exclusive_sync`]),
/// so the check and the write are one atomic step.
pub fn write_new_sync(path: &Path, data: &[u8]) -> Result<()> {
    if write_exclusive_sync(path, data)? {
        return Ok(());
    }
    Err(Error::EntityConflict(format!(
        "File {} already exists and 'overwrite' is false",
        path.display()
    )))
}

/// Forgets the directories a benchmark loop changed (it measures writes, not syncs).
struct DiscardOnDrop;
impl Drop for DiscardOnDrop {
    fn drop(&mut self) {
        durable::discard();
    }
}

/// The file-system floor of one engine step, for benchmarks: `steps` times three
/// create-once files of `event_bytes` and one replaced file of `step_bytes` in `dir`,
/// with the primitives the engine uses. With `format`, the writes world-local's format
/// itself makes per step instead: the step file created and replaced twice, the three
/// events, and the step's terminal lock (an empty create-once file). Returns the elapsed
/// milliseconds.
pub fn step_floor(
    dir: &Path,
    steps: u32,
    event_bytes: usize,
    step_bytes: usize,
    format: bool,
) -> Result<f64> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // the floor of the file writes alone: whatever durability would sync is dropped
    let _discard = DiscardOnDrop;
    let event = vec![b'e'; event_bytes];
    let step = vec![b's'; step_bytes];
    let started = std::time::Instant::now();
    for i in 0..steps {
        let step_path = dir.join(format!("floor-step-{i}.json"));
        if format {
            write_exclusive_sync(&step_path, &step)?;
            write_replace_sync(&step_path, &step)?;
            write_exclusive_sync(&dir.join(format!("floor-step-{i}.terminal")), b"")?;
        }
        for k in 0..3 {
            write_exclusive_sync(&dir.join(format!("floor-{i}-{k}.json")), &event)?;
        }
        write_replace_sync(&step_path, &step)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// The durability floor of one step, for benchmarks: `steps` times one small file of
/// `bytes` created, its contents synced (`fdatasync`) and its directory synced — the
/// least a durable step can cost. Plain system calls, none of the engine's primitives.
/// Returns the elapsed milliseconds.
pub fn sync_floor(dir: &Path, steps: u32, bytes: usize) -> Result<f64> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let data = vec![b'e'; bytes];
    let started = std::time::Instant::now();
    for i in 0..steps {
        let path = dir.join(format!("sync-floor-{i}.json"));
        let mut f = std::fs::File::create_new(&path).map_err(|e| Error::io(&path, e))?;
        f.write_all(&data).map_err(|e| Error::io(&path, e))?;
        f.sync_data().map_err(|e| Error::io(&path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Blocking twin of [`remove_if_exists`].
pub fn remove_if_exists_sync(path: &Path) -> Result<()> {
    durable::before_write(path, true)?;
    match std::fs::remove_file(path) {
        Ok(()) => {
            durable::changed(path);
            durable::after_write(path, None);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Blocking twin of [`list_dir`].
pub fn list_dir_sync(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Deletes a file; a missing file is not an error.
pub async fn remove_if_exists(path: &Path) -> Result<()> {
    let p = path.to_path_buf();
    blocking_committed(path, move || remove_if_exists_sync(&p)).await
}

/// Names of the entries of a directory; an absent directory is empty.
pub async fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    while let Some(entry) = rd.next_entry().await.map_err(|e| Error::io(dir, e))? {
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// The instants [`parse_date_ms`] accepts: years 0000 to 9999, where an ISO string read
/// and [`iso_from_ms`] written give the same instant (JavaScript prints other years in an
/// expanded `±YYYYYY` form). A stored date outside it is reported as corrupt, never read
/// as another instant.
const DATE_MS_MIN: f64 = -62_167_219_200_000.0; // 0000-01-01T00:00:00.000Z
const DATE_MS_MAX: f64 = 253_402_300_799_999.0; // 9999-12-31T23:59:59.999Z

/// Parses a date the way `z.coerce.date()` accepts what world-local writes: an ISO
/// string (or anything RFC 3339) or epoch milliseconds. Returns epoch milliseconds.
pub fn parse_date_ms(v: &Value) -> Option<f64> {
    let ms = match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis() as f64),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }?;
    (ms.is_finite() && (DATE_MS_MIN..=DATE_MS_MAX).contains(&ms)).then_some(ms)
}

/// `Date.prototype.toISOString()` of epoch milliseconds.
pub fn iso_from_ms(ms: f64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn now_ms() -> f64 {
    Utc::now().timestamp_millis() as f64
}

pub fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Normalises a date field to world-local's ISO form (what a zod-coerced `Date`
/// becomes when JSON.stringify writes it back).
pub fn normalize_date(v: &Value) -> Option<Value> {
    parse_date_ms(v).map(|ms| Value::String(iso_from_ms(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_json_matches_json_stringify() {
        let v = json!({"a": 1, "b": [1, {"c": "x\u{1}\"\\"}], "d": {}, "e": []});
        assert_eq!(
            to_pretty_json(&v),
            "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    {\n      \"c\": \"x\\u0001\\\"\\\\\"\n    }\n  ],\n  \"d\": {},\n  \"e\": []\n}"
        );
    }

    #[test]
    fn dates_round_trip_as_iso_millis() {
        let ms = parse_date_ms(&json!("2026-11-29T03:28:16.940Z")).unwrap();
        assert_eq!(iso_from_ms(ms), "2026-11-29T03:28:16.940Z");
        assert_eq!(
            normalize_date(&json!("2026-11-29T03:28:16Z")).unwrap(),
            json!("2026-11-29T03:28:16.000Z")
        );
        assert!(parse_date_ms(&json!("yesterday")).is_none());
        // instants a JS Date cannot hold, or that would be re-printed as another one
        for v in [
            json!(1e300),
            json!(-1e300),
            json!(8.64e15),
            json!(253_402_300_800_000u64),
        ] {
            assert!(parse_date_ms(&v).is_none(), "{v}");
            assert!(normalize_date(&v).is_none(), "{v}");
        }
        assert_eq!(
            normalize_date(&json!(253_402_300_799_999u64)).unwrap(),
            json!("9999-12-31T23:59:59.999Z")
        );
    }

    #[tokio::test]
    async fn exclusive_write_publishes_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.json");
        assert!(write_exclusive(&p, b"one").await.unwrap());
        assert!(!write_exclusive(&p, b"two").await.unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // no temp files left behind
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[tokio::test]
    async fn concurrent_exclusive_writers_have_exactly_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let mut tasks = Vec::new();
        for i in 0..32 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                write_exclusive(&p, format!("{i}").as_bytes())
                    .await
                    .unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            if t.await.unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn concurrent_replacers_never_expose_partial_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        write_replace(&p, b"{}").await.unwrap();
        let big: Vec<String> = (0..8)
            .map(|i| format!("{{\"v\":\"{}\"}}", i.to_string().repeat(100_000)))
            .collect();
        let mut tasks = Vec::new();
        for body in big.clone() {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    write_replace(&p, body.as_bytes()).await.unwrap();
                }
            }));
        }
        let reader = {
            let p = p.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let bytes = tokio::fs::read(&p).await.unwrap();
                    serde_json::from_slice::<Value>(&bytes).expect("always a whole file");
                }
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        reader.await.unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files cleaned up");
    }

    #[tokio::test]
    async fn corrupt_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("runs.json");
        std::fs::write(&p, b"{\"runId\": \"wr").unwrap();
        let err = read_json(&p).await.unwrap_err();
        assert!(err.to_string().contains("runs.json"), "{err}");
        assert_eq!(err.code().as_deref(), Some("CORRUPT_FILE"));
    }
}

/// A journal thread's spare files and reused inodes (world/spare.rs) change nothing of
/// what is published.
#[cfg(all(test, target_os = "linux"))]
mod spare_tests {
    use super::{write_exclusive_sync, write_replace_sync};
    use crate::world::spare::testing::*;
    use crate::world::spare::{clear, enable, work};
    use std::path::Path;

    /// A directory where create-once files are published unnamed whatever the sync mode
    /// (tmpfs: nothing to sync, so no named temp file is needed).
    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm").unwrap()
    }

    /// Runs `f(root, dir)` on a thread that keeps spares and reuses every replaced inode
    /// (whatever the file system, without rest), `dir` being `root/<sub>`.
    fn on_recycling_thread(sub: &'static str, f: impl FnOnce(&Path, &Path) + Send + 'static) {
        std::thread::spawn(move || {
            let root = tmp();
            let dir = root.path().join(sub);
            std::fs::create_dir(&dir).unwrap();
            enable(Some(root.path()));
            recycle_everywhere();
            f(root.path(), &dir);
            clear();
        })
        .join()
        .unwrap();
    }

    fn ino(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    fn body(i: usize) -> Vec<u8> {
        format!("{{\"version\": {i}, \"pad\": \"{}\"}}", "x".repeat(i % 300)).into_bytes()
    }

    /// What a thread keeping spares publishes is what any thread publishes: same bytes,
    /// same mode, same create-once refusal, empty files included.
    #[test]
    fn published_files_are_the_same_with_spares() {
        use std::os::unix::fs::PermissionsExt;
        let plain = tmp();
        let spared = tmp();
        let write_all = |root: &Path| {
            let mut out = Vec::new();
            for i in 0..20 {
                let data = if i % 5 == 0 {
                    Vec::new()
                } else {
                    vec![b'a' + (i % 26) as u8; 100 * i]
                };
                let path = root.join(format!("f{i}.json"));
                out.push(write_exclusive_sync(&path, &data).unwrap());
                // a second create-once of the name is refused and changes nothing
                out.push(write_exclusive_sync(&path, b"other").unwrap());
                write_replace_sync(&root.join(format!("r{i}.json")), &data).unwrap();
                while work() {}
            }
            out
        };
        let a = write_all(plain.path());
        let p2 = spared.path().to_path_buf();
        let b = std::thread::spawn(move || {
            enable(None);
            let out = write_all(&p2);
            // spares were used (the directory has some ready) and published files closed
            assert!(spares_in(&p2) >= 1);
            assert!(all_closed());
            clear();
            out
        })
        .join()
        .unwrap();
        assert_eq!(a, b);
        let listing = |root: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(root)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let meta = e.metadata().unwrap();
                    (
                        e.file_name(),
                        std::fs::read(e.path()).unwrap(),
                        meta.permissions().mode(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(listing(plain.path()), listing(spared.path()));
    }

    /// A spare opened in a directory later replaced by another one of the same name.
    #[test]
    fn a_replaced_directory_still_gets_its_files() {
        std::thread::spawn(|| {
            enable(None);
            let root = tmp();
            let dir = root.path().join("events");
            std::fs::create_dir(&dir).unwrap();
            assert!(write_exclusive_sync(&dir.join("a.json"), b"1").unwrap());
            while work() {}
            assert_eq!(spares_in(&dir), 1);
            std::fs::rename(&dir, root.path().join("old")).unwrap();
            std::fs::create_dir(&dir).unwrap();
            assert!(write_exclusive_sync(&dir.join("b.json"), b"2").unwrap());
            assert_eq!(std::fs::read(dir.join("b.json")).unwrap(), b"2");
            assert!(!root.path().join("old/b.json").exists());
            // and a directory removed for good: re-created, as without spares
            while work() {}
            std::fs::remove_dir_all(&dir).unwrap();
            let e = write_exclusive_sync(&dir.join("c.json"), b"3");
            assert!(e.is_ok_and(|linked| linked), "the directory is re-created");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn replaced_files_reuse_inodes_and_read_as_written() {
        on_recycling_thread("steps", |root, dir| {
            let mut inodes = std::collections::HashSet::new();
            for i in 0..400 {
                let target = dir.join(format!("s{}.json", i % 7));
                write_replace_sync(&target, &body(i)).unwrap();
                assert_eq!(std::fs::read(&target).unwrap(), body(i));
                inodes.insert(ino(&target));
            }
            // every version of the 7 files after the first ones took a kept inode
            assert!(
                inodes.len() < 20,
                "{} inodes for 400 replaces",
                inodes.len()
            );
            // only the targets are in the directory; kept inodes live in the keep dir
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(
                names,
                (0..7).map(|i| format!("s{i}.json")).collect::<Vec<_>>()
            );
            assert_eq!(keep_dirs(root), 1);
            clear();
            enable(None); // the keep dir goes with its owner
            assert_eq!(keep_dirs(root), 0);
        });
    }

    /// A reader that opened the old version keeps reading it unchanged, however many
    /// replaces follow (the inode is not reused while open), as after a rename.
    #[test]
    fn an_open_old_version_is_never_overwritten() {
        use std::io::Read;
        on_recycling_thread("runs", |_root, dir| {
            let target = dir.join("r.json");
            write_replace_sync(&target, &body(1)).unwrap();
            write_replace_sync(&target, &body(2)).unwrap();
            let mut reader = std::fs::File::open(&target).unwrap();
            let mut first = [0u8; 5];
            reader.read_exact(&mut first).unwrap();
            for i in 3..200 {
                write_replace_sync(&dir.join(format!("o{}.json", i % 3)), &body(i)).unwrap();
                write_replace_sync(&target, &body(i)).unwrap();
            }
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            assert_eq!([&first[..], &rest[..]].concat(), body(2));
            assert_eq!(std::fs::read(&target).unwrap(), body(199));
        });
    }

    /// A large old version (not kept for reuse) also reads to its end unchanged for a
    /// reader that has it open.
    #[test]
    fn an_open_large_old_version_reads_whole() {
        use std::io::Read;
        on_recycling_thread("runs", |_root, dir| {
            let target = dir.join("big.json");
            let big = vec![b'b'; 200 * 1024];
            write_replace_sync(&target, &big).unwrap();
            let mut reader = std::fs::File::open(&target).unwrap();
            for i in 0..20 {
                write_replace_sync(&target, &body(i)).unwrap();
            }
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            assert_eq!(got, big);
            assert_eq!(std::fs::read(&target).unwrap(), body(19));
        });
    }

    /// An old version that has another name (a hard link someone made) is never
    /// reused: that name keeps its contents.
    #[test]
    fn an_old_version_linked_elsewhere_is_left_alone() {
        on_recycling_thread("steps", |root, dir| {
            let target = dir.join("s.json");
            write_replace_sync(&target, &body(1)).unwrap();
            let backup = root.join("backup.json");
            std::fs::hard_link(&target, &backup).unwrap();
            for i in 2..100 {
                write_replace_sync(&target, &body(i)).unwrap();
            }
            assert_eq!(std::fs::read(&backup).unwrap(), body(1));
            assert_eq!(std::fs::read(&target).unwrap(), body(99));
        });
    }
}
