//! Run leases for the embedded engine: while a process executes a run it holds
//! `<data>/.workflow-native/leases/<runId>.json`. Another process takes a run over only
//! when its lease is stale: its owner's heartbeat is older than the TTL, or the owner is a
//! process on this host that no longer exists (killed). world-local and the official
//! tools ignore this directory.
//!
//! A lease is a *hard link* to its owner's file (`owners/<owner>.json`, written once per
//! process, touched as a heartbeat): taking and releasing a lease allocates and frees no
//! inode, which keeps it cheap on filesystems where inode allocation after many deletions
//! is slow (ext4 skips recently deleted inodes).

use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::fsio::{now_ms, remove_if_exists_sync, write_exclusive_sync};
use serde_json::{json, Value};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn base(root: &Path) -> PathBuf {
    root.join(".workflow-native")
}

fn lease_path(root: &Path, run_id: &str) -> Result<PathBuf> {
    assert_safe_entity_id("runId", run_id)?;
    Ok(base(root).join("leases").join(format!("{run_id}.json")))
}

fn owner_path(root: &Path, owner: &str) -> Result<PathBuf> {
    let safe = !owner.is_empty()
        && owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
        && !owner.starts_with('.');
    if !safe {
        return Err(Error::Plain(format!("Invalid lease owner \"{owner}\"")));
    }
    Ok(base(root).join("owners").join(format!("{owner}.json")))
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Writes our owner file if missing, and touches it (the heartbeat).
fn ensure_owner(root: &Path, owner: &str) -> Result<PathBuf> {
    let path = owner_path(root, owner)?;
    match std::fs::File::options().write(true).open(&path) {
        Ok(f) => {
            f.set_modified(SystemTime::now())
                .map_err(|e| Error::io(&path, e))?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let record = json!({
                "owner": owner,
                "pid": std::process::id(),
                "host": host_name(),
                "createdAt": now_ms(),
            });
            // Create-once: acquisitions run concurrently (one per run, on a thread pool),
            // and a replace would swap the inode another one is linking to its lease.
            // "Already there" means another acquisition of ours created it.
            write_exclusive_sync(&path, record.to_string().as_bytes())?;
        }
        Err(e) => return Err(Error::io(&path, e)),
    }
    Ok(path)
}

/// The inode of the lease at `path` (a link to some owner's file) if it may be taken over
/// now, `None` while its owner is live.
fn stale(path: &Path, ttl: Duration, host: &str) -> Result<Option<u64>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Some(0)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let beat = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let expired = SystemTime::now()
        .duration_since(beat)
        .map(|age| age >= ttl)
        .unwrap_or(false);
    if expired {
        return Ok(Some(meta.ino()));
    }
    let record: Option<Value> = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(record) = record else {
        return Ok(None); // being written: treat as live until it expires
    };
    let same_host = record.get("host").and_then(Value::as_str) == Some(host);
    let pid = record.get("pid").and_then(Value::as_i64).unwrap_or(0);
    Ok((same_host && !process_alive(pid)).then_some(meta.ino()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Takes or renews the lease of `run_id` for `owner` (stale after `ttl_ms` without a
/// heartbeat). Returns false when another live owner holds it.
pub fn acquire(root: &Path, run_id: &str, owner: &str, ttl_ms: u64) -> Result<bool> {
    let path = lease_path(root, run_id)?;
    let mine = ensure_owner(root, owner)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    match std::fs::hard_link(&mine, &path) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    if same_file(&mine, &path) {
        return Ok(true); // ours already; the owner file was touched above
    }
    let Some(stale_ino) = stale(&path, Duration::from_millis(ttl_ms), &host_name())? else {
        return Ok(false);
    };
    // Take over without a race: move the stale lease aside (only one process can), check
    // that what moved is the lease judged stale, then link ours in (fails if taken).
    let aside = path.with_extension(format!("json.stale.{}", crate::ids::monotonic_ulid()));
    match std::fs::rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return link_new(&mine, &path);
        }
        Err(e) => return Err(Error::io(&path, e)),
    }
    let moved_ino = std::fs::metadata(&aside).map(|m| m.ino()).ok();
    if moved_ino != Some(stale_ino) {
        // Someone renewed or took it meanwhile: put theirs back.
        let _ = std::fs::hard_link(&aside, &path);
        let _ = std::fs::remove_file(&aside);
        return Ok(false);
    }
    let _ = std::fs::remove_file(&aside);
    link_new(&mine, &path)
}

/// Links our owner file at `path` unless something is there already.
fn link_new(mine: &Path, path: &Path) -> Result<bool> {
    match std::fs::hard_link(mine, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(same_file(mine, path)),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The ids of the runs that have a lease file, held or stale (crash recovery looks at
/// the runs a dead process was executing).
pub fn leased_runs(root: &Path) -> Result<Vec<String>> {
    let dir = base(root).join("leases");
    let mut out = Vec::new();
    for name in crate::world::fsio::list_dir_sync(&dir)? {
        if let Some(id) = name.strip_suffix(".json") {
            if assert_safe_entity_id("runId", id).is_ok() {
                out.push(id.to_string());
            }
        }
    }
    Ok(out)
}

/// Gives the lease up if `owner` holds it.
pub fn release(root: &Path, run_id: &str, owner: &str) -> Result<()> {
    let path = lease_path(root, run_id)?;
    let mine = owner_path(root, owner)?;
    if same_file(&mine, &path) {
        remove_if_exists_sync(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_acquisitions_on_many_threads_at_once_all_succeed() {
        // The owner file is created by whichever acquisition comes first; the others must
        // link their leases to that same file, never to one a concurrent write replaced.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let root = root.clone();
                    std::thread::spawn(move || acquire(&root, &format!("wrun_{i}"), "me", 60_000))
                })
                .collect();
            for h in handles {
                assert!(h.join().unwrap().unwrap(), "every run's lease is taken");
            }
        }
    }

    #[test]
    fn one_owner_at_a_time_and_renewal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(acquire(dir.path(), "wrun_A", "a", 60_000).unwrap());
        assert!(
            acquire(dir.path(), "wrun_A", "a", 60_000).unwrap(),
            "renewal"
        );
        assert!(!acquire(dir.path(), "wrun_A", "b", 60_000).unwrap());
        release(dir.path(), "wrun_A", "b").unwrap(); // not b's: kept
        assert!(!acquire(dir.path(), "wrun_A", "b", 60_000).unwrap());
        release(dir.path(), "wrun_A", "a").unwrap();
        assert!(acquire(dir.path(), "wrun_A", "b", 60_000).unwrap());
    }

    #[test]
    fn expired_or_dead_owner_leases_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        assert!(acquire(dir.path(), "wrun_A", "a", 60_000).unwrap());
        assert!(acquire(dir.path(), "wrun_A", "b", 0).unwrap(), "expired");
        // a live heartbeat of a process that does not exist on this host
        let dead = owner_path(dir.path(), "dead").unwrap();
        let rec = json!({"owner": "dead", "pid": i32::MAX, "host": host_name()});
        std::fs::write(&dead, rec.to_string()).unwrap();
        let lease = lease_path(dir.path(), "wrun_B").unwrap();
        std::fs::hard_link(&dead, &lease).unwrap();
        assert!(
            acquire(dir.path(), "wrun_B", "b", 60_000).unwrap(),
            "dead pid"
        );
        // the same on another host is respected until it expires
        let remote = owner_path(dir.path(), "remote").unwrap();
        let rec = json!({"owner": "remote", "pid": i32::MAX, "host": "elsewhere"});
        std::fs::write(&remote, rec.to_string()).unwrap();
        let lease = lease_path(dir.path(), "wrun_C").unwrap();
        std::fs::hard_link(&remote, &lease).unwrap();
        assert!(!acquire(dir.path(), "wrun_C", "b", 60_000).unwrap());
    }

    #[test]
    fn unsafe_ids_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = acquire(dir.path(), "../x", "a", 1).unwrap_err();
        assert_eq!(e.name(), "UnsafeEntityIdError");
        assert!(acquire(dir.path(), "wrun_A", "../../x", 1).is_err());
    }
}
