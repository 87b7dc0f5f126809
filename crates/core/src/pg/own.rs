//! Event ids this process's engine appended, per run, not yet seen by that run's follower
//! (which reports only what other writers added; see `pg::engine`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// Event ids the engine appended, per run.
#[derive(Default)]
pub(crate) struct OwnEvents(Mutex<HashMap<String, HashSet<String>>>);

impl OwnEvents {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn add(&self, run_id: &str, ids: impl IntoIterator<Item = String>) {
        self.lock()
            .entry(run_id.to_string())
            .or_default()
            .extend(ids);
    }

    pub(crate) fn remove(&self, run_id: &str, ids: &[String]) {
        if let Some(set) = self.lock().get_mut(run_id) {
            for id in ids {
                set.remove(id);
            }
        }
    }

    /// Whether `id` was appended here (forgotten once seen).
    pub(crate) fn take(&self, run_id: &str, id: &str) -> bool {
        self.lock()
            .get_mut(run_id)
            .is_some_and(|set| set.remove(id))
    }

    pub(crate) fn forget(&self, run_id: &str) {
        self.lock().remove(run_id);
    }
}
