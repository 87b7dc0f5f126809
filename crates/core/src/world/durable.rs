//! Durability: what makes a write survive a power loss, and when it is acknowledged.
//!
//! Three modes ([`Mode`]): the default on Linux disks is the durability log
//! ([`crate::world::wal`]: every write also recorded in an append-only log, one
//! `fdatasync` per commit, replayed after a machine crash); `files` makes each file durable
//! in place, by the rules below; `off` syncs nothing. Whatever the mode, writes record
//! what they changed and [`commit`] makes all of it durable before anything is
//! acknowledged.
//!
//! The in-place rules. The format (world-local's) is many small files, each published atomically under its
//! name (a create-once `link`, or a `rename` over the old version). A write is durable
//! once both its *contents* and its *name* are on stable storage:
//!
//! 1. **Contents before the name.** Before a file is published, its data is pushed to
//!    the device ([`data_barrier`]): `fdatasync` on the unnamed or temporary file — or,
//!    on ext4 in its default `data=ordered` mode, `sync_file_range(WRITE)`, which starts
//!    the write-back now (allocating the blocks and updating the on-disk size in the
//!    running journal transaction); ext4 then never commits a transaction holding the
//!    name before that data is on disk. On file systems without a journal (ext4 can be
//!    made without one) the file is written under a temporary name and `fsync`ed whole
//!    before it is linked or renamed into place. Either way a name that survives a crash
//!    never points at contents that did not.
//! 2. **Names at the commit point.** Publishing records the directory it changed
//!    (also for deletions and new directories); [`commit`] then `fsync`s each such
//!    directory once — on ext4 only the one changed last: ext4 keeps one journal for the
//!    whole file system and commits its transactions in order, so waiting for the
//!    transaction of the newest change commits every earlier one (and each further
//!    directory `fsync` would cost one more device flush). Every write of the calling
//!    thread since its last commit is then durable. Callers acknowledge nothing before `commit` returned `Ok`: the journal
//!    writer commits once per group of appends (every run's batch waiting at that moment:
//!    group commit) before any of them is answered; every API write (`start()`'s run,
//!    `resumeHook()`, `cancel()`, a stream chunk) commits before it resolves.
//! 3. **Order.** Within a commit, files are published in the order the state machine
//!    writes them (entity, then its event; event after event). A journaling file system
//!    (ext4, XFS) commits metadata changes in order, so a crash keeps a prefix of the
//!    names published, each pointing at durable contents (rule 1): a later event never
//!    survives an earlier one. Without a journal the names of one commit may survive in
//!    any order (all of them once `commit` returned): a crash *during* a commit can leave
//!    a later event of that commit without an earlier one — never an acknowledged one —
//!    which recovery reads as a gap in the log; use a journaled file system for the
//!    ordering guarantee.
//!
//! A failed sync is an error naming the file or directory: the write is reported as
//! failed (a storage fault), never acknowledged.
//!
//! On tmpfs (nothing survives a power loss there) the syncs are skipped. The opt-out,
//! `WORKFLOW_NATIVE_SYNC=off`, skips them everywhere: writes then survive a crash of the
//! process (the page cache keeps them) but not of the machine.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// How writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The default: a durability log per data directory on Linux disks (one `fdatasync`
    /// per group of writes, see [`crate::world::wal`]); elsewhere like `Files`.
    Log,
    /// Every file and directory synced in place (rules 1-3 above).
    Files,
    /// Nothing synced (`WORKFLOW_NATIVE_SYNC=off`).
    Off,
}

/// 0: not decided yet (read `WORKFLOW_NATIVE_SYNC` on first use), 1: log, 2: off, 3: files.
static MODE: AtomicU8 = AtomicU8::new(0);

