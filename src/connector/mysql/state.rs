//! ferry's state in a MySQL/MariaDB target, in the `ferry` database: the checkpoint
//! (stream position and per-table snapshot progress, written inside the apply
//! transaction), the lease of each task direction, the conflict log and the heartbeat.
//! Same rows and semantics as the SQLite target's `ferry_*` tables.

use std::collections::HashMap;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::names::{CHECKPOINT_TABLE, LEASE_TABLE, ferry_table};
use super::position::BinlogPos;
use super::{FERRY_DB, MysqlEndpoint};
use crate::connector::host::pid_alive;
use crate::connector::{Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use crate::model::{Position, now_micros};

pub use crate::connector::parallel::slots::{StreamSlots, StreamState, is_after, slot_progress, stream_slot};

/// Reads a direction's checkpoint (`None` before its first batch).
pub async fn load_checkpoint(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
) -> Result<Option<Checkpoint>, ConnectorError> {
    Ok(load_checkpoint_slots(ep, conn, dir).await?.map(|(cp, _)| cp))
}

/// Reads a direction's checkpoint and its stream slots. With several workers each has a
/// slot; the stream resumes from the lowest position among them, and the transactions
/// past it that a worker already committed come back in [`StreamSlots::applied`].
pub async fn load_checkpoint_slots(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
) -> Result<Option<(Checkpoint, StreamSlots)>, ConnectorError> {
    let sql = format!(
        "SELECT slot, position, progress FROM {} WHERE task = ? AND direction = ?",
        ferry_table(CHECKPOINT_TABLE)
    );
    let rows: Vec<(String, Option<String>, Option<String>)> = conn
        .exec(sql, (&dir.task, dir.direction()))
        .await
        .map_err(ep.error(format!("reading the checkpoint of {dir}")))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let corrupt = |slot: &str, e: String| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("the checkpoint of {dir} (slot {slot}) in {FERRY_DB}.ferry_checkpoint cannot be read: {e}"),
        fix: format!(
            "restore the row, or delete the task's rows (DELETE FROM {FERRY_DB}.ferry_checkpoint WHERE task = '{}') to start over with a snapshot",
            dir.task
        ),
    };
    let parse = |p: &str| crate::connector::registry::parse_position(p).map_err(|e| e.to_string());
    crate::connector::parallel::slots::read_slots(rows, parse, corrupt).map(Some)
}

/// A source transaction's identity in the stream: its end position without the GTID
/// list (a re-read of the same binlog gives the same file and offset).
pub fn stream_key(p: &Position) -> String {
    if BinlogPos::is_part(p) {
        // A part of a transaction is never a whole one a worker committed.
        return p.to_string();
    }
    match BinlogPos::of(p) {
        Ok(BinlogPos { file, pos, .. }) => format!("{file}:{pos}"),
        Err(_) => p.to_string(),
    }
}

/// Writes checkpoint rows in the open transaction: the given stream slots (slot index and
/// `progress` text: see [`slot_progress`]) at the checkpoint's position, and, if
/// `tables`, table slots whose state changed since the last committed write (`written`).
/// Returns (key, fingerprint) pairs to note in `written` once the transaction commits.
pub async fn write_checkpoint(
    conn: &mut Conn,
    dir: &DirectionId,
    cp: &Checkpoint,
    written: &HashMap<String, String>,
    streams: &[(usize, Option<String>)],
    tables: bool,
) -> Result<Vec<(String, String)>, mysql_async::Error> {
    let now = now_micros();
    let direction = dir.direction();
    let mut rows: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for (w, progress) in streams {
        rows.push((stream_slot(*w), cp.position.as_ref().map(ToString::to_string), progress.clone()));
    }
    for (table, prog) in cp.tables.iter().filter(|_| tables) {
        let text = serde_json::to_string(prog).map_err(|e| mysql_async::Error::Other(Box::new(e)))?;
        rows.push((format!("table:{table}"), None, Some(text)));
    }
    let mut noted = Vec::new();
    let mut params: Vec<mysql_async::Value> = Vec::new();
    for (slot, position, progress) in rows {
        let stream = slot.starts_with("stream:");
        let fingerprint = format!("{position:?}{progress:?}");
        let key = format!("{}/{direction}/{slot}", dir.task);
        if !stream && written.get(&key) == Some(&fingerprint) {
            continue;
        }
        params.extend([
            dir.task.as_str().into(),
            direction.as_str().into(),
            slot.into(),
            position.into(),
            progress.into(),
            now.into(),
        ]);
        if !stream {
            noted.push((key, fingerprint));
        }
    }
    // One statement for all changed slots (a few per batch; thousands only on the first).
    for chunk in params.chunks(6 * 1000) {
        let tuples = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len() / 6].join(", ");
        let sql = format!(
            "INSERT INTO {} (task, direction, slot, position, progress, updated_us) VALUES {tuples} \
             ON DUPLICATE KEY UPDATE position = VALUES(position), progress = VALUES(progress), updated_us = VALUES(updated_us)",
            ferry_table(CHECKPOINT_TABLE)
        );
        conn.exec_drop(sql, chunk.to_vec()).await?;
    }
    Ok(noted)
}

