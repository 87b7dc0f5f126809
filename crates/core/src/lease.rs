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
//!
//! Durability: a lease outlives no machine crash that matters — every process holding a
//! lease on this machine dies with it, and a lease whose owner is gone is stale (a dead
//! pid on this host, or a heartbeat older than its time to live). So taking, renewing and
//! releasing a lease syncs nothing and goes through no durability log: a lease file that
//! reappears after a power loss is a stale one. Only the owner file, written once per
//! process, is synced (by itself, outside the log: a lease linked to an owner file whose
//! contents were lost would read as a corrupt lease, and be reported when taken over).

use crate::error::{Error, Result};
use crate::host::{host_name, process_alive};
use crate::ids::assert_safe_entity_id;
use crate::world::fsio::{now_ms, parse_json};
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
            publish_owner(&path, record.to_string().as_bytes())?;
        }
        Err(e) => return Err(Error::io(&path, e)),
    }
    Ok(path)
}

/// Publishes an owner file whole and synced, once: written under a name of its own, synced,
/// then linked in (an owner file already there is another acquisition's of this process).
/// Outside the durability log (see the module's note): its sync is its own.
fn publish_owner(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Plain(format!("no directory for {}", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension(format!("json.tmp.{}", crate::ids::monotonic_ulid()));
    let written = std::fs::File::create_new(&tmp)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, data)?;
            f.sync_all()
        })
        .map_err(|e| Error::io(&tmp, e));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    });
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Whether the lease at `path` (a link to some owner's file) may be taken over now.
enum Held {
    /// by a live owner
    Live,
    /// no more: its inode (0 when the file is gone), and why it is not a lease when it
    /// is not one (a corrupt file, a directory)
    Stale(u64, Option<Error>),
}

/// A lease is a complete owner record from the moment its name exists (owner files are
/// published whole, leases are links to them): contents that are not one are a corrupt
/// file, and a corrupt file is not a live owner.
fn stale(path: &Path, ttl: Duration, host: &str) -> Result<Held> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Held::Stale(0, None)),
        Err(e) => return Err(Error::io(path, e)),
    };
    if !meta.is_file() {
        return Ok(Held::Stale(
            meta.ino(),
            Some(Error::corrupt(
                path,
                "not a lease file (a directory or other non-file)",
            )),
        ));
    }
    let beat = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let expired = SystemTime::now()
        .duration_since(beat)
        .map(|age| age >= ttl)
        .unwrap_or(false);
    if expired {
        return Ok(Held::Stale(meta.ino(), None));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Held::Stale(0, None)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let record = match parse_json(path, &bytes) {
        Ok(v) => v,
        Err(e) => return Ok(Held::Stale(meta.ino(), Some(e))),
    };
    let (Some(pid), Some(owner_host)) = (
        record.get("pid").and_then(Value::as_i64),
        record.get("host").and_then(Value::as_str),
    ) else {
        return Ok(Held::Stale(
            meta.ino(),
            Some(Error::corrupt(
                path,
                "not a lease record (needs a number \"pid\" and a string \"host\")",
            )),
        ));
    };
    if owner_host == host && !process_alive(pid) {
        return Ok(Held::Stale(meta.ino(), None));
    }
    Ok(Held::Live)
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    // A file that is not there is not the same file (no lease, or no owner file any more);
    // any other failure to look is a storage fault, reported with the path, never taken
    // for a lost lease.
    let meta = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    };
    Ok(match (meta(a)?, meta(b)?) {
        (Some(x), Some(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    })
}

/// Whether `owner` holds the lease of `run_id` now (its lease file is a link to the
/// owner's file). The engine's journal checks it before each batch of a run: a process
/// that lost the lease (stopped for longer than the lease's time to live, then resumed)
/// writes nothing more for the run.
pub fn holds(root: &Path, run_id: &str, owner: &str) -> Result<bool> {
    let path = lease_path(root, run_id)?;
    let mine = owner_path(root, owner)?;
    same_file(&mine, &path)
}

/// Takes or renews the lease of `run_id` for `owner` (stale after `ttl_ms` without a
/// heartbeat). Returns false when another live owner holds it.
pub fn acquire(root: &Path, run_id: &str, owner: &str, ttl_ms: u64) -> Result<bool> {
    acquire_reporting(root, run_id, owner, ttl_ms).map(|a| a.held)
}

/// Renews the lease `owner` holds on `run_id` (its heartbeat is touched): `false` when it
/// is not `owner`'s any more — taken over, or released by the process that took it over.
/// A renewal never takes a lease (back): only a new execution does, through [`acquire`].
pub fn renew(root: &Path, run_id: &str, owner: &str) -> Result<bool> {
    if !holds(root, run_id, owner)? {
        return Ok(false);
    }
    ensure_owner(root, owner)?;
    Ok(true)
}

/// The outcome of [`acquire_reporting`].
#[derive(Debug)]
pub struct Acquired {
    /// this owner holds the lease now
    pub held: bool,
    /// the lease file found was not a lease (corrupt contents, a directory): it was taken
    /// over as not live, and this names it for the operator
    pub replaced: Option<Error>,
}

/// [`acquire`], telling also when the lease it found was a corrupt file it replaced.
pub fn acquire_reporting(root: &Path, run_id: &str, owner: &str, ttl_ms: u64) -> Result<Acquired> {
    let path = lease_path(root, run_id)?;
    let mine = ensure_owner(root, owner)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let done = |held: bool, replaced: Option<Error>| Ok(Acquired { held, replaced });
    match std::fs::hard_link(&mine, &path) {
        Ok(()) => return done(true, None),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    if same_file(&mine, &path)? {
        return done(true, None); // ours already; the owner file was touched above
    }
    let (stale_ino, replaced) = match stale(&path, Duration::from_millis(ttl_ms), &host_name())? {
        Held::Live => return done(false, None),
        Held::Stale(ino, why) => (ino, why),
    };
    // Take over without a race: move the stale lease aside (only one process can), check
    // that what moved is the lease judged stale, then link ours in (fails if taken).
    let aside = path.with_extension(format!("json.stale.{}", crate::ids::monotonic_ulid()));
    match std::fs::rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return done(link_new(&mine, &path)?, None);
        }
        Err(e) => return Err(Error::io(&path, e)),
    }
    let moved = std::fs::symlink_metadata(&aside).ok();
    if moved.as_ref().map(MetadataExt::ino) != Some(stale_ino) {
        // Someone renewed or took it meanwhile: put theirs back.
        let _ = std::fs::hard_link(&aside, &path);
        let _ = std::fs::remove_file(&aside);
        return done(false, None);
    }
    if moved.is_some_and(|m| m.is_dir()) {
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        let _ = std::fs::remove_file(&aside);
    }
    let held = link_new(&mine, &path)?;
    done(held, if held { replaced } else { None })
}

