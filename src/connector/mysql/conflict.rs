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

use super::apply::{Failure, MysqlSink, key_id};
use super::schema::{key_in, qualified};
use super::state::ferry_table;
use super::values::{self, to_param};
use super::versions::{self, Stamp};
use super::{MysqlEndpoint, ident};
use crate::connector::sqlite::state::row_json;
use crate::connector::{ApplyBatch, ApplyReport, ConflictRules, ConnectorError, DirectionId};
use crate::engine::conflict::{Version, Winner, resolve};
use crate::model::{Change, Key, Op, Prior, Row, SiteId, TableName, TableSchema, Txn, key_text, now_micros, same_row};

/// The heartbeat table carries no conflicts (each site writes its own row).
const HEARTBEAT: &str = "ferry_heartbeat";

/// How the applier marks its transactions as coming from the source's site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// The session's server id (events carry it, DDL included).
    ServerId,
    /// A marker row in every transaction (the account may not set server_id).
    MarkerRow,
}

/// A key's state here as the batch goes: its row and version.
#[derive(Debug, Clone, Default)]
struct Local {
    row: Option<Row>,
    stamp: Option<Stamp>,
    /// The version changed in this batch (to be written).
    dirty: bool,
}

/// What to do with one incoming change.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// The target is in the state the source changed: apply.
    Apply,
    /// The target already holds the change's result: nothing to write.
    Found,
    /// The states differ: the policy decided, against this local version.
    Conflict(Winner, Version),
}

/// One incoming change with its version (`None`: a row that predates capture).
struct Incoming<'a> {
    txn: usize,
    change: &'a Change,
    stamp: Option<Stamp>,
    position: String,
}

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

/// Judges a change against the target's state of its key.
fn judge(c: &Change, incoming: Option<&Stamp>, local: &Local, rules: &ConflictRules) -> Verdict {
    let result = c.after.as_ref();
    if same_row(local.row.as_ref(), result) {
        return Verdict::Found;
    }
    let live = local.stamp.as_ref().filter(|s| !s.deleted);
    let expected = match c.op {
        Op::Insert => {
            local.row.is_none()
                && match local.stamp.as_ref().filter(|s| s.deleted) {
                    None => true,
                    Some(t) => c.prior == Prior::Deleted(t.site.clone(), t.ts),
                }
        }
        Op::Update | Op::Delete => {
            same_row(local.row.as_ref(), c.before.as_ref())
                && match (live, &c.seen) {
                    (Some(l), Some((site, ts))) => l.site == *site && l.ts == *ts,
                    // A versioned write here that the source never saw.
                    (Some(_), None) => false,
                    // No version here (a row older than capture): the images decide.
                    (None, _) => true,
                }
        }
    };
    if expected {
        return Verdict::Apply;
    }
    let local_version = match &local.stamp {
        Some(s) => Version { ts: s.ts, site: s.site.clone() },
        None => Version { ts: 0, site: rules.local_site.clone() },
    };
    let incoming_version = match incoming {
        Some(s) => Version { ts: s.ts, site: s.site.clone() },
        None => Version { ts: 0, site: rules.remote_site.clone() },
    };
    Verdict::Conflict(resolve(rules, &incoming_version, &local_version), local_version)
}

