//! The `workflow` schema of world-postgres 4.3.7, created on first use when it is missing.
//!
//! The objects are the ones the upstream bootstrap CLI (Drizzle migrations 0000–0010 and
//! 0015) leaves behind, written here as their end state, plus its migration ledger
//! (`workflow_drizzle.workflow_migrations`, one row per upstream file: the file's SHA-256
//! and its journal time), so a later upstream bootstrap finds nothing to do and the
//! official tools read the database as their own. A database the upstream CLI set up is
//! used as it is. Concurrent first starts serialise on an advisory lock.
//!
//! The embedded engine's own objects (schema `workflow_native`: run leases) are created
//! beside them, under the same lock; the upstream tools ignore them.
//!
//! graphile-worker's schema (which the upstream CLI also installs) is not created: our
//! engine does not use it, and an official app installs it when it starts.

use crate::error::{Error, Result};
use tokio_postgres::{Client, GenericClient};

/// The upstream ledger: (SHA-256 of the migration file, its journal `when`).
pub const LEDGER: [(&str, i64); 12] = [
    (
        "e92421745b2346049a277afbce781da3f260e68067eb1bdbd7d10bbf2ad2e743",
        1762873019948,
    ),
    (
        "5bb606a2a55a2095101907d62d28917091316d9cddcdff5e8fc9a43e2e6f7a30",
        1763903867386,
    ),
    (
        "ac88e448e940f38bf18f076dde2abe63b53659a4c9936325e4e44cf95434e311",
        1764815363008,
    ),
    (
        "ad911e947a121b1def77b7ad37bd95ae7de2b453a05645e9b40f979a166e79b9",
        1765900000000,
    ),
    (
        "673b7222d0df6c2fd2d335072a9d85b695b5dae4a2c52b287d2aaa5d31d462f9",
        1765900000001,
    ),
    (
        "7c3f3b73a707af2386f5c20b953e4c54631be616bf0b9bfa8ced1b97018ad384",
        1767723210726,
    ),
    (
        "928760bfbdd23576f119f3f14c3e6db78fb765cfd24f8595c70536cb975c7178",
        1768500000000,
    ),
    (
        "f904ecb9232a269f599b393fa4ce5e3762a8267d111ad103d56fdcd11837fdcd",
        1769500000000,
    ),
    (
        "e424a48df5a1ddd752e4d09f05696e76da94e366b3d617ca10c3d3fbcdb74c77",
        1770000000000,
    ),
    (
        "eafc36b3c9b1aaff44cd33cff9126bd7fdd796d2672b104125c32d91e0ce5597",
        1770500000000,
    ),
    (
        "5584c9be57e2c0d82fa1e972d5ee5da711b31368fbf8efee16cd2857e071af41",
        1771000000000,
    ),
    (
        "adc88e08a9a0bba0bd13962db0c317b4e4aab4c6ae6ec281f2453dee9e4199c7",
        1782691200000,
    ),
];

/// Advisory lock key serialising schema creation ("wfn-schema").
const LOCK_KEY: i64 = 0x7766_6e2d_7363_6865;

/// The end state of the upstream migrations (same names, types, column order, defaults,
/// keys and indexes).
const DDL: &str = r#"
CREATE SCHEMA workflow;
CREATE SCHEMA IF NOT EXISTS workflow_drizzle;
CREATE TYPE workflow.status AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');
CREATE TYPE workflow.step_status AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');
CREATE TYPE workflow.wait_status AS ENUM ('waiting', 'completed');
CREATE TABLE workflow.workflow_events (
  id varchar NOT NULL, type varchar NOT NULL, correlation_id varchar,
  created_at timestamp DEFAULT now() NOT NULL, run_id varchar NOT NULL,
  payload jsonb, payload_cbor bytea, spec_version integer,
  CONSTRAINT workflow_events_pkey PRIMARY KEY (id));
