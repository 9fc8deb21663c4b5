//! The event loop of a binlog stream: events in, whole committed transactions out. It
//! follows the position (file, offset and the MariaDB GTID state) across ROTATE, GTID
//! and GTID_LIST events, groups the events between BEGIN/GTID and XID/COMMIT into one
//! [`Txn`], takes the schema changes of followed tables from QUERY events, and refuses
//! what it cannot read exactly (statement-based changes, compressed or partial row
//! events, XA) rather than skip it.
//!
//! Memory stays bounded whatever a transaction's size: once a transaction's changes
//! reach [`PART_CHANGES`], they go out as an [`Item::Part`] and the transaction goes on
//! (one-way streams; a two-way stream pairs changes with row versions and markers that
//! may come later in the transaction, so it keeps its transactions whole).

use mysql_common::binlog::consts::{BinlogChecksumAlg, EventType};
use mysql_common::binlog::events::Event;

use super::filter::TableFilter;
use super::gtid::{self, GtidState, format_gtid_list};
use super::rows::{self, RowsEvent};
use super::stamps::stamp_rows;
use super::table_map::{MapError, TableEntry, TableInfo, TableMaps};
use super::wire::{Cur, DecodeError, crc_trailer_ok};
use crate::connector::ConnectorError;
use crate::connector::mysql::MysqlEndpoint;
use crate::connector::mysql::ddl::{self, Ddl};
use crate::connector::mysql::position::BinlogPos;
use crate::connector::mysql::versions;
use crate::model::conflict::{StampEvent, attach_stamps};
use crate::model::{Change, Position, SchemaChange, SchemaChangeKind, SiteId, Txn};

// MariaDB event types the driver does not know.
const ANNOTATE_ROWS: u8 = 160;
const BINLOG_CHECKPOINT: u8 = 161;
const MARIADB_GTID: u8 = 162;
const MARIADB_GTID_LIST: u8 = 163;
const START_ENCRYPTION: u8 = 164;
const QUERY_COMPRESSED: u8 = 165;
const ROWS_COMPRESSED_LAST: u8 = 171;
const XA_PREPARE: u8 = 38;
/// Event header flag: the event may be skipped by a reader that does not know it.
const LOG_EVENT_IGNORABLE_F: u16 = 0x80;
/// Changes of an open transaction held before they go out as a part of it.
pub(super) const PART_CHANGES: usize = 2048;

/// One step of the stream task's output.
pub(super) enum Item {
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
    /// The first changes of a transaction still being read: its position lies inside
    /// the transaction (`BinlogPos::part_position`). More parts, then the transaction's
    /// [`Item::Txn`] with the rest of its changes and its end position, follow.
    Part {
        /// The changes so far (and origin, commit time of the events so far).
        txn: Txn,
        /// Server id of its events.
        server_id: u32,
    },
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
    /// Parts of it handed out already (see [`Item::Part`]).
    parts: u32,
}

impl Group {
    /// Whether the transaction holds anything to hand out (or did, in parts).
    fn holds_changes(&self) -> bool {
        !self.changes.is_empty() || self.parts > 0
    }
}

/// Stream state: position, GTID state, table maps, the open transaction.
pub(super) struct Decoder {
    ep: MysqlEndpoint,
    site: SiteId,
    filter: TableFilter,
    maps: TableMaps,
    file: String,
    pos: u64,
    gtid: GtidState,
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
    /// A decoder at `file`:`pos` with this GTID state, resuming after `from` (the position
    /// the reader asked for).
    pub(super) fn new(
        ep: &MysqlEndpoint,
        filter: TableFilter,
        maps: TableMaps,
        file: String,
        pos: u64,
        gtid: GtidState,
        from: &Position,
    ) -> Self {
        Decoder {
            ep: ep.clone(),
            site: ep.site.clone(),
            filter,
            maps,
            file,
            pos,
            gtid,
            group: None,
            dirty: false,
            skipped_since_flush: 0,
            reported: from.clone(),
            event_at: 0,
        }
    }

    /// Transactions skipped since the last flush.
    pub(super) fn skipped(&self) -> usize {
        self.skipped_since_flush
    }

    /// True when the position moved past skipped transactions since the last flush.
    pub(super) fn moved(&self) -> bool {
        self.dirty
    }

    /// At a flush: the position after skipped transactions, when it moved past the last
    /// one handed to the reader. Never a position behind one already handed out (a GTID
    /// start first passes the head of the binlog file before the server skips to the GTID).
    pub(super) fn flush_position(&mut self) -> Option<Position> {
        if !self.dirty {
            return None;
        }
        if self.group.as_ref().is_some_and(|g| g.parts > 0) {
            // Inside a transaction handed out in parts the position is the parts' own,
            // past anything skipped before it; the transaction's end moves it on.
            self.dirty = false;
            self.skipped_since_flush = 0;
            return None;
        }
        self.dirty = false;
        self.skipped_since_flush = 0;
        let pos = self.position();
        if pos.stream_cmp(&self.reported) == Some(std::cmp::Ordering::Greater) {
            self.reported = pos.clone();
            return Some(pos);
        }
        None
    }

