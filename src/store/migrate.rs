//! Schema versions of the metadata store, and its forward migrations, run when the store
//! is opened for writing.
//!
//! `ferry_schema` holds one row per component; the store's is `metadata` (the component
//! keeps it apart from a SQLite endpoint's row, should both share a file). Version 1 is
//! exactly the DDL of the releases before schema versions, so a store they wrote (its
//! tables there, no `ferry_schema` row) is recognised as version 1; version 1's
//! statements run again (they only create what is missing: older releases lacked the
//! `cutover` and `task_direction` tables). Every step runs with
//! the version record in one IMMEDIATE transaction: a crash leaves the old version whole,
//! and a second process opening the store at the same time waits for the write lock and
//! then finds the work done. A store newer than this binary knows is refused, also when
//! opened read-only.

use std::path::Path;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use tracing::info;

use super::StoreError;
use crate::model::now_micros;
pub use crate::model::schema_version::Found;

/// The store's row in `ferry_schema`.
pub const COMPONENT: &str = "metadata";

/// One forward step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the store is at once the step ran.
    pub version: i64,
    /// Its statements.
    pub sql: &'static str,
}

/// Every step, oldest first; a store at version N runs those above N.
pub const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: V1 }];

/// The newest version this binary knows.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The version record itself (not a numbered step: it exists from the first upgrade on).
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS ferry_schema(
  component TEXT PRIMARY KEY,
  version INTEGER NOT NULL,
  updated_us INTEGER NOT NULL);";

/// Tables version 1 creates: any of them without a version row is a store of a release
/// before schema versions.
const V1_TABLES: [&str; 5] = ["audit", "direction_status", "skip", "cutover", "task_direction"];

/// Version 1: exactly the DDL of the releases before schema versions (do not edit: a
/// change is a new step).
const V1: &str = r#"
CREATE TABLE IF NOT EXISTS audit(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_us INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  task TEXT,
  detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS direction_status(
  task TEXT NOT NULL,
  direction TEXT NOT NULL,
  status TEXT NOT NULL,
  updated_us INTEGER NOT NULL,
  PRIMARY KEY (task, direction));
CREATE TABLE IF NOT EXISTS skip(
  task TEXT NOT NULL,
  direction TEXT NOT NULL,
  position TEXT NOT NULL,
  actor TEXT NOT NULL,
  at_us INTEGER NOT NULL,
  PRIMARY KEY (task, direction, position));
CREATE TABLE IF NOT EXISTS cutover(
  task TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  updated_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS task_direction(
  task TEXT PRIMARY KEY,
  from_endpoint TEXT NOT NULL,
  to_endpoint TEXT NOT NULL,
  since_us INTEGER NOT NULL);
"#;

/// Reads the store's schema version (inferring 1 for a release before versions).
pub async fn found_version(conn: &mut SqliteConnection) -> Result<Found, sqlx::Error> {
    crate::connector::sqlite::migrate::found_in(conn, COMPONENT, &V1_TABLES).await
}

fn query<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |source| StoreError::Query { path: path.to_path_buf(), what, source }
}

fn newer(path: &Path, found: i64) -> StoreError {
    StoreError::NewerSchema { path: path.to_path_buf(), found, supported: LATEST }
}

/// Brings the store to [`LATEST`], creating its tables in a new file; refuses a newer
/// schema. Idempotent, and safe when several processes open the store at once.
pub async fn run(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(query(path, "locking the store to upgrade it"))?;
    let found = found_version(&mut tx).await.map_err(query(path, "reading the store's schema version"))?;
    if found.version > LATEST {
        return Err(newer(path, found.version));
    }
    if found.recorded && found.version == LATEST {
        return Ok(());
    }
    if !found.recorded && found.version == 1 {
        info!(store = %path.display(), "a metadata store of a release before schema versions: taking it as version 1");
    }
    // Unrecorded, version 1 runs too: it only creates what is missing.
    let from = if found.recorded { found.version } else { 0 };
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(query(path, "upgrading the store's tables"))?;
    }
    sqlx::raw_sql(SCHEMA_TABLE).execute(&mut *tx).await.map_err(query(path, "creating ferry_schema"))?;
    sqlx::query(
        "INSERT INTO ferry_schema(component, version, updated_us) VALUES (?1, ?2, ?3) \
         ON CONFLICT(component) DO UPDATE SET version = excluded.version, updated_us = excluded.updated_us",
    )
    .bind(COMPONENT)
    .bind(LATEST)
    .bind(now_micros())
    .execute(&mut *tx)
    .await
    .map_err(query(path, "recording the store's schema version"))?;
    tx.commit().await.map_err(query(path, "committing the store's upgrade"))
}

/// Refuses a store newer than this binary (read-only opens, which never upgrade).
pub async fn refuse_newer(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(query(path, "reading the store's schema version"))?;
    let found = found_version(&mut conn).await.map_err(query(path, "reading the store's schema version"))?;
    if found.version > LATEST {
        return Err(newer(path, found.version));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    async fn version_of(store: &Store) -> Found {
        let mut conn = store.pool.acquire().await.expect("connection");
        found_version(&mut conn).await.expect("version")
    }

    #[tokio::test]
    async fn a_store_of_a_release_before_versions_is_version_1_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join("meta.db");
        let old = Store::open(&path, true).await.expect("create");
        // Back to what the previous release left: its tables and rows, no version record.
        sqlx::raw_sql("DROP TABLE ferry_schema").execute(&old.pool).await.expect("drop record");
        old.audit("ops@n", "run.start", Some("t"), "directions: t a->b").await.expect("audit");
        assert_eq!(version_of(&old).await, Found { version: 1, recorded: false });
        old.close().await;

        let store = Store::open(&path, true).await.expect("open");
        assert_eq!(version_of(&store).await, Found { version: LATEST, recorded: true });
        let log = store.audit_log(10).await.expect("audit log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].action, "run.start");
    }

    #[tokio::test]
    async fn a_newer_store_is_refused_for_writing_and_for_reading() {
        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join("meta.db");
        let store = Store::open(&path, true).await.expect("create");
        sqlx::query("UPDATE ferry_schema SET version = ?1").bind(LATEST + 1).execute(&store.pool).await.expect("bump");
        store.close().await;
        for create in [true, false] {
            let Err(e) = Store::open(&path, create).await else { panic!("a newer store opened (create = {create})") };
            let text = e.to_string();
            assert!(text.contains(&format!("schema version {}", LATEST + 1)), "{text}");
            assert!(text.contains(&format!("versions up to {LATEST}")), "{text}");
            assert!(
                text.contains(&format!(
                    "upgrade ferry on every node to a release that knows schema version {}",
                    LATEST + 1
                )),
                "{text}"
            );
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }
}