/// The durability mode (from `WORKFLOW_NATIVE_SYNC` unless set with [`set_mode`]):
/// `off` (or `0`, `false`, `no`), `files`, anything else: `Log`.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Log,
        2 => Mode::Off,
        3 => Mode::Files,
        _ => {
            let m = match std::env::var("WORKFLOW_NATIVE_SYNC")
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                Ok("off" | "0" | "false" | "no") => Mode::Off,
                Ok("files") => Mode::Files,
                _ => Mode::Log,
            };
            set_mode(m);
            m
        }
    }
}

/// Sets the durability mode for the whole process (overrides `WORKFLOW_NATIVE_SYNC`).
pub fn set_mode(m: Mode) {
    MODE.store(
        match m {
            Mode::Log => 1,
            Mode::Off => 2,
            Mode::Files => 3,
        },
        Ordering::Relaxed,
    );
}

/// Whether writes are synced before they are acknowledged (default: yes).
pub fn enabled() -> bool {
    mode() != Mode::Off
}

/// Turns syncing on (the default mode, `Log`) or off for the whole process.
pub fn set_enabled(on: bool) {
    set_mode(if on { Mode::Log } else { Mode::Off });
}

/// A point where durability is decided, as a test observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPoint<'a> {
    /// The contents of the file about to be published under this name were pushed.
    Data(&'a Path),
    /// The file is now visible under this name (not yet durable).
    Published(&'a Path),
    /// The directory was synced: the names published in it are durable.
    Dir(&'a Path),
    /// The durability log was synced: every write it records is durable.
    Log(&'a Path),
}

type Observer = Arc<dyn Fn(SyncPoint<'_>) -> io::Result<()> + Send + Sync>;

fn observer_slot() -> &'static RwLock<Option<Observer>> {
    static SLOT: OnceLock<RwLock<Option<Observer>>> = OnceLock::new();
    SLOT.get_or_init(|| {
        // Test hook (never set in production): WORKFLOW_NATIVE_TEST_FAIL_SYNC=<text>[@<n>]
        // makes directory syncs whose path contains <text> fail with EIO — every one, or
        // from the n-th such sync on (1-based).
        let spec = std::env::var("WORKFLOW_NATIVE_TEST_FAIL_SYNC")
            .ok()
            .filter(|s| !s.is_empty());
        RwLock::new(spec.map(|spec| -> Observer {
            let (text, from) = match spec.rsplit_once('@') {
                Some((t, n)) => (t.to_string(), n.parse::<u64>().unwrap_or(1)),
                None => (spec.clone(), 1),
            };
            let seen = std::sync::atomic::AtomicU64::new(0);
            Arc::new(move |p: SyncPoint<'_>| match p {
                SyncPoint::Dir(d) | SyncPoint::Log(d) if d.to_string_lossy().contains(&text) => {
                    if seen.fetch_add(1, Ordering::SeqCst) + 1 >= from {
                        Err(io::Error::from_raw_os_error(libc::EIO))
                    } else {
                        Ok(())
                    }
                }
                _ => Ok(()),
            })
        }))
    })
}

/// Installs (or removes) the observer every sync point is reported to, for tests: it
/// sees the order of data pushes, publications and directory syncs, and an `Err` it
/// returns at a `Data` or `Dir` point is the failure of that sync.
#[doc(hidden)]
pub fn set_observer(f: Option<Observer>) {
    let mut slot = match observer_slot().write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    *slot = f;
}

fn observe(p: SyncPoint<'_>) -> io::Result<()> {
    let slot = match observer_slot().read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    match &*slot {
        Some(f) => f(p),
        None => Ok(()),
    }
}

/// How a file system is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Memory only (tmpfs, ramfs): nothing to sync.
    Volatile,
    /// ext4 with ordered data: start write-back before publishing, sync directories.
    OrderedJournal,
    /// Anything else (ext4 without a journal included): each file is written under a
    /// temporary name and `fsync`ed whole (contents and inode) before it is published,
    /// and every changed directory is synced.
    Plain,
}

#[cfg(target_os = "linux")]
const EXT4_MAGIC: i64 = 0xEF53;

/// The type (`f_type`) of the file system holding `fd`.
#[cfg(target_os = "linux")]
fn fs_magic(fd: libc::c_int) -> Option<i64> {
    // SAFETY: an all-zero statfs is a valid value to be overwritten by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a valid out-pointer.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

#[cfg(target_os = "linux")]
fn kind_of_fd(fd: libc::c_int) -> Kind {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Some(magic) = fs_magic(fd) else {
        return Kind::Plain;
    };
    match magic {
        TMPFS_MAGIC | RAMFS_MAGIC => Kind::Volatile,
        EXT4_MAGIC if !ext4_writeback_mounted() && has_journal(fd) => Kind::OrderedJournal,
        _ => Kind::Plain,
    }
}

/// Whether freeing inodes makes later file creations in `dir` slow: ext4 without a
/// journal skips every inode freed in the last minutes when it allocates one (the
/// kernel's `recently_deleted`), scanning past all of them in the block group, so a
/// workload that replaces files (each replace frees the old inode) slows its own
/// creations down. There, replaced files' inodes are worth reusing (see
/// [`spare::replace`](crate::world::spare::replace)).
#[cfg(target_os = "linux")]
pub(crate) fn frees_slow_creation(dir: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(f) = std::fs::File::open(dir) else {
        return false;
    };
    fs_magic(f.as_raw_fd()) == Some(EXT4_MAGIC) && !has_journal(f.as_raw_fd())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn frees_slow_creation(_dir: &Path) -> bool {
    false
}

/// Whether the file system holding `fd` has an active journal (jbd2 lists it in
/// `/proc/fs/jbd2/<device>-<inode>`): ext4 can be made without one, and then neither
/// data ordering nor in-order metadata commits hold.
#[cfg(target_os = "linux")]
fn has_journal(fd: libc::c_int) -> bool {
    // SAFETY: an all-zero stat is a valid value to be overwritten by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let (major, minor) = (libc::major(st.st_dev), libc::minor(st.st_dev));
    let Ok(uevent) = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
    else {
        return false;
    };
    let Some(name) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) else {
        return false;
    };
    let prefix = format!("{}-", name.rsplit('/').next().unwrap_or(name));
    std::fs::read_dir("/proc/fs/jbd2")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or(false)
}

#[cfg(not(target_os = "linux"))]
fn kind_of_fd(_fd: i32) -> Kind {
    Kind::Plain
}

/// Whether any ext4 file system here is mounted `data=writeback` (no data ordering): then
/// no ext4 is trusted with ordering and every file is `fdatasync`ed.
#[cfg(target_os = "linux")]
fn ext4_writeback_mounted() -> bool {
    static ANY: OnceLock<bool> = OnceLock::new();
    *ANY.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| {
                t.lines()
                    .any(|l| l.contains(" ext4 ") && l.contains("data=writeback"))
            })
            .unwrap_or(true)
    })
}

