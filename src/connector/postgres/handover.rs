//! A direction's replication slot is shared by every cluster node that may own the
//! direction (it is named after the task and direction, not the node). Two things
//! follow from that:
//! - taking over: the new owner may find the slot still held by the old owner's
//!   walsender (a killed node's, or one cut off, lingers until TCP notices). Holding the
//!   lease (its writes fenced on the target), it ends that session and reads on from
//!   the target's checkpoint.
//! - carrying over: releases before named the slot after the node as well
//!   (`{node}/{task}/{direction}`). A node that finds no shared slot but its own old
//!   one copies it (`pg_copy_logical_replication_slot` keeps its confirmed position, so
//!   no change is lost) and drops the old one. The copy goes on decoding with the old
//!   slot's publication: pgoutput looks publications up as the catalog was at each
//!   change, and one created later would not be found. `ferry.ferry_slot` records it.

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::names::{self, SLOT_TABLE};
use super::{PgEndpoint, ferry_table};
use crate::connector::ConnectorError;

/// Whether the replication slot `slot` exists.
async fn exists(ep: &PgEndpoint, conn: &mut PgConnection, slot: &str) -> Result<bool, ConnectorError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)")
        .bind(slot)
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.error(format!("looking up replication slot {slot}")))
}

/// The publication the slot of `stream` decodes with: the one recorded with the slot
/// (a slot carried over keeps its old one), else the one named after `stream`.
pub async fn publication_of(ep: &PgEndpoint, conn: &mut PgConnection, stream: &str) -> Result<String, ConnectorError> {
    let slot = names::slot(stream);
    let sql = format!("SELECT publication FROM {} WHERE slot = $1", ferry_table(SLOT_TABLE));
    let recorded: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(ep.error(format!("reading the publication of replication slot {slot} (ferry.ferry_slot)")))?;
    Ok(recorded.flatten().unwrap_or_else(|| names::publication(stream)))
}

/// Ends the session holding the slot `slot` (a previous owner's walsender). Only for
/// the direction's own slot, only by the holder of its lease.
pub async fn end_session(ep: &PgEndpoint, conn: &mut PgConnection, slot: &str) -> Result<(), ConnectorError> {
    let ended = sqlx::query(
        "SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_replication_slots \
         WHERE slot_name = $1 AND active_pid IS NOT NULL AND active_pid <> pg_backend_pid()",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| match super::sqlstate(&e).as_deref() {
        Some("42501") => ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("cannot end the previous owner's session on replication slot {slot}: {e}"),
            fix: format!(
                "let the account end other sessions (GRANT pg_signal_backend TO {}), or end it by hand: SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}'",
                super::ident(&ep.user)
            ),
        },
        _ => ep.error(format!("ending the previous owner's session on replication slot {slot}"))(e),
    })?;
    if let Some(r) = ended {
        let pid: i32 = r.get(0);
        let done: bool = r.get(1);
        tracing::warn!(endpoint = %ep.name, slot, pid, ended = done, "took the direction's replication slot over: ended the session a previous owner left on it (this node holds the lease)");
    }
    Ok(())
}

/// Carries this node's slot of an older release (named after `former`) over to the
/// shared slot of `stream`, when the shared one does not exist yet; drops the old one
/// once the shared one exists (unless a session still holds it). `takeover`: a session
/// left on an old slot still to be carried over may be ended.
pub async fn carry_over(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    stream: &str,
    former: &str,
    takeover: bool,
) -> Result<(), ConnectorError> {
    let (slot, old) = (names::slot(stream), names::slot(former));
    if !exists(ep, conn, &old).await? {
        return Ok(());
    }
    let table = ferry_table(SLOT_TABLE);
    if exists(ep, conn, &slot).await? {
        // Nothing is read from the old slot any more, whatever its state (even lost):
        // dropped unless a session still holds it (then at a later start).
        let busy: Option<i32> = sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&old)
            .fetch_optional(&mut *conn)
            .await
            .map_err(ep.error(format!("looking up replication slot {old}")))?
            .flatten();
        if let Some(pid) = busy {
            tracing::info!(endpoint = %ep.name, slot = %old, pid, "this node's replication slot of an older release is still in use; it is dropped at a later start");
            return Ok(());
        }
    } else {
        // Its changes are carried over: it must be whole (not lost) and free.
        super::source::slot_free(ep, conn, former, takeover).await?;
        // Recorded first: a copy interrupted before its record would decode with a
        // publication that did not exist at its position.
        let sql = format!(
            "INSERT INTO {table} (slot, created_lsn, created_us, publication) \
             SELECT $1, coalesce((SELECT created_lsn FROM {table} WHERE slot = $2), '0/0'::pg_lsn), \
                    (extract(epoch from now()) * 1000000)::bigint, $3 \
             ON CONFLICT (slot) DO UPDATE SET created_lsn = excluded.created_lsn, created_us = excluded.created_us, \
                    publication = excluded.publication"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&slot)
            .bind(&old)
            .bind(names::publication(former))
            .execute(&mut *conn)
            .await
            .map_err(ep.error(format!("recording replication slot {slot} (ferry.ferry_slot)")))?;
        sqlx::query("SELECT pg_copy_logical_replication_slot($1, $2)")
            .bind(&old)
            .bind(&slot)
            .execute(&mut *conn)
            .await
            .map_err(ep.error(format!("copying replication slot {old} to {slot}")))?;
        tracing::info!(endpoint = %ep.name, from = %old, to = %slot, "carried this node's replication slot of an older release over to the direction's slot shared by the cluster's nodes (same confirmed position: no change lost)");
    }
    let sql = format!("DELETE FROM {table} WHERE slot = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&old)
        .execute(&mut *conn)
        .await
        .map_err(ep.error(format!("forgetting replication slot {old} (ferry.ferry_slot)")))?;
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&old)
        .execute(&mut *conn)
        .await
        .map_err(ep.error(format!("dropping replication slot {old}, replaced by {slot}")))?;
    tracing::info!(endpoint = %ep.name, slot = %old, shared = %slot, "dropped this node's replication slot of an older release (the direction reads the shared one)");
    Ok(())
}