CREATE TABLE workflow.workflow_hooks (
  run_id varchar NOT NULL, hook_id varchar NOT NULL, token varchar NOT NULL,
  owner_id varchar NOT NULL, project_id varchar NOT NULL, environment varchar NOT NULL,
  created_at timestamp DEFAULT now() NOT NULL, metadata jsonb, metadata_cbor bytea,
  spec_version integer, is_webhook boolean DEFAULT true,
  CONSTRAINT workflow_hooks_pkey PRIMARY KEY (hook_id));
CREATE TABLE workflow.workflow_runs (
  id varchar NOT NULL, output jsonb, deployment_id varchar NOT NULL,
  status workflow.status NOT NULL, name varchar NOT NULL, execution_context jsonb,
  input jsonb, error text, created_at timestamp DEFAULT now() NOT NULL,
  updated_at timestamp DEFAULT now() NOT NULL, completed_at timestamp, started_at timestamp,
  output_cbor bytea, execution_context_cbor bytea, input_cbor bytea, expired_at timestamp,
  spec_version varchar, error_cbor bytea,
  CONSTRAINT workflow_runs_pkey PRIMARY KEY (id));
CREATE TABLE workflow.workflow_steps (
  run_id varchar NOT NULL, step_id varchar NOT NULL, step_name varchar NOT NULL,
  status workflow.step_status NOT NULL, input jsonb, output jsonb, error text,
  attempt integer NOT NULL, started_at timestamp, completed_at timestamp,
  created_at timestamp DEFAULT now() NOT NULL, updated_at timestamp DEFAULT now() NOT NULL,
  retry_after timestamp, input_cbor bytea, output_cbor bytea, error_cbor bytea,
  spec_version integer,
  CONSTRAINT workflow_steps_pkey PRIMARY KEY (step_id));
CREATE TABLE workflow.workflow_stream_chunks (
  id varchar NOT NULL, stream_id varchar NOT NULL, data bytea NOT NULL,
  created_at timestamp DEFAULT now() NOT NULL, eof boolean NOT NULL, run_id varchar,
  CONSTRAINT workflow_stream_chunks_stream_id_id_pk PRIMARY KEY (stream_id, id));
CREATE TABLE workflow.workflow_waits (
  wait_id varchar NOT NULL, run_id varchar NOT NULL, status workflow.wait_status NOT NULL,
  resume_at timestamp, completed_at timestamp, created_at timestamp DEFAULT now() NOT NULL,
  updated_at timestamp DEFAULT now() NOT NULL, spec_version integer,
  CONSTRAINT workflow_waits_pkey PRIMARY KEY (wait_id));
CREATE INDEX workflow_events_correlation_id_index ON workflow.workflow_events USING btree (correlation_id);
CREATE UNIQUE INDEX workflow_events_entity_creation_unique ON workflow.workflow_events USING btree (run_id, correlation_id, type)
  WHERE type IN ('step_created', 'hook_created', 'wait_created');
CREATE INDEX workflow_events_run_id_index ON workflow.workflow_events USING btree (run_id);
CREATE INDEX workflow_hooks_run_id_index ON workflow.workflow_hooks USING btree (run_id);
CREATE INDEX workflow_hooks_token_index ON workflow.workflow_hooks USING btree (token);
CREATE INDEX workflow_runs_name_index ON workflow.workflow_runs USING btree (name);
CREATE INDEX workflow_runs_status_index ON workflow.workflow_runs USING btree (status);
CREATE INDEX workflow_steps_run_id_index ON workflow.workflow_steps USING btree (run_id);
CREATE INDEX workflow_steps_status_index ON workflow.workflow_steps USING btree (status);
CREATE INDEX workflow_stream_chunks_run_id_index ON workflow.workflow_stream_chunks USING btree (run_id);
CREATE INDEX workflow_waits_run_id_index ON workflow.workflow_waits USING btree (run_id);
CREATE TABLE IF NOT EXISTS workflow_drizzle.workflow_migrations (
  id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint);