/// Links our owner file at `path` unless something is there already.
fn link_new(mine: &Path, path: &Path) -> Result<bool> {
    match std::fs::hard_link(mine, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => same_file(mine, path),
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
    if same_file(&mine, &path)? {
        // (not through the durability log: see the module's note)
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
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
    fn a_lease_that_cannot_be_looked_at_is_a_storage_fault_not_a_lost_lease() {
        let dir = tempfile::tempdir().unwrap();
        assert!(acquire(dir.path(), "wrun_A", "a", 60_000).unwrap());
        assert!(holds(dir.path(), "wrun_A", "a").unwrap());
        // the leases directory replaced by a file: stat fails with ENOTDIR
        let leases = dir.path().join(".workflow-native").join("leases");
        std::fs::remove_dir_all(&leases).unwrap();
        std::fs::write(&leases, b"not a directory").unwrap();
        let e = holds(dir.path(), "wrun_A", "a").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("leases"), "names the path: {text}");
        assert!(
            renew(dir.path(), "wrun_A", "a").is_err(),
            "renewal reports it too"
        );
        assert!(
            release(dir.path(), "wrun_A", "a").is_err(),
            "release reports it too"
        );
        // a lease that is simply gone is not held (no fault)
        std::fs::remove_file(&leases).unwrap();
        assert!(!holds(dir.path(), "wrun_A", "a").unwrap());
        release(dir.path(), "wrun_A", "a").unwrap();
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
    fn a_renewal_never_takes_a_lease_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(acquire(root, "wrun_r", "a", 60_000).unwrap());
        assert!(renew(root, "wrun_r", "a").unwrap());
        assert!(!renew(root, "wrun_r", "b").unwrap());
        release(root, "wrun_r", "a").unwrap();
        assert!(!renew(root, "wrun_r", "a").unwrap());
        assert!(leased_runs(root).unwrap().is_empty());
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
    fn a_lease_that_is_not_a_lease_record_is_taken_over_and_named() {
        let dir = tempfile::tempdir().unwrap();
        type Make = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Make)> = vec![
            ("empty", Box::new(|p| std::fs::write(p, b"").unwrap())),
            (
                "garbage",
                Box::new(|p| std::fs::write(p, b"\xff\x00{{nope").unwrap()),
            ),
            (
                "truncated",
                Box::new(|p| std::fs::write(p, b"{\"owner\":\"x\",\"pi").unwrap()),
            ),
            (
                "wrong type",
                Box::new(|p| std::fs::write(p, b"[1,2,3]").unwrap()),
            ),
            (
                "no pid",
                Box::new(|p| std::fs::write(p, b"{\"host\":\"h\"}").unwrap()),
            ),
            (
                "directory",
                Box::new(|p| {
                    std::fs::create_dir_all(p.join("inside")).unwrap();
                    std::fs::write(p.join("inside/f"), b"x").unwrap();
                }),
            ),
        ];
        for (i, (what, make)) in cases.iter().enumerate() {
            let run = format!("wrun_C{i}");
            let lease = lease_path(dir.path(), &run).unwrap();
            std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
            make(&lease);
            // a fresh heartbeat: only its contents say it is not live
            let got = acquire_reporting(dir.path(), &run, "b", 60_000).unwrap();
            assert!(got.held, "{what}: taken over");
            let e = got.replaced.unwrap_or_else(|| panic!("{what}: reported"));
            assert_eq!(e.code().as_deref(), Some("CORRUPT_FILE"), "{what}: {e}");
            assert!(
                e.to_string().contains(&format!("{run}.json")),
                "{what}: {e}"
            );
            assert!(
                same_file(&owner_path(dir.path(), "b").unwrap(), &lease).unwrap(),
                "{what}"
            );
            // and it is an ordinary lease again: renewed, not reported twice
            let again = acquire_reporting(dir.path(), &run, "b", 60_000).unwrap();
            assert!(again.held && again.replaced.is_none(), "{what}");
            assert!(
                !acquire(dir.path(), &run, "c", 60_000).unwrap(),
                "{what}: live now"
            );
        }
        // nothing left aside
        let names: Vec<String> = std::fs::read_dir(dir.path().join(".workflow-native/leases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".stale.")), "{names:?}");
    }

    #[test]
    fn unsafe_ids_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = acquire(dir.path(), "../x", "a", 1).unwrap_err();
        assert_eq!(e.name(), "UnsafeEntityIdError");
        assert!(acquire(dir.path(), "wrun_A", "../../x", 1).is_err());
    }
}