/// A directory changed since the last commit: its path, its file system's kind and device.
struct Changed {
    dir: PathBuf,
    kind: Kind,
    dev: u64,
}

thread_local! {
    /// Directories changed by this thread since its last commit, least recently changed
    /// first.
    static PENDING: RefCell<Vec<Changed>> = const { RefCell::new(Vec::new()) };
    /// What each directory seen is (asked once per directory per thread).
    static KINDS: RefCell<HashMap<PathBuf, (Kind, u64)>> = RefCell::new(HashMap::new());
}

#[cfg(target_os = "linux")]
fn describe_dir(dir: &Path) -> (Kind, u64) {
    if let Some(k) = KINDS.with(|m| m.borrow().get(dir).copied()) {
        return k;
    }
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let described =
        std::fs::File::open(dir).and_then(|f| Ok((kind_of_fd(f.as_raw_fd()), f.metadata()?.dev())));
    let Ok(d) = described else {
        return (Kind::Plain, 0); // not cached: the directory may appear later
    };
    KINDS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 256 {
            m.clear();
        }
        m.insert(dir.to_path_buf(), d);
    });
    d
}

#[cfg(not(target_os = "linux"))]
fn describe_dir(_dir: &Path) -> (Kind, u64) {
    (Kind::Plain, 0)
}

