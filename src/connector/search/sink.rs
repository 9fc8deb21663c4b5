//! The search [`Sink`]: each table's changes become `_bulk` index and delete operations
//! on its index, the primary key's canonical text as document id, with an external
//! version from [`super::version`]. Several changes of one document in a batch go as
//! its last one. The checkpoint is written after every operation of the batch landed or
//! was found already newer; a crash in between replays from the older checkpoint, and
//! the versions make the replay change nothing that is newer: an exactly-once effect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

use super::bulk::{self, Op, Origin};
use super::http::{Body, Http, segment};
use super::version::{SEQ_LIMIT, version};
use super::{SearchEndpoint, index_of, invalid_index, mapping, state};
use crate::connector::{
    ApplyBatch, ApplyReport, Checkpoint, ConnectorError, DirectionId, HEARTBEAT_TABLE, LeaseHolder, LeaseOutcome,
    SIGNAL_TABLE, Sink,
};
use crate::model::{Op as ChangeOp, Position, TableName, TableSchema, key_text, now_micros};

/// Version epochs of a new task start at this many per day since 1970, so a task
/// copied anew (its checkpoint gone) writes above what an older copy left.
const EPOCHS_PER_DAY: u64 = 64;

/// A search cluster documents are written to.
pub struct SearchSink {
    http: Http,
    template: String,
    indexes: HashMap<TableName, String>,
    /// Version epoch and the counter at the last checkpoint.
    epoch: u64,
    seq: u64,
    /// The counter after the parts of an open source transaction.
    open: Option<u64>,
    /// The checkpoint's position, until the first transaction after it was compared
    /// with it (a reset stream starts a new epoch).
    at: Option<Position>,
    /// A new epoch started that the next checkpoint records; the refusal mark that
    /// caused it is cleared then.
    moved: bool,
}

impl SearchSink {
    /// A sink of `ep`; `template` names each table's index (`{db}_{table}`).
    pub fn open(ep: &SearchEndpoint, template: String) -> Result<Self, ConnectorError> {
        Ok(SearchSink {
            http: Http::new(ep)?,
            template,
            indexes: HashMap::new(),
            epoch: fresh_epoch(),
            seq: 0,
            open: None,
            at: None,
            moved: false,
        })
    }

    fn ep(&self) -> &SearchEndpoint {
        self.http.ep()
    }

    /// The index of a table, its name checked.
    fn index(&mut self, table: &TableName) -> Result<String, ConnectorError> {
        if let Some(i) = self.indexes.get(table) {
            return Ok(i.clone());
        }
        let name = index_of(&self.template, table);
        if let Some(why) = invalid_index(&name) {
            return Err(ConnectorError::Setup {
                endpoint: self.ep().name.clone(),
                problem: format!("table {table}: {why}"),
                fix: format!("change the task's index template {:?} or map the table to another name", self.template),
            });
        }
        self.indexes.insert(table.clone(), name.clone());
        Ok(name)
    }

