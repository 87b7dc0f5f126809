//! N-API binding for workflow-native. Conversion only: every decision lives in
//! `workflow-core`. Errors cross the boundary as data (see [`to_napi`]) and become
//! proper JS error classes in `lib/errors.js`.

mod engine;
mod lease;
mod queue;
mod stream;
mod world;

use workflow_core::Error as CoreError;

/// Marker that starts the reason of every error the core produced; the JS layer parses
/// the JSON after it into `{ name, message, ...fields }`.
pub(crate) const ERROR_MARKER: &str = "\u{1}WFN:";

pub(crate) fn to_napi(e: CoreError) -> napi::Error {
    let mut obj = e.fields();
    obj.insert("name".into(), e.name().into());
    obj.insert("message".into(), e.to_string().into());
    let json = serde_json::Value::Object(obj).to_string();
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("{ERROR_MARKER}{json}"),
    )
}
