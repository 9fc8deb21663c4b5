//! ferry's state rows in a SQLite target: checkpoint (stream position and per-table
//! snapshot progress), lease, and the conflict log. Written inside the apply transaction.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;

use crate::connector::{Checkpoint, DirectionId, LeaseHolder, LeaseOutcome, TableProgress};
use crate::model::{Row, TableSchema, now_micros};

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
                Some(p) => Some(
                    crate::connector::registry::parse_position(&p).map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
                ),
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

/// A lease row as read, with whether it ran out. A SQLite file lives on one host, so
/// its lease is set and judged by that host's clock.
fn holder_of(r: &sqlx::sqlite::SqliteRow) -> LeaseHolder {
    let expires_us: i64 = r.get(3);
    LeaseHolder {
        node: r.get(0),
        host: r.get(1),
        pid: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        floor: 0,
        expires_us,
        expired: expires_us < now_micros(),
        fencing: r.get(4),
    }
}

/// Takes or renews a lease inside an IMMEDIATE transaction the caller opened (or the
/// open commit group's, which holds the write lock anyway): a live holder keeps it (its
/// lease has not run out and, on this host, its pid runs); a new holder gets the next
/// fencing token; a renewal keeps its token unless another process took the lease over.
pub async fn take_lease(
    conn: &mut SqliteConnection,
    dir: &DirectionId,
    me: &LeaseHolder,
    ttl: Duration,
) -> Result<LeaseOutcome, sqlx::Error> {
    let row =
        sqlx::query("SELECT node, host, pid, expires_us, fencing FROM ferry_lease WHERE task = ?1 AND direction = ?2")
            .bind(&dir.task)
            .bind(dir.direction())
            .fetch_optional(&mut *conn)
            .await?;
    let fencing = match me.claim(row.as_ref().map(holder_of).as_ref()) {
        Ok(f) => f,
        Err(h) => return Ok(LeaseOutcome::HeldBy(h)),
    };
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
    sqlx::query(
        "INSERT INTO ferry_lease(task, direction, node, host, pid, expires_us, fencing) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT(task, direction) DO UPDATE SET node = excluded.node, host = excluded.host, pid = excluded.pid, \
         expires_us = excluded.expires_us, fencing = excluded.fencing",
    )
    .bind(&dir.task)
    .bind(dir.direction())
    .bind(&me.node)
    .bind(&me.host)
    .bind(i64::from(me.pid))
    .bind(now_micros().saturating_add(ttl_us))
    .bind(fencing)
    .execute(&mut *conn)
    .await?;
    Ok(LeaseOutcome::Acquired { fencing })
}

/// Gives our lease back if it is still our tenure: the row becomes nobody's (pid 0) and
/// keeps its fencing token for the next holder to go past.
pub async fn drop_lease(conn: &mut SqliteConnection, dir: &DirectionId, me: &LeaseHolder) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ferry_lease SET node = '', host = '', pid = 0, expires_us = 0 \
         WHERE task = ?1 AND direction = ?2 AND fencing = ?3 AND host = ?4 AND pid = ?5",
    )
    .bind(&dir.task)
    .bind(dir.direction())
    .bind(me.fencing)
    .bind(&me.host)
    .bind(i64::from(me.pid))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inside the apply transaction (which holds the write lock, so no takeover can come
/// between this and the commit): whether the lease still carries `fence`; the lease's
/// row otherwise (pid 0: released, or none).
pub async fn check_fence(
    conn: &mut SqliteConnection,
    dir: &DirectionId,
    fence: i64,
) -> Result<Option<LeaseHolder>, sqlx::Error> {
    let row =
        sqlx::query("SELECT node, host, pid, expires_us, fencing FROM ferry_lease WHERE task = ?1 AND direction = ?2")
            .bind(&dir.task)
            .bind(dir.direction())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row.as_ref().map(holder_of) {
        Some(h) if h.fencing == fence => None,
        Some(h) => Some(h),
        None => Some(LeaseHolder {
            node: String::new(),
            host: String::new(),
            pid: 0,
            expires_us: 0,
            expired: true,
            fencing: 0,
            floor: 0,
        }),
    })
}

/// Reads the lease holder of a direction, if any (a released lease has none).
pub async fn lease_holder(conn: &mut SqliteConnection, dir: &DirectionId) -> Result<Option<LeaseHolder>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT node, host, pid, expires_us, fencing FROM ferry_lease WHERE task = ?1 AND direction = ?2 AND pid <> 0",
    )
    .bind(&dir.task)
    .bind(dir.direction())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(holder_of))
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
