//! Change capture by triggers, and the SQLite [`Source`].
//!
//! Each captured table gets AFTER INSERT/UPDATE/DELETE triggers that append to
//! `ferry_changelog` the before/after rows (as quote() literal lists), the origin site
//! (the applier's, when ferry itself is writing: loop prevention) and the commit time.
//!
//! SQLite has no transaction id a trigger can read, so rows carry an `epoch` that ferry
//! bumps between reads; SQLite runs one writer at a time, so every application
//! transaction lies inside one epoch and its rows are contiguous in `seq`. A batch never
//! ends inside an epoch when transactions are kept whole. Within an epoch, a [`Txn`] is
//! a run of rows with the same origin and commit time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;

use super::literal::{LiteralError, ident, int, int_prefix, parse_list, row_expr, string};
use super::position;
use super::schema::{self, HEARTBEAT_TABLE};
use super::{Access, SqliteEndpoint, begin_immediate, commit, ensure_wal, exec_batch, migrate, rollback, snapshot};
use crate::connector::{Chunk, ConnectorError, ReadBatch, ReadRequest, Source};
use crate::model::{Change, Key, Op, Position, Prior, Row, SiteId, TableSchema, Txn, Value, now_micros};

/// Consumed changelog rows are kept this long so conflict resolution can still find
/// the version (commit time, site) of a row's last write.
const CHANGELOG_RETENTION_US: i64 = 10 * 60 * 1_000_000;

/// Test hook: the retention in milliseconds instead of 10 minutes (tests of what a peer
/// behind more than the retention finds). Nothing else reads it.
pub const RETENTION_ENV: &str = "FERRY_TEST_CHANGELOG_RETENTION_MS";

/// The row of `ferry_consumer` that records the highest changelog seq ever pruned (not
/// a consumer: rows named `~…` are left out of the minimum that holds rows back).
const PRUNED_MARK: &str = "~pruned";

/// The row of `ferry_consumer` whose `seq` holds the newest commit time (µs) of a pruned
/// changelog row: versions up to it may be gone.
const PRUNED_TS_MARK: &str = "~pruned_ts";

/// How long consumed changelog rows are kept (µs): 10 minutes, or the test hook's.
pub fn retention_us() -> i64 {
    static RETENTION: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *RETENTION.get_or_init(|| {
        std::env::var(RETENTION_ENV)
            .ok()
            .and_then(|ms| ms.trim().parse::<i64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(CHANGELOG_RETENTION_US, |ms| ms * 1000)
    })
}

/// The retention in words (`10 minutes`, `1.5 s`).
pub fn retention_text() -> String {
    let us = retention_us();
    if us % 60_000_000 == 0 { format!("{} minutes", us / 60_000_000) } else { format!("{} s", us as f64 / 1e6) }
}

/// The newest commit time (µs) of a pruned changelog row, if any was pruned: versions up
/// to it may be gone.
pub async fn pruned_ts(conn: &mut SqliteConnection) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM ferry_consumer WHERE consumer = ?1")
        .bind(PRUNED_TS_MARK)
        .fetch_optional(conn)
        .await
}

/// Commit time in microseconds as a trigger computes it (SQLite's clock has milliseconds).
const TRIGGER_NOW_US: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000";

/// A SQLite database read as a change source.
pub struct SqliteSource {
    ep: SqliteEndpoint,
    conn: SqliteConnection,
    tables: HashMap<String, Arc<TableSchema>>,
    last_prune_us: i64,
}

impl SqliteSource {
    /// Opens the endpoint for reading changes (and writing capture triggers and heartbeats).
    pub async fn open(ep: SqliteEndpoint, access: Access) -> Result<Self, ConnectorError> {
        let conn = ep.connect(access).await?;
        Ok(SqliteSource { ep, conn, tables: HashMap::new(), last_prune_us: 0 })
    }

