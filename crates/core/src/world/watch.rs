//! Change notification for the data directory: one OS watcher per world (inotify on
//! Linux, `notify` elsewhere), fanned out to per-run and per-stream subscribers. Waiters
//! also keep a slow backstop poll, so they still make progress on filesystems without
//! change events (network mounts) or when a watched directory is created after they
//! started waiting.
//!
//! On Linux the watch asks only for writes (create, close-after-write, rename in/out,
//! delete): `notify` also subscribes to IN_OPEN, which makes every *read* of a chunk or
//! run file queue an event and wake the watcher thread — thousands per stream read.

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
    /// `events/<runId>-evnt_<ULID>.json` (key: run id); subscribers also receive the
    /// names of the new files (see [`ChangeFeed::take_event_names`]).
    Event,
}

/// After delivering changes, the watcher waits this long before it reads again, so a
/// burst of writes costs one wake-up (of the watcher and of each subscriber) per interval.
const COALESCE: Duration = Duration::from_millis(1);

/// Backstop poll while the directory is watched (only matters without inotify).
pub const BACKSTOP_WATCHED: Duration = Duration::from_millis(1000);
/// Backstop poll while the directory does not exist yet (cannot be watched).
pub const BACKSTOP_UNWATCHED: Duration = Duration::from_millis(50);

type Subscribers = HashMap<(Topic, String), watch::Sender<u64>>;

/// Told about every change to a run file, on the watcher's thread (so it must only take
/// short locks and never block): the way a per-world registry follows many runs without
/// one subscription, task or thread per run.
pub trait RunListener: Send + Sync {
    /// `runs/<run_id>.json` was created, replaced or removed.
    fn run_changed(&self, run_id: &str);
    /// Change events were lost (the kernel queue overflowed): every run may have changed.
    fn all_changed(&self);
}

/// Decides, on the watcher's thread, that a new event file is its writer's own (see
/// [`ChangeFeed::set_event_filter`]): such a name is neither queued for the run's
/// followers nor announced to them, so an engine appending events does not wake its own
/// followers. A name the filter does not know yet (its append still in progress) goes to
/// the followers as before, which classify it themselves.
pub trait OwnEventFilter: Send + Sync {
    fn is_own_event(&self, run_id: &str, name: &str) -> bool;
}

/// What the feed saw happen to a file of a stream (Linux only; elsewhere streams get
/// wake-ups but no names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFileEvent {
    /// The file name: a chunk file, or a chunk's temp file (`<chunk file>.tmp.<id>`).
    pub name: String,
    pub change: FileChange,
}

/// The names one stream subscription has not taken yet.
#[derive(Default)]
struct NameQueue {
    names: Vec<StreamFileEvent>,
    /// Names were dropped (the subscriber did not take them in time): the subscriber must
    /// list the directory.
    lost: bool,
}

/// Names a stream subscription may have waiting before the oldest are dropped (and the
/// subscriber told to list the directory instead).
const MAX_QUEUED_NAMES: usize = 65_536;

/// How a file event changes a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub enum FileChange {
    /// created, linked or moved in
    Appeared,
    /// renamed away (within the directory, its new name is reported next, as `Appeared`)
    MovedAway,
    /// deleted
    Deleted,
    /// written to (not queued)
    Written,
}

struct Shared {
    /// The run listener, if one was installed (see [`ChangeFeed::set_run_listener`]).
    run_listener: Mutex<Option<std::sync::Weak<dyn RunListener>>>,
    /// The own-event filter, if one was installed (see [`ChangeFeed::set_event_filter`]).
    event_filter: Mutex<Option<std::sync::Weak<dyn OwnEventFilter>>>,
    subs: Mutex<Subscribers>,
    /// New event file names per subscribed run, until the subscriber takes them.
    event_names: Mutex<HashMap<String, Vec<String>>>,
    /// The name queue of every stream subscription, by stream name.
    stream_names: Mutex<HashMap<String, Vec<Arc<Mutex<NameQueue>>>>>,
    /// Bumped when the kernel dropped events (queue overflow): names may be missing, so
    /// event subscribers must rescan the directory.
    overflows: std::sync::atomic::AtomicU64,
    runs_dir: PathBuf,
    chunks_dir: PathBuf,
    events_dir: PathBuf,
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

