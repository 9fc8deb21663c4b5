//! The MySQL/MariaDB binlog reader: connects as a replica, groups events into whole
//! committed transactions and decodes row events of the wanted tables into [`Change`]s
//! with full before and after images, valued as `docs/mysql-types.md` says.
//!
//! The replication stream runs in a background task owned by the [`BinlogReader`]
//! (aborted when the reader is dropped) and hands decoded transactions over a bounded
//! channel, so decoding overlaps with the caller's apply. MariaDB specifics handled here:
//! GTID and GTID_LIST events (parsed by hand: the driver knows only MySQL's), resume by
//! `@slave_connect_state`, the fake first ROTATE carrying 4 CRC bytes, YEAR 0000, and
//! compressed row events (refused, never skipped). Row values are decoded by a loop over
//! cached per-table column info, straight from the event bytes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::consts::{BinlogChecksumAlg, EventType};
use mysql_common::binlog::events::{Event, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connector::mysql::apply::key_id;
use crate::connector::mysql::ddl::{self, Ddl};
use crate::connector::mysql::versions::{self, Stamp};
use crate::connector::mysql::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::{ConnectorError, SIGNAL_TABLE};
use crate::model::{
    Change, Column, Key, Op, Position, Prior, Row, SchemaChange, SchemaChangeKind, SiteId, TableName, TableSchema, Txn,
    Value,
};

/// ferry's heartbeat table (in [`FERRY_DB`]); always decoded.
const HEARTBEAT_TABLE: &str = "ferry_heartbeat";
/// Changes per chunk handed from the stream task to the reader.
const CHUNK_CHANGES: usize = 2048;
/// Transactions (returned or skipped) per chunk.
const CHUNK_TXNS: usize = 512;
/// Chunks buffered between the stream task and the reader.
const CHANNEL_CHUNKS: usize = 8;
/// How often the server sends a heartbeat when it has nothing else to send.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(2);
/// Silence after which the stream is considered dead.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// Table-map cache entries kept before the cache is cleared.
const TABLE_CACHE_MAX: usize = 4096;

// MariaDB event types the driver does not know.
const ANNOTATE_ROWS: u8 = 160;
const BINLOG_CHECKPOINT: u8 = 161;
const MARIADB_GTID: u8 = 162;
const MARIADB_GTID_LIST: u8 = 163;
const START_ENCRYPTION: u8 = 164;
const QUERY_COMPRESSED: u8 = 165;
const ROWS_COMPRESSED_LAST: u8 = 171;
const XA_PREPARE: u8 = 38;
/// GTID event flag: the group is a single statement without BEGIN/COMMIT (DDL).
const FL_STANDALONE: u8 = 1;
/// Event header flag: the event may be skipped by a reader that does not know it.
const LOG_EVENT_IGNORABLE_F: u16 = 0x80;

/// Which tables to decode; everything else is skipped (but still advances the position).
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    /// database -> tables; the key `None` holds tables named without a database (any database).
    tables: HashMap<Option<String>, HashSet<String>>,
    /// The task's `db.table` patterns: a table created later that matches joins the stream.
    patterns: Vec<glob::Pattern>,
    /// Two-way: also decode the tables' version tables and ferry's marker table.
    versions: bool,
}

impl TableFilter {
    /// A filter for these tables, plus ferry's own `ferry.ferry_heartbeat` and `ferry.ferry_signal`.
    pub fn new(tables: impl IntoIterator<Item = TableName>) -> Self {
        let mut filter = TableFilter::default();
        let own = [HEARTBEAT_TABLE, SIGNAL_TABLE]
            .into_iter()
            .map(|t| TableName { schema: Some(FERRY_DB.to_string()), name: t.to_string() });
        for t in tables.into_iter().chain(own) {
            filter.tables.entry(t.schema).or_default().insert(t.name);
        }
        filter
    }

    /// Also follows tables created later whose `db.table` matches one of `patterns`.
    pub fn with_patterns(mut self, patterns: Vec<glob::Pattern>) -> Self {
        self.patterns = patterns;
        self
    }

    /// Two-way: pairs each change with its row version (see `versions.rs`) and reads the
    /// origin markers of ferry's own transactions.
    pub fn with_versions(mut self, on: bool) -> Self {
        self.versions = on;
        if on {
            self.add(&TableName { schema: Some(FERRY_DB.to_string()), name: versions::MARKER_TABLE.to_string() });
        }
        self
    }

    /// The user table whose version table is `ferry`.`name`, when following versions.
    fn versioned_by(&self, db: &str, name: &str) -> Option<TableName> {
        if !self.versions || db != FERRY_DB || !name.starts_with(versions::VERSION_PREFIX) {
            return None;
        }
        self.tables
            .iter()
            .flat_map(|(d, set)| set.iter().map(move |t| TableName { schema: d.clone(), name: t.clone() }))
            .find(|t| versions::table_for(t) == name)
    }

    /// True when a table of this name, existing or created later, belongs to the stream.
    fn claims(&self, t: &TableName) -> bool {
        let db = t.schema.as_deref().unwrap_or_default();
        self.contains(db, &t.name) || self.patterns.iter().any(|p| p.matches(&format!("{db}.{}", t.name)))
    }

    fn add(&mut self, t: &TableName) {
        self.tables.entry(t.schema.clone()).or_default().insert(t.name.clone());
    }

    fn remove(&mut self, t: &TableName) {
        if let Some(set) = self.tables.get_mut(&t.schema) {
            set.remove(&t.name);
        }
    }

    /// True when changes of `db`.`table` are decoded.
    pub fn contains(&self, db: &str, table: &str) -> bool {
        // Scan the (few) databases rather than allocate a key.
        self.tables.iter().any(|(d, tables)| d.as_deref().is_none_or(|d| d == db) && tables.contains(table))
    }

    /// True when a statement's text names one of the filtered tables as a whole word (a
    /// heuristic: statements are only inspected for warnings and statement-based DML).
    fn mentioned_in(&self, query: &str) -> bool {
        let q = query.to_ascii_lowercase();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        self.tables.values().flatten().any(|t| {
            let t = t.to_ascii_lowercase();
            q.match_indices(&t).any(|(i, _)| {
                let before = i.checked_sub(1).map(|j| q.as_bytes()[j]);
                let after = q.as_bytes().get(i + t.len()).copied();
                !before.is_some_and(word) && !after.is_some_and(word)
            })
        })
    }
}

/// A server id for a replica stream, derived from a stable string (node + direction), in
/// a range unlikely to clash with real servers (3,000,000,000 ..= 3,999,999,999).
pub fn replica_server_id(seed: &str) -> u32 {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    3_000_000_000 + (h % 1_000_000_000) as u32
}

/// One step of the stream task's output.
enum Item {
    /// A committed transaction with changes of filtered tables.
    Txn {
        /// The transaction.
        txn: Txn,
        /// Server id of its events (the writer's session server id).
        server_id: u32,
        /// Whether it changes ferry's signal table (a batch ends after it).
        signal: bool,
    },
    /// The stream position after skipped transactions.
    Pos(Position),
}

type Chunk = Result<Vec<Item>, ConnectorError>;

/// A replica connection to a MySQL/MariaDB server that returns whole committed transactions.
pub struct BinlogReader {
    endpoint: String,
    rx: mpsc::Receiver<Chunk>,
    task: JoinHandle<()>,
    pending: VecDeque<Item>,
    position: Position,
    server_ids: Vec<u32>,
    failed: Option<ConnectorError>,
    stopped: bool,
}

