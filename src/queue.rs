//! Queue delivery from JS: one attempt per call, the next step decided by the core; the
//! JS layer waits between attempts (so a redelivery the handler scheduled with
//! `timeoutSeconds` can wait on an unref'd timer).

use crate::guarded;
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

/// What to do after a delivery attempt.
#[napi(string_enum = "kebab-case")]
pub enum AttemptNext {
    /// Delivered (or nothing more to do).
    Done,
    /// Try again after `delayMs` (`scheduled` when the handler asked for it).
    Again,
    /// Stop trying.
    GiveUp,
}

#[napi(object)]
pub struct JsAttempt {
    pub next: AttemptNext,
    pub delay_ms: f64,
    pub scheduled: bool,
    pub connect_failures: u32,
    pub log: Option<String>,
}

#[napi(catch_unwind)]
pub async fn deliver_attempt_js(
    message: JsQueueMessage,
    target: JsQueueTarget,
    attempt: u32,
    connect_failures: u32,
) -> napi::Result<JsAttempt> {
    guarded(deliver(message, target, attempt, connect_failures)).await
}

async fn deliver(
    message: JsQueueMessage,
    target: JsQueueTarget,
    attempt: u32,
    connect_failures: u32,
) -> napi::Result<JsAttempt> {
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
        Next::Done => (AttemptNext::Done, 0.0, false),
        Next::Again { delay, scheduled } => {
            (AttemptNext::Again, delay.as_millis() as f64, scheduled)
        }
        Next::GiveUp => (AttemptNext::GiveUp, 0.0, false),
    };
    Ok(JsAttempt {
        next,
        delay_ms,
        scheduled,
        connect_failures: a.connect_failures,
        log: a.log,
    })
}
