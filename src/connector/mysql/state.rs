//! ferry's state in a MySQL/MariaDB target, in the `ferry` database: the checkpoint
//! (stream position and per-table snapshot progress, written inside the apply
//! transaction), the lease of each task direction, the conflict log and the heartbeat.
//! Same rows and semantics as the SQLite target's `ferry_*` tables.

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::snapshot::HEARTBEAT_TABLE;
use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::sqlite::state::pid_alive;
use crate::connector::{Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, TableProgress};
use crate::model::{Position, now_micros};

/// `ferry`.`name`, quoted.
pub fn ferry_table(name: &str) -> String {
    format!("{}.{}", ident(FERRY_DB), ident(name))
}

/// Creates the `ferry` database and the target's tables (checkpoint, conflict, lease,
/// heartbeat), if missing.
pub async fn ensure_target_tables(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<(), ConnectorError> {
    let opts = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4", ident(FERRY_DB)),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (task VARCHAR(191) NOT NULL, direction VARCHAR(191) NOT NULL, \
             slot VARCHAR(191) NOT NULL, position TEXT NULL, progress MEDIUMTEXT NULL, updated_us BIGINT NOT NULL, \
             PRIMARY KEY (task, direction, slot)) {opts}",
            ferry_table("ferry_checkpoint")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, task VARCHAR(191) NOT NULL, \
             direction VARCHAR(191) NOT NULL, tbl VARCHAR(191) NOT NULL, pk TEXT NOT NULL, policy VARCHAR(191) NOT NULL, \
             winner VARCHAR(191) NOT NULL, incoming_site VARCHAR(191) NOT NULL, incoming_ts BIGINT NOT NULL, \
             incoming_row MEDIUMTEXT NULL, local_site VARCHAR(191) NOT NULL, local_ts BIGINT NOT NULL, \
             local_row MEDIUMTEXT NULL, position TEXT NOT NULL, detected_us BIGINT NOT NULL) {opts}",
            ferry_table("ferry_conflict")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (task VARCHAR(191) NOT NULL, direction VARCHAR(191) NOT NULL, \
             node VARCHAR(191) NOT NULL, host VARCHAR(191) NOT NULL, pid BIGINT NOT NULL, expires_us BIGINT NOT NULL, \
             PRIMARY KEY (task, direction)) {opts}",
            ferry_table("ferry_lease")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (site VARCHAR(191) NOT NULL PRIMARY KEY, ts BIGINT NOT NULL) {opts}",
            ferry_table(HEARTBEAT_TABLE)
        ),
    ];
    for sql in statements {
        ep.exec(conn, "creating ferry's tables in the ferry database", &sql).await?;
    }
    Ok(())
}

/// What the stream slots of a direction say beyond the lowest position: how many there
/// are, and which source transactions past the lowest a worker already committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSlots {
    /// Stream slot rows found (`stream:0` … `stream:N-1`; more than `workers` after a
    /// change of `workers`).
    pub count: usize,
    /// Source transactions (their end positions) past the lowest slot's position that a
    /// worker committed before a crash: a resumed stream must not apply them again.
    pub applied: Vec<Position>,
}

/// A stream slot's extra state, kept in its `progress` column as JSON.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SlotProgress {
    /// End positions of the source transactions this worker committed in its last batch.
    #[serde(default)]
    applied: Vec<String>,
}

/// The stream slot name of worker `w`.
pub fn stream_slot(w: usize) -> String {
    format!("stream:{w}")
}

