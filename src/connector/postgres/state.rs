//! ferry's state rows in a PostgreSQL target (`ferry` schema): the checkpoint (stream
//! position and per-table snapshot progress, written inside the apply transaction) and
//! the lease of each task direction. Same rows and semantics as the other stores': with
//! `workers` > 1 one stream slot per worker (`stream:W`), resumed from the lowest.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};

use super::names::{CHECKPOINT_TABLE, LEASE_TABLE};
use super::{PgEndpoint, ferry_table};
use crate::connector::parallel::slots::{StreamSlots, read_slots, stream_slot};
use crate::connector::{Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use crate::model::{Position, now_micros};

/// Reads a direction's checkpoint (`None` before its first batch, or before ferry's
/// tables exist).
pub async fn load_checkpoint(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    dir: &DirectionId,
) -> Result<Option<Checkpoint>, ConnectorError> {
    Ok(load_checkpoint_slots(ep, conn, dir).await?.map(|(cp, _)| cp))
}

/// Reads a direction's checkpoint and its stream slots (one per worker; see
/// [`crate::connector::parallel::slots`]): the stream resumes from the lowest, and the
/// transactions past it a worker already committed come back in [`StreamSlots::applied`].
pub async fn load_checkpoint_slots(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    dir: &DirectionId,
) -> Result<Option<(Checkpoint, StreamSlots)>, ConnectorError> {
    let sql = format!(
        "SELECT slot, position, progress FROM {} WHERE task = $1 AND direction = $2",
        ferry_table(CHECKPOINT_TABLE)
    );
    let rows =
        match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&dir.task).bind(dir.direction()).fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(e) if super::sqlstate(&e).as_deref() == Some("42P01") => return Ok(None),
            Err(e) => return Err(ep.error(format!("reading the checkpoint of {dir}"))(e)),
        };
    if rows.is_empty() {
        return Ok(None);
    }
    let corrupt = |slot: &str, e: String| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("the checkpoint of {dir} (slot {slot}) in ferry.ferry_checkpoint cannot be read: {e}"),
        fix: format!(
            "restore the row, or delete the task's rows (DELETE FROM ferry.ferry_checkpoint WHERE task = '{}') to start over with a snapshot",
            dir.task
        ),
    };
    let rows: Vec<(String, Option<String>, Option<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let parse = |p: &str| crate::connector::registry::parse_position(p).map_err(|e| e.to_string());
    read_slots(rows, parse, corrupt).map(Some)
}

/// A source transaction's identity in the stream: its commit's end LSN as text (a part
/// of a big transaction, `LSN#N`, is never a whole one a worker committed).
pub fn stream_key(p: &Position) -> String {
    p.to_string()
}