/// Deletes stream slots of workers `count` and beyond (left by a run with more workers),
/// in the open transaction that writes slots 0..count.
pub async fn drop_stream_slots_from(
    conn: &mut Conn,
    dir: &DirectionId,
    count: usize,
) -> Result<(), mysql_async::Error> {
    let sql = format!(
        "DELETE FROM {} WHERE task = ? AND direction = ? AND slot LIKE 'stream:%' \
         AND CAST(SUBSTRING(slot, 8) AS UNSIGNED) >= ?",
        ferry_table(CHECKPOINT_TABLE)
    );
    conn.exec_drop(sql, (&dir.task, dir.direction(), count as u64)).await
}

/// The server's clock, µs since the epoch, as SQL: lease expiry is set and judged by the
/// target server's clock alone, never compared with another host's.
const SERVER_NOW_US: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

/// A lease row as read: node, host, pid, expires_us, fencing, expired (by the server's clock).
type LeaseRow = (String, String, i64, i64, i64, i64);

/// The columns of a [`LeaseRow`].
fn lease_columns() -> String {
    format!("node, host, pid, expires_us, fencing, expires_us < {SERVER_NOW_US}")
}

fn holder_of((node, host, pid, expires_us, fencing, expired): LeaseRow) -> LeaseHolder {
    LeaseHolder {
        node,
        host,
        pid: u32::try_from(pid).unwrap_or(0),
        expires_us,
        expired: expired != 0,
        fencing,
        floor: 0,
    }
}

/// Takes or renews a direction's lease in one transaction (`SELECT … FOR UPDATE`), on a
/// session that is not applying (see [`crate::connector::Sink::lease`]): a live holder
/// keeps it (one whose lease has not run out by the server's clock and, on this host,
/// whose pid runs); a new holder gets the next fencing token; a renewal keeps its token
/// unless another process took the lease over since.
pub async fn take_lease(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
    me: &LeaseHolder,
    ttl: Duration,
) -> Result<LeaseOutcome, ConnectorError> {
    let what = format!("taking the lease of {dir}");
    let table = ferry_table(LEASE_TABLE);
    // A placeholder row (already expired, nobody's) so FOR UPDATE always locks a row,
    // never a gap; released leases go back to it and keep their fencing token.
    conn.exec_drop(
        format!(
            "INSERT IGNORE INTO {table} (task, direction, node, host, pid, expires_us) VALUES (?, ?, '', '', 0, 0)"
        ),
        (&dir.task, dir.direction()),
    )
    .await
    .map_err(ep.error(what.clone()))?;
    // Taking over from a process whose lease ran out (paused, cut off, or gone): end its
    // sessions first. Their open transactions roll back and their locks go (the lease
    // row's among them), so this process never waits for one that may never resume.
    let seen: Option<LeaseRow> = conn
        .exec_first(
            format!("SELECT {} FROM {table} WHERE task = ? AND direction = ?", lease_columns()),
            (&dir.task, dir.direction()),
        )
        .await
        .map_err(ep.error(what.clone()))?;
    if let Some(h) = seen.map(holder_of)
        && me.fencing == 0
        && h.pid != 0
        && !(h.host == me.host && h.pid == me.pid)
        && (h.expired || (h.host == me.host && !pid_alive(h.pid)) || me.supersedes(&h))
    {
        let ended = end_sessions(conn, dir).await.map_err(ep.error(what.clone()))?;
        if ended > 0 {
            tracing::warn!(endpoint = %ep.name, direction = %dir, holder = %h, sessions = ended, "ended the sessions of the lease's previous holder (its lease ran out) before taking it over");
        }
    }
    ep.exec(conn, &what, "START TRANSACTION").await?;
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
    let result = async {
        let row: Option<LeaseRow> = conn
            .exec_first(
                format!("SELECT {} FROM {table} WHERE task = ? AND direction = ? FOR UPDATE", lease_columns()),
                (&dir.task, dir.direction()),
            )
            .await?;
        let fencing = match me.claim(row.map(holder_of).as_ref()) {
            Ok(f) => f,
            Err(h) => return Ok(LeaseOutcome::HeldBy(h)),
        };
        conn.exec_drop(
            format!(
                "UPDATE {table} SET node = ?, host = ?, pid = ?, expires_us = {SERVER_NOW_US} + ?, fencing = ? \
                 WHERE task = ? AND direction = ?"
            ),
            (&me.node, &me.host, i64::from(me.pid), ttl_us, fencing, &dir.task, dir.direction()),
        )
        .await?;
        Ok::<_, mysql_async::Error>(LeaseOutcome::Acquired { fencing })
    }
    .await;
    match result {
        Ok(outcome) => {
            ep.exec(conn, &what, "COMMIT").await?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            Err(ep.error(what)(e))
        }
    }
}

