//! The local World as a [`Storage`] backend: each operation is the `LocalWorld` method of
//! the same name (or the lease file functions).

use crate::error::{Error, Result};
use crate::machine::Created;
use crate::storage::{CancelOutcome, Storage};
use crate::stream::{StreamMode, StreamReader};
use crate::world::local::LocalWorld;
use crate::world::model::{EventSummary, Hook, RunSnapshot};
use crate::world::watch::{Subscription, Topic};
use serde_json::{Map, Value};

/// Runs a blocking listing off the async threads.
async fn blocking<T: Send + 'static>(
    world: &LocalWorld,
    f: impl FnOnce(&LocalWorld) -> Result<T> + Send + 'static,
) -> Result<T> {
    let me = world.handle();
    tokio::task::spawn_blocking(move || f(&me))
        .await
        .map_err(|e| Error::Plain(format!("storage task failed: {e}")))?
}

impl Storage for LocalWorld {
    async fn get_run(&self, run_id: &str, with_data: bool) -> Result<RunSnapshot> {
        LocalWorld::get_run(self, run_id, with_data).await
    }

    async fn wait_terminal(&self, run_id: &str) -> Result<RunSnapshot> {
        LocalWorld::wait_terminal(self, run_id).await
    }

    async fn list_runs_json(&self, statuses: Option<Vec<String>>) -> Result<String> {
        blocking(self, move |w| w.list_runs_json_sync(statuses.as_deref())).await
    }

    async fn create_event(
        &self,
        run_id: Option<&str>,
        request: Map<String, Value>,
    ) -> Result<Created> {
        self.apply_event(run_id, request).await
    }

    async fn cancel_run(&self, run_id: &str) -> Result<CancelOutcome> {
        LocalWorld::cancel_run(self, run_id).await
    }

    async fn complete_wait(
        &self,
        run_id: &str,
        correlation_id: &str,
        spec_version: Option<f64>,
        resume_at_ms: Option<f64>,
        legacy: bool,
    ) -> Result<()> {
        LocalWorld::complete_wait(
            self,
            run_id,
            correlation_id,
            spec_version,
            resume_at_ms,
            legacy,
        )
        .await
    }

    async fn list_run_events(&self, run_id: &str) -> Result<Vec<EventSummary>> {
        LocalWorld::list_run_events(self, run_id).await
    }

    async fn list_events_json(&self, run_id: &str) -> Result<String> {
        let run_id = run_id.to_string();
        blocking(self, move |w| w.list_events_json_sync(&run_id)).await
    }

    async fn get_hook_by_token(&self, token: &str) -> Result<Hook> {
        LocalWorld::get_hook_by_token(self, token).await
    }

    async fn append_stream(&self, name: &str, run_id: &str, chunks: &[Vec<u8>]) -> Result<()> {
        self.write_stream_chunks(name, run_id, chunks).await
    }

    async fn close_stream(&self, name: &str, run_id: &str) -> Result<()> {
        LocalWorld::close_stream(self, name, run_id).await
    }

    fn open_stream(&self, name: &str, start_index: i64, mode: StreamMode) -> Result<StreamReader> {
        LocalWorld::open_stream(self, name, start_index, mode)
    }

    fn stream_tail(&self, name: &str) -> Result<(i64, bool)> {
        LocalWorld::stream_tail(self, name)
    }

    fn subscribe(&self, topic: Topic, key: &str) -> Subscription {
        LocalWorld::subscribe(self, topic, key)
    }

    fn acquire_lease(&self, run_id: &str, owner: &str, ttl_ms: u64) -> Result<bool> {
        crate::lease::acquire(self.root(), run_id, owner, ttl_ms)
    }

    fn release_lease(&self, run_id: &str, owner: &str) -> Result<()> {
        crate::lease::release(self.root(), run_id, owner)
    }
}
