//! The Doris [`Sink`]. A batch becomes one Stream Load per table, each under the label
//! of its range ([`super::label`]). Before anything is sent, the loads (with their
//! data) and the checkpoint the batch ends at are recorded in the state file; after
//! every load landed, the checkpoint is written and the record dropped. A restart finds
//! a batch still recorded and sends exactly it again, under the same labels, before
//! anything new: the server keeps a label's load once, so the batch lands once
//! whatever the engine's next batches look like.

use std::sync::Arc;
use std::time::Duration;

use super::load::{self, Origin};
use super::state::{State, Stored};
use super::stream_load::Http;
use super::{DorisEndpoint, ddl, label};
use crate::connector::{
    ApplyBatch, ApplyReport, Checkpoint, ConnectorError, DirectionId, HEARTBEAT_TABLE, LeaseHolder, LeaseOutcome,
    SIGNAL_TABLE, Sink,
};
use crate::model::TableSchema;

/// A Doris (or StarRocks) database rows are loaded into.
pub struct DorisSink {
    http: Http,
    state: State,
}

impl DorisSink {
    /// A sink of `ep`, its state file opened (created when missing).
    pub async fn open(ep: &DorisEndpoint) -> Result<Self, ConnectorError> {
        let http = Http::new(ep)?;
        let state = State::open(ep, true).await?.ok_or_else(|| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("the state file {} cannot be created", ep.state.display()),
            fix: "check that this user may write its folder".into(),
        })?;
        Ok(DorisSink { http, state })
    }

    fn fenced(&self, dir: &DirectionId, mine: Option<i64>, holder: Option<LeaseHolder>) -> ConnectorError {
        ConnectorError::Fenced {
            endpoint: self.http.ep().name.clone(),
            dir: dir.to_string(),
            mine: mine.unwrap_or(0),
            holder: holder.map(Box::new),
        }
    }
}

impl Sink for DorisSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        // The state file's tables were made when it was opened.
        Ok(())
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        let ep = self.http.ep();
        let mut mine = Vec::new();
        for t in tables {
            if t.name.name == HEARTBEAT_TABLE || t.name.name == SIGNAL_TABLE {
                continue;
            }
            if t.primary_key.is_empty() {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!(
                        "table {} has no primary key: a {} {} table needs one to replace and delete rows",
                        t.name,
                        ep.flavor.name(),
                        ep.flavor.model_name()
                    ),
                    fix: "add a primary key to the source table, or leave it out of the task's tables".into(),
                });
            }
            mine.push(t.as_ref());
        }
        match ep.query_port {
            Some(port) => ddl::ensure(ep, port, &mine).await,
            None => {
                tracing::info!(endpoint = %ep.name, model = ep.flavor.model_name(), "no ?query_port= in the url: ferry neither creates nor checks the tables, which must exist as tables of this model");
                Ok(())
            }
        }
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        let Some((mut stored, pending)) = self.state.checkpoint(dir).await? else {
            return Ok(None);
        };
        let recorded = self.state.recorded(dir).await?;
        if !recorded.is_empty() {
            tracing::info!(endpoint = %self.http.ep().name, task = %dir, loads = recorded.len(), "sending the batch in flight at the last stop again, under the same labels");
            let origin = Origin { position: None, in_parts: false };
            for r in &recorded {
                load::send(&self.http, r, &origin).await?;
            }
        }
        if let Some(p) = pending {
            // Every load of the recorded batch is in: its checkpoint holds.
            if let Err(holder) = self.state.commit(dir, None, &p).await? {
                return Err(self.fenced(dir, None, holder));
            }
            stored = p;
        }
        Ok(Some(self.state.checkpoint_of(dir, &stored)?))
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        let (loads, first, last) = load::build(self.http.ep().flavor, batch);
        let rows = batch.txns.iter().flat_map(|t| &t.changes).filter(|c| c.table.name.name != HEARTBEAT_TABLE).count()
            as u64
            + batch.snapshot.as_ref().map_or(0, |s| s.rows.len() as u64);
        let stored = Stored::of(&batch.checkpoint);
        if !loads.is_empty() {
            let labelled = loads
                .into_iter()
                .map(|l| {
                    let name = label(dir, &first, &last, &l.table);
                    (l.table, name, l.data)
                })
                .collect();
            let recorded = match self.state.record(dir, batch.fence, labelled, batch.commit.then_some(&stored)).await? {
                Ok(r) => r,
                Err(holder) => return Err(self.fenced(dir, batch.fence, holder)),
            };
            let origin = Origin { position: batch.txns.first().map(|t| &t.position), in_parts: !batch.commit };
            for r in &recorded {
                if let Err(e) = load::send(&self.http, r, &origin).await {
                    if matches!(e, ConnectorError::Apply(_)) {
                        // A refused load took no label: forget it and the checkpoint it
                        // was to reach, so a restart reads the batch again and names it.
                        self.state.forget(dir, &r.label).await?;
                    }
                    return Err(e);
                }
            }
        }
        if batch.commit
            && let Err(holder) = self.state.commit(dir, batch.fence, &stored).await?
        {
            return Err(self.fenced(dir, batch.fence, holder));
        }
        Ok(ApplyReport { rows, conflicts: 0 })
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        self.state.claim(dir, holder, ttl).await
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        // Loads of an open group are in already, and stay recorded until it commits.
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        self.state.release(dir, holder).await
    }
}