impl Drop for BinlogReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BinlogReader {
    /// Connects as a replica with this server_id and streams from `from`: by MariaDB GTID
    /// when `from.gtid` is non-empty, else from file+pos.
    pub async fn start(
        ep: &MysqlEndpoint,
        server_id: u32,
        from: &Position,
        filter: TableFilter,
    ) -> Result<Self, ConnectorError> {
        let Position::Mysql { file, pos, gtid } = from else {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("cannot read the binlog from {from}: not a MySQL position"),
                fix: "clear this direction's checkpoint (it belongs to another kind of source) and snapshot again"
                    .into(),
            });
        };
        let mut meta = ep.connect().await?;
        let server = check_server(ep, &mut meta).await?;
        let charsets = load_charsets(ep, &mut meta).await?;

        let mut state = BTreeMap::new();
        if !gtid.is_empty() {
            state = parse_gtid_list(gtid).ok_or_else(|| ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("position {from} has an invalid GTID list {gtid:?}"),
                fix: "give a position as `ferry status` prints it (mysql:FILE:POS:D-S-N,...)".into(),
            })?;
        } else if server.mariadb && !file.is_empty() {
            // The GTID state at file+pos, so that every position we hand out can resume by GTID.
            let at: Option<Option<String>> = meta
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.as_str(), *pos))
                .await
                .map_err(ep.error(format!("looking up the GTID state at binlog {file}:{pos}")))?;
            if let Some(text) = at.flatten() {
                state = parse_gtid_list(&text).unwrap_or_default();
            }
        }
        if file.is_empty() && (state.is_empty() || !server.mariadb) {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("cannot read the binlog from {from}: no binlog file (and no MariaDB GTID list)"),
                fix: "start from the server's head (SHOW MASTER STATUS and @@gtid_binlog_pos) or a saved position"
                    .into(),
            });
        }

        let mut conn = ep.connect().await?;
        let by_gtid = !state.is_empty() && server.mariadb && !gtid.is_empty();
        let mut setup = vec![format!("SET @master_heartbeat_period = {}", HEARTBEAT_PERIOD.as_nanos())];
        if server.mariadb {
            setup.push("SET @mariadb_slave_capability = 4".into());
        }
        if by_gtid {
            setup.push(format!(
                "SET @slave_connect_state = '{}', @slave_gtid_strict_mode = 1",
                format_gtid_list(&state)
            ));
        }
        for sql in setup {
            conn.query_drop(&sql).await.map_err(ep.error(format!("preparing the binlog stream ({sql})")))?;
        }
        // The driver sets @master_binlog_checksum itself when it registers as a replica.
        let request = if by_gtid {
            BinlogStreamRequest::new(server_id).with_filename(&[][..]).with_pos(4u64)
        } else {
            BinlogStreamRequest::new(server_id).with_filename(file.as_bytes()).with_pos(*pos)
        };
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(ep.error(format!("requesting the binlog stream from {from}")))?;

        let dec = Decoder {
            ep: ep.clone(),
            site: ep.site.clone(),
            filter,
            mariadb: server.mariadb,
            charsets,
            meta: Some(meta),
            tables: HashMap::new(),
            file: file.clone(),
            pos: *pos,
            gtid: state,
            group: None,
            dirty: false,
            skipped_since_flush: 0,
            reported: from.clone(),
            event_at: 0,
        };
        // The first event (a ROTATE, or the server's refusal of the position) before going
        // to the background, so a bad position is an error of start().
        let first = match tokio::time::timeout(IDLE_LIMIT, stream.next()).await {
            Err(_) => return Err(dec.runtime(format!("no binlog event within {IDLE_LIMIT:?} of connecting"))),
            Ok(None) => return Err(dec.runtime("the server closed the binlog stream at once".into())),
            Ok(Some(Err(e))) => return Err(dec.stream_error(e)),
            Ok(Some(Ok(ev))) => ev,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let task = tokio::spawn(run(stream, dec, first, tx));
        Ok(BinlogReader {
            endpoint: ep.name.clone(),
            rx,
            task,
            pending: VecDeque::new(),
            position: from.clone(),
            server_ids: Vec::new(),
            failed: None,
            stopped: false,
        })
    }

    /// Returns whole committed transactions (never a partial one), at most about
    /// `max_changes` row changes (a single bigger transaction is returned whole), waiting
    /// up to `wait` for the first one; an empty Vec when nothing arrived in time. The
    /// returned Position is just after the last transaction returned (or after skipped
    /// ones; else unchanged). A batch ends right after any transaction that changes
    /// `ferry.ferry_signal`.
    pub async fn read(&mut self, max_changes: usize, wait: Duration) -> Result<(Vec<Txn>, Position), ConnectorError> {
        if let Some(e) = self.failed.take() {
            self.stopped = true;
            return Err(e);
        }
        if self.stopped {
            return Err(ConnectorError::Mysql {
                endpoint: self.endpoint.clone(),
                what: format!("reading the binlog after {}", self.position),
                source: Box::new(mysql_async::Error::Other(
                    "the binlog reader stopped after an earlier error; start a new one from the last checkpoint".into(),
                )),
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out: Vec<Txn> = Vec::new();
        let mut changes = 0usize;
        self.server_ids.clear();
        loop {
            while let Some(item) = self.pending.pop_front() {
                match item {
                    Item::Pos(p) => self.position = p,
                    Item::Txn { txn, server_id, signal } => {
                        // A schema change travels alone: the target applies it outside a
                        // transaction (DDL commits implicitly), between the rows around it.
                        let ddl = !txn.ddl.is_empty();
                        if !out.is_empty() && (ddl || changes + txn.changes.len() > max_changes) {
                            self.pending.push_front(Item::Txn { txn, server_id, signal });
                            return Ok((out, self.position.clone()));
                        }
                        changes += txn.changes.len();
                        self.position = txn.position.clone();
                        self.server_ids.push(server_id);
                        out.push(txn);
                        if signal || ddl || changes >= max_changes {
                            return Ok((out, self.position.clone()));
                        }
                    }
                }
            }
            let chunk = if out.is_empty() {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Err(_) => return Ok((out, self.position.clone())),
                    Ok(c) => c,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(_) => return Ok((out, self.position.clone())),
                }
            };
            match chunk {
                Some(Ok(items)) => self.pending.extend(items),
                Some(Err(e)) if out.is_empty() => {
                    self.stopped = true;
                    return Err(e);
                }
                Some(Err(e)) => {
                    self.failed = Some(e);
                    return Ok((out, self.position.clone()));
                }
                None => {
                    self.stopped = true;
                    return Err(ConnectorError::Mysql {
                        endpoint: self.endpoint.clone(),
                        what: format!("reading the binlog after {}", self.position),
                        source: Box::new(mysql_async::Error::Other(
                            "the binlog stream task ended; start a new reader from the last checkpoint".into(),
                        )),
                    });
                }
            }
        }
    }

    /// The position just after everything returned so far.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Server ids of the transactions the last `read` returned, in the same order (a
    /// two-way applier's own writes carry its session server id).
    pub fn server_ids(&self) -> &[u32] {
        &self.server_ids
    }
}

/// The stream task: reads events, decodes them and sends chunks until the reader goes away
/// or an error stops it (the error is sent first).
async fn run(mut stream: BinlogStream, mut dec: Decoder, first: Event, tx: mpsc::Sender<Chunk>) {
    let mut chunk: Vec<Item> = Vec::new();
    let mut chunk_changes = 0usize;
    let mut next = Some(first);
    loop {
        let ev = match next.take() {
            Some(ev) => ev,
            None => {
                let polled = if chunk.is_empty() && !dec.dirty {
                    match tokio::time::timeout(IDLE_LIMIT, stream.next()).await {
                        Ok(r) => r,
                        Err(_) => {
                            let e = dec.runtime(format!(
                                "no binlog event or heartbeat for {IDLE_LIMIT:?}; the connection is presumed dead"
                            ));
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                } else {
                    match stream.next().now_or_never() {
                        Some(r) => r,
                        None => {
                            // Nothing ready right now: hand over what we have.
                            if !flush(&mut dec, &mut chunk, &mut chunk_changes, &tx).await {
                                return;
                            }
                            continue;
                        }
                    }
                };
                match polled {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        let e = dec.stream_error(e);
                        let _ = flush(&mut dec, &mut chunk, &mut chunk_changes, &tx).await;
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    None => {
                        let e = dec.runtime("the server closed the binlog stream".into());
                        let _ = flush(&mut dec, &mut chunk, &mut chunk_changes, &tx).await;
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        };
        let before = chunk.len();
        if let Err(e) = dec.handle(&ev, &mut chunk).await {
            let _ = flush(&mut dec, &mut chunk, &mut chunk_changes, &tx).await;
            let _ = tx.send(Err(e)).await;
            return;
        }
        let mut signal = false;
        for item in &chunk[before..] {
            if let Item::Txn { txn, signal: s, .. } = item {
                chunk_changes += txn.changes.len();
                signal |= *s;
            }
        }
        if (signal || chunk_changes >= CHUNK_CHANGES || chunk.len() + dec.skipped() >= CHUNK_TXNS)
            && !flush(&mut dec, &mut chunk, &mut chunk_changes, &tx).await
        {
            return;
        }
    }
}

/// Sends the chunk (with the position after skipped transactions); false when the reader is gone.
async fn flush(dec: &mut Decoder, chunk: &mut Vec<Item>, changes: &mut usize, tx: &mpsc::Sender<Chunk>) -> bool {
    if dec.dirty {
        // Never report a position behind one already handed out (a GTID start first
        // passes the head of the binlog file before the server skips to the GTID).
        let pos = dec.position();
        if pos.stream_cmp(&dec.reported) == Some(std::cmp::Ordering::Greater) {
            dec.reported = pos.clone();
            chunk.push(Item::Pos(pos));
        }
        dec.dirty = false;
        dec.skipped_since_flush = 0;
    }
    if let Some(Item::Txn { txn, .. }) = chunk.last() {
        dec.reported = txn.position.clone();
    }
    if chunk.is_empty() {
        return true;
    }
    *changes = 0;
    tx.send(Ok(std::mem::take(chunk))).await.is_ok()
}

/// What the server is.
struct ServerInfo {
    mariadb: bool,
}

/// Checks the settings row decoding depends on; each wrong one is a setup error with its fix.
async fn check_server(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<ServerInfo, ConnectorError> {
    let vars: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'log_bin', 'binlog_format', \
             'binlog_row_image', 'binlog_row_metadata', 'log_bin_compress')",
        )
        .await
        .map_err(ep.error("reading the server's binlog settings"))?;
    let vars: HashMap<String, String> = vars.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let get = |k: &str| vars.get(k).map(|v| v.to_ascii_uppercase());
    let setup =
        |problem: String, fix: &str| ConnectorError::Setup { endpoint: ep.name.clone(), problem, fix: fix.to_string() };
    if get("log_bin").as_deref() == Some("OFF") {
        return Err(setup(
            "the binary log is off; ferry reads changes from it".into(),
            "start the server with log_bin (and binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL)",
        ));
    }
    let wants = [
        ("binlog_format", "ROW", "SET GLOBAL binlog_format = 'ROW' (and in my.cnf)"),
        ("binlog_row_image", "FULL", "SET GLOBAL binlog_row_image = 'FULL' (and in my.cnf)"),
        ("binlog_row_metadata", "FULL", "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf)"),
    ];
    for (name, want, fix) in wants {
        match get(name) {
            Some(v) if v != want => {
                return Err(setup(format!("{name} is {v}; ferry needs {want} to read complete rows"), fix));
            }
            _ => {}
        }
    }
    if get("log_bin_compress").as_deref() == Some("ON") {
        return Err(setup(
            "binlog compression is on; ferry cannot read compressed row events".into(),
            "SET GLOBAL log_bin_compress = OFF (and in my.cnf)",
        ));
    }
    Ok(ServerInfo { mariadb: vars.get("version").is_some_and(|v| v.to_ascii_lowercase().contains("mariadb")) })
}

/// How the bytes of a character column are turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// `binary`: the column holds bytes.
    Binary,
    /// utf8mb4, utf8mb3, ascii: the bytes are UTF-8.
    Utf8,
    /// MySQL's latin1 (Windows-1252 with the five holes mapped to C1 controls).
    Latin1,
}

/// Collation id -> character set name, from the server itself (MariaDB has ids MySQL lacks).
async fn load_charsets(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<HashMap<u16, String>, ConnectorError> {
    let rows: Result<Vec<(u64, String)>, _> =
        conn.query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY").await;
    let rows = match rows {
        Ok(r) if r.iter().any(|(id, _)| *id > 0) => r,
        _ => conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(ep.error("reading the server's collations"))?,
    };
    Ok(rows.into_iter().filter_map(|(id, cs)| Some((u16::try_from(id).ok()?, cs))).collect())
}

/// How one column's value is read from a row image.
#[derive(Debug, Clone)]
enum Kind {
    /// TINYINT..BIGINT: width in bytes, and unsigned.
    Int(u8, bool),
    Float,
    Double,
    Decimal(u8, u8),
    Year,
    Date,
    /// TIME (MySQL 5.6+ format) with fractional digits.
    Time2(u8),
    /// Old TIME: HHMMSS as a signed 3-byte integer.
    TimeOld,
    DateTime2(u8),
    /// Old DATETIME: YYYYMMDDhhmmss as an 8-byte integer.
    DateTimeOld,
    Timestamp2(u8),
    TimestampOld,
    /// BIT(n): bytes.
    Bit(u8),
    /// ENUM: stored width and labels.
    Enum(u8, Arc<[String]>),
    /// SET: stored width and labels.
    Set(u8, Arc<[String]>),
    /// CHAR/BINARY: bytes of the length prefix, charset, declared byte length (BINARY pads to it).
    Char(u8, Charset, usize),
    /// VARCHAR/VARBINARY: bytes of the length prefix, charset.
    VarChar(u8, Charset),
    /// BLOB/TEXT: bytes of the length prefix, charset, whether the column holds JSON.
    Blob(u8, Charset, bool),
}

/// A decoded table map: the schema handed out with changes and how to read each column.
struct TableInfo {
    schema: Arc<TableSchema>,
    kinds: Vec<Kind>,
    signal: bool,
    /// This is the version table of that user table (two-way).
    version_of: Option<TableName>,
    /// This is ferry's marker table (origin of ferry's own transactions).
    marker: bool,
}

/// A version table row event: the stamp a write left and the one it replaced.
struct StampEvent {
    table: TableName,
    key: Key,
    before: Option<Stamp>,
    after: Option<Stamp>,
}

/// A cached table map: its raw body (to notice a changed definition under the same id) and,
/// for filtered tables, the decoded info.
struct TableEntry {
    raw: Vec<u8>,
    info: Option<Arc<TableInfo>>,
}

/// The transaction being read.
struct Group {
    changes: Vec<Change>,
    ddl: Vec<SchemaChange>,
    stamps: Vec<StampEvent>,
    /// Origin named by a marker row or a tagged DDL statement (ferry's own writes).
    marker: Option<SiteId>,
    server_id: u32,
    signal: bool,
    standalone: bool,
    /// MariaDB GTID of the group: domain, server, sequence.
    gtid: Option<(u32, u32, u64)>,
}

/// Stream state: position, GTID state, table maps, the open transaction.
struct Decoder {
    ep: MysqlEndpoint,
    site: SiteId,
    filter: TableFilter,
    mariadb: bool,
    charsets: HashMap<u16, String>,
    /// A side connection for catalog lookups (JSON columns); reopened when it fails.
    meta: Option<Conn>,
    tables: HashMap<u64, TableEntry>,
    file: String,
    pos: u64,
    gtid: BTreeMap<u32, (u32, u64)>,
    group: Option<Group>,
    /// The position moved past skipped transactions since the last flush.
    dirty: bool,
    /// The last position handed to the reader.
    reported: Position,
    /// Transactions skipped since the last flush.
    skipped_since_flush: usize,
    /// Where the event being handled starts (for messages).
    event_at: u64,
}

impl Decoder {
    fn skipped(&self) -> usize {
        self.skipped_since_flush
    }

    fn position(&self) -> Position {
        Position::Mysql { file: self.file.clone(), pos: self.pos, gtid: format_gtid_list(&self.gtid) }
    }

    /// Where the stream stands, for messages.
    fn at(&self) -> String {
        if self.file.is_empty() {
            return format!("the start of the binlog stream (requested position {})", self.position());
        }
        format!("binlog {} event at offset {} (resume position {})", self.file, self.event_at, self.position())
    }

    fn runtime(&self, message: String) -> ConnectorError {
        ConnectorError::Mysql {
            endpoint: self.ep.name.clone(),
            what: format!("reading the {} (ferry resumes from its last checkpoint when restarted)", self.at()),
            source: Box::new(mysql_async::Error::Other(message.into())),
        }
    }

    fn setup(&self, problem: String, fix: impl Into<String>) -> ConnectorError {
        ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!("{problem}, at {}", self.at()),
            fix: fix.into(),
        }
    }

    fn stream_error(&self, e: mysql_async::Error) -> ConnectorError {
        if let mysql_async::Error::Server(s) = &e
            && s.code == 1236
        {
            return self.setup(
                format!("the server cannot stream from this position: {}", s.message),
                "the binlog no longer holds it (purged, or another server): snapshot the tables again from the current head",
            );
        }
        if let mysql_async::Error::Server(s) = &e
            && s.code == 4052
        {
            return ConnectorError::Mysql {
                endpoint: self.ep.name.clone(),
                what: format!(
                    "reading the {}: another replica connected with the same server id (two ferry processes on one direction, or a clash with a real replica)",
                    self.at()
                ),
                source: Box::new(e),
            };
        }
        ConnectorError::Mysql {
            endpoint: self.ep.name.clone(),
            what: format!("reading the {} (ferry resumes from its last checkpoint when restarted)", self.at()),
            source: Box::new(e),
        }
    }

    fn corrupt(&self, what: &str) -> ConnectorError {
        self.setup(
            format!("cannot parse a binlog event: {what}"),
            "check the event with mariadb-binlog/mysqlbinlog at that offset and report it to ferry",
        )
    }

    /// Handles one event; committed transactions with changes go to `out`.
    async fn handle(&mut self, ev: &Event, out: &mut Vec<Item>) -> Result<(), ConnectorError> {
        let h = ev.header();
        let t = h.event_type_raw();
        let log_pos = u64::from(h.log_pos());
        self.event_at = log_pos.saturating_sub(u64::from(h.event_size()));
        match t {
            _ if t == EventType::ROTATE_EVENT as u8 => self.rotate(ev),
            _ if t == EventType::FORMAT_DESCRIPTION_EVENT as u8 => {
                self.advance(log_pos);
                Ok(())
            }
            MARIADB_GTID_LIST => {
                self.gtid_list(ev.data())?;
                self.advance(log_pos);
                Ok(())
            }
            MARIADB_GTID => self.begin_gtid(ev),
            _ if t == EventType::GTID_EVENT as u8 || t == EventType::ANONYMOUS_GTID_EVENT as u8 => {
                self.open(h.server_id(), false, None)
            }
            _ if t == EventType::TABLE_MAP_EVENT as u8 => self.table_map(ev).await,
            23..=25 | 30..=32 => self.rows(ev),
            _ if t == EventType::XID_EVENT as u8 => self.commit(log_pos, h.timestamp(), out),
            _ if t == EventType::QUERY_EVENT as u8 => self.query(ev, out),
            XA_PREPARE => {
                if self.group.as_ref().is_some_and(|g| !g.changes.is_empty()) {
                    return Err(self.setup(
                        "an XA transaction (XA PREPARE) changed a replicated table; ferry does not carry XA transactions yet"
                            .into(),
                        "commit replicated tables' changes in ordinary transactions",
                    ));
                }
                self.group = None;
                self.advance(log_pos);
                Ok(())
            }
            QUERY_COMPRESSED..=ROWS_COMPRESSED_LAST => Err(self.setup(
                "binlog compression is on; ferry cannot read compressed row events".into(),
                "SET GLOBAL log_bin_compress = OFF (and in my.cnf)",
            )),
            _ if t == EventType::INCIDENT_EVENT as u8 => Err(self.setup(
                "the server logged an incident (events may be missing from the binlog here)".into(),
                "check the source's error log; then verify the tables and snapshot them again if they differ",
            )),
            _ if t == EventType::PARTIAL_UPDATE_ROWS_EVENT as u8 => Err(self.setup(
                "a partial JSON update event arrived; ferry needs full row images".into(),
                "SET GLOBAL binlog_row_value_options = '' (and in my.cnf)",
            )),
            ANNOTATE_ROWS | BINLOG_CHECKPOINT | START_ENCRYPTION => Ok(()),
            _ if [
                EventType::STOP_EVENT,
                EventType::INTVAR_EVENT,
                EventType::RAND_EVENT,
                EventType::USER_VAR_EVENT,
                EventType::HEARTBEAT_EVENT,
                EventType::IGNORABLE_EVENT,
                EventType::ROWS_QUERY_EVENT,
                EventType::PREVIOUS_GTIDS_EVENT,
                EventType::TRANSACTION_CONTEXT_EVENT,
                EventType::VIEW_CHANGE_EVENT,
                EventType::TRANSACTION_PAYLOAD_EVENT,
            ]
            .iter()
            .any(|e| *e as u8 == t) =>
            {
                Ok(())
            }
            _ if h.flags_raw() & LOG_EVENT_IGNORABLE_F != 0 => Ok(()),
            _ => Err(self.setup(
                format!("binlog event type {t} is one ferry cannot read (statement-based or unknown)"),
                "run the source with binlog_format=ROW; if it already does, report this event type to ferry",
            )),
        }
    }

    /// Moves the position to the end of an event outside a transaction.
    fn advance(&mut self, log_pos: u64) {
        if self.group.is_none() && log_pos != 0 && log_pos != self.pos {
            self.pos = log_pos;
            self.dirty = true;
        }
    }

    fn rotate(&mut self, ev: &Event) -> Result<(), ConnectorError> {
        let data = ev.data();
        if data.len() < 8 {
            return Err(self.corrupt("ROTATE event too short"));
        }
        let mut name = &data[8..];
        // A fake ROTATE may carry a CRC32 the driver did not strip: the first one comes
        // before any format description (mysql_async #189), and MariaDB appends one even
        // to files logged with binlog_checksum=NONE. Strip it when it verifies.
        let stripped = matches!(ev.footer().get_checksum_alg(), Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)));
        if !stripped && name.len() > 4 && crc_trailer_ok(ev) {
            name = &name[..name.len() - 4];
        }
        let pos = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
        let name = String::from_utf8_lossy(name).into_owned();
        if self.group.is_some() {
            return Err(self.corrupt("ROTATE inside a transaction"));
        }
        if name != self.file || pos != self.pos {
            self.file = name;
            self.pos = pos;
            self.dirty = true;
        }
        Ok(())
    }

    /// GTID_LIST: the GTID state at this point; merged keeping the newer sequence per domain.
    fn gtid_list(&mut self, data: &[u8]) -> Result<(), ConnectorError> {
        let mut c = Cur::new(data);
        let count = c.le(4).map_err(|_| self.corrupt("GTID_LIST event too short"))? & 0x0fff_ffff;
        for _ in 0..count {
            let (Ok(d), Ok(s), Ok(n)) = (c.le(4), c.le(4), c.le(8)) else {
                return Err(self.corrupt("GTID_LIST event too short"));
            };
            let (d, s) = (d as u32, s as u32);
            match self.gtid.get(&d) {
                Some((_, cur)) if *cur > n => {}
                _ => {
                    self.gtid.insert(d, (s, n));
                }
            }
        }
        Ok(())
    }

    fn begin_gtid(&mut self, ev: &Event) -> Result<(), ConnectorError> {
        let mut c = Cur::new(ev.data());
        let (Ok(seq), Ok(domain), Ok(flags)) = (c.le(8), c.le(4), c.le(1)) else {
            return Err(self.corrupt("GTID event too short"));
        };
        let server = ev.header().server_id();
        self.open(server, flags as u8 & FL_STANDALONE != 0, Some((domain as u32, server, seq)))
    }

    fn open(&mut self, server_id: u32, standalone: bool, gtid: Option<(u32, u32, u64)>) -> Result<(), ConnectorError> {
        if self.group.as_ref().is_some_and(|g| !g.changes.is_empty()) {
            return Err(self.corrupt("a transaction began before the previous one ended"));
        }
        self.group = Some(Group {
            changes: Vec::new(),
            ddl: Vec::new(),
            stamps: Vec::new(),
            marker: None,
            server_id,
            signal: false,
            standalone,
            gtid,
        });
        Ok(())
    }

    /// Ends the open transaction at an event ending at `log_pos`.
    fn commit(&mut self, log_pos: u64, ts: u32, out: &mut Vec<Item>) -> Result<(), ConnectorError> {
        let Some(g) = self.group.take() else {
            self.advance(log_pos);
            return Ok(());
        };
        if let Some((d, s, n)) = g.gtid {
            self.gtid.insert(d, (s, n));
        }
        if log_pos != 0 {
            self.pos = log_pos;
        }
        if g.changes.is_empty() && g.ddl.is_empty() {
            self.dirty = true;
            self.skipped_since_flush += 1;
            return Ok(());
        }
        self.dirty = false;
        let mut changes = g.changes;
        attach_stamps(&mut changes, g.stamps);
        // A transaction's own time: its latest row version where the triggers gave one
        // (µs), else the binlog header's whole seconds.
        let stamped = changes.iter().filter_map(|c| c.version.as_ref().map(|v| v.1)).max();
        let txn = Txn {
            origin: g.marker.unwrap_or_else(|| self.site.clone()),
            commit_ts: stamped.unwrap_or(i64::from(ts) * 1_000_000),
            position: self.position(),
            changes,
            ddl: g.ddl,
        };
        out.push(Item::Txn { txn, server_id: g.server_id, signal: g.signal });
        Ok(())
    }

    fn query(&mut self, ev: &Event, out: &mut Vec<Item>) -> Result<(), ConnectorError> {
        let h = ev.header();
        let log_pos = u64::from(h.log_pos());
        let ph = usize::from(ev.fde().get_event_type_header_length(EventType::QUERY_EVENT));
        let data = ev.data();
        let parsed = (|| {
            let mut c = Cur::new(data);
            let head = c.take(ph.max(13))?;
            let schema_len = usize::from(head[8]);
            let status_len = usize::from(u16::from_le_bytes([head[11], head[12]]));
            c.take(status_len)?;
            let schema = c.take(schema_len + 1)?;
            Ok::<_, DecodeError>((String::from_utf8_lossy(&schema[..schema_len]).into_owned(), c.rest()))
        })();
        let Ok((default_db, query)) = parsed else {
            return Err(self.corrupt("QUERY event too short"));
        };
        let text = String::from_utf8_lossy(query);
        let trimmed = text.trim_start();
        let word = trimmed.split(|c: char| c.is_whitespace() || c == ';').next().unwrap_or("").to_ascii_uppercase();
        let rest = trimmed[word.len().min(trimmed.len())..].trim_start().to_ascii_uppercase();
        match word.as_str() {
            "BEGIN" => {
                if self.group.is_none() {
                    self.open(h.server_id(), false, None)?;
                } else if let Some(g) = self.group.as_mut() {
                    g.standalone = false;
                }
                Ok(())
            }
            "COMMIT" => self.commit(log_pos, h.timestamp(), out),
            "ROLLBACK" if !rest.starts_with("TO") => self.commit(log_pos, h.timestamp(), out),
            "SAVEPOINT" | "ROLLBACK" => Ok(()),
            _ => {
                let dml = matches!(word.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD");
                let in_txn = self.group.as_ref().is_some_and(|g| !g.standalone);
                if dml && self.filter.mentioned_in(&text) {
                    return Err(self.setup(
                        format!("a statement-based change may touch a replicated table: {}", clip(&text)),
                        "SET GLOBAL binlog_format = 'ROW' (and in my.cnf), and make sure no session overrides it",
                    ));
                }
                if !dml && self.schema_change(&text, &default_db, h.server_id())? {
                    return self.commit(log_pos, h.timestamp(), out);
                }
                if !dml && versions::is_own_trigger_ddl(&text) {
                    // ferry's own version triggers (two-way): nothing to carry.
                } else if !dml && self.filter.mentioned_in(&text) {
                    tracing::warn!(
                        endpoint = %self.ep.name,
                        "DDL on a replicated table is not replicated: {} (at {})",
                        clip(&text),
                        self.at()
                    );
                }
                if in_txn {
                    Ok(())
                } else {
                    // DDL and other standalone statements: a transaction of no rows.
                    self.commit(log_pos, h.timestamp(), out)
                }
            }
        }
    }

    /// Takes a schema change of a followed table (or of a new table the task's patterns
    /// match) into the open group; returns whether there was one. A rename of a followed
    /// table stops the stream: the target would go on writing to the old name.
    fn schema_change(&mut self, text: &str, default_db: &str, server_id: u32) -> Result<bool, ConnectorError> {
        match ddl::parse(text, default_db) {
            Ddl::Carry(changes) => {
                let mine: Vec<SchemaChange> = changes.into_iter().filter(|c| self.filter.claims(&c.table)).collect();
                if mine.is_empty() {
                    return Ok(false);
                }
                for c in &mine {
                    match c.kind {
                        SchemaChangeKind::Create => self.filter.add(&c.table),
                        SchemaChangeKind::Drop => self.filter.remove(&c.table),
                        _ => {}
                    }
                }
                if self.group.is_none() {
                    self.open(server_id, true, None)?;
                }
                if let Some(g) = self.group.as_mut() {
                    g.ddl.extend(mine);
                    if let Some(site) = versions::ddl_origin(text) {
                        g.marker = Some(site);
                    }
                }
                Ok(true)
            }
            Ddl::Refuse { tables, why } if tables.iter().any(|t| self.filter.claims(t)) => Err(self.setup(
                format!("a schema change ferry cannot carry ({why}): {}", clip(text)),
                "rename tables while the task is stopped, then change the task's tables (and the target's table) to the new name and snapshot it again; ferry stops rather than skip the statement",
            )),
            _ => Ok(false),
        }
    }

    async fn table_map(&mut self, ev: &Event) -> Result<(), ConnectorError> {
        let data = ev.data();
        let ph = usize::from(ev.fde().get_event_type_header_length(EventType::TABLE_MAP_EVENT));
        let id_len = if ph == 6 { 4 } else { 6 };
        if data.len() < id_len {
            return Err(self.corrupt("TABLE_MAP event too short"));
        }
        let id = le_uint(&data[..id_len]);
        let body = &data[id_len..];
        if self.tables.get(&id).is_some_and(|e| e.raw == body) {
            return Ok(());
        }
        let tme: TableMapEvent<'_> = ev.read_event().map_err(|e| self.corrupt(&format!("TABLE_MAP: {e}")))?;
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let info = if self.filter.contains(&db, &table) || self.filter.versioned_by(&db, &table).is_some() {
            let json = self.json_columns(&db, &table, &tme).await?;
            Some(Arc::new(self.table_info(&tme, db, table, &json)?))
        } else {
            None
        };
        if self.tables.len() >= TABLE_CACHE_MAX {
            self.tables.clear();
        }
        self.tables.insert(id, TableEntry { raw: body.to_vec(), info });
        Ok(())
    }

    /// Names of the table's JSON columns: MariaDB stores JSON as LONGTEXT with a
    /// `json_valid()` check, which only the catalog shows.
    async fn json_columns(
        &mut self,
        db: &str,
        table: &str,
        tme: &TableMapEvent<'_>,
    ) -> Result<HashSet<String>, ConnectorError> {
        let n = tme.columns_count() as usize;
        let has_longtext = (0..n).any(|i| {
            matches!(tme.get_column_type(i), Ok(Some(ColumnType::MYSQL_TYPE_BLOB)))
                && tme.get_column_metadata(i).is_some_and(|m| m.first() == Some(&4))
        });
        if !self.mariadb || !has_longtext {
            return Ok(HashSet::new());
        }
        let sql = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                   WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";
        let mut last = None;
        for _ in 0..2 {
            if self.meta.is_none() {
                self.meta = Some(self.ep.connect().await?);
            }
            let Some(conn) = self.meta.as_mut() else { continue };
            match conn.exec::<String, _, _>(sql, (db, table)).await {
                Ok(clauses) => {
                    return Ok(clauses.iter().filter_map(|c| json_valid_column(c)).collect());
                }
                Err(e) => {
                    self.meta = None;
                    last = Some(e);
                }
            }
        }
        let e = last.unwrap_or_else(|| mysql_async::Error::Other("no connection".into()));
        Err(self.ep.error(format!("looking up JSON columns of {db}.{table} at {}", self.at()))(e))
    }

    fn table_info(
        &self,
        tme: &TableMapEvent<'_>,
        db: String,
        table: String,
        json: &HashSet<String>,
    ) -> Result<TableInfo, ConnectorError> {
        let qualified = format!("{db}.{table}");
        let n = tme.columns_count() as usize;
        let meta_err = |e: std::io::Error| self.corrupt(&format!("optional metadata of {qualified}: {e}"));

        let mut unsigned: Vec<bool> = Vec::new();
        let mut default_cs: Option<u16> = None;
        let mut non_default: HashMap<u64, u16> = HashMap::new();
        let mut column_cs: Option<Vec<u16>> = None;
        let mut es_default_cs: Option<u16> = None;
        let mut es_non_default: HashMap<u64, u16> = HashMap::new();
        let mut es_column_cs: Option<Vec<u16>> = None;
        let mut names: Option<Vec<String>> = None;
        let mut enum_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut set_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut pk: Vec<usize> = Vec::new();
        for field in tme.iter_optional_meta() {
            match field.map_err(meta_err)? {
                OptionalMetadataField::Signedness(bits) => unsigned = bits.iter().by_vals().collect(),
                OptionalMetadataField::DefaultCharset(d) => {
                    default_cs = Some(d.default_charset());
                    for x in d.iter_non_default() {
                        let x = x.map_err(meta_err)?;
                        non_default.insert(x.column_index(), x.charset());
                    }
                }
                OptionalMetadataField::ColumnCharset(c) => {
                    column_cs = Some(c.iter_charsets().collect::<Result<_, _>>().map_err(meta_err)?);
                }
                OptionalMetadataField::EnumAndSetDefaultCharset(d) => {
                    es_default_cs = Some(d.default_charset());
                    for x in d.iter_non_default() {
                        let x = x.map_err(meta_err)?;
                        es_non_default.insert(x.column_index(), x.charset());
                    }
                }
                OptionalMetadataField::EnumAndSetColumnCharset(c) => {
                    es_column_cs = Some(c.iter_charsets().collect::<Result<_, _>>().map_err(meta_err)?);
                }
                OptionalMetadataField::ColumnName(c) => {
                    let mut v = Vec::with_capacity(n);
                    for name in c.iter_names() {
                        v.push(name.map_err(meta_err)?.name().into_owned());
                    }
                    names = Some(v);
                }
                OptionalMetadataField::EnumStrValue(e) => {
                    for labels in e.iter_values() {
                        let labels = labels.map_err(meta_err)?;
                        enum_labels.push(labels.values().iter().map(|l| l.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(s) => {
                    for labels in s.iter_values() {
                        let labels = labels.map_err(meta_err)?;
                        set_labels.push(labels.values().iter().map(|l| l.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SimplePrimaryKey(k) => {
                    for i in k.iter_indexes() {
                        pk.push(i.map_err(meta_err)? as usize);
                    }
                }
                OptionalMetadataField::PrimaryKeyWithPrefix(k) => {
                    for key in k.iter_keys() {
                        pk.push(key.map_err(meta_err)?.column_index() as usize);
                    }
                }
                _ => {}
            }
        }
        let Some(names) = names.filter(|v| v.len() == n) else {
            return Err(self.setup(
                format!("the table map of {qualified} has no column names (binlog_row_metadata is not FULL)"),
                "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf); changes logged before that cannot be read",
            ));
        };
        let unsupported = |col: &str, what: &str| {
            self.setup(
                format!("column {qualified}.{col} has type {what}, which ferry cannot carry"),
                format!("leave {qualified} out of the task's tables, or change the column's type"),
            )
        };
        let charset_of = |col: &str, id: Option<u16>| -> Result<(Charset, usize), ConnectorError> {
            let Some(id) = id else {
                return Err(self.setup(
                    format!("the table map of {qualified} has no character set for column {col}"),
                    "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf)",
                ));
            };
            let name = match self.charsets.get(&id) {
                Some(n) => n.clone(),
                None => mysql_common::collations::Collation::resolve(id.into()).charset().to_string(),
            };
            match name.as_str() {
                "binary" => Ok((Charset::Binary, 1)),
                "utf8mb4" => Ok((Charset::Utf8, 4)),
                "utf8mb3" | "utf8" => Ok((Charset::Utf8, 3)),
                "ascii" => Ok((Charset::Utf8, 1)),
                "latin1" => Ok((Charset::Latin1, 1)),
                other => Err(self.setup(
                    format!(
                        "column {qualified}.{col} uses character set {other:?} (collation id {id}); ferry reads utf8mb4, utf8mb3, ascii, latin1 and binary"
                    ),
                    format!("ALTER TABLE {} CONVERT TO CHARACTER SET utf8mb4", qualified_ident(&qualified)),
                )),
            }
        };
        let label_text = |cs: Charset, raw: &[u8], col: &str| -> Result<String, ConnectorError> {
            text_of(cs, raw).map_err(|e| self.corrupt(&format!("ENUM/SET label of {qualified}.{col}: {e}")))
        };

        let nullable = tme.null_bitmask();
        let (mut numeric, mut character, mut enum_set, mut enums, mut sets) = (0usize, 0u64, 0u64, 0usize, 0usize);
        let mut kinds = Vec::with_capacity(n);
        let mut columns = Vec::with_capacity(n);
        for (i, name) in names.iter().enumerate() {
            let raw = tme.get_raw_column_type(i).ok().flatten();
            let ty = match tme.get_column_type(i) {
                Ok(Some(t)) => t,
                _ => return Err(unsupported(name, &format!("{raw:?}"))),
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let m0 = meta.first().copied().unwrap_or(0);
            let m1 = meta.get(1).copied().unwrap_or(0);
            let is_unsigned = if raw.is_some_and(|r| r.is_numeric_type()) {
                numeric += 1;
                unsigned.get(numeric - 1).copied().unwrap_or(false)
            } else {
                false
            };
            let uns = if is_unsigned { " unsigned" } else { "" };
            let mut next_cs = || {
                let id = match &column_cs {
                    Some(v) => v.get(character as usize).copied(),
                    None => non_default.get(&character).copied().or(default_cs),
                };
                character += 1;
                charset_of(name, id)
            };
            use ColumnType as T;
            let (kind, decl) = match ty {
                T::MYSQL_TYPE_TINY => (Kind::Int(1, is_unsigned), format!("tinyint{uns}")),
                T::MYSQL_TYPE_SHORT => (Kind::Int(2, is_unsigned), format!("smallint{uns}")),
                T::MYSQL_TYPE_INT24 => (Kind::Int(3, is_unsigned), format!("mediumint{uns}")),
                T::MYSQL_TYPE_LONG => (Kind::Int(4, is_unsigned), format!("int{uns}")),
                T::MYSQL_TYPE_LONGLONG => (Kind::Int(8, is_unsigned), format!("bigint{uns}")),
                T::MYSQL_TYPE_FLOAT => (Kind::Float, format!("float{uns}")),
                T::MYSQL_TYPE_DOUBLE => (Kind::Double, format!("double{uns}")),
                T::MYSQL_TYPE_NEWDECIMAL => (Kind::Decimal(m0, m1), format!("decimal({m0},{m1}){uns}")),
                T::MYSQL_TYPE_YEAR => (Kind::Year, "year".into()),
                T::MYSQL_TYPE_NEWDATE | T::MYSQL_TYPE_DATE => (Kind::Date, "date".into()),
                T::MYSQL_TYPE_TIME2 => (Kind::Time2(m0), with_fsp("time", m0)),
                T::MYSQL_TYPE_TIME => (Kind::TimeOld, "time".into()),
                T::MYSQL_TYPE_DATETIME2 => (Kind::DateTime2(m0), with_fsp("datetime", m0)),
                T::MYSQL_TYPE_DATETIME => (Kind::DateTimeOld, "datetime".into()),
                T::MYSQL_TYPE_TIMESTAMP2 => (Kind::Timestamp2(m0), with_fsp("timestamp", m0)),
                T::MYSQL_TYPE_TIMESTAMP => (Kind::TimestampOld, "timestamp".into()),
                T::MYSQL_TYPE_BIT => {
                    let bits = u32::from(m1) * 8 + u32::from(m0);
                    (Kind::Bit(bits.div_ceil(8) as u8), format!("bit({bits})"))
                }
                T::MYSQL_TYPE_ENUM | T::MYSQL_TYPE_SET => {
                    let id = match &es_column_cs {
                        Some(v) => v.get(enum_set as usize).copied(),
                        None => es_non_default.get(&enum_set).copied().or(es_default_cs),
                    };
                    enum_set += 1;
                    let (cs, _) = charset_of(name, id)?;
                    let is_enum = ty == T::MYSQL_TYPE_ENUM;
                    let raw_labels = if is_enum {
                        enums += 1;
                        enum_labels.get(enums - 1)
                    } else {
                        sets += 1;
                        set_labels.get(sets - 1)
                    };
                    let Some(raw_labels) = raw_labels else {
                        return Err(self.setup(
                            format!("the table map of {qualified} has no labels for column {name}"),
                            "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf)",
                        ));
                    };
                    let labels: Vec<String> =
                        raw_labels.iter().map(|l| label_text(cs, l, name)).collect::<Result<_, _>>()?;
                    let decl = format!(
                        "{}({})",
                        if is_enum { "enum" } else { "set" },
                        labels.iter().map(|l| format!("'{}'", l.replace('\'', "''"))).collect::<Vec<_>>().join(",")
                    );
                    let width = m1.max(1);
                    let labels: Arc<[String]> = labels.into();
                    (if is_enum { Kind::Enum(width, labels) } else { Kind::Set(width, labels) }, decl)
                }
                T::MYSQL_TYPE_STRING => {
                    let (cs, mb) = next_cs()?;
                    let len = if m0 & 0x30 != 0x30 {
                        usize::from(m1) | ((usize::from(m0 & 0x30) ^ 0x30) << 4)
                    } else {
                        usize::from(m1)
                    };
                    let decl =
                        if cs == Charset::Binary { format!("binary({len})") } else { format!("char({})", len / mb) };
                    (Kind::Char(if len < 256 { 1 } else { 2 }, cs, len), decl)
                }
                T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
                    let (cs, mb) = next_cs()?;
                    let len = usize::from(u16::from_le_bytes([m0, m1]));
                    let decl = if cs == Charset::Binary {
                        format!("varbinary({len})")
                    } else {
                        format!("varchar({})", len / mb)
                    };
                    (Kind::VarChar(if len < 256 { 1 } else { 2 }, cs), decl)
                }
                T::MYSQL_TYPE_BLOB | T::MYSQL_TYPE_TINY_BLOB | T::MYSQL_TYPE_MEDIUM_BLOB | T::MYSQL_TYPE_LONG_BLOB => {
                    let (cs, _) = next_cs()?;
                    if !(1..=4).contains(&m0) {
                        return Err(self.corrupt(&format!("BLOB column {qualified}.{name} with length size {m0}")));
                    }
                    let is_json = cs != Charset::Binary && m0 == 4 && json.contains(&name.to_ascii_lowercase());
                    let size = ["tiny", "", "medium", "long"][usize::from(m0 - 1)];
                    let decl = if is_json {
                        "json".to_string()
                    } else if cs == Charset::Binary {
                        format!("{size}blob")
                    } else {
                        format!("{size}text")
                    };
                    (Kind::Blob(m0, cs, is_json), decl)
                }
                T::MYSQL_TYPE_GEOMETRY => return Err(unsupported(name, "GEOMETRY")),
                T::MYSQL_TYPE_JSON => return Err(unsupported(name, "JSON (MySQL binary JSON)")),
                other => return Err(unsupported(name, &format!("{other:?}"))),
            };
            kinds.push(kind);
            columns.push(Column {
                name: name.clone(),
                decl_type: decl,
                nullable: nullable.get(i).map(|b| *b).unwrap_or(true),
            });
        }
        if pk.is_empty() {
            return Err(self.setup(
                format!("table {qualified} has no primary key; ferry needs one to apply its changes"),
                format!("add a primary key (ALTER TABLE {} ADD PRIMARY KEY (...))", qualified_ident(&qualified)),
            ));
        }
        if let Some(bad) = pk.iter().find(|&&i| i >= n) {
            return Err(self.corrupt(&format!("primary key column index {bad} of {qualified} out of range")));
        }
        let signal = db == FERRY_DB && table == SIGNAL_TABLE;
        let marker = db == FERRY_DB && table == versions::MARKER_TABLE;
        let version_of = self.filter.versioned_by(&db, &table);
        let schema = TableSchema {
            name: TableName { schema: Some(db), name: table },
            columns,
            primary_key: pk,
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        };
        Ok(TableInfo { schema: Arc::new(schema), kinds, signal, version_of, marker })
    }

    fn rows(&mut self, ev: &Event) -> Result<(), ConnectorError> {
        let t = ev.header().event_type_raw();
        let et = match t {
            23 => EventType::WRITE_ROWS_EVENT_V1,
            24 => EventType::UPDATE_ROWS_EVENT_V1,
            25 => EventType::DELETE_ROWS_EVENT_V1,
            30 => EventType::WRITE_ROWS_EVENT,
            31 => EventType::UPDATE_ROWS_EVENT,
            _ => EventType::DELETE_ROWS_EVENT,
        };
        let op = match t {
            23 | 30 => Op::Insert,
            24 | 31 => Op::Update,
            _ => Op::Delete,
        };
        let ph = usize::from(ev.fde().get_event_type_header_length(et));
        let data = ev.data();
        let mut c = Cur::new(data);
        let head = (|| {
            let id = if ph == 6 { c.le(4)? } else { c.le(6)? };
            let _flags = c.le(2)?;
            if t >= 30 {
                let extra = c.le(2)? as usize;
                c.take(extra.saturating_sub(2))?;
            }
            let ncols = c.lenenc()? as usize;
            let bitmap_len = ncols.div_ceil(8);
            let first = c.take(bitmap_len)?;
            let second = if op == Op::Update { Some(c.take(bitmap_len)?) } else { None };
            Ok::<_, DecodeError>((id, ncols, first, second))
        })();
        let Ok((id, ncols, first, second)) = head else {
            return Err(self.corrupt("rows event header too short"));
        };
        let info = match self.tables.get(&id) {
            Some(TableEntry { info: Some(info), .. }) => info.clone(),
            Some(_) => return Ok(()),
            None => return Err(self.corrupt(&format!("rows event for table id {id} without a table map"))),
        };
        let qualified = || info.schema.name.to_string();
        if ncols != info.kinds.len() {
            return Err(self.corrupt(&format!(
                "rows event of {} has {ncols} columns, its table map {}",
                qualified(),
                info.kinds.len()
            )));
        }
        for bitmap in std::iter::once(first).chain(second) {
            if (0..ncols).any(|i| bitmap[i / 8] & (1 << (i % 8)) == 0) {
                return Err(self.setup(
                    format!(
                        "a row image of {} lacks columns (binlog_row_image is not FULL for its writer)",
                        qualified()
                    ),
                    "SET GLOBAL binlog_row_image = 'FULL' (and in my.cnf), and make sure no session overrides it",
                ));
            }
        }
        if self.group.is_none() {
            // Row events outside any GTID/BEGIN group (old servers): an implicit group.
            self.group = Some(Group {
                changes: Vec::new(),
                ddl: Vec::new(),
                stamps: Vec::new(),
                marker: None,
                server_id: ev.header().server_id(),
                signal: false,
                standalone: false,
                gtid: None,
            });
        }
        let Some(mut group) = self.group.take() else { return Ok(()) };
        group.signal |= info.signal;
        let mut rows = Cur::new(c.rest());
        if info.version_of.is_some() || info.marker {
            let result = self.stamp_rows(&info, op, &mut rows, &mut group);
            self.group = Some(group);
            return result;
        }
        while !rows.is_empty() {
            let row = decode_row(&info, &mut rows).map_err(|e| self.row_error(&info, e))?;
            let key = info.schema.key_of(&row);
            let (before, after) = match op {
                Op::Insert => (None, Some(row)),
                Op::Delete => (Some(row), None),
                Op::Update => {
                    let after = decode_row(&info, &mut rows).map_err(|e| self.row_error(&info, e))?;
                    (Some(row), Some(after))
                }
            };
            group.changes.push(Change {
                table: info.schema.clone(),
                op,
                key,
                before,
                after,
                prior: Prior::Unknown,
                seen: None,
                version: None,
            });
        }
        self.group = Some(group);
        Ok(())
    }

    /// Rows of a version table (stamps to pair with the changes) or of the marker table.
    fn stamp_rows(
        &self,
        info: &TableInfo,
        op: Op,
        rows: &mut Cur<'_>,
        group: &mut Group,
    ) -> Result<(), ConnectorError> {
        let col = |name: &str| info.schema.column_index(name);
        let stamp = |row: &Row| -> Option<Stamp> {
            let site = match row.get(col(versions::SITE_COLUMN)?)? {
                Value::Text(s) => SiteId::new(s),
                _ => return None,
            };
            let int = |v: &Value| match v {
                Value::Int(i) => Some(*i),
                Value::UInt(u) => i64::try_from(*u).ok(),
                _ => None,
            };
            let ts = int(row.get(col(versions::TS_COLUMN)?)?)?;
            let deleted = int(row.get(col(versions::DELETED_COLUMN)?)?)? != 0;
            Some(Stamp { site, ts, deleted })
        };
        while !rows.is_empty() {
            let first = decode_row(info, rows).map_err(|e| self.row_error(info, e))?;
            let second = if op == Op::Update {
                Some(decode_row(info, rows).map_err(|e| self.row_error(info, e))?)
            } else {
                None
            };
            let (before, after) = match op {
                Op::Insert => (None, Some(first)),
                Op::Delete => (Some(first), None),
                Op::Update => (Some(first), second),
            };
            if info.marker {
                if let Some(Value::Text(site)) = after.as_ref().and_then(|r| col("site").and_then(|i| r.get(i))) {
                    group.marker = Some(SiteId::new(site));
                }
                continue;
            }
            let Some(table) = info.version_of.clone() else { continue };
            let image = after.as_ref().or(before.as_ref());
            let key = image.map(|r| info.schema.key_of(r)).unwrap_or_default();
            group.stamps.push(StampEvent {
                table,
                key,
                before: before.as_ref().and_then(stamp),
                after: after.as_ref().and_then(stamp),
            });
        }
        Ok(())
    }

    fn row_error(&self, info: &TableInfo, e: DecodeError) -> ConnectorError {
        let col = e.column.and_then(|i| info.schema.columns.get(i)).map(|c| c.name.as_str()).unwrap_or("?");
        let what = format!("{}.{}", info.schema.name, col);
        if e.invalid_text {
            return self.setup(
                format!("column {what} holds a value that is not valid in its character set: {}", e.message),
                "fix the stored value (or the column's character set) on the source",
            );
        }
        self.corrupt(&format!("row of {}: column {col}: {}", info.schema.name, e.message))
    }
}

/// Gives each change the version its write left and the one it replaced, from the
/// version table rows of the same transaction (matched by table and key, in order).
fn attach_stamps(changes: &mut [Change], stamps: Vec<StampEvent>) {
    if stamps.is_empty() {
        return;
    }
    let mut by_key: HashMap<(TableName, Vec<u8>), VecDeque<StampEvent>> = HashMap::new();
    for s in stamps {
        by_key.entry((s.table.clone(), key_id(&s.key))).or_default().push_back(s);
    }
    let mut take =
        |table: &TableName, key: &Key| by_key.get_mut(&(table.clone(), key_id(key))).and_then(|q| q.pop_front());
    for c in changes.iter_mut() {
        let new_key = c.new_key();
        let moved = c.op == Op::Update && new_key != c.key;
        // A key-moving update leaves a tombstone at the old key first, then the new key.
        let old = if moved { take(&c.table.name, &c.key) } else { None };
        let Some(own) = take(&c.table.name, &new_key) else { continue };
        c.version = own.after.map(|s| (s.site, s.ts));
        let replaced = if moved { old.and_then(|o| o.before) } else { own.before };
        if c.op == Op::Insert {
            c.prior = match &replaced {
                Some(s) if s.deleted => Prior::Deleted(s.site.clone(), s.ts),
                _ => Prior::Fresh,
            };
        }
        c.seen = replaced.filter(|s| !s.deleted).map(|s| (s.site, s.ts));
    }
}

/// A value-decoding failure inside a row image.
#[derive(Debug)]
struct DecodeError {
    message: String,
    column: Option<usize>,
    invalid_text: bool,
}

impl DecodeError {
    fn eof() -> Self {
        DecodeError { message: "the event ends inside a value".into(), column: None, invalid_text: false }
    }
}

/// A cursor over event bytes.
struct Cur<'a> {
    buf: &'a [u8],
}

impl<'a> Cur<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cur { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::eof());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    #[inline]
    fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(le_uint(self.take(n)?))
    }

    #[inline]
    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn lenenc(&mut self) -> Result<u64, DecodeError> {
        match self.le(1)? {
            0xfc => self.le(2),
            0xfd => self.le(3),
            0xfe => self.le(8),
            x => Ok(x),
        }
    }
}

#[inline]
fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

/// Decodes one row image (null bitmap, then the non-null values).
fn decode_row(info: &TableInfo, c: &mut Cur<'_>) -> Result<Row, DecodeError> {
    let n = info.kinds.len();
    let nulls = c.take(n.div_ceil(8))?;
    let mut row = Vec::with_capacity(n);
    for (i, kind) in info.kinds.iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            row.push(Value::Null);
            continue;
        }
        match decode_value(kind, c) {
            Ok(v) => row.push(v),
            Err(mut e) => {
                e.column = Some(i);
                return Err(e);
            }
        }
    }
    Ok(row)
}

/// Decodes one non-null value of a row image into ferry's [`Value`] (docs/mysql-types.md).
#[inline]
fn decode_value(kind: &Kind, c: &mut Cur<'_>) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::Int(w, unsigned) => {
            let w = usize::from(*w);
            let raw = c.le(w)?;
            if *unsigned {
                Value::UInt(raw)
            } else {
                let shift = 64 - 8 * w as u32;
                Value::Int(((raw << shift) as i64) >> shift)
            }
        }
        Kind::Float => Value::Float(f64::from(f32::from_bits(c.le(4)? as u32))),
        Kind::Double => Value::Float(f64::from_bits(c.le(8)?)),
        Kind::Decimal(p, s) => Value::Decimal(decode_decimal(c, usize::from(*p), usize::from(*s))?),
        Kind::Year => {
            let y = c.le(1)?;
            Value::Int(if y == 0 { 0 } else { 1900 + y as i64 })
        }
        Kind::Date => {
            let v = c.le(3)?;
            Value::Date { year: (v >> 9) as u16, month: ((v >> 5) & 15) as u8, day: (v & 31) as u8 }
        }
        Kind::Time2(dec) => time_value(time2_packed(c, *dec)?),
        Kind::TimeOld => {
            let raw = c.le(3)?;
            let v = ((raw << 40) as i64) >> 40;
            let (negative, v) = (v < 0, v.unsigned_abs());
            Value::Time {
                negative,
                hours: (v / 10000) as u32,
                minutes: (v / 100 % 100) as u8,
                seconds: (v % 100) as u8,
                micros: 0,
            }
        }
        Kind::DateTime2(dec) => {
            let int = c.be(5)? as i64 - 0x80_0000_0000;
            let micros = frac_micros(c, *dec)?;
            let ymd = int >> 17;
            let hms = int & 0x1ffff;
            let ym = ymd >> 5;
            Value::DateTime {
                year: (ym / 13) as u16,
                month: (ym % 13) as u8,
                day: (ymd & 31) as u8,
                hour: (hms >> 12) as u8,
                minute: ((hms >> 6) & 63) as u8,
                second: (hms & 63) as u8,
                micros: micros.max(0) as u32,
            }
        }
        Kind::DateTimeOld => {
            let v = c.le(8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            Value::DateTime {
                year: (d / 10000) as u16,
                month: (d / 100 % 100) as u8,
                day: (d % 100) as u8,
                hour: (t / 10000) as u8,
                minute: (t / 100 % 100) as u8,
                second: (t % 100) as u8,
                micros: 0,
            }
        }
        Kind::Timestamp2(dec) => {
            let secs = c.be(4)? as i64;
            let micros = frac_micros(c, *dec)?;
            Value::Timestamp(secs * 1_000_000 + micros)
        }
        Kind::TimestampOld => Value::Timestamp(c.le(4)? as i64 * 1_000_000),
        Kind::Bit(bytes) => Value::UInt(c.be(usize::from(*bytes))?),
        Kind::Enum(w, labels) => {
            let i = c.le(usize::from(*w))? as usize;
            match i {
                0 => Value::Text(String::new()),
                _ => match labels.get(i - 1) {
                    Some(l) => Value::Text(l.clone()),
                    None => return Err(bad(format!("ENUM index {i} beyond its {} labels", labels.len()))),
                },
            }
        }
        Kind::Set(w, labels) => {
            let bits = c.le(usize::from(*w))?;
            let mut s = String::new();
            for (i, l) in labels.iter().enumerate().take(64) {
                if bits & (1 << i) != 0 {
                    if !s.is_empty() {
                        s.push(',');
                    }
                    s.push_str(l);
                }
            }
            Value::Text(s)
        }
        Kind::Char(lb, cs, declared) => {
            let len = c.le(usize::from(*lb))? as usize;
            let bytes = c.take(len)?;
            if *cs == Charset::Binary && len < *declared {
                // BINARY(n) reads back padded with zero bytes.
                let mut v = Vec::with_capacity(*declared);
                v.extend_from_slice(bytes);
                v.resize(*declared, 0);
                Value::Bytes(v)
            } else {
                string_value(*cs, bytes, false)?
            }
        }
        Kind::VarChar(lb, cs) => {
            let len = c.le(usize::from(*lb))? as usize;
            string_value(*cs, c.take(len)?, false)?
        }
        Kind::Blob(lb, cs, json) => {
            let len = c.le(usize::from(*lb))? as usize;
            string_value(*cs, c.take(len)?, *json)?
        }
    })
}

fn bad(message: String) -> DecodeError {
    DecodeError { message, column: None, invalid_text: false }
}

#[inline]
fn string_value(cs: Charset, bytes: &[u8], json: bool) -> Result<Value, DecodeError> {
    if cs == Charset::Binary {
        return Ok(Value::Bytes(bytes.to_vec()));
    }
    let text = text_of(cs, bytes).map_err(|message| DecodeError { message, column: None, invalid_text: true })?;
    Ok(if json { Value::Json(text) } else { Value::Text(text) })
}

/// Text of a character-set value.
fn text_of(cs: Charset, bytes: &[u8]) -> Result<String, String> {
    match cs {
        Charset::Utf8 | Charset::Binary => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(format!("invalid UTF-8 ({e})")),
        },
        Charset::Latin1 => Ok(bytes.iter().map(|&b| latin1_char(b)).collect()),
    }
}

/// MySQL's latin1 is Windows-1252, with 0x81, 0x8D, 0x8F, 0x90 and 0x9D as C1 controls.
fn latin1_char(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D,
        0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9f => char::from_u32(u32::from(HIGH[usize::from(b - 0x80)])).unwrap_or('\u{fffd}'),
        _ => char::from(b),
    }
}

/// True when the event's data ends with a CRC32 of its header and the rest of its data.
fn crc_trailer_ok(ev: &Event) -> bool {
    let h = ev.header();
    let data = ev.data();
    let Some(split) = data.len().checked_sub(4) else { return false };
    let mut header = Vec::with_capacity(19);
    header.extend_from_slice(&h.timestamp().to_le_bytes());
    header.push(h.event_type_raw());
    header.extend_from_slice(&h.server_id().to_le_bytes());
    header.extend_from_slice(&h.event_size().to_le_bytes());
    header.extend_from_slice(&h.log_pos().to_le_bytes());
    header.extend_from_slice(&h.flags_raw().to_le_bytes());
    let crc = crc32(crc32(0, &header), &data[..split]);
    data[split..] == crc.to_le_bytes()
}

/// CRC-32 (IEEE), continuing from `crc`; only used on a few small events.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// Fractional seconds of DATETIME2/TIMESTAMP2 in microseconds (big-endian, signed).
#[inline]
fn frac_micros(c: &mut Cur<'_>, dec: u8) -> Result<i64, DecodeError> {
    Ok(match dec {
        1 | 2 => i64::from(c.take(1)?[0] as i8) * 10_000,
        3 | 4 => {
            let b = c.take(2)?;
            i64::from(i16::from_be_bytes([b[0], b[1]])) * 100
        }
        5 | 6 => {
            let v = c.be(3)? as i64;
            (v << 40) >> 40
        }
        _ => 0,
    })
}

/// TIME2 as MySQL's packed integer: (hms << 24) + microseconds, negative for negative times.
#[inline]
fn time2_packed(c: &mut Cur<'_>, dec: u8) -> Result<i64, DecodeError> {
    const INT_OFS: i64 = 0x80_0000;
    Ok(match dec {
        1 | 2 => {
            let mut int = c.be(3)? as i64 - INT_OFS;
            let mut frac = i64::from(c.take(1)?[0]);
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = c.be(3)? as i64 - INT_OFS;
            let mut frac = c.be(2)? as i64;
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x10000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => c.be(6)? as i64 - 0x8000_0000_0000,
        _ => (c.be(3)? as i64 - INT_OFS) << 24,
    })
}

fn time_value(packed: i64) -> Value {
    let negative = packed < 0;
    let v = packed.unsigned_abs();
    let hms = v >> 24;
    Value::Time {
        negative,
        hours: ((hms >> 12) & 0x3ff) as u32,
        minutes: ((hms >> 6) & 63) as u8,
        seconds: (hms & 63) as u8,
        micros: (v & 0xff_ffff) as u32,
    }
}

/// DECIMAL(p,s) from MySQL's binary format, as the server prints it (scale kept).
fn decode_decimal(c: &mut Cur<'_>, precision: usize, scale: usize) -> Result<String, DecodeError> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if scale > precision || precision > 65 {
        return Err(bad(format!("DECIMAL({precision},{scale}) out of range")));
    }
    let intg = precision - scale;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw = c.take(size)?;
    if raw.is_empty() {
        return Ok("0".into());
    }
    let mut buf = [0u8; 32];
    buf[..size].copy_from_slice(raw);
    let negative = buf[0] & 0x80 == 0;
    buf[0] ^= 0x80;
    if negative {
        for b in &mut buf[..size] {
            *b = !*b;
        }
    }
    // All digits in order (at most 65 plus group padding), then trimmed and signed.
    let mut digits = [0u8; 96];
    let mut n = 0usize;
    let mut cur = Cur::new(&buf[..size]);
    let mut push = |v: u64, width: usize| {
        let mut x = v;
        for k in (0..width).rev() {
            digits[n + k] = b'0' + (x % 10) as u8;
            x /= 10;
        }
        n += width;
    };
    if intg0x > 0 {
        push(cur.be(DIG2BYTES[intg0x])?, intg0x);
    }
    for _ in 0..intg0 {
        push(cur.be(4)?, 9);
    }
    let int_end = intg;
    for _ in 0..frac0 {
        push(cur.be(4)?, 9);
    }
    if frac0x > 0 {
        push(cur.be(DIG2BYTES[frac0x])?, frac0x);
    }
    let first = digits[..int_end].iter().position(|&d| d != b'0').unwrap_or(int_end);
    let zero = first == int_end && digits[int_end..int_end + scale].iter().all(|&d| d == b'0');
    let mut out = String::with_capacity(precision + 3);
    if negative && !zero {
        out.push('-');
    }
    if first == int_end {
        out.push('0');
    }
    out.extend(digits[first..int_end].iter().map(|&d| char::from(d)));
    if scale > 0 {
        out.push('.');
        out.extend(digits[int_end..int_end + scale].iter().map(|&d| char::from(d)));
    }
    Ok(out)
}

fn with_fsp(name: &str, fsp: u8) -> String {
    if fsp == 0 { name.to_string() } else { format!("{name}({fsp})") }
}

fn qualified_ident(qualified: &str) -> String {
    match qualified.split_once('.') {
        Some((d, t)) => format!("{}.{}", ident(d), ident(t)),
        None => ident(qualified),
    }
}

/// The column a `json_valid(`col`)` check constraint guards, lowercased.
fn json_valid_column(clause: &str) -> Option<String> {
    let c = clause.trim();
    let inner = c.strip_prefix("json_valid(").or_else(|| c.strip_prefix("JSON_VALID("))?.strip_suffix(')')?;
    let name = inner.trim().strip_prefix('`')?.strip_suffix('`')?;
    Some(name.replace("``", "`").to_ascii_lowercase())
}

fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Parses a MariaDB GTID list `d-s-n,d-s-n` into domain -> (server, sequence).
fn parse_gtid_list(text: &str) -> Option<BTreeMap<u32, (u32, u64)>> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = part.split('-');
        let d = it.next()?.parse().ok()?;
        let s = it.next()?.parse().ok()?;
        let n = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        out.insert(d, (s, n));
    }
    Some(out)
}

