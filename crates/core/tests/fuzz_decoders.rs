//! Property tests (proptest) of every decoder of on-disk event and entity JSON: arbitrary
//! bytes, and near-valid files (real files world-local's format produces, then truncated,
//! bit-flipped, or with a field replaced by any JSON value), never panic; the entity
//! parsers answer a typed `CORRUPT_FILE` error naming the file; the World operations that
//! read such files (runs.get, events.list, hooks.getByToken, events.create of every kind)
//! return a result or a typed error.
//!
//! (The directory-record parser is fuzzed in `dirscan.rs`, chunk frames in `stream/`.)

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use workflow_core::machine::entities::{parse_wait, RunState, StepState};
use workflow_core::world::fsio::{normalize_date, parse_date_ms, parse_json};
use workflow_core::world::local::LocalWorld;
use workflow_core::world::model::{parse_event_summary, parse_hook, parse_run, Payload};
use workflow_core::Error;

// ----------------------------------------------------------------- corpus

/// A data directory with one run taken through every kind of event, written by the
/// state machine in world-local's format. Built once.
fn corpus_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let w = LocalWorld::new(dir.path()).unwrap();
        let run = format!("wrun_{}", workflow_core::ids::monotonic_ulid());
        let ev = |run: Option<&str>, v: Value| {
            w.create_event_sync(run, &v.to_string()).unwrap();
        };
        let bytes = |s: &str| json!({"__type": "Uint8Array", "data": base64(s.as_bytes())});
        ev(
            Some(&run),
            json!({"eventType": "run_created", "specVersion": 3, "eventData": {
                "deploymentId": "dpl_local@4.4.1", "workflowName": "workflow//./wf.js//wf",
                "input": bytes("devl[[1,2],1,2]"),
                "executionContext": {"traceCarrier": {}, "workflowCoreVersion": "4.8.9"}}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "run_started", "specVersion": 3}),
        );
        ev(
            Some(&run),
            json!({"eventType": "step_created", "specVersion": 3, "correlationId": "step_A",
                "eventData": {"stepName": "step//./wf.js//add", "input": bytes("devl[[1]]")}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "step_started", "specVersion": 3, "correlationId": "step_A"}),
        );
        ev(
            Some(&run),
            json!({"eventType": "step_completed", "specVersion": 3, "correlationId": "step_A",
                "eventData": {"result": bytes("devl[3]")}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "step_created", "specVersion": 3, "correlationId": "step_B",
                "eventData": {"stepName": "step//./wf.js//add", "input": bytes("devl[[2]]")}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "step_started", "specVersion": 3, "correlationId": "step_B"}),
        );
        ev(
            Some(&run),
            json!({"eventType": "step_retrying", "specVersion": 3, "correlationId": "step_B",
                "eventData": {"error": {"message": "again", "stack": "Error: again"},
                "retryAfter": "2030-01-01T00:00:00.000Z"}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "wait_created", "specVersion": 3, "correlationId": "wait_A",
                "eventData": {"resumeAt": "2030-01-01T00:00:00.000Z"}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "wait_created", "specVersion": 3, "correlationId": "wait_B",
                "eventData": {"resumeAt": "2030-01-01T00:00:00.000Z"}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "wait_completed", "specVersion": 3, "correlationId": "wait_B",
                "eventData": {"resumeAt": "2030-01-01T00:00:00.000Z"}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_A",
                "eventData": {"token": "tok-A", "metadata": bytes("devl[{}]"), "isWebhook": true}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "hook_received", "specVersion": 3, "correlationId": "hook_A",
                "eventData": {"token": "tok-A", "payload": bytes("devl[7]")}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_B",
                "eventData": {"token": "tok-B", "isWebhook": false}}),
        );
        ev(
            Some(&run),
            json!({"eventType": "hook_disposed", "specVersion": 3, "correlationId": "hook_B"}),
        );
        // A second run for the terminal states.
        for (i, end) in [
            json!({"eventType": "run_completed", "specVersion": 3, "eventData": {"output": bytes("devl[42]")}}),
            json!({"eventType": "run_failed", "specVersion": 3, "eventData": {"error": {"message": "boom", "stack": "Error: boom"}, "errorCode": "USER_ERROR"}}),
            json!({"eventType": "run_cancelled", "specVersion": 3}),
        ]
        .into_iter()
        .enumerate()
        {
            let r = format!("wrun_{}", workflow_core::ids::monotonic_ulid());
            ev(
                Some(&r),
                json!({"eventType": "run_created", "specVersion": 3, "eventData": {
                    "deploymentId": "dpl_local@4.4.1", "workflowName": format!("workflow//./wf.js//t{i}"),
                    "input": bytes("devl[[]]")}}),
            );
            ev(Some(&r), json!({"eventType": "run_started", "specVersion": 3}));
            ev(Some(&r), end);
        }
        dir
    })
    .path()
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Every JSON file of the corpus: (path relative to the data directory, bytes).
fn corpus() -> &'static [(PathBuf, Vec<u8>)] {
    static FILES: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let root = corpus_dir();
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    let rel = p.strip_prefix(root).unwrap().to_path_buf();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        assert!(
            out.len() > 20,
            "the corpus has files of every kind ({})",
            out.len()
        );
        for dir in ["runs", "steps", "waits", "hooks", "events"] {
            assert!(
                out.iter().any(|(p, _)| p.starts_with(dir)),
                "the corpus has {dir}/ files"
            );
        }
        out
    })
}

