//! Work a writer thread does ahead of need, in the time it would otherwise spend waiting
//! for its next job: unnamed files (`O_TMPFILE`) opened in the directories it publishes
//! create-once files in, and the closing of the files it published.
//!
//! Creating a file costs an inode allocation (and, on a journalling file system, an
//! orphan-list entry) before anything is written; closing it after its name is published
//! is a system call of its own. Neither has to happen while a caller waits: an engine's
//! journal thread is idle between a step's two appends (the step's code and the
//! workflow's next move run on the JS thread), so it opens the next files then and
//! closes the published ones. A spare file is exactly what the write would have opened
//! (same directory, same flags and mode), taken just before its contents are written
//! and its name linked; the bytes, the names and the durability of what is published
//! do not change.
//!
//! Only threads that [`enable`] it keep spares (the engine's journal threads); on every
//! other thread [`take`] finds none and [`retire`] closes at once. A thread's spares are
//! bounded ([`MAX_DIRS`] directories × [`MAX_PER_DIR`] files) and closed when it ends; a
//! spare never linked is freed by the kernel on close (or by the file system's orphan
//! clean-up after a crash), leaving nothing behind.
//!
//! Where freeing an inode slows every later file creation (ext4 without a journal), the
//! same threads also reuse the inodes of the files they replace instead of freeing them
//! ([`replace`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Directories a thread keeps spares for (the least recently used is dropped).
pub const MAX_DIRS: usize = 8;
/// Spares kept per directory: what one group of appends publishes there at most.
pub const MAX_PER_DIR: usize = 4;
/// Published files waiting to be closed before they are closed at once anyway.
const MAX_RETIRED: usize = 64;
/// Replaced inodes kept per directory for reuse (see [`replace`]).
pub const MAX_RECYCLED: usize = 64;
/// How long a replaced inode rests before it is reused: a reader that had the old
/// version open is also checked for (a lease), this only closes the window of an
/// `open` in progress at the moment of the replace.
const RECYCLE_AFTER: Duration = Duration::from_millis(20);
/// Old versions larger than this are not kept (disk space over inode reuse).
const KEEP_BYTES: u64 = 64 * 1024;

struct DirSpares {
    dir: PathBuf,
    cdir: Option<CString>,
    files: Vec<File>,
    /// taken since the pool was last full: how many to keep
    taken: usize,
    want: usize,
    last_use: u64,
}

#[derive(Default)]
struct Spares {
    enabled: bool,
    dirs: Vec<DirSpares>,
    retired: Vec<File>,
    clock: u64,
    /// where this thread keeps replaced inodes (see [`replace`]); none: not kept
    keep_in: Option<KeepDir>,
    recycled: Vec<Recycler>,
    /// tests: reuse inodes whatever the file system, after this rest
    force_recycling: bool,
    rest: Option<Duration>,
}

/// This thread's private directory of kept inodes: created on first use, removed with
/// everything in it when the thread ends (or, after a crash, by the next writer of the
/// same data directory on this host; see [`remove_abandoned`]).
struct KeepDir {
    path: PathBuf,
    created: bool,
}

impl Drop for KeepDir {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A replaced file's inode, kept under a private name in its directory for reuse.
struct Recycled {
    name: PathBuf,
    /// the inode `name` held when it was kept (checked before reuse)
    file: File,
    since: Instant,
}

/// The inodes kept in one directory (see [`replace`]).
struct Recycler {
    dir: PathBuf,
    /// whether reuse pays here (ext4 without a journal)
    pays: bool,
    kept: VecDeque<Recycled>,
    last_use: u64,
}

impl Drop for Recycler {
    fn drop(&mut self) {
        for r in self.kept.drain(..) {
            let _ = std::fs::remove_file(&r.name);
        }
    }
}

/// `WORKFLOW_NATIVE_REUSE_INODES=off` (or `0`, `false`, `no`): replaced files' inodes
/// are never reused (see [`replace`]).
fn recycling_allowed() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !std::env::var("WORKFLOW_NATIVE_REUSE_INODES").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            )
        })
    })
}

/// Where the writers of the data directory `root` keep replaced inodes, one directory
/// per thread named `<host>:<pid>:<ulid>`.
fn keep_root(root: &Path) -> PathBuf {
    root.join(".workflow-native").join("recycled")
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// This thread keeps spares from now on (its idle loop calls [`work`]). With `root`
/// (the data directory it writes), it also reuses the inodes of the files it replaces
/// there, where that pays (see [`replace`]).
pub fn enable(root: Option<&Path>) {
    // (unnamed files and the exchange of names are Linux features)
    #[cfg(target_os = "linux")]
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        s.enabled = true;
        s.keep_in = root.map(|root| KeepDir {
            path: keep_root(root).join(format!(
                "{}:{}:{}",
                crate::host::host_name(),
                std::process::id(),
                crate::ids::monotonic_ulid()
            )),
            created: false,
        });
    });
    #[cfg(not(target_os = "linux"))]
    let _ = root;
}

