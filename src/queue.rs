//! Queue delivery from JS: one attempt per call, the next step decided by the core; the
//! JS layer waits between attempts (so a redelivery the handler scheduled with
//! `timeoutSeconds` can wait on an unref'd timer).

use napi_derive::napi;
use workflow_core::queue::{deliver_attempt, Next, QueueMessage, Target};

#[napi(object)]
pub struct JsQueueMessage {
    pub queue_name: String,
    pub message_id: String,
    pub body: String,
}

impl From<QueueMessage> for JsQueueMessage {
    fn from(m: QueueMessage) -> Self {
        JsQueueMessage {
            queue_name: m.queue_name,
            message_id: m.message_id,
            body: m.body,
        }
    }
}

#[napi(object)]
pub struct JsQueueTarget {
    pub base_url: Option<String>,
    pub port: Option<String>,
    pub base_path: Option<String>,
}

/// `next`: `"done"`, `"again"` (after `delayMs`; `scheduled` when the handler asked for
/// it) or `"give-up"`.
#[napi(object)]
pub struct JsAttempt {
    pub next: String,
    pub delay_ms: f64,
    pub scheduled: bool,
    pub connect_failures: u32,
    pub log: Option<String>,
}

#[napi]
pub async fn deliver_attempt_js(
    message: JsQueueMessage,
    target: JsQueueTarget,
    attempt: u32,
    connect_failures: u32,
) -> JsAttempt {
    let msg = QueueMessage {
        queue_name: message.queue_name,
        message_id: message.message_id,
        body: message.body,
    };
    let target = Target {
        base_url: target.base_url,
        port: target.port,
        base_path: target.base_path.unwrap_or_default(),
    };
    let a = deliver_attempt(&target, &msg, attempt, connect_failures).await;
    let (next, delay_ms, scheduled) = match a.next {
        Next::Done => ("done", 0.0, false),
        Next::Again { delay, scheduled } => ("again", delay.as_millis() as f64, scheduled),
        Next::GiveUp => ("give-up", 0.0, false),
    };
    JsAttempt {
        next: next.to_string(),
        delay_ms,
        scheduled,
        connect_failures: a.connect_failures,
        log: a.log,
    }
}
