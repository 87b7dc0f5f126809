//! The durability log ("log" mode, the default on Linux disks): one `fdatasync` of an
//! append-only file makes a whole group of world writes durable, instead of one sync per
//! file and directory.
//!
//! # What is written, and when it is durable
//!
//! Each process keeps one log per data directory, `<root>/.workflow-native/log/
//! <boot>-<pid>-<ulid>.wal`, preallocated with zeros so an append changes no metadata
//! and `fdatasync` costs one data write and one device flush. The world's own files are
//! written exactly as with syncing off (same names, same bytes, published atomically);
//! each successful write also records `Put(path, bytes)` or `Del(path)`, stamped with the
//! wall clock, in the calling thread's pending group. [`commit`](crate::world::durable::commit)
//! appends the group as one checksummed record and waits for a `fdatasync` covering it
//! (concurrent committers share one: group commit). Nothing is acknowledged before that.
//!
//! A log file starts with a header naming the boot (`/proc/sys/kernel/random/boot_id`)
//! and `t0`, the wall-clock time just before a `syncfs` of the file system: every file
//! changed before `t0` was on stable storage when the log began. The log is rotated
//! when it is full, without stalling the writers for the `syncfs` (150–200 ms on a disk
//! with tens of MB of dirty pages): the old file is synced, a new one is created with the
//! old `t0` (it promises no more than the old file did) and takes every later append; a
//! short-lived thread then runs `syncfs`, raises the directory's durable mark (see
//! [`raise_mark`]) to the instant before it, stops relying on the old file for pre-images
//! and only then removes it. Until then both files exist and recovery replays both.
//!
//! **Holds.** A replace or removal that needs no pre-image because a log file already
//! holds the file's acknowledged version (it was written, or pre-imaged, in it) relies on
//! that log file until the replace itself is synced in a log. Such writes take a *hold* on
//! the file's generation (`epoch`), released when their commit is synced; a rotated file is
//! removed only once its holds are released, also when the rotation was made the
//! synchronous way (a log full again while the previous rotation's thread still runs).
//! (A failed commit keeps its holds: the old file then stays until the process ends, and
//! a later open replays it.)
//!
//! Two rules keep the files that were *not* acknowledged from hurting the ones that were:
//! * **Pre-images.** Before a file that existed when the log began is replaced or removed
//!   for the first time, its current contents are recorded and synced: an unacknowledged
//!   replace can then never destroy the acknowledged version (a file system without a
//!   journal may lose either name after a power loss).
//! * **Recovery after a power loss.** When a data directory is opened and a log of an
//!   earlier boot is found (its processes died with the machine), every operation of
//!   every such log is re-applied in stamp order, and every world file changed after the
//!   newest `t0` that no log mentions — written but never acknowledged, possibly torn —
//!   is removed. The directory is then exactly the acknowledged state, with no later
//!   event surviving an earlier one. A log of the current boot whose process is gone only
//!   needs a `syncfs` (its writes are in the page cache); a log whose process lives is
//!   locked (`flock`) and left alone.
//!
//! A failed append or sync fails the commit and every later one of that log (a storage
//! fault: after a failed `fsync` the kernel may have dropped the pages).

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

const HEADER_MAGIC: &[u8] = b"WFNLOG1\n";
const HEADER_LEN: u64 = 4096;
const RECORD_MAGIC: u32 = 0x574c_4f47; // "WLOG"
const RECORD_HEAD: usize = 12; // magic, payload length, crc32
const GROW_BY: u64 = 1 << 20;
/// How long a rotation waits for the writes relying on the old file (see "Holds").
const HOLDS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
const OP_PUT: u8 = 1;
const OP_DEL: u8 = 2;

/// The world's directories recovery may remove unacknowledged files from.
const WORLD_DIRS: &[&str] = &[
    "runs",
    "events",
    "steps",
    "hooks",
    "waits",
    "streams/chunks",
    "streams/runs",
];

/// Called after each sync of a log (the durability layer's test observer, which may turn
/// the sync into a failure); set once by whoever attaches logs.
type SyncHook = fn(&Path) -> io::Result<()>;
static SYNC_HOOK: OnceLock<SyncHook> = OnceLock::new();

pub(crate) fn set_sync_hook(hook: SyncHook) {
    let _ = SYNC_HOOK.set(hook);
}

fn after_sync(path: &Path) -> io::Result<()> {
    SYNC_HOOK.get().map_or(Ok(()), |h| h(path))
}

fn max_len() -> u64 {
    static MAX: OnceLock<u64> = OnceLock::new();
    *MAX.get_or_init(|| {
        // test hook: a small log to exercise rotation
        std::env::var("WORKFLOW_NATIVE_TEST_LOG_MAX")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v.max(HEADER_LEN + 4096))
            .unwrap_or(16 << 20)
    })
}

