//! ferry's own tables in a PostgreSQL server's `ferry` schema, created and moved
//! forward at start. The version lives in `ferry.ferry_schema`; a server whose tables
//! are newer than this release is a setup error (an older ferry must not write them).

use sqlx::postgres::PgConnection;

use super::names::{
    CHECKPOINT_TABLE, CONFLICT_TABLE, DEFERRED_TABLE, FREEZE_TABLE, HEARTBEAT_TABLE, IDENTITY_TABLE, LEASE_TABLE,
    SCHEMA_TABLE, SIGNAL_TABLE, SLOT_TABLE,
};
use super::{FERRY_SCHEMA, PgEndpoint, ferry_table};
use crate::connector::ConnectorError;

/// This release's schema version of ferry's tables.
pub const VERSION: i64 = 5;

/// Creates ferry's tables or moves them forward; idempotent, safe to race (an advisory
/// lock serialises two processes starting at once). The lock is the transaction's: the
/// statements run as one implicit transaction, and a session lock released before its
/// commit let the next process miss the tables it had just created.
pub async fn run(ep: &PgEndpoint, conn: &mut PgConnection) -> Result<(), ConnectorError> {
    let what = format!("creating ferry's tables in schema {FERRY_SCHEMA} (the account needs CREATE on the database)");
    let current: Option<i64> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT max(version) FROM {}", ferry_table(SCHEMA_TABLE))))
            .fetch_one(&mut *conn)
            .await
            .ok()
            .flatten();
    if current == Some(VERSION) {
        return Ok(());
    }
    if let Some(v) = current
        && v > VERSION
    {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!(
                "ferry's tables on this server are at schema version {v}, newer than this release's {VERSION}"
            ),
            fix: "run the newer ferry release that wrote them".into(),
        });
    }
    let sql = format!(
        "SELECT pg_advisory_xact_lock(7411470);
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {version} (version bigint PRIMARY KEY, applied_us bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {checkpoint} (task text NOT NULL, direction text NOT NULL, slot text NOT NULL,
             position text, progress text, updated_us bigint NOT NULL, PRIMARY KEY (task, direction, slot));
         CREATE TABLE IF NOT EXISTS {lease} (task text NOT NULL, direction text NOT NULL, node text NOT NULL,
             host text NOT NULL, pid bigint NOT NULL, expires_us bigint NOT NULL, fencing bigint NOT NULL,
             PRIMARY KEY (task, direction));
         CREATE TABLE IF NOT EXISTS {conflict} (id bigserial PRIMARY KEY, task text NOT NULL, direction text NOT NULL,
             tbl text NOT NULL, pk text NOT NULL, policy text NOT NULL, winner text NOT NULL,
             incoming_site text NOT NULL, incoming_ts bigint NOT NULL, incoming_row text,
             local_site text NOT NULL, local_ts bigint NOT NULL, local_row text, position text NOT NULL,
             detected_us bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {heartbeat} (site text PRIMARY KEY, ts bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {signal} (id text PRIMARY KEY, mark text NOT NULL, ts bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {freeze} (role text PRIMARY KEY, setting text, since_us bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {identity} (tbl text PRIMARY KEY, previous text NOT NULL);
         CREATE TABLE IF NOT EXISTS {deferred} (tbl text PRIMARY KEY, statement text NOT NULL);
         CREATE TABLE IF NOT EXISTS {slots} (slot text PRIMARY KEY, created_lsn pg_lsn NOT NULL, created_us bigint NOT NULL);
         -- 5: the publication a slot carried over from an older release decodes with.
         ALTER TABLE {slots} ADD COLUMN IF NOT EXISTS publication text;
         INSERT INTO {version} (version, applied_us) VALUES ({VERSION}, (extract(epoch from now()) * 1000000)::bigint)
             ON CONFLICT DO NOTHING;",
        schema = super::ident(FERRY_SCHEMA),
        version = ferry_table(SCHEMA_TABLE),
        checkpoint = ferry_table(CHECKPOINT_TABLE),
        lease = ferry_table(LEASE_TABLE),
        conflict = ferry_table(CONFLICT_TABLE),
        heartbeat = ferry_table(HEARTBEAT_TABLE),
        signal = ferry_table(SIGNAL_TABLE),
        freeze = ferry_table(FREEZE_TABLE),
        identity = ferry_table(IDENTITY_TABLE),
        deferred = ferry_table(DEFERRED_TABLE),
        slots = ferry_table(SLOT_TABLE),
    );
    ep.exec(conn, &what, &sql).await
}