/// Removes the kept-inode directories of writers of `root` that ended without removing
/// theirs (a process killed, or exited without closing its writer): those of dead
/// processes of this host. (Kept inodes hold old versions of world files, nothing
/// anyone reads.)
pub fn remove_abandoned(root: &Path) {
    let Ok(entries) = std::fs::read_dir(keep_root(root)) else {
        return;
    };
    let host = crate::host::host_name();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let mut parts = name.split(':');
        let (Some(h), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i64>() else {
            continue;
        };
        if h == host && !crate::host::process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether this thread keeps spares.
pub fn enabled() -> bool {
    SPARES.with(|s| s.borrow().enabled)
}

/// A spare unnamed file opened in `dir` (write-only, mode 0666 less the umask, nothing
/// written), if this thread has one. Records the demand either way.
pub(crate) fn take(dir: &Path) -> Option<File> {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if !s.enabled {
            return None;
        }
        s.clock += 1;
        let now = s.clock;
        if let Some(d) = s.dirs.iter_mut().find(|d| d.dir == dir) {
            d.last_use = now;
            d.taken += 1;
            d.want = d.want.max(d.taken).min(MAX_PER_DIR);
            return d.files.pop();
        }
        if s.dirs.len() >= MAX_DIRS {
            // the least recently used directory gives its place (its spares are closed)
            if let Some(i) = (0..s.dirs.len()).min_by_key(|&i| s.dirs[i].last_use) {
                s.dirs.swap_remove(i);
            }
        }
        s.dirs.push(DirSpares {
            dir: dir.to_path_buf(),
            cdir: None,
            files: Vec::new(),
            taken: 1,
            want: 1,
            last_use: now,
        });
        None
    })
}

/// A file whose name is published (or that is discarded): closed during idle time on a
/// thread that keeps spares, at once elsewhere.
pub(crate) fn retire(file: File) {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.enabled && s.retired.len() < MAX_RETIRED {
            s.retired.push(file);
        }
        // else `file` is dropped (closed) here
    })
}

/// One unit of idle work (closing the retired files, or opening one spare); `false`
/// when there is nothing left to do. Call it between polls for the next job.
pub fn work() -> bool {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if !s.enabled {
            return false;
        }
        if !s.retired.is_empty() {
            s.retired.clear();
            return true;
        }
        let Some(i) = s.dirs.iter().position(|d| d.files.len() < d.want) else {
            for d in s.dirs.iter_mut() {
                d.taken = 0;
            }
            return false;
        };
        match open_unnamed(&mut s.dirs[i]) {
            Some(f) => s.dirs[i].files.push(f),
            // the directory is gone (or refuses): forgotten until a write uses it again
            None => {
                s.dirs.swap_remove(i);
            }
        }
        true
    })
}

/// Closes every spare and retired file of this thread (its directories may be going away).
pub fn clear() {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        s.dirs.clear();
        s.retired.clear();
        s.recycled.clear();
    })
}

