//! The PostgreSQL [`Sink`]: a batch of whole source transactions in one target
//! transaction with its checkpoint. Changes collapse to the final state of each key,
//! written per table with one `DELETE … USING unnest(…)` and one
//! `INSERT … SELECT … FROM unnest(…) ON CONFLICT DO UPDATE` per few thousand rows:
//! every value travels as text in one array parameter per column, cast to the target
//! column's type by the server. `one_by_one` batches go change by change in source
//! order, so a refused change is named exactly. Two-way batches are judged first
//! (`conflict.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnection;

use super::copy::Dest;
use super::deferred::{self, Deferred};
use super::names::HEARTBEAT_TABLE;
use super::values::{encode, encode_as};
use super::{FERRY_SCHEMA, PgEndpoint, ferry_table, ident, migrate, qualified, schema, state};
use crate::connector::parallel::partition::SplitBackoff;
use crate::connector::parallel::partition::{Parents, parents_of};
use crate::connector::parallel::slots::StreamState;
use crate::connector::{
    ApplyBatch, ApplyFailure, ApplyReport, Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, Sink,
};
use crate::model::{Change, FastHash, HashKey, Key, Op, Row, SiteId, TableName, TableSchema, Txn, cmp_keys, key_text};

/// Rows per statement.
const ROWS_PER_STATEMENT: usize = 5_000;

/// A PostgreSQL server changes are applied to.
pub struct PgSink {
    pub(super) ep: PgEndpoint,
    pub(super) conn: PgConnection,
    /// The lease's own session: taking or renewing it commits, which on `conn` would
    /// commit an open commit group.
    lease_conn: Option<PgConnection>,
    pub(super) written: HashMap<String, String>,
    open_group: bool,
    /// The target's own description of each target table (its column types, unique and
    /// foreign keys).
    pub(super) targets: HashMap<TableName, Arc<TableSchema>>,
    /// What references each parent table among `targets` (for parallel apply's
    /// dependency keys).
    pub(super) parents: Parents,
    /// Two-way: the site changes come from.
    two_way: Option<SiteId>,
    /// Two-way: the session carries the direction's replication origin and keeps
    /// ferry's triggers out.
    origin_ready: bool,
    /// Two-way: the batch failed because an application inserted a key it was writing
    /// (it runs again at once, judged anew).
    pub(super) raced: bool,
    /// Sessions a big snapshot chunk or a one-way stream batch is spread over
    /// (`workers`), this one included; each has its own stream slot in the checkpoint.
    pub(super) workers: usize,
    /// The other sessions, opened when first needed.
    pub(super) helpers: Vec<PgConnection>,
    /// The stream slots as loaded, and transactions a crash left applied past them.
    pub(super) stream: StreamState,
    /// Whether recent batches split into shares (skips a partition bound to fail).
    pub(super) split: SplitBackoff,
    /// Tables this process created without their keys, while their first copy lasts.
    deferred: Deferred,
}

/// Fewer rows per session than this are not worth a session of their own.
const SPREAD_MIN_ROWS: usize = 5_000;

/// The final state of each key of one table in a batch, in first-touch order.
struct Final<'a> {
    table: Arc<TableSchema>,
    order: Vec<HashKey>,
    rows: HashMap<HashKey, Option<&'a Row>, FastHash>,
}

impl PgSink {
    /// Connects.
    pub async fn open(ep: PgEndpoint) -> Result<Self, ConnectorError> {
        let conn = ep.connect().await?;
        Ok(PgSink {
            ep,
            conn,
            lease_conn: None,
            written: HashMap::new(),
            open_group: false,
            targets: HashMap::new(),
            two_way: None,
            origin_ready: false,
            raced: false,
            workers: 1,
            helpers: Vec::new(),
            parents: Parents::default(),
            stream: StreamState::default(),
            split: SplitBackoff::default(),
            deferred: Deferred::default(),
        })
    }

