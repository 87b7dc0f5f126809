//! The World: storage, change notification and the local filesystem implementation.

pub mod backend;
pub mod durable;
pub mod events;
pub mod fsio;
pub mod hooks;
pub mod local;
pub mod model;
pub mod recovery;
pub mod spare;
pub mod streams;
pub mod terminal;
#[cfg(target_os = "linux")]
pub mod wal;
pub mod watch;