    /// Reads changelog rows packed into one text value per query: SQLite builds it, so
    /// the driver hands over one value instead of eight per row (the per-row cost of the
    /// driver dominated reading). Rows are `seq,epoch,op,ts,'origin','tbl'[,before][,after]`
    /// joined by `;` (quote() literals, so the separator is unambiguous outside quotes).
    /// Without `before_images`, updates and deletes carry their key (`pk`) instead of the
    /// whole before-image: a one-way task needs nothing more, and parses less.
    async fn fetch_rows(
        &mut self,
        after: i64,
        until: i64,
        limit: i64,
        before_images: bool,
        target_site: &str,
        names: &[String],
    ) -> Result<Page, ConnectorError> {
        const HEAD: &str = "seq || ',' || epoch || ',' || op || ',' || ts || ',' || quote(origin) || ',' || quote(tbl)";
        // Two-way inserts carry, as two leading values, the last change of the key that
        // came from the target's site, when it was a deletion (origin, ts; else NULL,
        // NULL): whether the source had seen the target delete the row (see `Prior`).
        // Every two-way change also leads with the version (origin, ts) of the key's
        // previous change here: the state it replaced (see `Change::seen`).
        let old = if before_images {
            "',' || coalesce((SELECT quote(v.origin) || ',' || v.ts FROM ferry_changelog v \
             WHERE v.tbl = c.tbl AND v.pk = c.pk AND v.seq < c.seq AND v.op <> 4 ORDER BY v.seq DESC LIMIT 1), 'NULL,NULL') \
             || CASE op WHEN 1 THEN ',' || coalesce((SELECT CASE WHEN p.after IS NULL THEN quote(p.origin) || ',' || p.ts END \
             FROM ferry_changelog p WHERE p.tbl = c.tbl AND p.pk = c.pk AND p.seq < c.seq AND p.origin = ?4 \
             ORDER BY p.seq DESC LIMIT 1), 'NULL,NULL') \
             ELSE coalesce(',' || before, '') END"
        } else {
            "CASE op WHEN 1 THEN '' ELSE ',' || pk END"
        };
        // One-way: concat_ws builds the row in one pass (each `||` copies the text built
        // so far) and leaves out the NULLs: the key of an insert, the after-image of a delete.
        let pack = if before_images {
            format!("{HEAD} || {old} || coalesce(',' || after, '')")
        } else {
            // The source's own site and the first tables are sent as `-` and `-N`
            // (see `Header::name`): quote() formats through printf, which showed in profiles.
            // The usual ops are constants: turning an integer into text costs ~200
            // instructions a value in concat_ws.
            let tables: String =
                names.iter().enumerate().map(|(i, n)| format!("WHEN {} THEN '-{i}' ", string(n))).collect();
            let tbl = if tables.is_empty() {
                "quote(tbl)".to_string()
            } else {
                format!("CASE tbl {tables}ELSE quote(tbl) END")
            };
            format!(
                "concat_ws(',', seq, epoch, CASE op WHEN 1 THEN '1' WHEN 2 THEN '2' WHEN 3 THEN '3' ELSE op END, ts, \
                 CASE origin WHEN ?5 THEN '-' ELSE quote(origin) END, {tbl}, \
                 CASE op WHEN 1 THEN NULL ELSE pk END, after)"
            )
        };
        let q = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT group_concat(r, ';'), count(*), max(s) FROM (SELECT seq AS s, {pack} AS r FROM ferry_changelog c \
             WHERE seq > ?1 AND seq <= ?2 AND epoch < (SELECT epoch FROM ferry_clock WHERE id = 1) \
             ORDER BY seq LIMIT ?3)"
        )))
        .bind(after)
        .bind(until)
        .bind(limit)
        .bind(target_site)
        .bind(self.ep.site.as_str().to_string());
        let (packed, rows, last): (Option<String>, i64, Option<i64>) =
            q.fetch_one(&mut self.conn).await.map_err(self.ep.query_error("reading ferry_changelog"))?;
        Ok(Page { packed: packed.unwrap_or_default(), rows, last: last.unwrap_or(after) })
    }

    fn unpack<'a>(&self, page: &'a Page, short: &'a Short) -> Result<Vec<Entry<'a>>, ConnectorError> {
        unpack(&page.packed, short, usize::try_from(page.rows).unwrap_or(0)).map_err(|e| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!("ferry_changelog holds an unreadable row: {e}"),
            fix: "the changelog was edited by hand; restore it or re-copy the tables (remove the task's checkpoint)"
                .into(),
        })
    }

    /// Prunes changelog rows every registered reader has read and that are older than
    /// the retention, measured from now and from each two-way direction that applies
    /// into this database (`ferry_version_hold`): a peer behind keeps the versions its
    /// changes will be compared with, however far behind it is. The highest seq and the
    /// newest commit time removed are remembered (`~pruned`, `~pruned_ts`), so a reader
    /// or a peer asking for what is gone stops with the fix instead of missing it.
    async fn prune(&mut self, now: i64, retention: i64) -> Result<(), ConnectorError> {
        let what = "pruning consumed changelog rows";
        let hold: Option<i64> = sqlx::query_scalar("SELECT min(applied_ts) FROM ferry_version_hold")
            .fetch_one(&mut self.conn)
            .await
            .map_err(self.ep.query_error(what))?;
        let cutoff = hold.map_or(now, |h| h.min(now)) - retention;
        let readers = "(SELECT min(seq) FROM ferry_consumer WHERE consumer NOT LIKE '~%')";
        let (upto, newest): (Option<i64>, Option<i64>) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT max(seq), max(ts) FROM ferry_changelog WHERE seq <= {readers} AND ts < ?1"
        )))
        .bind(cutoff)
        .fetch_one(&mut self.conn)
        .await
        .map_err(self.ep.query_error(what))?;
        let (Some(upto), Some(newest)) = (upto, newest) else { return Ok(()) };
        for (mark, value) in [(PRUNED_MARK, upto), (PRUNED_TS_MARK, newest)] {
            sqlx::query(
                "INSERT INTO ferry_consumer(consumer, seq, updated_us) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(consumer) DO UPDATE SET seq = max(seq, excluded.seq), updated_us = excluded.updated_us",
            )
            .bind(mark)
            .bind(value)
            .bind(now)
            .execute(&mut self.conn)
            .await
            .map_err(self.ep.query_error(what))?;
        }
        sqlx::query("DELETE FROM ferry_changelog WHERE seq <= ?1 AND ts < ?2")
            .bind(upto)
            .bind(cutoff)
            .execute(&mut self.conn)
            .await
            .map_err(self.ep.query_error(what))?;
        Ok(())
    }

    async fn bump_epoch(&mut self) -> Result<(), ConnectorError> {
        sqlx::query("UPDATE ferry_clock SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut self.conn)
            .await
            .map_err(self.ep.query_error("closing the current capture epoch"))?;
        Ok(())
    }

    async fn max_seq(&mut self) -> Result<i64, ConnectorError> {
        // AUTOINCREMENT's counter: the last sequence number given out, even when pruning
        // has deleted every row (so a restart never sees the head go back).
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ferry_changelog'), 0), \
             coalesce((SELECT max(seq) FROM ferry_changelog), 0))",
        )
        .fetch_one(&mut self.conn)
        .await
        .map_err(self.ep.query_error("reading the changelog head"))?;
        Ok(v.unwrap_or(0))
    }

    fn to_txns(&self, rows: Vec<Entry<'_>>, exclude: &SiteId, before_images: bool) -> Result<Vec<Txn>, ConnectorError> {
        let mut txns: Vec<Txn> = Vec::new();
        let mut cur: Option<(i64, String, i64)> = None;
        let mut last_seq = 0;
        // Runs of rows share a table: look it up only when the name changes.
        let mut last_table: Option<(String, Option<Arc<TableSchema>>)> = None;
        for r in rows {
            if r.origin == exclude.as_str() || schema::record_only(r.op) {
                continue;
            }
            let found = match &last_table {
                Some((name, t)) if name.as_str() == r.tbl.as_ref() => t.clone(),
                _ => {
                    let t = self.tables.get(r.tbl.as_ref()).cloned();
                    last_table = Some((r.tbl.to_string(), t.clone()));
                    t
                }
            };
            let Some(table) = found else {
                continue;
            };
            let n = table.columns.len();
            // The old image: the whole row, or only its key.
            let m = if before_images { n } else { table.primary_key.len() };
            let mut prior = Prior::Unknown;
            // Two-way reads lead with the version the change replaced (see fetch_rows).
            let mut seen = None;
            let mut values = r.values;
            if before_images && values.len() >= 2 {
                let rest = values.split_off(2);
                if let (Value::Text(site), Value::Int(ts)) = (&values[0], &values[1]) {
                    seen = Some((SiteId::new(site), *ts));
                }
                values = rest;
            }
            let r = Entry { values, ..r };
            let (old, after) = match (r.op, r.values.len()) {
                (1, l) if l == n && !before_images => (None, Some(r.values)),
                (1, l) if l == n + 2 && before_images => {
                    let mut values = r.values;
                    let after = values.split_off(2);
                    prior = match (&values[0], &values[1]) {
                        (Value::Text(site), Value::Int(ts)) => Prior::Deleted(SiteId::new(site), *ts),
                        _ => Prior::Fresh,
                    };
                    (None, Some(after))
                }
                (3, l) if l == m => (Some(r.values), None),
                (2, l) if l == m + n => {
                    let mut old = r.values;
                    let after = old.split_off(m);
                    (Some(old), Some(after))
                }
                (_, l) => {
                    return Err(ConnectorError::Setup {
                        endpoint: self.ep.name.clone(),
                        problem: format!(
                            "changelog row {} of table {} has {l} values but the table has {n} columns: its shape changed while ferry was capturing",
                            r.seq, table.name
                        ),
                        fix: "schema changes on SQLite need a restart of ferry (which reinstalls the triggers) before the application writes with the new shape".into(),
                    });
                }
            };
            let op = match r.op {
                1 => Op::Insert,
                2 => Op::Update,
                _ => Op::Delete,
            };
            let (key, before): (Key, Option<Row>) = match (old, &after) {
                (Some(o), _) if !before_images => (o, None),
                (Some(b), _) => (table.key_of(&b), Some(b)),
                (None, Some(a)) => (table.key_of(a), None),
                (None, None) => continue,
            };
            let change = Change { table, op, key, before, after, prior, seen, version: None };
            let same = matches!(&cur, Some((e, o, t)) if *e == r.epoch && *o == r.origin && *t == r.ts);
            match txns.last_mut() {
                Some(last) if same => {
                    last.changes.push(change);
                    last_seq = r.seq;
                }
                _ => {
                    // A transaction's position is that of its last change, set once it
                    // is complete (formatting one per change showed in profiles).
                    if let Some(prev) = txns.last_mut() {
                        prev.position = position::at(last_seq);
                    }
                    last_seq = r.seq;
                    txns.push(Txn {
                        origin: SiteId::new(&r.origin),
                        commit_ts: r.ts,
                        position: position::at(r.seq),
                        changes: vec![change],
                        ddl: Vec::new(),
                    });
                    cur = Some((r.epoch, r.origin.into_owned(), r.ts));
                }
            }
        }
        if let Some(last) = txns.last_mut() {
            last.position = position::at(last_seq);
        }
        Ok(txns)
    }
}

