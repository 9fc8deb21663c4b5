//! The PostgreSQL [`Source`]: table discovery, the publication and slot of the
//! direction, the DBLog snapshot (watermark rows in `ferry.ferry_signal`), heartbeats,
//! and the pgoutput stream turned into whole transactions.
//!
//! The slot is confirmed only up to what the target committed ([`Source::consumed`]):
//! the transport acknowledges nothing by itself, so a crash re-reads from the target's
//! checkpoint and nothing is lost, while WAL behind the checkpoint is released.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pgwire_replication::{ReplicationClient, ReplicationEvent};
use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::ddl;
use super::decoder::{self, Datum, Message, Relation};
use super::export::Exported;
use super::names::{self, HEARTBEAT_TABLE, SIGNAL_TABLE, SLOT_TABLE};
use super::position::Lsn;
use super::values::{Kind, decode};
use super::{FERRY_SCHEMA, PgEndpoint, ferry_table, ident, migrate, qualified, schema, versions};
use crate::connector::{Chunk, ConnectorError, ErrorKind, ReadBatch, ReadRequest, Source};
use crate::model::conflict::{StampEvent, attach_stamps};
use crate::model::{Change, Key, Op, Position, Prior, Row, SiteId, TableName, TableSchema, Txn, Value, now_micros};

/// How long one read waits for the first transaction before returning empty.
const READ_WAIT: Duration = Duration::from_millis(50);
/// Changes of one source transaction held before it is handed out in parts.
const PART_CHANGES: usize = 20_000;
/// How long a read up to a snapshot's position waits for the stream to prove it got
/// there (ferry's own heartbeats, every 100 ms, normally do within one).
const UNTIL_WAIT: Duration = Duration::from_secs(60);
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// How long a slot may stay busy (its previous reader's walsender ending) before the
/// slot counts as taken by another consumer.
const SLOT_BUSY_WAIT: Duration = Duration::from_secs(10);

/// Watermarks written by this process, so two marks are never equal.
static MARKS: AtomicU64 = AtomicU64::new(0);

/// A relation as the stream describes it, matched to ferry's description.
struct Rel {
    schema: Arc<TableSchema>,
    /// For each stream column, its index in `schema`.
    map: Vec<usize>,
    kinds: Vec<Kind>,
}

/// A transaction being read.
struct Open {
    origin: Option<String>,
    commit_ts: i64,
    changes: Vec<Change>,
    /// Parts handed out so far (a big transaction).
    parts: u32,
    signal: bool,
    /// Two-way: the version table changes read so far, paired with `changes` when
    /// they are handed out.
    stamps: Vec<StampEvent>,
}

/// A PostgreSQL server read as a change source.
pub struct PgSource {
    ep: PgEndpoint,
    conn: PgConnection,
    stream: String,
    /// This node's name of the stream in older releases, whose slot is carried over.
    former: Option<String>,
    /// In a cluster, under the direction's lease: a session left on the slot by a
    /// previous owner is ended (see [`super::handover`]).
    takeover: bool,
    tables: HashMap<TableName, Arc<TableSchema>>,
    patterns: Vec<glob::Pattern>,
    relations: HashMap<u32, Option<Rel>>,
    client: Option<ReplicationClient>,
    reader_at: Option<Position>,
    /// The end of the last commit read.
    last_end: Lsn,
    open: Option<Open>,
    /// The server's WAL end from a keepalive received with no transaction open and
    /// nothing unread before it: once the target holds `last_end`, it may be confirmed
    /// too (a server shutting down waits for its walsenders' clients to confirm its end).
    idle_end: Lsn,
    /// The last position confirmed to the server (what the target committed).
    acked: Lsn,
    versions: bool,
    /// Two-way: each followed table's version table name -> the table.
    versioned: HashMap<String, TableName>,
    /// Columns added to followed tables, seen in the open transaction's Relation
    /// messages: carried to the target ahead of its rows.
    pending_ddl: Vec<crate::model::SchemaChange>,
    /// The target is PostgreSQL too: snapshot chunks go as COPY text, undecoded.
    native: bool,
    /// The exported snapshot chunks are read through, while the copy lasts.
    snapshot: Option<Exported>,
    /// The size of the last chunk read through it (the next is likely alike).
    chunk_bytes: usize,
    /// Exporting a snapshot failed (no free slot or sender): chunks are read with
    /// watermarks instead.
    no_export: bool,
    /// The stream went past the position a read had to stop at: the next read starts
    /// it again there.
    restart: bool,
}

impl PgSource {
    /// Connects; `stream` (task and direction) names the slot, the publication and the
    /// snapshot signal row. Nothing is created until [`Source::install_capture`].
    pub async fn open(ep: PgEndpoint, stream: &str) -> Result<Self, ConnectorError> {
        let conn = ep.connect().await?;
        Ok(PgSource {
            ep,
            conn,
            stream: stream.to_string(),
            former: None,
            takeover: false,
            tables: HashMap::new(),
            patterns: Vec::new(),
            relations: HashMap::new(),
            client: None,
            reader_at: None,
            last_end: Lsn(0),
            open: None,
            idle_end: Lsn(0),
            acked: Lsn(0),
            versions: false,
            versioned: HashMap::new(),
            pending_ddl: Vec::new(),
            native: false,
            snapshot: None,
            chunk_bytes: 0,
            no_export: false,
            restart: false,
        })
    }