    /// Wakes every subscriber (events were lost: the kernel queue overflowed).
    fn notify_all(&self) {
        self.overflows
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for tx in lock(&self.subs).values() {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
        if let Some(l) = self.run_listener() {
            l.all_changed();
        }
    }

    fn run_listener(&self) -> Option<Arc<dyn RunListener>> {
        lock(&self.run_listener)
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
    }

    /// A change in the chunk directory: queued for the stream's subscribers (temp files
    /// too: they tell a write is in flight) and a wake-up for them, except for a temp file
    /// appearing, being written or renamed (its chunk shows up under its own name).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn on_stream(&self, name: &str, change: FileChange) {
        let Some(idx) = name.rfind("-chnk_") else {
            return;
        };
        let stream = &name[..idx];
        let temp = name.contains(".tmp.");
        if change != FileChange::Written {
            let queues = lock(&self.stream_names);
            for q in queues.get(stream).into_iter().flatten() {
                let mut q = lock(q);
                if q.names.len() >= MAX_QUEUED_NAMES {
                    q.names.clear();
                    q.lost = true;
                }
                q.names.push(StreamFileEvent {
                    name: name.to_string(),
                    change,
                });
            }
        }
        if !temp || change == FileChange::Deleted {
            self.notify(Topic::Stream, stream);
        }
    }

    fn on_name(&self, topic: Topic, name: &str) {
        if name.contains(".tmp.") {
            return; // temp files become visible only through their rename/link
        }
        match topic {
            Topic::Run => {
                if let Some(id) = name.strip_suffix(".json") {
                    self.notify(Topic::Run, id);
                    if let Some(l) = self.run_listener() {
                        l.run_changed(id);
                    }
                }
            }
            Topic::Stream => {
                if let Some(idx) = name.rfind("-chnk_") {
                    self.notify(Topic::Stream, &name[..idx]);
                }
            }
            Topic::Event => {
                let Some(idx) = name.find("-evnt_") else {
                    return;
                };
                if !name.ends_with(".json") {
                    return;
                }
                let run = &name[..idx];
                if !lock(&self.event_names).contains_key(run) {
                    return; // nobody follows this run
                }
                // (asked without the names' lock held: the filter takes its own)
                let filter = lock(&self.event_filter)
                    .as_ref()
                    .and_then(std::sync::Weak::upgrade);
                if filter.is_some_and(|f| f.is_own_event(run, name)) {
                    return;
                }
                {
                    let mut names = lock(&self.event_names);
                    match names.get_mut(run) {
                        Some(list) => list.push(name.to_string()),
                        None => return, // nobody follows this run
                    }
                }
                self.notify(Topic::Event, run);
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn on_path(&self, path: &Path) {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        if parent == self.runs_dir {
            self.on_name(Topic::Run, name);
        } else if parent == self.chunks_dir {
            self.on_name(Topic::Stream, name);
        } else if parent == self.events_dir {
            self.on_name(Topic::Event, name);
        }
    }
}

#[cfg(target_os = "linux")]
mod os {
    //! inotify, read by one thread per world; the thread ends when the world is dropped
    //! (removing the watches wakes it with IN_IGNORED).
    use super::{lock, FileChange, Shared, Topic};
    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::{Arc, Mutex, Weak};

    pub struct OsWatcher {
        watches: Watches,
        dirs: Arc<Mutex<HashMap<WatchDescriptor, Topic>>>,
    }

    const MASK: WatchMask = WatchMask::CREATE
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::MODIFY)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::DELETE);

    impl OsWatcher {
        pub fn new(shared: Weak<Shared>) -> Option<OsWatcher> {
            let mut inotify = Inotify::init().ok()?;
            let watches = inotify.watches();
            let dirs: Arc<Mutex<HashMap<WatchDescriptor, Topic>>> = Arc::default();
            let thread_dirs = Arc::clone(&dirs);
            std::thread::Builder::new()
                .name("workflow-native-watch".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(events) = inotify.read_events_blocking(&mut buf) else {
                            return;
                        };
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        let dirs = lock(&thread_dirs);
                        for ev in events {
                            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                                shared.notify_all();
                                continue;
                            }
                            let (Some(topic), Some(name)) =
                                (dirs.get(&ev.wd), ev.name.and_then(|n| n.to_str()))
                            else {
                                continue;
                            };
                            if *topic == Topic::Stream {
                                let change = if ev
                                    .mask
                                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                                {
                                    FileChange::Appeared
                                } else if ev.mask.contains(EventMask::MOVED_FROM) {
                                    FileChange::MovedAway
                                } else if ev.mask.contains(EventMask::DELETE) {
                                    FileChange::Deleted
                                } else {
                                    FileChange::Written
                                };
                                shared.on_stream(name, change);
                                continue;
                            }
                            shared.on_name(*topic, name);
                        }
                        drop(dirs);
                        drop(shared);
                        // Let a burst of writes (an engine appending events) gather: one
                        // wake-up per burst, not per file. The first change after a quiet
                        // spell is still delivered at once.
                        std::thread::sleep(super::COALESCE);
                    }
                })
                .ok()?;
            Some(OsWatcher { watches, dirs })
        }

        pub fn watch(&mut self, dir: &Path, topic: Topic) -> bool {
            match self.watches.add(dir, MASK) {
                Ok(wd) => {
                    lock(&self.dirs).insert(wd, topic);
                    true
                }
                Err(_) => false,
            }
        }
    }

    impl Drop for OsWatcher {
        fn drop(&mut self) {
            let wds: Vec<WatchDescriptor> = lock(&self.dirs).drain().map(|(wd, _)| wd).collect();
            for wd in wds {
                let _ = self.watches.remove(wd);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use super::{Shared, Topic};
    use notify::{RecursiveMode, Watcher};
    use std::path::Path;
    use std::sync::Weak;

    pub struct OsWatcher(notify::RecommendedWatcher);

    impl OsWatcher {
        pub fn new(shared: Weak<Shared>) -> Option<OsWatcher> {
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let (Ok(ev), Some(shared)) = (res, shared.upgrade()) {
                    if ev.kind.is_access() {
                        return;
                    }
                    for p in &ev.paths {
                        shared.on_path(p);
                    }
                }
            })
            .ok()
            .map(OsWatcher)
        }

        pub fn watch(&mut self, dir: &Path, _topic: Topic) -> bool {
            self.0.watch(dir, RecursiveMode::NonRecursive).is_ok()
        }
    }
}

