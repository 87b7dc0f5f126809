//! Run leases of the embedded engine (see `workflow_core::lease`).

use crate::{guard, to_napi};
use napi_derive::napi;
use std::path::Path;

/// Takes or renews the lease of a run for `owner`; false when another live owner holds it.
#[napi(catch_unwind)]
pub fn acquire_run_lease(
    data_dir: String,
    run_id: String,
    owner: String,
    ttl_ms: u32,
) -> napi::Result<bool> {
    guard(|| {
        workflow_core::lease::acquire(Path::new(&data_dir), &run_id, &owner, u64::from(ttl_ms))
            .map_err(to_napi)
    })
}

/// Gives the lease up if `owner` holds it.
#[napi(catch_unwind)]
pub fn release_run_lease(data_dir: String, run_id: String, owner: String) -> napi::Result<()> {
    guard(|| workflow_core::lease::release(Path::new(&data_dir), &run_id, &owner).map_err(to_napi))
}
