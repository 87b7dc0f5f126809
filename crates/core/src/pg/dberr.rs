//! Database errors as the core's errors.

use crate::error::Error;

/// A database error as the core's error (SQLSTATE and message kept).
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::Database {
            message: format!("PostgreSQL error {}: {}", d.code().code(), d.message()),
            sqlstate: Some(d.code().code().to_string()),
        },
        None => Error::Database {
            message: format!("PostgreSQL: {e}"),
            sqlstate: None,
        },
    }
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|d| {
        d.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && d.constraint() == Some(constraint)
    })
}
