//! Queue delivery as world-local does it: an HTTP POST of the JSON message to the app's
//! own `/.well-known/workflow/v1/flow` (workflow queues) or `/step` (step queues) with the
//! `x-vqs-*` headers, redelivered when the handler answers `{ timeoutSeconds }`, retried
//! when it fails.

use crate::error::{Error, Result};
use crate::ids::prefixed_id;
use std::sync::OnceLock;
use std::time::Duration;

pub const WORKFLOW_ROUTE_BASE: &str = "/.well-known/workflow/v1";
/// world-local's safety limit on attempts of one message.
pub const MAX_ATTEMPTS: u32 = 256;
/// Wait after a non-2xx answer (world-local: 5 s).
pub const HTTP_ERROR_RETRY: Duration = Duration::from_secs(5);
/// Connection-level failures (app down, connection refused) are retried this many times
/// with exponential backoff from 250 ms; world-local gives up on the first one.
pub const MAX_CONNECT_ATTEMPTS: u32 = 6;
const MAX_SAFE_TIMEOUT_MS: u64 = 2_147_483_647;

/// Validates a workflow name and returns its queue name (`__wkf_workflow_<name>`, or
/// `__<ns>_wkf_workflow_<name>` with a queue namespace).
pub fn workflow_queue_name(workflow_name: &str, namespace: Option<&str>) -> Result<String> {
    let safe = !workflow_name.is_empty()
        && workflow_name.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '-' | '.' | '/' | '@' | '(' | ')' | '[' | ']')
        });
    if !safe {
        return Err(Error::Plain(format!(
            "Invalid workflow name \"{workflow_name}\": must only contain alphanumeric characters, underscores, hyphens, dots, forward slashes, at signs, parentheses, or square brackets"
        )));
    }
    Ok(match namespace.filter(|n| is_valid_namespace(n)) {
        Some(ns) => format!("__{ns}_wkf_workflow_{workflow_name}"),
        None => format!("__wkf_workflow_{workflow_name}"),
    })
}

fn is_valid_namespace(ns: &str) -> bool {
    let mut chars = ns.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Where queue messages go, as the caller's environment says at the time of the call.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `WORKFLOW_LOCAL_BASE_URL` (used as given)
    pub base_url: Option<String>,
    /// `PORT`
    pub port: Option<String>,
    /// The app's base path (`setWorkflowBasePath`), appended to port-derived URLs.
    pub base_path: String,
}

fn origin_with_base_path(origin: &str, base_path: &str) -> String {
    let cut = origin.find(['?', '#']).unwrap_or(origin.len());
    format!("{}{}", origin[..cut].trim_end_matches('/'), base_path)
}