/// This boot's id (test hook: `WORKFLOW_NATIVE_TEST_BOOT_ID` pretends another boot).
pub(crate) fn boot_id() -> String {
    if let Ok(b) = std::env::var("WORKFLOW_NATIVE_TEST_BOOT_ID") {
        if !b.is_empty() {
            return b;
        }
    }
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string())
    })
    .clone()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn coarse_now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// A wall-clock instant before which every file change is on stable storage: taken just
/// before `syncfs`, and returned only once the coarse clock (which stamps files) has
/// passed it, so a later change can never carry an older modification time.
fn sync_file_system(root: &Path) -> Result<i64> {
    let t0 = now_ns();
    let wait_until = std::time::Instant::now() + std::time::Duration::from_millis(50);
    while coarse_now_ns() <= t0 && std::time::Instant::now() < wait_until {
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    let dir = File::open(root).map_err(|e| Error::io(root, e))?;
    // SAFETY: an open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(Error::io(root, io::Error::last_os_error()));
    }
    Ok(t0)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// `flock` on `file`; `Ok(false)` when another open file holds it (`nonblocking`).
fn lock(file: &File, nonblocking: bool) -> io::Result<bool> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    loop {
        // SAFETY: an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if nonblocking => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// `path` relative to `root`, as a log stores it: plain components only.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s.to_str()?);
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A stored relative path back under `root`, refusing anything that would leave it.
fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() {
        return None;
    }
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Some(root.join(p))
    } else {
        None
    }
}

fn encode_op(buf: &mut Vec<u8>, stamp: i64, rel: &str, data: Option<&[u8]>) {
    buf.push(if data.is_some() { OP_PUT } else { OP_DEL });
    buf.extend_from_slice(&stamp.to_le_bytes());
    buf.extend_from_slice(&(rel.len() as u16).to_le_bytes());
    buf.extend_from_slice(rel.as_bytes());
    if let Some(d) = data {
        buf.extend_from_slice(&(d.len() as u32).to_le_bytes());
        buf.extend_from_slice(d);
    }
}

fn record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEAD + payload.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// One logged operation: `data` is `None` for a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedOp {
    pub stamp: i64,
    pub rel: String,
    pub data: Option<Vec<u8>>,
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let s = b.get(*at..*at + N)?;
    *at += N;
    s.try_into().ok()
}

fn decode_payload(p: &[u8]) -> Option<Vec<LoggedOp>> {
    let mut ops = Vec::new();
    let mut at = 0;
    while at < p.len() {
        let [kind] = take::<1>(p, &mut at)?;
        let stamp = i64::from_le_bytes(take::<8>(p, &mut at)?);
        let n = u16::from_le_bytes(take::<2>(p, &mut at)?) as usize;
        let rel = std::str::from_utf8(p.get(at..at + n)?).ok()?.to_string();
        at += n;
        let data = match kind {
            OP_PUT => {
                let n = u32::from_le_bytes(take::<4>(p, &mut at)?) as usize;
                let d = p.get(at..at + n)?.to_vec();
                at += n;
                Some(d)
            }
            OP_DEL => None,
            _ => return None,
        };
        ops.push(LoggedOp { stamp, rel, data });
    }
    Some(ops)
}

/// A whole record at `at`: its payload and the offset after it.
fn record_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let mut i = at;
    let magic = u32::from_le_bytes(take::<4>(bytes, &mut i)?);
    if magic != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(take::<4>(bytes, &mut i)?) as usize;
    let crc = u32::from_le_bytes(take::<4>(bytes, &mut i)?);
    let payload = bytes.get(i..i.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, i + len))
}

/// The header of a log file: its boot and `t0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub boot: String,
    pub pid: u32,
    pub t0: i64,
}

fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = HEADER_MAGIC.to_vec();
    out.extend_from_slice(
        serde_json::json!({ "boot": h.boot, "pid": h.pid, "t0": h.t0.to_string() })
            .to_string()
            .as_bytes(),
    );
    out.push(b'\n');
    out.resize(HEADER_LEN as usize, 0);
    out
}

fn decode_header(bytes: &[u8]) -> Option<Header> {
    let rest = bytes.strip_prefix(HEADER_MAGIC)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let v: serde_json::Value = serde_json::from_slice(&rest[..end]).ok()?;
    Some(Header {
        boot: v.get("boot")?.as_str()?.to_string(),
        pid: v.get("pid")?.as_u64()? as u32,
        t0: v.get("t0")?.as_str()?.parse().ok()?,
    })
}

