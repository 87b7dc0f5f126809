//! Change notification for the data directory: one OS watcher (inotify on Linux, via
//! `notify`) per world, fanned out to per-run and per-stream subscribers. Waiters also keep
//! a slow backstop poll, so they still make progress on filesystems without change events
//! (network mounts) or when a watched directory is created after they started waiting.

use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Which directory a change happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `runs/<runId>.json` (key: run id)
    Run,
    /// `streams/chunks/<stream>-chnk_<ULID>.bin` (key: stream name)
    Stream,
}

/// Backstop poll while the directory is watched (only matters without inotify).
pub const BACKSTOP_WATCHED: Duration = Duration::from_millis(1000);
/// Backstop poll while the directory does not exist yet (cannot be watched).
pub const BACKSTOP_UNWATCHED: Duration = Duration::from_millis(50);

type Subscribers = HashMap<(Topic, String), watch::Sender<u64>>;

struct Shared {
    subs: Mutex<Subscribers>,
    runs_dir: PathBuf,
    chunks_dir: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    fn notify(&self, topic: Topic, key: &str) {
        let subs = lock(&self.subs);
        if let Some(tx) = subs.get(&(topic, key.to_string())) {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    fn on_path(&self, path: &Path) {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        if name.contains(".tmp.") {
            return; // temp files become visible only through their rename/link
        }
        if parent == self.runs_dir {
            if let Some(id) = name.strip_suffix(".json") {
                self.notify(Topic::Run, id);
            }
        } else if parent == self.chunks_dir {
            if let Some(idx) = name.rfind("-chnk_") {
                self.notify(Topic::Stream, &name[..idx]);
            }
        }
    }
}

struct WatchState {
    watcher: Option<notify::RecommendedWatcher>,
    runs_watched: bool,
    chunks_watched: bool,
}

/// The per-world watcher. Cheap to create; the OS watch starts on first subscription.
pub struct ChangeFeed {
    shared: Arc<Shared>,
    state: Mutex<WatchState>,
}

/// A subscription: wait for the next change of one run or one stream.
pub struct Subscription {
    rx: watch::Receiver<u64>,
    feed: Arc<ChangeFeed>,
    topic: Topic,
    key: String,
}

impl ChangeFeed {
    pub fn new(root: &Path) -> Arc<ChangeFeed> {
        Arc::new(ChangeFeed {
            shared: Arc::new(Shared {
                subs: Mutex::new(HashMap::new()),
                runs_dir: root.join("runs"),
                chunks_dir: root.join("streams").join("chunks"),
            }),
            state: Mutex::new(WatchState {
                watcher: None,
                runs_watched: false,
                chunks_watched: false,
            }),
        })
    }

    /// Starts watching the topic's directory if it exists and is not watched yet.
    /// Returns whether it is watched.
    fn ensure_watching(&self, topic: Topic) -> bool {
        let mut st = lock(&self.state);
        let already = match topic {
            Topic::Run => st.runs_watched,
            Topic::Stream => st.chunks_watched,
        };
        if already {
            return true;
        }
        let dir = match topic {
            Topic::Run => self.shared.runs_dir.clone(),
            Topic::Stream => self.shared.chunks_dir.clone(),
        };
        if !dir.is_dir() {
            return false;
        }
        if st.watcher.is_none() {
            let shared = Arc::downgrade(&self.shared);
            let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let (Ok(ev), Some(shared)) = (res, shared.upgrade()) {
                    for p in &ev.paths {
                        shared.on_path(p);
                    }
                }
            });
            match w {
                Ok(w) => st.watcher = Some(w),
                Err(_) => return false, // no OS watcher: the backstop poll keeps working
            }
        }
        let ok = st
            .watcher
            .as_mut()
            .map(|w| w.watch(&dir, RecursiveMode::NonRecursive).is_ok())
            .unwrap_or(false);
        if ok {
            match topic {
                Topic::Run => st.runs_watched = true,
                Topic::Stream => st.chunks_watched = true,
            }
        }
        ok
    }

    pub fn subscribe(self: &Arc<Self>, topic: Topic, key: &str) -> Subscription {
        let rx = {
            let mut subs = lock(&self.shared.subs);
            subs.entry((topic, key.to_string()))
                .or_insert_with(|| watch::channel(0u64).0)
                .subscribe()
        };
        self.ensure_watching(topic);
        Subscription {
            rx,
            feed: Arc::clone(self),
            topic,
            key: key.to_string(),
        }
    }
}

impl Subscription {
    /// Marks everything seen so far as consumed. Call before re-checking state, so a change
    /// that lands between the check and the wait is not lost.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Waits for a change after the last `mark_seen`, or for the backstop interval.
    pub async fn changed(&mut self) {
        let watched = self.feed.ensure_watching(self.topic);
        let backstop = if watched {
            BACKSTOP_WATCHED
        } else {
            BACKSTOP_UNWATCHED
        };
        let _ = tokio::time::timeout(backstop, self.rx.changed()).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = lock(&self.feed.shared.subs);
        let key = (self.topic, std::mem::take(&mut self.key));
        // Our receiver is still alive here, so "1" means we are the last one.
        if subs.get(&key).is_some_and(|tx| tx.receiver_count() <= 1) {
            subs.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rename_into_runs_wakes_the_runs_subscriber_quickly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runs")).unwrap();
        let feed = ChangeFeed::new(dir.path());
        let mut sub = feed.subscribe(Topic::Run, "wrun_A");
        sub.mark_seen();
        let root = dir.path().to_path_buf();
        let writer = tokio::spawn(async move {
            let tmp = root.join("runs/wrun_A.json.tmp.X");
            std::fs::write(&tmp, b"{}").unwrap();
            std::fs::rename(&tmp, root.join("runs/wrun_A.json")).unwrap();
        });
        let started = std::time::Instant::now();
        sub.changed().await;
        writer.await.unwrap();
        assert!(
            started.elapsed() < BACKSTOP_WATCHED,
            "woken by the watcher, not the backstop"
        );
    }

    #[tokio::test]
    async fn other_keys_do_not_wake_a_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("streams/chunks")).unwrap();
        let feed = ChangeFeed::new(dir.path());
        let mut sub = feed.subscribe(Topic::Stream, "strm_A_user");
        sub.mark_seen();
        std::fs::write(
            dir.path().join("streams/chunks/strm_B_user-chnk_1.bin"),
            b"\0x",
        )
        .unwrap();
        // Give the watcher thread a moment to deliver the (irrelevant) event.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sub.rx.has_changed().unwrap());
        std::fs::write(
            dir.path().join("streams/chunks/strm_A_user-chnk_2.bin"),
            b"\0x",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), sub.rx.changed())
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn subscriptions_are_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let feed = ChangeFeed::new(dir.path());
        let a = feed.subscribe(Topic::Run, "x");
        let b = feed.subscribe(Topic::Run, "x");
        drop(a);
        assert_eq!(lock(&feed.shared.subs).len(), 1);
        drop(b);
        assert_eq!(lock(&feed.shared.subs).len(), 0);
    }
}