/// Names a one-way read sends short (see `fetch_rows`): the source's own site, and the
/// first tables.
struct Short {
    site: String,
    tables: Vec<String>,
}

/// Most tables a read names by number; more would make each row's CASE long.
const SHORT_TABLES: usize = 8;

/// A packed changelog read: the rows, how many, and the last one's seq (`after` when none).
struct Page {
    packed: String,
    rows: i64,
    last: i64,
}

/// One changelog row as read (text fields borrowed from the packed read).
struct Entry<'a> {
    seq: i64,
    epoch: i64,
    op: i64,
    ts: i64,
    origin: Cow<'a, str>,
    tbl: Cow<'a, str>,
    /// Before-image values then after-image values, as present for `op`.
    values: Vec<Value>,
}

/// Splits a packed changelog read into entries, in one pass: each row's values are
/// parsed up to the `;` that ends it.
fn unpack<'a>(packed: &'a str, short: &'a Short, rows: usize) -> Result<Vec<Entry<'a>>, LiteralError> {
    let mut out = Vec::with_capacity(rows);
    let mut start = 0;
    while start < packed.len() {
        let bad = || LiteralError { at: start, text: packed[start..].chars().take(200).collect() };
        let mut cur = Header { text: packed, at: start };
        let (seq, epoch, op, ts) = (
            cur.int().ok_or_else(bad)?,
            cur.int().ok_or_else(bad)?,
            cur.int().ok_or_else(bad)?,
            cur.int().ok_or_else(bad)?,
        );
        let origin = cur.name(std::slice::from_ref(&short.site)).ok_or_else(bad)?;
        let tbl = cur.name(&short.tables).ok_or_else(bad)?;
        let mut values = Vec::with_capacity(8);
        let end = parse_list(packed, cur.at, &mut values)?;
        out.push(Entry { seq, epoch, op, ts, origin, tbl, values });
        start = end + 1;
    }
    Ok(out)
}

