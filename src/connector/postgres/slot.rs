//! The health of a direction's replication slot: the WAL it keeps on the source (from
//! its `restart_lsn`, and from its `confirmed_flush_lsn`, to the server's current WAL
//! end), whether the server is about to discard it (`wal_status = 'unreserved'`), and a
//! slot the server invalidated (`wal_status = 'lost'`, past `max_slot_wal_keep_size`):
//! the changes since the target's checkpoint are gone for this direction, so it stops
//! with how to start over instead of silently missing them.

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::{PgEndpoint, string_literal};
use crate::connector::{ConnectorError, Retention};

/// What the server says of a slot.
pub struct SlotState {
    /// `reserved`, `extended`, `unreserved` or `lost` (NULL before first use).
    pub wal_status: Option<String>,
    /// The retention, when the slot still holds WAL.
    pub retention: Option<Retention>,
    /// `max_slot_wal_keep_size`, as the server prints it.
    pub keep_size: String,
}

/// Reads a slot's state; `None` when it does not exist.
pub async fn state(ep: &PgEndpoint, conn: &mut PgConnection, slot: &str) -> Result<Option<SlotState>, ConnectorError> {
    let row = sqlx::query(
        "SELECT wal_status, (pg_current_wal_lsn() - restart_lsn)::bigint, \
         (pg_current_wal_lsn() - coalesce(confirmed_flush_lsn, restart_lsn))::bigint, \
         current_setting('max_slot_wal_keep_size') FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ep.error("reading the direction's replication slot (pg_replication_slots)"))?;
    Ok(row.map(|r| {
        let wal_status: Option<String> = r.get(0);
        let (kept, unconfirmed): (Option<i64>, Option<i64>) = (r.get(1), r.get(2));
        let bytes = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
        SlotState {
            retention: kept.map(|k| Retention {
                bytes: bytes(Some(k)),
                unconfirmed_bytes: bytes(unconfirmed),
                at_risk: wal_status.as_deref() == Some("unreserved"),
            }),
            wal_status,
            keep_size: r.get(3),
        }
    }))
}

/// The WAL the direction's slot keeps; a lost slot is the setup error of [`lost`].
pub async fn retention(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    stream: &str,
) -> Result<Option<Retention>, ConnectorError> {
    let slot = super::names::slot(stream);
    match state(ep, conn, &slot).await? {
        Some(s) if s.wal_status.as_deref() == Some("lost") => Err(lost(ep, stream, &s.keep_size)),
        Some(s) => Ok(s.retention),
        None => Ok(None),
    }
}

/// The error of a slot the server invalidated: what is lost and how to start over.
pub fn lost(ep: &PgEndpoint, stream: &str, keep_size: &str) -> ConnectorError {
    let slot = super::names::slot(stream);
    // The stream is task/direction (node/task/direction in older releases).
    let mut parts = stream.rsplitn(3, '/');
    let (direction, task) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "replication slot {slot} of task {task} {direction} was invalidated by the server (wal_status = lost): it kept more WAL than max_slot_wal_keep_size = {keep_size} allows, and the server removed it, so the changes made on this source since the target's checkpoint are lost for this direction"
        ),
        fix: format!(
            "start the direction over with a new copy of the tables: drop the slot on this server (SELECT pg_drop_replication_slot({})), delete the direction's checkpoint on the target (its ferry_checkpoint rows of task {task:?}, direction {direction:?}), and run the task again (rows already on the target are overwritten); to keep it from happening again, raise max_slot_wal_keep_size or keep ferry running (ferry status and /metrics show the WAL each slot keeps)",
            string_literal(&slot)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SiteId;

    #[test]
    fn a_lost_slot_names_the_direction_and_the_way_back() {
        let ep = PgEndpoint::new("a", SiteId::new("a"), "postgres://u@h:5432/d").expect("url");
        let text = lost(&ep, "node-1/shop/a->b", "1MB").to_string();
        assert!(text.contains("task shop a->b") && text.contains("max_slot_wal_keep_size = 1MB"), "{text}");
        assert!(text.contains("pg_drop_replication_slot('ferry_s_") && text.contains("direction \"a->b\""), "{text}");
    }
}