/// Writes checkpoint rows in the open transaction: the given stream slots (worker index
/// and `progress` text, see [`crate::connector::parallel::slots::slot_progress`]) at the
/// checkpoint's position, and, if `tables`, the table slots that changed since the last
/// write noted in `written` (noted there at once: a failed transaction clears it).
pub async fn write_checkpoint(
    conn: &mut PgConnection,
    dir: &DirectionId,
    cp: &Checkpoint,
    written: &mut HashMap<String, String>,
    streams: &[(usize, Option<String>)],
    tables: bool,
) -> Result<(), sqlx::Error> {
    let direction = dir.direction();
    let mut slots: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for (w, progress) in streams {
        slots.push((stream_slot(*w), cp.position.as_ref().map(ToString::to_string), progress.clone()));
    }
    for (table, prog) in cp.tables.iter().filter(|_| tables) {
        let text = serde_json::to_string(prog).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        slots.push((format!("table:{table}"), None, Some(text)));
    }
    let (mut names, mut positions, mut progresses) = (Vec::new(), Vec::new(), Vec::new());
    for (slot, position, progress) in slots {
        let stream = slot.starts_with("stream:");
        let fingerprint = format!("{position:?}{progress:?}");
        let key = format!("{}/{direction}/{slot}", dir.task);
        if !stream && written.get(&key) == Some(&fingerprint) {
            continue;
        }
        if !stream {
            written.insert(key, fingerprint);
        }
        names.push(slot);
        positions.push(position);
        progresses.push(progress);
    }
    let sql = format!(
        "INSERT INTO {} (task, direction, slot, position, progress, updated_us) \
         SELECT $1, $2, s, p, g, $6 FROM unnest($3::text[], $4::text[], $5::text[]) AS u(s, p, g) \
         ON CONFLICT (task, direction, slot) DO UPDATE SET position = excluded.position, progress = excluded.progress, updated_us = excluded.updated_us",
        ferry_table(CHECKPOINT_TABLE)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&dir.task)
        .bind(&direction)
        .bind(names)
        .bind(positions)
        .bind(progresses)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes stream slots of workers `count` and beyond (left by a run with more workers),
/// in the open transaction that writes slots 0..count.
pub async fn drop_stream_slots_from(
    conn: &mut PgConnection,
    dir: &DirectionId,
    count: usize,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "DELETE FROM {} WHERE task = $1 AND direction = $2 \
         AND CASE WHEN slot ~ '^stream:[0-9]+$' THEN substr(slot, 8)::bigint >= $3 ELSE false END",
        ferry_table(CHECKPOINT_TABLE)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A lease row as read, with whether it ran out by the server's clock (column 5).
fn holder_of(r: &PgRow) -> LeaseHolder {
    LeaseHolder {
        node: r.get(0),
        host: r.get(1),
        pid: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        expires_us: r.get(3),
        fencing: r.get(4),
        expired: r.get(5),
        floor: 0,
    }
}

const LEASE_COLUMNS: &str =
    "node, host, pid, expires_us, fencing, expires_us < (extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// How long a lease transaction waits for a lock (the advisory lock of the direction's
/// takers, the lease row) before it gives up and is tried again: a session of a
/// superseded holder that was not ended (or not yet gone) never holds it back for long.
const LEASE_LOCK_TIMEOUT: &str = "2s";

/// Takes or renews a lease in its own transaction on `conn` (never the apply session):
/// a live holder keeps it; a new holder gets the next fencing token; a renewal keeps
/// its token unless another process took the lease over. Times are the server's.
/// Taking over from a holder whose lease ran out (or that a newer cluster lease
/// supersedes) first ends that holder's sessions on this server ([`end_sessions`]):
/// an open apply transaction of a paused or cut-off process rolls back at once
/// instead of holding the new tenure back until the server drops its connection.
pub async fn take_lease(
    conn: &mut PgConnection,
    dir: &DirectionId,
    me: &LeaseHolder,
    ttl: Duration,
) -> Result<LeaseOutcome, sqlx::Error> {
    use sqlx::Connection;
    let seen = {
        let sql =
            format!("SELECT {LEASE_COLUMNS} FROM {} WHERE task = $1 AND direction = $2", ferry_table(LEASE_TABLE));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&dir.task)
            .bind(dir.direction())
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(holder_of)
    };
    if let Some(h) = &seen
        && me.fencing == 0
        && h.pid != 0
        && !(h.host == me.host && h.pid == me.pid)
        && (h.expired || (h.host == me.host && !crate::connector::host::pid_alive(h.pid)) || me.supersedes(h))
    {
        match end_sessions(conn, dir, h.fencing).await {
            Ok(0) => {}
            Ok(ended) => {
                tracing::warn!(direction = %dir, holder = %h, sessions = ended, "ended the sessions of the lease's previous holder (its tenure is over) before taking it over");
            }
            // Without the right to end them (pg_signal_backend), the lock timeout below
            // still keeps this process from waiting on them for long.
            Err(e) => {
                tracing::warn!(direction = %dir, holder = %h, error = %e, "could not end the sessions of the lease's previous holder")
            }
        }
    }
    let mut tx = conn.begin().await?;
    // Named for this transaction only: a process taking over while this one hangs in it
    // (paused mid-renewal, or mid-takeover of the tenure `seen`) ends it.
    let under = if me.fencing != 0 { me.fencing } else { seen.as_ref().map_or(0, |h| h.fencing) };
    sqlx::query("SELECT set_config('lock_timeout', $1, true), set_config('application_name', $2, true)")
        .bind(LEASE_LOCK_TIMEOUT)
        .bind(session_name(dir, under))
        .execute(&mut *tx)
        .await?;
    // Serialises takers of this direction even before its row exists.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("ferry_lease/{}/{}", dir.task, dir.direction()))
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        // FOR NO KEY UPDATE does not wait for the holder's open apply transaction (it
        // keeps the row FOR KEY SHARE while a big source transaction is applied in
        // parts): a renewal must not wait for the group it belongs to.
        "SELECT {LEASE_COLUMNS} FROM {} WHERE task = $1 AND direction = $2 FOR NO KEY UPDATE",
        ferry_table(LEASE_TABLE)
    );
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&dir.task).bind(dir.direction()).fetch_optional(&mut *tx).await?;
    let current = row.as_ref().map(holder_of);
    let fencing = match me.claim(current.as_ref()) {
        Ok(f) => f,
        Err(h) => return Ok(LeaseOutcome::HeldBy(h)),
    };
    if current.is_some() && me.fencing == 0 {
        // A takeover waits for any apply transaction still open under the old
        // token (FOR UPDATE conflicts with its FOR KEY SHARE): that batch commits
        // first or not at all, never after the new tenure starts.
        let lock = format!("SELECT 1 FROM {} WHERE task = $1 AND direction = $2 FOR UPDATE", ferry_table(LEASE_TABLE));
        sqlx::query(sqlx::AssertSqlSafe(lock)).bind(&dir.task).bind(dir.direction()).execute(&mut *tx).await?;
    }
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 4);
    let sql = format!(
        "INSERT INTO {} (task, direction, node, host, pid, expires_us, fencing) \
         VALUES ($1, $2, $3, $4, $5, (extract(epoch from clock_timestamp()) * 1000000)::bigint + $6, $7) \
         ON CONFLICT (task, direction) DO UPDATE SET node = excluded.node, host = excluded.host, pid = excluded.pid, \
         expires_us = excluded.expires_us, fencing = excluded.fencing",
        ferry_table(LEASE_TABLE)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(&me.node)
        .bind(&me.host)
        .bind(i64::from(me.pid))
        .bind(ttl_us)
        .bind(fencing)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(LeaseOutcome::Acquired { fencing })
}