/// Reads the fixed head of a packed changelog row without allocating.
struct Header<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Header<'a> {
    /// The next comma-terminated integer.
    fn int(&mut self) -> Option<i64> {
        let b = &self.text.as_bytes()[self.at..];
        let (n, len) = int_prefix(b)?;
        if b.get(len) != Some(&b',') {
            return None;
        }
        self.at += len + 1;
        Some(n)
    }

    /// The next name: quoted, or `-N` for the Nth of `short` (`-` for the first).
    fn name(&mut self, short: &'a [String]) -> Option<Cow<'a, str>> {
        let b = self.text.as_bytes();
        if b.get(self.at) != Some(&b'-') {
            return self.quoted();
        }
        let rest = &b[self.at + 1..];
        let end = rest.iter().position(|c| matches!(c, b',' | b';')).unwrap_or(rest.len());
        let i = if end == 0 { 0 } else { usize::try_from(int(&rest[..end])?).ok()? };
        self.at += 1 + end;
        if b.get(self.at) == Some(&b',') {
            self.at += 1;
        }
        short.get(i).map(|n| Cow::Borrowed(n.as_str()))
    }

    /// The next quoted string (and the comma after it, if any).
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        let b = self.text.as_bytes();
        if b.get(self.at) != Some(&b'\'') {
            return None;
        }
        let start = self.at + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            match b.get(i) {
                Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                    escaped = true;
                    i += 2;
                }
                Some(b'\'') => break,
                Some(_) => i += 1,
                None => return None,
            }
        }
        let raw = &self.text[start..i];
        self.at = i + 1;
        if b.get(self.at) == Some(&b',') {
            self.at += 1;
        }
        Some(if escaped { Cow::Owned(raw.replace("\'\'", "\'")) } else { Cow::Borrowed(raw) })
    }
}

