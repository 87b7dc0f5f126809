//! One LISTEN connection per World, reconnecting for good: it wakes `returnValue` waiters
//! and live stream readers. Nothing depends on a notification arriving — every waiter
//! also polls (see [`POLL`]) — so a killed or restarted listener costs latency, never a
//! hang (world-postgres's readers stall for good when theirs drops, vercel/workflow#1855).

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

/// world-postgres's stream chunk channel (payload `{"streamId":…,"chunkId":…}`).
pub const CHUNK_CHANNEL: &str = "workflow_event_chunk";
/// Our run channel (payload: the run id), sent when a run ends.
pub const RUN_CHANNEL: &str = "workflow_native_run";
/// Our events channel (payload: the run id), sent when a run gets an event from outside
/// its executing engine (a hook payload, a wake-up, a cancellation).
pub const EVENTS_CHANNEL: &str = "workflow_native_events";
/// Our new-runs channel (payload: the run id), sent when a run is created: workers look
/// for runs to claim.
pub const RUNS_CHANNEL: &str = "workflow_native_runs";
/// The polling backstop of every waiter.
pub const POLL: Duration = Duration::from_millis(500);

/// A wake-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// a chunk of this stream was written
    Chunk(String),
    /// this run changed
    Run(String),
    /// this run got an event from outside its engine
    Events(String),
    /// this run was created
    NewRun(String),
    /// the listener (re)connected: notifications may have been missed, re-check
    Resync,
}

pub struct Listener {
    tx: broadcast::Sender<Note>,
}

impl Listener {
    /// Starts the listener task; it ends when the returned `Arc` is dropped.
    pub(crate) fn start(cfg: tokio_postgres::Config, verify: bool) -> Arc<Listener> {
        let (tx, _) = broadcast::channel(4096);
        let me = Arc::new(Listener { tx });
        let weak = Arc::downgrade(&me);
        tokio::spawn(run(weak, cfg, verify));
        me
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Note> {
        self.tx.subscribe()
    }
}

fn parse(channel: &str, payload: &str) -> Option<Note> {
    match channel {
        CHUNK_CHANNEL => {
            let v: serde_json::Value = serde_json::from_str(payload).ok()?;
            Some(Note::Chunk(v.get("streamId")?.as_str()?.to_string()))
        }
        RUN_CHANNEL => Some(Note::Run(payload.to_string())),
        EVENTS_CHANNEL => Some(Note::Events(payload.to_string())),
        RUNS_CHANNEL => Some(Note::NewRun(payload.to_string())),
        _ => None,
    }
}

async fn run(me: Weak<Listener>, cfg: tokio_postgres::Config, verify: bool) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if me.strong_count() == 0 {
            return;
        }
        let ok = match super::config::tls(verify) {
            Ok(tls) if cfg.get_ssl_mode() != tokio_postgres::config::SslMode::Disable => {
                match cfg.connect(tls).await {
                    Ok((client, conn)) => serve(&me, client, conn).await,
                    Err(_) => false,
                }
            }
            _ => match cfg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => serve(&me, client, conn).await,
                Err(_) => false,
            },
        };
        if ok {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Listens until the connection drops (or the World goes); `true` once it was listening.
async fn serve<S, T>(
    me: &Weak<Listener>,
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let sql = format!("LISTEN {CHUNK_CHANNEL}; LISTEN {RUN_CHANNEL}; LISTEN {EVENTS_CHANNEL}; LISTEN {RUNS_CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    // drive the connection while the LISTEN statements run
    let listening = loop {
        tokio::select! {
            r = &mut listen => break r.is_ok(),
            m = poll_fn(|cx| conn.poll_message(cx)) => match m {
                Some(Ok(_)) => {}
                _ => return false,
            },
        }
    };
    if !listening {
        return false;
    }
    let Some(l) = me.upgrade() else { return true };
    let _ = l.tx.send(Note::Resync);
    drop(l);
    loop {
        let msg = tokio::select! {
            m = poll_fn(|cx| conn.poll_message(cx)) => m,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if me.strong_count() == 0 { return true; }
                continue;
            }
        };
        match msg {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let Some(l) = me.upgrade() else { return true };
                if let Some(note) = parse(n.channel(), n.payload()) {
                    let _ = l.tx.send(note);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return true,
        }
    }
}