    /// Creates a table's index from its schema, or checks the mapping of one that exists
    /// (adding the fields it lacks).
    async fn ensure_index(&mut self, table: &TableSchema) -> Result<(), ConnectorError> {
        let index = self.index(&table.name)?;
        if table.primary_key.is_empty() {
            return Err(ConnectorError::Setup {
                endpoint: self.ep().name.clone(),
                problem: format!("table {} has no primary key: its documents would have no id", table.name),
                fix: "add a primary key to the source table, or leave it out of the task's tables".into(),
            });
        }
        let strings = self.ep().strings;
        let http = &self.http;
        let path = format!("/{}", segment(&index));
        let (status, found) = http
            .send(Method::GET, &format!("{path}/_mapping"), None)
            .await
            .map_err(http.error(format!("reading the mapping of index {index}")))?;
        if status == StatusCode::NOT_FOUND {
            let body = json!({
                "settings": {"index": {"gc_deletes": self.ep().gc_deletes}},
                "mappings": mapping::mappings(table, strings),
            });
            tracing::info!(endpoint = %self.ep().name, index = %index, table = %table.name, "creating index");
            return match http.send(Method::PUT, &path, Some(Body::Json(body))).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("resource_already_exists_exception") => Ok(()),
                Err(e) => Err(http.error(format!("creating index {index}"))(e)),
            };
        }
        let existing =
            found.as_object().and_then(|m| m.values().next()).map(|v| v["mappings"].clone()).unwrap_or(Json::Null);
        let (missing, conflicts) = mapping::compare(&existing, table, strings);
        if let Some((field, want, have)) = conflicts.first() {
            let all: Vec<String> = conflicts.iter().map(|(f, w, h)| format!("{f}: {h} (ferry needs {w})")).collect();
            return Err(ConnectorError::Setup {
                endpoint: self.ep().name.clone(),
                problem: format!(
                    "index {index} maps field {field} as {have}, but column {field} of table {} needs {want}; conflicting fields: {}",
                    table.name,
                    all.join(", ")
                ),
                fix: format!(
                    "reindex {index} into an index mapped as docs/search.md lists, or point the task's index template at a new index (ferry creates it)"
                ),
            });
        }
        if !missing.is_empty() {
            let names: Vec<&String> = missing.keys().collect();
            tracing::info!(endpoint = %self.ep().name, index = %index, fields = ?names, "adding fields to the index's mapping");
            http.send(Method::PUT, &format!("{path}/_mapping"), Some(Body::Json(json!({"properties": missing}))))
                .await
                .map_err(http.error(format!("adding fields {names:?} to the mapping of index {index}")))?;
        }
        Ok(())
    }

    /// Stops unless this process still holds the lease under `fencing`.
    async fn fence(&self, dir: &DirectionId, fencing: i64) -> Result<(), ConnectorError> {
        match state::check(&self.http, dir, fencing).await? {
            Ok(()) => Ok(()),
            Err(holder) => Err(ConnectorError::Fenced {
                endpoint: self.ep().name.clone(),
                dir: dir.to_string(),
                mine: fencing,
                holder: holder.map(Box::new),
            }),
        }
    }

    /// Moves to a new epoch: its versions are above every older one.
    fn next_epoch(&mut self) {
        self.epoch = (self.epoch + 1).max(fresh_epoch());
        self.seq = 0;
        self.open = None;
        self.moved = true;
    }

    /// The batch's operations, one per document (its last change), and the counter after it.
    fn operations(&mut self, batch: &ApplyBatch) -> Result<(Vec<Op>, u64, u64), ConnectorError> {
        let mut seq = self.open.unwrap_or(self.seq);
        let mut ops: Vec<Op> = Vec::new();
        let mut slot: HashMap<(String, String), usize> = HashMap::new();
        let mut rows = 0u64;
        let mut put = |op: Op, ops: &mut Vec<Op>| match slot.get(&(op.index.clone(), op.id.clone())) {
            Some(&i) => ops[i] = op,
            None => {
                slot.insert((op.index.clone(), op.id.clone()), ops.len());
                ops.push(op);
            }
        };
        for txn in &batch.txns {
            for c in &txn.changes {
                if c.table.name.name == HEARTBEAT_TABLE || c.table.name.name == SIGNAL_TABLE {
                    continue;
                }
                seq += 1;
                let v = version(self.epoch, seq, false);
                let index = self.index(&c.table.name)?;
                let origin = |key: &[crate::model::Value]| Origin {
                    position: txn.position.clone(),
                    table: c.table.name.clone(),
                    key: key_text(key),
                    in_parts: !batch.commit,
                };
                let new_key = c.new_key();
                if c.op == ChangeOp::Delete || (c.op == ChangeOp::Update && new_key != c.key) {
                    let id = super::document::id_of(&c.key);
                    put(Op { index: index.clone(), id, version: v, doc: None, origin: origin(&c.key) }, &mut ops);
                }
                if let Some(after) = &c.after {
                    let id = super::document::id_of(&new_key);
                    let doc = Some(super::document::source(&c.table, after));
                    put(Op { index, id, version: v, doc, origin: origin(&new_key) }, &mut ops);
                }
                rows += 1;
            }
        }
        if let Some(s) = &batch.snapshot {
            let index = self.index(&s.table.name)?;
            let v = version(self.epoch, seq, true);
            let position =
                batch.checkpoint.position.clone().unwrap_or_else(|| Position::new(String::new(), Vec::new(), None));
            for row in &s.rows {
                let key = s.table.key_of(row);
                let origin = Origin {
                    position: position.clone(),
                    table: s.table.name.clone(),
                    key: key_text(&key),
                    in_parts: false,
                };
                let doc = Some(super::document::source(&s.table, row));
                put(Op { index: index.clone(), id: super::document::id_of(&key), version: v, doc, origin }, &mut ops);
                rows += 1;
            }
        }
        Ok((ops, seq, rows))
    }
}

