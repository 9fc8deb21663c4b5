//! The metadata store: audit log, last known status of every direction, skipped
//! transactions. SQLite through sqlx. (Checkpoints and conflicts live in each target.)
//! Its tables carry a schema version and move forward when it is opened (`migrate`).

pub mod migrate;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row as _};

use crate::engine::metrics::DirectionStatus;
use crate::model::{Position, now_micros};

/// Errors of the metadata store, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening failed.
    #[error(
        "metadata store {path}: cannot open: {source}\n  fix: check [node] store in the task file and that this user may write its folder"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("metadata store {path}: {what}: {source}")]
    Query {
        /// The file.
        path: PathBuf,
        /// What ferry was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A newer ferry release upgraded the store past what this binary knows.
    #[error(
        "metadata store {path}: its tables are at schema version {found}, but this ferry knows versions up to {supported}: a newer ferry release has upgraded them\n  fix: upgrade ferry on every node to a release that knows schema version {found}"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version the store records.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (µs since the epoch).
    pub at_us: i64,
    /// Who (`user@node`).
    pub actor: String,
    /// What (`run.start`, `skip`, ...).
    pub action: String,
    /// Which task, if any.
    pub task: Option<String>,
    /// Details.
    pub detail: String,
}

/// Creates an empty file readable and writable by its owner only (0600), unless it exists.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map(|_| ())
}

/// Writes a file readable and writable by its owner only (0600; an existing file is
/// narrowed to 0600 first), for files holding row contents or secrets.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_private(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(path, bytes)
}

