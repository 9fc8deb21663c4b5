//! Applying changes on a MySQL/MariaDB target: the [`MysqlSink`]'s sessions, where each
//! changed table lives on this server, and the writer of its changes. The sink's
//! contract on top of them (a batch in one target transaction with its checkpoint) is
//! `sink.rs`; two-way judging is `conflict.rs`, several sessions at once `parallel.rs`.
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
//!   named exactly (`ApplyFailure`).
//!
//! Which tables have unique and foreign keys is read from the target itself (its
//! constraints are what a change can collide with). One-way batches with `workers` > 1
//! are spread over several sessions by `parallel.rs`.
//!
//! Values are bound as docs/mysql-types.md says (decimals, dates and JSON as exact
//! text) in a UTC session.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::names::HEARTBEAT_TABLE;
use super::schema::{self, Parents, qualified};
use super::state::StreamState;
use super::values::{param_len, to_param};
use super::versions::Marking;
use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::parallel::partition::SplitBackoff;
use crate::connector::{ConnectorError, LeaseHolder};
use crate::model::finals::Finals;
use crate::model::{Change, Key, Row, SiteId, TableName, TableSchema, Txn, Value, by_table};

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
    /// The lease's own session, opened on first use: taking or renewing the lease runs a
    /// transaction of its own, which on `conn` would commit an open commit group.
    pub(super) lease_conn: Option<Conn>,
    /// The direction and fencing token whose lease this sink holds: its sessions are
    /// marked as the holder's (see `state::session_lock`), helpers as they open.
    pub(super) tenure: Option<(crate::connector::DirectionId, i64)>,
    /// Checkpoint rows committed so far on this connection (slot key -> fingerprint).
    pub(super) written: HashMap<String, String>,
    /// Parameter bytes per statement (a share of max_allowed_packet).
    pub(super) budget: usize,
    /// Two-way: the site changes come from (the direction's source), once set.
    pub(super) two_way: Option<SiteId>,
    /// How this session marks its two-way transactions, once set up.
    pub(super) marking: Option<Marking>,
    /// A source commit group is being applied in parts: its transaction is open.
    pub(super) open_group: bool,
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
    /// Whether recent batches split into shares (skips a partition bound to fail).
    pub(super) split: SplitBackoff,
    /// Snapshot chunks may go as `LOAD DATA LOCAL INFILE` (until the server refuses it).
    pub(super) load_data: bool,
    /// Tables ferry created here whose plain secondary keys wait for the end of their
    /// copy (`deferred.rs`), by target name.
    pub(super) deferred: std::collections::BTreeMap<TableName, Vec<super::deferred::DeferredIndex>>,
    /// The holder and time to live of the last lease taken, to renew it while a deferred
    /// index is built (that can outlast the lease).
    pub(super) holder: Option<(LeaseHolder, std::time::Duration)>,
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