/// Formats a GTID state as MariaDB writes it, sorted by domain.
fn format_gtid_list(state: &BTreeMap<u32, (u32, u64)>) -> String {
    let parts: Vec<String> = state.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], p: usize, s: usize) -> String {
        decode_decimal(&mut Cur::new(bytes), p, s).expect("decimal")
    }

    #[test]
    fn decimals_decode_with_their_scale() {
        // 1234567890.1234 as DECIMAL(14,4), from MySQL's decimal2bin documentation.
        assert_eq!(dec(&[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2], 14, 4), "1234567890.1234");
        // -1234567890.1234
        assert_eq!(dec(&[0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D], 14, 4), "-1234567890.1234");
        // 0.50 as DECIMAL(5,2): int part 3 digits (2 bytes), frac 2 digits (1 byte).
        assert_eq!(dec(&[0x80, 0x00, 0x32], 5, 2), "0.50");
        assert_eq!(dec(&[0x80, 0x00, 0x00], 5, 2), "0.00");
    }

    #[test]
    fn time2_handles_negative_fractions() {
        // -00:00:00.5 with TIME(1): int part -1 + offset, fraction byte 0xCE (-50).
        let bytes = [0x7f, 0xff, 0xff, 0xce];
        let v = time_value(time2_packed(&mut Cur::new(&bytes), 1).expect("time"));
        assert_eq!(v, Value::Time { negative: true, hours: 0, minutes: 0, seconds: 0, micros: 500_000 });
    }

    #[test]
    fn gtid_lists_round_trip_sorted() {
        let s = parse_gtid_list("2-2-5,1-1-10").expect("list");
        assert_eq!(format_gtid_list(&s), "1-1-10,2-2-5");
        assert!(parse_gtid_list("1-1").is_none());
        assert_eq!(format_gtid_list(&parse_gtid_list("").expect("empty list")), "");
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(text_of(Charset::Latin1, &[0x80, b'a', 0xe9, 0x81]).expect("latin1"), "€aé\u{81}");
    }

    #[test]
    fn server_ids_are_stable_and_high() {
        let a = replica_server_id("node-1 shop a->b");
        assert_eq!(a, replica_server_id("node-1 shop a->b"));
        assert_ne!(a, replica_server_id("node-1 shop b->a"));
        assert!((3_000_000_000..4_000_000_000).contains(&a));
    }

    #[test]
    fn filter_always_has_ferry_tables() {
        let f = TableFilter::new([TableName { schema: Some("shop".into()), name: "orders".into() }]);
        assert!(f.contains("shop", "orders"));
        assert!(f.contains("ferry", "ferry_signal"));
        assert!(f.contains("ferry", "ferry_heartbeat"));
        assert!(!f.contains("shop", "customers"));
        assert!(f.mentioned_in("TRUNCATE TABLE `shop`.`orders`"));
        assert!(f.mentioned_in("alter table Orders add x int"));
        assert!(!f.mentioned_in("INSERT INTO shop.orders_archive VALUES (1)"));
    }

    fn txn(pos: u64, changes: usize) -> Txn {
        let table = Arc::new(TableSchema {
            name: TableName { schema: Some("d".into()), name: "t".into() },
            columns: vec![Column { name: "id".into(), decl_type: "int".into(), nullable: false }],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        });
        let change = Change {
            table,
            op: Op::Insert,
            key: vec![Value::Int(1)],
            before: None,
            after: Some(vec![Value::Int(1)]),
            prior: Prior::Unknown,
            seen: None,
            version: None,
        };
        Txn {
            origin: SiteId::new("a"),
            commit_ts: 0,
            position: Position::Mysql { file: "bin.000001".into(), pos, gtid: String::new() },
            changes: vec![change; changes],
            ddl: Vec::new(),
        }
    }

    fn item(pos: u64, changes: usize, signal: bool) -> Item {
        Item::Txn { txn: txn(pos, changes), server_id: 7, signal }
    }

    fn at(r: &(Vec<Txn>, Position)) -> (Vec<u64>, u64) {
        let pos = |p: &Position| match p {
            Position::Mysql { pos, .. } => *pos,
            Position::Sqlite { seq } => *seq as u64,
        };
        (r.0.iter().map(|t| pos(&t.position)).collect(), pos(&r.1))
    }

    #[tokio::test]
    async fn batches_keep_transactions_whole_and_end_after_signals() {
        let (tx, rx) = mpsc::channel(8);
        let mut reader = BinlogReader {
            endpoint: "a".into(),
            rx,
            task: tokio::spawn(async {}),
            pending: VecDeque::new(),
            position: Position::Mysql { file: "bin.000001".into(), pos: 4, gtid: String::new() },
            server_ids: Vec::new(),
            failed: None,
            stopped: false,
        };
        let wait = Duration::from_millis(20);
        // Nothing there: empty, position unchanged.
        let r = reader.read(10, wait).await.expect("read");
        assert_eq!(at(&r), (vec![], 4));
        let chunk = vec![
            item(100, 3, false),
            item(200, 1, true),
            item(300, 4, false),
            item(400, 20, false),
            item(500, 1, false),
            Item::Pos(Position::Mysql { file: "bin.000001".into(), pos: 600, gtid: String::new() }),
        ];
        tx.send(Ok(chunk)).await.ok();
        // Ends right after the signal transaction.
        assert_eq!(at(&reader.read(10, wait).await.expect("read")), (vec![100, 200], 200));
        assert_eq!(reader.server_ids(), &[7, 7]);
        // 4 + 20 > 10: the bigger transaction waits for the next batch...
        assert_eq!(at(&reader.read(10, wait).await.expect("read")), (vec![300], 300));
        // ...and is returned whole on its own; the batch is full.
        assert_eq!(at(&reader.read(10, wait).await.expect("read")), (vec![400], 400));
        // The skipped tail moves the position past the last transaction.
        assert_eq!(at(&reader.read(10, wait).await.expect("read")), (vec![500], 600));
        // An error from the stream task ends the reader.
        tx.send(Err(ConnectorError::Setup { endpoint: "a".into(), problem: "p".into(), fix: "f".into() })).await.ok();
        assert!(reader.read(10, wait).await.is_err());
        assert!(reader.read(10, wait).await.is_err());
    }

    #[test]
    fn json_checks_name_their_column() {
        assert_eq!(json_valid_column("json_valid(`Doc`)").as_deref(), Some("doc"));
        assert_eq!(json_valid_column("`a` > 0"), None);
    }
}
