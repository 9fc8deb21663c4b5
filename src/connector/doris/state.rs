//! ferry's state for a Doris endpoint, in a SQLite file of the node (`?state=`): per
//! direction the checkpoint, the lease, and the loads of the batch in flight (label,
//! table, data and its digest), recorded before they are sent. Doris offers no write
//! ferry could make conditional (a lease needs compare-and-set, a fenced checkpoint a
//! conditional update; Stream Load and INSERT only upsert), and reading a table of its
//! own needs the MySQL-protocol port; a local file gives both, atomically, with the
//! data of the batch in flight: a restart sends exactly that batch again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row as _};

use super::DorisEndpoint;
use super::load::Recorded;
use crate::connector::registry::parse_position;
use crate::connector::{Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, TableProgress};
use crate::model::now_micros;

/// The schema version of the state file this release writes.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ferry_checkpoint(task TEXT NOT NULL, direction TEXT NOT NULL, position TEXT, tables TEXT NOT NULL, fencing INTEGER, pending TEXT, updated_us INTEGER NOT NULL, PRIMARY KEY(task, direction))",
    "CREATE TABLE IF NOT EXISTS ferry_lease(task TEXT NOT NULL, direction TEXT NOT NULL, holder TEXT NOT NULL, fencing INTEGER NOT NULL, PRIMARY KEY(task, direction))",
    "CREATE TABLE IF NOT EXISTS ferry_load(task TEXT NOT NULL, direction TEXT NOT NULL, label TEXT NOT NULL, tbl TEXT NOT NULL, digest TEXT NOT NULL, payload BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(task, direction, label))",
];

/// The checkpoint as stored (position text, snapshot state).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    /// Last source position applied.
    pub position: Option<String>,
    /// Snapshot state per table.
    pub tables: BTreeMap<String, TableProgress>,
}

impl Stored {
    /// The stored form of a checkpoint.
    pub fn of(cp: &Checkpoint) -> Self {
        Stored { position: cp.position.as_ref().map(ToString::to_string), tables: cp.tables.clone() }
    }
}

/// The state file of one endpoint.
pub struct State {
    conn: SqliteConnection,
    endpoint: String,
    path: String,
}

impl State {
    /// Opens (`create`: creating) the state file; `None` when it does not exist and
    /// `create` is false (a target that never ran).
    pub async fn open(ep: &DorisEndpoint, create: bool) -> Result<Option<Self>, ConnectorError> {
        if !create && !Path::new(&ep.state).exists() {
            return Ok(None);
        }
        let opts = SqliteConnectOptions::new()
            .filename(&ep.state)
            .create_if_missing(create)
            .busy_timeout(Duration::from_secs(30))
            .synchronous(SqliteSynchronous::Full)
            .disable_statement_logging();
        let conn = opts.connect().await.map_err(|source| ConnectorError::Open {
            endpoint: ep.name.clone(),
            target: ep.state.display().to_string(),
            source,
            fix: "ferry keeps a Doris endpoint's checkpoint in this SQLite file (?state=): check that this user may read and write it and its folder".into(),
        })?;
        let mut s = State { conn, endpoint: ep.name.clone(), path: ep.state.display().to_string() };
        let version: i64 = s.query_one("reading the state file's schema version", "PRAGMA user_version").await?;
        if version > SCHEMA_VERSION {
            return Err(ConnectorError::Setup {
                endpoint: s.endpoint.clone(),
                problem: format!(
                    "the state file {} has schema version {version}, newer than this release's {SCHEMA_VERSION}",
                    s.path
                ),
                fix: "run the ferry release that wrote it, or a newer one".into(),
            });
        }
        if create {
            for stmt in SCHEMA {
                s.exec("creating ferry's tables in the state file", sqlx::query(*stmt)).await?;
            }
            let v = format!("PRAGMA user_version = {SCHEMA_VERSION}");
            s.exec("recording the state file's schema version", sqlx::query(sqlx::AssertSqlSafe(v))).await?;
        }
        Ok(Some(s))
    }