    /// Snapshot chunks for a PostgreSQL target: COPY text, handed over undecoded.
    pub fn with_native_chunks(mut self, on: bool) -> Self {
        self.native = on;
        self
    }

    /// The stream's name on this node in older releases (its slot is carried over), and
    /// whether a previous owner's session on the slot may be ended (cluster, under the
    /// direction's lease).
    pub fn with_handover(mut self, former: Option<String>, takeover: bool) -> Self {
        self.former = former;
        self.takeover = takeover;
        self
    }

    /// Two-way: read versions with changes.
    pub fn with_versions(mut self, on: bool) -> Self {
        self.versions = on;
        self
    }

    fn stream_error(&self, what: &str, e: pgwire_replication::PgWireError) -> ConnectorError {
        let kind = if e.is_auth() || e.is_tls() { ErrorKind::Setup } else { ErrorKind::Runtime };
        ConnectorError::Stream { endpoint: self.ep.name.clone(), what: what.to_string(), source: Box::new(e), kind }
    }

    /// Starts the stream after `after` (the target's checkpoint), acknowledging nothing
    /// beyond it. A slot still held by this direction's previous reader (a killed
    /// process's walsender) is waited for, one held longer is another consumer's; in a
    /// cluster, under the lease, the previous owner's session is ended instead.
    async fn start(&mut self, after: &Position) -> Result<(), ConnectorError> {
        if let Some(mut c) = self.client.take() {
            let _ = c.shutdown().await;
        }
        let lsn = Lsn::of(after).map_err(|e| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: e.to_string(),
            fix: "the checkpoint belongs to another kind of source: delete the task's checkpoint rows on the target to start over".into(),
        })?;
        let slot = names::slot(&self.stream);
        let publication = super::handover::publication_of(&self.ep, &mut self.conn, &self.stream).await?;
        let cfg = self
            .ep
            .replication_config(slot.clone(), publication)
            .with_start_lsn(pgwire_replication::Lsn::from_u64(lsn.0))
            .with_ack_lsn(pgwire_replication::Lsn::from_u64(lsn.0))
            .with_status_interval(Duration::from_secs(1))
            .with_wakeup_interval(Duration::from_secs(5));
        slot_free(&self.ep, &mut self.conn, &self.stream, self.takeover).await?;
        slot_covers(&self.ep, &mut self.conn, &slot, lsn).await?;
        let deadline = tokio::time::Instant::now() + SLOT_BUSY_WAIT;
        let client = loop {
            let attempt = async {
                let mut c = ReplicationClient::connect(cfg.clone()).await?;
                c.wait_started().await?;
                Ok::<_, pgwire_replication::PgWireError>(c)
            };
            match attempt.await {
                Ok(c) => break c,
                Err(e) if e.to_string().contains("is active for PID") => {
                    if self.takeover {
                        super::handover::end_session(&self.ep, &mut self.conn, &slot).await?;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ConnectorError::Setup {
                            endpoint: self.ep.name.clone(),
                            problem: format!("replication slot {slot} is used by another consumer: {e}"),
                            fix: format!(
                                "stop the other reader of this direction (another ferry process, or pg_recvlogical); if it is stuck: SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}'"
                            ),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) if e.to_string().contains("does not exist") => {
                    return Err(ConnectorError::Setup {
                        endpoint: self.ep.name.clone(),
                        problem: format!("the direction's replication slot or publication is gone: {e}"),
                        fix: "a slot dropped (or invalidated by max_slot_wal_keep_size) has lost changes: delete the task's checkpoint rows on the target (ferry.ferry_checkpoint) and run again to copy the tables anew".into(),
                    });
                }
                Err(e) => return Err(self.stream_error("starting logical replication", e)),
            }
        };
        self.client = Some(client);
        self.reader_at = Some(after.clone());
        self.last_end = lsn;
        self.idle_end = Lsn(0);
        self.acked = lsn;
        self.open = None;
        self.relations.clear();
        self.pending_ddl.clear();
        Ok(())
    }

    /// ferry's description of a relation the stream announced, `None` for tables the
    /// task does not follow.
    async fn relation(&mut self, r: Relation) -> Result<(), ConnectorError> {
        let name = TableName { schema: Some(r.namespace.clone()), name: r.name.clone() };
        let tracked = self.tables.get(&name).cloned();
        let schema = match tracked {
            Some(s) => Some(s),
            None if r.namespace == FERRY_SCHEMA
                && (r.name == HEARTBEAT_TABLE || r.name == SIGNAL_TABLE || self.versioned.contains_key(&r.name)) =>
            {
                schema::describe_loose(&self.ep, &mut self.conn, &name).await?.map(Arc::new)
            }
            None => None,
        };
        let Some(mut schema) = schema else {
            self.relations.insert(r.id, None);
            return Ok(());
        };
        let now: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
        if self.tables.contains_key(&name)
            && let Some(changed) = ddl::follow(&self.ep, &mut self.conn, &schema, &r.columns).await?
        {
            // Columns added (carried to the target ahead of the rows), or a stream read
            // from before columns were added (its rows leave them as they are).
            schema = Arc::new(changed.table);
            self.tables.insert(name.clone(), schema.clone());
            self.pending_ddl.extend(changed.ddl);
        }
        let map: Option<Vec<usize>> = r.columns.iter().map(|c| schema.column_index(&c.name)).collect();
        let map = match map {
            Some(m) if m.len() == schema.columns.len() => m,
            _ => {
                return Err(ConnectorError::Setup {
                    endpoint: self.ep.name.clone(),
                    problem: format!(
                        "the columns of table {name} changed while ferry follows it (now {}; described as {})",
                        now.join(", "),
                        schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    fix: "columns added at the end are carried; for other changes (dropped, renamed) apply the same ALTER TABLE on the target, then start ferry again (it describes the tables anew)".into(),
                });
            }
        };
        let kinds = map.iter().map(|&i| Kind::of_decl(&schema.columns[i].decl_type)).collect();
        self.relations.insert(r.id, Some(Rel { schema, map, kinds }));
        Ok(())
    }

    /// A row from a tuple; unchanged TOAST values come from `old` or are read back.
    fn row(&self, rel: &Rel, tuple: &[Datum], old: Option<&Row>) -> Result<(Row, Vec<usize>), ConnectorError> {
        let mut row = vec![Value::Null; rel.schema.columns.len()];
        let mut missing = Vec::new();
        for (i, d) in tuple.iter().enumerate() {
            let (Some(&at), Some(&kind)) = (rel.map.get(i), rel.kinds.get(i)) else { continue };
            row[at] = match d {
                Datum::Null => Value::Null,
                Datum::Unchanged => match old.and_then(|o| o.get(at)) {
                    Some(v) => v.clone(),
                    None => {
                        missing.push(at);
                        Value::Null
                    }
                },
                Datum::Text(b) | Datum::Binary(b) => {
                    let text = std::str::from_utf8(b).map_err(|_| self.bad_value(&rel.schema, at, "not UTF-8"))?;
                    decode(kind, text).map_err(|e| self.bad_value(&rel.schema, at, &e))?
                }
            };
        }
        Ok((row, missing))
    }

    fn bad_value(&self, t: &TableSchema, col: usize, why: &str) -> ConnectorError {
        ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!(
                "a value of column {}.{} ({}) in the change stream cannot be read: {why}",
                t.name,
                t.columns.get(col).map_or("?", |c| c.name.as_str()),
                t.columns.get(col).map_or("?", |c| c.decl_type.as_str())
            ),
            fix: "leave the table out of the task's tables, or report the value as a bug".into(),
        }
    }

    /// Reads back unchanged TOAST values of a row (the stream did not carry them): the
    /// current value is the row's, or newer, which the stream then brings again.
    async fn fill(&mut self, t: &TableSchema, row: &mut Row, cols: &[usize]) -> Result<(), ConnectorError> {
        let list: Vec<String> = cols.iter().map(|&i| format!("{}::text", ident(&t.columns[i].name))).collect();
        let cond: Vec<String> = t
            .primary_key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ${}::{}", ident(&t.columns[i].name), n + 1, t.columns[i].decl_type))
            .collect();
        let sql = format!("SELECT {} FROM {} WHERE {}", list.join(", "), qualified(&t.name), cond.join(" AND "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &i in &t.primary_key {
            q = q.bind(super::values::encode(&row[i]));
        }
        let found = q
            .fetch_optional(&mut self.conn)
            .await
            .map_err(self.ep.error(format!("reading back unchanged values of {}", t.name)))?;
        if let Some(r) = found {
            for (n, &i) in cols.iter().enumerate() {
                let text: Option<String> = r.get(n);
                row[i] = match text {
                    Some(s) => {
                        decode(Kind::of_decl(&t.columns[i].decl_type), &s).map_err(|e| self.bad_value(t, i, &e))?
                    }
                    None => Value::Null,
                };
            }
        }
        Ok(())
    }

    /// Turns one pgoutput message into changes of the open transaction.
    async fn message(&mut self, data: &[u8]) -> Result<(), ConnectorError> {
        let msg = decoder::decode(data).map_err(|e| ConnectorError::Stream {
            endpoint: self.ep.name.clone(),
            what: "decoding the change stream".into(),
            source: Box::new(e),
            kind: ErrorKind::Runtime,
        })?;
        let change = match msg {
            Message::Relation(r) => return self.relation(r).await,
            Message::Origin { name, .. } => {
                if let Some(o) = self.open.as_mut() {
                    o.origin = Some(name);
                }
                return Ok(());
            }
            Message::Insert { rel, new } => {
                let Some(Some(r)) = self.relations.get(&rel) else { return Ok(()) };
                let (after, _) = self.row(r, &new, None)?;
                let table = r.schema.clone();
                Change {
                    key: table.key_of(&after),
                    table,
                    op: Op::Insert,
                    before: None,
                    after: Some(after),
                    prior: Prior::Unknown,
                    seen: None,
                    version: None,
                }
            }
            Message::Update { rel, old, new } => {
                let Some(Some(r)) = self.relations.get(&rel) else { return Ok(()) };
                let before = match &old {
                    Some((_, t)) => Some(self.row(r, t, None)?.0),
                    None => None,
                };
                let full_before = matches!(old, Some((b'O', _)));
                let (mut after, missing) = self.row(r, &new, before.as_ref().filter(|_| full_before))?;
                let table = r.schema.clone();
                let key = match &before {
                    Some(b) => table.key_of(b),
                    None => table.key_of(&after),
                };
                if !missing.is_empty() {
                    self.fill(&table.clone(), &mut after, &missing).await?;
                }
                Change {
                    key,
                    table,
                    op: Op::Update,
                    before: before.filter(|_| full_before),
                    after: Some(after),
                    prior: Prior::Unknown,
                    seen: None,
                    version: None,
                }
            }
            Message::Delete { rel, kind, old } => {
                let Some(Some(r)) = self.relations.get(&rel) else { return Ok(()) };
                let (before, _) = self.row(r, &old, None)?;
                let table = r.schema.clone();
                Change {
                    key: table.key_of(&before),
                    table,
                    op: Op::Delete,
                    before: (kind == b'O').then_some(before),
                    after: None,
                    prior: Prior::Unknown,
                    seen: None,
                    version: None,
                }
            }
            Message::Truncate { rels } => {
                let names: Vec<String> = rels
                    .iter()
                    .filter_map(|r| self.relations.get(r))
                    .flatten()
                    .map(|r| r.schema.name.to_string())
                    .collect();
                if !names.is_empty() {
                    tracing::warn!(endpoint = %self.ep.name, tables = %names.join(", "), "TRUNCATE on the source is not carried to the target; truncate it there too");
                }
                return Ok(());
            }
            Message::Type { .. } | Message::Other(_) => return Ok(()),
        };
        if versions::is_version_table(&change.table.name) {
            if let (Some(o), Some(user)) = (self.open.as_mut(), self.versioned.get(&change.table.name.name)) {
                o.stamps.push(versions::stamp_event(user, &change));
            }
            return Ok(());
        }
        if let Some(o) = self.open.as_mut() {
            if change.table.name.name == SIGNAL_TABLE && change.table.name.schema.as_deref() == Some(FERRY_SCHEMA) {
                o.signal = true;
            }
            o.changes.push(change);
        }
        Ok(())
    }

    /// The origin site of a transaction: the excluded one when its Origin names one of
    /// ferry's appliers of changes from that site (two-way loop prevention), else this
    /// endpoint's.
    fn origin_of(&self, origin: Option<&str>, exclude: &SiteId) -> SiteId {
        match origin {
            Some(o) if o.starts_with(&names::origin_prefix(exclude.as_str())) => exclude.clone(),
            _ => self.ep.site.clone(),
        }
    }

    /// The schema changes seen in a transaction as a transaction of their own, ahead of
    /// its rows, at part 0 of it (so `ferry skip` can name it alone).
    fn ddl_txn(ddl: Vec<crate::model::SchemaChange>, origin: &SiteId, commit_ts: i64, prev: Lsn) -> Option<Txn> {
        (!ddl.is_empty()).then(|| Txn {
            origin: origin.clone(),
            commit_ts,
            position: Self::part_position(prev, 0),
            changes: Vec::new(),
            ddl,
        })
    }

    /// The position of part `part` of the transaction after `prev`: orders after it
    /// and before the transaction's end; read back it resumes at `prev` (the whole
    /// transaction again).
    fn part_position(prev: Lsn, part: u32) -> Position {
        let mut order = prev.0.to_be_bytes().to_vec();
        order.extend_from_slice(&part.to_be_bytes());
        Position::new(format!("pg:{}#{part}", prev.text()), order, None)
    }
}

/// The current end of the WAL.
pub async fn wal_head(ep: &PgEndpoint, conn: &mut PgConnection) -> Result<Position, ConnectorError> {
    let text: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.error("reading the WAL head (pg_current_wal_lsn)"))?;
    Lsn::parse_text(&text).map(Lsn::to_position).ok_or_else(|| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("the server reported WAL position {text:?}"),
        fix: "report this as a bug".into(),
    })
}

/// Waits until no other session streams from the slot of `stream`: the walsender of this
/// direction's previous reader (a killed process) ends within moments of its socket
/// closing; a slot busy for longer belongs to another consumer, a setup error. A slot
/// the server invalidated (its changes lost) is a setup error saying how to start over.
/// `takeover` (a cluster node holding the direction's lease): the session on the slot
/// is a previous owner's, ended rather than waited for.
pub async fn slot_free(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    stream: &str,
    takeover: bool,
) -> Result<(), ConnectorError> {
    let slot = names::slot(stream);
    let slot = slot.as_str();
    let deadline = tokio::time::Instant::now() + SLOT_BUSY_WAIT;
    loop {
        let found = sqlx::query("SELECT active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(&mut *conn)
            .await
            .map_err(ep.error("looking up the direction's replication slot"))?;
        if found.as_ref().is_some_and(|r| r.get::<Option<String>, _>(1).as_deref() == Some("lost")) {
            return Err(lost_slot(ep, conn, stream).await);
        }
        let pid: Option<i32> = found.and_then(|r| r.get(0));
        let Some(pid) = pid else { return Ok(()) };
        if takeover {
            super::handover::end_session(ep, conn, slot).await?;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("replication slot {slot} is used by another consumer (server process {pid})"),
                fix: format!(
                    "stop the other reader of this direction (another ferry process, or pg_recvlogical); if it is stuck: SELECT pg_terminate_backend({pid})"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The error of the invalidated slot of `stream`.
async fn lost_slot(ep: &PgEndpoint, conn: &mut PgConnection, stream: &str) -> ConnectorError {
    let keep: String = sqlx::query_scalar("SELECT current_setting('max_slot_wal_keep_size')")
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|_| "?".into());
    super::slot::lost(ep, stream, &keep)
}

/// Creates (or updates) the direction's publication and then its slot: a slot made
/// before its publication could not decode the WAL in between. This node's slot of an
/// older release (`former`) is carried over first; `takeover`: see [`slot_free`].
pub async fn install(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    stream: &str,
    (former, takeover): (Option<&str>, bool),
    tables: &[Arc<TableSchema>],
    versioned: bool,
) -> Result<(), ConnectorError> {
    if let Some(former) = former {
        super::handover::carry_over(ep, conn, stream, former, takeover).await?;
    }
    let slot = names::slot(stream);
    let publication = super::handover::publication_of(ep, conn, stream).await?;
    let mut list: Vec<String> = tables.iter().map(|t| qualified(&t.name)).collect();
    if versioned {
        list.extend(tables.iter().map(|t| versions::qualified_version(&t.name)));
    }
    list.push(ferry_table(HEARTBEAT_TABLE));
    list.push(ferry_table(SIGNAL_TABLE));
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
        .bind(&publication)
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.error("looking up the direction's publication"))?;
    let sql = if exists {
        format!("ALTER PUBLICATION {} SET TABLE {}", ident(&publication), list.join(", "))
    } else {
        format!("CREATE PUBLICATION {} FOR TABLE {}", ident(&publication), list.join(", "))
    };
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map_err(|e| {
        let problem = format!("cannot create or update publication {publication}: {e}");
        match super::sqlstate(&e).as_deref() {
            Some("42501") => ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem,
                fix: format!(
                    "the account must own the tables (or be superuser) and have CREATE on the database: GRANT CREATE ON DATABASE {} TO {}; ALTER TABLE … OWNER TO {}",
                    ident(&ep.database),
                    ident(&ep.user),
                    ident(&ep.user)
                ),
            },
            _ => ep.error(format!("creating publication {publication}"))(e),
        }
    })?;
    let has_slot: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)")
        .bind(&slot)
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.error("looking up the direction's replication slot"))?;
    if has_slot {
        slot_free(ep, conn, stream, takeover).await?;
    } else {
        let created: String = sqlx::query_scalar("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&slot)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| match super::sqlstate(&e).as_deref() {
                Some("55000") => ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("cannot create replication slot {slot}: {e}"),
                    fix: "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart the server".into(),
                },
                Some("42501") => ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("cannot create replication slot {slot}: {e}"),
                    fix: format!("give the account the REPLICATION attribute: ALTER ROLE {} REPLICATION", ident(&ep.user)),
                },
                Some("53400") => ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("cannot create replication slot {slot}: {e}"),
                    fix: "raise max_replication_slots (and max_wal_senders) in postgresql.conf and restart, or drop unused slots".into(),
                },
                _ => ep.error(format!("creating replication slot {slot}"))(e),
            })?;
        // Where the slot begins: a checkpoint before it cannot be read from it (see
        // `slot_covers`).
        let sql = format!(
            "INSERT INTO {} (slot, created_lsn, created_us) VALUES ($1, $2::pg_lsn, (extract(epoch from now()) * 1000000)::bigint) \
             ON CONFLICT (slot) DO UPDATE SET created_lsn = excluded.created_lsn, created_us = excluded.created_us, publication = NULL",
            ferry_table(SLOT_TABLE)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&slot)
            .bind(&created)
            .execute(&mut *conn)
            .await
            .map_err(ep.error(format!("recording where replication slot {slot} begins")))?;
    }
    Ok(())
}

