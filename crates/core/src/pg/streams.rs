//! Streams in `workflow.workflow_stream_chunks`, as world-postgres keeps them: one row
//! per chunk (`chnk_<ULID>`, the bytes as written), a closed stream has one more row with
//! no data and `eof = true`, and every row is announced on `workflow_event_chunk` with
//! `{"streamId":…,"chunkId":…}`. Readers read in id order, wake on that notification and
//! also poll, so they finish even when the listener drops.

use super::dberr::db_err;
use super::listen::{Note, POLL};
use super::PgWorld;
use crate::error::{Error, Result};
use crate::ids::prefixed_id;
use crate::stream::{Batch, Item, StreamMode};
use std::sync::Arc;
use tokio::sync::Notify;

fn notify_payload(stream: &str, chunk: &str) -> String {
    serde_json::json!({ "streamId": stream, "chunkId": chunk }).to_string()
}

impl PgWorld {
    /// Appends chunks in order (one transaction; notifications go out at commit).
    pub async fn append_stream(&self, name: &str, run_id: &str, chunks: &[Vec<u8>]) -> Result<()> {
        self.insert_chunks(name, run_id, chunks, false).await
    }

    /// Writes the close marker.
    pub async fn close_stream(&self, name: &str, run_id: &str) -> Result<()> {
        self.insert_chunks(name, run_id, &[Vec::new()], true).await
    }

    async fn insert_chunks(
        &self,
        name: &str,
        run_id: &str,
        chunks: &[Vec<u8>],
        eof: bool,
    ) -> Result<()> {
        let c = self.client().await?;
        let ids: Vec<String> = chunks.iter().map(|_| prefixed_id("chnk")).collect();
        let payloads: Vec<String> = ids.iter().map(|id| notify_payload(name, id)).collect();
        let data: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let insert = c.prepare_cached(INSERT_CHUNKS).await.map_err(db_err)?;
        let notify = c.prepare_cached(NOTIFY_CHUNKS).await.map_err(db_err)?;
        // One transaction in one round trip: the four requests are queued in this order
        // when first polled (`join4` polls in order). A failed insert aborts the
        // transaction, whose COMMIT then rolls it back; the insert's error is returned.
        let (begun, inserted, notified, ended) = futures_util::future::join4(
            c.batch_execute("BEGIN"),
            c.execute(&insert, &[&ids, &name, &run_id, &data, &eof]),
            c.execute(&notify, &[&super::listen::CHUNK_CHANNEL, &payloads]),
            c.batch_execute("COMMIT"),
        )
        .await;
        begun.map_err(db_err)?;
        inserted.map_err(db_err)?;
        notified.map_err(db_err)?;
        ended.map_err(db_err)
    }

