//! Where this process's executions left their runs ([`Snapshots`]): the next batch of an
//! execution starts from it instead of reading (see `pg::txn`).

use super::store;

/// Where each execution of this process left its runs (see [`store::Snapshot`]), by run
/// id, with the lease (owner, token) it was left under.
#[derive(Default)]
pub(crate) struct Snapshots(
    std::sync::Mutex<std::collections::HashMap<String, (String, i64, store::Snapshot)>>,
);

impl Snapshots {
    /// At most this many runs are remembered (an execution that stopped without a last
    /// batch leaves its entry; the map is emptied then, which only costs reads).
    const MAX: usize = 10_000;

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, i64, store::Snapshot)>>
    {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn take(&self, run_id: &str, owner: &str, token: i64) -> Option<store::Snapshot> {
        match self.lock().remove(run_id) {
            Some((o, t, snap)) if o == owner && t == token => Some(snap),
            _ => None,
        }
    }

    pub(crate) fn put(&self, run_id: &str, owner: &str, token: i64, snap: Option<store::Snapshot>) {
        let mut map = self.lock();
        match snap {
            Some(snap) => {
                if map.len() >= Self::MAX {
                    map.clear();
                }
                map.insert(run_id.to_string(), (owner.to_string(), token, snap));
            }
            None => {
                map.remove(run_id);
            }
        }
    }

    pub(crate) fn forget(&self, run_id: &str) {
        self.lock().remove(run_id);
    }
}