/// The first epoch of a task with no checkpoint: [`EPOCHS_PER_DAY`] per day since 1970.
fn fresh_epoch() -> u64 {
    u64::try_from(now_micros() / 86_400_000_000).unwrap_or(0) * EPOCHS_PER_DAY
}

impl Sink for SearchSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        state::ensure_index(&self.http).await
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        for t in tables {
            if t.name.name == HEARTBEAT_TABLE || t.name.name == SIGNAL_TABLE {
                continue;
            }
            self.ensure_index(t).await?;
        }
        Ok(())
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        self.open = None;
        self.moved = false;
        let stored = state::read_stored(&self.http, dir).await?;
        let Some(stored) = stored else {
            self.epoch = fresh_epoch();
            self.seq = 0;
            self.at = None;
            return Ok(None);
        };
        let cp = state::checkpoint_of(&self.http, dir, &stored)?;
        self.epoch = stored.epoch;
        self.seq = stored.seq;
        self.at = cp.position.clone();
        if state::refused(&self.http, dir).await? || self.seq >= SEQ_LIMIT / 2 {
            self.next_epoch();
            tracing::info!(endpoint = %self.ep().name, task = %dir, epoch = self.epoch, "starting a new version epoch (the last run stopped on a refused document, or the epoch is full)");
        }
        Ok(Some(cp))
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        if let Some(f) = batch.fence {
            self.fence(dir, f).await?;
        }
        if let Some(first) = batch.txns.first()
            && let Some(at) = self.at.take()
            && !matches!(first.position.stream_cmp(&at), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
        {
            tracing::info!(endpoint = %self.ep().name, task = %dir, checkpoint = %at, first = %first.position, "the source's positions start over; starting a new version epoch");
            self.next_epoch();
        }
        let (ops, seq, rows) = self.operations(batch)?;
        if let Err(e) = bulk::send_all(&self.http, &ops).await {
            if matches!(e, ConnectorError::Apply(_)) {
                // The refused change may be skipped: the next start numbers anew.
                state::mark_refused(&self.http, dir, true).await?;
            }
            return Err(e);
        }
        if !batch.commit {
            self.open = Some(seq);
            return Ok(ApplyReport { rows, conflicts: 0 });
        }
        if let Some(f) = batch.fence {
            self.fence(dir, f).await?;
        }
        let stored = state::Stored {
            position: batch.checkpoint.position.as_ref().map(ToString::to_string),
            tables: batch.checkpoint.tables.clone(),
            fencing: batch.fence,
            epoch: self.epoch,
            seq,
        };
        state::write_stored(&self.http, dir, &stored).await?;
        self.seq = seq;
        self.open = None;
        if self.moved {
            state::mark_refused(&self.http, dir, false).await?;
            self.moved = false;
        }
        Ok(ApplyReport { rows, conflicts: 0 })
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        state::claim(&self.http, dir, holder, ttl).await
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        // Documents of an open group are in already; applied again, they number the same.
        self.open = None;
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        state::release(&self.http, dir, holder).await
    }
}
