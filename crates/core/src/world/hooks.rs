//! Hooks in the local world: lookup by token and the `hook_received` event.

use crate::error::{Error, Result};
use crate::ids::assert_safe_entity_id;
use crate::world::fsio::{
    list_dir, parse_date_ms, parse_json, read_json, remove_if_exists, to_compact_json,
    to_pretty_json, write_exclusive,
};
use crate::world::local::{sha256_hex, LocalWorld};
pub use crate::world::model::{parse_hook, Hook};
use crate::world::model::{payload_json, Payload, SPEC_VERSION_CURRENT};
use serde_json::{json, Map, Value};

impl LocalWorld {
    fn hook_path(&self, hook_id: &str) -> std::path::PathBuf {
        self.root().join("hooks").join(format!("{hook_id}.json"))
    }

    /// `hooks.getByToken`: the token claim points at the hook; without a claim the hook
    /// files are searched, and at last the event log (world-local rebuilds a live hook
    /// whose files were lost from its `hook_created` event). `HookNotFoundError(token)`
    /// when there is none.
    ///
    /// One unreadable hook file does not hide the others: the search goes on past it,
    /// and its error (naming the file) is the answer only when no hook is found. A hook
    /// left behind by a clean-up that failed after its run ended or after it was disposed
    /// is not returned: it is removed now (repaired) and the answer is the one the
    /// clean-up would have given, `HookNotFoundError`.
    pub async fn get_hook_by_token(&self, token: &str) -> Result<Hook> {
        let hooks_dir = self.root().join("hooks");
        let claim = hooks_dir
            .join("tokens")
            .join(format!("{}.json", sha256_hex(token.as_bytes())));
        if let Ok(Some(c)) = read_json(&claim).await {
            if let Some(hook_id) = c.get("hookId").and_then(Value::as_str) {
                if assert_safe_entity_id("hookId", hook_id).is_ok() {
                    let path = self.hook_path(hook_id);
                    if let Some(v) = read_json(&path).await? {
                        let h = parse_hook(&path, &v)?;
                        if h.token == token {
                            return self.live_or_repair(h).await;
                        }
                    }
                }
            }
        }
        let mut unreadable: Option<Error> = None;
        for name in list_dir(&hooks_dir).await? {
            if !name.ends_with(".json") || name.contains(".tmp.") {
                continue;
            }
            let path = hooks_dir.join(&name);
            let v = match read_json(&path).await {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    unreadable.get_or_insert(e);
                    continue;
                }
            };
            if v.get("token").and_then(Value::as_str) == Some(token) {
                let h = parse_hook(&path, &v)?;
                return self.live_or_repair(h).await;
            }
        }
        if let Some(h) = self.rebuild_hook_from_events(token).await? {
            return Ok(h);
        }
        Err(unreadable.unwrap_or_else(|| Error::HookNotFound {
            token: token.to_string(),
        }))
    }

    /// The hook, unless its run ended or it was disposed (a clean-up that failed after
    /// the event was recorded left it): then it is removed, best effort, and not found.
    async fn live_or_repair(&self, h: Hook) -> Result<Hook> {
        let run_ended = match self.get_run(&h.run_id, false).await {
            Ok(run) => run.status.is_terminal(),
            // the run's own problem is for whoever reads it next
            Err(_) => false,
        };
        let disposed = self
            .root()
            .join(".locks")
            .join("hooks")
            .join(format!("{}.disposed", h.hook_id));
        let disposed = assert_safe_entity_id("hookId", &h.hook_id).is_ok()
            && tokio::fs::symlink_metadata(&disposed).await.is_ok();
        if !run_ended && !disposed {
            return Ok(h);
        }
        let claim = self
            .root()
            .join("hooks")
            .join("tokens")
            .join(format!("{}.json", sha256_hex(h.token.as_bytes())));
        let claim_is_its = matches!(
            read_json(&claim).await,
            Ok(Some(c)) if c.get("hookId").and_then(Value::as_str) == Some(h.hook_id.as_str())
        );
        let mut removed = Ok(());
        if claim_is_its {
            removed = remove_if_exists(&claim).await;
        }
        if removed.is_ok() && assert_safe_entity_id("hookId", &h.hook_id).is_ok() {
            removed = remove_if_exists(&self.hook_path(&h.hook_id)).await;
        }
        if let Err(e) = removed {
            crate::error::report(
                &format!(
                    "Could not remove hook {} left behind by its {}",
                    h.hook_id,
                    if run_ended { "run's end" } else { "disposal" }
                ),
                &e,
            );
        }
        Err(Error::HookNotFound {
            token: h.token.clone(),
        })
    }

    /// Finds a still-live `hook_created` for the token in the event log and restores its
    /// claim and entity files, as world-local does.
    async fn rebuild_hook_from_events(&self, token: &str) -> Result<Option<Hook>> {
        let dir = self.root().join("events");
        let mut events: Vec<(f64, String, Value)> = Vec::new();
        for name in list_dir(&dir).await? {
            if !name.ends_with(".json") || name.contains(".tmp.") {
                continue;
            }
            let path = dir.join(&name);
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            let Ok(v) = parse_json(&path, &bytes) else {
                continue;
            };
            let (Some(t), Some(id)) = (
                v.get("createdAt").and_then(parse_date_ms),
                v.get("eventId").and_then(Value::as_str).map(str::to_string),
            ) else {
                continue;
            };
            events.push((t, id, v));
        }
        let live = live_hook_event(&mut events, token);
        let Some(ev) = live else {
            return Ok(None);
        };
        let run_id = ev.get("runId").and_then(Value::as_str).unwrap_or("");
        if assert_safe_entity_id("runId", run_id).is_err() {
            return Ok(None);
        }
        if let Ok(run) = self.get_run(run_id, false).await {
            if run.status.is_terminal() {
                return Ok(None);
            }
        }
        let hook_id = ev
            .get("correlationId")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert_safe_entity_id("hookId", hook_id)?;
        let mut h = Map::new();
        h.insert("runId".into(), json!(run_id));
        h.insert("hookId".into(), json!(hook_id));
        h.insert("token".into(), json!(token));
        if let Some(m) = ev.pointer("/eventData/metadata") {
            h.insert("metadata".into(), m.clone());
        }
        h.insert("ownerId".into(), json!("local-owner"));
        h.insert("projectId".into(), json!("local-project"));
        h.insert("environment".into(), json!("local"));
        if let Some(c) = ev.get("createdAt") {
            h.insert("createdAt".into(), c.clone());
        }
        if let Some(sv) = ev.get("specVersion") {
            h.insert("specVersion".into(), sv.clone());
        }
        h.insert(
            "isWebhook".into(),
            ev.pointer("/eventData/isWebhook")
                .cloned()
                .unwrap_or(json!(true)),
        );
        let claim = json!({
            "token": token,
            "hookId": hook_id,
            "runId": run_id,
            "eventId": ev.get("eventId").cloned().unwrap_or(Value::Null),
        });
        let tokens = self.root().join("hooks").join("tokens");
        write_exclusive(
            &tokens.join(format!("{}.json", sha256_hex(token.as_bytes()))),
            to_compact_json(&claim).as_bytes(),
        )
        .await?;
        let hv = Value::Object(h);
        let path = self.hook_path(hook_id);
        write_exclusive(&path, to_pretty_json(&hv).as_bytes()).await?;
        parse_hook(&path, &hv).map(Some)
    }

    /// `events.create(runId, { eventType: 'hook_received', specVersion: 3, correlationId:
    /// hookId, eventData: { token?, payload } })` with world-local's checks: legacy runs
    /// only append the event; otherwise the hook must still exist (`HookNotFoundError`
    /// carrying the hook id, as world-local reports it).
    pub async fn hook_received(
        &self,
        run_id: &str,
        hook_id: &str,
        token: Option<&str>,
        payload: &Payload,
    ) -> Result<String> {
        if run_id.is_empty() {
            return Err(Error::Plain(
                "runId is required for non-run_created events".into(),
            ));
        }
        let mut data = Map::new();
        if let Some(t) = token {
            data.insert("token".into(), json!(t));
        }
        data.insert("payload".into(), payload_json(payload));
        let mut request = Map::new();
        request.insert("eventType".into(), json!("hook_received"));
        request.insert("specVersion".into(), json!(SPEC_VERSION_CURRENT));
        request.insert("correlationId".into(), json!(hook_id));
        request.insert("eventData".into(), Value::Object(data));
        let created = self.apply_event(Some(run_id), request).await?;
        created
            .result
            .event
            .as_ref()
            .and_then(|e| e.get("eventId"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Plain("hook_received stored no event".into()))
    }
}

/// The `hook_created` event that holds `token` at the end of the log (world-local's
/// rebuild from events): the last one for the token not followed by its disposal or by
/// the end of its run. Sorts `events` (createdAt, eventId) first.
pub(crate) fn live_hook_event<'a>(
    events: &'a mut [(f64, String, Value)],
    token: &str,
) -> Option<&'a Value> {
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut live: Option<&Value> = None;
    for (_, _, ev) in events.iter() {
        let ty = ev.get("eventType").and_then(Value::as_str).unwrap_or("");
        if ty == "hook_created"
            && ev.get("correlationId").and_then(Value::as_str).is_some()
            && ev.pointer("/eventData/token").and_then(Value::as_str) == Some(token)
        {
            live = Some(ev);
            continue;
        }
        if let Some(l) = live {
            if ev.get("runId") == l.get("runId")
                && ((ty == "hook_disposed" && ev.get("correlationId") == l.get("correlationId"))
                    || matches!(ty, "run_completed" | "run_failed" | "run_cancelled"))
            {
                live = None;
            }
        }
    }
    live
}