fn kind_of_dir(dir: &Path) -> Kind {
    describe_dir(dir).0
}

/// Pushes the contents of `file` (about to be published as `name`) to the device, so the
/// name never becomes durable before them (rule 1).
pub(crate) fn data_barrier(file: &std::fs::File, name: &Path) -> io::Result<()> {
    if !enabled() || logged(name) {
        return Ok(());
    }
    let kind = match name.parent() {
        Some(dir) => kind_of_dir(dir),
        None => Kind::Plain,
    };
    match kind {
        Kind::Volatile => return Ok(()),
        Kind::OrderedJournal => start_writeback(file)?,
        Kind::Plain => file.sync_all()?,
    }
    observe(SyncPoint::Data(name))
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: an open descriptor; offset 0 / length 0 means the whole file.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(file: &std::fs::File) -> io::Result<()> {
    file.sync_data()
}

/// Whether a create-once file at `path` must be written under a temporary name (not as an
/// unnamed `O_TMPFILE` file): on file systems without a journal, an unnamed file's inode
/// is synced while it has no link, and the link count its name gives it might not reach
/// the disk — the name would then point at an inode the kernel refuses to read.
pub(crate) fn needs_named_temp(path: &Path) -> bool {
    enabled()
        && !logged(path)
        && path
            .parent()
            .is_some_and(|dir| kind_of_dir(dir) == Kind::Plain)
}

/// Records that the directory holding `path` changed (a name published or removed): the
/// next [`commit`] of this thread syncs it.
pub(crate) fn changed(path: &Path) {
    if !enabled() || logged(path) {
        return;
    }
    let _ = observe(SyncPoint::Published(path));
    if let Some(dir) = path.parent() {
        dir_changed(dir);
    }
}

/// Records that `dir` itself changed (an entry added or removed).
pub(crate) fn dir_changed(dir: &Path) {
    if !enabled() {
        return;
    }
    let (kind, dev) = describe_dir(dir);
    if kind == Kind::Volatile {
        return;
    }
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter().position(|c| c.dir == dir) {
            Some(i) if i + 1 == p.len() => {}
            Some(i) => {
                let c = p.remove(i);
                p.push(c);
            }
            None => p.push(Changed {
                dir: dir.to_path_buf(),
                kind,
                dev,
            }),
        }
    });
}

/// Records that `dir` was created (with `create_dir_all`): it is a new entry of its
/// parent, which may itself be new (the world's layout is at most two levels deep, e.g.
/// `.locks/steps`), and its own entries are to be synced.
pub(crate) fn dir_created(dir: &Path) {
    if !enabled() || logged(dir) {
        return;
    }
    dir_changed(dir);
    if let Some(parent) = dir.parent() {
        dir_changed(parent);
        if let Some(grand) = parent.parent() {
            dir_changed(grand);
        }
    }
}