impl MysqlSink {
    /// Sets the session up to write changes that came from `origin`: its server id (or
    /// marker rows where the account may not set it) and the flag that keeps ferry's
    /// triggers out of its own writes.
    pub(super) async fn enter_two_way(&mut self, origin: &SiteId) -> Result<Marking, ConnectorError> {
        let id = versions::apply_server_id(origin);
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
        let mut snapshot_changes = Vec::new();
        if let Some(snap) = &batch.snapshot {
            for (i, row) in snap.rows.iter().enumerate() {
                let version = snap.versions.as_ref().and_then(|v| v.get(i).cloned().flatten());
                snapshot_changes.push((
                    Change::snapshot_insert(&snap.table, row),
                    version.map(|(site, ts)| Stamp { site, ts, deleted: false }),
                ));
            }
        }
        let mut incoming: Vec<Incoming<'_>> = Vec::new();
        for (t, txn) in batch.txns.iter().enumerate() {
            let position = txn.position.to_string();
            for change in &txn.changes {
                let (site, ts) = change.version.clone().unwrap_or_else(|| (txn.origin.clone(), txn.commit_ts));
                let stamp = Stamp { site, ts, deleted: change.after.is_none() };
                incoming.push(Incoming { txn: t, change, stamp: Some(stamp), position: position.clone() });
            }
        }
        for (change, stamp) in &snapshot_changes {
            incoming.push(Incoming { txn: usize::MAX, change, stamp: stamp.clone(), position: "snapshot".into() });
        }

        // Targets, and the batch's keys (old and new) per target table.
        let mut targets: HashMap<TableName, (Arc<TableSchema>, Vec<Key>)> = HashMap::new();
        for inc in &incoming {
            let c = inc.change;
            if c.table.name.name == HEARTBEAT {
                continue;
            }
            let name = self.resolve(&c.table.name)?;
            let entry = targets.entry(c.table.name.clone()).or_insert_with(|| {
                let mut t = (*c.table).clone();
                t.name = name;
                (Arc::new(t), Vec::new())
            });
            entry.1.push(c.key.clone());
            let new_key = c.new_key();
            if new_key != c.key {
                entry.1.push(new_key);
            }
        }
        let mut state: HashMap<(TableName, Vec<u8>), Local> = HashMap::new();
        for (source_name, (table, keys)) in &targets {
            let refs: Vec<&Key> = keys.iter().collect();
            let rows = select_rows(&self.ep, &mut self.conn, table, &refs).await?;
            let stamps = versions::load(&self.ep, &mut self.conn, table, &refs, true).await?;
            for k in keys {
                let id = key_id(k);
                let local = Local { row: rows.get(&id).cloned(), stamp: stamps.get(&id).cloned(), dirty: false };
                state.entry((source_name.clone(), id)).or_insert(local);
            }
        }

        // Judge in source order; the state follows every accepted change.
        let mut accepted: Vec<(usize, Change)> = Vec::new();
        let mut records: Vec<Record> = Vec::new();
        for inc in &incoming {
            let c = inc.change;
            report.rows += 1;
            if c.table.name.name == HEARTBEAT {
                accepted.push((inc.txn, c.clone()));
                continue;
            }
            let old_id = (c.table.name.clone(), key_id(&c.key));
            let local = state.get(&old_id).cloned().unwrap_or_default();
            let verdict = judge(c, inc.stamp.as_ref(), &local, rules);
            tracing::debug!(
                table = %c.table.name, key = %key_text(&c.key), op = ?c.op, incoming = ?inc.stamp, seen = ?c.seen,
                prior = ?c.prior, local = ?local.stamp, verdict = ?verdict, position = %inc.position, "two-way judge"
            );
            let apply = match &verdict {
                Verdict::Apply => true,
                Verdict::Found => {
                    // Both sides hold the same result: keep the later of the two versions
                    // on both, so they agree on it.
                    if let Some(s) = &inc.stamp {
                        let keep = match &local.stamp {
                            Some(l) if l.deleted == s.deleted && l.later_than(s) => l.clone(),
                            _ => s.clone(),
                        };
                        let new_id = (c.table.name.clone(), key_id(&c.new_key()));
                        let entry = state.entry(new_id).or_default();
                        if entry.stamp.as_ref() != Some(&keep) {
                            entry.stamp = Some(keep);
                            entry.dirty = true;
                        }
                    }
                    false
                }
                Verdict::Conflict(winner, local_version) => {
                    report.conflicts += 1;
                    records.push(Record {
                        table: targets.get(&c.table.name).map(|t| t.0.clone()).unwrap_or_else(|| c.table.clone()),
                        key: c.key.clone(),
                        winner: *winner,
                        incoming: inc
                            .stamp
                            .as_ref()
                            .map(|s| Version { ts: s.ts, site: s.site.clone() })
                            .unwrap_or(Version { ts: 0, site: rules.remote_site.clone() }),
                        incoming_row: c.after.clone(),
                        local: local_version.clone(),
                        local_row: local.row.clone(),
                        position: inc.position.clone(),
                    });
                    *winner == Winner::Incoming
                }
            };
            if !apply {
                continue;
            }
            let new_key = c.new_key();
            if new_key != c.key {
                let old = state.entry(old_id).or_default();
                old.row = None;
                if let Some(s) = &inc.stamp {
                    old.stamp = Some(Stamp { deleted: true, ..s.clone() });
                    old.dirty = true;
                }
            }
            let entry = state.entry((c.table.name.clone(), key_id(&new_key))).or_default();
            entry.row = c.after.clone();
            if let Some(s) = &inc.stamp {
                entry.stamp = Some(s.clone());
                entry.dirty = true;
            }
            accepted.push((inc.txn, c.clone()));
        }

        self.write_accepted(&accepted, batch.one_by_one).await?;
        for (source_name, (table, keys)) in &targets {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<(&Key, &Stamp)> = keys
                .iter()
                .filter(|k| seen.insert(key_id(k)))
                .filter_map(|k| {
                    let local = state.get(&(source_name.clone(), key_id(k)))?;
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
                position: crate::model::Position::Sqlite { seq: 0 },
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

/// Reads the current rows of these keys (`key_id` -> row), locking them.
async fn select_rows(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    keys: &[&Key],
) -> Result<HashMap<Vec<u8>, Row>, Failure> {
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
            out.insert(key_id(&table.key_of(&row)), row);
        }
    }
    Ok(out)
}

/// Appends a conflict to `ferry.ferry_conflict` (inside the resolving transaction).
async fn record(conn: &mut Conn, dir: &DirectionId, rules: &ConflictRules, r: &Record) -> Result<(), Failure> {
    let sql = format!(
        "INSERT INTO {} (task, direction, tbl, pk, policy, winner, incoming_site, incoming_ts, incoming_row, \
         local_site, local_ts, local_row, position, detected_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ferry_table("ferry_conflict")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConflictPolicy;
    use crate::model::{Column, Value};

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName { schema: Some("db".into()), name: "t".into() },
            columns: vec![
                Column { name: "id".into(), decl_type: "int".into(), nullable: false },
                Column { name: "v".into(), decl_type: "int".into(), nullable: true },
            ],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        })
    }

    fn row(v: i64) -> Row {
        vec![Value::Int(1), Value::Int(v)]
    }

    fn stamp(site: &str, ts: i64) -> Stamp {
        Stamp { site: SiteId::new(site), ts, deleted: false }
    }

    fn update(from: i64, to: i64, seen: Option<(&str, i64)>) -> Change {
        Change {
            table: table(),
            op: Op::Update,
            key: vec![Value::Int(1)],
            before: Some(row(from)),
            after: Some(row(to)),
            prior: Prior::Unknown,
            seen: seen.map(|(s, t)| (SiteId::new(s), t)),
            version: None,
        }
    }

    fn rules(policy: ConflictPolicy, local: &str, remote: &str) -> ConflictRules {
        ConflictRules {
            policy,
            from_site: SiteId::new("a"),
            to_site: SiteId::new("b"),
            local_site: SiteId::new(local),
            remote_site: SiteId::new(remote),
        }
    }

    #[test]
    fn an_update_of_the_version_the_source_saw_applies() {
        let local = Local { row: Some(row(1)), stamp: Some(stamp("b", 5)), dirty: false };
        let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
        assert_eq!(judge(&update(1, 2, Some(("b", 5))), Some(&stamp("a", 9)), &local, &r), Verdict::Apply);
    }

    #[test]
    fn an_equal_row_hiding_an_unseen_local_write_is_a_conflict() {
        // Same image, but the local version is one the source never saw.
        let local = Local { row: Some(row(1)), stamp: Some(stamp("b", 7)), dirty: false };
        let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
        let v = judge(&update(1, 2, Some(("b", 5))), Some(&stamp("a", 9)), &local, &r);
        assert_eq!(v, Verdict::Conflict(Winner::Incoming, Version { ts: 7, site: SiteId::new("b") }));
    }

    #[test]
    fn concurrent_updates_pick_the_same_winner_on_both_sides() {
        // a wrote 2 at t=10, b wrote 3 at t=20, both from 1 seen as (a, 1).
        let at_b = judge(
            &update(1, 2, Some(("a", 1))),
            Some(&stamp("a", 10)),
            &Local { row: Some(row(3)), stamp: Some(stamp("b", 20)), dirty: false },
            &rules(ConflictPolicy::LastWriterWins, "b", "a"),
        );
        let at_a = judge(
            &update(1, 3, Some(("a", 1))),
            Some(&stamp("b", 20)),
            &Local { row: Some(row(2)), stamp: Some(stamp("a", 10)), dirty: false },
            &rules(ConflictPolicy::LastWriterWins, "a", "b"),
        );
        assert!(matches!(at_b, Verdict::Conflict(Winner::Local, _)));
        assert!(matches!(at_a, Verdict::Conflict(Winner::Incoming, _)));
    }

    #[test]
    fn an_insert_over_a_deletion_the_source_never_saw_is_a_conflict() {
        let mut insert = update(1, 2, None);
        insert.op = Op::Insert;
        insert.before = None;
        insert.prior = Prior::Fresh;
        let tomb = Local { row: None, stamp: Some(Stamp { deleted: true, ..stamp("b", 8) }), dirty: false };
        let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
        assert!(matches!(judge(&insert, Some(&stamp("a", 9)), &tomb, &r), Verdict::Conflict(Winner::Incoming, _)));
        insert.prior = Prior::Deleted(SiteId::new("b"), 8);
        assert_eq!(judge(&insert, Some(&stamp("a", 9)), &tomb, &r), Verdict::Apply);
    }

    #[test]
    fn a_result_already_here_is_found() {
        let local = Local { row: Some(row(2)), stamp: Some(stamp("b", 7)), dirty: false };
        let r = rules(ConflictPolicy::LogOnly, "b", "a");
        assert_eq!(judge(&update(1, 2, Some(("a", 1))), Some(&stamp("a", 9)), &local, &r), Verdict::Found);
    }
}