    /// Spreads big snapshot chunks and one-way stream batches over `workers` sessions.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Two-way: changes come from `site`; this sink's transactions carry the
    /// direction's replication origin, so the reverse direction drops them, and its
    /// tables are versioned (`versions.rs`).
    pub fn with_two_way(mut self, site: SiteId) -> Self {
        self.two_way = Some(site);
        self
    }

    /// Whether this sink applies a two-way direction (always on one session).
    pub(super) fn is_two_way(&self) -> bool {
        self.two_way.is_some()
    }

    /// Where a table lives on this server (bare names: `public`, the heartbeat `ferry`).
    pub(super) fn resolve(name: &TableName) -> TableName {
        match (&name.schema, name.name.as_str()) {
            (_, HEARTBEAT_TABLE) => TableName { schema: Some(FERRY_SCHEMA.into()), name: name.name.clone() },
            (Some(_), _) => name.clone(),
            (None, _) => TableName { schema: Some("public".into()), name: name.name.clone() },
        }
    }

    /// The target's description of a table, read once.
    pub(super) async fn target(&mut self, name: &TableName) -> Result<Arc<TableSchema>, ConnectorError> {
        let name = Self::resolve(name);
        if let Some(t) = self.targets.get(&name) {
            return Ok(t.clone());
        }
        let t =
            schema::describe_loose(&self.ep, &mut self.conn, &name).await?.ok_or_else(|| ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("table {name} does not exist on the target"),
                fix: "let ferry create it (run the task again), or create it with the source's columns".into(),
            })?;
        let t = Arc::new(t);
        self.targets.insert(name, t.clone());
        self.parents = parents_of(self.targets.values());
        Ok(t)
    }

    /// Reads the target's description of every table these changes touch (once each).
    pub(super) async fn load_targets<'c>(
        &mut self,
        changes: impl Iterator<Item = &'c Change>,
    ) -> Result<(), ConnectorError> {
        // A batch holds thousands of changes of a few tables: each name looked up once.
        let mut seen: HashSet<&TableName, FastHash> = HashSet::default();
        for c in changes {
            if !seen.insert(&c.table.name) {
                continue;
            }
            if !self.targets.contains_key(&Self::resolve(&c.table.name)) {
                self.target(&c.table.name).await?;
            }
        }
        Ok(())
    }

    /// A writer on the main session (the tables it writes described beforehand).
    fn writer(&mut self) -> Writer<'_> {
        Writer { ep: &self.ep, conn: &mut self.conn, targets: &self.targets, raced: false }
    }

    async fn exec(&mut self, what: &str, sql: &str) -> Result<(), ConnectorError> {
        self.ep.exec(&mut self.conn, what, sql).await
    }

    async fn begin(&mut self, dir: &DirectionId) -> Result<(), ConnectorError> {
        if let Some(site) = self.two_way.clone()
            && !self.origin_ready
        {
            // Marks every change this session writes with ferry's origin for the
            // direction: the reverse direction's stream drops them (loop prevention).
            // Its writes stay out of ferry's triggers (it writes the versions itself).
            let origin = super::names::origin(site.as_str(), &format!("{}/{}", dir.task, dir.direction()));
            let sql = format!(
                "SELECT pg_replication_origin_create({o}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = {o}); \
                 SELECT pg_replication_origin_session_setup({o}) WHERE pg_replication_origin_session_is_setup() IS NOT TRUE; \
                 SELECT set_config({setting}, 'on', false)",
                o = super::string_literal(&origin),
                setting = super::string_literal(super::versions::APPLY_SETTING),
            );
            self.exec(
                "setting up the replication origin (needs superuser or EXECUTE on pg_replication_origin_create and pg_replication_origin_session_setup)",
                &sql,
            )
            .await?;
            // A deadlock between this applier and an application (the applier locks the
            // rows and versions of a batch; an application's write locks its row, then its
            // version) is found by whichever waits out deadlock_timeout first, and that
            // one is rolled back: let it be the applier, which runs the batch again at
            // once, not the application. Only superusers may set it; others keep the
            // server's.
            if let Err(e) = self.exec("shortening deadlock_timeout", "SET deadlock_timeout = '50ms'").await {
                tracing::debug!(endpoint = %self.ep.name, error = %e, "deadlock_timeout stays the server's");
            }
            self.origin_ready = true;
        }
        if !self.open_group {
            self.exec("beginning a transaction", "BEGIN").await?;
            self.open_group = true;
        }
        Ok(())
    }

    async fn abort(&mut self) {
        self.deferred.rolled_back();
        if self.open_group {
            let _ = self.exec("rolling back", "ROLLBACK").await;
            self.open_group = false;
        }
    }

    /// Writes the final state of each key of the batch on the main session (see
    /// [`Writer::write_final`]).
    pub(super) async fn write_final(
        &mut self,
        changes: &[&Change],
        fresh: Option<&super::conflict::Fresh>,
    ) -> Result<(), ConnectorError> {
        self.load_targets(changes.iter().copied()).await?;
        let mut w = self.writer();
        let r = w.write_final(changes, fresh).await;
        self.raced |= w.raced;
        r
    }

    /// Inserts rows on the main session, replacing those with the same key.
    async fn upsert_rows(&mut self, source: &TableSchema, rows: &[&Row]) -> Result<(), ConnectorError> {
        self.target(&source.name).await?;
        self.writer().upsert_rows(source, rows).await
    }

    /// Builds a keyless table's keys in the open transaction.
    async fn add_keys(&mut self, table: &TableName) -> Result<(), ConnectorError> {
        if let Some(alter) = self.deferred.alter(table).map(str::to_string) {
            deferred::add_keys(&self.ep, &mut self.conn, table, &alter).await?;
            self.deferred.stage_keyed(table);
            self.targets.remove(table);
        }
        Ok(())
    }

    /// Builds the keys of keyless tables this batch writes other than by appending its
    /// first copy's next chunk (stream changes need them to find rows; a chunk that does
    /// not continue the copy clears its range first), before anything of it is written.
    async fn keys_needed(&mut self, batch: &ApplyBatch) -> Result<(), ConnectorError> {
        // Every stream batch passes here: nothing to look at once all keys are built.
        if !self.deferred.any() {
            return Ok(());
        }
        let mut needed: Vec<TableName> = Vec::new();
        for c in batch.txns.iter().flat_map(|t| &t.changes) {
            let name = Self::resolve(&c.table.name);
            if self.deferred.is_keyless(&name) && !needed.contains(&name) {
                needed.push(name);
            }
        }
        if let Some(s) = &batch.snapshot {
            let name = Self::resolve(&s.table.name);
            let appends = s.native.as_ref().is_some_and(|n| self.deferred.continues(&name, n.after.as_ref()));
            if self.deferred.is_keyless(&name) && !appends && !needed.contains(&name) {
                needed.push(name);
            }
        }
        for name in needed {
            // Inside an open commit group the keys land with it; else on their own.
            self.add_keys(&name).await?;
            if !self.open_group {
                self.deferred.committed();
            }
        }
        Ok(())
    }

    /// Applies the batch's changes (and snapshot rows); a refused change is named when
    /// applying one by one.
    async fn write(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<u64, ConnectorError> {
        let mut n = 0u64;
        // Transactions a worker committed before a crash, past the lowest stream slot.
        let txns: Vec<&Txn> = batch.txns.iter().filter(|t| !self.stream.is_applied(&t.position)).collect();
        if batch.one_by_one {
            for txn in &txns {
                for c in &txn.changes {
                    let r = self.write_final(&[c], None).await;
                    if let Err(e) = r {
                        let message = match &e {
                            ConnectorError::Postgres { source, .. } => source.to_string(),
                            other => other.to_string(),
                        };
                        if e.kind() == crate::connector::ErrorKind::Refused {
                            return Err(ConnectorError::Apply(Box::new(ApplyFailure {
                                endpoint: self.ep.name.clone(),
                                position: txn.position.clone(),
                                table: c.table.name.clone(),
                                key: key_text(&c.key),
                                message,
                                in_parts: false,
                            })));
                        }
                        return Err(e);
                    }
                    n += 1;
                }
            }
        } else {
            let changes: Vec<&Change> = txns.iter().flat_map(|t| &t.changes).collect();
            n += changes.len() as u64;
            self.write_final(&changes, None).await?;
        }
        if let Some(s) = &batch.snapshot
            && let Some(native) = &s.native
            && self.deferred.is_keyless(&Self::resolve(&s.table.name))
        {
            // The first copy of a table created keyless: appended (its range is empty:
            // `keys_needed` saw that it continues the last chunk), the keys built with
            // the last chunk, in its transaction.
            let target = self.target(&s.table.name).await?;
            let cols: Vec<&str> = s.table.columns.iter().map(|c| c.name.as_str()).collect();
            let key = s.table.key_columns();
            let dest = Dest { source: &s.table, table: &target, columns: &cols, key: &key };
            super::copy::write(&self.ep, &mut self.conn, &dest, native, true).await?;
            match &native.upto {
                Some(upto) => self.deferred.stage_upto(&target.name, upto.clone()),
                None => self.add_keys(&target.name).await?,
            }
            n += native.count as u64;
        } else if let Some(s) = &batch.snapshot
            && let Some(native) = &s.native
        {
            // COPY text from a PostgreSQL source: replaces the chunk's key range as is.
            let target = self.target(&s.table.name).await?;
            let cols: Vec<&str> = s.table.columns.iter().map(|c| c.name.as_str()).collect();
            let key = s.table.key_columns();
            let dest = Dest { source: &s.table, table: &target, columns: &cols, key: &key };
            // A chunk alone in its batch may go over several sessions at once (its
            // parts commit apart; the checkpoint commits last, on this session).
            let parts = self.workers.min(native.count / SPREAD_MIN_ROWS);
            if parts > 1 && batch.txns.is_empty() && !batch.one_by_one && batch.commit {
                let parts = super::copy::split(&self.ep, &s.table, native, parts)?;
                while self.helpers.len() + 1 < parts.len() {
                    self.helpers.push(self.ep.connect().await?);
                }
                super::copy::write_spread(&self.ep, &mut self.conn, &mut self.helpers, dir, batch.fence, &dest, &parts)
                    .await?;
            } else {
                super::copy::write(&self.ep, &mut self.conn, &dest, native, false).await?;
            }
            n += native.count as u64;
        } else if let Some(s) = &batch.snapshot {
            let rows: Vec<&Row> = s.rows.iter().collect();
            self.upsert_rows(&s.table, &rows).await?;
            n += rows.len() as u64;
        }
        Ok(n)
    }
}

