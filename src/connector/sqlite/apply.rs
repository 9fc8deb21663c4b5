//! The SQLite [`Sink`]: applies batches of whole source transactions in one target
//! transaction together with the checkpoint.
//!
//! Two paths. One-way batches on tables without secondary unique keys collapse to the
//! final state per key and are written with multi-row upserts and deletes (the fast
//! path). Everything else goes change by change in source order: two-way batches, which
//! compare each change's before-image with the target row and resolve conflicts, and
//! tables whose unique keys make the order of writes matter.
//!
//! While ferry writes, `ferry_apply_origin` holds the origin and commit time of the
//! transaction being applied, so the target's capture triggers record it (loop
//! prevention, and the version last-writer-wins compares).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{Arguments as _, AssertSqlSafe, Row as _};

use super::literal::{ident, parse_row, row_expr};
use super::schema::{self, create_table_sql};
use super::state::{self, ConflictRecord};
use super::values::{UnstorableValue, add_value, bind_all};
use super::{Access, SqliteEndpoint, begin_immediate, commit, ensure_wal, exec_batch, migrate, rollback};
use crate::connector::{
    ApplyBatch, ApplyFailure, ApplyReport, Checkpoint, ConflictRules, ConnectorError, DirectionId, ErrorKind,
    LeaseHolder, LeaseOutcome, Sink,
};
use crate::model::ConflictPolicy;
use crate::model::conflict::{Version, Winner, resolve};
use crate::model::finals::Finals;
use crate::model::{Change, Key, Op, Prior, Row, SiteId, TableSchema, Txn, Value, by_table, key_text, same_row};

/// Most bound values SQLite accepts in one statement, with room to spare.
const MAX_BINDS: usize = 30_000;
/// Rows per multi-row statement.
const MAX_ROWS_PER_STATEMENT: usize = 500;

/// A SQLite database changes are applied to.
pub struct SqliteSink {
    ep: SqliteEndpoint,
    conn: SqliteConnection,
    written: HashMap<String, String>,
    /// A transaction left open by a part of a commit group (`ApplyBatch::commit` false),
    /// with the checkpoint slots as they were before it.
    open: Option<HashMap<String, String>>,
    /// Whether the connection runs `synchronous = FULL` (each commit fsyncs the WAL)
    /// rather than the connection's default `NORMAL` (synced at checkpoints only).
    full_sync: bool,
}

/// An error inside the apply transaction, before it is given its context.
enum Failure {
    Sql(sqlx::Error),
    /// Another process took the lease over (its holder): nothing of the batch may land.
    Fenced(LeaseHolder),
    Unstorable(UnstorableValue),
    Row {
        txn_position: String,
        table: Arc<TableSchema>,
        key: Key,
        message: String,
    },
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<UnstorableValue> for Failure {
    fn from(e: UnstorableValue) -> Self {
        Failure::Unstorable(e)
    }
}

impl SqliteSink {
    /// Opens the endpoint for applying.
    pub async fn open(ep: SqliteEndpoint, access: Access) -> Result<Self, ConnectorError> {
        let conn = ep.connect(access).await?;
        Ok(SqliteSink { ep, conn, written: HashMap::new(), open: None, full_sync: false })
    }

    /// Makes the next transaction's commit fsync the WAL or not. In WAL mode with
    /// `synchronous = NORMAL` a commit is on disk only after the next checkpoint, which
    /// a batch that must be flushed cannot wait for; SQLite takes the setting only
    /// between transactions.
    async fn sync_commits(&mut self, full: bool) -> Result<(), sqlx::Error> {
        if self.full_sync != full {
            let level = if full { "FULL" } else { "NORMAL" };
            exec_batch(&mut self.conn, format!("PRAGMA synchronous = {level}")).await?;
            self.full_sync = full;
        }
        Ok(())
    }

