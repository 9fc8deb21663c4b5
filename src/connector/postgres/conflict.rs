//! Two-way apply on a PostgreSQL target: every incoming change is judged against the
//! target's current row and its version (`versions.rs`) by the rule every store shares
//! (`model::conflict::judge_batch`), conflicts are resolved by the task's policy and
//! recorded in `ferry.ferry_conflict` in the same transaction.
//!
//! The batch's rows and versions are read once and locked (`FOR UPDATE`, so an
//! application write cannot slip in between judging and writing). A key that had no row
//! cannot be locked: its row is inserted with `ON CONFLICT DO NOTHING`, and a row an
//! application inserted meanwhile makes the batch start again (the sink rolls back and
//! judges anew, seeing that row). Loop prevention is the replication origin the sink's
//! session carries (`sink.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::Row as _;

use super::sink::PgSink;
use super::values::{Kind, decode, encode};
use super::{PgEndpoint, ferry_table, ident, qualified, versions};
use crate::connector::sqlite::state::row_json;
use crate::connector::{ApplyBatch, ApplyFailure, ApplyReport, ConflictRules, ConnectorError, DirectionId, ErrorKind};
use crate::model::conflict::{KeyStates, Local, Stamp, judge_batch};
use crate::model::{Change, HashKey, Key, Position, Row, TableName, TableSchema, key_text, now_micros};

/// Keys of the batch that had no row when it was read (per source table name).
pub(super) type Fresh = HashSet<(TableName, HashKey)>;

impl PgSink {
    /// Applies a two-way batch inside the open transaction: judge, write, version, record.
    pub(super) async fn write_two_way(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
        rules: &ConflictRules,
    ) -> Result<ApplyReport, ConnectorError> {
        let snapshot_changes = batch.snapshot_changes();
        let (incoming, txn_of) = batch.incoming(&snapshot_changes, super::names::HEARTBEAT_TABLE);
        let positions: Vec<Option<&Position>> = txn_of.iter().map(|t| t.map(|t| &batch.txns[t].position)).collect();

        // The batch's keys (old and new) per table, as the target types them.
        let mut targets: HashMap<TableName, (Arc<TableSchema>, Vec<Key>)> = HashMap::new();
        for inc in incoming.iter().filter(|i| !i.free) {
            let c = inc.change;
            if !targets.contains_key(&c.table.name) {
                let typed = self.typed(&c.table).await?;
                targets.insert(c.table.name.clone(), (typed, Vec::new()));
            }
            let Some(entry) = targets.get_mut(&c.table.name) else { continue };
            entry.1.push(c.key.clone());
            let new_key = c.new_key();
            if new_key != c.key {
                entry.1.push(new_key);
            }
        }
        let mut state: KeyStates = HashMap::new();
        let mut fresh: Fresh = HashSet::new();
        for (source_name, (table, keys)) in targets.iter_mut() {
            let mut once = HashSet::new();
            keys.retain(|k| once.insert(HashKey(k.clone())));
            let refs: Vec<&Key> = keys.iter().collect();
            let rows = select_rows(&self.ep, &mut self.conn, table, &refs).await?;
            let stamps = versions::load(&self.ep, &mut self.conn, table, &refs, true).await?;
            for (i, k) in keys.iter().enumerate() {
                let id = HashKey(k.clone());
                let local = Local { row: rows.get(&i).cloned(), stamp: stamps.get(&i).cloned(), dirty: false };
                if local.row.is_none() {
                    fresh.insert((source_name.clone(), id.clone()));
                }
                state.insert((source_name.clone(), id), local);
            }
        }

        // Judge in source order; the state follows every accepted change.
        let judged = judge_batch(&incoming, &mut state, rules);
        let report = ApplyReport { rows: incoming.len() as u64, conflicts: judged.conflicts.len() as u64 };
        if batch.one_by_one {
            for &i in &judged.accepted {
                let c = incoming[i].change;
                if let Err(e) = self.write_final(&[c], Some(&fresh)).await {
                    return Err(match (e.kind(), positions[i]) {
                        (ErrorKind::Refused, Some(position)) if !self.raced => {
                            ConnectorError::Apply(Box::new(ApplyFailure {
                                endpoint: self.ep.name.clone(),
                                position: position.clone(),
                                table: c.table.name.clone(),
                                key: key_text(&c.key),
                                message: match &e {
                                    ConnectorError::Postgres { source, .. } => source.to_string(),
                                    other => other.to_string(),
                                },
                                in_parts: false,
                            }))
                        }
                        _ => e,
                    });
                }
            }
        } else {
            let accepted: Vec<&Change> = judged.accepted.iter().map(|&i| incoming[i].change).collect();
            self.write_final(&accepted, Some(&fresh)).await?;
        }
        for (source_name, (table, keys)) in &targets {
            let entries: Vec<(&Key, &Stamp)> = keys
                .iter()
                .filter_map(|k| {
                    let local = state.get(&(source_name.clone(), HashKey(k.clone())))?;
                    local.dirty.then_some(())?;
                    Some((k, local.stamp.as_ref()?))
                })
                .collect();
            versions::store(&self.ep, &mut self.conn, table, &entries).await?;
        }
        for m in &judged.conflicts {
            let inc = &incoming[m.index];
            let c = inc.change;
            let table = targets.get(&c.table.name).map(|t| t.0.clone()).unwrap_or_else(|| c.table.clone());
            let sql = format!(
                "INSERT INTO {} (task, direction, tbl, pk, policy, winner, incoming_site, incoming_ts, incoming_row, \
                 local_site, local_ts, local_row, position, detected_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                ferry_table(super::names::CONFLICT_TABLE)
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&dir.task)
                .bind(dir.direction())
                .bind(table.name.to_string())
                .bind(key_text(&c.key))
                .bind(rules.policy.to_string())
                .bind(m.winner.as_str())
                .bind(m.incoming.site.as_str())
                .bind(m.incoming.ts)
                .bind(row_json(&table, c.after.as_ref()))
                .bind(m.local.site.as_str())
                .bind(m.local.ts)
                .bind(row_json(&table, m.local_row.as_ref()))
                .bind(&inc.position)
                .bind(now_micros())
                .execute(&mut self.conn)
                .await
                .map_err(self.ep.error(format!("recording a conflict on {} in ferry.ferry_conflict", table.name)))?;
        }
        Ok(report)
    }