/// Writes rows on one session (the main one or a parallel worker's), with the target
/// tables' descriptions read beforehand.
pub(super) struct Writer<'a> {
    pub(super) ep: &'a PgEndpoint,
    pub(super) conn: &'a mut PgConnection,
    pub(super) targets: &'a HashMap<TableName, Arc<TableSchema>>,
    /// Two-way: an application inserted a key the batch was inserting.
    pub(super) raced: bool,
}

impl Writer<'_> {
    /// The target's description of a table, read before this writer was made.
    fn target(&self, name: &TableName) -> Result<Arc<TableSchema>, ConnectorError> {
        let name = PgSink::resolve(name);
        self.targets.get(&name).cloned().ok_or_else(|| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!("table {name} does not exist on the target"),
            fix: "let ferry create it (run the task again), or create it with the source's columns".into(),
        })
    }

    /// Writes the final state of each key of the batch, table by table. Two-way: rows of
    /// `fresh` keys (no row when the batch was judged) are inserted only if still absent.
    pub(super) async fn write_final<'c>(
        &mut self,
        changes: &[&'c Change],
        fresh: Option<&super::conflict::Fresh>,
    ) -> Result<(), ConnectorError> {
        // One group per table and shape, in stream order: rows read after columns were
        // added carry more values than those before, and each is written with its own
        // columns (a group written with the first shape would drop the new values).
        // Later groups hold later states of a key, so writing groups in order is exact.
        let mut tables: Vec<Final<'c>> = Vec::new();
        let mut index: HashMap<&TableName, usize, FastHash> = HashMap::default();
        for c in changes {
            let i = match index.get(&c.table.name) {
                Some(&i) if tables[i].table.columns.len() == c.table.columns.len() => i,
                _ => {
                    tables.push(Final { table: c.table.clone(), order: Vec::new(), rows: HashMap::default() });
                    index.insert(&c.table.name, tables.len() - 1);
                    tables.len() - 1
                }
            };
            let f = &mut tables[i];
            let mut set = |k: Key, row: Option<&'c Row>| {
                let k = HashKey(k);
                if !f.rows.contains_key(&k) {
                    f.order.push(k.clone());
                }
                f.rows.insert(k, row);
            };
            match c.op {
                Op::Delete => set(c.key.clone(), None),
                Op::Insert | Op::Update => {
                    let new = c.new_key();
                    if new != c.key {
                        set(c.key.clone(), None);
                    }
                    // Lifetimes: the rows live in the batch, which outlives this call.
                    set(new, c.after.as_ref());
                }
            }
        }
        for f in &tables {
            // In key order the target walks its index and heap pages in order instead of
            // at random (fewer cache misses per row). Not where a unique key other than
            // the primary one exists: there the batch's order keeps a value moved from
            // one row to another from meeting itself.
            let mut order: Vec<&HashKey> = f.order.iter().collect();
            if self.target(&f.table.name)?.unique_keys.is_empty() {
                order.sort_unstable_by(|a, b| cmp_keys(&a.0, &b.0));
            }
            let deletes: Vec<&Key> =
                order.iter().filter(|k| f.rows.get(**k).is_some_and(Option::is_none)).map(|k| &k.0).collect();
            let is_fresh = |k: &HashKey| fresh.is_some_and(|s| s.contains(&(f.table.name.clone(), k.clone())));
            let (mut upserts, mut inserts): (Vec<&Row>, Vec<&Row>) = (Vec::new(), Vec::new());
            for k in order {
                if let Some(Some(row)) = f.rows.get(k) {
                    if is_fresh(k) { inserts.push(row) } else { upserts.push(row) }
                }
            }
            self.delete_keys(&f.table, &deletes).await?;
            self.upsert_rows(&f.table, &upserts).await?;
            self.insert_fresh(&f.table, &inserts).await?;
        }
        Ok(())
    }

    /// Deletes rows by key.
    async fn delete_keys(&mut self, source: &TableSchema, keys: &[&Key]) -> Result<(), ConnectorError> {
        if keys.is_empty() {
            return Ok(());
        }
        let target = self.target(&source.name)?;
        let key_cols = source.key_columns();
        let types = column_types(self.ep, &target, &key_cols)?;
        let names: Vec<String> = (0..key_cols.len()).map(|i| format!("k{i}")).collect();
        let arrays: Vec<String> = (0..key_cols.len()).map(|i| format!("${}::text[]", i + 1)).collect();
        let cond: Vec<String> = key_cols
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, (c, t))| format!("t.{} = u.k{i}::{t}", ident(c)))
            .collect();
        let sql = format!(
            "DELETE FROM {} AS t USING unnest({}) AS u({}) WHERE {}",
            qualified(&target.name),
            arrays.join(", "),
            names.join(", "),
            cond.join(" AND ")
        );
        for part in keys.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for i in 0..key_cols.len() {
                let col: Vec<Option<String>> = part.iter().map(|k| k.get(i).and_then(encode)).collect();
                q = q.bind(col);
            }
            q.execute(&mut *self.conn).await.map_err(self.ep.error(format!("deleting rows of {}", target.name)))?;
        }
        Ok(())
    }

    /// Inserts rows, replacing those with the same key.
    async fn upsert_rows(&mut self, source: &TableSchema, rows: &[&Row]) -> Result<(), ConnectorError> {
        self.insert_rows(source, rows, false).await
    }

    /// Two-way: inserts rows whose keys had no row when the batch was judged; a row
    /// found there now (an application inserted it meanwhile) fails the batch, which
    /// runs again at once and judges that row.
    async fn insert_fresh(&mut self, source: &TableSchema, rows: &[&Row]) -> Result<(), ConnectorError> {
        self.insert_rows(source, rows, true).await
    }

    async fn insert_rows(&mut self, source: &TableSchema, rows: &[&Row], fresh: bool) -> Result<(), ConnectorError> {
        if rows.is_empty() {
            return Ok(());
        }
        let target = self.target(&source.name)?;
        let cols: Vec<&str> = source.columns.iter().map(|c| c.name.as_str()).collect();
        let types = column_types(self.ep, &target, &cols)?;
        let key_cols = source.key_columns();
        let arrays: Vec<String> = (0..cols.len()).map(|i| format!("${}::text[]", i + 1)).collect();
        let names: Vec<String> = (0..cols.len()).map(|i| format!("c{i}")).collect();
        let casts: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("u.c{i}::{t}")).collect();
        let sets: Vec<String> = cols
            .iter()
            .filter(|c| !key_cols.contains(c))
            .map(|c| format!("{} = excluded.{}", ident(c), ident(c)))
            .collect();
        let conflict = if sets.is_empty() || fresh {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({}) ON CONFLICT ({}) {conflict}",
            qualified(&target.name),
            cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
            casts.join(", "),
            arrays.join(", "),
            names.join(", "),
            key_cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
        );
        for part in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for (i, ty) in types.iter().enumerate() {
                let col: Vec<Option<String>> = part.iter().map(|r| r.get(i).and_then(|v| encode_as(v, ty))).collect();
                q = q.bind(col);
            }
            let done =
                q.execute(&mut *self.conn).await.map_err(self.ep.error(format!("writing rows of {}", target.name)))?;
            if fresh && done.rows_affected() < part.len() as u64 {
                self.raced = true;
                return Err(ConnectorError::Stream {
                    endpoint: self.ep.name.clone(),
                    what: format!("writing rows of {}", target.name),
                    source: "an application inserted a row the batch was inserting; it is judged again".into(),
                    kind: crate::connector::ErrorKind::Runtime,
                });
            }
        }
        Ok(())
    }
}

