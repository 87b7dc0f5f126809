//! Shared by the PostgreSQL tests: a database of their own per test (created, then dropped
//! even on a failed assertion), and small request builders.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use workflow_core::ids::prefixed_id;
use workflow_core::pg::{Config, PgWorld};

pub fn base_url() -> String {
    std::env::var("WORKFLOW_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn with_db(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = head
        .rfind('/')
        .filter(|i| *i > head.find("//").map_or(0, |j| j + 1))
        .unwrap_or(head.len());
    format!("{}/{db}{query}", &head[..cut])
}

/// A database of its own, dropped at the end.
pub struct TestDb {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> Option<TestDb> {
        let admin = base_url();
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&admin, NoTls),
        )
        .await;
        let (client, c) = match conn {
            Ok(Ok(x)) => x,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!(
                        "PostgreSQL is required under CI=true but {admin} is unreachable: {why}"
                    );
                }
                eprintln!("SKIPPED: no PostgreSQL at {admin} ({why})");
                return None;
            }
        };
        tokio::spawn(c);
        let name = format!("wfn_test_{tag}_{}", std::process::id());
        for stmt in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client.batch_execute(&stmt).await.unwrap();
        }
        let url = with_db(&admin, &name);
        Some(TestDb { admin, name, url })
    }

    pub async fn world(&self) -> Arc<PgWorld> {
        PgWorld::connect(Config::new(&self.url)).await.unwrap()
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, c) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(c);
        client
    }

    pub async fn drop_db(self) {
        drop(self)
    }
}

impl Drop for TestDb {
    /// Also on a failed assertion: a thread of its own, since `drop` cannot await.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (client, c) = tokio_postgres::connect(&admin, NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(c);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop the test database: {e}");
        }
    }
}

pub fn req(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

pub fn bin(b: &[u8]) -> Value {
    use base64::Engine;
    json!({"__type": "Uint8Array", "data": base64::engine::general_purpose::STANDARD.encode(b)})
}

pub async fn new_run(w: &PgWorld) -> String {
    let run_id = prefixed_id("wrun");
    w.create_event(
        Some(&run_id),
        req(
            json!({"eventType": "run_created", "specVersion": 2, "eventData": {
            "deploymentId": "dpl_1", "workflowName": "wf//./flow", "input": bin(b"in"),
            "executionContext": {"workflowCoreVersion": "4.8.9"}}}),
        ),
    )
    .await
    .unwrap();
    run_id
}

/// The first column of the one row `query` returns, as an `i64` (a `count(*)`).
pub async fn scalar_i64(
    sql: &tokio_postgres::Client,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    sql.query_one(query, params).await.unwrap().get(0)
}
