//! The MySQL/MariaDB [`Sink`]: applies batches of whole source transactions in ONE
//! target transaction together with the checkpoint (nothing lost, nothing doubled).
//!
//! Three ways to write a table's changes:
//! - tables without secondary unique keys collapse to the final state per key, written
//!   with multi-row `DELETE … IN (…)` and `INSERT … ON DUPLICATE KEY UPDATE` (the fast
//!   path);
//! - tables with secondary unique keys keep source order (a swap of unique values must
//!   not collide), written as runs of consecutive deletes or upserts: a multi-row
//!   statement processes its rows in order, exactly like one statement per row;
//! - tables with foreign keys, or referenced by one, go in source order across tables
//!   (the target checks foreign keys and runs their ON DELETE/UPDATE actions itself);
//! - `one_by_one` batches go change by change in source order, so a refused change is
//!   named exactly ([`ApplyFailure`]).
//!
//! Which tables have unique and foreign keys is read from the target itself (its
//! constraints are what a change can collide with). One-way batches with `workers` > 1
//! are spread over several sessions by [`super::parallel`].
//!
//! Values are bound as docs/mysql-types.md says (decimals, dates and JSON as exact
//! text) in a UTC session.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::warn;

use super::conflict::Marking;
use super::parallel::{Parents, StreamState, parents_of};
use super::schema::{self, create_sql_columns, create_table_sql, qualified, retarget_create_sql};
use super::snapshot::HEARTBEAT_TABLE;
use super::state::{is_after, slot_progress, stream_key};
use super::values::{param_len, to_param};
use super::{FERRY_DB, MysqlEndpoint, ident, state, versions};
use crate::connector::{
    ApplyBatch, ApplyFailure, ApplyReport, Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, Sink,
    SnapshotRows,
};
use crate::model::{
    Change, Key, Position, Row, SchemaChangeKind, SiteId, TableName, TableSchema, Txn, Value, key_text,
};

/// Server errors that mean a replayed schema change is already in place: table exists,
/// duplicate column, duplicate key name, cannot drop (already gone), duplicate foreign key.
const ALREADY_DONE: [u16; 5] = [1050, 1060, 1061, 1091, 1826];

/// Rows per session below which a snapshot chunk is not spread.
const SPREAD_MIN_ROWS: usize = 5_000;

/// Most placeholders one prepared statement may carry.
const MAX_PLACEHOLDERS: usize = 65_535;
/// Rows per multi-row statement.
const MAX_ROWS_PER_STATEMENT: usize = 1_000;
/// Upper bound on a statement's parameter bytes (kept under the 16 MiB packet, so the
/// driver never falls back to sending long data).
const MAX_STATEMENT_BYTES: usize = 8 << 20;

/// A MySQL/MariaDB server changes are applied to.
pub struct MysqlSink {
    pub(super) ep: MysqlEndpoint,
    pub(super) conn: Conn,
    /// Checkpoint rows committed so far on this connection (slot key -> fingerprint).
    pub(super) written: HashMap<String, String>,
    /// Parameter bytes per statement (a share of max_allowed_packet).
    pub(super) budget: usize,
    /// Two-way: the site changes come from (the direction's source), once set.
    two_way: Option<SiteId>,
    /// How this session marks its two-way transactions, once set up.
    marking: Option<Marking>,
    /// A source commit group is being applied in parts: its transaction is open.
    open_group: bool,
    /// Sessions a batch or a large snapshot chunk is spread over (`workers`), each with
    /// its own stream slot in the checkpoint.
    pub(super) workers: usize,
    /// The extra sessions for that, opened on first use.
    pub(super) helpers: Vec<Conn>,
    /// The target's own description of each target table (unique and foreign keys).
    pub(super) constraints: HashMap<TableName, Arc<TableSchema>>,
    /// What references each parent table (column sets, cascading children), from `constraints`.
    pub(super) parents: Parents,
    /// The stream slots as loaded, and transactions a crash left applied past them.
    pub(super) stream: StreamState,
}