/// Refuses to read from `after` with a slot ferry created after that position: the
/// server would start at the slot's beginning and the changes in between would never
/// come (the slot was dropped and created again while ferry was stopped, or the
/// direction moved to a cluster node whose slot is newer than the checkpoint).
async fn slot_covers(ep: &PgEndpoint, conn: &mut PgConnection, slot: &str, after: Lsn) -> Result<(), ConnectorError> {
    let sql = format!("SELECT created_lsn::text FROM {} WHERE slot = $1", ferry_table(SLOT_TABLE));
    let created: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(ep.error(format!("reading where replication slot {slot} begins")))?;
    let Some(begins) = created.as_deref().and_then(Lsn::parse_text) else { return Ok(()) };
    if after.0 == 0 || after.0 >= begins.0 {
        return Ok(());
    }
    Err(ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "replication slot {slot} begins at {}, after the direction's checkpoint {}: the changes made in between cannot be read from it (the slot was dropped and created again while ferry was stopped, or the direction moved to a cluster node whose own slot is newer than the checkpoint)",
            begins.text(),
            after.text()
        ),
        fix: "copy the tables anew: delete the task's checkpoint rows on the target (ferry.ferry_checkpoint) and run again".into(),
    })
}

impl Source for PgSource {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        let tables = schema::describe_matching(&self.ep, &mut self.conn, patterns).await?;
        self.tables = tables.iter().map(|t| (t.name.clone(), t.clone())).collect();
        self.patterns = schema::qualified_patterns(&self.ep, patterns)?;
        self.note_versioned();
        Ok(tables)
    }

    async fn install_capture(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        migrate::run(&self.ep, &mut self.conn).await?;
        if self.versions {
            versions::install(&self.ep, &mut self.conn, tables, &self.ep.site).await?;
            versions::full_identity(&self.ep, &mut self.conn, tables).await?;
        }
        let handover = (self.former.as_deref(), self.takeover);
        install(&self.ep, &mut self.conn, &self.stream, handover, tables, self.versions).await?;
        self.tables = tables.iter().map(|t| (t.name.clone(), t.clone())).collect();
        self.note_versioned();
        // A new table set needs a new stream (the publication changed).
        if let Some(mut c) = self.client.take() {
            let _ = c.shutdown().await;
        }
        self.reader_at = None;
        Ok(())
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        wal_head(&self.ep, &mut self.conn).await
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        with_versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        // Two-way copies need each row's version as of its read: watermark chunks.
        let two_way = with_versions && self.versions;
        if !two_way && !self.no_export {
            if self.snapshot.is_none() {
                match Exported::open(&self.ep, &self.stream).await {
                    Ok(s) => {
                        tracing::info!(endpoint = %self.ep.name, position = %s.lsn.to_position(), "copying through an exported snapshot");
                        self.snapshot = Some(s);
                    }
                    // Out of slots or senders: watermark chunks need neither.
                    Err(e) if e.kind() != ErrorKind::Setup => {
                        tracing::warn!(endpoint = %self.ep.name, error = %e, "cannot export a snapshot; copying with watermark chunks instead");
                        self.no_export = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(s) = self.snapshot.as_mut() {
                let expect = self.chunk_bytes;
                let form = super::copy::Form::of(table, self.native);
                let data = super::copy::read(&self.ep, &mut s.conn, table, after, limit, form, expect).await?;
                self.chunk_bytes = data.len();
                let position = Some(s.lsn.to_position());
                return Ok(match form {
                    super::copy::Form::Decoded => {
                        let rows = super::copy::rows(&self.ep, table, &data)?;
                        Chunk { rows, position, marks: None, versions: None, native: None }
                    }
                    _ => {
                        let native = super::copy::native(&self.ep, table, data, form, after, limit)?;
                        Chunk { rows: Vec::new(), position, marks: None, versions: None, native: Some(native) }
                    }
                });
            }
        }
        let low = write_mark(&self.ep, &mut self.conn, "L", &self.stream).await?;
        let rows = rows_after(&self.ep, &mut self.conn, table, after, limit).await?;
        let versions = match with_versions && self.versions {
            // Between the marks: a row written after it was read is dropped from the
            // chunk (its change wins), so a version never pairs with an older image.
            true => Some(row_versions(&self.ep, &mut self.conn, table, &rows).await?),
            false => None,
        };
        let high = write_mark(&self.ep, &mut self.conn, "H", &self.stream).await?;
        Ok(Chunk { rows, position: None, marks: Some((low, high)), versions, native: None })
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        if req.until.is_none()
            && let Some(s) = self.snapshot.take()
        {
            // The copy is over (the stream is read on its own now).
            s.close(&self.ep).await;
        }
        if self.client.is_none() || self.reader_at.as_ref() != Some(&req.after) || std::mem::take(&mut self.restart) {
            self.start(&req.after).await?;
        }
        let r = self.read(req).await;
        match r {
            Ok(b) => {
                self.reader_at = Some(b.position.clone());
                Ok(b)
            }
            Err(e) => {
                // The stream is gone; the next call starts a new one from the checkpoint.
                if let Some(mut c) = self.client.take() {
                    let _ = c.shutdown().await;
                }
                self.reader_at = None;
                Err(e)
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        let sql = format!(
            "INSERT INTO {} (site, ts) VALUES ($1, $2) ON CONFLICT (site) DO UPDATE SET ts = excluded.ts",
            ferry_table(HEARTBEAT_TABLE)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.ep.site.as_str())
            .bind(now_micros())
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(self.ep.error(format!("writing the heartbeat of site {}", self.ep.site)))
    }

    async fn clock(&mut self) -> Result<Option<i64>, ConnectorError> {
        sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint")
            .fetch_one(&mut self.conn)
            .await
            .map(Some)
            .map_err(self.ep.error("reading the server's clock"))
    }

    async fn retention(&mut self) -> Result<Option<crate::connector::Retention>, ConnectorError> {
        super::slot::retention(&self.ep, &mut self.conn, &self.stream).await
    }

    async fn estimate_rows(&mut self, table: &TableSchema) -> Result<Option<u64>, ConnectorError> {
        super::schema::estimated_rows(&self.ep, &mut self.conn, &table.name).await
    }

    async fn consumed(&mut self, _consumer: &str, position: &Position) -> Result<(), ConnectorError> {
        // The slot keeps WAL until confirmed: confirm what the target committed.
        if let (Some(c), Ok(lsn)) = (&self.client, Lsn::of(position))
            && !position.detail().contains('#')
        {
            // Everything read is applied and the stream was idle after it: the WAL up
            // to the idle point holds no change for this direction.
            let ack = if lsn >= self.last_end && self.open.is_none() { lsn.max(self.idle_end) } else { lsn };
            c.update_applied_lsn(pgwire_replication::Lsn::from_u64(ack.0));
            self.acked = self.acked.max(ack);
        }
        Ok(())
    }
}

impl PgSource {
    /// Two-way: remembers which version table belongs to which followed table.
    fn note_versioned(&mut self) {
        self.versioned = match self.versions {
            true => self.tables.keys().map(|t| (versions::table_for(t), t.clone())).collect(),
            false => HashMap::new(),
        };
    }

    /// Reads whole transactions (or parts of a big one) until `max_changes`, a signal
    /// transaction, or a pause in the stream.
    async fn read(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        let mut txns: Vec<Txn> = Vec::new();
        let mut count = 0usize;
        let mut position = req.after.clone();
        let part_limit = PART_CHANGES.max(req.max_changes);
        // A quiet stream returns after READ_WAIT in all, however many keepalives arrive:
        // a server shutting down sends them without pause until it is confirmed, and
        // the engine confirms only between reads.
        let idle_until = tokio::time::Instant::now() + READ_WAIT;
        // A read up to a snapshot's position returns empty only once the stream proved
        // that nothing before it is left (the engine then takes the position as
        // reached): a transaction beginning at or after it, or a keepalive past it.
        let until = req.until.as_ref().and_then(|p| Lsn::of(p).ok()).filter(|u| u.to_position() != req.after);
        let until_by = tokio::time::Instant::now() + UNTIL_WAIT;
        loop {
            let wait = if self.open.is_some() {
                Duration::from_secs(30)
            } else if txns.is_empty() && until.is_some() {
                until_by.saturating_duration_since(tokio::time::Instant::now())
            } else if txns.is_empty() {
                idle_until.saturating_duration_since(tokio::time::Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(client) = self.client.as_mut() else { break };
            let ev = match tokio::time::timeout(wait, client.recv()).await {
                Err(_) if self.open.is_some() => continue,
                Err(_)
                    if txns.is_empty()
                        && let Some(u) = until =>
                {
                    return Err(ConnectorError::Stream {
                        endpoint: self.ep.name.clone(),
                        what: format!("reading the change stream up to the snapshot's position {}", u.text()),
                        source: format!("the stream did not get there within {} s", UNTIL_WAIT.as_secs()).into(),
                        kind: ErrorKind::Runtime,
                    });
                }
                Err(_) => break,
                Ok(Ok(Some(ev))) => ev,
                Ok(Ok(None)) => {
                    return Err(ConnectorError::Stream {
                        endpoint: self.ep.name.clone(),
                        what: "reading the change stream".into(),
                        source: "the server ended the replication stream".into(),
                        kind: ErrorKind::Runtime,
                    });
                }
                Ok(Err(e)) => return Err(self.stream_error("reading the change stream", e)),
            };
            match ev {
                ReplicationEvent::Begin { final_lsn, .. } if until.is_some_and(|u| final_lsn.as_u64() >= u.0) => {
                    // Commits after the snapshot's position: not this read's. Everything
                    // before it was read; the stream starts again there next time.
                    if let Some(u) = until {
                        position = u.to_position();
                    }
                    self.restart = true;
                    break;
                }
                ReplicationEvent::Begin { commit_time_micros, .. } => {
                    self.idle_end = Lsn(0);
                    self.open = Some(Open {
                        origin: None,
                        commit_ts: commit_time_micros + PG_EPOCH_US,
                        changes: Vec::new(),
                        parts: 0,
                        signal: false,
                        stamps: Vec::new(),
                    });
                }
                ReplicationEvent::XLogData { data, .. } => {
                    self.message(&data).await?;
                    let big = self.open.as_ref().is_some_and(|o| o.changes.len() >= part_limit);
                    if big {
                        // A transaction too big for memory goes out in parts; the
                        // target keeps its transaction open until the last one.
                        let origin =
                            self.origin_of(self.open.as_ref().and_then(|o| o.origin.as_deref()), &req.exclude_origin);
                        let last_end = self.last_end;
                        let ddl = std::mem::take(&mut self.pending_ddl);
                        let Some(o) = self.open.as_mut() else { break };
                        o.parts += 1;
                        let part = Self::part_position(last_end, o.parts);
                        let mut changes = std::mem::take(&mut o.changes);
                        attach_stamps(&mut changes, std::mem::take(&mut o.stamps));
                        if origin != req.exclude_origin {
                            txns.extend(Self::ddl_txn(ddl, &origin, o.commit_ts, last_end));
                            txns.push(Txn {
                                origin,
                                commit_ts: o.commit_ts,
                                position: part.clone(),
                                changes,
                                ddl: Vec::new(),
                            });
                        }
                        return Ok(ReadBatch { txns, position: part, continues: true });
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    let Some(mut o) = self.open.take() else { continue };
                    attach_stamps(&mut o.changes, std::mem::take(&mut o.stamps));
                    let end = Lsn(end_lsn.as_u64());
                    let (prev, ddl) = (self.last_end, std::mem::take(&mut self.pending_ddl));
                    self.last_end = end;
                    position = end.to_position();
                    let origin = self.origin_of(o.origin.as_deref(), &req.exclude_origin);
                    if origin != req.exclude_origin {
                        txns.extend(Self::ddl_txn(ddl, &origin, o.commit_ts, prev));
                    }
                    if origin != req.exclude_origin && (!o.changes.is_empty() || o.parts > 0) {
                        count += o.changes.len();
                        txns.push(Txn {
                            origin,
                            commit_ts: o.commit_ts,
                            position: position.clone(),
                            changes: o.changes,
                            ddl: Vec::new(),
                        });
                    }
                    if o.signal || count >= req.max_changes || until.is_some_and(|u| end >= u) {
                        break;
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. }
                    if self.open.is_none() && until.is_some_and(|u| wal_end.as_u64() >= u.0) =>
                {
                    // The server decoded past the snapshot's position: nothing is left
                    // before it.
                    if let Some(u) = until {
                        position = u.to_position();
                    }
                    break;
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    if self.open.is_none() && wal_end.as_u64() > self.last_end.0 {
                        self.idle_end = Lsn(wal_end.as_u64());
                        // Idle with everything read already committed on the target:
                        // confirm the server's end now. A server shutting down waits
                        // for exactly this before it stops.
                        if txns.is_empty() && self.acked >= self.last_end {
                            client.update_applied_lsn(wal_end);
                            self.acked = self.idle_end;
                        }
                    }
                }
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::StoppedAt { .. } => break,
            }
        }
        Ok(ReadBatch { txns, position, continues: false })
    }
}

/// The version of each row (two-way), `None` for rows older than ferry's trigger.
async fn row_versions(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    table: &TableSchema,
    rows: &[Row],
) -> Result<Vec<Option<(SiteId, i64)>>, ConnectorError> {
    let keys: Vec<Key> = rows.iter().map(|r| table.key_of(r)).collect();
    let refs: Vec<&Key> = keys.iter().collect();
    let stamps = versions::load(ep, conn, table, &refs, false).await?;
    Ok((0..keys.len()).map(|i| stamps.get(&i).filter(|s| !s.deleted).map(|s| (s.site.clone(), s.ts))).collect())
}

/// Writes a watermark (`L:` or `H:` + signal id + µs + counter) in autocommit.
async fn write_mark(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    kind: &str,
    signal_id: &str,
) -> Result<String, ConnectorError> {
    let now = now_micros();
    let mark = format!("{kind}:{signal_id}:{now}:{}", MARKS.fetch_add(1, Ordering::Relaxed));
    let sql = format!(
        "INSERT INTO {} (id, mark, ts) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET mark = excluded.mark, ts = excluded.ts",
        ferry_table(SIGNAL_TABLE)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(signal_id).bind(&mark).bind(now).execute(&mut *conn).await.map_err(
        ep.error("writing a snapshot watermark to ferry.ferry_signal (the account needs INSERT and UPDATE on it)"),
    )?;
    Ok(mark)
}

/// `SELECT` list reading every column as exact text.
pub fn text_columns(t: &TableSchema) -> String {
    t.columns.iter().map(|c| format!("t.{}::text", ident(&c.name))).collect::<Vec<_>>().join(", ")
}

/// Decodes rows read with [`text_columns`].
pub fn decode_rows(
    ep: &PgEndpoint,
    t: &TableSchema,
    rows: &[sqlx::postgres::PgRow],
) -> Result<Vec<Row>, ConnectorError> {
    let kinds = Kind::of_columns(&t.columns);
    rows.iter()
        .map(|r| {
            kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let text: Option<String> = r.try_get(i).map_err(ep.error(format!("reading table {}", t.name)))?;
                    match text {
                        None => Ok(Value::Null),
                        Some(s) => decode(k, &s).map_err(|e| ConnectorError::Setup {
                            endpoint: ep.name.clone(),
                            problem: format!("column {}.{}: {e}", t.name, t.columns[i].name),
                            fix: "leave the table out of the task's tables, or report the value as a bug".into(),
                        }),
                    }
                })
                .collect()
        })
        .collect()
}

/// `(k1, k2) > ($1::t1, $2::t2)` and the ORDER BY of a table's primary key.
pub fn key_bounds(t: &TableSchema, first_param: usize) -> (String, String) {
    // Qualified by the table's alias: a bare name in ORDER BY would sort by the select
    // list's `col::text` output column of the same name (text order, not the key's).
    let cols: Vec<String> = t.primary_key.iter().map(|&i| format!("t.{}", ident(&t.columns[i].name))).collect();
    let params: Vec<String> = t
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("${}::{}", first_param + n, t.columns[i].decl_type))
        .collect();
    (format!("({}) > ({})", cols.join(", "), params.join(", ")), cols.join(", "))
}

/// Up to `limit` rows with keys after `after`, in key order.
pub async fn rows_after(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    t: &TableSchema,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<Row>, ConnectorError> {
    let (cond, order) = key_bounds(t, 1);
    let filter = if after.is_some() { format!("WHERE {cond}") } else { String::new() };
    let sql =
        format!("SELECT {} FROM {} AS t {filter} ORDER BY {order} LIMIT {limit}", text_columns(t), qualified(&t.name));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(k) = after {
        for v in k {
            q = q.bind(super::values::encode(v));
        }
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(ep.error(format!("reading rows of {}", t.name)))?;
    decode_rows(ep, t, &rows)
}
