//! The [`Sink`] contract on a MySQL/MariaDB target ([`MysqlSink`]): batches of whole
//! source transactions applied in ONE target transaction together with the checkpoint
//! (nothing lost, nothing doubled); schema changes first, each on its own; two-way
//! batches judged first (`conflict.rs`), one-way batches spread over several sessions
//! where they allow it (`parallel.rs`), large snapshot chunks too. The writing itself
//! is `apply.rs`.

use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use super::apply::{Failure, MysqlSink, refusal};
use super::conflict::retry_at_once;
use super::load::{self, copy_on};
use super::schema::{self, create_sql_columns, create_table_sql, parents_of, qualified, retarget_create_sql};
use super::state::{self, StreamState, stream_key};
use super::values::ColumnKind;
use super::{deferred, ident, migrate, versions};
use crate::connector::{
    ApplyBatch, ApplyFailure, ApplyReport, Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, Sink,
    SnapshotRows, TableProgress,
};
use crate::model::{Row, SchemaChangeKind, TableName, TableSchema, Txn, key_text};

/// Whether a table ferry creates may wait for its plain secondary keys: not when it has
/// foreign keys or a table of the task references it (by its name, in any database: a
/// map may rename the database), since a foreign key needs its index from the start.
fn deferrable(t: &TableSchema, tables: &[Arc<TableSchema>]) -> bool {
    t.foreign_keys.is_empty()
        && !t.create_sql.as_deref().is_some_and(|sql| sql.contains("FOREIGN KEY"))
        && !tables.iter().flat_map(|o| &o.foreign_keys).any(|fk| fk.parent.name == t.name.name)
}

/// Server errors that mean a replayed schema change is already in place: table exists,
/// duplicate column, duplicate key name, cannot drop (already gone), duplicate foreign key.
const ALREADY_DONE: [u16; 5] = [1050, 1060, 1061, 1091, 1826];

/// Rows per session below which a snapshot chunk is not spread.
const SPREAD_MIN_ROWS: usize = 5_000;