/// The changelog sequence of a position; another source's position (a checkpoint
/// recorded before the task's source changed) restarts from the beginning.
fn seq_of(p: &Position) -> i64 {
    position::seq(p).unwrap_or(0)
}

/// Installs capture triggers for the tables (and the heartbeat table) in one transaction,
/// replacing older ones so they match the current columns.
pub async fn install_triggers(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    tables: &[Arc<TableSchema>],
) -> Result<(), ConnectorError> {
    ensure_wal(conn).await.map_err(ep.query_error("switching the database to WAL mode"))?;
    migrate::run(ep, conn).await?;
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    sql.push_str(&format!(
        "INSERT INTO ferry_clock(id, epoch, site) VALUES (1, 1, {site}) ON CONFLICT(id) DO UPDATE SET site = excluded.site;\n",
        site = string(ep.site.as_str())
    ));
    let hb = Arc::new(schema::heartbeat_schema());
    for t in tables.iter().chain(std::iter::once(&hb)) {
        sql.push_str(&trigger_sql(t));
    }
    sql.push_str("COMMIT;");
    if let Err(e) = exec_batch(conn, sql).await {
        let _ = exec_batch(conn, "ROLLBACK".into()).await;
        return Err(ConnectorError::Query {
            endpoint: ep.name.clone(),
            what: "installing capture triggers".into(),
            source: e,
        });
    }
    Ok(())
}

