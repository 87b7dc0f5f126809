//! Identifiers: safe path components, monotonic ULIDs, stream names.

use crate::error::{Error, Result};
use base64::Engine;
use std::sync::Mutex;

/// Rejects ids that could escape or confuse the storage layout, with the same
/// rule as world-local: empty, leading `.`, or containing `.`, `/`, `\` or NUL.
pub fn assert_safe_entity_id(kind: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.starts_with('.')
        || value.contains('.')
        || value.contains('/')
        || value.contains('\\')
        || value.contains('\0')
    {
        return Err(Error::UnsafeEntityId {
            kind: kind.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A process-wide monotonic ULID (strictly increasing even within one millisecond),
/// as world-local's `monotonicFactory` produces for event and chunk ids.
pub fn monotonic_ulid() -> String {
    let mut guard = match GENERATOR.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    match generator.generate() {
        Ok(u) => u.to_string(),
        // Overflow of the random part within one millisecond: fall back to a fresh ULID,
        // which is still unique (random) though not ordered within that millisecond.
        Err(_) => ulid::Ulid::new().to_string(),
    }
}

/// `<prefix>_<ULID>`.
pub fn prefixed_id(prefix: &str) -> String {
    format!("{prefix}_{}", monotonic_ulid())
}

/// The name of a run's default or namespaced stream: the run id with its first `wrun_`
/// replaced by `strm_`, `_user` appended, then `_<base64url(namespace)>` for a non-empty
/// namespace.
pub fn run_stream_name(run_id: &str, namespace: Option<&str>) -> String {
    let mut name = run_id.replacen("wrun_", "strm_", 1);
    name.push_str("_user");
    if let Some(ns) = namespace {
        if !ns.is_empty() {
            name.push('_');
            name.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ns.as_bytes()));
        }
    }
    name
}

/// Milliseconds since the epoch encoded in a ULID (the 10 leading characters).
pub fn ulid_time_ms(ulid_str: &str) -> Option<u64> {
    ulid::Ulid::from_string(ulid_str)
        .ok()
        .map(|u| u.timestamp_ms())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_unsafe_ids() {
        for bad in [
            "", ".", "..", ".locks", "a.b", "a/b", "a\\b", "a\0b", "../etc",
        ] {
            assert!(assert_safe_entity_id("runId", bad).is_err(), "{bad:?}");
        }
        assert!(assert_safe_entity_id("runId", "wrun_01ABC").is_ok());
    }

    #[test]
    fn stream_names_match_wdk() {
        assert_eq!(
            run_stream_name("wrun_01M8JNHA0J7QWBMGSVD78BF4ZY", None),
            "strm_01M8JNHA0J7QWBMGSVD78BF4ZY_user"
        );
        assert_eq!(
            run_stream_name("wrun_01M8JNHA0J7QWBMGSVD78BF4ZY", Some("logs/α")),
            "strm_01M8JNHA0J7QWBMGSVD78BF4ZY_user_bG9ncy_OsQ"
        );
        assert_eq!(
            run_stream_name("wrun_X", Some("")),
            "strm_X_user",
            "empty namespace = no namespace"
        );
    }

    #[test]
    fn ulids_are_strictly_increasing() {
        let mut prev = monotonic_ulid();
        for _ in 0..10_000 {
            let next = monotonic_ulid();
            assert!(next > prev);
            prev = next;
        }
    }

    proptest! {
        #[test]
        fn safe_ids_never_contain_path_syntax(s in "\\PC{0,40}") {
            if assert_safe_entity_id("x", &s).is_ok() {
                prop_assert!(!s.is_empty());
                prop_assert!(!s.contains('.') && !s.contains('/') && !s.contains('\\') && !s.contains('\0'));
                // Joining a safe id under a base never leaves the base.
                let p = std::path::Path::new("/base").join(format!("{s}.json"));
                prop_assert!(p.starts_with("/base"));
                prop_assert_eq!(p.components().count(), 3);
            }
        }
    }
}
