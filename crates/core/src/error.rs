//! The error enum. Every variant knows the WDK class `name` it stands for and
//! produces the same message text as `@workflow/errors` / world-local, so the JS
//! layer can rebuild an error that `X.is()` checks from either package accept.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `WorkflowRunNotFoundError`
    #[error("Workflow run \"{run_id}\" not found")]
    RunNotFound { run_id: String },

    /// world-local's `UnsafeEntityIdError` (a `WorkflowWorldError`)
    #[error("Unsafe {kind} \"{shown}\": must not be empty, contain \".\", \"/\", \"\\\", or null bytes", shown = truncate_for_error(.value))]
    UnsafeEntityId { kind: String, value: String },

    /// `EntityConflictError`
    #[error("{0}")]
    EntityConflict(String),

    /// `RunExpiredError`
    #[error("{0}")]
    RunExpired(String),

    /// `WorkflowWorldError` with a given message
    #[error("{0}")]
    World(String),

    /// `TooEarlyError` (a `WorkflowWorldError`; `retryAfter` in seconds)
    #[error("{message}")]
    TooEarly { message: String, retry_after: i64 },

    /// `HookNotFoundError` (`token` field)
    #[error("Hook not found")]
    HookNotFound { token: String },

    /// `RunNotSupportedError`
    #[error("Run requires spec version {run_spec_version}, but world supports version {world_spec_version}. Please upgrade 'workflow' package.")]
    RunNotSupported {
        run_spec_version: i64,
        world_spec_version: i64,
    },

    /// The engine's process no longer holds the run's lease (another process took the run
    /// over): nothing more is written for it here. A `WorkflowRuntimeError` with code
    /// `LEASE_LOST`.
    #[error("Run \"{run_id}\" is no longer leased to this process (another process took it over): nothing more is written for it here")]
    LeaseLost { run_id: String },

    /// A plain `Error` (the official code throws `new Error(msg)`).
    #[error("{0}")]
    Plain(String),

    /// A failure of the PostgreSQL server or of the connection to it: the operator's
    /// problem, never a run's. A plain `Error` with code `DATABASE_ERROR` and the server's
    /// SQLSTATE (`sqlstate`) when it gave one.
    #[error("{message}")]
    Database {
        message: String,
        sqlstate: Option<String>,
    },

    /// A file that is not valid JSON or does not have the shape world-local writes.
    #[error("Corrupt workflow data file {path}: {detail}")]
    CorruptFile { path: PathBuf, detail: String },

    /// Any other I/O failure, with the file it happened on.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Invalid configuration or argument given to the library.
    #[error("{0}")]
    InvalidArgument(String),

    /// `WorkflowRuntimeError`
    #[error("{0}")]
    Runtime(String),

    /// `RuntimeDecryptionError` (the JS class appends the WDK docs link)
    #[error("{0}")]
    Decryption(String),

    /// Queue delivery problems (`Unable to resolve base URL for workflow queue.`, HTTP failures).
    #[error("{0}")]
    Queue(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn truncate_for_error(value: &str) -> String {
    // world-local cuts at 48 UTF-16 code units and appends an ellipsis.
    let units: Vec<u16> = value.encode_utf16().collect();
    if units.len() > 48 {
        format!("{}…", String::from_utf16_lossy(&units[..48]))
    } else {
        value.to_string()
    }
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        Error::CorruptFile {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// The JS class name this error becomes.
    pub fn name(&self) -> &'static str {
        match self {
            Error::RunNotFound { .. } => "WorkflowRunNotFoundError",
            Error::UnsafeEntityId { .. } => "UnsafeEntityIdError",
            Error::EntityConflict(_) => "EntityConflictError",
            Error::RunExpired(_) => "RunExpiredError",
            Error::World(_) => "WorkflowWorldError",
            Error::TooEarly { .. } => "TooEarlyError",
            Error::HookNotFound { .. } => "HookNotFoundError",
            Error::RunNotSupported { .. } => "RunNotSupportedError",
            Error::Plain(_) => "Error",
            Error::Database { .. } => "Error",
            Error::CorruptFile { .. } => "WorkflowWorldError",
            Error::Io { .. } => "Error",
            Error::InvalidArgument(_) => "TypeError",
            Error::Queue(_) => "Error",
            Error::Runtime(_) => "WorkflowRuntimeError",
            Error::LeaseLost { .. } => "WorkflowRuntimeError",
            Error::Decryption(_) => "RuntimeDecryptionError",
        }
    }

    /// A stable machine-readable code, exposed as `err.code` where WDK has none.
    pub fn code(&self) -> Option<String> {
        match self {
            Error::CorruptFile { .. } => Some("CORRUPT_FILE".into()),
            Error::LeaseLost { .. } => Some("LEASE_LOST".into()),
            Error::Database { .. } => Some("DATABASE_ERROR".into()),
            Error::Io { source, .. } => Some(io_code(source).to_string()),
            _ => None,
        }
    }

    /// Extra fields the JS error carries (`runId`, `token`, `path`, …).
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        match self {
            Error::RunNotFound { run_id } | Error::LeaseLost { run_id } => {
                m.insert("runId".into(), Value::String(run_id.clone()));
            }
            Error::Database {
                sqlstate: Some(state),
                ..
            } => {
                m.insert("sqlstate".into(), Value::String(state.clone()));
            }
            Error::HookNotFound { token } => {
                m.insert("token".into(), Value::String(token.clone()));
            }
            Error::TooEarly { retry_after, .. } => {
                m.insert("retryAfter".into(), (*retry_after).into());
            }
            Error::RunNotSupported {
                run_spec_version,
                world_spec_version,
            } => {
                m.insert("runSpecVersion".into(), (*run_spec_version).into());
                m.insert("worldSpecVersion".into(), (*world_spec_version).into());
            }
            Error::CorruptFile { path, .. } | Error::Io { path, .. } => {
                m.insert("path".into(), Value::String(path.display().to_string()));
            }
            _ => {}
        }
        if let Some(code) = self.code() {
            m.insert("code".into(), Value::String(code));
        }
        m
    }

    /// Whether this is the "not found" error that `exists` maps to `false`.
    pub fn is_run_not_found(&self) -> bool {
        matches!(self, Error::RunNotFound { .. })
    }

    pub fn is_entity_conflict(&self) -> bool {
        matches!(self, Error::EntityConflict(_))
    }
}