impl crate::connector::parallel::partition::KeyedTarget for Target {
    fn resolved(&self) -> &TableName {
        &self.resolved
    }
    fn keys(&self) -> &TableSchema {
        &self.keys
    }
}

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
    /// The direction's lease carries another fencing token now (its holder): another
    /// process took it over, and nothing of the batch may land.
    Fenced(LeaseHolder),
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
            lease_conn: None,
            tenure: None,
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
            split: SplitBackoff::default(),
            load_data: true,
            deferred: Default::default(),
            holder: None,
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

    /// Opens extra sessions until there are `n`.
    pub(super) async fn open_helpers(&mut self, n: usize) -> Result<(), ConnectorError> {
        while self.helpers.len() < n {
            let mut conn = self.ep.connect().await?;
            if let Some((dir, _)) = &self.tenure {
                let role = (self.helpers.len() + 1).to_string();
                super::state::mark_session(&mut conn, dir, &role)
                    .await
                    .map_err(self.ep.error(format!("marking an apply session of {dir}")))?;
            }
            self.helpers.push(conn);
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
            Err(e) => Err(match refusal(e, &change.table) {
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
    pub(super) async fn write_change(&mut self, target: &str, change: &Change) -> Result<(), mysql_async::Error> {
        let table = &change.table;
        match &change.after {
            None => self.delete_keys(target, table, &[change.key.as_slice()]).await,
            Some(after) => {
                if change.moves_key() {
                    self.delete_keys(target, table, &[change.key.as_slice()]).await?;
                }
                self.upsert_rows(target, table, &[after]).await
            }
        }
    }

    async fn delete_keys(
        &mut self,
        target: &str,
        table: &TableSchema,
        keys: &[&[Value]],
    ) -> Result<(), mysql_async::Error> {
        delete_on(&mut self.conn, self.budget, target, table, keys).await
    }

    pub(super) async fn upsert_rows(
        &mut self,
        target: &str,
        table: &TableSchema,
        rows: &[&Row],
    ) -> Result<(), mysql_async::Error> {
        upsert_on(&mut self.conn, self.budget, target, table, rows).await
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
    let groups = by_table(changes.iter().copied());
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
    let finals = Finals::of(changes);
    delete_on(conn, budget, target, table, &finals.deletes()).await?;
    upsert_on(conn, budget, target, table, &finals.upserts()).await
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
    let mut deletes: Vec<&[Value]> = Vec::new();
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
        let old_goes = change.after.is_none() || change.moves_key();
        if old_goes {
            upsert_on(conn, budget, target, table, &upserts).await?;
            upserts.clear();
            deletes.push(change.key.as_slice());
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
    keys: &[&[Value]],
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

/// The server's message when a statement writing a row of `table` was refused because
/// of its data (see [`super::error_kind`]); anything else (a full disk or table, a lost
/// connection, a deadlock or lock wait) is worth retrying and comes back as it was.
pub(super) fn refusal(e: mysql_async::Error, table: &TableSchema) -> Result<String, mysql_async::Error> {
    match e {
        mysql_async::Error::Server(s) if s.code == 1048 && names_key_column(&s.message, table) => Ok(format!(
            "another row of the target holds one of this row's values of a unique key that is not the primary key, so writing it would overwrite that row (the upsert's guard answered: {} (error {}))",
            s.message, s.code
        )),
        mysql_async::Error::Server(s) if super::refuses_data(s.code) => Ok(format!("{} (error {})", s.message, s.code)),
        e => Err(e),
    }
}

/// Whether a "Column 'x' cannot be null" message names a primary key column of `table`
/// (the upsert's guard, see [`upsert_on`]).
fn names_key_column(message: &str, table: &TableSchema) -> bool {
    table.key_columns().iter().any(|c| message.contains(&format!("'{c}'")))
}

/// Multi-row `INSERT … ON DUPLICATE KEY UPDATE` of whole rows on one session.
pub(super) async fn upsert_on(
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
    // An upsert is by primary key. ON DUPLICATE KEY UPDATE fires on any unique key, so a
    // row colliding with ANOTHER row on a unique key that is not the primary key would
    // silently overwrite that row: the guard sets the (NOT NULL) key to NULL then, which
    // strict mode refuses (1048), and the refusal is explained as the collision it is.
    let pk: Vec<&String> = table.primary_key.iter().filter_map(|&i| cols.get(i)).collect();
    let same_row = pk.iter().map(|c| format!("{c} <=> VALUES({c})")).collect::<Vec<_>>().join(" AND ");
    let mut sets: Vec<String> = Vec::with_capacity(width);
    if let Some(first) = pk.first() {
        sets.push(format!("{first} = IF({same_row}, {first}, NULL)"));
    }
    sets.extend(
        table
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !table.primary_key.contains(i))
            .map(|(_, c)| format!("{0} = VALUES({0})", ident(&c.name))),
    );
    if sets.is_empty() {
        // No key described: nothing to update on a duplicate.
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