fn trigger_sql(t: &TableSchema) -> String {
    let name = &t.name.name;
    let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    let keys = t.key_columns();
    let mut sql = String::new();
    for (suffix, event, op, pk_from, before, after) in [
        ("ins", "INSERT", 1, "NEW", "NULL".to_string(), row_expr("NEW", &cols)),
        ("upd", "UPDATE", 2, "OLD", row_expr("OLD", &cols), row_expr("NEW", &cols)),
        ("del", "DELETE", 3, "OLD", row_expr("OLD", &cols), "NULL".to_string()),
    ] {
        let trig = ident(&format!("ferry_capture_{suffix}_{name}"));
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {trig};\n\
             CREATE TRIGGER {trig} AFTER {event} ON {table} BEGIN \
             INSERT INTO ferry_changelog(epoch, tbl, op, origin, ts, pk, before, after) \
             SELECT c.epoch, {tname}, {op}, COALESCE(o.origin, c.site), COALESCE(o.ts, {TRIGGER_NOW_US}), {pk}, {before}, {after} \
             FROM ferry_clock c LEFT JOIN ferry_apply_origin o ON o.id = 1 WHERE c.id = 1; END;\n",
            table = ident(name),
            tname = string(name),
            pk = row_expr(pk_from, &keys),
        ));
    }
    sql
}

/// Removes capture triggers from every table (used when a database stops being a source).
pub async fn remove_triggers(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<usize, ConnectorError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'ferry\\_capture\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.query_error("listing capture triggers"))?;
    let sql: String = names.iter().map(|n| format!("DROP TRIGGER IF EXISTS {};\n", ident(n))).collect();
    if !sql.is_empty() {
        exec_batch(conn, sql).await.map_err(ep.query_error("removing capture triggers"))?;
    }
    Ok(names.len())
}

