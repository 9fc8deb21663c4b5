//! SQLite: capture by triggers into `ferry_changelog`, chunked snapshot, idempotent
//! apply with the checkpoint in the same transaction, checksums and freeze.
//!
//! Every ferry table in a SQLite database is named `ferry_*`; user tables only gain the
//! capture triggers (and freeze triggers while frozen).

pub mod apply;
pub mod capture;
pub mod checksum;
pub mod freeze;
pub mod literal;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use crate::connector::ConnectorError;
use crate::model::SiteId;

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