/// Reads a whole log: its header and every operation up to the first record that is not
/// whole (a write the crash tore, never acknowledged). A whole record *after* such a gap
/// was acknowledged by a sync that covered the gap too: the file is corrupt.
pub fn read_log(path: &Path) -> Result<(Header, Vec<LoggedOp>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let header = decode_header(&bytes)
        .ok_or_else(|| Error::corrupt(path, "durability log: unreadable header"))?;
    let mut ops = Vec::new();
    let mut at = HEADER_LEN as usize;
    while let Some((payload, next)) = record_at(&bytes, at) {
        let decoded = decode_payload(payload).ok_or_else(|| {
            Error::corrupt(path, format!("durability log: bad record at offset {at}"))
        })?;
        ops.extend(decoded);
        at = next;
    }
    let tail = bytes.get(at..).unwrap_or_default();
    if tail.iter().any(|&b| b != 0) {
        let magic = RECORD_MAGIC.to_le_bytes();
        let later = (at + 1..bytes.len().saturating_sub(RECORD_HEAD))
            .filter(|&i| bytes[i..].starts_with(&magic))
            .find(|&i| record_at(&bytes, i).is_some());
        if let Some(i) = later {
            return Err(Error::corrupt(
                path,
                format!(
                    "durability log: record at offset {at} is damaged but a later one \
                     (offset {i}) is whole"
                ),
            ));
        }
    }
    Ok((header, ops))
}

/// One process's log for one data directory.
pub(crate) struct Wal {
    root: PathBuf,
    dir: PathBuf,
    state: Mutex<State>,
    /// Serialises `fdatasync` calls (one covers every append before it).
    sync_turn: Mutex<()>,
    /// Appends up to this sequence number are durable.
    synced: AtomicU64,
    /// Test hook: rotations' threads stop before their `syncfs`, as a crash would.
    abandon_rotations: std::sync::atomic::AtomicBool,
    /// Rotations' threads waiting for holds on their old file (tests).
    waiting_on_holds: std::sync::atomic::AtomicUsize,
}

struct State {
    file: Option<Arc<File>>,
    path: PathBuf,
    offset: u64,
    allocated: u64,
    /// Appends so far (all files of this log).
    seq: u64,
    /// Files this log's current file protects: written since it began, or pre-imaged.
    covered: HashSet<String>,
    /// Files the previous file protects while it is being retired (see [`Wal::rotate`]):
    /// their acknowledged contents are in it until the `syncfs` made them durable in place.
    carried: HashSet<String>,
    /// The current file's `t0` (a new file made by a rotation inherits it).
    t0: i64,
    /// The threads retiring earlier files (rotations' threads).
    retiring: Vec<std::thread::JoinHandle<()>>,
    /// The current file's generation, and the one of the file `carried` is held by.
    epoch: u64,
    carried_epoch: u64,
    /// Writes relying on a generation's file whose own commit is not synced yet.
    holds: std::collections::HashMap<u64, u64>,
    /// A failed append or sync: every later commit fails with it.
    failed: Option<String>,
}

thread_local! {
    /// Operations of this thread not yet committed, per log.
    static PENDING: RefCell<Vec<(Arc<Wal>, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
    /// Holds this thread's pending writes took (see the module's "Holds").
    static HELD: RefCell<Vec<(Arc<Wal>, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Releases holds once the writes that took them are durable (or forgotten).
fn release(held: Vec<(Arc<Wal>, u64)>) {
    for (wal, epoch) in held {
        let mut st = wal.lock_state();
        if let Some(n) = st.holds.get_mut(&epoch) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.holds.remove(&epoch);
            }
        }
    }
}

fn registry() -> &'static RwLock<Vec<Arc<Wal>>> {
    static R: OnceLock<RwLock<Vec<Arc<Wal>>>> = OnceLock::new();
    R.get_or_init(|| RwLock::new(Vec::new()))
}

/// The log covering `path`, if its data directory is logged.
pub(crate) fn find(path: &Path) -> Option<Arc<Wal>> {
    let r = match registry().read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    r.iter()
        .filter(|w| path.starts_with(&w.root) && path != w.root)
        .max_by_key(|w| w.root.as_os_str().len())
        .cloned()
}

pub(crate) fn log_dir(root: &Path) -> PathBuf {
    root.join(".workflow-native").join("log")
}

/// Starts logging the data directory `root` in this process, after recovering what an
/// earlier boot left in its logs. Idempotent.
pub(crate) fn attach(root: &Path) -> Result<()> {
    if find(&root.join("x")).is_some_and(|w| w.root == root) {
        return Ok(());
    }
    recover_with(root, true)?;
    let mut r = match registry().write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if !r.iter().any(|w| w.root == root) {
        r.push(Arc::new(Wal {
            root: root.to_path_buf(),
            dir: log_dir(root),
            state: Mutex::new(State {
                file: None,
                path: PathBuf::new(),
                offset: 0,
                allocated: 0,
                seq: 0,
                covered: HashSet::new(),
                carried: HashSet::new(),
                t0: i64::MIN,
                retiring: Vec::new(),
                epoch: 0,
                carried_epoch: 0,
                holds: std::collections::HashMap::new(),
                failed: None,
            }),
            sync_turn: Mutex::new(()),
            synced: AtomicU64::new(0),
            abandon_rotations: std::sync::atomic::AtomicBool::new(false),
            waiting_on_holds: std::sync::atomic::AtomicUsize::new(0),
        }));
    }
    Ok(())
}

/// Stops logging `root` in this process: the log file is closed (and its lock released)
/// but kept, as a process that exits leaves it. For tests that simulate a crash.
#[doc(hidden)]
pub fn detach(root: &Path) {
    let mut r = match registry().write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    r.retain(|w| w.root != root);
}