/// The target's type of each named column.
pub(super) fn column_types(
    ep: &PgEndpoint,
    target: &TableSchema,
    cols: &[&str],
) -> Result<Vec<String>, ConnectorError> {
    cols.iter()
        .map(|c| {
            target.columns.iter().find(|t| t.name == *c).map(|t| t.decl_type.clone()).ok_or_else(|| {
                ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("table {} on the target has no column {c}", target.name),
                    fix: format!(
                        "add it (ALTER TABLE {} ADD COLUMN {} …) or map the column with [[task.map]]",
                        qualified(&target.name),
                        ident(c)
                    ),
                }
            })
        })
        .collect()
}

impl PgSink {
    /// Runs a transaction's schema changes under the target's table names, inside the
    /// batch's transaction (PostgreSQL's DDL is transactional: it lands with the rows
    /// and the checkpoint, or not at all).
    async fn schema_changes(&mut self, txn: &Txn) -> Result<(), ConnectorError> {
        use sqlx::Executor;
        for sc in &txn.ddl {
            let name = Self::resolve(&sc.table);
            let statement = sc.retarget(&qualified(&name));
            if let Err(e) = self.conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))).await {
                return Err(ConnectorError::Setup {
                    endpoint: self.ep.name.clone(),
                    problem: format!(
                        "the schema change at source position {} failed here: {statement}: {e}",
                        txn.position
                    ),
                    fix: format!(
                        "make {name} here able to take it (or make the change by hand), then `ferry run` again; to skip it on purpose: ferry skip --config FILE --task TASK --position {}",
                        txn.position
                    ),
                });
            }
            tracing::info!(endpoint = %self.ep.name, position = %txn.position, "applied schema change: {statement}");
            self.targets.remove(&name);
            self.parents = parents_of(self.targets.values());
        }
        Ok(())
    }

    /// One attempt at a batch: its changes (judged, two-way) and its checkpoint in the
    /// open transaction, committed unless the group goes on.
    async fn apply_once(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        self.begin(dir).await?;
        if let Some(fence) = batch.fence
            && let Some(holder) = state::check_fence(&mut self.conn, dir, fence)
                .await
                .map_err(self.ep.error(format!("checking the lease of {dir}")))?
        {
            return Err(ConnectorError::Fenced {
                endpoint: self.ep.name.clone(),
                dir: dir.to_string(),
                mine: fence,
                holder: (holder.pid != 0).then(|| Box::new(holder)),
            });
        }
        for txn in batch.txns.iter().filter(|t| !t.ddl.is_empty()) {
            self.schema_changes(txn).await?;
        }
        let report = match &batch.conflicts {
            Some(rules) => self.write_two_way(dir, batch, rules).await?,
            None => ApplyReport { rows: self.write(dir, batch).await?, conflicts: 0 },
        };
        // Every worker's stream slot moves together (what is still applied past this
        // batch stays listed in slot 0); the first commit after loading drops the slots
        // of workers that no longer exist.
        let what = || format!("writing the checkpoint of {dir}");
        if !self.stream.settled {
            state::drop_stream_slots_from(&mut self.conn, dir, self.workers).await.map_err(self.ep.error(what()))?;
        }
        let streams = self.stream.all_slots(self.workers, batch.checkpoint.position.as_ref());
        state::write_checkpoint(&mut self.conn, dir, &batch.checkpoint, &mut self.written, &streams, true)
            .await
            .map_err(self.ep.error(what()))?;
        if batch.commit {
            if !batch.flush {
                self.exec("committing without waiting for the flush", "SET LOCAL synchronous_commit = off").await?;
            }
            self.exec("committing", "COMMIT").await?;
            self.open_group = false;
            self.deferred.committed();
            self.stream.committed(batch.checkpoint.position.as_ref());
        }
        Ok(report)
    }
}