/// `createWorkflowUrl(base, { type })`.
pub fn endpoint_url(base: &str, route: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| Error::Queue(format!("Invalid workflow base URL \"{base}\": {e}")))?;
    let path = format!(
        "{}{}/{}",
        url.path().trim_end_matches('/'),
        WORKFLOW_ROUTE_BASE,
        route
    );
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// TCP ports this process listens on (Linux: `/proc/self/fd` × `/proc/net/tcp{,6}`).
pub fn listening_ports_of_this_process() -> Vec<u16> {
    let mut inodes = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.flatten() {
            if let Ok(link) = std::fs::read_link(e.path()) {
                let l = link.to_string_lossy();
                if let Some(inode) = l.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.push(inode.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(content) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in content.lines().skip(1) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 10 || parts[3] != "0A" || !inodes.iter().any(|i| i == parts[9]) {
                continue;
            }
            if let Some(port) = parts[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok())
            {
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

/// world-local's base URL resolution: `WORKFLOW_LOCAL_BASE_URL`, then `PORT`, then the
/// port this process listens on (probing the health endpoint when there are several).
pub async fn resolve_base_url(target: &Target) -> Result<String> {
    if let Some(b) = target.base_url.as_deref().filter(|b| !b.is_empty()) {
        return Ok(b.to_string());
    }
    if let Some(p) = target.port.as_deref().filter(|p| !p.is_empty()) {
        return Ok(origin_with_base_path(
            &format!("http://localhost:{p}"),
            &target.base_path,
        ));
    }
    let ports = listening_ports_of_this_process();
    let chosen = match ports.len() {
        0 => None,
        1 => Some(ports[0]),
        _ => {
            let mut found = None;
            for p in &ports {
                let url = format!(
                    "http://localhost:{p}{}{WORKFLOW_ROUTE_BASE}/flow?__health",
                    target.base_path
                );
                let ok = client()?
                    .head(&url)
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ok {
                    found = Some(*p);
                    break;
                }
            }
            found.or(ports.first().copied())
        }
    };
    match chosen {
        Some(p) => Ok(origin_with_base_path(
            &format!("http://localhost:{p}"),
            &target.base_path,
        )),
        None => Err(Error::Queue(
            "Unable to resolve base URL for workflow queue.".into(),
        )),
    }
}

static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();

fn client() -> Result<&'static reqwest::Client> {
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    // reqwest is built without a default crypto provider (no aws-lc): use ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Queue(format!("cannot create the HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| c))
}

/// A message to deliver.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub queue_name: String,
    pub message_id: String,
    /// The JSON body (`JSON.stringify(message)`).
    pub body: String,
}

impl QueueMessage {
    pub fn new(queue_name: String, body: &serde_json::Value) -> QueueMessage {
        QueueMessage {
            queue_name,
            message_id: prefixed_id("msg"),
            body: crate::world::fsio::to_compact_json(body),
        }
    }

    fn route(&self) -> &'static str {
        let rest = self.queue_name.trim_start_matches("__");
        let kind = rest.split_once("wkf_").map(|(_, r)| r).unwrap_or(rest);
        if kind.starts_with("step_") {
            "step"
        } else {
            "flow"
        }
    }
}

/// What to do after one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// delivered (2xx without `timeoutSeconds`)
    Done,
    /// attempt again after `delay`. `scheduled` = the handler asked for it
    /// (`timeoutSeconds`), as opposed to a retry after a failure.
    Again { delay: Duration, scheduled: bool },
    /// stop trying (attempts exhausted, no base URL, …)
    GiveUp,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub next: Next,
    /// consecutive connection failures so far (input to the next attempt)
    pub connect_failures: u32,
    /// a log line when the attempt failed
    pub log: Option<String>,
}

/// One delivery attempt (`attempt` is 1-based and sent as `x-vqs-message-attempt`); the
/// result says what world-local's loop would do next: redeliver after the handler's
/// `timeoutSeconds`, retry 5 s after an HTTP error, back off after a connection error,
/// give up after 256 attempts. The caller owns the waiting, so a scheduled redelivery
/// need not keep the process alive.
pub async fn deliver_attempt(
    target: &Target,
    msg: &QueueMessage,
    attempt: u32,
    connect_failures: u32,
) -> Attempt {
    let give_up = |log: String| Attempt {
        next: Next::GiveUp,
        connect_failures,
        log: Some(log),
    };
    if attempt > MAX_ATTEMPTS {
        return give_up(format!(
            "[world-local] Queue message exhausted safety limit ({MAX_ATTEMPTS} attempts) queue={} messageId={}",
            msg.queue_name, msg.message_id
        ));
    }
    let url = match resolve_base_url(target)
        .await
        .and_then(|b| endpoint_url(&b, msg.route()))
    {
        Ok(u) => u,
        Err(e) => return give_up(format!("[workflow-native] Queue operation failed: {e}")),
    };
    let client = match client() {
        Ok(c) => c,
        Err(e) => return give_up(e.to_string()),
    };
    let res = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-vqs-queue-name", &msg.queue_name)
        .header("x-vqs-message-id", &msg.message_id)
        .header("x-vqs-message-attempt", attempt.to_string())
        .body(msg.body.clone())
        .send()
        .await;
    match res {
        Ok(resp) => {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                let timeout = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("timeoutSeconds").and_then(|t| t.as_f64()))
                    .filter(|t| t.is_finite() && *t >= 0.0);
                return Attempt {
                    next: match timeout {
                        Some(t) => Next::Again {
                            delay: Duration::from_millis(
                                ((t * 1000.0) as u64).min(MAX_SAFE_TIMEOUT_MS),
                            ),
                            scheduled: true,
                        },
                        None => Next::Done,
                    },
                    connect_failures: 0,
                    log: None,
                };
            }
            Attempt {
                next: Next::Again {
                    delay: HTTP_ERROR_RETRY,
                    scheduled: false,
                },
                connect_failures: 0,
                log: Some(format!(
                    "[world-local] Queue message failed (attempt {attempt}, HTTP {}) queue={} messageId={} handlerError={text}",
                    status.as_u16(),
                    msg.queue_name,
                    msg.message_id,
                )),
            }
        }
        Err(e) => {
            let failures = connect_failures + 1;
            let log = format!(
                "[workflow-native] Queue delivery to {url} failed (attempt {attempt}): {e}"
            );
            if failures >= MAX_CONNECT_ATTEMPTS {
                return Attempt {
                    next: Next::GiveUp,
                    connect_failures: failures,
                    log: Some(log),
                };
            }
            Attempt {
                next: Next::Again {
                    delay: Duration::from_millis(250u64 << (failures - 1).min(5)),
                    scheduled: false,
                },
                connect_failures: failures,
                log: Some(log),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert_eq!(
            workflow_queue_name("workflow//./src/wf//run", None).unwrap(),
            "__wkf_workflow_workflow//./src/wf//run"
        );
        assert_eq!(
            workflow_queue_name("w", Some("ns1")).unwrap(),
            "__ns1_wkf_workflow_w"
        );
        let e = workflow_queue_name("bad name", None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Invalid workflow name \"bad name\""));
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            endpoint_url("http://localhost:3000", "flow").unwrap(),
            "http://localhost:3000/.well-known/workflow/v1/flow"
        );
        assert_eq!(
            endpoint_url("http://h:1/base/?x=1#y", "step").unwrap(),
            "http://h:1/base/.well-known/workflow/v1/step"
        );
        assert_eq!(
            origin_with_base_path("http://localhost:3/", "/app"),
            "http://localhost:3/app"
        );
    }

    #[test]
    fn routes_by_queue_kind() {
        let m = |q: &str| QueueMessage::new(q.into(), &serde_json::json!({})).route();
        assert_eq!(m("__wkf_workflow_x"), "flow");
        assert_eq!(m("__wkf_step_x"), "step");
        assert_eq!(m("__ns_wkf_step_x"), "step");
    }

    #[tokio::test]
    async fn resolves_base_url_from_env_values_first() {
        let t = Target {
            base_url: Some("http://example.test:9".into()),
            port: Some("1".into()),
            base_path: String::new(),
        };
        assert_eq!(resolve_base_url(&t).await.unwrap(), "http://example.test:9");
        let t = Target {
            base_url: None,
            port: Some("4321".into()),
            base_path: "/app".into(),
        };
        assert_eq!(
            resolve_base_url(&t).await.unwrap(),
            "http://localhost:4321/app"
        );
    }

    #[tokio::test]
    async fn finds_the_port_this_process_listens_on() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening_ports_of_this_process().contains(&port));
    }
}