impl Sink for MysqlSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        migrate::run(&self.ep, &mut self.conn).await
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        let mut pending = deferred::load(&self.ep, &mut self.conn).await?;
        for t in tables {
            let name = self.resolve(&t.name)?;
            match schema::describe_loose(&self.ep, &mut self.conn, &name).await? {
                Some(existing) => {
                    let want: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                    let have: Vec<&str> = existing.columns.iter().map(|c| c.name.as_str()).collect();
                    if want != have && t.create_sql.is_some() {
                        // A MySQL source's schema changes travel in its binlog: after a
                        // restart the source may already show one that the stream has not
                        // brought here yet. Rows written before it still fit; a real
                        // mismatch fails at the first row, naming it.
                        warn!(
                            endpoint = %self.ep.name,
                            "table {name} has columns {have:?} here but {want:?} on the source; going on, expecting a schema change from the stream to bring them in line"
                        );
                    } else if want != have {
                        return Err(ConnectorError::Setup {
                            endpoint: self.ep.name.clone(),
                            problem: format!("table {name} has columns {have:?} here but {want:?} on the source"),
                            fix: format!(
                                "make {} have the source's columns (same names, same order: ALTER TABLE … ADD/MODIFY … AFTER …), drop it so ferry creates it, or map the columns with [[task.map]]",
                                qualified(&name)
                            ),
                        });
                    }
                    let want_pk: Vec<&str> = t.key_columns();
                    let have_pk: Vec<&str> = existing.key_columns();
                    if want_pk != have_pk {
                        return Err(ConnectorError::Setup {
                            endpoint: self.ep.name.clone(),
                            problem: format!(
                                "table {name} has primary key {have_pk:?} here but {want_pk:?} on the source"
                            ),
                            fix: format!(
                                "give {} the source's primary key: ALTER TABLE {} DROP PRIMARY KEY, ADD PRIMARY KEY ({})",
                                name,
                                qualified(&name),
                                want_pk.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                    self.constraints.insert(name.clone(), Arc::new(existing));
                    // Created by ferry before a restart: its deferred keys still wait.
                    let waiting: Vec<_> = pending.extract_if(.., |(n, _)| *n == name).map(|(_, ix)| ix).collect();
                    if !waiting.is_empty() {
                        let names: Vec<&str> = waiting.iter().map(|ix| ix.name.as_str()).collect();
                        info!(endpoint = %self.ep.name, table = %name, indexes = ?names, "indexes deferred by an earlier run are built once the table's copy is done");
                        self.deferred.insert(name.clone(), waiting);
                    }
                }
                None => {
                    self.create_table(t, &name, deferrable(t, tables)).await?;
                    self.note_constraints(&name).await?;
                }
            }
        }
        self.parents = parents_of(self.constraints.values());
        if self.two_way.is_some() {
            // The triggers name the target's own columns (a schema change may still be
            // on its way from the source).
            let mut resolved = Vec::with_capacity(tables.len());
            for t in tables {
                let name = self.resolve(&t.name)?;
                if let Some(own) = schema::describe_loose(&self.ep, &mut self.conn, &name).await? {
                    resolved.push(Arc::new(own));
                }
            }
            let site = self.ep.site.clone();
            versions::install(&self.ep, &mut self.conn, &resolved, &site, true).await?;
        }
        Ok(())
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        let loaded = state::load_checkpoint_slots(&self.ep, &mut self.conn, dir).await?;
        let (cp, slots) = loaded.map(|(cp, s)| (Some(cp), s)).unwrap_or_default();
        self.stream = StreamState::loaded(slots, stream_key);
        if !self.stream.nothing_applied() {
            tracing::info!(endpoint = %self.ep.name, direction = %dir, transactions = self.stream.applied_count(), "a worker had committed transactions past the lowest stream slot; they are not applied again");
        }
        Ok(cp)
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        let report = self.apply_batch(dir, batch).await?;
        if batch.commit && !self.deferred.is_empty() {
            self.build_due(dir, batch).await?;
        }
        Ok(report)
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        self.holder = Some((holder.clone(), ttl));
        let reused = self.lease_conn.is_some();
        let mut conn = self.lease_session().await?;
        let mut result = state::take_lease(&self.ep, &mut conn, dir, holder, ttl).await;
        if result.is_err() && reused {
            // The session may have been ended meanwhile (idle timeout, or a process that
            // took the lease over ended it): once more on a new one.
            conn = self.ep.connect().await?;
            result = state::take_lease(&self.ep, &mut conn, dir, holder, ttl).await;
        }
        if let Ok(LeaseOutcome::Acquired { fencing }) = &result
            && self.tenure.as_ref().is_none_or(|(d, f)| d != dir || f != fencing)
        {
            // A new tenure: its sessions carry the holder's marks, so a process taking
            // the lease over after it ran out can end them.
            let what = format!("marking the sessions of {dir}");
            state::mark_session(&mut conn, dir, "lease").await.map_err(self.ep.error(what.clone()))?;
            state::mark_session(&mut self.conn, dir, "0").await.map_err(self.ep.error(what.clone()))?;
            for (w, helper) in self.helpers.iter_mut().enumerate() {
                state::mark_session(helper, dir, &(w + 1).to_string()).await.map_err(self.ep.error(what.clone()))?;
            }
            self.tenure = Some((dir.clone(), *fencing));
        }
        // A session that failed is opened anew next time.
        if result.is_ok() {
            self.lease_conn = Some(conn);
        }
        result
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        if std::mem::take(&mut self.open_group) {
            self.ep.exec(&mut self.conn, "rolling back a commit group applied in parts", "ROLLBACK").await?;
        }
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        let mut conn = self.lease_session().await?;
        let result = state::drop_lease(&self.ep, &mut conn, dir, holder).await;
        let _ = conn.disconnect().await;
        result
    }
}

impl MysqlSink {
    /// Applies a batch: schema changes first, then its rows with the checkpoint in one
    /// transaction (two-way batches judged, one-way ones spread where they allow it).
    async fn apply_batch(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        if let Some(rules) = &batch.conflicts {
            return self.apply_two_way_batch(dir, batch, rules).await;
        }
        // A schema change travels alone (see the binlog reader): it commits by itself, so
        // it runs before the transaction that records the checkpoint after it.
        for txn in batch.txns.iter().filter(|t| !t.ddl.is_empty()) {
            self.still_fenced(dir, batch.fence).await?;
            self.settle_deferred(dir, batch.fence, txn).await?;
            self.apply_schema_changes(txn).await?;
        }
        let continuing = self.open_group;
        // Independent groups of source transactions over `workers` sessions, when the
        // batch allows it (one-way, stream only, slots settled, a whole commit group).
        if !continuing
            && batch.commit
            && let Some(report) = self.apply_parallel(dir, batch).await?
        {
            return Ok(report);
        }
        let mut spread = 0;
        if let Some(snap) = &batch.snapshot {
            let parts = self.workers.min(snap.rows.len() / SPREAD_MIN_ROWS);
            if parts > 1 && batch.txns.is_empty() && !batch.one_by_one && !continuing {
                self.spread_snapshot(dir, snap, parts, batch.fence).await?;
                spread = snap.rows.len() as u64;
            }
        }
        if !continuing {
            self.ep.exec(&mut self.conn, "starting the apply transaction", "START TRANSACTION").await?;
        }
        self.open_group = false;
        match self.apply_inner(dir, batch, spread > 0).await {
            // A part of a source commit group too large for one read: the transaction
            // stays open for the next part, which commits it with the checkpoint.
            Ok((report, _)) if !batch.commit => {
                self.open_group = true;
                Ok(report)
            }
            Ok((mut report, noted)) => match self.conn.query_drop("COMMIT").await {
                Ok(()) => {
                    self.written.extend(noted);
                    self.stream.committed(batch.checkpoint.position.as_ref());
                    report.rows += spread;
                    Ok(report)
                }
                Err(e) => {
                    let _ = self.conn.query_drop("ROLLBACK").await;
                    Err(self.ep.error("committing an applied batch")(e))
                }
            },
            Err(f) => {
                let _ = self.conn.query_drop("ROLLBACK").await;
                Err(self.failure(f, dir, batch))
            }
        }
    }

    /// The lease's own session (see [`MysqlSink::lease_conn`]), taken out for one use
    /// (opened when there is none).
    async fn lease_session(&mut self) -> Result<Conn, ConnectorError> {
        match self.lease_conn.take() {
            Some(conn) => Ok(conn),
            None => self.ep.connect().await,
        }
    }

    /// Writes a snapshot chunk over several sessions at once, each part in its own
    /// transaction, all committed before the caller commits the checkpoint after them: a
    /// crash in between copies the chunk again, and a chunk's upserts are idempotent.
    async fn spread_snapshot(
        &mut self,
        dir: &DirectionId,
        snap: &SnapshotRows,
        parts: usize,
        fence: Option<i64>,
    ) -> Result<(), ConnectorError> {
        self.open_helpers(parts - 1).await?;
        let target = qualified(&self.resolve(&snap.table.name)?);
        let per = snap.rows.len().div_ceil(parts);
        let rows: Vec<&Row> = snap.rows.iter().collect();
        let budget = self.budget;
        let load = self.may_load(&snap.table)?;
        let mut conns: Vec<&mut Conn> = Vec::with_capacity(parts);
        conns.push(&mut self.conn);
        conns.extend(self.helpers.iter_mut().take(parts - 1));
        let jobs = conns.into_iter().zip(rows.chunks(per)).map(|(conn, part)| {
            let (target, table, load) = (&target, &*snap.table, load.as_deref());
            async move {
                conn.query_drop("START TRANSACTION").await?;
                let written = async {
                    let allowed = copy_on(conn, budget, target, table, part, load).await?;
                    let fenced = match fence {
                        Some(fence) => state::check_fence(conn, dir, fence).await?,
                        None => None,
                    };
                    Ok::<_, mysql_async::Error>((allowed, fenced))
                }
                .await;
                match written {
                    Ok((allowed, None)) => conn.query_drop("COMMIT").await.map(|()| (allowed, None)),
                    Ok((allowed, Some(holder))) => {
                        let _ = conn.query_drop("ROLLBACK").await;
                        Ok((allowed, Some(holder)))
                    }
                    Err(e) => {
                        let _ = conn.query_drop("ROLLBACK").await;
                        Err(e)
                    }
                }
            }
        });
        let results = futures_util::future::join_all(jobs).await;
        for r in results {
            let (allowed, fenced) = r.map_err(self.ep.error(format!(
                "copying {} snapshot rows of {} over {parts} sessions",
                snap.rows.len(),
                snap.table.name
            )))?;
            self.note_load(allowed);
            if let Some(holder) = fenced {
                return Err(self.fenced(dir, fence.unwrap_or(0), holder));
            }
        }
        Ok(())
    }

    /// Whether a snapshot chunk of `table` may go as `LOAD DATA` here: the server has
    /// not refused it and the target table's columns all take its text form.
    fn may_load(&self, table: &TableSchema) -> Result<Option<Vec<ColumnKind>>, ConnectorError> {
        let resolved = self.resolve(&table.name)?;
        Ok(self.constraints.get(&resolved).filter(|_| self.load_data).and_then(|own| load::loadable(own, table)))
    }

    /// Notes whether the server still allows `LOAD DATA LOCAL` (said once when it does not).
    fn note_load(&mut self, allowed: bool) {
        if self.load_data && !allowed {
            tracing::info!(
                endpoint = %self.ep.name,
                "local_infile is off on this server: snapshot chunks are written with INSERT (SET GLOBAL local_infile = ON for a faster copy)"
            );
        }
        self.load_data &= allowed;
    }

    /// Notes the target's own description of a table (`None`: it is gone).
    async fn note_constraints(&mut self, name: &TableName) -> Result<(), ConnectorError> {
        match schema::describe_loose(&self.ep, &mut self.conn, name).await? {
            Some(t) => self.constraints.insert(name.clone(), Arc::new(t)),
            None => self.constraints.remove(name),
        };
        self.parents = parents_of(self.constraints.values());
        Ok(())
    }

    /// Applies the batch in the open transaction; `snapshot_written`: its snapshot rows
    /// were already written (spread over several sessions).
    async fn apply_inner(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
        snapshot_written: bool,
    ) -> Result<(ApplyReport, Vec<(String, String)>), Failure> {
        let mut report = ApplyReport::default();
        // Transactions a worker committed before a crash, past the lowest stream slot.
        let done: Vec<bool> = batch.txns.iter().map(|t| self.stream.is_applied(&t.position)).collect();
        if batch.one_by_one {
            for (t, txn) in batch.txns.iter().enumerate().filter(|(t, _)| !done[*t]) {
                for change in &txn.changes {
                    let target = qualified(&self.resolve(&change.table.name)?);
                    match self.write_change(&target, change).await {
                        Ok(()) => report.rows += 1,
                        Err(e) => {
                            return Err(match refusal(e, &change.table) {
                                Ok(message) => Failure::Change {
                                    txn: t,
                                    table: change.table.name.clone(),
                                    key: change.new_key(),
                                    message,
                                },
                                Err(e) => Failure::Sql(e),
                            });
                        }
                    }
                }
            }
        } else {
            let txns: Vec<&Txn> = batch.txns.iter().zip(&done).filter(|(_, d)| !**d).map(|(t, _)| t).collect();
            report.rows += self.apply_grouped(&txns).await?;
        }
        if let Some(snap) = batch.snapshot.as_ref().filter(|_| !snapshot_written) {
            let target = qualified(&self.resolve(&snap.table.name)?);
            if batch.one_by_one {
                for row in &snap.rows {
                    if let Err(e) = self.upsert_rows(&target, &snap.table, &[row]).await {
                        return Err(match refusal(e, &snap.table) {
                            Ok(message) => Failure::SnapshotRow {
                                table: snap.table.name.clone(),
                                key: snap.table.key_of(row),
                                message,
                            },
                            Err(e) => Failure::Sql(e),
                        });
                    }
                }
            } else {
                let rows: Vec<&Row> = snap.rows.iter().collect();
                let load = self.may_load(&snap.table)?;
                let allowed =
                    copy_on(&mut self.conn, self.budget, &target, &snap.table, &rows, load.as_deref()).await?;
                self.note_load(allowed);
            }
            report.rows += snap.rows.len() as u64;
        }
        if !batch.commit {
            return Ok((report, Vec::new()));
        }
        let noted = self.checkpoint_all(dir, batch).await?;
        Ok((report, noted))
    }

    /// Writes the checkpoint of a batch applied on the main session: every worker's
    /// stream slot moves together (what is still applied past this batch stays listed in
    /// slot 0); the first commit after loading drops the slots of workers that no longer
    /// exist.
    async fn checkpoint_all(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
    ) -> Result<Vec<(String, String)>, Failure> {
        let streams = self.stream.all_slots(self.workers, batch.checkpoint.position.as_ref());
        if let Some(fence) = batch.fence
            && let Some(holder) = state::check_fence(&mut self.conn, dir, fence).await?
        {
            return Err(Failure::Fenced(holder));
        }
        if !self.stream.settled {
            state::drop_stream_slots_from(&mut self.conn, dir, self.workers).await?;
        }
        Ok(state::write_checkpoint(&mut self.conn, dir, &batch.checkpoint, &self.written, &streams, true).await?)
    }

    /// The error a failed batch reports: what was being applied, or the change refused.
    fn failure(&self, f: Failure, dir: &DirectionId, batch: &ApplyBatch) -> ConnectorError {
        match f {
            Failure::Sql(source) => {
                let changes: usize = batch.txns.iter().map(|t| t.changes.len()).sum();
                let snap =
                    batch.snapshot.as_ref().map(|s| format!(" and {} snapshot rows of {}", s.rows.len(), s.table.name));
                ConnectorError::Mysql {
                    endpoint: self.ep.name.clone(),
                    what: format!(
                        "applying {} source transactions ({changes} changes){}",
                        batch.txns.len(),
                        snap.unwrap_or_default()
                    ),
                    source: Box::new(source),
                }
            }
            Failure::Change { txn, table, key, message } => ConnectorError::Apply(Box::new(ApplyFailure {
                endpoint: self.ep.name.clone(),
                position: batch.txns[txn].position.clone(),
                table,
                key: key_text(&key),
                message,
                in_parts: false,
            })),
            Failure::SnapshotRow { table, key, message } => ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!(
                    "the snapshot row of table {table} with key {} was refused: {message}",
                    key_text(&key)
                ),
                fix: format!(
                    "make the target table {table} accept the source's rows (same columns, types and keys), then run ferry again"
                ),
            },
            Failure::Setup(e) => e,
            Failure::Fenced(holder) => self.fenced(dir, batch.fence.unwrap_or(0), holder),
        }
    }

    /// The error of a batch refused because another process took the lease over.
    pub(super) fn fenced(&self, dir: &DirectionId, mine: i64, holder: LeaseHolder) -> ConnectorError {
        ConnectorError::Fenced {
            endpoint: self.ep.name.clone(),
            dir: dir.to_string(),
            mine,
            holder: (holder.pid != 0).then(|| Box::new(holder)),
        }
    }

    /// Before a statement that commits by itself (a schema change): whether this process
    /// still holds the lease under `fence` (no lock: DDL cannot share a transaction).
    async fn still_fenced(&mut self, dir: &DirectionId, fence: Option<i64>) -> Result<(), ConnectorError> {
        let Some(fence) = fence else { return Ok(()) };
        match state::check_fence(&mut self.conn, dir, fence).await {
            Ok(None) => Ok(()),
            Ok(Some(holder)) => Err(self.fenced(dir, fence, holder)),
            Err(e) => Err(self.ep.error(format!("checking the lease of {dir}"))(e)),
        }
    }

    /// A two-way batch: schema changes first (tagged with their origin), then the rows,
    /// judged, in one transaction with the checkpoint; a deadlock with an application
    /// transaction over the locked rows runs the batch again.
    async fn apply_two_way_batch(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
        rules: &crate::connector::ConflictRules,
    ) -> Result<ApplyReport, ConnectorError> {
        let marking = match self.marking {
            Some(m) => m,
            None => {
                let m = self.enter_two_way(&rules.remote_site).await?;
                self.marking = Some(m);
                m
            }
        };
        for txn in batch.txns.iter().filter(|t| !t.ddl.is_empty()) {
            self.still_fenced(dir, batch.fence).await?;
            self.settle_deferred(dir, batch.fence, txn).await?;
            self.apply_schema_changes(txn).await?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let continuing = self.open_group;
            if !continuing {
                self.ep.exec(&mut self.conn, "starting the apply transaction", "START TRANSACTION").await?;
            }
            self.open_group = false;
            let result = match self.apply_two_way(dir, batch, rules, marking).await {
                Ok(report) if !batch.commit => Ok((report, Vec::new())),
                Ok(report) => match self.checkpoint_all(dir, batch).await {
                    Ok(noted) => Ok((report, noted)),
                    Err(f) => Err(f),
                },
                Err(f) => Err(f),
            };
            let err = match result {
                // A part of a larger commit group: the transaction stays open.
                Ok((report, _)) if !batch.commit => {
                    self.open_group = true;
                    return Ok(report);
                }
                Ok((report, noted)) => match self.conn.query_drop("COMMIT").await {
                    Ok(()) => {
                        self.written.extend(noted);
                        self.stream.committed(batch.checkpoint.position.as_ref());
                        return Ok(report);
                    }
                    Err(e) => self.ep.error("committing an applied two-way batch")(e),
                },
                Err(f) => self.failure(f, dir, batch),
            };
            let _ = self.conn.query_drop("ROLLBACK").await;
            // Earlier parts of an open group went with the rollback: the engine reads the
            // group again rather than this part alone.
            if attempt < 5 && !continuing && retry_at_once(&err) {
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                continue;
            }
            return Err(err);
        }
    }

    /// Runs a transaction's schema changes, each under the target's table name. A change
    /// found already made (the process stopped after it ran but before its checkpoint)
    /// passes; one the target refuses stops the task naming the statement and position.
    async fn apply_schema_changes(&mut self, txn: &Txn) -> Result<(), ConnectorError> {
        for sc in &txn.ddl {
            let name = self.resolve(&sc.table)?;
            let mut statement = sc.retarget(&qualified(&name));
            if let Some(origin) = &self.two_way {
                // The reverse direction drops it by this tag where server ids cannot mark it.
                statement = format!("{}{statement}", versions::ddl_tag(origin));
            }
            let db = name.schema.clone().unwrap_or_default();
            let what = format!("applying the schema change at {}: {statement}", txn.position);
            if sc.kind == SchemaChangeKind::Create {
                self.ep.exec(&mut self.conn, &what, &format!("CREATE DATABASE IF NOT EXISTS {}", ident(&db))).await?;
            }
            self.ep.exec(&mut self.conn, &what, &format!("USE {}", ident(&db))).await?;
            match self.conn.query_drop(&statement).await {
                Ok(()) => {
                    tracing::info!(endpoint = %self.ep.name, position = %txn.position, "applied schema change: {statement}");
                }
                Err(mysql_async::Error::Server(e)) if ALREADY_DONE.contains(&e.code) => {
                    warn!(endpoint = %self.ep.name, position = %txn.position, error = %e.message, "schema change already made here (a restart after it ran); going on: {statement}");
                }
                Err(mysql_async::Error::Server(e)) => {
                    return Err(ConnectorError::Setup {
                        endpoint: self.ep.name.clone(),
                        problem: format!(
                            "the schema change at source position {} failed here: {statement}: {} (error {})",
                            txn.position, e.message, e.code
                        ),
                        fix: format!(
                            "make {name} here able to take it (or make the change by hand), then `ferry run` again; to skip it on purpose: ferry skip --config FILE --task TASK --position {}",
                            txn.position
                        ),
                    });
                }
                Err(e) => return Err(self.ep.error(what)(e)),
            }
            self.note_constraints(&name).await?;
        }
        if self.two_way.is_some() {
            // Two-way: ferry's triggers compare every column, so they follow the new shape.
            for sc in txn.ddl.iter().filter(|sc| matches!(sc.kind, SchemaChangeKind::Alter | SchemaChangeKind::Create))
            {
                let name = self.resolve(&sc.table)?;
                if let Some(t) = schema::describe_loose(&self.ep, &mut self.conn, &name).await? {
                    let site = self.ep.site.clone();
                    versions::install(&self.ep, &mut self.conn, &[Arc::new(t)], &site, true).await?;
                }
            }
        }
        Ok(())
    }

    /// After a committed batch: builds the deferred indexes of the table whose last chunk
    /// it held, and of every table once the checkpoint shows all copies done (a restart
    /// after a table's copy ended but before its indexes were built).
    async fn build_due(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<(), ConnectorError> {
        let mut due: Vec<TableName> = Vec::new();
        if batch.checkpoint.tables.values().all(|p| *p == TableProgress::Done) {
            due.extend(self.deferred.keys().cloned());
        } else if let Some(snap) = batch.snapshot.as_ref().filter(|s| s.last) {
            due.push(self.resolve(&snap.table.name)?);
        }
        for name in due {
            self.build_deferred(dir, batch.fence, &name).await?;
        }
        Ok(())
    }

    /// Before a transaction's schema changes: a table whose keys still wait gets them
    /// first, so the change meets the table in the source's shape (a dropped or renamed
    /// index exists; a dropped column takes its keys along as on the source); a table
    /// dropped or created anew forgets them.
    async fn settle_deferred(
        &mut self,
        dir: &DirectionId,
        fence: Option<i64>,
        txn: &Txn,
    ) -> Result<(), ConnectorError> {
        for sc in &txn.ddl {
            let name = self.resolve(&sc.table)?;
            if !self.deferred.contains_key(&name) {
                continue;
            }
            match sc.kind {
                SchemaChangeKind::Truncate => {}
                SchemaChangeKind::Drop | SchemaChangeKind::Create => {
                    self.deferred.remove(&name);
                    deferred::forget(&self.ep, &mut self.conn, &name).await?;
                    info!(endpoint = %self.ep.name, table = %name, "the table is dropped or created anew by a schema change: its deferred indexes are not built");
                }
                SchemaChangeKind::Alter | SchemaChangeKind::Index => {
                    info!(endpoint = %self.ep.name, table = %name, position = %txn.position, "a schema change of a table whose indexes wait for its copy: building them first");
                    self.build_deferred(dir, fence, &name).await?;
                }
            }
        }
        Ok(())
    }

    /// Builds one table's deferred indexes, renewing the lease meanwhile (a large table's
    /// build can outlast it); a renewal that fails is logged, and the next batch's fence
    /// check stops this process if another took over.
    async fn build_deferred(
        &mut self,
        dir: &DirectionId,
        fence: Option<i64>,
        name: &TableName,
    ) -> Result<(), ConnectorError> {
        let Some(indexes) = self.deferred.remove(name) else { return Ok(()) };
        self.still_fenced(dir, fence).await?;
        let prefix = self.two_way.as_ref().map(versions::ddl_tag).unwrap_or_default();
        let build = deferred::build(&self.ep, &mut self.conn, name, &indexes, &prefix);
        let Some((holder, ttl)) = self.holder.clone() else { return build.await };
        tokio::pin!(build);
        loop {
            tokio::select! {
                r = &mut build => return r,
                // The renewal runs whole between polls of the build (never cut mid-way,
                // which would leave the lease session inside its transaction).
                _ = tokio::time::sleep(ttl / 3) => {}
            }
            let conn = match &mut self.lease_conn {
                Some(c) => c,
                None => self.lease_conn.insert(self.ep.connect().await?),
            };
            match state::take_lease(&self.ep, conn, dir, &holder, ttl).await {
                Ok(LeaseOutcome::Acquired { .. }) => {}
                Ok(_) => {
                    warn!(endpoint = %self.ep.name, direction = %dir, "the lease went to another process while building deferred indexes")
                }
                Err(e) => {
                    self.lease_conn = None;
                    warn!(endpoint = %self.ep.name, direction = %dir, error = %e, "could not renew the lease while building deferred indexes");
                }
            }
        }
    }

    /// Creates a missing target table: from the source's own CREATE TABLE when its
    /// columns are the target's, else from the columns and keys. `defer`: its plain
    /// secondary keys wait for the end of its copy (recorded first, see `deferred.rs`).
    async fn create_table(&mut self, t: &TableSchema, name: &TableName, defer: bool) -> Result<(), ConnectorError> {
        let Some(db) = &name.schema else { return Ok(()) };
        let what = format!("creating table {name}");
        self.ep.exec(&mut self.conn, &what, &format!("CREATE DATABASE IF NOT EXISTS {}", ident(db))).await?;
        let want: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        let from_source = t
            .create_sql
            .as_deref()
            .filter(|sql| create_sql_columns(sql).as_ref() == Some(&want))
            .and_then(|sql| retarget_create_sql(sql, name));
        let (from_source, waiting) = match from_source.as_deref().filter(|_| defer).and_then(deferred::split_keys) {
            Some((sql, keys)) if !keys.is_empty() => (Some(sql), keys),
            _ => (from_source, Vec::new()),
        };
        if !waiting.is_empty() {
            deferred::record(&self.ep, &mut self.conn, name, &waiting).await?;
        }
        let mut target = t.clone();
        target.name = name.clone();
        let from_columns = create_table_sql(&target);
        // Foreign keys may name tables created later in this loop.
        self.ep.exec(&mut self.conn, &what, "SET @ferry_fk = @@foreign_key_checks, foreign_key_checks = 0").await?;
        let mut result = Err(None);
        if let Some(sql) = &from_source {
            result = self.conn.query_drop(sql).await.map_err(Some);
            if let Err(Some(e)) = &result {
                warn!(endpoint = %self.ep.name, table = %name, error = %e, "the source's CREATE TABLE failed here; creating the table from its columns");
            }
        }
        if result.is_err() {
            result = self.conn.query_drop(&from_columns).await.map_err(Some);
        }
        self.ep.exec(&mut self.conn, &what, "SET foreign_key_checks = @ferry_fk").await?;
        if !waiting.is_empty() {
            match &result {
                Ok(()) => {
                    let names: Vec<&str> = waiting.iter().map(|ix| ix.name.as_str()).collect();
                    info!(endpoint = %self.ep.name, table = %name, indexes = ?names, "created the table without its secondary indexes; they are built once its copy is done");
                    self.deferred.insert(name.clone(), waiting);
                }
                // Made from the columns: no secondary keys at all, as before.
                Err(_) => deferred::forget(&self.ep, &mut self.conn, name).await?,
            }
        }
        match result {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(self.ep.error(format!("{what} with {from_columns}"))(e)),
            Err(None) => Ok(()),
        }
    }
}
