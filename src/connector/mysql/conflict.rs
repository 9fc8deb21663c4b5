//! Two-way apply on a MySQL/MariaDB target: every incoming change is judged against the
//! target's current row and its version (see `versions.rs`) before it is written, as
//! DESIGN.md "Two-way" says; conflicts are resolved by the task's policy and recorded in
//! `ferry.ferry_conflict` in the same transaction.
//!
//! The batch's rows and versions are read once, locked (`FOR UPDATE`, so an application
//! write cannot slip in between judging and writing), judged in source order in memory,
//! and the accepted changes are written with the one-way writer's multi-row statements.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::apply::{Failure, MysqlSink};
use super::names::{CONFLICT_TABLE, HEARTBEAT_TABLE, ferry_table};
use super::schema::{key_in, qualified};
use super::server_id::apply_server_id;
use super::values::{self, to_param};
use super::versions::{self, Marking, Stamp};
use super::{MysqlEndpoint, ident};
use crate::connector::sqlite::state::row_json;
use crate::connector::{ApplyBatch, ApplyReport, ConflictRules, ConnectorError, DirectionId};
use crate::model::conflict::{KeyStates, Local, Version, Winner, judge_batch};
use crate::model::{Change, HashKey, Key, Row, SiteId, TableName, TableSchema, Txn, key_text, now_micros};

/// A conflict to record.
struct Record {
    table: Arc<TableSchema>,
    key: Key,
    winner: Winner,
    incoming: Version,
    incoming_row: Option<Row>,
    local: Version,
    local_row: Option<Row>,
    position: String,
}

impl MysqlSink {
    /// Sets the session up to write changes that came from `origin`: its server id (or
    /// marker rows where the account may not set it) and the flag that keeps ferry's
    /// triggers out of its own writes.
    pub(super) async fn enter_two_way(&mut self, origin: &SiteId) -> Result<Marking, ConnectorError> {
        let id = apply_server_id(origin);
        let marking = match self.conn.query_drop(format!("SET SESSION server_id = {id}")).await {
            Ok(()) => Marking::ServerId,
            Err(mysql_async::Error::Server(e)) if matches!(e.code, 1227 | 1044 | 1045) => {
                tracing::info!(
                    endpoint = %self.ep.name,
                    "the account may not set server_id ({}); two-way marks ferry's transactions with a row in ferry.ferry_marker instead",
                    e.message
                );
                Marking::MarkerRow
            }
            Err(e) => return Err(self.ep.error("setting the session server_id for two-way apply")(e)),
        };
        self.ep.exec(&mut self.conn, "setting @ferry_apply", &format!("SET {} = 1", versions::APPLY_FLAG)).await?;
        Ok(marking)
    }

    /// Applies a two-way batch inside the open transaction: judge, write, version, record.
    pub(super) async fn apply_two_way(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
        rules: &ConflictRules,
        marking: Marking,
    ) -> Result<ApplyReport, Failure> {
        let mut report = ApplyReport::default();
        if marking == Marking::MarkerRow {
            versions::mark(&mut self.conn, &rules.remote_site).await?;
        }
        let snapshot_changes = batch.snapshot_changes();
        let (incoming, txn_of) = batch.incoming(&snapshot_changes, HEARTBEAT_TABLE);
        // Snapshot rows belong to no transaction.
        let txn_of: Vec<usize> = txn_of.into_iter().map(|t| t.unwrap_or(usize::MAX)).collect();

        // Targets, and the batch's keys (old and new) per target table. The heartbeat
        // table carries no conflicts (each site writes its own row).
        let mut targets: HashMap<TableName, (Arc<TableSchema>, Vec<Key>)> = HashMap::new();
        for inc in incoming.iter().filter(|i| !i.free) {
            let c = inc.change;
            let name = self.resolve(&c.table.name)?;
            let entry = targets.entry(c.table.name.clone()).or_insert_with(|| {
                let mut t = (*c.table).clone();
                // Rows and versions are read here with this server's own column types
                // (the source may be another store).
                if let Some(own) = self.constraints.get(&name) {
                    for col in t.columns.iter_mut() {
                        if let Some(o) = own.columns.iter().find(|o| o.name == col.name) {
                            col.decl_type = o.decl_type.clone();
                        }
                    }
                }
                t.name = name;
                (Arc::new(t), Vec::new())
            });
            entry.1.push(c.key.clone());
            let new_key = c.new_key();
            if new_key != c.key {
                entry.1.push(new_key);
            }
        }
        let mut state: KeyStates = HashMap::new();
        for (source_name, (table, keys)) in &targets {
            let refs: Vec<&Key> = keys.iter().collect();
            let rows = select_rows(&self.ep, &mut self.conn, table, &refs).await?;
            let stamps = versions::load(&self.ep, &mut self.conn, table, &refs, true).await?;
            for k in keys {
                let id = HashKey(k.clone());
                let local = Local { row: rows.get(&id).cloned(), stamp: stamps.get(&id).cloned(), dirty: false };
                state.entry((source_name.clone(), id)).or_insert(local);
            }
        }

        // Judge in source order; the state follows every accepted change.
        let judged = judge_batch(&incoming, &mut state, rules);
        report.rows += incoming.len() as u64;
        report.conflicts += judged.conflicts.len() as u64;
        let records: Vec<Record> = judged
            .conflicts
            .into_iter()
            .map(|m| {
                let c = incoming[m.index].change;
                Record {
                    table: targets.get(&c.table.name).map(|t| t.0.clone()).unwrap_or_else(|| c.table.clone()),
                    key: c.key.clone(),
                    winner: m.winner,
                    incoming: m.incoming,
                    incoming_row: c.after.clone(),
                    local: m.local,
                    local_row: m.local_row,
                    position: incoming[m.index].position.clone(),
                }
            })
            .collect();
        let accepted: Vec<(usize, Change)> =
            judged.accepted.iter().map(|&i| (txn_of[i], incoming[i].change.clone())).collect();

        self.write_accepted(&accepted, batch.one_by_one).await?;
        for (source_name, (table, keys)) in &targets {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<(&Key, &Stamp)> = keys
                .iter()
                .filter(|k| seen.insert(HashKey((*k).clone())))
                .filter_map(|k| {
                    let local = state.get(&(source_name.clone(), HashKey(k.clone())))?;
                    local.dirty.then_some(())?;
                    Some((k, local.stamp.as_ref()?))
                })
                .collect();
            versions::store(&mut self.conn, self.budget, table, &entries).await?;
        }
        for r in &records {
            record(&mut self.conn, dir, rules, r).await?;
        }
        Ok(report)
    }