/// Gives our lease back if it is still our tenure: the row becomes nobody's (pid 0) and
/// keeps its fencing token for the next holder to go past.
pub async fn drop_lease(conn: &mut PgConnection, dir: &DirectionId, me: &LeaseHolder) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET node = '', host = '', pid = 0, expires_us = 0 \
         WHERE task = $1 AND direction = $2 AND fencing = $3 AND host = $4 AND pid = $5",
        ferry_table(LEASE_TABLE)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(me.fencing)
        .bind(&me.host)
        .bind(i64::from(me.pid))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inside the apply transaction: locks the lease row FOR KEY SHARE (a takeover's FOR
/// UPDATE waits for this commit; a renewal's FOR NO KEY UPDATE does not)
/// and says whether it still carries `fence`; the lease's row otherwise. The session is
/// named for the direction and `fence` ([`session_name`]) in the same statement, so a
/// process taking the lease over finds it and can end it ([`end_sessions`]).
pub async fn check_fence(
    conn: &mut PgConnection,
    dir: &DirectionId,
    fence: i64,
) -> Result<Option<LeaseHolder>, sqlx::Error> {
    let sql = format!(
        "SELECT {LEASE_COLUMNS}, set_config('application_name', $3, false) FROM {} \
         WHERE task = $1 AND direction = $2 FOR KEY SHARE",
        ferry_table(LEASE_TABLE)
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(session_name(dir, fence))
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
pub async fn lease_holder(conn: &mut PgConnection, dir: &DirectionId) -> Result<Option<LeaseHolder>, sqlx::Error> {
    let sql = format!(
        "SELECT {LEASE_COLUMNS} FROM {} WHERE task = $1 AND direction = $2 AND pid <> 0",
        ferry_table(LEASE_TABLE)
    );
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&dir.task).bind(dir.direction()).fetch_optional(&mut *conn).await?;
    Ok(row.as_ref().map(holder_of))
}

/// The `application_name` of a session working for `dir` under fencing token `fence`:
/// `ferry/<hash of task and direction>/<fence>` (within PostgreSQL's 63 bytes).
pub fn session_name(dir: &DirectionId, fence: i64) -> String {
    format!("{}{fence}", session_prefix(dir))
}

/// `ferry/<hash>/`: a hash of task and direction, the same for every node.
fn session_prefix(dir: &DirectionId) -> String {
    format!("ferry/{:016x}/", crate::connector::own_names::direction_hash(dir))
}

/// Ends (`pg_terminate_backend`) the sessions of this database named for `dir` under a
/// fencing token up to `fence` (a superseded tenure's), never this one nor another
/// direction's; returns how many. Their open transactions roll back, their locks go.
pub async fn end_sessions(conn: &mut PgConnection, dir: &DirectionId, fence: i64) -> Result<usize, sqlx::Error> {
    // The CASE keeps the cast from names of another shape (evaluation order of AND is free).
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND datname = current_database() \
         AND CASE WHEN application_name ~ $1 THEN split_part(application_name, '/', 3)::bigint <= $2 ELSE false END",
    )
    .bind(format!("^{}[0-9]{{1,18}}$", session_prefix(dir)))
    .bind(fence)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ended.into_iter().filter(|e| *e).count())
}
