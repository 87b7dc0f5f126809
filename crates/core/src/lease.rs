//! Run leases for the embedded engine: while a process executes a run it holds
//! `<data>/.workflow-native/leases/<runId>.json`, renewed periodically. Another process
//! takes a run over only when its lease is stale: expired, or held by a process on this
//! host that no longer exists (killed). world-local and the official tools ignore this
//! directory.

use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::fsio::{
    now_ms, read_json_sync, remove_if_exists_sync, write_exclusive_sync, write_replace_sync,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn lease_path(root: &Path, run_id: &str) -> Result<PathBuf> {
    assert_safe_entity_id("runId", run_id)?;
    Ok(root
        .join(".workflow-native")
        .join("leases")
        .join(format!("{run_id}.json")))
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

/// Whether a lease held by someone else may be taken over now.
fn stale(lease: &Value, now: f64, host: &str) -> bool {
    let expires = lease
        .get("expiresAt")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if expires <= now {
        return true;
    }
    let same_host = lease.get("host").and_then(Value::as_str) == Some(host);
    let pid = lease.get("pid").and_then(Value::as_i64).unwrap_or(0);
    same_host && !process_alive(pid)
}

/// Takes or renews the lease of `run_id` for `owner` (valid `ttl_ms`). Returns false when
/// another live owner holds it.
pub fn acquire(root: &Path, run_id: &str, owner: &str, ttl_ms: u64) -> Result<bool> {
    let path = lease_path(root, run_id)?;
    let host = host_name();
    let now = now_ms();
    let record = json!({
        "owner": owner,
        "pid": std::process::id(),
        "host": host,
        "expiresAt": now + ttl_ms as f64,
    });
    let bytes = record.to_string().into_bytes();
    if write_exclusive_sync(&path, &bytes)? {
        return Ok(true);
    }
    let current = match read_json_sync(&path) {
        Ok(v) => v,
        // A torn or foreign file is no lease: replace it.
        Err(Error::CorruptFile { .. }) => None,
        Err(e) => return Err(e),
    };
    let held_by_us = current
        .as_ref()
        .and_then(|v| v.get("owner"))
        .and_then(Value::as_str)
        == Some(owner);
    if let Some(cur) = &current {
        if !held_by_us && !stale(cur, now, &host) {
            return Ok(false);
        }
    }
    write_replace_sync(&path, &bytes)?;
    // Two processes taking over the same stale lease: the last rename wins; read back.
    let after = read_json_sync(&path).ok().flatten();
    Ok(after
        .as_ref()
        .and_then(|v| v.get("owner"))
        .and_then(Value::as_str)
        == Some(owner))
}

/// Gives the lease up if `owner` holds it.
pub fn release(root: &Path, run_id: &str, owner: &str) -> Result<()> {
    let path = lease_path(root, run_id)?;
    let current = read_json_sync(&path).ok().flatten();
    if current
        .as_ref()
        .and_then(|v| v.get("owner"))
        .and_then(Value::as_str)
        == Some(owner)
    {
        remove_if_exists_sync(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(acquire(dir.path(), "wrun_A", "a", 0).unwrap());
        assert!(
            acquire(dir.path(), "wrun_A", "b", 60_000).unwrap(),
            "expired"
        );
        // a live lease of a process that does not exist on this host
        let path = lease_path(dir.path(), "wrun_B").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let dead = json!({"owner": "x", "pid": i32::MAX, "host": host_name(), "expiresAt": now_ms() + 60_000.0});
        std::fs::write(&path, dead.to_string()).unwrap();
        assert!(
            acquire(dir.path(), "wrun_B", "b", 60_000).unwrap(),
            "dead pid"
        );
        // the same on another host is respected until it expires
        let remote = json!({"owner": "x", "pid": i32::MAX, "host": "elsewhere", "expiresAt": now_ms() + 60_000.0});
        std::fs::write(&path, remote.to_string()).unwrap();
        assert!(!acquire(dir.path(), "wrun_B", "b", 60_000).unwrap());
    }

    #[test]
    fn unsafe_run_ids_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = acquire(dir.path(), "../x", "a", 1).unwrap_err();
        assert_eq!(e.name(), "UnsafeEntityIdError");
    }
}