// ------------------------------------------------------------- strategies

/// Strings a date or id decoder may meet.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("2026-11-29T03:28:16.940Z".to_string()),
        Just("2026-11-29T03:28:16.940+14:00".to_string()),
        Just("2026-13-45T99:99:99Z".to_string()),
        Just("+275760-09-13T00:00:00.000Z".to_string()),
        Just("-000001-01-01T00:00:00Z".to_string()),
        Just("9999-12-31T23:59:59.999999999Z".to_string()),
        Just("yesterday".to_string()),
        Just("completed".to_string()),
        Just("failed".to_string()),
        Just("Uint8Array".to_string()),
        Just("../x".to_string()),
        Just("a\0b".to_string()),
        "\\PC{0,40}",
        "[A-Za-z0-9+/=]{0,24}",
    ]
}

fn tricky_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e20f64..1e20f64).prop_map(|n| json!(n)),
        Just(json!(8.64e15)),
        Just(json!(8.64e15 + 1.0)),
        Just(json!(-8.64e15 - 1.0)),
        Just(json!(8.3e15)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(f64::MAX)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!(-0.0)),
        Just(json!(0.5)),
        Just(json!(9_007_199_254_740_993u64)),
    ]
}

/// Any JSON value, weighted towards what decoders look at.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        tricky_number(),
        tricky_string().prop_map(Value::String),
        // world-local's binary payload form, with any data
        prop_oneof![
            tricky_string().prop_map(Value::String),
            tricky_number(),
            Just(Value::Null)
        ]
        .prop_map(|data| json!({"__type": "Uint8Array", "data": data})),
        // a structured error, with any message
        prop_oneof![tricky_string().prop_map(Value::String), tricky_number()]
            .prop_map(|m| json!({"message": m, "stack": "Error", "code": "USER_ERROR"})),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Keys the decoders read, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "runId",
            "status",
            "deploymentId",
            "workflowName",
            "specVersion",
            "executionContext",
            "input",
            "output",
            "error",
            "message",
            "stack",
            "code",
            "createdAt",
            "updatedAt",
            "startedAt",
            "completedAt",
            "expiredAt",
            "stepId",
            "stepName",
            "attempt",
            "retryAfter",
            "waitId",
            "resumeAt",
            "hookId",
            "token",
            "ownerId",
            "projectId",
            "environment",
            "metadata",
            "isWebhook",
            "eventId",
            "eventType",
            "correlationId",
            "eventData",
            "result",
            "payload",
            "__type",
            "data",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,8}",
    ]
}

/// A change to a parsed document.
#[derive(Debug, Clone)]
enum Edit {
    /// set `key` (at the top, or inside one of the nested objects) to a value
    Set {
        nested: Option<prop::sample::Index>,
        key: String,
        value: Value,
    },
    Remove {
        key: String,
    },
    ReplaceRoot(Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (prop::option::of(any::<prop::sample::Index>()), key(), arb_json())
            .prop_map(|(nested, key, value)| Edit::Set { nested, key, value }),
        3 => key().prop_map(|key| Edit::Remove { key }),
        1 => arb_json().prop_map(Edit::ReplaceRoot),
    ]
}