impl Source for SqliteSource {
    async fn close(self) {
        super::close(self.conn).await
    }
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        let tables = schema::describe_matching(&self.ep, &mut self.conn, patterns).await?;
        self.tables = tables.iter().map(|t| (t.name.name.clone(), t.clone())).collect();
        self.tables.insert(HEARTBEAT_TABLE.to_string(), Arc::new(schema::heartbeat_schema()));
        Ok(tables)
    }

    async fn install_capture(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        install_triggers(&self.ep, &mut self.conn, tables).await?;
        for t in tables {
            self.tables.insert(t.name.name.clone(), t.clone());
        }
        self.tables.insert(HEARTBEAT_TABLE.to_string(), Arc::new(schema::heartbeat_schema()));
        Ok(())
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        Ok(position::at(self.max_seq().await?))
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        snapshot::read_chunk(&self.ep, &mut self.conn, table, after, limit, versions).await
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        let after = seq_of(&req.after);
        let until = req.until.as_ref().map(seq_of).unwrap_or(i64::MAX);
        if after >= until {
            return Ok(ReadBatch { txns: vec![], position: req.after.clone(), continues: false });
        }
        let pruned: Option<i64> = sqlx::query_scalar("SELECT seq FROM ferry_consumer WHERE consumer = ?1")
            .bind(PRUNED_MARK)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(self.ep.query_error("reading how far the changelog was pruned"))?;
        if let Some(upto) = pruned.filter(|p| after < *p) {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!(
                    "the changes after changelog seq {after} are gone: the changelog was pruned up to seq {upto} \
                     (kept {} once every registered reader had them; this reader was not registered \
                     or its target was restored from an older backup)",
                    retention_text()
                ),
                fix: "copy the tables again: remove this direction's row from the target's ferry_checkpoint \
                      (a fresh snapshot), or verify --repair the target, then start the task"
                    .into(),
            });
        }
        let limit = i64::try_from(req.max_changes.max(1)).unwrap_or(i64::MAX);
        let mut tables: Vec<String> = self.tables.keys().take(SHORT_TABLES).cloned().collect();
        if req.before_images {
            tables.clear();
        }
        let short = Short { site: self.ep.site.as_str().to_string(), tables };
        let mut bumped = false;
        let page = loop {
            let page = self
                .fetch_rows(after, until, limit, req.before_images, req.exclude_origin.as_str(), &short.tables)
                .await?;
            if page.rows < limit && !bumped {
                // Rows of the still-open epoch wait until it is closed; close it now if
                // any exist, and read again.
                if self.max_seq().await? > page.last && page.last < until {
                    self.bump_epoch().await?;
                    bumped = true;
                    continue;
                }
            }
            break page;
        };
        let mut rows = self.unpack(&page, &short)?;
        let mut cutoff = i64::MAX;
        let mut continues = false;
        if (rows.len() as i64) >= limit && req.keep_transactions {
            let last_epoch = rows.last().map(|r| r.epoch).unwrap_or(0);
            let first_epoch = rows.first().map(|r| r.epoch).unwrap_or(0);
            if first_epoch == last_epoch {
                // One commit group larger than a batch: hand it over in parts that the
                // target applies in one transaction.
                continues = true;
            } else {
                // Leave the last, possibly unfinished, commit group for the next read.
                cutoff = rows.iter().filter(|r| r.epoch != last_epoch).map(|r| r.seq).max().unwrap_or(after);
            }
        }
        rows.retain(|r| r.seq <= cutoff);
        let position = match rows.last() {
            Some(r) => position::at(r.seq),
            None => req.after.clone(),
        };
        let txns = self.to_txns(rows, &req.exclude_origin, req.before_images)?;
        Ok(ReadBatch { txns, position, continues })
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        let site = self.ep.site.as_str().to_string();
        let conn = &mut self.conn;
        let r = async {
            begin_immediate(conn).await?;
            sqlx::query("INSERT INTO ferry_heartbeat(site, ts) VALUES (?1, ?2) ON CONFLICT(site) DO UPDATE SET ts = excluded.ts")
                .bind(site)
                .bind(now_micros())
                .execute(&mut *conn)
                .await?;
            sqlx::query("UPDATE ferry_clock SET epoch = epoch + 1 WHERE id = 1").execute(&mut *conn).await?;
            commit(conn).await
        }
        .await;
        if let Err(e) = r {
            rollback(&mut self.conn).await;
            return Err(ConnectorError::Query {
                endpoint: self.ep.name.clone(),
                what: "writing the heartbeat".into(),
                source: e,
            });
        }
        Ok(())
    }

    async fn clock(&mut self) -> Result<Option<i64>, ConnectorError> {
        // The expression the capture triggers stamp versions with: the clock of this
        // host (a SQLite file is written where it lies).
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT {TRIGGER_NOW_US}")))
            .fetch_one(&mut self.conn)
            .await
            .map(Some)
            .map_err(self.ep.query_error("reading the clock"))
    }

    async fn estimate_rows(&mut self, table: &TableSchema) -> Result<Option<u64>, ConnectorError> {
        super::schema::count_rows(&self.ep, &mut self.conn, &table.name.name).await.map(Some)
    }

    async fn consumed(&mut self, consumer: &str, position: &Position) -> Result<(), ConnectorError> {
        let now = now_micros();
        sqlx::query(
            "INSERT INTO ferry_consumer(consumer, seq, updated_us) VALUES (?1, ?2, ?3) \
             ON CONFLICT(consumer) DO UPDATE SET seq = max(seq, excluded.seq), updated_us = excluded.updated_us",
        )
        .bind(consumer)
        .bind(seq_of(position))
        .bind(now)
        .execute(&mut self.conn)
        .await
        .map_err(self.ep.query_error("recording consumer progress"))?;
        let retention = retention_us();
        if now - self.last_prune_us > retention.min(60_000_000) {
            self.last_prune_us = now;
            self.prune(now, retention).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_short_and_quoted_names_in_one_pass() {
        let short = Short { site: "dc-a".into(), tables: vec!["items".into(), "o;dd".into()] };
        let packed = "5,2,1,100,-,-0,1,'x;y';6,2,3,100,'dc-''b','it''s',7;7,3,2,101,-,-1,8,8,NULL";
        let rows = unpack(packed, &short, 3).expect("unpacks");
        let heads: Vec<(i64, i64, &str, &str)> =
            rows.iter().map(|r| (r.seq, r.epoch, r.origin.as_ref(), r.tbl.as_ref())).collect();
        assert_eq!(heads, vec![(5, 2, "dc-a", "items"), (6, 2, "dc-'b", "it's"), (7, 3, "dc-a", "o;dd")]);
        assert_eq!(rows[0].values, vec![Value::Int(1), Value::Text("x;y".into())]);
        assert_eq!(rows[1].values, vec![Value::Int(7)]);
        assert_eq!(rows[2].values, vec![Value::Int(8), Value::Int(8), Value::Null]);
        assert!(unpack("1,1,1,1,-9,'t',1", &short, 1).is_err());
    }
}