/// Makes every write of this thread since its last commit durable (rule 2): syncs each
/// changed directory once. On failure every directory is still attempted and the first
/// error (naming its directory) is returned; nothing may then be acknowledged.
pub fn commit() -> Result<()> {
    let changed = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    #[cfg(target_os = "linux")]
    let mut first_err = crate::world::wal::commit().err();
    #[cfg(not(target_os = "linux"))]
    let mut first_err = None;
    for (i, c) in changed.iter().enumerate() {
        // ext4: only the directory changed last on its device (see rule 2)
        let superseded = c.kind == Kind::OrderedJournal
            && changed[i + 1..]
                .iter()
                .any(|later| later.kind == Kind::OrderedJournal && later.dev == c.dev);
        if superseded {
            continue;
        }
        if let Err(e) = sync_dir(&c.dir) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`commit`] in two halves, for a writer that goes on writing while the device syncs.
/// In the log mode the first half appends this thread's record to the durability log and
/// [`CommitWait::wait`] waits for its `fdatasync` (any thread may wait); in the other
/// modes the whole commit is made here and waiting returns at once. Nothing may be
/// acknowledged before `wait` returned `Ok`.
pub fn commit_begin() -> Result<CommitWait> {
    #[cfg(target_os = "linux")]
    if mode() == Mode::Log && PENDING.with(|p| p.borrow().is_empty()) {
        return crate::world::wal::commit_begin().map(|w| CommitWait { wal: Some(w) });
    }
    commit().map(|()| CommitWait {
        #[cfg(target_os = "linux")]
        wal: None,
    })
}

/// The second half of [`commit_begin`].
#[must_use = "nothing is durable before `wait` returned"]
pub struct CommitWait {
    #[cfg(target_os = "linux")]
    wal: Option<crate::world::wal::PendingSync>,
}

impl CommitWait {
    /// Returns once the writes committed are on stable storage (`Err`: they are not, and
    /// must not be acknowledged).
    pub fn wait(self) -> Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(w) = self.wal {
            return w.wait();
        }
        Ok(())
    }
}

/// Forgets what this thread changed without syncing (the writes failed and are reported).
pub fn discard() {
    PENDING.with(|p| p.borrow_mut().clear());
    #[cfg(target_os = "linux")]
    crate::world::wal::discard();
}

/// Whether this thread wrote something that is not durable yet.
pub fn has_pending() -> bool {
    #[cfg(target_os = "linux")]
    if crate::world::wal::has_pending() {
        return true;
    }
    PENDING.with(|p| !p.borrow().is_empty())
}

// ------------------------------------------------------------------ the log (Mode::Log)

/// Starts the durability log for the data directory `root` in this process (after
/// recovering what a machine crash left there), when the mode is `Log` and `root` is on
/// a disk. Called when a world is opened.
pub fn attach(root: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        if mode() != Mode::Log {
            return Ok(());
        }
        // the nearest existing ancestor tells the file system
        let mut probe = root;
        while !probe.exists() {
            match probe.parent() {
                Some(p) => probe = p,
                None => break,
            }
        }
        if kind_of_dir(probe) == Kind::Volatile {
            return Ok(());
        }
        crate::world::wal::set_sync_hook(observe_log);
        crate::world::wal::attach(root)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        Ok(())
    }
}

/// Whether writes under `path` are covered by a durability log.
fn logged(path: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        mode() == Mode::Log && crate::world::wal::find(path).is_some()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        false
    }
}

/// Before a write of `path`: the log exists (its start must precede the write), and a
/// file about to be replaced or removed (`replace`) is protected by a pre-image when the
/// log does not hold it yet.
pub(crate) fn before_write(path: &Path, replace: bool) -> Result<()> {
    #[cfg(target_os = "linux")]
    if mode() == Mode::Log {
        if let Some(w) = crate::world::wal::find(path) {
            return if replace { w.protect(path) } else { w.ready() };
        }
    }
    let _ = (path, replace);
    Ok(())
}

/// After a successful write of `path` (`None`: removed): recorded for the next commit.
pub(crate) fn after_write(path: &Path, data: Option<&[u8]>) {
    #[cfg(target_os = "linux")]
    if mode() == Mode::Log {
        if let Some(w) = crate::world::wal::find(path) {
            w.note(path, data);
        }
    }
    let _ = (path, data);
}

/// Reports a sync of the log at `path` to the observer (tests).
#[cfg(target_os = "linux")]
fn observe_log(path: &Path) -> io::Result<()> {
    observe(SyncPoint::Log(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    let res = std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .and_then(|()| observe(SyncPoint::Dir(dir)));
    match res {
        Ok(()) => Ok(()),
        // a directory removed meanwhile has nothing left to make durable
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Runs `f` (a write of the world) and then [`commit`]s: the result is returned only once
/// what `f` wrote is durable. A commit failure replaces a success.
pub fn committed<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let out = f();
    let synced = commit();
    match (out, synced) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}