    /// Writes the accepted changes with the one-way writer (multi-row statements), or one
    /// by one so a refusal names its change.
    async fn write_accepted(&mut self, accepted: &[(usize, Change)], one_by_one: bool) -> Result<(), Failure> {
        if !one_by_one {
            let txn = Txn {
                origin: SiteId::new(""),
                commit_ts: 0,
                position: super::position::BinlogPos::default().to_position(),
                changes: accepted.iter().map(|(_, c)| c.clone()).collect(),
                ddl: Vec::new(),
            };
            self.apply_grouped(&[&txn]).await?;
            return Ok(());
        }
        for (t, change) in accepted {
            self.write_one(*t, change).await?;
        }
        Ok(())
    }
}

/// Reads the current rows of these keys (by key identity), locking them.
async fn select_rows(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    keys: &[&Key],
) -> Result<HashMap<HashKey, Row>, Failure> {
    let mut out = HashMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let kinds = values::kinds(ep, table)?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    for chunk in keys.chunks(500) {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} FOR UPDATE",
            cols.join(", "),
            qualified(&table.name),
            key_in(table, chunk.len())
        );
        let params: Vec<mysql_async::Value> = chunk.iter().flat_map(|k| k.iter().map(to_param)).collect();
        let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await?;
        for r in rows {
            let row = values::decode_row(table, &kinds, r).map_err(|e| values::at(ep, e))?;
            out.insert(HashKey(table.key_of(&row)), row);
        }
    }
    Ok(out)
}

/// Appends a conflict to `ferry.ferry_conflict` (inside the resolving transaction).
async fn record(conn: &mut Conn, dir: &DirectionId, rules: &ConflictRules, r: &Record) -> Result<(), Failure> {
    let sql = format!(
        "INSERT INTO {} (task, direction, tbl, pk, policy, winner, incoming_site, incoming_ts, incoming_row, \
         local_site, local_ts, local_row, position, detected_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ferry_table(CONFLICT_TABLE)
    );
    let params: Vec<mysql_async::Value> = vec![
        dir.task.clone().into(),
        dir.direction().into(),
        r.table.name.to_string().into(),
        key_text(&r.key).into(),
        rules.policy.to_string().into(),
        r.winner.as_str().into(),
        r.incoming.site.as_str().into(),
        r.incoming.ts.into(),
        row_json(&r.table, r.incoming_row.as_ref()).into(),
        r.local.site.as_str().into(),
        r.local.ts.into(),
        row_json(&r.table, r.local_row.as_ref()).into(),
        r.position.clone().into(),
        now_micros().into(),
    ];
    conn.exec_drop(sql, params).await?;
    Ok(())
}

/// Whether a failed two-way batch is worth running again at once (a deadlock with an
/// application transaction over the rows it locks, or a lock wait timeout).
pub fn retry_at_once(e: &ConnectorError) -> bool {
    match e {
        ConnectorError::Mysql { source, .. } => super::lock_conflict(source),
        _ => false,
    }
}