struct WatchState {
    watcher: Option<os::OsWatcher>,
    runs_watched: bool,
    chunks_watched: bool,
    events_watched: bool,
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
    /// A stream subscription's queue of file names (see [`Subscription::take_stream_names`]).
    names: Option<Arc<Mutex<NameQueue>>>,
}

impl ChangeFeed {
    pub fn new(root: &Path) -> Arc<ChangeFeed> {
        Arc::new(ChangeFeed {
            shared: Arc::new(Shared {
                run_listener: Mutex::new(None),
                event_filter: Mutex::new(None),
                subs: Mutex::new(HashMap::new()),
                event_names: Mutex::new(HashMap::new()),
                stream_names: Mutex::new(HashMap::new()),
                overflows: std::sync::atomic::AtomicU64::new(0),
                runs_dir: root.join("runs"),
                chunks_dir: root.join("streams").join("chunks"),
                events_dir: root.join("events"),
            }),
            state: Mutex::new(WatchState {
                watcher: None,
                runs_watched: false,
                chunks_watched: false,
                events_watched: false,
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
            Topic::Event => st.events_watched,
        };
        if already {
            return true;
        }
        let dir = match topic {
            Topic::Run => self.shared.runs_dir.clone(),
            Topic::Stream => self.shared.chunks_dir.clone(),
            Topic::Event => self.shared.events_dir.clone(),
        };
        if !dir.is_dir() {
            return false;
        }
        if st.watcher.is_none() {
            match os::OsWatcher::new(Arc::downgrade(&self.shared)) {
                Some(w) => st.watcher = Some(w),
                None => return false, // no OS watcher: the backstop poll keeps working
            }
        }
        let ok = st
            .watcher
            .as_mut()
            .map(|w| w.watch(&dir, topic))
            .unwrap_or(false);
        if ok {
            match topic {
                Topic::Run => st.runs_watched = true,
                Topic::Stream => st.chunks_watched = true,
                Topic::Event => st.events_watched = true,
            }
        }
        ok
    }

    pub fn subscribe(self: &Arc<Self>, topic: Topic, key: &str) -> Subscription {
        let rx = {
            let mut subs = lock(&self.shared.subs);
            // Under the subscribers' lock, like the removal in `Drop`: a subscription that
            // is ending cannot take this one's name list away.
            if topic == Topic::Event {
                lock(&self.shared.event_names)
                    .entry(key.to_string())
                    .or_default();
            }
            subs.entry((topic, key.to_string()))
                .or_insert_with(|| watch::channel(0u64).0)
                .subscribe()
        };
        // Registered before the watch starts: no name published after that is missed.
        let names = (topic == Topic::Stream).then(|| {
            let q = Arc::new(Mutex::new(NameQueue::default()));
            lock(&self.shared.stream_names)
                .entry(key.to_string())
                .or_default()
                .push(Arc::clone(&q));
            q
        });
        self.ensure_watching(topic);
        Subscription {
            rx,
            feed: Arc::clone(self),
            topic,
            key: key.to_string(),
            names,
        }
    }
}

impl ChangeFeed {
    /// Installs the listener told about every run file change (replacing any other). The
    /// feed keeps only a weak reference: the listener's owner decides its lifetime.
    pub fn set_run_listener(&self, listener: std::sync::Weak<dyn RunListener>) {
        *lock(&self.shared.run_listener) = Some(listener);
    }

    /// Installs the own-event filter (see [`OwnEventFilter`]), replacing any other.
    pub fn set_event_filter(&self, filter: std::sync::Weak<dyn OwnEventFilter>) {
        *lock(&self.shared.event_filter) = Some(filter);
    }

    /// The names of the event files of `run_id` created since the last call (only while
    /// someone is subscribed to the run's [`Topic::Event`]).
    pub fn take_event_names(&self, run_id: &str) -> Vec<String> {
        lock(&self.shared.event_names)
            .get_mut(run_id)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// How many times the kernel dropped change events so far: when this moves, names
    /// may be missing and the directory must be rescanned.
    pub fn overflow_count(&self) -> u64 {
        self.shared
            .overflows
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the topic's directory is watched now (starting the watch if possible).
    pub fn is_watching(&self, topic: Topic) -> bool {
        self.ensure_watching(topic)
    }
}

impl Subscription {
    /// The stream files created, moved in, deleted or moved away since the last call, in
    /// the order the kernel reported them, and whether some were dropped since (then the
    /// directory must be listed). Empty for other topics and where names are not reported
    /// (see [`names_reported`](Self::names_reported)).
    pub fn take_stream_names(&self) -> (Vec<StreamFileEvent>, bool) {
        match &self.names {
            Some(q) => {
                let mut q = lock(q);
                (std::mem::take(&mut q.names), std::mem::take(&mut q.lost))
            }
            None => (Vec::new(), false),
        }
    }

    /// Whether this subscription receives every name published in its directory from now
    /// on, in the order the kernel saw them (Linux, with the directory watched).
    pub fn names_reported(&self) -> bool {
        cfg!(target_os = "linux") && self.names.is_some() && self.feed.ensure_watching(self.topic)
    }

    /// How many times the kernel dropped change events so far (see
    /// [`ChangeFeed::overflow_count`]).
    pub fn overflow_count(&self) -> u64 {
        self.feed.overflow_count()
    }

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

impl Subscription {
    /// Like [`changed`](Self::changed), and tells whether a change woke it (not the
    /// backstop interval) and whether the directory is watched.
    pub async fn wait_change(&mut self) -> (bool, bool) {
        let watched = self.feed.ensure_watching(self.topic);
        let backstop = if watched {
            BACKSTOP_WATCHED
        } else {
            BACKSTOP_UNWATCHED
        };
        let notified = matches!(
            tokio::time::timeout(backstop, self.rx.changed()).await,
            Ok(Ok(()))
        );
        (notified, watched)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(q) = self.names.take() {
            let mut queues = lock(&self.feed.shared.stream_names);
            if let Some(list) = queues.get_mut(&self.key) {
                list.retain(|other| !Arc::ptr_eq(other, &q));
                if list.is_empty() {
                    queues.remove(&self.key);
                }
            }
        }
        let mut subs = lock(&self.feed.shared.subs);
        let key = (self.topic, std::mem::take(&mut self.key));
        // Our receiver is still alive here, so "1" means we are the last one.
        if subs.get(&key).is_some_and(|tx| tx.receiver_count() <= 1) {
            subs.remove(&key);
            if key.0 == Topic::Event {
                lock(&self.feed.shared.event_names).remove(&key.1);
            }
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
    async fn reading_files_wakes_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = dir.path().join("streams/chunks");
        std::fs::create_dir_all(&chunks).unwrap();
        std::fs::write(chunks.join("strm_A_user-chnk_1.bin"), b"\0x").unwrap();
        std::fs::create_dir_all(dir.path().join("runs")).unwrap();
        std::fs::write(dir.path().join("runs/wrun_A.json"), b"{}").unwrap();
        let feed = ChangeFeed::new(dir.path());
        let mut a = feed.subscribe(Topic::Stream, "strm_A_user");
        let mut run = feed.subscribe(Topic::Run, "wrun_A");
        let mut b = feed.subscribe(Topic::Stream, "strm_B_user");
        a.mark_seen();
        run.mark_seen();
        b.mark_seen();
        for _ in 0..3 {
            std::fs::read(chunks.join("strm_A_user-chnk_1.bin")).unwrap();
            std::fs::read(dir.path().join("runs/wrun_A.json")).unwrap();
        }
        // The kernel queues events in order: once B's write is seen, any event of the
        // reads above would have been delivered already.
        std::fs::write(chunks.join("strm_B_user-chnk_2.bin"), b"\0y").unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.rx.changed())
            .await
            .expect("woken")
            .unwrap();
        assert!(
            !a.rx.has_changed().unwrap(),
            "a read woke the stream subscriber"
        );
        assert!(
            !run.rx.has_changed().unwrap(),
            "a read woke the run subscriber"
        );
    }

    struct OwnNamed;
    impl OwnEventFilter for OwnNamed {
        fn is_own_event(&self, run_id: &str, name: &str) -> bool {
            run_id == "wrun_A" && name.contains("evnt_OWN")
        }
    }

    /// Waits (bounded) for the subscription's next wake-up.
    async fn woken(sub: &mut Subscription) {
        tokio::time::timeout(Duration::from_secs(5), sub.rx.changed())
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn event_files_the_filter_calls_the_writers_own_wake_no_follower() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        std::fs::create_dir_all(&events).unwrap();
        let feed = ChangeFeed::new(dir.path());
        let filter: Arc<dyn OwnEventFilter> = Arc::new(OwnNamed);
        feed.set_event_filter(Arc::downgrade(&filter));
        let mut a = feed.subscribe(Topic::Event, "wrun_A");
        let mut b = feed.subscribe(Topic::Event, "wrun_B");
        a.mark_seen();
        b.mark_seen();
        for i in 0..3 {
            std::fs::write(events.join(format!("wrun_A-evnt_OWN{i}.json")), b"{}").unwrap();
        }
        // The kernel queues events in order: once B's file is seen, A's were handled.
        std::fs::write(events.join("wrun_B-evnt_OWN9.json"), b"{}").unwrap();
        woken(&mut b).await;
        // (a name comes once per change to its file: created, written, closed)
        let names = |run: &str| {
            let mut n = feed.take_event_names(run);
            n.dedup();
            n
        };
        assert_eq!(names("wrun_B"), ["wrun_B-evnt_OWN9.json"]);
        assert!(
            !a.rx.has_changed().unwrap(),
            "its own files woke A's follower"
        );
        assert!(names("wrun_A").is_empty());
        // another writer's file still reaches it
        std::fs::write(events.join("wrun_A-evnt_X.json"), b"{}").unwrap();
        woken(&mut a).await;
        b.mark_seen();
        std::fs::write(events.join("wrun_B-evnt_Y.json"), b"{}").unwrap();
        woken(&mut b).await;
        assert_eq!(names("wrun_A"), ["wrun_A-evnt_X.json"]);
        // a filter that is gone filters nothing
        drop(filter);
        a.mark_seen();
        std::fs::write(events.join("wrun_A-evnt_OWN5.json"), b"{}").unwrap();
        woken(&mut a).await;
        assert_eq!(names("wrun_A"), ["wrun_A-evnt_OWN5.json"]);
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