/// Atomic replace of `path` with `data` reusing the inode of an earlier replaced file,
/// on threads that keep spares where freeing inodes is costly (see
/// [`durable::frees_slow_creation`](crate::world::durable::frees_slow_creation)).
/// `Ok(false)`: not done, the caller replaces the usual way (temp file + rename).
///
/// A replace by rename frees the old inode; here the new contents are written into a
/// kept inode under a private name (in this thread's directory of kept inodes, on the
/// same file system) and swapped with the target
/// (`renameat2(RENAME_EXCHANGE)`: readers see the old or the new file, never a mix),
/// and the old inode is kept under the private name in turn. A kept inode is reused
/// only when, after [`RECYCLE_AFTER`], it still has one name (the private one, which it
/// still holds) and nobody has it open (a write lease is granted only then; taken and
/// given back at once): a reader that opened the old version keeps reading it
/// unchanged, as after a rename.
#[cfg(target_os = "linux")]
pub(crate) fn replace(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let Some(dir) = path.parent() else {
        return Ok(false);
    };
    let Some((name, file)) = SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if !s.enabled {
            return None;
        }
        s.clock += 1;
        let now = s.clock;
        let i = match s.recycled.iter().position(|r| r.dir == dir) {
            Some(i) => i,
            None => {
                if s.recycled.len() >= MAX_DIRS {
                    if let Some(j) = (0..s.recycled.len()).min_by_key(|&j| s.recycled[j].last_use) {
                        s.recycled.swap_remove(j);
                    }
                }
                let pays = s.keep_in.is_some()
                    && (s.force_recycling
                        || (recycling_allowed()
                            && crate::world::durable::frees_slow_creation(dir)));
                s.recycled.push(Recycler {
                    dir: dir.to_path_buf(),
                    pays,
                    kept: VecDeque::new(),
                    last_use: now,
                });
                s.recycled.len() - 1
            }
        };
        let r = &mut s.recycled[i];
        r.last_use = now;
        // (in-place durability syncs each published file and its directory: its
        // guarantees are stated for renames, so nothing is exchanged there)
        if !r.pays || crate::world::durable::needs_named_temp(path) {
            return None;
        }
        // the oldest kept inode, once rested and unused; else a new private name
        let rest = s.rest.unwrap_or(RECYCLE_AFTER);
        let r = &mut s.recycled[i];
        while r.kept.front().is_some_and(|k| k.since.elapsed() >= rest) {
            let Some(k) = r.kept.pop_front() else { break };
            match reusable(&k) {
                Reuse::Yes => return Some((k.name, Some(k.file))),
                // still open somewhere: tried again later
                Reuse::Later => {
                    r.kept.push_back(Recycled {
                        since: Instant::now(),
                        ..k
                    });
                    break;
                }
                // linked elsewhere, replaced under us, ...: given up (its name removed)
                Reuse::Never => {
                    let _ = std::fs::remove_file(&k.name);
                }
            }
        }
        if r.kept.len() >= MAX_RECYCLED {
            return None;
        }
        let keep = s.keep_in.as_mut()?;
        if !keep.created {
            std::fs::create_dir_all(&keep.path).ok()?;
            keep.created = true;
        }
        let name = keep.path.join(crate::ids::monotonic_ulid());
        Some((name, None))
    }) else {
        return Ok(false);
    };
    let (cname, cpath) = (c_path(&name)?, c_path(path)?);
    let file = match file {
        Some(f) => f,
        None => match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
        {
            Ok(f) => f,
            Err(_) => return Ok(false),
        },
    };
    let written = file
        .write_all_at(data, 0)
        .and_then(|()| file.set_len(data.len() as u64))
        .and_then(|()| crate::world::durable::data_barrier(&file, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&name);
        return Err(e);
    }
    // the inode the target holds now: kept once swapped out
    let old = std::fs::OpenOptions::new().write(true).open(path);
    let swapped = old.is_ok()
        // SAFETY: NUL-terminated paths.
        && unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                cname.as_ptr(),
                libc::AT_FDCWD,
                cpath.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        } == 0;
    // closed now, not in idle time: once this version is replaced in turn, its inode is
    // kept, and reused only when nobody (this thread included) has it open
    drop(file);
    if !swapped {
        // no target yet (or no exchange here): an ordinary rename, nothing kept
        return match std::fs::rename(&name, path) {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = std::fs::remove_file(&name);
                if e.raw_os_error() == Some(libc::EXDEV) {
                    // the target lives on another file system than the kept inodes
                    SPARES.with(|s| {
                        if let Some(r) = s.borrow_mut().recycled.iter_mut().find(|r| r.dir == dir) {
                            r.pays = false;
                        }
                    });
                    return Ok(false);
                }
                Err(e)
            }
        };
    }
    if let Ok(old) = old {
        // a large old version is not kept (it is not emptied either: a reader may be
        // reading it); its name goes, the inode is freed once nobody has it open
        if !old.metadata().is_ok_and(|m| m.len() <= KEEP_BYTES) {
            let _ = std::fs::remove_file(&name);
            return Ok(true);
        }
        SPARES.with(|s| {
            let mut s = s.borrow_mut();
            match s.recycled.iter_mut().find(|r| r.dir == dir) {
                Some(r) => r.kept.push_back(Recycled {
                    name,
                    file: old,
                    since: Instant::now(),
                }),
                None => {
                    let _ = std::fs::remove_file(&name);
                }
            }
        });
    }
    Ok(true)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn replace(_path: &Path, _data: &[u8]) -> std::io::Result<bool> {
    Ok(false)
}

/// `p` as a C string (an `InvalidInput` error when it holds a NUL).
#[cfg(target_os = "linux")]
pub(crate) fn c_path(p: &Path) -> std::io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

enum Reuse {
    Yes,
    Later,
    Never,
}

/// Whether a kept inode may be written: it is still the only file its private name
/// holds, has no other name, and nobody has it open.
#[cfg(target_os = "linux")]
fn reusable(k: &Recycled) -> Reuse {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let (Ok(held), Ok(named)) = (k.file.metadata(), std::fs::symlink_metadata(&k.name)) else {
        return Reuse::Never;
    };
    if held.nlink() != 1 || held.ino() != named.ino() || held.dev() != named.dev() {
        return Reuse::Never;
    }
    let fd = k.file.as_raw_fd();
    // SAFETY: an open descriptor; a write lease is granted only when no other open file
    // description of the inode exists (any process), and is given back at once.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY) => Reuse::Later,
            _ => Reuse::Never, // leases unavailable: not reused
        };
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
    Reuse::Yes
}