/// The metadata store.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if `create`) the store file.
    pub async fn open(path: &Path, create: bool) -> Result<Store, StoreError> {
        if create && !path.exists() {
            // The store holds the audit log and cutover state: readable by its owner
            // only. SQLite gives its -wal and -shm files the same mode.
            create_private(path)
                .map_err(|e| StoreError::Open { path: path.to_path_buf(), source: sqlx::Error::Io(e) })?;
        }
        // Read-only only when this user cannot write the file: a read-write open rolls
        // back the journal a killed writer left (hot), which a read-only one refuses.
        let read_only = !create && std::fs::OpenOptions::new().write(true).open(path).is_err();
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .read_only(read_only)
            .busy_timeout(Duration::from_secs(30))
            .synchronous(SqliteSynchronous::Normal)
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        let store = Store { path: path.to_path_buf(), pool };
        if create {
            migrate::run(&store.pool, &store.path).await?;
        } else {
            migrate::refuse_newer(&store.pool, &store.path).await?;
        }
        Ok(store)
    }

    /// Opens an existing store without creating or migrating it (read-only when this
    /// user may not write it); `None` when the file does not exist.
    pub async fn open_existing(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        Store::open(path, false).await.map(Some)
    }

    fn err(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
        move |source| StoreError::Query { path: self.path.clone(), what, source }
    }

    /// Appends to the audit log.
    pub async fn audit(&self, actor: &str, action: &str, task: Option<&str>, detail: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit(at_us, actor, action, task, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(now_micros())
            .bind(actor)
            .bind(action)
            .bind(task)
            .bind(detail)
            .execute(&self.pool)
            .await
            .map_err(self.err("writing the audit log"))?;
        Ok(())
    }

    /// The newest audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT at_us, actor, action, task, detail FROM audit ORDER BY id DESC LIMIT ?1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("reading the audit log"))?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                at_us: r.get(0),
                actor: r.get(1),
                action: r.get(2),
                task: r.get(3),
                detail: r.get(4),
            })
            .collect())
    }

    /// Saves the latest status of a direction.
    pub async fn save_status(&self, s: &DirectionStatus) -> Result<(), StoreError> {
        let text = serde_json::to_string(s).unwrap_or_default();
        sqlx::query(
            "INSERT INTO direction_status(task, direction, status, updated_us) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(task, direction) DO UPDATE SET status = excluded.status, updated_us = excluded.updated_us",
        )
        .bind(&s.task)
        .bind(&s.direction)
        .bind(text)
        .bind(s.at_us)
        .execute(&self.pool)
        .await
        .map_err(self.err("saving task status"))?;
        Ok(())
    }

    /// The last saved status of every direction of a task.
    pub async fn statuses(&self, task: &str) -> Result<Vec<DirectionStatus>, StoreError> {
        let rows = sqlx::query("SELECT status FROM direction_status WHERE task = ?1 ORDER BY direction")
            .bind(task)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("reading task status"))?;
        Ok(rows.iter().filter_map(|r| serde_json::from_str(r.get::<&str, _>(0)).ok()).collect())
    }

    /// Records that a transaction is to be skipped.
    pub async fn add_skip(
        &self,
        task: &str,
        direction: &str,
        position: &Position,
        actor: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO skip(task, direction, position, actor, at_us) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(task)
            .bind(direction)
            .bind(position.to_string())
            .bind(actor)
            .bind(now_micros())
            .execute(&self.pool)
            .await
            .map_err(self.err("recording a skip"))?;
        Ok(())
    }

    /// Skipped transactions of a task: (direction, position).
    pub async fn skips(&self, task: &str) -> Result<Vec<(String, Position)>, StoreError> {
        let rows = sqlx::query("SELECT direction, position FROM skip WHERE task = ?1")
            .bind(task)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("reading skips"))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                crate::connector::registry::parse_position(r.get::<&str, _>(1)).ok().map(|p| (r.get::<String, _>(0), p))
            })
            .collect())
    }

    /// The newest `verify.clean` / `verify.differs` entry of a task.
    pub async fn last_verify(&self, task: &str) -> Result<Option<AuditEntry>, StoreError> {
        let row = sqlx::query(
            "SELECT at_us, actor, action, task, detail FROM audit \
             WHERE task = ?1 AND action IN ('verify.clean', 'verify.differs') ORDER BY id DESC LIMIT 1",
        )
        .bind(task)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err("reading the last verify"))?;
        Ok(row.map(|r| AuditEntry {
            at_us: r.get(0),
            actor: r.get(1),
            action: r.get(2),
            task: r.get(3),
            detail: r.get(4),
        }))
    }

    /// The persisted cutover state of a task (JSON), if a cutover was ever started.
    pub async fn load_cutover(&self, task: &str) -> Result<Option<String>, StoreError> {
        // A store written by an older ferry has no such table: no cutover.
        match sqlx::query_scalar("SELECT state FROM cutover WHERE task = ?1")
            .bind(task)
            .fetch_optional(&self.pool)
            .await
        {
            Ok(v) => Ok(v),
            Err(e) if e.to_string().contains("no such table") => Ok(None),
            Err(e) => Err(self.err("reading the cutover state")(e)),
        }
    }

    /// Every task's persisted cutover state (JSON), in one read.
    pub async fn cutovers(&self) -> Result<Vec<(String, String)>, StoreError> {
        match sqlx::query_as("SELECT task, state FROM cutover ORDER BY task").fetch_all(&self.pool).await {
            Ok(v) => Ok(v),
            Err(e) if e.to_string().contains("no such table") => Ok(Vec::new()),
            Err(e) => Err(self.err("reading the cutover states")(e)),
        }
    }

    /// Saves a task's cutover state (JSON), replacing the previous one.
    pub async fn save_cutover(&self, task: &str, state: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cutover(task, state, updated_us) VALUES (?1, ?2, ?3) \
             ON CONFLICT(task) DO UPDATE SET state = excluded.state, updated_us = excluded.updated_us",
        )
        .bind(task)
        .bind(state)
        .bind(now_micros())
        .execute(&self.pool)
        .await
        .map_err(self.err("saving the cutover state"))?;
        Ok(())
    }

    /// The direction a cutover set for a task, `(from, to)`; it overrides the task file.
    pub async fn direction(&self, task: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = match sqlx::query("SELECT from_endpoint, to_endpoint FROM task_direction WHERE task = ?1")
            .bind(task)
            .fetch_optional(&self.pool)
            .await
        {
            Ok(r) => r,
            Err(e) if e.to_string().contains("no such table") => None,
            Err(e) => return Err(self.err("reading the task's direction")(e)),
        };
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Records the task's current direction, or with `None` goes back to the task file's.
    pub async fn set_direction(&self, task: &str, direction: Option<(&str, &str)>) -> Result<(), StoreError> {
        let q = match direction {
            Some((from, to)) => sqlx::query(
                "INSERT INTO task_direction(task, from_endpoint, to_endpoint, since_us) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(task) DO UPDATE SET from_endpoint = excluded.from_endpoint, \
                 to_endpoint = excluded.to_endpoint, since_us = excluded.since_us",
            )
            .bind(task)
            .bind(from)
            .bind(to)
            .bind(now_micros()),
            None => sqlx::query("DELETE FROM task_direction WHERE task = ?1").bind(task),
        };
        q.execute(&self.pool).await.map_err(self.err("recording the task's direction"))?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Who is acting: the OS user and the node. `$USER` (then `$LOGNAME`) when set, else
/// the name the OS gives this process's user (containers and cron often set neither).
pub fn actor(node: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| whoami::username().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process killed inside a write leaves a hot journal beside the store: the next
    /// start must open it (rolled back), not fail as "attempt to write a readonly database".
    #[tokio::test]
    async fn a_store_left_by_a_killed_writer_opens_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let store = Store::open(&path, true).await.expect("create");
        store.audit("op@n", "run.start", None, "committed").await.expect("audit");
        let mut tx = store.pool.begin().await.expect("begin");
        // A cache of one page spills the transaction into the file before its commit:
        // the journal is then finished and hot, as a kill in the middle of a write leaves it.
        sqlx::query("PRAGMA cache_size = 1").execute(&mut *tx).await.expect("pragma");
        for i in 0..200 {
            sqlx::query("INSERT INTO audit(at_us, actor, action, task, detail) VALUES (?1, 'op@n', 'x', NULL, ?2)")
                .bind(i)
                .bind("not committed ".repeat(100))
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        // What a SIGKILL leaves: the file and its journal, no process holding a lock.
        let copy = dir.path().join("killed.db");
        std::fs::copy(&path, &copy).expect("copy the store");
        let journal = dir.path().join("meta.db-journal");
        assert!(journal.exists(), "the open transaction has a journal");
        std::fs::copy(&journal, dir.path().join("killed.db-journal")).expect("copy the journal");
        drop(tx);
        store.close().await;

        let reopened = Store::open_existing(&copy).await.expect("opens after the kill").expect("exists");
        let details: Vec<String> = reopened.audit_log(10).await.expect("read").into_iter().map(|e| e.detail).collect();
        assert_eq!(details, vec!["committed".to_string()], "the uncommitted write is rolled back");
    }
}