    /// A source table as this target holds it: the target's name and, for each of the
    /// source's columns, the target's type (so rows read here compare with incoming ones).
    async fn typed(&mut self, source: &Arc<TableSchema>) -> Result<Arc<TableSchema>, ConnectorError> {
        let target = self.target(&source.name).await?;
        let names: Vec<&str> = source.columns.iter().map(|c| c.name.as_str()).collect();
        let types = super::sink::column_types(&self.ep, &target, &names)?;
        let mut t = (**source).clone();
        t.name = target.name.clone();
        for (c, ty) in t.columns.iter_mut().zip(types) {
            c.decl_type = ty;
        }
        Ok(Arc::new(t))
    }
}

/// The current rows of these keys (by index in `keys`), locked.
async fn select_rows(
    ep: &PgEndpoint,
    conn: &mut sqlx::postgres::PgConnection,
    t: &TableSchema,
    keys: &[&Key],
) -> Result<HashMap<usize, Row>, ConnectorError> {
    let mut out = HashMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let n = t.primary_key.len();
    let arrays: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 1)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let cond: Vec<String> = t
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, &c)| format!("t.{} = u.k{i}::{}", ident(&t.columns[c].name), t.columns[c].decl_type))
        .collect();
    let cols: Vec<String> = t.columns.iter().map(|c| format!("t.{}::text", ident(&c.name))).collect();
    let sql = format!(
        "SELECT u.i, {} FROM unnest({}) WITH ORDINALITY AS u({}, i) JOIN {} AS t ON {} FOR UPDATE OF t",
        cols.join(", "),
        arrays.join(", "),
        names.join(", "),
        qualified(&t.name),
        cond.join(" AND ")
    );
    let kinds = Kind::of_columns(&t.columns);
    for (part_no, part) in keys.chunks(5_000).enumerate() {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for i in 0..n {
            let col: Vec<Option<String>> = part.iter().map(|k| k.get(i).and_then(encode)).collect();
            q = q.bind(col);
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(ep.error(format!("reading rows of {}", t.name)))?;
        for r in rows {
            let i: i64 = r.get(0);
            let mut row = Vec::with_capacity(kinds.len());
            for (c, &k) in kinds.iter().enumerate() {
                let text: Option<String> = r.get(c + 1);
                row.push(match text {
                    None => crate::model::Value::Null,
                    Some(s) => decode(k, &s).map_err(|e| ConnectorError::Setup {
                        endpoint: ep.name.clone(),
                        problem: format!("column {}.{}: {e}", t.name, t.columns[c].name),
                        fix: "leave the table out of the task's tables, or report the value as a bug".into(),
                    })?,
                });
            }
            out.insert(part_no * 5_000 + usize::try_from(i - 1).unwrap_or(0), row);
        }
    }
    Ok(out)
}

/// Whether a failed two-way batch is worth running again at once: a deadlock with an
/// application transaction over the rows it locks, or a serialization failure.
pub(super) fn retry_at_once(e: &ConnectorError) -> bool {
    match e {
        ConnectorError::Postgres { source, .. } => {
            matches!(super::sqlstate(source).as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}