#[cfg(target_os = "linux")]
fn open_unnamed(d: &mut DirSpares) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    if d.cdir.is_none() {
        d.cdir = Some(CString::new(d.dir.as_os_str().as_bytes()).ok()?);
    }
    open_unnamed_in(d.cdir.as_ref()?).ok()
}

/// `open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666)`: an unnamed file in `dir`, as a
/// create-once write opens it (here ahead of need, or by [`fsio`](crate::world::fsio)
/// when no spare is ready).
#[cfg(target_os = "linux")]
pub(crate) fn open_unnamed_in(dir: &std::ffi::CStr) -> std::io::Result<File> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: a NUL-terminated path; the returned fd is checked, then owned by a File.
    let fd = unsafe {
        libc::open(
            dir.as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn open_unnamed(_d: &mut DirSpares) -> Option<File> {
    None
}

/// Test support (other modules' tests drive a thread's spares).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Spare files ready for `dir` on this thread.
    pub(crate) fn spares_in(dir: &Path) -> usize {
        SPARES.with(|s| {
            s.borrow()
                .dirs
                .iter()
                .find(|d| d.dir == dir)
                .map_or(0, |d| d.files.len())
        })
    }

    /// Whether this thread closed every file it published.
    pub(crate) fn all_closed() -> bool {
        SPARES.with(|s| s.borrow().retired.is_empty())
    }

    /// Reuse inodes whatever the file system, without rest.
    pub(crate) fn recycle_everywhere() {
        SPARES.with(|s| {
            let mut s = s.borrow_mut();
            s.force_recycling = true;
            s.rest = Some(Duration::ZERO);
        });
    }

    pub(crate) fn keep_dirs(root: &Path) -> usize {
        std::fs::read_dir(keep_root(root)).map_or(0, |d| d.count())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::testing::spares_in as count;
    use super::*;

    #[test]
    fn a_thread_that_does_not_enable_keeps_nothing() {
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().unwrap();
            assert!(take(dir.path()).is_none());
            assert!(!work());
            assert_eq!(count(dir.path()), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn spares_follow_the_demand_and_stay_bounded() {
        std::thread::spawn(|| {
            enable(None);
            let dir = tempfile::tempdir().unwrap();
            // first use: nothing spare yet, one wanted
            assert!(take(dir.path()).is_none());
            while work() {}
            assert_eq!(count(dir.path()), 1);
            // three taken in one burst: three kept from then on
            for _ in 0..3 {
                take(dir.path());
            }
            while work() {}
            assert_eq!(count(dir.path()), 3);
            for _ in 0..100 {
                take(dir.path());
            }
            while work() {}
            assert_eq!(count(dir.path()), MAX_PER_DIR);
            // more directories than kept: the least recently used ones give way
            let others: Vec<_> = (0..MAX_DIRS + 2)
                .map(|_| tempfile::tempdir().unwrap())
                .collect();
            for d in &others {
                take(d.path());
            }
            while work() {}
            SPARES.with(|s| assert_eq!(s.borrow().dirs.len(), MAX_DIRS));
            assert_eq!(count(dir.path()), 0);
            clear();
            SPARES.with(|s| assert!(s.borrow().dirs.is_empty()));
        })
        .join()
        .unwrap();
    }

    /// A directory where create-once files are published unnamed whatever the sync mode
    /// (tmpfs: nothing to sync, so no named temp file is needed).
    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm").unwrap()
    }

    #[test]
    fn abandoned_keep_dirs_of_dead_processes_are_removed() {
        let root = tmp();
        let keep = keep_root(root.path());
        let host = crate::host::host_name();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_dir = keep.join(format!("{host}:{dead}:01ABC"));
        let live_dir = keep.join(format!("{host}:{}:01ABD", std::process::id()));
        let other_host = keep.join(format!("{host}-elsewhere:{dead}:01ABE"));
        for d in [&dead_dir, &live_dir, &other_host] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("01X"), b"old").unwrap();
        }
        remove_abandoned(root.path());
        assert!(!dead_dir.exists());
        assert!(live_dir.exists());
        assert!(other_host.exists());
    }

    #[test]
    fn a_directory_that_refuses_is_forgotten() {
        std::thread::spawn(|| {
            enable(None);
            let dir = tempfile::tempdir().unwrap();
            let gone = dir.path().join("missing");
            take(&gone);
            assert!(work()); // the attempt, refused
            assert!(!work());
            SPARES.with(|s| assert!(s.borrow().dirs.is_empty()));
        })
        .join()
        .unwrap();
    }
}