    fn err(&self, what: &str) -> impl FnOnce(sqlx::Error) -> ConnectorError + '_ {
        let what = format!("{what} (state file {})", self.path);
        move |source| ConnectorError::Query { endpoint: self.endpoint.clone(), what, source }
    }

    async fn exec(
        &mut self,
        what: &str,
        q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<u64, ConnectorError> {
        let r = q.execute(&mut self.conn).await;
        r.map(|r| r.rows_affected()).map_err(self.err(what))
    }

    async fn query_one(&mut self, what: &str, sql: &'static str) -> Result<i64, ConnectorError> {
        let r = sqlx::query(sql).fetch_one(&mut self.conn).await;
        let row = r.map_err(self.err(what))?;
        row.try_get(0).map_err(self.err(what))
    }

    /// The stored checkpoint of a direction and the one recorded with the batch in flight.
    pub async fn checkpoint(&mut self, dir: &DirectionId) -> Result<Option<(Stored, Option<Stored>)>, ConnectorError> {
        let r =
            sqlx::query("SELECT position, tables, pending FROM ferry_checkpoint WHERE task = ?1 AND direction = ?2")
                .bind(&dir.task)
                .bind(dir.direction())
                .fetch_optional(&mut self.conn)
                .await;
        let Some(row) = r.map_err(self.err("reading the checkpoint"))? else { return Ok(None) };
        let position: Option<String> = row.try_get(0).map_err(self.err("reading the checkpoint"))?;
        let tables: String = row.try_get(1).map_err(self.err("reading the checkpoint"))?;
        let pending: Option<String> = row.try_get(2).map_err(self.err("reading the checkpoint"))?;
        let unreadable = |e: serde_json::Error| ConnectorError::Setup {
            endpoint: self.endpoint.clone(),
            problem: format!("the checkpoint of task {dir} in {} is unreadable: {e}", self.path),
            fix: "it was not written by this ferry release; delete the file and copy the task anew".into(),
        };
        let tables = serde_json::from_str(&tables).map_err(unreadable)?;
        let pending = match pending {
            Some(p) => Some(serde_json::from_str(&p).map_err(unreadable)?),
            None => None,
        };
        Ok(Some((Stored { position, tables }, pending)))
    }

    /// The engine's form of a stored checkpoint.
    pub fn checkpoint_of(&self, dir: &DirectionId, s: &Stored) -> Result<Checkpoint, ConnectorError> {
        let position = match &s.position {
            Some(text) => {
                Some(
                    parse_position(text).map_err(|e| ConnectorError::Setup {
                        endpoint: self.endpoint.clone(),
                        problem: format!("the checkpoint of task {dir}: {e}"),
                        fix: "it was written by a newer ferry or not by ferry; use that release or copy the task anew"
                            .into(),
                    })?,
                )
            }
            None => None,
        };
        Ok(Checkpoint { position, tables: s.tables.clone() })
    }

    /// The loads recorded for the batch in flight, in the order they were recorded.
    pub async fn recorded(&mut self, dir: &DirectionId) -> Result<Vec<Recorded>, ConnectorError> {
        let r =
            sqlx::query("SELECT tbl, label, payload FROM ferry_load WHERE task = ?1 AND direction = ?2 ORDER BY seq")
                .bind(&dir.task)
                .bind(dir.direction())
                .fetch_all(&mut self.conn)
                .await;
        let rows = r.map_err(self.err("reading the recorded loads"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let data: Vec<u8> = row.try_get(2).map_err(self.err("reading the recorded loads"))?;
            out.push(Recorded {
                table: row.try_get(0).map_err(self.err("reading the recorded loads"))?,
                label: row.try_get(1).map_err(self.err("reading the recorded loads"))?,
                data: data.into(),
                fresh: false,
            });
        }
        Ok(out)
    }

    /// Records a batch's loads before they are sent, and (when the batch commits) the
    /// checkpoint it ends at, in one transaction, fenced by the lease's tenure. A label
    /// recorded before with other data is refused: the same label must always carry
    /// the same data. Returns the loads, each marked whether it is new.
    pub async fn record(
        &mut self,
        dir: &DirectionId,
        fence: Option<i64>,
        loads: Vec<(String, String, Vec<u8>)>,
        pending: Option<&Stored>,
    ) -> Result<Result<Vec<Recorded>, Option<LeaseHolder>>, ConnectorError> {
        let what = "recording a batch's loads";
        let (task, direction) = (dir.task.clone(), dir.direction());
        let mut tx = self.conn.begin().await.map_err(|source| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: what.into(),
            source,
        })?;
        let q = |e| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: format!("{what} in {}", self.path),
            source: e,
        };
        if let Some(f) = fence {
            let holder = lease_in(&mut tx, &task, &direction).await.map_err(q)?;
            if !matches!(&holder, Some(h) if h.fencing == f && h.pid != 0) {
                return Ok(Err(holder));
            }
        }
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM ferry_load WHERE task = ?1 AND direction = ?2")
            .bind(&task)
            .bind(&direction)
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(q)?;
        let mut out = Vec::with_capacity(loads.len());
        for (i, (table, label, data)) in loads.into_iter().enumerate() {
            let digest = super::digest(&data);
            let had: Option<String> =
                sqlx::query("SELECT digest FROM ferry_load WHERE task = ?1 AND direction = ?2 AND label = ?3")
                    .bind(&task)
                    .bind(&direction)
                    .bind(&label)
                    .fetch_optional(&mut *tx)
                    .await
                    .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                    .map_err(q)?;
            match had {
                Some(d) if d != digest => {
                    return Err(ConnectorError::Setup {
                        endpoint: self.endpoint.clone(),
                        problem: format!(
                            "table {table}: label {label} was recorded for other data (digest {d}) than the source now gives for the same positions (digest {digest}): the source's history under these positions changed (a failover or a restored server that reuses positions)"
                        ),
                        fix: format!(
                            "copy the task anew: delete its rows from the state file {} and let the snapshot run again",
                            self.path
                        ),
                    });
                }
                Some(_) => out.push(Recorded { table, label, data: data.into(), fresh: false }),
                None => {
                    sqlx::query("INSERT INTO ferry_load(task, direction, label, tbl, digest, payload, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                        .bind(&task)
                        .bind(&direction)
                        .bind(&label)
                        .bind(&table)
                        .bind(&digest)
                        .bind(&data)
                        .bind(seq + 1 + i as i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(q)?;
                    out.push(Recorded { table, label, data: data.into(), fresh: true });
                }
            }
        }
        if let Some(p) = pending {
            let text = serde_json::to_string(p).unwrap_or_default();
            ensure_row(&mut tx, &task, &direction).await.map_err(q)?;
            sqlx::query("UPDATE ferry_checkpoint SET pending = ?3 WHERE task = ?1 AND direction = ?2")
                .bind(&task)
                .bind(&direction)
                .bind(text)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
        }
        tx.commit().await.map_err(q)?;
        Ok(Ok(out))
    }

    /// Writes the checkpoint once every recorded load landed, forgetting them, fenced
    /// by the lease's tenure; `Err` with the holder when the tenure is gone.
    pub async fn commit(
        &mut self,
        dir: &DirectionId,
        fence: Option<i64>,
        cp: &Stored,
    ) -> Result<Result<(), Option<LeaseHolder>>, ConnectorError> {
        let (task, direction) = (dir.task.clone(), dir.direction());
        let mut tx = self.conn.begin().await.map_err(|source| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: "writing the checkpoint".into(),
            source,
        })?;
        let q = |e| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: format!("writing the checkpoint in {}", self.path),
            source: e,
        };
        if let Some(f) = fence {
            let holder = lease_in(&mut tx, &task, &direction).await.map_err(q)?;
            if !matches!(&holder, Some(h) if h.fencing == f && h.pid != 0) {
                return Ok(Err(holder));
            }
        }
        ensure_row(&mut tx, &task, &direction).await.map_err(q)?;
        sqlx::query("UPDATE ferry_checkpoint SET position = ?3, tables = ?4, fencing = ?5, pending = NULL, updated_us = ?6 WHERE task = ?1 AND direction = ?2")
            .bind(&task)
            .bind(&direction)
            .bind(&cp.position)
            .bind(serde_json::to_string(&cp.tables).unwrap_or_else(|_| "{}".into()))
            .bind(fence)
            .bind(now_micros())
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        sqlx::query("DELETE FROM ferry_load WHERE task = ?1 AND direction = ?2")
            .bind(&task)
            .bind(&direction)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        tx.commit().await.map_err(q)?;
        Ok(Ok(()))
    }

    /// Forgets a refused load and the checkpoint its batch was to reach (the loads
    /// that landed stay recorded: the batch read again finds their labels ferry's).
    pub async fn forget(&mut self, dir: &DirectionId, label: &str) -> Result<(), ConnectorError> {
        let r = sqlx::query("DELETE FROM ferry_load WHERE task = ?1 AND direction = ?2 AND label = ?3")
            .bind(&dir.task)
            .bind(dir.direction())
            .bind(label)
            .execute(&mut self.conn)
            .await;
        r.map_err(self.err("forgetting a refused load"))?;
        let r = sqlx::query("UPDATE ferry_checkpoint SET pending = NULL WHERE task = ?1 AND direction = ?2")
            .bind(&dir.task)
            .bind(dir.direction())
            .execute(&mut self.conn)
            .await;
        r.map_err(self.err("forgetting a refused load")).map(|_| ())
    }

    /// The lease of a direction, read without writing.
    pub async fn lease(&mut self, dir: &DirectionId) -> Result<Option<LeaseHolder>, ConnectorError> {
        let r = lease_in(&mut self.conn, &dir.task, &dir.direction()).await;
        r.map_err(self.err("reading the lease"))
    }

    /// Takes or renews the lease (see [`crate::connector::Sink::lease`]), judged by this
    /// host's clock (the file is this node's).
    pub async fn claim(
        &mut self,
        dir: &DirectionId,
        me: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        let (task, direction) = (dir.task.clone(), dir.direction());
        let mut tx = self.conn.begin().await.map_err(|source| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: "taking the lease".into(),
            source,
        })?;
        let q = |e| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: format!("taking the lease in {}", self.path),
            source: e,
        };
        let current = lease_in(&mut tx, &task, &direction).await.map_err(q)?;
        let fencing = match me.claim(current.as_ref()) {
            Ok(f) => f,
            Err(h) => return Ok(LeaseOutcome::HeldBy(h)),
        };
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let holder =
            LeaseHolder { expires_us: now_micros().saturating_add(ttl_us), expired: false, fencing, ..me.clone() };
        put_lease(&mut tx, &task, &direction, &holder).await.map_err(q)?;
        tx.commit().await.map_err(q)?;
        Ok(LeaseOutcome::Acquired { fencing })
    }

    /// Gives the lease up if `me.fencing` still holds it.
    pub async fn release(&mut self, dir: &DirectionId, me: &LeaseHolder) -> Result<(), ConnectorError> {
        let (task, direction) = (dir.task.clone(), dir.direction());
        let mut tx = self.conn.begin().await.map_err(|source| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: "releasing the lease".into(),
            source,
        })?;
        let q = |e| ConnectorError::Query {
            endpoint: self.endpoint.clone(),
            what: format!("releasing the lease in {}", self.path),
            source: e,
        };
        if let Some(h) = lease_in(&mut tx, &task, &direction).await.map_err(q)?
            && h.fencing == me.fencing
            && h.pid != 0
        {
            let gone = LeaseHolder { pid: 0, expires_us: now_micros(), expired: true, ..me.clone() };
            put_lease(&mut tx, &task, &direction, &gone).await.map_err(q)?;
        }
        tx.commit().await.map_err(q)
    }
}

