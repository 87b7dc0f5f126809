//! Queue delivery from JS: the message travels as a plain object, the delivery runs on the
//! native runtime and resolves with a report (the pending promise keeps Node alive while a
//! delivery is in flight, as world-local's pending fetch does).

use napi_derive::napi;
use workflow_core::queue::{deliver, QueueMessage, Target};

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

#[napi(object)]
pub struct JsDeliveryReport {
    pub attempts: u32,
    pub delivered: bool,
    pub log: Vec<String>,
}

#[napi]
pub async fn deliver_queue_message(
    message: JsQueueMessage,
    target: JsQueueTarget,
) -> JsDeliveryReport {
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
    let r = deliver(&target, &msg).await;
    JsDeliveryReport {
        attempts: r.attempts,
        delivered: r.delivered,
        log: r.log,
    }
}