/// How one target table's changes are written.
pub(super) struct Target {
    /// Its name on this server (database resolved).
    pub(super) resolved: TableName,
    /// `db`.`table`, quoted.
    pub(super) sql: String,
    /// Its keys as the target describes them (the change's schema when not described).
    pub(super) keys: Arc<TableSchema>,
    /// Keep source order: it has secondary unique keys.
    pub(super) ordered: bool,
    /// It has foreign keys or is referenced by one.
    pub(super) related: bool,
}

/// Targets by the changes' table names.
pub(super) type Targets = HashMap<TableName, Target>;

/// An error inside the apply transaction, before it gets its context.
pub(super) enum Failure {
    /// A statement failed (the batch is retried change by change by the engine).
    Sql(mysql_async::Error),
    /// A change refused in one-by-one mode.
    Change { txn: usize, table: TableName, key: Key, message: String },
    /// A snapshot row refused in one-by-one mode.
    SnapshotRow { table: TableName, key: Key, message: String },
    /// A setup problem found while applying.
    Setup(ConnectorError),
}

impl From<mysql_async::Error> for Failure {
    fn from(e: mysql_async::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<ConnectorError> for Failure {
    fn from(e: ConnectorError) -> Self {
        Failure::Setup(e)
    }
}

/// The state a key ends in: a row, or gone.
type Final<'a> = (&'a Key, Option<&'a Row>);

impl MysqlSink {
    /// Opens a session on the endpoint for applying.
    pub async fn open(ep: MysqlEndpoint) -> Result<Self, ConnectorError> {
        let mut conn = ep.connect().await?;
        let packet: Option<u64> =
            conn.query_first("SELECT @@max_allowed_packet").await.map_err(ep.error("reading max_allowed_packet"))?;
        let packet = usize::try_from(packet.unwrap_or(16 << 20)).unwrap_or(usize::MAX);
        let budget = (packet / 2).clamp(64 << 10, MAX_STATEMENT_BYTES);
        Ok(MysqlSink {
            ep,
            conn,
            written: HashMap::new(),
            budget,
            workers: 1,
            helpers: Vec::new(),
            two_way: None,
            marking: None,
            open_group: false,
            constraints: HashMap::new(),
            parents: Parents::default(),
            stream: StreamState::default(),
        })
    }

    /// Two-way: changes come from `source_site`; versions the target's tables and judges
    /// every change against them (see `conflict.rs`).
    pub fn with_two_way(mut self, source_site: SiteId) -> Self {
        self.two_way = Some(source_site);
        self
    }

    /// Spreads large snapshot chunks over `workers` sessions.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Writes a snapshot chunk over several sessions at once, each part in its own
    /// transaction, all committed before the caller commits the checkpoint after them: a
    /// crash in between copies the chunk again, and a chunk's upserts are idempotent.
    async fn spread_snapshot(&mut self, snap: &SnapshotRows, parts: usize) -> Result<(), ConnectorError> {
        self.open_helpers(parts - 1).await?;
        let target = qualified(&self.resolve(&snap.table.name)?);
        let per = snap.rows.len().div_ceil(parts);
        let rows: Vec<&Row> = snap.rows.iter().collect();
        let budget = self.budget;
        let mut conns: Vec<&mut Conn> = Vec::with_capacity(parts);
        conns.push(&mut self.conn);
        conns.extend(self.helpers.iter_mut().take(parts - 1));
        let jobs = conns.into_iter().zip(rows.chunks(per)).map(|(conn, part)| {
            let (target, table) = (&target, &*snap.table);
            async move {
                conn.query_drop("START TRANSACTION").await?;
                match upsert_on(conn, budget, target, table, part).await {
                    Ok(()) => conn.query_drop("COMMIT").await,
                    Err(e) => {
                        let _ = conn.query_drop("ROLLBACK").await;
                        Err(e)
                    }
                }
            }
        });
        let results = futures_util::future::join_all(jobs).await;
        for r in results {
            r.map_err(self.ep.error(format!(
                "copying {} snapshot rows of {} over {parts} sessions",
                snap.rows.len(),
                snap.table.name
            )))?;
        }
        Ok(())
    }

    /// Opens extra sessions until there are `n`.
    pub(super) async fn open_helpers(&mut self, n: usize) -> Result<(), ConnectorError> {
        while self.helpers.len() < n {
            self.helpers.push(self.ep.connect().await?);
        }
        Ok(())
    }

    /// How each table of these changes is written.
    pub(super) fn targets<'c>(&self, changes: impl Iterator<Item = &'c Change>) -> Result<Targets, ConnectorError> {
        let mut out = Targets::new();
        for change in changes {
            if out.contains_key(&change.table.name) {
                continue;
            }
            let resolved = self.resolve(&change.table.name)?;
            let keys = self.constraints.get(&resolved).cloned().unwrap_or_else(|| change.table.clone());
            let target = Target {
                sql: qualified(&resolved),
                ordered: !keys.unique_keys.is_empty() || !change.table.unique_keys.is_empty(),
                related: !keys.foreign_keys.is_empty() || self.parents.contains_key(&resolved),
                resolved,
                keys,
            };
            out.insert(change.table.name.clone(), target);
        }
        Ok(out)
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

    /// Where a table lives on this server: its database, or the URL's for names without
    /// one (the heartbeat table always lives in `ferry`).
    pub(super) fn resolve(&self, name: &TableName) -> Result<TableName, ConnectorError> {
        if name.schema.is_some() {
            return Ok(name.clone());
        }
        if name.name == HEARTBEAT_TABLE {
            return Ok(TableName { schema: Some(FERRY_DB.into()), name: name.name.clone() });
        }
        match self.ep.opts.db_name() {
            Some(db) => Ok(TableName { schema: Some(db.to_string()), name: name.name.clone() }),
            None => Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("table {name} names no database, and the endpoint url has none"),
                fix: format!(
                    "put the database in the target url (mysql://USER:PASSWORD@HOST:PORT/DB) or map the table with [[task.map]] to = \"DB.{}\"",
                    name.name
                ),
            }),
        }
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
        let done: Vec<bool> =
            batch.txns.iter().map(|t| self.stream.applied.contains_key(&stream_key(&t.position))).collect();
        if batch.one_by_one {
            for (t, txn) in batch.txns.iter().enumerate().filter(|(t, _)| !done[*t]) {
                for change in &txn.changes {
                    let target = qualified(&self.resolve(&change.table.name)?);
                    match self.write_change(&target, change).await {
                        Ok(()) => report.rows += 1,
                        Err(e) => {
                            return Err(match refusal(e) {
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
                        return Err(match refusal(e) {
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
                self.upsert_rows(&target, &snap.table, &rows).await?;
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
    pub(super) async fn checkpoint_all(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
    ) -> Result<Vec<(String, String)>, Failure> {
        let position = batch.checkpoint.position.as_ref();
        let still: Vec<&Position> =
            self.stream.applied.values().filter(|p| position.is_none_or(|end| is_after(p, end))).collect();
        let streams: Vec<(usize, Option<String>)> =
            (0..self.workers).map(|w| (w, if w == 0 { slot_progress(&still) } else { None })).collect();
        if !self.stream.settled {
            state::drop_stream_slots_from(&mut self.conn, dir, self.workers).await?;
        }
        Ok(state::write_checkpoint(&mut self.conn, dir, &batch.checkpoint, &self.written, &streams, true).await?)
    }

    /// Writes the transactions' changes on the main session (see [`write_changes`]).
    pub(super) async fn apply_grouped(&mut self, txns: &[&Txn]) -> Result<u64, Failure> {
        let changes: Vec<&Change> = txns.iter().flat_map(|t| &t.changes).collect();
        let targets = self.targets(changes.iter().copied())?;
        write_changes(&mut self.conn, self.budget, &targets, &changes).await?;
        Ok(changes.len() as u64)
    }

    /// One change on its own, a refusal naming it (txn index `t` of the batch).
    pub(super) async fn write_one(&mut self, t: usize, change: &Change) -> Result<(), Failure> {
        let target = qualified(&self.resolve(&change.table.name)?);
        match self.write_change(&target, change).await {
            Ok(()) => Ok(()),
            Err(e) => Err(match refusal(e) {
                Ok(message) if t != usize::MAX => {
                    Failure::Change { txn: t, table: change.table.name.clone(), key: change.new_key(), message }
                }
                Ok(message) => {
                    Failure::SnapshotRow { table: change.table.name.clone(), key: change.new_key(), message }
                }
                Err(e) => Failure::Sql(e),
            }),
        }
    }

    /// One change on its own (one-by-one mode).
    async fn write_change(&mut self, target: &str, change: &Change) -> Result<(), mysql_async::Error> {
        let table = &change.table;
        match &change.after {
            None => self.delete_keys(target, table, &[&change.key]).await,
            Some(after) => {
                if table.key_of(after) != change.key {
                    self.delete_keys(target, table, &[&change.key]).await?;
                }
                self.upsert_rows(target, table, &[after]).await
            }
        }
    }

    async fn delete_keys(
        &mut self,
        target: &str,
        table: &TableSchema,
        keys: &[&Key],
    ) -> Result<(), mysql_async::Error> {
        delete_on(&mut self.conn, self.budget, target, table, keys).await
    }

    async fn upsert_rows(
        &mut self,
        target: &str,
        table: &TableSchema,
        rows: &[&Row],
    ) -> Result<(), mysql_async::Error> {
        upsert_on(&mut self.conn, self.budget, target, table, rows).await
    }

    fn failure(&self, f: Failure, batch: &ApplyBatch) -> ConnectorError {
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
        }
    }
}

/// Writes changes on one session, in its open transaction: grouped by table (source
/// order kept within each), each table collapsed to its final rows, or in order when it
/// has secondary unique keys. When a foreign key ties any of the tables, everything goes
/// in source order instead: foreign_key_checks stays on in apply sessions because the
/// binlog does not carry the rows an ON DELETE/UPDATE CASCADE changed, so the target's
/// InnoDB must run those actions itself, and it checks references while doing so.
pub(super) async fn write_changes(
    conn: &mut Conn,
    budget: usize,
    targets: &Targets,
    changes: &[&Change],
) -> Result<(), mysql_async::Error> {
    if changes.iter().any(|c| targets.get(&c.table.name).is_some_and(|t| t.related)) {
        return write_in_order(conn, budget, targets, changes).await;
    }
    let mut groups: Vec<Vec<&Change>> = Vec::new();
    let mut index: HashMap<&TableName, usize> = HashMap::new();
    for change in changes {
        let i = *index.entry(&change.table.name).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(change);
    }
    for changes in &groups {
        let table = &changes[0].table;
        if target_of(targets, &table.name)?.ordered {
            write_in_order(conn, budget, targets, changes).await?;
        } else {
            write_collapsed(conn, budget, targets, table, changes).await?;
        }
    }
    Ok(())
}

/// The target of a change's table (every table of a batch has one).
fn target_of<'t>(targets: &'t Targets, name: &TableName) -> Result<&'t Target, mysql_async::Error> {
    targets.get(name).ok_or_else(|| mysql_async::Error::Other(format!("no target for table {name}").into()))
}

/// Final state per key, then all deletes and all upserts as multi-row statements.
async fn write_collapsed(
    conn: &mut Conn,
    budget: usize,
    targets: &Targets,
    table: &TableSchema,
    changes: &[&Change],
) -> Result<(), mysql_async::Error> {
    let target = &target_of(targets, &table.name)?.sql;
    let mut finals: Vec<(Key, Option<&Row>)> = Vec::with_capacity(changes.len());
    let mut index: HashMap<Vec<u8>, usize> = HashMap::with_capacity(changes.len());
    for change in changes {
        match &change.after {
            None => set_final(&mut finals, &mut index, change.key.clone(), None),
            Some(after) => {
                let new_key = table.key_of(after);
                if new_key != change.key {
                    set_final(&mut finals, &mut index, change.key.clone(), None);
                }
                set_final(&mut finals, &mut index, new_key, Some(after));
            }
        }
    }
    let finals: Vec<Final<'_>> = finals.iter().map(|(k, r)| (k, *r)).collect();
    let deletes: Vec<&Key> = finals.iter().filter(|(_, r)| r.is_none()).map(|(k, _)| *k).collect();
    let upserts: Vec<&Row> = finals.iter().filter_map(|(_, r)| *r).collect();
    delete_on(conn, budget, target, table, &deletes).await?;
    upsert_on(conn, budget, target, table, &upserts).await
}

/// Source order, as runs of consecutive deletes or upserts of one table: a multi-row
/// statement processes its rows in order, exactly like one statement per row.
async fn write_in_order(
    conn: &mut Conn,
    budget: usize,
    targets: &Targets,
    changes: &[&Change],
) -> Result<(), mysql_async::Error> {
    let mut run: Option<&Arc<TableSchema>> = None;
    let mut deletes: Vec<&Key> = Vec::new();
    let mut upserts: Vec<&Row> = Vec::new();
    for change in changes {
        let table = &change.table;
        if let Some(t) = run.filter(|t| t.name != table.name) {
            let target = &target_of(targets, &t.name)?.sql;
            delete_on(conn, budget, target, t, &deletes).await?;
            upsert_on(conn, budget, target, t, &upserts).await?;
            deletes.clear();
            upserts.clear();
        }
        run = Some(table);
        let target = &target_of(targets, &table.name)?.sql;
        let old_goes = match &change.after {
            None => true,
            Some(after) => table.key_of(after) != change.key,
        };
        if old_goes {
            upsert_on(conn, budget, target, table, &upserts).await?;
            upserts.clear();
            deletes.push(&change.key);
        }
        if let Some(after) = &change.after {
            delete_on(conn, budget, target, table, &deletes).await?;
            deletes.clear();
            upserts.push(after);
        }
    }
    if let Some(t) = run {
        let target = &target_of(targets, &t.name)?.sql;
        delete_on(conn, budget, target, t, &deletes).await?;
        upsert_on(conn, budget, target, t, &upserts).await?;
    }
    Ok(())
}

/// Multi-row `DELETE … WHERE key IN (…)` on one session.
async fn delete_on(
    conn: &mut Conn,
    budget: usize,
    target: &str,
    table: &TableSchema,
    keys: &[&Key],
) -> Result<(), mysql_async::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let width = table.primary_key.len().max(1);
    for chunk in split(keys, width, budget, |k| k.iter().map(param_len).sum()) {
        let sql = format!("DELETE FROM {target} WHERE {}", schema::key_in(table, chunk.len()));
        let params: Vec<mysql_async::Value> = chunk.iter().flat_map(|k| k.iter().map(to_param)).collect();
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// The server's message when a statement was refused because of its data (not for
/// broken connections, deadlocks or lock waits, which are worth retrying).
fn refusal(e: mysql_async::Error) -> Result<String, mysql_async::Error> {
    match e {
        mysql_async::Error::Server(s) if !super::lock_conflict(&e) => Ok(format!("{} (error {})", s.message, s.code)),
        e => Err(e),
    }
}

/// Multi-row `INSERT … ON DUPLICATE KEY UPDATE` of whole rows on one session.
async fn upsert_on(
    conn: &mut Conn,
    budget: usize,
    target: &str,
    table: &TableSchema,
    rows: &[&Row],
) -> Result<(), mysql_async::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let width = table.columns.len();
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let mut sets: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.primary_key.contains(i))
        .map(|(_, c)| format!("{0} = VALUES({0})", ident(&c.name)))
        .collect();
    if sets.is_empty() {
        // Every column is part of the key: nothing to update on a duplicate.
        sets.push(format!("{0} = {0}", cols[0]));
    }
    let tuple = format!("({})", vec!["?"; width].join(","));
    for chunk in split(rows, width, budget, |r| r.iter().map(param_len).sum()) {
        let sql = format!(
            "INSERT INTO {target} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            cols.join(","),
            vec![tuple.as_str(); chunk.len()].join(","),
            sets.join(", ")
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * width);
        for r in chunk {
            if r.len() != width {
                return Err(mysql_async::Error::Other(
                    format!("a row of {} has {} values for {width} columns", table.name, r.len()).into(),
                ));
            }
            params.extend(r.iter().map(to_param));
        }
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// Splits items into statements of at most 1,000 rows, 65,535 placeholders and the
/// byte budget (a single larger row goes alone).
fn split<T>(items: &[T], width: usize, budget: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let per = (MAX_PLACEHOLDERS / width.max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= per || bytes + n > budget) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Records the state a key ends in (the last change to it wins).
fn set_final<'a>(
    finals: &mut Vec<(Key, Option<&'a Row>)>,
    index: &mut HashMap<Vec<u8>, usize>,
    key: Key,
    state: Option<&'a Row>,
) {
    let id = key_id(&key);
    match index.get(&id) {
        Some(&i) => finals[i].1 = state,
        None => {
            index.insert(id, finals.len());
            finals.push((key, state));
        }
    }
}

/// A key as bytes that are equal exactly when the keys are (floats by their bits).
pub(super) fn key_id(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() * 9);
    for v in key {
        match v {
            Value::Null => out.push(0),
            Value::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::UInt(u) => {
                out.push(2);
                out.extend_from_slice(&u.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(5);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
            other => {
                let s = format!("{other:?}");
                out.push(6);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

impl Sink for MysqlSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        state::ensure_target_tables(&self.ep, &mut self.conn).await
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
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
                }
                None => {
                    self.create_table(t, &name).await?;
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
        self.stream = StreamState::loaded(slots);
        if !self.stream.applied.is_empty() {
            tracing::info!(endpoint = %self.ep.name, direction = %dir, transactions = self.stream.applied.len(), "a worker had committed transactions past the lowest stream slot; they are not applied again");
        }
        Ok(cp)
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        if let Some(rules) = &batch.conflicts {
            return self.apply_two_way_batch(dir, batch, rules).await;
        }
        // A schema change travels alone (see the binlog reader): it commits by itself, so
        // it runs before the transaction that records the checkpoint after it.
        for txn in batch.txns.iter().filter(|t| !t.ddl.is_empty()) {
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
                self.spread_snapshot(snap, parts).await?;
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
                Err(self.failure(f, batch))
            }
        }
    }

    async fn lease(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<LeaseOutcome, ConnectorError> {
        state::take_lease(&self.ep, &mut self.conn, dir, holder).await
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        state::drop_lease(&self.ep, &mut self.conn, dir, holder).await
    }
}

impl MysqlSink {
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
                Err(f) => self.failure(f, batch),
            };
            let _ = self.conn.query_drop("ROLLBACK").await;
            // Earlier parts of an open group went with the rollback: the engine reads the
            // group again rather than this part alone.
            if attempt < 5 && !continuing && super::conflict::retry_at_once(&err) {
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

    /// Creates a missing target table: from the source's own CREATE TABLE when its
    /// columns are the target's, else from the columns and keys.
    async fn create_table(&mut self, t: &TableSchema, name: &TableName) -> Result<(), ConnectorError> {
        let Some(db) = &name.schema else { return Ok(()) };
        let what = format!("creating table {name}");
        self.ep.exec(&mut self.conn, &what, &format!("CREATE DATABASE IF NOT EXISTS {}", ident(db))).await?;
        let want: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        let from_source = t
            .create_sql
            .as_deref()
            .filter(|sql| create_sql_columns(sql).as_ref() == Some(&want))
            .and_then(|sql| retarget_create_sql(sql, name));
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
        match result {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(self.ep.error(format!("{what} with {from_columns}"))(e)),
            Err(None) => Ok(()),
        }
    }
}