/// The `progress` text of a stream slot naming the transactions its worker committed.
pub fn slot_progress(applied: &[&Position]) -> Option<String> {
    if applied.is_empty() {
        return None;
    }
    serde_json::to_string(&SlotProgress { applied: applied.iter().map(ToString::to_string).collect() }).ok()
}

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
        ferry_table("ferry_checkpoint")
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
    let mut cp = Checkpoint::default();
    // Per stream slot: its position (None: before the first batch) and what it applied.
    let mut streams: Vec<(Option<Position>, Vec<Position>)> = Vec::new();
    for (slot, position, progress) in rows {
        if slot.starts_with("stream:") {
            let position = match position {
                Some(p) => Some(p.parse::<Position>().map_err(|e| corrupt(&slot, e.to_string()))?),
                None => None,
            };
            let extra: SlotProgress = match progress {
                Some(p) => serde_json::from_str(&p).map_err(|e| corrupt(&slot, e.to_string()))?,
                None => SlotProgress::default(),
            };
            let applied = extra
                .applied
                .iter()
                .map(|p| p.parse::<Position>().map_err(|e| corrupt(&slot, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            streams.push((position, applied));
        } else if let (Some(table), Some(p)) = (slot.strip_prefix("table:"), progress) {
            let prog: TableProgress = serde_json::from_str(&p).map_err(|e| corrupt(&slot, e.to_string()))?;
            cp.tables.insert(table.to_string(), prog);
        }
    }
    let mut lowest: Option<Option<Position>> = None;
    for (p, _) in &streams {
        lowest = Some(match (lowest, p) {
            (None, p) => p.clone(),
            (Some(None), _) | (Some(Some(_)), None) => None,
            (Some(Some(l)), Some(p)) => Some(if is_after(&l, p) { p.clone() } else { l }),
        });
    }
    cp.position = lowest.flatten();
    let mut applied: Vec<Position> = Vec::new();
    for (_, list) in &streams {
        for p in list {
            let past = cp.position.as_ref().is_none_or(|low| is_after(p, low));
            if past && !applied.contains(p) {
                applied.push(p.clone());
            }
        }
    }
    Ok(Some((cp, StreamSlots { count: streams.len(), applied })))
}

/// A source transaction's identity in the stream: its end position without the GTID
/// list (a re-read of the same binlog gives the same file and offset).
pub fn stream_key(p: &Position) -> String {
    match p {
        Position::Mysql { file, pos, .. } => format!("{file}:{pos}"),
        other => other.to_string(),
    }
}

/// True when `a` lies after `b` in the stream.
pub fn is_after(a: &Position, b: &Position) -> bool {
    a.stream_cmp(b) == Some(std::cmp::Ordering::Greater)
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
            ferry_table("ferry_checkpoint")
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
        ferry_table("ferry_checkpoint")
    );
    conn.exec_drop(sql, (&dir.task, dir.direction(), count as u64)).await
}

/// Takes or renews a direction's lease in one transaction (`SELECT … FOR UPDATE`): a
/// live holder on this host, or an unexpired one elsewhere, keeps it.
pub async fn take_lease(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
    me: &LeaseHolder,
) -> Result<LeaseOutcome, ConnectorError> {
    let what = format!("taking the lease of {dir}");
    let table = ferry_table("ferry_lease");
    // A placeholder row (already expired) so FOR UPDATE always locks a row, never a gap.
    conn.exec_drop(
        format!(
            "INSERT IGNORE INTO {table} (task, direction, node, host, pid, expires_us) VALUES (?, ?, '', '', 0, 0)"
        ),
        (&dir.task, dir.direction()),
    )
    .await
    .map_err(ep.error(what.clone()))?;
    ep.exec(conn, &what, "START TRANSACTION").await?;
    let result = async {
        let row: Option<(String, String, i64, i64)> = conn
            .exec_first(
                format!("SELECT node, host, pid, expires_us FROM {table} WHERE task = ? AND direction = ? FOR UPDATE"),
                (&dir.task, dir.direction()),
            )
            .await?;
        if let Some((node, host, pid, expires_us)) = row {
            let holder = LeaseHolder { node, host, pid: u32::try_from(pid).unwrap_or(0), expires_us };
            let mine = holder.host == me.host && holder.pid == me.pid;
            let dead = holder.host == me.host && !pid_alive(holder.pid);
            let expired = holder.expires_us < now_micros();
            if !(mine || dead || expired) {
                return Ok(LeaseOutcome::HeldBy(holder));
            }
        }
        conn.exec_drop(
            format!(
                "INSERT INTO {table} (task, direction, node, host, pid, expires_us) VALUES (?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE node = VALUES(node), host = VALUES(host), pid = VALUES(pid), expires_us = VALUES(expires_us)"
            ),
            (&dir.task, dir.direction(), &me.node, &me.host, i64::from(me.pid), me.expires_us),
        )
        .await?;
        Ok::<_, mysql_async::Error>(LeaseOutcome::Acquired)
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

/// Drops our lease (clean shutdown).
pub async fn drop_lease(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
    me: &LeaseHolder,
) -> Result<(), ConnectorError> {
    conn.exec_drop(
        format!("DELETE FROM {} WHERE task = ? AND direction = ? AND host = ? AND pid = ?", ferry_table("ferry_lease")),
        (&dir.task, dir.direction(), &me.host, i64::from(me.pid)),
    )
    .await
    .map_err(ep.error(format!("releasing the lease of {dir}")))
}

/// The lease holder of a direction, if any (placeholder rows count as none).
pub async fn lease_holder(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    dir: &DirectionId,
) -> Result<Option<LeaseHolder>, ConnectorError> {
    let row: Option<(String, String, i64, i64)> = conn
        .exec_first(
            format!(
                "SELECT node, host, pid, expires_us FROM {} WHERE task = ? AND direction = ? AND pid <> 0",
                ferry_table("ferry_lease")
            ),
            (&dir.task, dir.direction()),
        )
        .await
        .map_err(ep.error(format!("reading the lease of {dir}")))?;
    Ok(row.map(|(node, host, pid, expires_us)| LeaseHolder {
        node,
        host,
        pid: u32::try_from(pid).unwrap_or(0),
        expires_us,
    }))
}
