//! SQLite: capture by triggers into `ferry_changelog`, chunked snapshot, idempotent
//! apply with the checkpoint in the same transaction, checksums and freeze.
//!
//! Every ferry table in a SQLite database is named `ferry_*`; user tables only gain the
//! capture triggers (and freeze triggers while frozen).

pub mod apply;
pub mod capture;
pub mod checksum;
pub mod compare;
pub mod connector;
pub mod freeze;
pub mod freezer;
pub mod literal;
pub mod migrate;
pub mod position;
pub mod preflight;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod types;
pub mod uninstall;
pub mod values;
pub mod verifier;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

pub use connector::Store;

use crate::connector::{ConnectorError, ErrorKind};
use crate::model::SiteId;

/// What a SQLite error calls for, by its primary result code: a constraint (unique,
/// primary key, foreign key, check, not null, datatype: 19), a type mismatch (20) or a
/// value too big (18) refuses the row's data; a plain SQL error (1: no such table or
/// column) is the setup's; everything else — busy or locked (5, 6), out of memory (7),
/// read-only (8), interrupted (9), I/O (10), disk full (13), cannot open (14) — and
/// errors outside the database are retried with backoff.
pub fn error_kind(e: &sqlx::Error) -> ErrorKind {
    let code = match e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i64>().ok()),
        _ => None,
    };
    match code.map(|c| c & 0xff) {
        Some(18..=20) => ErrorKind::Refused,
        Some(1) => ErrorKind::Setup,
        _ => ErrorKind::Runtime,
    }
}

/// How ferry opens a SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `ferry check` and `ferry status`: never writes, never creates.
    ReadOnly,
    /// Running a task: the file must exist.
    ReadWrite,
    /// The demo: creates the file if missing.
    Create,
}

/// One SQLite endpoint of the task file.
#[derive(Debug, Clone)]
pub struct SqliteEndpoint {
    /// Endpoint name.
    pub name: String,
    /// Its site.
    pub site: SiteId,
    /// Database file.
    pub path: PathBuf,
}

/// The page cache of each of ferry's connections, in KiB. SQLite's default (2 MiB) holds
/// too few pages for a batch of changes spread over a large table: the target's
/// transaction spilled dirty pages into the WAL and read them back.
const CACHE_KIB: u32 = 64 * 1024;

impl SqliteEndpoint {
    /// Opens a connection; a missing or unreadable file is a setup error with its fix.
    pub async fn connect(&self, access: Access) -> Result<SqliteConnection, ConnectorError> {
        if access != Access::Create {
            check_file(&self.name, &self.path)?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(access == Access::ReadOnly)
            .create_if_missing(access == Access::Create)
            .foreign_keys(false)
            .busy_timeout(Duration::from_secs(30))
            .synchronous(SqliteSynchronous::Normal)
            .statement_cache_capacity(256)
            .pragma("cache_size", format!("-{}", CACHE_KIB))
            .disable_statement_logging();
        opts.connect().await.map_err(|source| ConnectorError::Open {
            endpoint: self.name.clone(),
            target: self.path.display().to_string(),
            source,
            fix: "check that the file is a SQLite database and that this user may read and write it and its folder"
                .into(),
        })
    }

    /// Wraps a driver error with this endpoint and what ferry was doing.
    pub fn query_error(&self, what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ConnectorError + '_ {
        let what = what.into();
        move |source| ConnectorError::Query { endpoint: self.name.clone(), what, source }
    }
}

fn check_file(endpoint: &str, path: &Path) -> Result<(), ConnectorError> {
    if path.is_dir() {
        return Err(ConnectorError::Setup {
            endpoint: endpoint.to_string(),
            problem: format!("{} is a directory, not a database file", path.display()),
            fix: "point the endpoint url at the SQLite database file inside it".into(),
        });
    }
    // Only a stat, never an open: closing any descriptor of the file would drop every
    // POSIX lock this process's SQLite connections hold on it (fcntl semantics), and a
    // writer elsewhere could then checkpoint and delete the WAL under them — a committed
    // transaction was lost that way while a ferry process started (cutover tests).
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConnectorError::Setup {
            endpoint: endpoint.to_string(),
            problem: format!("database file {} does not exist", path.display()),
            fix: "correct the endpoint url (relative paths are relative to the task file's folder) or create the database first".into(),
        }),
        Err(e) => Err(ConnectorError::Setup {
            endpoint: endpoint.to_string(),
            problem: format!("database file {} cannot be read: {e}", path.display()),
            fix: "give the user running ferry read and write access to the file and its folder".into(),
        }),
    }
}

/// Runs a batch of statements (no binds) on a connection.
pub async fn exec_batch(conn: &mut SqliteConnection, sql: String) -> Result<(), sqlx::Error> {
    conn.execute(AssertSqlSafe(sql)).await.map(|_| ())
}

/// Switches a database to WAL so ferry's readers never block application writers.
pub async fn ensure_wal(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
    if !mode.eq_ignore_ascii_case("wal") {
        sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
    }
    Ok(())
}

/// Starts a write transaction that takes the write lock at once (no deadlock on upgrade).
pub async fn begin_immediate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map(|_| ())
}

/// Commits the open transaction.
pub async fn commit(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("COMMIT").execute(&mut *conn).await.map(|_| ())
}

/// Rolls back the open transaction, if any (error paths).
pub async fn rollback(conn: &mut SqliteConnection) {
    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
}

/// Closes a connection, ignoring errors (shutdown paths).
pub async fn close(conn: SqliteConnection) {
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled SQLite is built as `.cargo/config.toml` says (without the shared page
    /// cache and the byte counting, whose global locks made ferry's reading and writing
    /// threads wait on each other), and ferry's connections get their larger page cache.
    #[tokio::test]
    async fn connections_run_on_sqlite_without_global_locks_and_with_a_large_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ep = SqliteEndpoint { name: "c".into(), site: SiteId::new("a"), path: dir.path().join("c.db") };
        let mut c = ep.connect(Access::Create).await.expect("open");
        let options: Vec<String> =
            sqlx::query_scalar("PRAGMA compile_options").fetch_all(&mut c).await.expect("options");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&mut c).await.expect("cache_size");
        assert_eq!(cache, -i64::from(CACHE_KIB));
        close(c).await;
    }

    #[tokio::test]
    async fn sqlite_refusals_stop_and_busy_databases_are_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.db");
        let opts = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut c = opts.clone().connect().await.expect("open");
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER CHECK (n >= 0))").await.expect("t");
        c.execute("INSERT INTO t VALUES (1, 'a', 1)").await.expect("row");
        for sql in ["INSERT INTO t VALUES (2, 'a', 1)", "INSERT INTO t VALUES (3, 'c', -1)"] {
            let e = c.execute(sql).await.expect_err("refused");
            assert_eq!(error_kind(&e), ErrorKind::Refused, "{sql}: {e}");
        }
        let e = c.execute("INSERT INTO missing VALUES (1)").await.expect_err("no table");
        assert_eq!(error_kind(&e), ErrorKind::Setup, "{e}");
        // Another connection holds the write lock: busy, to be retried.
        c.execute("BEGIN IMMEDIATE").await.expect("lock");
        let mut other = opts.busy_timeout(Duration::from_millis(10)).connect().await.expect("open");
        let e = other.execute("INSERT INTO t VALUES (4, 'd', 1)").await.expect_err("busy");
        assert_eq!(error_kind(&e), ErrorKind::Runtime, "{e}");
    }
}
