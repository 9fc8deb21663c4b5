//! The exported snapshot a first copy reads through. A replication session creates a
//! temporary logical slot that exports its snapshot (`CREATE_REPLICATION_SLOT …
//! TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`), and a session of ferry's imports
//! it (`SET TRANSACTION SNAPSHOT`) in a read-only repeatable-read transaction: every
//! chunk read there is the database exactly as of the slot's consistent point, without
//! a lock or a watermark. Transactions that committed before that point are in the
//! rows; the others come through the direction's own slot, which the engine applies
//! from that point on (the chunk's position).
//!
//! The exporting session ends once the snapshot is imported (the importing transaction
//! keeps it), and its temporary slot with it. A crash loses the snapshot; progress is
//! checkpointed per chunk, so the next start exports a new one and the engine brings
//! the keys already copied forward through the stream to the new point.

use pgwire_replication::ReplicationClient;
use sqlx::postgres::PgConnection;

use super::position::Lsn;
use super::{PgEndpoint, names};
use crate::connector::{ConnectorError, ErrorKind};

/// A session holding an imported snapshot, and the stream position it is exact at.
pub struct Exported {
    /// The session, inside the read-only repeatable-read transaction of the snapshot.
    pub conn: PgConnection,
    /// The slot's consistent point: commits before it are in the snapshot.
    pub lsn: Lsn,
}

impl Exported {
    /// Exports a snapshot for the reader of `stream` and imports it into a new session.
    pub async fn open(ep: &PgEndpoint, stream: &str) -> Result<Exported, ConnectorError> {
        let slot = names::snapshot_slot(stream, std::process::id());
        let failed = |what: &str, e: pgwire_replication::PgWireError| {
            let kind = if e.is_auth() || e.is_tls() { ErrorKind::Setup } else { ErrorKind::Runtime };
            ConnectorError::Stream { endpoint: ep.name.clone(), what: what.to_string(), source: Box::new(e), kind }
        };
        // The publication is never used: this session never starts streaming.
        let cfg = ep.replication_config(slot.clone(), names::publication(stream));
        let mut client = ReplicationClient::connect_gated(cfg)
            .await
            .map_err(|e| failed("opening a replication session to export a snapshot", e))?;
        let made = client
            .simple_query(&format!("CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"))
            .await
            .map_err(|e| {
                failed(&format!("creating the temporary slot {slot} that exports the first copy's snapshot"), e)
            });
        let result = async {
            let row = made?.into_iter().next().unwrap_or_default();
            let text = |i: usize| row.get(i).and_then(|v| v.as_ref()).map(|b| String::from_utf8_lossy(b).into_owned());
            let (Some(point), Some(name)) = (text(1), text(2)) else {
                return Err(ConnectorError::Stream {
                    endpoint: ep.name.clone(),
                    what: format!("creating the temporary slot {slot}"),
                    source: "the server answered without a consistent point or snapshot name".into(),
                    kind: ErrorKind::Runtime,
                });
            };
            let lsn = Lsn::parse_text(&point).ok_or_else(|| ConnectorError::Stream {
                endpoint: ep.name.clone(),
                what: format!("creating the temporary slot {slot}"),
                source: format!("unreadable consistent point {point:?}").into(),
                kind: ErrorKind::Runtime,
            })?;
            let mut conn = ep.connect().await?;
            let sql = format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                super::string_literal(&name)
            );
            ep.exec(&mut conn, "importing the exported snapshot (SET TRANSACTION SNAPSHOT)", &sql).await?;
            Ok(Exported { conn, lsn })
        }
        .await;
        // Imported (or failed): the exporting session and its temporary slot can go
        // (dropping a session that never started streaming terminates it).
        drop(client);
        result
    }

    /// Ends the snapshot's transaction (it only read).
    pub async fn close(mut self, ep: &PgEndpoint) {
        if let Err(e) = ep.exec(&mut self.conn, "ending the snapshot's transaction", "COMMIT").await {
            tracing::debug!(endpoint = %ep.name, error = %e, "the snapshot's session ends with it");
        }
    }
}