/// The marker of the newest `syncfs` any process made for this directory.
fn synced_mark(dir: &Path) -> PathBuf {
    dir.join("synced-until")
}

fn read_mark(dir: &Path) -> i64 {
    std::fs::read_to_string(synced_mark(dir))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(i64::MIN)
}

/// Raises the durable mark to `t0` (under the directory lock held by the caller).
fn raise_mark(dir: &Path, t0: i64) -> Result<()> {
    if read_mark(dir) >= t0 {
        return Ok(());
    }
    let tmp = dir.join(format!("synced-until.tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let f = File::create(&tmp)?;
        f.write_all_at(t0.to_string().as_bytes(), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, synced_mark(dir))
    };
    write().map_err(|e| Error::io(&synced_mark(dir), e))?;
    sync_dir(dir)
}

fn dir_lock(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    lock(&f, false).map_err(|e| Error::io(&path, e))?;
    Ok(f)
}

/// What [`recover`] did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Logs of an earlier boot replayed.
    pub replayed_logs: usize,
    pub ops: usize,
    /// Unacknowledged files removed.
    pub removed: Vec<String>,
    /// Logs of this boot whose process was gone.
    pub flushed_logs: usize,
}

/// Replays the logs an earlier boot left in `root`, flushes those of dead processes of
/// this boot, and removes them.
pub fn recover(root: &Path) -> Result<Recovered> {
    recover_with(root, false)
}

/// [`recover`]; with `background`, logs that need no replay (dead processes of this
/// boot) are flushed and removed by a short-lived thread, so opening a world never
/// waits for a `syncfs`.
fn recover_with(root: &Path, background: bool) -> Result<Recovered> {
    let dir = log_dir(root);
    let mut out = Recovered::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    if names.is_empty() {
        return Ok(out);
    }
    names.sort();
    let _guard = dir_lock(&dir)?;
    let boot = boot_id();
    let mut dead: Vec<(PathBuf, File)> = Vec::new();
    let mut earlier_boot: Vec<(Header, Vec<LoggedOp>)> = Vec::new();
    for path in names {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // another recovered it
            Err(e) => return Err(Error::io(&path, e)),
        };
        if !lock(&file, true).map_err(|e| Error::io(&path, e))? {
            continue; // its process lives
        }
        // the header decides; the records are read only when they are to be replayed
        let mut head = vec![0u8; HEADER_LEN as usize];
        let read = file
            .read_at(&mut head, 0)
            .map_err(|e| Error::io(&path, e))?;
        let header = decode_header(&head[..read])
            .ok_or_else(|| Error::corrupt(&path, "durability log: unreadable header"))?;
        if header.boot != boot {
            earlier_boot.push(read_log(&path)?);
        } else {
            out.flushed_logs += 1;
        }
        dead.push((path, file));
    }
    if dead.is_empty() {
        return Ok(out);
    }
    if !earlier_boot.is_empty() {
        let threshold = earlier_boot
            .iter()
            .map(|(h, _)| h.t0)
            .max()
            .unwrap_or(i64::MIN)
            .max(read_mark(&dir));
        let mut ops: Vec<LoggedOp> = earlier_boot
            .iter_mut()
            .flat_map(|(_, o)| std::mem::take(o))
            .collect();
        ops.sort_by_key(|o| o.stamp);
        out.replayed_logs = earlier_boot.len();
        out.ops = ops.len();
        let mut named = HashSet::new();
        for op in &ops {
            apply(root, op)?;
            named.insert(op.rel.clone());
        }
        out.removed = remove_unacknowledged(root, threshold, &named)?;
    }
    if out.replayed_logs == 0 && background {
        // Only logs of dead processes of this boot: their writes are in the page cache,
        // readers see them already; flush and remove them off the caller's thread (the
        // open log files keep their locks meanwhile, so no one else takes them).
        let (root_buf, dir_buf) = (root.to_path_buf(), dir.clone());
        let spawned = std::thread::Builder::new()
            .name("workflow-native-log-flush".into())
            .spawn(move || {
                let res = dir_lock(&dir_buf).and_then(|_guard| retire(&root_buf, &dir_buf, &dead));
                if let Err(e) = res {
                    eprintln!(
                        "workflow-native: could not flush the durability logs of exited \
                         processes in {}: {e}",
                        dir_buf.display()
                    );
                }
            });
        if let Err(e) = spawned {
            return Err(Error::io(&dir, e));
        }
        return Ok(out);
    }
    retire(root, &dir, &dead)?;
    if out.replayed_logs > 0 {
        eprintln!(
            "workflow-native: recovered {} after a machine restart: {} logged operations \
             re-applied from {} log(s), {} unacknowledged file(s) removed",
            root.display(),
            out.ops,
            out.replayed_logs,
            out.removed.len()
        );
    }
    Ok(out)
}

