//! Schema versions of ferry's own tables in a SQLite database, and their forward
//! migrations, run at start (sink prepare, capture install, freeze).
//!
//! `ferry_schema` holds one row per component; here one component, `endpoint`, covers
//! every `ferry_*` table (a SQLite endpoint holds all of them, source or target).
//! [`MIGRATIONS`] lists the steps in order. Version 1 is exactly the DDL of the releases
//! before schema versions, so a database they created (ferry tables, no `ferry_schema`
//! row) is recognised as version 1; version 1's statements run again (they only create
//! what is missing, e.g. after an interrupted first start), then the later steps. Every
//! step runs with the version record in one IMMEDIATE transaction (SQLite's DDL is
//! transactional): a crash leaves the old version whole, and a second process starting at
//! the same time waits for the write lock and then finds the work done. A database at a
//! version newer than this binary knows is refused, never written.

use crate::model::schema_version::Found;
use sqlx::sqlite::SqliteConnection;
use tracing::info;

use super::{SqliteEndpoint, begin_immediate, commit, exec_batch, rollback};
use crate::connector::ConnectorError;
use crate::model::now_micros;

/// This database's row in `ferry_schema`.
pub const COMPONENT: &str = "endpoint";

/// One forward step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database is at once the step ran.
    pub version: i64,
    /// What the step does, for logs and errors.
    pub what: &'static str,
    /// Its statements.
    pub sql: &'static str,
}

/// Every step, oldest first; a database at version N runs those above N.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, what: "create ferry's tables", sql: V1 },
    Migration {
        version: 2,
        what: "add the lease's fencing token (ferry_lease.fencing)",
        sql: "ALTER TABLE ferry_lease ADD COLUMN fencing INTEGER NOT NULL DEFAULT 0;",
    },
    Migration {
        version: 3,
        what: "hold changelog versions for two-way directions applying here (ferry_version_hold)",
        sql: "CREATE TABLE IF NOT EXISTS ferry_version_hold(
  direction TEXT PRIMARY KEY,
  site TEXT NOT NULL,
  applied_ts INTEGER NOT NULL,
  updated_us INTEGER NOT NULL);",
    },
];

/// The newest version this binary knows.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The version record itself (not a numbered step: it exists from the first upgrade on).
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS ferry_schema(
  component TEXT PRIMARY KEY,
  version INTEGER NOT NULL,
  updated_us INTEGER NOT NULL);";

/// Tables version 1 creates: any of them without a version row is a database of a
/// release before schema versions.
const V1_TABLES: [&str; 9] = [
    "ferry_changelog",
    "ferry_clock",
    "ferry_apply_origin",
    "ferry_heartbeat",
    "ferry_consumer",
    "ferry_checkpoint",
    "ferry_conflict",
    "ferry_lease",
    "ferry_freeze",
];

/// Version 1: exactly the DDL of the releases before schema versions (do not edit: a
/// change is a new step).
const V1: &str = r#"
CREATE TABLE IF NOT EXISTS ferry_changelog(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  epoch INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  op INTEGER NOT NULL,
  origin TEXT NOT NULL,
  ts INTEGER NOT NULL,
  pk TEXT NOT NULL,
  before TEXT,
  after TEXT);