"#;

/// The embedded engine's own objects (run leases; see `pg::engine`), created when missing.
const ENGINE_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS workflow_native;
CREATE TABLE IF NOT EXISTS workflow_native.leases (
  run_id varchar PRIMARY KEY,
  owner varchar NOT NULL,
  token bigint NOT NULL,
  ttl_ms integer NOT NULL,
  expires_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
"#;

/// Whether the engine's objects exist.
async fn engine_objects_present(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('workflow_native.leases') IS NOT NULL",
            &[],
        )
        .await
        .map_err(super::dberr::db_err)?;
    Ok(row.get(0))
}

/// What the database holds now.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// no `workflow` schema, no ledger rows
    Empty,
    /// every upstream migration applied
    Current,
    /// something else: an older or newer upstream version, or a half-made schema
    Other(String),
}

async fn state(client: &impl GenericClient) -> Result<State> {
    let row = client
        .query_one(
            "SELECT to_regnamespace('workflow') IS NOT NULL,
                    to_regclass('workflow_drizzle.workflow_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(super::dberr::db_err)?;
    let (schema, ledger): (bool, bool) = (row.get(0), row.get(1));
    let newest: Option<i64> = if ledger {
        client
            .query_one(
                "SELECT max(created_at) FROM workflow_drizzle.workflow_migrations",
                &[],
            )
            .await
            .map_err(super::dberr::db_err)?
            .get(0)
    } else {
        None
    };
    let current = LEDGER[LEDGER.len() - 1].1;
    Ok(match (schema, newest) {
        (false, None) => State::Empty,
        (true, Some(n)) if n == current => State::Current,
        (true, Some(n)) if n > current => State::Other(format!(
            "its migration ledger is newer than world-postgres 4.3.7 (created_at {n})"
        )),
        (true, Some(n)) => State::Other(format!(
            "its migration ledger stops at an older world-postgres (created_at {n}); run the upstream bootstrap (`npx @workflow/world-postgres bootstrap`) to upgrade it"
        )),
        (true, None) => State::Other(
            "schema \"workflow\" exists but has no migration ledger (workflow_drizzle.workflow_migrations)".into(),
        ),
        (false, Some(_)) => State::Other(
            "the migration ledger has rows but schema \"workflow\" is missing".into(),
        ),
    })
}

/// Makes sure the schema is there: creates it (with the ledger) when the database has
/// none; leaves an upstream-made one as it is; refuses anything else with the reason.
pub(crate) async fn ensure(client: &mut Client) -> Result<()> {
    if state(client).await? == State::Current && engine_objects_present(client).await? {
        return Ok(());
    }
    // A session lock taken before the transaction begins: a transaction begun before
    // another creator committed would still see the schema missing in its catalog cache.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(super::dberr::db_err)?;
    let done = match create_locked(client).await {
        // the engine's own objects (run leases), beside the upstream ones
        Ok(()) => client
            .batch_execute(ENGINE_DDL)
            .await
            .map_err(super::dberr::db_err),
        Err(e) => Err(e),
    };
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(super::dberr::db_err);
    done.and(unlocked.map(|_| ()))
}

async fn create_locked(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.map_err(super::dberr::db_err)?;
    match state(&tx).await? {
        State::Current => {}
        State::Empty => {
            tx.batch_execute(DDL).await.map_err(super::dberr::db_err)?;
            for (hash, when) in LEDGER {
                tx.execute(
                    "INSERT INTO workflow_drizzle.workflow_migrations (hash, created_at) VALUES ($1, $2)",
                    &[&hash, &when],
                )
                .await
                .map_err(super::dberr::db_err)?;
            }
        }
        State::Other(why) => {
            return Err(Error::Plain(format!(
                "The PostgreSQL database cannot be used as a world-postgres 4.3.7 database: {why}"
            )))
        }
    }
    tx.commit().await.map_err(super::dberr::db_err)
}