/// Makes everything durable (`syncfs`), records it, and removes the logs `dead`.
fn retire(root: &Path, dir: &Path, dead: &[(PathBuf, File)]) -> Result<()> {
    let t0 = sync_file_system(root)?;
    raise_mark(dir, t0)?;
    for (path, _file) in dead {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    sync_dir(dir)
}

/// Re-applies one logged operation (atomically: temp file + rename).
fn apply(root: &Path, op: &LoggedOp) -> Result<()> {
    let path = resolve(root, &op.rel).ok_or_else(|| {
        Error::corrupt(
            &log_dir(root),
            format!(
                "durability log names a path outside the data directory: {:?}",
                op.rel
            ),
        )
    })?;
    match &op.data {
        Some(data) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            let mut tmp = path.as_os_str().to_os_string();
            tmp.push(".tmp.replay");
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, data).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        },
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// Removes every world file changed after `threshold` that no log names: written, never
/// acknowledged. Returns their paths relative to `root`.
fn remove_unacknowledged(
    root: &Path,
    threshold: i64,
    named: &HashSet<String>,
) -> Result<Vec<String>> {
    let mut dirs: Vec<String> = WORLD_DIRS.iter().map(|s| s.to_string()).collect();
    if let Ok(locks) = std::fs::read_dir(root.join(".locks")) {
        for e in locks.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(n) = e.file_name().to_str() {
                    dirs.push(format!(".locks/{n}"));
                }
            }
        }
    }
    let mut removed = Vec::new();
    for sub in dirs {
        let dir = root.join(&sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for e in entries.filter_map(|e| e.ok()) {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = format!("{sub}/{name}");
            if named.contains(&rel) {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() || mtime_ns(&meta) <= threshold {
                continue;
            }
            let path = dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(rel),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&path, err)),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

impl Wal {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Opens a new log file (its `t0` after a `syncfs`): every change made before is
    /// durable, every one after is logged. The file it replaces (a rotation made this way)
    /// is removed once the writes relying on it are synced (see "Holds"), by a thread.
    fn open_file(self: &Arc<Self>, st: &mut State) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let guard = dir_lock(&self.dir)?;
        let t0 = sync_file_system(&self.root)?;
        let (file, path) = self.create_file(t0)?;
        raise_mark(&self.dir, t0)?;
        drop(guard);
        let old = std::mem::replace(&mut st.path, path);
        let old_file = st.file.replace(Arc::new(file));
        st.offset = HEADER_LEN;
        st.allocated = HEADER_LEN + GROW_BY;
        st.t0 = t0;
        let old_epoch = st.epoch;
        st.epoch += 1;
        st.covered.clear();
        // the syncfs made what an earlier file (one being retired too) protected durable
        st.carried.clear();
        // everything appended before is durable now (the syncfs covered it)
        self.synced.fetch_max(st.seq, Ordering::SeqCst);
        if let Some(old_file) = old_file {
            let wal = Arc::clone(self);
            let old_path = old.clone();
            let spawned = std::thread::Builder::new()
                .name("workflow-native-log-rotate".into())
                .spawn(move || wal.retire_rotated(&old_path, old_file, old_epoch, false));
            match spawned {
                Ok(h) => st.retiring.push(h),
                // no thread to be had: at once (the window the holds close stays open)
                Err(_) => {
                    let _ = std::fs::remove_file(&old);
                }
            }
        }
        Ok(())
    }

    /// A new log file with header `t0`, preallocated, synced and published under its name
    /// (the caller makes the name durable).
    fn create_file(&self, t0: i64) -> Result<(File, PathBuf)> {
        let name = format!(
            "{}-{}-{}",
            boot_id(),
            std::process::id(),
            crate::ids::monotonic_ulid()
        );
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(format!("{name}.wal"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        lock(&file, true).map_err(|e| Error::io(&tmp, e))?;
        let header = encode_header(&Header {
            boot: boot_id(),
            pid: std::process::id(),
            t0,
        });
        let init = || -> io::Result<()> {
            file.write_all_at(&header, 0)?;
            file.write_all_at(&vec![0u8; GROW_BY as usize], HEADER_LEN)?;
            file.sync_all()
        };
        if let Err(e) = init() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok((file, path))
    }

    /// Rotates a full log without making the writers wait for a `syncfs`:
    /// 1. the old file is synced: every record in it is durable;
    /// 2. a new file, whose header repeats the old `t0` (every change since is in one of
    ///    the two files, or unacknowledged), is created and its name made durable;
    /// 3. appends go to the new file; the files the old one protects are `carried`;
    /// 4. a thread runs `syncfs` from `t1`, raises the durable mark to `t1` (recovery's
    ///    threshold is the larger of the newest `t0` and the mark), drops `carried` (their
    ///    current versions are durable in place: a later replace logs a pre-image again)
    ///    and only then removes the old file.
    ///
    /// While a previous rotation's thread still runs, this one is made the synchronous way.
    fn rotate(self: &Arc<Self>, st: &mut State) -> Result<()> {
        let Some(old_file) = st.file.clone() else {
            return self.open_file(st);
        };
        st.retiring.retain(|h| !h.is_finished());
        if !st.retiring.is_empty() {
            return self.open_file(st);
        }
        old_file
            .sync_data()
            .and_then(|()| after_sync(&st.path))
            .map_err(|e| Error::io(&st.path, e))?;
        self.synced.fetch_max(st.seq, Ordering::SeqCst);
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let (file, path) = {
            let _guard = dir_lock(&self.dir)?;
            self.create_file(st.t0)?
        };
        sync_dir(&self.dir)?;
        let old_path = std::mem::replace(&mut st.path, path);
        st.file = Some(Arc::new(file));
        st.offset = HEADER_LEN;
        st.allocated = HEADER_LEN + GROW_BY;
        let covered = std::mem::take(&mut st.covered);
        st.carried.extend(covered);
        let old_epoch = st.epoch;
        st.carried_epoch = old_epoch;
        st.epoch += 1;
        let wal = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("workflow-native-log-rotate".into())
            .spawn(move || wal.retire_rotated(&old_path, old_file, old_epoch, true));
        match spawned {
            Ok(h) => {
                st.retiring.push(h);
                Ok(())
            }
            // no thread to be had: the synchronous way (its syncfs covers the old file)
            Err(_) => self.open_file(st),
        }
    }

    /// Step 4 of [`rotate`](Self::rotate), on its own thread (`syncfs`: the rotation has
    /// not made one; else, after [`open_file`](Self::open_file)'s, only the wait for holds
    /// and the removal). A failure is a storage fault: every later commit of this log
    /// fails with it, and the old file is kept.
    fn retire_rotated(&self, old_path: &Path, old_file: Arc<File>, old_epoch: u64, syncfs: bool) {
        if self.abandon_rotations.load(Ordering::SeqCst) {
            return;
        }
        if syncfs {
            let synced = dir_lock(&self.dir).and_then(|_guard| {
                let t1 = sync_file_system(&self.root)?;
                raise_mark(&self.dir, t1)
            });
            if let Err(e) = synced {
                eprintln!(
                    "workflow-native: the durability log of {} could not be rotated: {e}",
                    self.root.display()
                );
                let mut st = self.lock_state();
                self.fail(&mut st, e);
                return;
            }
            self.lock_state().carried.clear();
        }
        // writes that relied on the old file for their file's acknowledged version: until
        // their own commit is synced (each is a batch's write, committed right after it).
        // Holds still taken after HOLDS_PATIENCE belong to writes that failed or were
        // abandoned: the file is then kept (a later open of the directory replays it).
        let patience = std::time::Instant::now() + HOLDS_PATIENCE;
        let mut waiting = false;
        let kept = loop {
            let st = self.lock_state();
            if st.failed.is_some() {
                break true;
            }
            if !st.holds.contains_key(&old_epoch) {
                break false;
            }
            drop(st);
            if std::time::Instant::now() >= patience {
                eprintln!(
                    "workflow-native: kept the rotated durability log {}: writes relying on it \
                     were never committed",
                    old_path.display()
                );
                break true;
            }
            if !waiting {
                waiting = true;
                self.waiting_on_holds.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        };
        if waiting {
            self.waiting_on_holds.fetch_sub(1, Ordering::SeqCst);
        }
        if kept {
            return;
        }
        drop(old_file);
        match std::fs::remove_file(old_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // left behind, it is only replayed again (its records are all older): harmless
            Err(e) => eprintln!(
                "workflow-native: could not remove the rotated durability log {}: {e}",
                old_path.display()
            ),
        }
    }

    /// Waits for the rotations' retiring threads (tests).
    fn settle(&self) {
        let handles = std::mem::take(&mut self.lock_state().retiring);
        for h in handles {
            let _ = h.join();
        }
    }

    fn fail(&self, st: &mut State, e: Error) -> Error {
        st.failed = Some(e.to_string());
        e
    }

    /// Makes sure the log file exists before a write it will cover.
    pub(crate) fn ready(self: &Arc<Self>) -> Result<()> {
        let mut st = self.lock_state();
        if let Some(f) = &st.failed {
            return Err(Error::io(&st.path, io::Error::other(f.clone())));
        }
        if st.file.is_none() {
            if let Err(e) = self.open_file(&mut st) {
                return Err(self.fail(&mut st, e));
            }
        }
        Ok(())
    }

    /// Before `path` is replaced or removed: if it existed before this log began and the
    /// log does not hold it yet, its current contents are logged and synced first.
    pub(crate) fn protect(self: &Arc<Self>, path: &Path) -> Result<()> {
        self.ready()?;
        let Some(rel) = relative(&self.root, path) else {
            return Ok(());
        };
        {
            let mut st = self.lock_state();
            let held_by = if st.covered.contains(&rel) {
                Some(st.epoch)
            } else if st.carried.contains(&rel) {
                Some(st.carried_epoch)
            } else {
                None
            };
            if let Some(epoch) = held_by {
                *st.holds.entry(epoch).or_default() += 1;
                drop(st);
                HELD.with(|h| h.borrow_mut().push((Arc::clone(self), epoch)));
                return Ok(());
            }
        }
        let current = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.lock_state().covered.insert(rel);
                return Ok(());
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut payload = Vec::with_capacity(current.len() + rel.len() + 16);
        encode_op(&mut payload, now_ns(), &rel, Some(&current));
        let seq = self.append_held(&payload, std::slice::from_ref(&rel), true)?;
        self.sync_to(seq)
    }

    /// Records a successful write of `path` (`None`: removed) in this thread's group.
    pub(crate) fn note(self: &Arc<Self>, path: &Path, data: Option<&[u8]>) {
        let Some(rel) = relative(&self.root, path) else {
            return;
        };
        let stamp = now_ns();
        self.lock_state().covered.insert(rel.clone());
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let i = match p.iter().position(|(w, _)| Arc::ptr_eq(w, self)) {
                Some(i) => i,
                None => {
                    p.push((Arc::clone(self), Vec::new()));
                    p.len() - 1
                }
            };
            encode_op(&mut p[i].1, stamp, &rel, data);
        });
    }

    /// Appends one record; returns its sequence number.
    fn append(self: &Arc<Self>, payload: &[u8], rels: &[String]) -> Result<u64> {
        self.append_held(payload, rels, false)
    }

    /// [`append`](Self::append); with `hold`, a pre-image: the write it protects takes a
    /// hold on the file the record went to, in the same step (see the module's "Holds").
    fn append_held(self: &Arc<Self>, payload: &[u8], rels: &[String], hold: bool) -> Result<u64> {
        let rec = record(payload);
        let mut st = self.lock_state();
        if let Some(f) = &st.failed {
            return Err(Error::io(&st.path, io::Error::other(f.clone())));
        }
        let len = rec.len() as u64;
        if st.file.is_none() {
            if let Err(e) = self.open_file(&mut st) {
                return Err(self.fail(&mut st, e));
            }
        } else if st.offset + len > max_len().max(HEADER_LEN + len) {
            // full
            if let Err(e) = self.rotate(&mut st) {
                return Err(self.fail(&mut st, e));
            }
        }
        let Some(file) = st.file.clone() else {
            return Err(Error::io(
                &st.path,
                io::Error::other("durability log not open"),
            ));
        };
        if st.offset + len > st.allocated {
            let grow = (st.offset + len - st.allocated).div_ceil(GROW_BY) * GROW_BY;
            let at = st.allocated;
            let res = file
                .write_all_at(&vec![0u8; grow as usize], at)
                .and_then(|()| file.sync_all());
            if let Err(e) = res {
                let e = Error::io(&st.path, e);
                return Err(self.fail(&mut st, e));
            }
            st.allocated += grow;
        }
        if let Err(e) = file.write_all_at(&rec, st.offset) {
            let e = Error::io(&st.path, e);
            return Err(self.fail(&mut st, e));
        }
        st.offset += len;
        st.seq += 1;
        for r in rels {
            st.covered.insert(r.clone());
        }
        if hold {
            let epoch = st.epoch;
            *st.holds.entry(epoch).or_default() += 1;
            HELD.with(|h| h.borrow_mut().push((Arc::clone(self), epoch)));
        }
        Ok(st.seq)
    }

    /// Returns once append `seq` is on stable storage.
    fn sync_to(&self, seq: u64) -> Result<()> {
        let _turn = match self.sync_turn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if self.synced.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        let (file, path, upto) = {
            let st = self.lock_state();
            if let Some(f) = &st.failed {
                return Err(Error::io(&st.path, io::Error::other(f.clone())));
            }
            (st.file.clone(), st.path.clone(), st.seq)
        };
        let Some(file) = file else {
            return Ok(()); // rotated away: the rotation's syncfs covered it
        };
        let res = file.sync_data().and_then(|()| after_sync(&path));
        match res {
            Ok(()) => {
                self.synced.fetch_max(upto, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                let e = Error::io(&path, e);
                let mut st = self.lock_state();
                Err(self.fail(&mut st, e))
            }
        }
    }
}

/// Commits this thread's pending operations: one record per log, then one sync (shared
/// with concurrent committers). On failure nothing may be acknowledged.
pub(crate) fn commit() -> Result<()> {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    let mut first_err = None;
    for (wal, payload) in pending {
        if payload.is_empty() {
            continue;
        }
        // (the files are marked covered when noted)
        let res = wal.append(&payload, &[]).and_then(|seq| wal.sync_to(seq));
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            release(held);
            Ok(())
        }
    }
}

/// The first half of [`commit`]: this thread's pending operations appended (one record
/// per log), the sync still to wait for (see [`PendingSync::wait`]). On `Err` nothing may
/// be acknowledged.
pub(crate) fn commit_begin() -> Result<PendingSync> {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    let mut syncs = Vec::with_capacity(pending.len());
    let mut first_err = None;
    for (wal, payload) in pending {
        if payload.is_empty() {
            continue;
        }
        match wal.append(&payload, &[]) {
            Ok(seq) => syncs.push((wal, seq)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(PendingSync { syncs, held }),
    }
}

/// Records appended by [`commit_begin`] whose sync is still to wait for: any thread may
/// wait (concurrent waits share one `fdatasync`).
pub(crate) struct PendingSync {
    syncs: Vec<(Arc<Wal>, u64)>,
    /// Released once the records are synced (kept when the sync failed).
    held: Vec<(Arc<Wal>, u64)>,
}

impl PendingSync {
    /// Returns once the records are on stable storage; on `Err` (naming the log) they may
    /// not be acknowledged.
    pub(crate) fn wait(mut self) -> Result<()> {
        let mut first_err = None;
        for (wal, seq) in std::mem::take(&mut self.syncs) {
            if let Err(e) = wal.sync_to(seq) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => {
                // kept (never released): the writes are not durable, the old file keeps
                // their files' acknowledged versions
                self.held.clear();
                Err(e)
            }
            None => {
                release(std::mem::take(&mut self.held));
                Ok(())
            }
        }
    }
}

impl Drop for PendingSync {
    /// Never waited for (the writer stopped): nothing was acknowledged; its holds are
    /// released so a rotation's thread does not wait for them for ever.
    fn drop(&mut self) {
        release(std::mem::take(&mut self.held));
    }
}

/// Forgets this thread's pending operations (the writes failed and are reported).
pub(crate) fn discard() {
    PENDING.with(|p| p.borrow_mut().clear());
    // the writes failed and are reported: nothing waits for them
    release(HELD.with(|h| std::mem::take(&mut *h.borrow_mut())));
}

/// Whether this thread has operations waiting for a commit.
pub(crate) fn has_pending() -> bool {
    PENDING.with(|p| p.borrow().iter().any(|(_, b)| !b.is_empty()))
}

/// Waits until no rotation of `root`'s log is still retiring its previous file (tests).
#[doc(hidden)]
pub fn settle(root: &Path) {
    if let Some(w) = find(&root.join("x")).filter(|w| w.root == root) {
        w.settle();
    }
}

/// How many rotations' threads of `root`'s log wait for writes that rely on their old
/// file (tests).
#[doc(hidden)]
pub fn waiting_on_holds(root: &Path) -> usize {
    find(&root.join("x"))
        .filter(|w| w.root == root)
        .map_or(0, |w| w.waiting_on_holds.load(Ordering::SeqCst))
}

/// Test hook: from now on, rotations of `root`'s log leave their previous file and the
/// durable mark as they are, as a crash right after the switch would.
#[doc(hidden)]
pub fn abandon_rotations(root: &Path) {
    if let Some(w) = find(&root.join("x")).filter(|w| w.root == root) {
        w.abandon_rotations.store(true, Ordering::SeqCst);
    }
}

/// The durable mark of `root`'s logs: every file changed before it is on stable storage
/// (tests).
#[doc(hidden)]
pub fn durable_mark(root: &Path) -> i64 {
    read_mark(&log_dir(root))
}

/// The log files of `root`, for tests.
#[doc(hidden)]
pub fn log_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(log_dir(root))
        .map(|e| {
            e.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_log() {
        let mut payload = Vec::new();
        encode_op(&mut payload, 7, "events/a.json", Some(b"{}"));
        encode_op(&mut payload, 8, "hooks/h.json", None);
        let ops = decode_payload(&payload).unwrap();
        assert_eq!(
            ops,
            vec![
                LoggedOp {
                    stamp: 7,
                    rel: "events/a.json".into(),
                    data: Some(b"{}".to_vec())
                },
                LoggedOp {
                    stamp: 8,
                    rel: "hooks/h.json".into(),
                    data: None
                }
            ]
        );
        let rec = record(&payload);
        assert_eq!(
            record_at(&rec, 0).map(|(p, n)| (p.len(), n)),
            Some((payload.len(), rec.len()))
        );
        // every truncation is "not whole", never a wrong decode
        for cut in 0..rec.len() {
            assert!(record_at(&rec[..cut], 0).is_none());
        }
        let mut bad = rec.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(record_at(&bad, 0).is_none());
    }

    #[test]
    fn stored_paths_never_leave_the_root() {
        let root = Path::new("/data/w");
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a//../b"] {
            assert!(resolve(root, bad).is_none(), "{bad}");
        }
        assert_eq!(
            resolve(root, "events/e.json"),
            Some(root.join("events/e.json"))
        );
        assert_eq!(
            relative(root, &root.join("events/e.json")).as_deref(),
            Some("events/e.json")
        );
        assert_eq!(relative(root, Path::new("/other/x")), None);
    }

    #[test]
    fn headers_round_trip() {
        let h = Header {
            boot: "b-1".into(),
            pid: 42,
            t0: 1_700_000_000_123_456_789,
        };
        let bytes = encode_header(&h);
        assert_eq!(bytes.len(), HEADER_LEN as usize);
        assert_eq!(decode_header(&bytes), Some(h));
        assert_eq!(decode_header(b"nope"), None);
    }
}