fn apply_edit(doc: &mut Value, e: &Edit) {
    match e {
        Edit::ReplaceRoot(v) => *doc = v.clone(),
        Edit::Remove { key } => {
            if let Value::Object(m) = doc {
                m.remove(key);
            }
        }
        Edit::Set { nested, key, value } => {
            let Value::Object(m) = doc else { return };
            let target = nested.and_then(|i| {
                let mut objects: Vec<&mut Value> =
                    m.values_mut().filter(|v| v.is_object()).collect();
                if objects.is_empty() {
                    None
                } else {
                    let n = objects.len();
                    Some(objects.swap_remove(i.index(n)))
                }
            });
            match target {
                Some(Value::Object(inner)) => {
                    inner.insert(key.clone(), value.clone());
                }
                _ => {
                    m.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// A change to a file's bytes.
#[derive(Debug, Clone)]
enum ByteEdit {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    /// a printable ASCII character in place of another: usually still JSON
    Ascii(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
    Empty,
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(ByteEdit::Truncate),
        3 => (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        4 => (any::<prop::sample::Index>(), 0x20u8..0x7f).prop_map(|(i, b)| ByteEdit::Ascii(i, b)),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        2 => (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => Just(ByteEdit::Empty),
    ]
}

fn apply_bytes(b: &mut Vec<u8>, e: &ByteEdit) {
    if b.is_empty() {
        return;
    }
    match e {
        ByteEdit::Truncate(i) => b.truncate(i.index(b.len())),
        ByteEdit::Flip(i, x) => {
            let i = i.index(b.len());
            b[i] ^= x;
        }
        ByteEdit::Ascii(i, x) => {
            let i = i.index(b.len());
            b[i] = *x;
        }
        ByteEdit::Insert(i, x) => {
            let i = i.index(b.len() + 1);
            b.insert(i, *x);
        }
        ByteEdit::Delete(i, n) => {
            let i = i.index(b.len());
            let end = (i + n).min(b.len());
            b.drain(i..end);
        }
        ByteEdit::Empty => b.clear(),
    }
}

// ---------------------------------------------------------------- checks

fn assert_corrupt_naming(e: &Error, path: &Path, what: &str) {
    assert_eq!(
        e.code().as_deref(),
        Some("CORRUPT_FILE"),
        "{what}: not a CORRUPT_FILE error: {e}"
    );
    assert_eq!(e.name(), "WorkflowWorldError", "{what}");
    assert!(
        e.to_string().contains(&path.display().to_string()),
        "{what}: the error does not name the file: {e}"
    );
}

/// A date is accepted only if JavaScript's `Date` can hold it (|ms| ≤ 8.64e15, what
/// `z.coerce.date()` accepts) and it survives being re-printed: never silently another
/// instant (such as 1970 for a number out of range).
fn check_date(v: &Value) {
    let ms = parse_date_ms(v);
    let iso = normalize_date(v);
    assert_eq!(ms.is_some(), iso.is_some(), "{v}");
    if let (Some(ms), Some(iso)) = (ms, iso) {
        assert!(ms.is_finite() && ms.abs() <= 8.64e15, "{v} → {ms}");
        assert_eq!(parse_date_ms(&iso), Some(ms.trunc()), "{v} → {iso}");
    }
}

/// Runs every value decoder on `v`; entity parsers may only fail with CORRUPT_FILE
/// naming `path`.
fn decode_all(path: &Path, v: &Value) {
    for with_data in [false, true] {
        if let Err(e) = parse_run(path, v, with_data) {
            assert_corrupt_naming(&e, path, "parse_run");
        }
    }
    if let Err(e) = RunState::parse(path, v) {
        assert_corrupt_naming(&e, path, "RunState::parse");
    }
    if let Err(e) = parse_hook(path, v) {
        assert_corrupt_naming(&e, path, "parse_hook");
    }
    if let Value::Object(m) = v {
        if let Err(e) = StepState::parse(path, m) {
            assert_corrupt_naming(&e, path, "StepState::parse");
        }
        if let Err(e) = parse_wait(path, m) {
            assert_corrupt_naming(&e, path, "parse_wait");
        }
        for (_, field) in m.iter() {
            if let Err(e) = Payload::from_json(path, field) {
                assert_corrupt_naming(&e, path, "Payload::from_json");
            }
            check_date(field);
            if let Value::Object(inner) = field {
                for x in inner.values() {
                    let _ = Payload::from_json(path, x);
                    check_date(x);
                }
            }
        }
    }
    if let Some(ev) = parse_event_summary(v) {
        assert!(ev.created_at.is_finite());
        if ev.event_type == "wait_created" {
            assert!(ev.correlation_id.is_some() && ev.resume_at.is_some());
        }
    }
}

fn decode_bytes(path: &Path, bytes: &[u8]) {
    match parse_json(path, bytes) {
        Ok(v) => decode_all(path, &v),
        Err(e) => assert_corrupt_naming(&e, path, "parse_json"),
    }
}

fn cfg(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ----------------------------------------------------------------- tests

proptest! {
    #![proptest_config(cfg(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_fail_as_corrupt_files(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_bytes(Path::new("/data/runs/wrun_X.json"), &bytes);
    }

    #[test]
    fn arbitrary_json_values_never_panic(v in arb_json()) {
        decode_all(Path::new("/data/events/wrun_X-evnt_Y.json"), &v);
    }

    #[test]
    fn real_files_with_fields_changed_never_panic(
        file in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let files = corpus();
        let (rel, bytes) = &files[file.index(files.len())];
        let path = Path::new("/data").join(rel);
        let mut doc: Value = serde_json::from_slice(bytes).unwrap();
        for e in &edits {
            apply_edit(&mut doc, e);
        }
        decode_all(&path, &doc);
        decode_bytes(&path, serde_json::to_string_pretty(&doc).unwrap().as_bytes());
    }

    #[test]
    fn real_files_with_bytes_changed_never_panic(
        file in any::<prop::sample::Index>(),
        edits in prop::collection::vec(byte_edit(), 1..4),
    ) {
        let files = corpus();
        let (rel, bytes) = &files[file.index(files.len())];
        let path = Path::new("/data").join(rel);
        let mut b = bytes.clone();
        for e in &edits {
            apply_bytes(&mut b, e);
        }
        decode_bytes(&path, &b);
    }
}

#[test]
fn the_unmodified_corpus_decodes() {
    let root = corpus_dir();
    for (rel, bytes) in corpus() {
        let path = root.join(rel);
        let v = parse_json(&path, bytes).unwrap();
        let top = rel.iter().next().and_then(|s| s.to_str()).unwrap_or("");
        match top {
            "runs" => {
                parse_run(&path, &v, true).unwrap();
            }
            "steps" => {
                StepState::parse(&path, v.as_object().unwrap()).unwrap();
            }
            "waits" => {
                parse_wait(&path, v.as_object().unwrap()).unwrap();
            }
            "hooks" if !rel.starts_with("hooks/tokens") => {
                parse_hook(&path, &v).unwrap();
            }
            "events" => {
                assert!(parse_event_summary(&v).is_some(), "{}", rel.display());
            }
            _ => {}
        }
    }
}

/// A copy of the corpus directory.
fn copy_corpus(to: &Path) {
    for (rel, bytes) in corpus() {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// The run ids of the corpus.
fn corpus_runs() -> Vec<String> {
    corpus()
        .iter()
        .filter(|(p, _)| p.starts_with("runs"))
        .filter_map(|(p, _)| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect()
}

/// One damaged file in a data directory, then every World operation that reads it:
/// results or typed errors, never a panic.
#[test]
fn world_operations_over_a_damaged_file_never_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(cfg(96));
    let strategy = (
        any::<prop::sample::Index>(),
        prop_oneof![
            prop::collection::vec(edit(), 1..3).prop_map(Ok),
            prop::collection::vec(byte_edit(), 1..3).prop_map(Err),
        ],
    );
    runner
        .run(&strategy, |(file, edits)| {
            let dir = tempfile::tempdir().unwrap();
            copy_corpus(dir.path());
            let files = corpus();
            let (rel, bytes) = &files[file.index(files.len())];
            let damaged = match &edits {
                Ok(edits) => {
                    let mut doc: Value = serde_json::from_slice(bytes).unwrap();
                    for e in edits {
                        apply_edit(&mut doc, e);
                    }
                    serde_json::to_vec_pretty(&doc).unwrap()
                }
                Err(edits) => {
                    let mut b = bytes.clone();
                    for e in edits {
                        apply_bytes(&mut b, e);
                    }
                    b
                }
            };
            std::fs::write(dir.path().join(rel), &damaged).unwrap();
            let w = std::sync::Arc::new(LocalWorld::new(dir.path()).unwrap());
            for run in corpus_runs() {
                let _ = w.get_run_sync(&run, true);
                let _ = w.list_events_json_sync(&run);
                rt.block_on(async {
                    let _ = w.list_run_events(&run).await;
                    let _ = workflow_core::run::wake_up(&w, &run, None, None).await;
                });
                for req in [
                    json!({"eventType": "step_completed", "specVersion": 3, "correlationId": "step_B", "eventData": {"result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}}),
                    json!({"eventType": "step_started", "specVersion": 3, "correlationId": "step_A"}),
                    json!({"eventType": "wait_completed", "specVersion": 3, "correlationId": "wait_A", "eventData": {"resumeAt": "2030-01-01T00:00:00.000Z"}}),
                    json!({"eventType": "hook_received", "specVersion": 3, "correlationId": "hook_A", "eventData": {"token": "tok-A", "payload": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}}),
                    json!({"eventType": "hook_disposed", "specVersion": 3, "correlationId": "hook_A"}),
                    json!({"eventType": "hook_created", "specVersion": 3, "correlationId": "hook_C", "eventData": {"token": "tok-A"}}),
                    json!({"eventType": "run_started", "specVersion": 3}),
                    json!({"eventType": "run_cancelled", "specVersion": 3}),
                ] {
                    if let Err(e) = w.create_event_sync(Some(&run), &req.to_string()) {
                        // A typed error with a message (the enum is the type).
                        assert!(!e.to_string().is_empty());
                    }
                }
            }
            rt.block_on(async {
                for token in ["tok-A", "tok-B", "nope"] {
                    let _ = w.get_hook_by_token(token).await;
                }
            });
            let _ = w.list_runs_json_sync(None);
            Ok(())
        })
        .unwrap();
}