CREATE INDEX IF NOT EXISTS ferry_changelog_key ON ferry_changelog(tbl, pk);
CREATE TABLE IF NOT EXISTS ferry_clock(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch INTEGER NOT NULL,
  site TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ferry_apply_origin(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  origin TEXT NOT NULL,
  ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ferry_heartbeat(
  site TEXT PRIMARY KEY,
  ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ferry_consumer(
  consumer TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  updated_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ferry_checkpoint(
  task TEXT NOT NULL,
  direction TEXT NOT NULL,
  slot TEXT NOT NULL,
  position TEXT,
  progress TEXT,
  updated_us INTEGER NOT NULL,
  PRIMARY KEY (task, direction, slot));
CREATE TABLE IF NOT EXISTS ferry_conflict(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task TEXT NOT NULL,
  direction TEXT NOT NULL,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  policy TEXT NOT NULL,
  winner TEXT NOT NULL,
  incoming_site TEXT NOT NULL,
  incoming_ts INTEGER NOT NULL,
  incoming_row TEXT,
  local_site TEXT NOT NULL,
  local_ts INTEGER NOT NULL,
  local_row TEXT,
  position TEXT NOT NULL,
  detected_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ferry_lease(
  task TEXT NOT NULL,
  direction TEXT NOT NULL,
  node TEXT NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  expires_us INTEGER NOT NULL,
  PRIMARY KEY (task, direction));
CREATE TABLE IF NOT EXISTS ferry_freeze(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  since_us INTEGER NOT NULL,
  reason TEXT NOT NULL);
"#;

/// Reads the schema version of ferry's tables (inferring 1 for a release before versions).
pub async fn found_version(conn: &mut SqliteConnection) -> Result<Found, sqlx::Error> {
    found_in(conn, COMPONENT, &V1_TABLES).await
}

/// Reads the version `component`'s tables are at in a SQLite file (ferry's tables in a
/// synced database, or the metadata store), by [`Found::judge`].
pub async fn found_in(conn: &mut SqliteConnection, component: &str, v1_tables: &[&str]) -> Result<Found, sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table'").fetch_all(&mut *conn).await?;
    let recorded = if names.iter().any(|n| n == "ferry_schema") {
        sqlx::query_scalar("SELECT version FROM ferry_schema WHERE component = ?1")
            .bind(component)
            .fetch_optional(&mut *conn)
            .await?
    } else {
        None
    };
    Ok(Found::judge(&names, recorded, v1_tables))
}

/// The refusal of a database whose ferry tables are newer than this binary.
pub fn newer_schema(ep: &SqliteEndpoint, found: i64) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "ferry's tables in {} are at schema version {found}, but this ferry knows versions up to {LATEST}: a newer ferry release has upgraded them",
            ep.path.display()
        ),
        fix: format!("upgrade ferry on every node to a release that knows schema version {found}"),
    }
}

/// Brings ferry's tables to [`LATEST`], creating them in a new database; refuses a newer
/// schema. Idempotent, and safe when several processes start at once.
pub async fn run(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<(), ConnectorError> {
    begin_immediate(conn).await.map_err(ep.query_error("locking the database to check ferry's schema version"))?;
    match upgrade(ep, conn).await {
        Ok(()) => commit(conn).await.map_err(ep.query_error("committing ferry's schema upgrade")),
        Err(e) => {
            rollback(conn).await;
            Err(e)
        }
    }
}

/// The work of [`run`], inside its transaction.
async fn upgrade(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<(), ConnectorError> {
    let found = found_version(conn).await.map_err(ep.query_error("reading ferry's schema version (ferry_schema)"))?;
    if found.version > LATEST {
        return Err(newer_schema(ep, found.version));
    }
    if found.recorded && found.version == LATEST {
        return Ok(());
    }
    if !found.recorded && found.version == 1 {
        info!(endpoint = %ep.name, "ferry's tables of a release before schema versions found: taking them as version 1");
    }
    // Unrecorded, version 1 runs too: it only creates what is missing.
    let from = if found.recorded { found.version } else { 0 };
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        if found.version > 0 && m.version > found.version {
            info!(endpoint = %ep.name, version = m.version, step = m.what, "upgrading ferry's tables");
        }
        exec_batch(conn, m.sql.to_string())
            .await
            .map_err(ep.query_error(format!("upgrading ferry's tables to schema version {}: {}", m.version, m.what)))?;
    }
    exec_batch(conn, SCHEMA_TABLE.to_string()).await.map_err(ep.query_error("creating ferry_schema"))?;
    sqlx::query(
        "INSERT INTO ferry_schema(component, version, updated_us) VALUES (?1, ?2, ?3) \
         ON CONFLICT(component) DO UPDATE SET version = excluded.version, updated_us = excluded.updated_us",
    )
    .bind(COMPONENT)
    .bind(LATEST)
    .bind(now_micros())
    .execute(&mut *conn)
    .await
    .map_err(ep.query_error("recording ferry's schema version"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::sqlite::Access;
    use crate::model::SiteId;

    async fn open(dir: &tempfile::TempDir) -> (SqliteEndpoint, SqliteConnection) {
        let ep = SqliteEndpoint { name: "b".into(), site: SiteId::new("dc-b"), path: dir.path().join("b.db") };
        let conn = ep.connect(Access::Create).await.expect("open");
        (ep, conn)
    }

    async fn columns(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .bind(table)
            .fetch_all(&mut *conn)
            .await
            .expect("columns")
    }

    #[tokio::test]
    async fn a_new_database_gets_the_latest_schema_and_a_second_run_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp");
        let (ep, mut conn) = open(&dir).await;
        run(&ep, &mut conn).await.expect("first run");
        assert_eq!(found_version(&mut conn).await.expect("found"), Found { version: LATEST, recorded: true });
        assert!(columns(&mut conn, "ferry_lease").await.contains(&"fencing".to_string()));
        run(&ep, &mut conn).await.expect("second run");
        assert_eq!(found_version(&mut conn).await.expect("found"), Found { version: LATEST, recorded: true });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_starting_at_once_each_find_the_schema_upgraded_once() {
        let dir = tempfile::tempdir().expect("temp");
        let (ep, conn) = open(&dir).await;
        crate::connector::sqlite::close(conn).await;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let ep = ep.clone();
                tokio::spawn(async move {
                    let mut conn = ep.connect(Access::ReadWrite).await.expect("open");
                    run(&ep, &mut conn).await
                })
            })
            .collect();
        for s in starts {
            s.await.expect("joined").expect("every start succeeds");
        }
        let (_, mut conn) = open(&dir).await;
        assert_eq!(found_version(&mut conn).await.expect("found"), Found { version: LATEST, recorded: true });
        assert_eq!(columns(&mut conn, "ferry_lease").await.iter().filter(|c| *c == "fencing").count(), 1);
    }

    #[tokio::test]
    async fn tables_of_a_release_before_versions_are_version_1_and_move_forward_with_their_rows() {
        let dir = tempfile::tempdir().expect("temp");
        let (ep, mut conn) = open(&dir).await;
        exec_batch(&mut conn, V1.to_string()).await.expect("v1 tables");
        exec_batch(&mut conn, "INSERT INTO ferry_lease VALUES ('t', 'a->b', 'n', 'h', 7, 1)".into())
            .await
            .expect("row");
        assert_eq!(found_version(&mut conn).await.expect("found"), Found { version: 1, recorded: false });
        run(&ep, &mut conn).await.expect("upgrade");
        let lease: (String, i64, i64) = sqlx::query_as("SELECT node, pid, fencing FROM ferry_lease")
            .fetch_one(&mut conn)
            .await
            .expect("lease row kept");
        assert_eq!(lease, ("n".to_string(), 7, 0));
        assert_eq!(found_version(&mut conn).await.expect("found"), Found { version: LATEST, recorded: true });
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_with_the_version_and_the_fix() {
        let dir = tempfile::tempdir().expect("temp");
        let (ep, mut conn) = open(&dir).await;
        run(&ep, &mut conn).await.expect("first run");
        sqlx::query("UPDATE ferry_schema SET version = ?1").bind(LATEST + 1).execute(&mut conn).await.expect("bump");
        let text = run(&ep, &mut conn).await.expect_err("refused").to_string();
        assert!(text.contains(&format!("schema version {}", LATEST + 1)), "{text}");
        assert!(text.contains(&format!("versions up to {LATEST}")), "{text}");
        assert!(
            text.contains(&format!(
                "upgrade ferry on every node to a release that knows schema version {}",
                LATEST + 1
            )),
            "{text}"
        );
        assert!(text.starts_with("endpoint b:"), "{text}");
    }
}