    /// Notes the last position handed to the reader.
    pub(super) fn handed_over(&mut self, position: &Position) {
        self.reported = position.clone();
    }

    fn position(&self) -> Position {
        BinlogPos { file: self.file.clone(), pos: self.pos, gtid: format_gtid_list(&self.gtid) }.to_position()
    }

    /// Where the stream stands, for messages.
    fn at(&self) -> String {
        if self.file.is_empty() {
            return format!("the start of the binlog stream (requested position {})", self.position());
        }
        format!("binlog {} event at offset {} (resume position {})", self.file, self.event_at, self.position())
    }

    /// An error of the stream (the connection, the server), with where it stands.
    pub(super) fn runtime(&self, message: String) -> ConnectorError {
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

    /// A driver error of the stream, explained where ferry knows its cause.
    pub(super) fn stream_error(&self, e: mysql_async::Error) -> ConnectorError {
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
    pub(super) async fn handle(&mut self, ev: &Event, out: &mut Vec<Item>) -> Result<(), ConnectorError> {
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
            23..=25 | 30..=32 => self.rows(ev, out),
            _ if t == EventType::XID_EVENT as u8 => self.commit(log_pos, h.timestamp(), out),
            _ if t == EventType::QUERY_EVENT as u8 => self.query(ev, out),
            XA_PREPARE => {
                if self.group.as_ref().is_some_and(Group::holds_changes) {
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
        gtid::merge_list_event(&mut self.gtid, data).map_err(|_| self.corrupt("GTID_LIST event too short"))
    }

    fn begin_gtid(&mut self, ev: &Event) -> Result<(), ConnectorError> {
        let Ok(g) = gtid::gtid_event(ev.data()) else {
            return Err(self.corrupt("GTID event too short"));
        };
        let server = ev.header().server_id();
        self.open(server, g.standalone, Some((g.domain, server, g.seq)))
    }

    fn open(&mut self, server_id: u32, standalone: bool, gtid: Option<(u32, u32, u64)>) -> Result<(), ConnectorError> {
        if self.group.as_ref().is_some_and(Group::holds_changes) {
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
            parts: 0,
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
        if !g.holds_changes() && g.ddl.is_empty() {
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
        match self.maps.read(ev, &self.filter).await {
            Ok(()) => Ok(()),
            Err(MapError::Setup(problem, fix)) => Err(self.setup(problem, fix)),
            Err(MapError::Corrupt(what)) => Err(self.corrupt(&what)),
            Err(MapError::Lookup(table, e)) => {
                Err(self.ep.error(format!("looking up JSON columns of {table} at {}", self.at()))(e))
            }
            Err(MapError::Connect(e)) => Err(e),
        }
    }

    fn rows(&mut self, ev: &Event, out: &mut Vec<Item>) -> Result<(), ConnectorError> {
        let Ok(event) = RowsEvent::parse(ev) else {
            return Err(self.corrupt("rows event header too short"));
        };
        let info = match self.maps.get(event.table_id) {
            Some(TableEntry { info: Some(info), .. }) => info.clone(),
            Some(_) => return Ok(()),
            None => {
                return Err(self.corrupt(&format!("rows event for table id {} without a table map", event.table_id)));
            }
        };
        let qualified = || info.schema.name.to_string();
        if event.columns != info.kinds.len() {
            return Err(self.corrupt(&format!(
                "rows event of {} has {} columns, its table map {}",
                qualified(),
                event.columns,
                info.kinds.len()
            )));
        }
        if !event.full_images() {
            return Err(self.setup(
                format!("a row image of {} lacks columns (binlog_row_image is not FULL for its writer)", qualified()),
                "SET GLOBAL binlog_row_image = 'FULL' (and in my.cnf), and make sure no session overrides it",
            ));
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
                parts: 0,
            });
        }
        let Some(mut group) = self.group.take() else { return Ok(()) };
        group.signal |= info.signal;
        let mut rows = event.images;
        if info.version_of.is_some() || info.marker {
            let result = stamp_rows(&info, event.op, &mut rows, &mut group.stamps, &mut group.marker)
                .map_err(|e| self.row_error(&info, e));
            self.group = Some(group);
            return result;
        }
        rows::changes(&info, event.op, &mut rows, &mut group.changes).map_err(|e| self.row_error(&info, e))?;
        if group.changes.len() >= PART_CHANGES && !self.filter.versions() && group.ddl.is_empty() {
            // Memory stays bounded: what the transaction changed so far goes out now.
            group.parts += 1;
            let at = BinlogPos { file: self.file.clone(), pos: self.pos, gtid: format_gtid_list(&self.gtid) };
            let txn = Txn {
                origin: group.marker.clone().unwrap_or_else(|| self.site.clone()),
                commit_ts: i64::from(ev.header().timestamp()) * 1_000_000,
                position: at.part_position(group.parts),
                changes: std::mem::take(&mut group.changes),
                ddl: Vec::new(),
            };
            out.push(Item::Part { txn, server_id: group.server_id });
        }
        self.group = Some(group);
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

fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