impl Sink for PgSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        migrate::run(&self.ep, &mut self.conn).await
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        let mut recorded = deferred::recorded(&self.ep, &mut self.conn).await?;
        for t in tables {
            let name = Self::resolve(&t.name);
            self.targets.remove(&name);
            match schema::describe_loose(&self.ep, &mut self.conn, &name).await? {
                Some(existing) => {
                    // Created keyless by an earlier sink: still empty, its copy has not
                    // begun and goes on keyless; else that copy stopped midway and goes
                    // on with the keys (it may re-copy a range).
                    if !self.deferred.is_keyless(&name)
                        && let Some(alter) = recorded.remove(&qualified(&name))
                    {
                        if deferred::holds_no_rows(&self.ep, &mut self.conn, &name).await? {
                            self.deferred.adopt(&name, alter);
                        } else {
                            tracing::info!(endpoint = %self.ep.name, table = %name, "the table's first copy stopped before its keys were built: building them now");
                            deferred::add_keys(&self.ep, &mut self.conn, &name, &alter).await?;
                            self.targets.remove(&name);
                        }
                    }
                    for c in &t.columns {
                        if existing.column_index(&c.name).is_none() {
                            return Err(ConnectorError::Setup {
                                endpoint: self.ep.name.clone(),
                                problem: format!(
                                    "table {name} on the target has no column {} (the source has)",
                                    c.name
                                ),
                                fix: format!(
                                    "add it as the source has it (same type and default; a column added while ferry runs is carried, one added while it was stopped is not): ALTER TABLE {} ADD COLUMN {} {} [DEFAULT …]",
                                    qualified(&name),
                                    ident(&c.name),
                                    c.decl_type
                                ),
                            });
                        }
                    }
                }
                None => {
                    let mut create = (**t).clone();
                    create.name = name.clone();
                    // One-way copies load keyless and build the keys at the end; a
                    // two-way table is versioned by key from the start.
                    if self.two_way.is_none() && !create.primary_key.is_empty() && !self.open_group {
                        self.deferred.create(&self.ep, &mut self.conn, &create).await?;
                    } else {
                        let sql = schema::create_sql(&create, true);
                        self.ep.exec(&mut self.conn, &format!("creating table {name}"), &sql).await?;
                    }
                }
            }
        }
        if self.two_way.is_some() {
            // Local writes here are versioned too; the trigger names the target's own
            // columns.
            let mut own = Vec::with_capacity(tables.len());
            for t in tables {
                if let Some(d) = schema::describe_loose(&self.ep, &mut self.conn, &Self::resolve(&t.name)).await? {
                    own.push(Arc::new(d));
                }
            }
            let site = self.ep.site.clone();
            super::versions::install(&self.ep, &mut self.conn, &own, &site).await?;
        }
        Ok(())
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        let loaded = state::load_checkpoint_slots(&self.ep, &mut self.conn, dir).await?;
        let (cp, slots) = loaded.map(|(cp, s)| (Some(cp), s)).unwrap_or_default();
        self.stream = StreamState::loaded(slots, state::stream_key);
        if !self.stream.nothing_applied() {
            tracing::info!(endpoint = %self.ep.name, direction = %dir, transactions = self.stream.applied_count(), "a worker had committed transactions past the lowest stream slot; they are not applied again");
        }
        Ok(cp)
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        self.keys_needed(batch).await?;
        // Independent groups of source transactions over `workers` sessions, when the
        // batch allows it (one-way, stream only, slots settled, a whole commit group).
        if !self.open_group
            && batch.commit
            && let Some(report) = self.apply_parallel(dir, batch).await?
        {
            return Ok(report);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let continuing = self.open_group;
            let r = self.apply_once(dir, batch).await;
            let again = std::mem::take(&mut self.raced) || matches!(&r, Err(e) if super::conflict::retry_at_once(e));
            if r.is_err() {
                self.abort().await;
                // A failed commit may have written some slots and not others.
                self.stream.settled = false;
                // Rows of the rolled-back transaction were never written.
                self.written.clear();
            }
            // Earlier parts of an open group went with the rollback: the engine reads the
            // group again rather than this part alone.
            if r.is_err() && again && !continuing && attempt < 5 {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                continue;
            }
            return r;
        }
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.lease_conn.is_none() {
                self.lease_conn = Some(self.ep.connect().await?);
            }
            let Some(conn) = self.lease_conn.as_mut() else { unreachable!("opened above") };
            let r = state::take_lease(conn, dir, holder, ttl).await;
            if r.is_err() {
                self.lease_conn = None;
            }
            // Its lock timeout ran out (55P03: a session ended for a takeover was not gone
            // yet, or one began meanwhile), or the session was ended (a process taking
            // the lease over ends the sessions named for the tenure it supersedes): once more.
            let again = r.as_ref().err().is_some_and(|e| {
                super::sqlstate(e).as_deref() == Some("55P03")
                    || matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_))
            });
            if again && attempt < 3 {
                continue;
            }
            return r.map_err(self.ep.error(format!("taking the lease of {dir} (ferry.ferry_lease)")));
        }
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        self.abort().await;
        self.written.clear();
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        self.abort().await;
        let conn = match self.lease_conn.as_mut() {
            Some(c) => c,
            None => &mut self.conn,
        };
        state::drop_lease(conn, dir, holder).await.map_err(self.ep.error(format!("releasing the lease of {dir}")))
    }
}

/// Reads the lease and checkpoint of a direction without writing.
pub async fn target_state(
    ep: &PgEndpoint,
    dir: &DirectionId,
) -> Result<crate::connector::registry::TargetState, ConnectorError> {
    let mut conn = ep.connect().await?;
    let checkpoint = state::load_checkpoint(ep, &mut conn, dir).await.ok().flatten();
    let lease = state::lease_holder(&mut conn, dir).await.ok().flatten();
    Ok(crate::connector::registry::TargetState { checkpoint, lease, blob: None })
}

/// The conflict log's table.
pub fn conflict_table() -> String {
    ferry_table(super::names::CONFLICT_TABLE)
}
