//! The metadata store: audit log, last known status of every direction, skipped
//! transactions. SQLite through sqlx. (Checkpoints and conflicts live in each target.)

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
}

const SCHEMA: &str = r#"
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

/// The metadata store.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if `create`) the store file.
    pub async fn open(path: &Path, create: bool) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .read_only(!create)
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
            sqlx::raw_sql(SCHEMA).execute(&store.pool).await.map_err(store.err("creating tables"))?;
        }
        Ok(store)
    }

    /// Opens an existing store read-only; `None` when the file does not exist.
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
        Ok(rows.iter().filter_map(|r| r.get::<&str, _>(1).parse().ok().map(|p| (r.get::<String, _>(0), p))).collect())
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

/// Who is acting: the OS user and the node.
pub fn actor(node: &str) -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{node}")
}
