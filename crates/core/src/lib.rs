//! workflow-core: the pure-Rust heart of workflow-native.
//!
//! Reads and writes the data directory of `@workflow/world-local` 4.4.1 byte for byte,
//! and implements the operations behind `workflow/api`'s `Run` handle. No N-API here:
//! the binding crate at the repository root only converts types.

pub mod dirscan;
pub mod error;
pub(crate) mod host;
pub mod ids;
pub mod journal;
pub mod lease;
pub mod machine;
pub mod pg;
pub mod queue;
pub mod run;
pub mod storage;
pub mod stream;
pub mod world;

pub use error::{Error, Result};