/// Reports a storage failure nobody can be handed (a clean-up after an event was
/// recorded, the undo of a failed one) on stderr: the operator's attention, not the
/// caller's error.
/// The message of a caught panic (its `&str` or `String` payload; empty otherwise).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

pub fn report(what: &str, e: &Error) {
    eprintln!("[workflow-native] {what}: {e}");
}

/// The errno name Node would put in `err.code`.
fn io_code(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(1) => "EPERM",
        Some(2) => "ENOENT",
        Some(5) => "EIO",
        Some(13) => "EACCES",
        Some(17) => "EEXIST",
        Some(20) => "ENOTDIR",
        Some(21) => "EISDIR",
        Some(23) => "ENFILE",
        Some(24) => "EMFILE",
        Some(28) => "ENOSPC",
        Some(30) => "EROFS",
        Some(36) => "ENAMETOOLONG",
        Some(40) => "ELOOP",
        _ => match e.kind() {
            std::io::ErrorKind::NotFound => "ENOENT",
            std::io::ErrorKind::PermissionDenied => "EACCES",
            std::io::ErrorKind::AlreadyExists => "EEXIST",
            _ => "EIO",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_id_message_matches_world_local() {
        let e = Error::UnsafeEntityId {
            kind: "runId".into(),
            value: "../x".into(),
        };
        assert_eq!(
            e.to_string(),
            "Unsafe runId \"../x\": must not be empty, contain \".\", \"/\", \"\\\", or null bytes"
        );
        assert_eq!(e.name(), "UnsafeEntityIdError");
    }

    #[test]
    fn unsafe_id_message_truncates_long_values() {
        let long = "a".repeat(60);
        let e = Error::UnsafeEntityId {
            kind: "runId".into(),
            value: format!("{long}."),
        };
        assert!(e.to_string().contains(&format!("\"{}…\"", "a".repeat(48))));
    }

    #[test]
    fn not_found_message_and_fields() {
        let e = Error::RunNotFound {
            run_id: "wrun_X".into(),
        };
        assert_eq!(e.to_string(), "Workflow run \"wrun_X\" not found");
        assert_eq!(e.fields()["runId"], "wrun_X");
    }
}
