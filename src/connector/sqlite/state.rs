//! ferry's state rows in a SQLite target: checkpoint (stream position and per-table
//! snapshot progress), lease, and the conflict log. Written inside the apply transaction.

use std::collections::HashMap;

use serde_json::json;
use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;

use crate::connector::{Checkpoint, DirectionId, LeaseHolder, LeaseOutcome, TableProgress};
use crate::model::{Position, Row, TableSchema, now_micros};

/// Slot name of the stream position (worker 0).
const STREAM_SLOT: &str = "stream:0";

/// Reads a direction's checkpoint.
pub async fn load_checkpoint(
    conn: &mut SqliteConnection,
    dir: &DirectionId,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query("SELECT slot, position, progress FROM ferry_checkpoint WHERE task = ?1 AND direction = ?2")
        .bind(&dir.task)
        .bind(dir.direction())
        .fetch_all(&mut *conn)
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut cp = Checkpoint::default();
    for r in rows {
        let slot: String = r.get(0);
        let position: Option<String> = r.get(1);
        let progress: Option<String> = r.get(2);
        if slot == STREAM_SLOT {
            cp.position = match position {
                Some(p) => Some(p.parse::<Position>().map_err(|e| sqlx::Error::Protocol(e.to_string()))?),
                None => None,
            };
        } else if let (Some(table), Some(p)) = (slot.strip_prefix("table:"), progress) {
            let prog: TableProgress = serde_json::from_str(&p)
                .map_err(|e| sqlx::Error::Protocol(format!("checkpoint of table {table}: {e}")))?;
            cp.tables.insert(table.to_string(), prog);
        }
    }
    Ok(Some(cp))
}

/// Writes the checkpoint rows that changed since the last write on this connection.
pub async fn write_checkpoint(
    conn: &mut SqliteConnection,
    dir: &DirectionId,
    cp: &Checkpoint,
    written: &mut HashMap<String, String>,
) -> Result<(), sqlx::Error> {
    let now = now_micros();
    let direction = dir.direction();
    let mut slots: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    slots.push((STREAM_SLOT.to_string(), cp.position.as_ref().map(ToString::to_string), None));
    for (table, prog) in &cp.tables {
        let text = serde_json::to_string(prog).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        slots.push((format!("table:{table}"), None, Some(text)));
    }
    for (slot, position, progress) in slots {
        let fingerprint = format!("{position:?}{progress:?}");
        let key = format!("{}/{direction}/{slot}", dir.task);
        if written.get(&key) == Some(&fingerprint) && slot != STREAM_SLOT {
            continue;
        }
        sqlx::query(
            "INSERT INTO ferry_checkpoint(task, direction, slot, position, progress, updated_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT(task, direction, slot) DO UPDATE SET position = excluded.position, progress = excluded.progress, updated_us = excluded.updated_us",
        )
        .bind(&dir.task)
        .bind(&direction)
        .bind(&slot)
        .bind(position)
        .bind(progress)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        written.insert(key, fingerprint);
    }
    Ok(())
}

/// The local host's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Whether a process with this pid runs on this host.
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes or renews a lease inside an IMMEDIATE transaction the caller opened.
pub async fn take_lease(
    conn: &mut SqliteConnection,
    dir: &DirectionId,
    me: &LeaseHolder,
) -> Result<LeaseOutcome, sqlx::Error> {
    let row = sqlx::query("SELECT node, host, pid, expires_us FROM ferry_lease WHERE task = ?1 AND direction = ?2")
        .bind(&dir.task)
        .bind(dir.direction())
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(r) = row {
        let holder = LeaseHolder {
            node: r.get(0),
            host: r.get(1),
            pid: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
            expires_us: r.get(3),
        };
        let mine = holder.host == me.host && holder.pid == me.pid;
        let dead = holder.host == me.host && !pid_alive(holder.pid);
        let expired = holder.expires_us < now_micros();
        if !(mine || dead || expired) {
            return Ok(LeaseOutcome::HeldBy(holder));
        }
    }
    sqlx::query(
        "INSERT INTO ferry_lease(task, direction, node, host, pid, expires_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT(task, direction) DO UPDATE SET node = excluded.node, host = excluded.host, pid = excluded.pid, expires_us = excluded.expires_us",
    )
    .bind(&dir.task)
    .bind(dir.direction())
    .bind(&me.node)
    .bind(&me.host)
    .bind(i64::from(me.pid))
    .bind(me.expires_us)
    .execute(&mut *conn)
    .await?;
    Ok(LeaseOutcome::Acquired)
}

/// Drops our lease.
pub async fn drop_lease(conn: &mut SqliteConnection, dir: &DirectionId, me: &LeaseHolder) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM ferry_lease WHERE task = ?1 AND direction = ?2 AND host = ?3 AND pid = ?4")
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(&me.host)
        .bind(i64::from(me.pid))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Reads the lease holder of a direction, if any.
pub async fn lease_holder(conn: &mut SqliteConnection, dir: &DirectionId) -> Result<Option<LeaseHolder>, sqlx::Error> {
    let row = sqlx::query("SELECT node, host, pid, expires_us FROM ferry_lease WHERE task = ?1 AND direction = ?2")
        .bind(&dir.task)
        .bind(dir.direction())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| LeaseHolder {
        node: r.get(0),
        host: r.get(1),
        pid: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        expires_us: r.get(3),
    }))
}

/// Renders a row as a JSON object of column name to value (exact, tagged by type).
pub fn row_json(table: &TableSchema, row: Option<&Row>) -> Option<String> {
    let row = row?;
    let mut obj = serde_json::Map::new();
    for (c, v) in table.columns.iter().zip(row) {
        obj.insert(c.name.clone(), serde_json::to_value(v).unwrap_or(json!(null)));
    }
    Some(serde_json::Value::Object(obj).to_string())
}

/// One entry of the conflict log.
#[derive(Debug, Clone)]
pub struct ConflictRecord<'a> {
    /// The target table.
    pub table: &'a TableSchema,
    /// Key, rendered.
    pub key: String,
    /// Policy name.
    pub policy: String,
    /// "incoming" or "local".
    pub winner: &'static str,
    /// Incoming version.
    pub incoming_site: &'a str,
    /// Incoming commit time (µs).
    pub incoming_ts: i64,
    /// Incoming row (None = delete).
    pub incoming_row: Option<&'a Row>,
    /// Local version.
    pub local_site: String,
    /// Local commit time (µs).
    pub local_ts: i64,
    /// Local row (None = absent).
    pub local_row: Option<&'a Row>,
    /// Source position of the incoming transaction.
    pub position: String,
}

/// Appends a conflict to `ferry_conflict` (inside the resolving transaction).
pub async fn record_conflict(
    conn: &mut SqliteConnection,
    dir: &DirectionId,
    c: &ConflictRecord<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ferry_conflict(task, direction, tbl, pk, policy, winner, incoming_site, incoming_ts, incoming_row, \
         local_site, local_ts, local_row, position, detected_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .bind(&dir.task)
    .bind(dir.direction())
    .bind(c.table.name.to_string())
    .bind(&c.key)
    .bind(&c.policy)
    .bind(c.winner)
    .bind(c.incoming_site)
    .bind(c.incoming_ts)
    .bind(row_json(c.table, c.incoming_row))
    .bind(&c.local_site)
    .bind(c.local_ts)
    .bind(row_json(c.table, c.local_row))
    .bind(&c.position)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