/// Worker sessions a holder may mark (more `workers` than this are not ended on takeover).
const MARKED_WORKERS: usize = 64;

/// The named lock (`GET_LOCK`) a holder's session of a direction keeps for its tenure:
/// `role` is `lease` or an apply worker's index. A new holder finds the sessions of the
/// previous one by these names (`IS_USED_LOCK`) and ends them.
pub fn session_lock(dir: &DirectionId, role: &str) -> String {
    // A hash of task and direction: names stay within MySQL's 64 characters.
    format!("ferry.{:016x}.{role}", crate::connector::own_names::direction_hash(dir))
}

/// Marks a session as one of the lease holder's (takes its named lock, never waiting).
pub async fn mark_session(conn: &mut Conn, dir: &DirectionId, role: &str) -> Result<(), mysql_async::Error> {
    let name = session_lock(dir, role);
    conn.exec_drop("DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), 1, GET_LOCK(?, 0))", (&name, &name)).await
}

/// Ends (`KILL CONNECTION`) the sessions marked by a holder of the direction, other than
/// this one; returns how many.
pub async fn end_sessions(conn: &mut Conn, dir: &DirectionId) -> Result<usize, mysql_async::Error> {
    let roles: Vec<String> =
        std::iter::once("lease".to_string()).chain((0..MARKED_WORKERS).map(|w| w.to_string())).collect();
    let names: Vec<String> = roles.iter().map(|r| session_lock(dir, r)).collect();
    let sql = format!("SELECT {} FROM DUAL", vec!["IFNULL(IS_USED_LOCK(?), 0)"; names.len()].join(", "));
    let row: Option<mysql_async::Row> = conn.exec_first(sql, names).await?;
    let me: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await?;
    let mut ended = 0;
    for i in 0..row.as_ref().map_or(0, mysql_async::Row::len) {
        let id: u64 = row.as_ref().and_then(|r| r.get(i)).unwrap_or(0);
        if id != 0 && Some(id) != me {
            // Gone already (1094: unknown thread) is as good as ended.
            if conn.query_drop(format!("KILL CONNECTION {id}")).await.is_ok() {
                ended += 1;
            }
        }
    }
    Ok(ended)
}

/// Gives our lease back (clean shutdown) if it is still our tenure: the row becomes the
/// nobody's placeholder again, keeping its fencing token for the next holder to go past.
pub async fn drop_lease(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
    me: &LeaseHolder,
) -> Result<(), ConnectorError> {
    conn.exec_drop(
        format!(
            "UPDATE {} SET node = '', host = '', pid = 0, expires_us = 0 \
             WHERE task = ? AND direction = ? AND fencing = ? AND host = ? AND pid = ?",
            ferry_table(LEASE_TABLE)
        ),
        (&dir.task, dir.direction(), me.fencing, &me.host, i64::from(me.pid)),
    )
    .await
    .map_err(ep.error(format!("releasing the lease of {dir}")))
}

/// Inside an open apply transaction: whether the direction's lease still carries the
/// fencing token `fence`. Its row stays share-locked until the transaction ends, so a
/// takeover waits for this commit and reads the checkpoint after it. `Some(holder)`
/// (pid 0 when released) when another tenure began: the caller must roll back.
pub async fn check_fence(
    conn: &mut Conn,
    dir: &DirectionId,
    fence: i64,
) -> Result<Option<LeaseHolder>, mysql_async::Error> {
    let row: Option<LeaseRow> = conn
        .exec_first(
            format!(
                "SELECT {} FROM {} WHERE task = ? AND direction = ? LOCK IN SHARE MODE",
                lease_columns(),
                ferry_table(LEASE_TABLE)
            ),
            (&dir.task, dir.direction()),
        )
        .await?;
    Ok(match row.map(holder_of) {
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

/// The lease holder of a direction, if any (placeholder rows count as none), with
/// whether its lease ran out by the server's clock.
pub async fn lease_holder(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
) -> Result<Option<LeaseHolder>, ConnectorError> {
    let row: Option<LeaseRow> = conn
        .exec_first(
            format!(
                "SELECT {} FROM {} WHERE task = ? AND direction = ? AND pid <> 0",
                lease_columns(),
                ferry_table(LEASE_TABLE)
            ),
            (&dir.task, dir.direction()),
        )
        .await
        .map_err(ep.error(format!("reading the lease of {dir}")))?;
    Ok(row.map(holder_of))
}