    async fn set_origin(&mut self, origin: &SiteId, ts: i64) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO ferry_apply_origin(id, origin, ts) VALUES (1, ?1, ?2) ON CONFLICT(id) DO UPDATE SET origin = excluded.origin, ts = excluded.ts")
            .bind(origin.as_str())
            .bind(ts)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn apply_inner(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, Failure> {
        let mut report = ApplyReport::default();
        let ordered = batch.one_by_one
            || batch.conflicts.is_some()
            || batch.txns.iter().flat_map(|t| &t.changes).any(|c| !c.table.unique_keys.is_empty());
        if let Some(last) = batch.txns.last() {
            self.set_origin(&last.origin, last.commit_ts).await?;
        }
        if ordered {
            let mut current: Option<(SiteId, i64)> = batch.txns.last().map(|t| (t.origin.clone(), t.commit_ts));
            for txn in &batch.txns {
                for change in &txn.changes {
                    // A source that versions each row (MySQL two-way) gives each change
                    // its own version; the changelog must record that one, which the
                    // source compares against later.
                    let (site, ts) = change.version.clone().unwrap_or_else(|| (txn.origin.clone(), txn.commit_ts));
                    if current.as_ref() != Some(&(site.clone(), ts)) {
                        self.set_origin(&site, ts).await?;
                        current = Some((site.clone(), ts));
                    }
                    let version = Version { ts, site };
                    let pos = txn.position.to_string();
                    match self.apply_change(dir, change, &version, batch.conflicts.as_ref(), &pos).await {
                        Ok(conflict) => {
                            report.rows += 1;
                            report.conflicts += u64::from(conflict);
                        }
                        // Only a refusal of the row's data names it for a decision; a
                        // busy or full database is retried, never skipped.
                        Err(Failure::Sql(e)) if batch.one_by_one && super::error_kind(&e) == ErrorKind::Refused => {
                            return Err(Failure::Row {
                                txn_position: pos,
                                table: change.table.clone(),
                                key: change.new_key(),
                                message: e.to_string(),
                            });
                        }
                        Err(Failure::Unstorable(e)) => {
                            return Err(Failure::Row {
                                txn_position: pos,
                                table: change.table.clone(),
                                key: change.new_key(),
                                message: e.to_string(),
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        } else {
            report.rows += self.apply_collapsed(&batch.txns).await?;
        }
        if let Some(snap) = &batch.snapshot {
            match &batch.conflicts {
                None => {
                    // Every row of a chunk is written: nothing to collapse or delete.
                    let rows: Vec<&Row> = snap.rows.iter().collect();
                    self.upsert_rows(&snap.table, &rows).await?;
                    report.rows += snap.rows.len() as u64;
                }
                Some(rules) => {
                    // A row's version is that of its last captured change; rows that
                    // predate capture have none: (0, their site).
                    let mut current: Option<Version> = None;
                    for (i, row) in snap.rows.iter().enumerate() {
                        let version = match snap.versions.as_ref().and_then(|v| v.get(i).cloned().flatten()) {
                            Some((site, ts)) => Version { ts, site },
                            None => Version { ts: 0, site: rules.remote_site.clone() },
                        };
                        if current.as_ref() != Some(&version) {
                            self.set_origin(&version.site, version.ts).await?;
                            current = Some(version.clone());
                        }
                        let change = Change::snapshot_insert(&snap.table, row);
                        let conflict = self.apply_change(dir, &change, &version, Some(rules), "snapshot").await?;
                        report.rows += 1;
                        report.conflicts += u64::from(conflict);
                    }
                }
            }
        }
        if let (Some(rules), Some(newest)) = (&batch.conflicts, batch.txns.iter().map(|t| t.commit_ts).max()) {
            // Two-way: this direction's peer has sent everything up to `newest`; the
            // changes still to come are compared with this database's versions from
            // about then on, so the changelog keeps them (see SqliteSource::prune).
            sqlx::query(
                "INSERT INTO ferry_version_hold(direction, site, applied_ts, updated_us) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(direction) DO UPDATE SET site = excluded.site, \
                 applied_ts = max(applied_ts, excluded.applied_ts), updated_us = excluded.updated_us",
            )
            .bind(dir.to_string())
            .bind(rules.remote_site.as_str())
            .bind(newest)
            .bind(crate::model::now_micros())
            .execute(&mut self.conn)
            .await?;
        }
        if batch.commit {
            if let Some(fence) = batch.fence
                && let Some(holder) = state::check_fence(&mut self.conn, dir, fence).await?
            {
                return Err(Failure::Fenced(holder));
            }
            state::write_checkpoint(&mut self.conn, dir, &batch.checkpoint, &mut self.written).await?;
        }
        sqlx::query("DELETE FROM ferry_apply_origin").execute(&mut self.conn).await?;
        Ok(report)
    }

    /// Two-way: refuses changes older than versions this database already pruned. A peer
    /// that applies here holds the versions it will need (`ferry_version_hold`); one
    /// that arrives further behind than the retention without that hold (it never
    /// applied here before the rows were pruned) would have its conflicts resolved
    /// against missing versions, i.e. won by whichever change arrives: it stops instead.
    async fn check_versions_kept(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<(), ConnectorError> {
        if batch.conflicts.is_none() || self.open.is_some() {
            return Ok(());
        }
        let Some(oldest) = batch.txns.iter().map(|t| t.commit_ts).filter(|ts| *ts > 0).min() else {
            return Ok(());
        };
        // Cheap in the steady state: only changes older than the retention can be
        // older than a pruned version.
        if oldest >= crate::model::now_micros() - super::capture::retention_us() {
            return Ok(());
        }
        let pruned = super::capture::pruned_ts(&mut self.conn)
            .await
            .map_err(self.ep.query_error("reading how far the changelog was pruned"))?;
        let Some(pruned) = pruned.filter(|p| oldest < *p) else { return Ok(()) };
        let age = |ts: i64| crate::engine::clock::seconds(crate::model::now_micros().saturating_sub(ts).max(0) as u64);
        Err(ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!(
                "task {dir}: the changes arriving were committed {} ago, but this database's changelog versions \
                 up to {} ago were already pruned (kept {} unless a two-way direction applying here holds them; \
                 this one held none then): last-writer-wins would compare them with missing versions and let \
                 every incoming change win, silently undoing newer writes made here",
                age(oldest),
                age(pruned),
                super::capture::retention_text()
            ),
            fix: format!(
                "nothing is applied. To apply them anyway (keys written on both sides in that window go to the \
                 incoming side), clear the mark on this database: DELETE FROM ferry_consumer WHERE consumer = \
                 '~pruned_ts'; then start the task and run `ferry verify --task {}` to find what to repair",
                dir.task
            ),
        })
    }

    /// Applies one change in order; returns whether it was a conflict.
    async fn apply_change(
        &mut self,
        dir: &DirectionId,
        change: &Change,
        incoming: &Version,
        rules: Option<&ConflictRules>,
        position: &str,
    ) -> Result<bool, Failure> {
        let table = &change.table;
        let rules = rules.filter(|_| table.name.name != schema::HEARTBEAT_TABLE);
        let Some(rules) = rules else {
            self.write_change(change).await?;
            return Ok(false);
        };
        let current = self.select_row(table, &change.key).await?;
        if same_row(current.as_ref(), change.after.as_ref()) {
            self.record_found(change, incoming).await?;
            return Ok(false);
        }
        if change.op == Op::Update && current.is_none() {
            // A key-changing update that was already applied leaves the old key empty.
            let new_key = change.new_key();
            if new_key != change.key {
                let moved = self.select_row(table, &new_key).await?;
                if same_row(moved.as_ref(), change.after.as_ref()) {
                    return Ok(false);
                }
            }
        }
        let mut tombstone = None;
        if current.is_none() && change.before.is_none() {
            tombstone = self.unseen_deletion(table, change, &rules.local_site).await?;
        }
        let mut unseen = None;
        if tombstone.is_none() && same_row(current.as_ref(), change.before.as_ref()) {
            unseen = self.unseen_write(table, change, &rules.local_site).await?;
            if unseen.is_none() {
                self.write_change(change).await?;
                return Ok(false);
            }
        }
        let local = match (rules.policy, tombstone.or(unseen)) {
            (ConflictPolicy::LastWriterWins, Some(deleted)) => deleted,
            (ConflictPolicy::LastWriterWins, None) => self.local_version(table, &change.key, &rules.local_site).await?,
            _ => Version { ts: 0, site: rules.local_site.clone() },
        };
        let winner = resolve(rules, incoming, &local);
        state::record_conflict(
            &mut self.conn,
            dir,
            &ConflictRecord {
                table,
                key: key_text(&change.key),
                policy: rules.policy.to_string(),
                winner: winner.as_str(),
                incoming_site: incoming.site.as_str(),
                incoming_ts: incoming.ts,
                incoming_row: change.after.as_ref(),
                local_site: local.site.to_string(),
                local_ts: local.ts,
                local_row: current.as_ref(),
                position: position.to_string(),
            },
        )
        .await?;
        if winner == Winner::Incoming {
            self.write_change(change).await?;
        }
        Ok(true)
    }

    /// The local deletion of a key that an incoming insert did not follow: this site's
    /// last write of the key is a delete, and it was not the last change from this site
    /// that the source had applied when it inserted. The other side sees the same race (the delete's
    /// before-image differs from its row), so both resolve it. An insert that does not
    /// say what it followed (`Prior::Unknown`: a snapshot row, read on the source
    /// perhaps before this deletion arrived there) is judged against the deletion too,
    /// as the shared judge does: applied blindly it would bring back a row deleted here
    /// while the other side drops it.
    async fn unseen_deletion(
        &mut self,
        table: &TableSchema,
        change: &Change,
        local_site: &SiteId,
    ) -> Result<Option<Version>, Failure> {
        let sql = format!(
            "SELECT op, ts FROM ferry_changelog WHERE tbl = ?1 AND pk = (SELECT {}) AND origin = ?2 \
             ORDER BY seq DESC LIMIT 1",
            quote_params(3, change.key.len())
        );
        let q = sqlx::query(AssertSqlSafe(sql)).bind(table.name.name.clone()).bind(local_site.as_str());
        let row = bind_all(q, &change.key)?.fetch_optional(&mut self.conn).await?;
        Ok(row.and_then(|r| {
            let (op, ts): (i64, i64) = (r.get(0), r.get(1));
            let seen = change.prior == Prior::Deleted(local_site.clone(), ts);
            (op == 3 && !seen).then(|| Version { ts, site: local_site.clone() })
        }))
    }

    /// A local write the source had not seen, hidden behind an equal row: the row's last
    /// change here is this site's own, and it is not the version the incoming change
    /// replaced (e.g. an update that set a row back to the values it had).
    async fn unseen_write(
        &mut self,
        table: &TableSchema,
        change: &Change,
        local_site: &SiteId,
    ) -> Result<Option<Version>, Failure> {
        let Some(seen) = &change.seen else { return Ok(None) };
        if change.before.is_none() {
            return Ok(None);
        }
        let local = self.local_version(table, &change.key, local_site).await?;
        let unseen = local.site == *local_site && local.ts != 0 && (&local.site, local.ts) != (&seen.0, seen.1);
        Ok(unseen.then_some(local))
    }

    /// Records an incoming change that found its result already here: a delete of a row
    /// already gone (both sides deleted it), or a row already equal to its after-image (a
    /// no-op update, or equal values written on both sides). Changes made here afterwards
    /// then carry it as seen (`Prior`, `Change::seen`); the reader never sends it back.
    async fn record_found(&mut self, change: &Change, incoming: &Version) -> Result<(), Failure> {
        let (op, key, image) = match (&change.after, &change.before) {
            (Some(after), _) => (schema::OP_ALREADY_EQUAL, change.new_key(), after),
            (None, Some(before)) => (schema::OP_ALREADY_DELETED, change.key.clone(), before),
            (None, None) => return Ok(()),
        };
        let k = key.len();
        let (before, after) = match change.after {
            Some(_) => ("NULL".to_string(), quote_params(4 + k, image.len())),
            None => (quote_params(4 + k, image.len()), "NULL".to_string()),
        };
        let sql = format!(
            "INSERT INTO ferry_changelog(epoch, tbl, op, origin, ts, pk, before, after) \
             SELECT epoch, ?1, {op}, ?2, ?3, {}, {before}, {after} FROM ferry_clock WHERE id = 1",
            quote_params(4, k),
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(change.table.name.name.clone())
            .bind(incoming.site.as_str())
            .bind(incoming.ts);
        bind_all(bind_all(q, &key)?, image)?.execute(&mut self.conn).await?;
        Ok(())
    }

    /// The version of the target's current row: its last changelog entry, else (0, local site).
    async fn local_version(&mut self, table: &TableSchema, key: &Key, local_site: &SiteId) -> Result<Version, Failure> {
        let sql = format!(
            "SELECT origin, ts FROM ferry_changelog WHERE tbl = ?1 AND pk = (SELECT {}) AND op <> {} \
             ORDER BY seq DESC LIMIT 1",
            quote_params(2, key.len()),
            schema::OP_ALREADY_DELETED
        );
        let q = sqlx::query(AssertSqlSafe(sql)).bind(table.name.name.clone());
        let row = bind_all(q, key)?.fetch_optional(&mut self.conn).await?;
        Ok(match row {
            Some(r) => Version { site: SiteId::new(r.get::<&str, _>(0)), ts: r.get(1) },
            None => Version { ts: 0, site: local_site.clone() },
        })
    }

    async fn select_row(&mut self, table: &TableSchema, key: &Key) -> Result<Option<Row>, Failure> {
        let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        let sql = format!("SELECT {} FROM {} WHERE {}", row_expr("", &cols), ident(&table.name.name), key_match(table));
        let row = bind_all(sqlx::query(AssertSqlSafe(sql)), key)?.fetch_optional(&mut self.conn).await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let text: String = r.get(0);
                parse_row(&text).map(Some).map_err(|e| Failure::Sql(sqlx::Error::Protocol(e.to_string())))
            }
        }
    }

    async fn write_change(&mut self, change: &Change) -> Result<(), Failure> {
        let table = &change.table;
        match &change.after {
            None => self.delete_keys(table, &[change.key.as_slice()]).await,
            Some(after) => {
                if change.moves_key() {
                    self.delete_keys(table, &[change.key.as_slice()]).await?;
                }
                self.upsert_rows(table, &[after]).await
            }
        }
    }

    /// Fast path: the final state of each key, written with multi-row statements.
    async fn apply_collapsed(&mut self, txns: &[Txn]) -> Result<u64, Failure> {
        let groups = by_table(txns.iter().flat_map(|t| &t.changes));
        for changes in &groups {
            let finals = Finals::of(changes);
            self.delete_keys(&changes[0].table, &finals.deletes()).await?;
            self.upsert_rows(&changes[0].table, &finals.upserts()).await?;
        }
        Ok(groups.iter().map(|g| g.len() as u64).sum())
    }

    async fn delete_keys(&mut self, table: &TableSchema, keys: &[&[Value]]) -> Result<(), Failure> {
        let width = table.primary_key.len();
        let per = (MAX_BINDS / width).clamp(1, MAX_ROWS_PER_STATEMENT);
        for chunk in keys.chunks(per) {
            let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
            let sql = if width == 1 {
                let marks = vec!["?"; chunk.len()].join(",");
                format!("DELETE FROM {} WHERE {} IN ({marks})", ident(&table.name.name), cols[0])
            } else {
                let tuple = format!("({})", vec!["?"; width].join(","));
                let marks = vec![tuple.as_str(); chunk.len()].join(",");
                format!("DELETE FROM {} WHERE ({}) IN (VALUES {marks})", ident(&table.name.name), cols.join(","))
            };
            let mut args = SqliteArguments::default();
            args.reserve(chunk.len() * width, 0);
            for v in chunk.iter().copied().flatten() {
                add_value(&mut args, v)?;
            }
            sqlx::query_with(AssertSqlSafe(sql), args).execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn upsert_rows(&mut self, table: &TableSchema, rows: &[&Row]) -> Result<(), Failure> {
        let width = table.columns.len();
        let per = (MAX_BINDS / width).clamp(1, MAX_ROWS_PER_STATEMENT);
        let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let keys: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
        let sets: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !table.primary_key.contains(i))
            .map(|(_, c)| format!("{0} = excluded.{0}", ident(&c.name)))
            .collect();
        let action = if sets.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", sets.join(", ")) };
        let tuple = format!("({})", vec!["?"; width].join(","));
        for chunk in rows.chunks(per) {
            let marks = vec![tuple.as_str(); chunk.len()].join(",");
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {marks} ON CONFLICT ({}) DO {action}",
                ident(&table.name.name),
                cols.join(","),
                keys.join(",")
            );
            let mut args = SqliteArguments::default();
            args.reserve(chunk.len() * width, 0);
            for r in chunk {
                for v in r.iter() {
                    add_value(&mut args, v).map_err(|mut e| {
                        e.value = format!("{} (table {}, key {})", e.value, table.name, key_text(&table.key_of(r)));
                        e
                    })?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args).execute(&mut self.conn).await?;
        }
        Ok(())
    }

    fn failure(&self, f: Failure, what: &str, dir: &DirectionId, fence: Option<i64>) -> ConnectorError {
        match f {
            Failure::Fenced(holder) => ConnectorError::Fenced {
                endpoint: self.ep.name.clone(),
                dir: dir.to_string(),
                mine: fence.unwrap_or(0),
                holder: (holder.pid != 0).then(|| Box::new(holder)),
            },
            Failure::Sql(source) => {
                ConnectorError::Query { endpoint: self.ep.name.clone(), what: what.to_string(), source }
            }
            Failure::Unstorable(e) => ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: e.to_string(),
                fix: "change the target column's type so it can hold the value".into(),
            },
            Failure::Row { txn_position, table, key, message } => ConnectorError::Apply(Box::new(ApplyFailure {
                endpoint: self.ep.name.clone(),
                position: crate::connector::registry::parse_position(&txn_position)
                    .unwrap_or_else(|_| super::position::at(0)),
                table: table.name.clone(),
                key: key_text(&key),
                message,
                in_parts: false,
            })),
        }
    }
}

/// `"a" = ?1 AND "b" = ?2` over the primary key.
fn key_match(table: &TableSchema) -> String {
    let parts: Vec<String> =
        table.key_columns().iter().enumerate().map(|(i, c)| format!("{} = ?{}", ident(c), i + 1)).collect();
    parts.join(" AND ")
}

impl Sink for SqliteSink {
    async fn close(self) {
        // A transaction a commit group left open ends with the session: rolled back.
        super::close(self.conn).await
    }
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        ensure_wal(&mut self.conn).await.map_err(self.ep.query_error("switching the database to WAL mode"))?;
        migrate::run(&self.ep, &mut self.conn).await
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        for t in tables {
            match schema::describe(&self.ep, &mut self.conn, &t.name.name).await {
                Ok(Some(existing)) => {
                    let want: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                    let have: Vec<&str> = existing.columns.iter().map(|c| c.name.as_str()).collect();
                    if want != have {
                        return Err(ConnectorError::Setup {
                            endpoint: self.ep.name.clone(),
                            problem: format!("table {} has columns {have:?} here but {want:?} on the source", t.name),
                            fix: "make the target table's columns match the source's (same names, same order), or map them with [[task.map]]".into(),
                        });
                    }
                    if existing.primary_key != t.primary_key {
                        return Err(ConnectorError::Setup {
                            endpoint: self.ep.name.clone(),
                            problem: format!("table {} has a different primary key here than on the source", t.name),
                            fix: "give the target table the same primary key as the source".into(),
                        });
                    }
                }
                Ok(None) => {
                    sqlx::query(AssertSqlSafe(create_table_sql(t)))
                        .execute(&mut self.conn)
                        .await
                        .map_err(self.ep.query_error(format!("creating table {}", t.name)))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        state::load_checkpoint(&mut self.conn, dir)
            .await
            .map_err(self.ep.query_error(format!("reading the checkpoint of {dir}")))
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        if let Some(txn) = batch.txns.iter().find(|t| !t.ddl.is_empty()) {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!(
                    "a schema change from another engine cannot be applied to SQLite: {} (at {})",
                    txn.ddl[0].statement, txn.position
                ),
                fix: format!("make the change on this database by hand, then `ferry skip --position {}`", txn.position),
            });
        }
        self.check_versions_kept(dir, batch).await?;
        // Which checkpoint slots are written is only true once the transaction commits.
        let written = match self.open.take() {
            Some(before) => before,
            None => {
                // A commit group applied in parts commits with its last part, whose
                // flush is not known yet: it is synced.
                let synced = self.sync_commits(batch.flush || !batch.commit).await;
                if let Err(e) = synced {
                    return Err(self.failure(
                        Failure::Sql(e),
                        "choosing how the batch's commit is synced",
                        dir,
                        batch.fence,
                    ));
                }
                if let Err(e) = begin_immediate(&mut self.conn).await {
                    return Err(self.failure(Failure::Sql(e), "starting the apply transaction", dir, batch.fence));
                }
                self.written.clone()
            }
        };
        let result = match self.apply_inner(dir, batch).await {
            Ok(report) if !batch.commit => {
                self.open = Some(written);
                return Ok(report);
            }
            Ok(report) => match commit(&mut self.conn).await {
                Ok(()) => Ok(report),
                Err(e) => {
                    rollback(&mut self.conn).await;
                    Err(self.failure(Failure::Sql(e), "committing a batch", dir, batch.fence))
                }
            },
            Err(f) => {
                rollback(&mut self.conn).await;
                Err(self.failure(f, "applying a batch", dir, batch.fence))
            }
        };
        if result.is_err() {
            self.written = written;
        }
        result
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        let what = format!("taking the lease of {dir}");
        if self.open.is_some() {
            // A commit group is being applied in parts: renew inside its transaction,
            // which holds the database's write lock anyway (a takeover waits for it).
            return state::take_lease(&mut self.conn, dir, holder, ttl).await.map_err(self.ep.query_error(what));
        }
        begin_immediate(&mut self.conn).await.map_err(self.ep.query_error(what.clone()))?;
        match state::take_lease(&mut self.conn, dir, holder, ttl).await {
            Ok(outcome) => {
                commit(&mut self.conn).await.map_err(self.ep.query_error(what))?;
                Ok(outcome)
            }
            Err(e) => {
                rollback(&mut self.conn).await;
                Err(ConnectorError::Query { endpoint: self.ep.name.clone(), what, source: e })
            }
        }
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        if let Some(before) = self.open.take() {
            rollback(&mut self.conn).await;
            self.written = before;
        }
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        state::drop_lease(&mut self.conn, dir, holder)
            .await
            .map_err(self.ep.query_error(format!("releasing the lease of {dir}")))
    }
}

/// `quote(?from)||','||…` over `n` parameters: the changelog's text form of bound values.
fn quote_params(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("quote(?{i})")).collect::<Vec<_>>().join("||','||")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn level(c: &mut SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous").fetch_one(c).await.expect("synchronous")
    }

    fn batch(flush: bool, commit: bool, at: i64) -> ApplyBatch {
        ApplyBatch {
            txns: Vec::new(),
            snapshot: None,
            checkpoint: Checkpoint { position: Some(super::super::position::at(at)), tables: Default::default() },
            conflicts: None,
            one_by_one: false,
            commit,
            fence: None,
            flush,
        }
    }

    /// A batch the engine asks to be flushed commits with `synchronous = FULL` (WAL
    /// fsynced at its commit); one it does not, and the parts of a commit group before
    /// the last, as the engine's stream backlog goes: the connection's `NORMAL`.
    #[tokio::test]
    async fn flushed_batches_commit_with_an_fsync_and_backlog_batches_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ep = SqliteEndpoint { name: "t".into(), site: SiteId::new("b"), path: dir.path().join("t.db") };
        let mut sink = SqliteSink::open(ep, Access::Create).await.expect("open");
        sink.prepare().await.expect("prepare");
        let d = DirectionId { task: "t".into(), from: "a".into(), to: "b".into() };
        assert_eq!(level(&mut sink.conn).await, 1, "NORMAL by default");
        sink.apply(&d, &batch(true, true, 1)).await.expect("flushed batch");
        assert_eq!(level(&mut sink.conn).await, 2, "FULL for a flushed batch");
        sink.apply(&d, &batch(false, true, 2)).await.expect("backlog batch");
        assert_eq!(level(&mut sink.conn).await, 1, "NORMAL for a batch with more behind it");
        // A part that leaves its transaction open: the group commits synced, whatever
        // its last part says.
        sink.apply(&d, &batch(false, false, 3)).await.expect("first part");
        sink.apply(&d, &batch(false, true, 4)).await.expect("last part");
        assert_eq!(level(&mut sink.conn).await, 2, "a group in parts commits synced");
        let cp = sink.load_checkpoint(&d).await.expect("checkpoint").expect("written");
        assert_eq!(cp.position.map(|p| p.to_string()), Some("sqlite:4".to_string()));
    }
}