async fn ensure_row(c: &mut SqliteConnection, task: &str, direction: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO ferry_checkpoint(task, direction, position, tables, updated_us) VALUES (?1, ?2, NULL, '{}', ?3)")
        .bind(task)
        .bind(direction)
        .bind(now_micros())
        .execute(c)
        .await
        .map(|_| ())
}

async fn lease_in(c: &mut SqliteConnection, task: &str, direction: &str) -> Result<Option<LeaseHolder>, sqlx::Error> {
    let row = sqlx::query("SELECT holder FROM ferry_lease WHERE task = ?1 AND direction = ?2")
        .bind(task)
        .bind(direction)
        .fetch_optional(c)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let text: String = row.try_get(0)?;
    Ok(serde_json::from_str::<LeaseHolder>(&text).ok().map(|mut h| {
        h.expired = h.expires_us < now_micros();
        h
    }))
}

async fn put_lease(c: &mut SqliteConnection, task: &str, direction: &str, h: &LeaseHolder) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO ferry_lease(task, direction, holder, fencing) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(task, direction) DO UPDATE SET holder = excluded.holder, fencing = excluded.fencing")
        .bind(task)
        .bind(direction)
        .bind(serde_json::to_string(h).unwrap_or_default())
        .bind(h.fencing)
        .execute(c)
        .await
        .map(|_| ())
}
