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

use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Directories a thread keeps spares for (the least recently used is dropped).
pub const MAX_DIRS: usize = 8;
/// Spares kept per directory: what one group of appends publishes there at most.
pub const MAX_PER_DIR: usize = 4;
/// Published files waiting to be closed before they are closed at once anyway.
const MAX_RETIRED: usize = 64;

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
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// This thread keeps spares from now on (its idle loop calls [`work`]).
pub fn enable() {
    // (unnamed files are a Linux feature)
    #[cfg(target_os = "linux")]
    SPARES.with(|s| s.borrow_mut().enabled = true);
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
    })
}

#[cfg(target_os = "linux")]
fn open_unnamed(d: &mut DirSpares) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::FromRawFd;
    if d.cdir.is_none() {
        d.cdir = Some(CString::new(d.dir.as_os_str().as_bytes()).ok()?);
    }
    let cdir = d.cdir.as_ref()?;
    // SAFETY: a NUL-terminated path; the returned fd is checked, then owned by a File.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Some(unsafe { File::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn open_unnamed(_d: &mut DirSpares) -> Option<File> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn count(dir: &Path) -> usize {
        SPARES.with(|s| {
            s.borrow()
                .dirs
                .iter()
                .find(|d| d.dir == dir)
                .map_or(0, |d| d.files.len())
        })
    }

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
            enable();
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

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// What a thread keeping spares publishes is what any thread publishes: same bytes,
    /// same mode, same create-once refusal, empty files included.
    #[test]
    fn published_files_are_the_same_with_spares() {
        use crate::world::fsio::{write_exclusive_sync, write_replace_sync};
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
            enable();
            let fds = open_fds();
            let out = write_all(&p2);
            // spares were used (the directory has some ready) and published files closed
            assert!(count(&p2) >= 1);
            assert!(open_fds() <= fds + MAX_PER_DIR);
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
        use crate::world::fsio::write_exclusive_sync;
        std::thread::spawn(|| {
            enable();
            let root = tmp();
            let dir = root.path().join("events");
            std::fs::create_dir(&dir).unwrap();
            assert!(write_exclusive_sync(&dir.join("a.json"), b"1").unwrap());
            while work() {}
            assert_eq!(count(&dir), 1);
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
    fn a_directory_that_refuses_is_forgotten() {
        std::thread::spawn(|| {
            enable();
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