    /// `{ tailIndex, done }`: data rows before the first close marker, minus one.
    pub async fn stream_tail(&self, name: &str) -> Result<(i64, bool)> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "WITH eof AS (SELECT min(id) AS id FROM workflow.workflow_stream_chunks
                              WHERE stream_id = $1 AND eof)
                 SELECT (SELECT count(*) FROM workflow.workflow_stream_chunks, eof
                         WHERE stream_id = $1 AND NOT workflow_stream_chunks.eof
                           AND (eof.id IS NULL OR workflow_stream_chunks.id < eof.id)),
                        (SELECT id IS NOT NULL FROM eof)",
                &[&name],
            )
            .await
            .map_err(db_err)?;
        let count: i64 = row.get(0);
        let done: bool = row.get(1);
        Ok((count - 1, done))
    }

    /// A live reader from `start_index` (negative: from the end, as world-postgres counts it).
    pub fn open_stream(
        self: &Arc<Self>,
        name: &str,
        start_index: i64,
        mode: StreamMode,
    ) -> PgStreamReader {
        PgStreamReader {
            world: Arc::clone(self),
            name: name.to_string(),
            mode,
            start: start_index,
            state: tokio::sync::Mutex::new(ReadState::default()),
            closed: Notify::new(),
            is_closed: std::sync::atomic::AtomicBool::new(false),
            waits: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A batch of chunks, in the order given (ids ascending), one statement.
const INSERT_CHUNKS: &str =
    "INSERT INTO workflow.workflow_stream_chunks (id, stream_id, run_id, data, eof, created_at)
     SELECT t.id, $2, $3, t.data, $5, (now() AT TIME ZONE 'UTC')
     FROM unnest($1::text[], $4::bytea[]) WITH ORDINALITY AS t(id, data, n) ORDER BY t.n";

/// world-postgres's chunk notification, one per chunk, in order.
const NOTIFY_CHUNKS: &str = "SELECT pg_notify($1, p.payload)
     FROM unnest($2::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY p.n";

/// A page of a stream: the next rows after the last one read, in id order.
const PAGE: &str = "SELECT id, data, eof FROM workflow.workflow_stream_chunks
                    WHERE stream_id = $1 AND id > $2 ORDER BY id LIMIT $3";

/// The plan of [`PAGE`], pinned for its transaction: a range scan of the primary key
/// `(stream_id, id)`, which yields the page in order and touches only its rows. Without
/// statistics for the stream's rows (a table not analyzed since they were written: any
/// stream read soon after it was written), the planner expects a handful of rows and
/// picks a bitmap scan of every row of the stream plus a sort, for every page: a
/// 10,000-chunk stream read in pages of 1,000 then costs 10 ms per page instead of 0.6.
const PAGE_PLAN: &str =
    "BEGIN READ ONLY; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off";

/// Rows a page query asks for at most.
const PAGE_ROWS: i64 = 1000;

/// The page after `after` (`limit` rows at most), in its read-only transaction with the
/// plan pinned: one round trip.
async fn fetch_page(
    world: &PgWorld,
    name: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<tokio_postgres::Row>> {
    let c = world.client().await?;
    let page = c.prepare_cached(PAGE).await.map_err(db_err)?;
    // One round trip: the three requests are queued in this order when first polled
    // (`join3` polls in order) and the connection sends them back to back.
    let (begun, rows, ended) = futures_util::future::join3(
        c.batch_execute(PAGE_PLAN),
        c.query(&page, &[&name, &after, &limit]),
        c.batch_execute("COMMIT"),
    )
    .await;
    begun.map_err(db_err)?;
    let rows = rows.map_err(db_err)?;
    ended.map_err(db_err)?;
    Ok(rows)
}

/// A page asked for before it is needed: the one after `after`.
struct PageAhead {
    after: String,
    limit: i64,
    rows: tokio::task::JoinHandle<Result<Vec<tokio_postgres::Row>>>,
}

#[derive(Default)]
struct ReadState {
    resolved: bool,
    /// data rows still to skip (the start index)
    skip: i64,
    last_id: String,
    done: bool,
    /// The next page, already asked for: a full page means more rows may follow, so
    /// the next query runs on the server while this page is decoded (a stream read
    /// to its end costs one page's latency, not one per page).
    ahead: Option<PageAhead>,
}

/// A live reader of one stream (read ahead on a background task, see
/// [`PgStreamReader::prefetching`]).
pub struct PgStreamReader {
    world: Arc<PgWorld>,
    name: String,
    mode: StreamMode,
    start: i64,
    state: tokio::sync::Mutex<ReadState>,
    closed: Notify,
    is_closed: std::sync::atomic::AtomicBool,
    /// How many times it waited for a writer (a notification or the poll)
    waits: std::sync::atomic::AtomicU64,
}

impl PgStreamReader {
    /// How many times this reader waited for a writer: never while rows it has not
    /// read are there (a closed stream is read without one wait, whatever its start).
    pub fn waits(&self) -> u64 {
        self.waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the reader; a waiting `next_many` returns an empty, finished batch.
    pub fn close(&self) {
        self.is_closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.closed.notify_waiters();
    }

    fn closed(&self) -> bool {
        self.is_closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Up to `max` items; waits while the stream is open and drained.
    pub async fn next_many(&self, max: usize) -> Result<Batch> {
        let mut st = self.state.lock().await;
        // subscribe before reading so a chunk written in between still wakes us
        let mut rx = self.world.subscribe();
        if !st.resolved {
            st.skip = if self.start >= 0 {
                self.start
            } else {
                let (tail, _) = self.world.stream_tail(&self.name).await?;
                (tail + 1 + self.start).max(0)
            };
            st.resolved = true;
        }
        loop {
            if st.done || self.closed() {
                return Ok(Batch {
                    items: Vec::new(),
                    done: true,
                });
            }
            let (batch, rows) = self.read_rows(&mut st, max.max(1)).await?;
            if !batch.items.is_empty() || batch.done {
                return Ok(batch);
            }
            if rows > 0 {
                // every row of the page was before the start index: the next page at once
                continue;
            }
            self.waits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let deadline = tokio::time::sleep(POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = self.closed.notified() => break,
                    n = rx.recv() => match n {
                        Ok(Note::Chunk(s)) if s == self.name => break,
                        Ok(Note::Resync) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
    }

    /// Starts the query for the page after row `after` (on its own task and connection).
    fn ask_ahead(&self, after: &str, limit: i64) -> PageAhead {
        let world = Arc::clone(&self.world);
        let name = self.name.clone();
        let from = after.to_string();
        PageAhead {
            after: from.clone(),
            limit,
            rows: tokio::spawn(async move { fetch_page(&world, &name, &from, limit).await }),
        }
    }

    /// The next page: its items and how many rows it had (skipped ones included).
    async fn read_rows(&self, st: &mut ReadState, max: usize) -> Result<(Batch, usize)> {
        let limit = (max as i64).min(PAGE_ROWS);
        let ahead = match st.ahead.take() {
            Some(a) if a.after == st.last_id && a.limit == limit => match a.rows.await {
                Ok(rows) => rows?,
                Err(e) => {
                    return Err(Error::Runtime(format!(
                        "reading stream \"{}\": the query for its next page failed: {e}",
                        self.name
                    )))
                }
            },
            _ => Vec::new(),
        };
        // An empty page asked for ahead is asked again: it ran before this call
        // subscribed to notifications, so a chunk committed since then would otherwise
        // wait for the poll instead of waking the reader.
        let rows = if ahead.is_empty() {
            fetch_page(&self.world, &self.name, &st.last_id, limit).await?
        } else {
            ahead
        };
        match rows.last() {
            Some(last) if rows.len() as i64 == limit && !last.get::<_, bool>(2) => {
                st.ahead = Some(self.ask_ahead(last.get(0), limit));
            }
            _ => {}
        }
        let seen = rows.len();
        let mut items = Vec::new();
        for row in rows {
            let id: &str = row.get(0);
            let eof: bool = row.get(2);
            st.last_id.clear();
            st.last_id.push_str(id);
            if eof {
                st.done = true;
                break;
            }
            if st.skip > 0 {
                st.skip -= 1;
                continue;
            }
            // borrowed from the row's buffer: decoded without a copy of the bytes
            let data: &[u8] = row.get(1);
            crate::stream::frames::decode_chunk(self.mode, data, &mut items).map_err(|e| {
                Error::corrupt(
                    &super::rows::location(
                        "workflow_stream_chunks",
                        &format!("{}/{}", self.name, st.last_id),
                    ),
                    e.message(),
                )
            })?;
        }
        let _: &Vec<Item> = &items;
        Ok((
            Batch {
                items,
                done: st.done,
            },
            seen,
        ))
    }
}

/// A [`PgStreamReader`] as the read-ahead task drains it: up to 1,000 rows per query
/// whatever the task asks for (a round trip per 256 chunks would cost more than the rows).
pub struct PgSource(pub Arc<PgStreamReader>);

impl crate::stream::readahead::Source for PgSource {
    fn next_batch(
        &mut self,
        max: usize,
    ) -> impl std::future::Future<Output = Result<Batch>> + Send {
        let reader = Arc::clone(&self.0);
        async move { reader.next_many(max.max(1000)).await }
    }
}

impl PgStreamReader {
    /// This reader, read ahead into a bounded buffer on a background task (started by the
    /// first `next_many`), so the consumer takes ready items without a thread hop while
    /// the next rows are fetched.
    pub fn prefetching(self: Arc<Self>) -> crate::stream::readahead::PrefetchReader<PgSource> {
        crate::stream::readahead::PrefetchReader::new(PgSource(self))
    }
}
