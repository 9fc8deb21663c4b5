//! [`BinlogReader`]: a replica connection to a MySQL/MariaDB server that returns whole
//! committed transactions. The replication stream runs in a background task owned by
//! the reader (aborted when the reader is dropped) and hands decoded transactions over a
//! bounded channel in chunks, so decoding overlaps with the caller's apply; `read`
//! batches them, never splitting a transaction. Starting checks the server's binlog
//! settings and resumes from a file position or, on MariaDB, a GTID state
//! (`@slave_connect_state`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::events::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::decoder::{Decoder, Item};
use super::filter::TableFilter;
use super::gtid::{GtidState, format_gtid_list, parse_gtid_list};
use super::table_map::{TableMaps, load_charsets};
use crate::connector::ConnectorError;
use crate::connector::mysql::MysqlEndpoint;
use crate::connector::mysql::position::BinlogPos;
use crate::model::{Position, Txn};

/// Changes per chunk handed from the stream task to the reader.
const CHUNK_CHANGES: usize = 2048;
/// Transactions (returned or skipped) per chunk.
const CHUNK_TXNS: usize = 512;
/// Binlog bytes per chunk: with [`CHANNEL_CHUNKS`], what the stream task may hold
/// decoded ahead of the reader, whatever the rows' size.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks buffered between the stream task and the reader. A chunk is often partial (it
/// goes as soon as the socket has nothing ready), so eight held about 9,000 changes: a
/// backlog's reads stopped there instead of at the batch size, and the stream task
/// waited most of each apply with a full channel. 64 hold a whole batch.
const CHANNEL_CHUNKS: usize = 64;
/// How often the server sends a heartbeat when it has nothing else to send.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(2);
/// Silence after which the stream is considered dead.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Binlog bytes one read takes from the stream task, at most (plus one chunk): a batch
/// of wide rows ends there rather than at its change count.
const READ_BYTES: usize = 64 << 20;

/// What the stream task sends: decoded items, or the error that stopped it.
type Chunk = Result<Decoded, ConnectorError>;

/// Items decoded from some binlog events.
struct Decoded {
    items: Vec<Item>,
    /// The events' size in the binlog.
    bytes: usize,
}

/// What one [`BinlogReader::read`] returns.
#[derive(Debug)]
pub struct Read {
    /// Transactions, oldest first; the last one only a part of it when `continues`.
    pub txns: Vec<Txn>,
    /// Just after the last transaction (inside it when `continues`).
    pub position: Position,
    /// The last transaction goes on in the next read.
    pub continues: bool,
}

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
    /// The last transaction returned goes on in the next read.
    open: bool,
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
        let Ok(BinlogPos { file, pos, gtid }) = BinlogPos::of(from) else {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("cannot read the binlog from {from}: not a MySQL position"),
                fix: "clear this direction's checkpoint (it belongs to another kind of source) and snapshot again"
                    .into(),
            });
        };
        let (file, pos, gtid) = (&file, &pos, &gtid);
        let mut meta = ep.connect().await?;
        let server = check_server(ep, &mut meta).await?;
        let charsets = load_charsets(ep, &mut meta).await?;

        let mut state = GtidState::new();
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

        let maps = TableMaps::new(ep.clone(), server.mariadb, charsets, meta);
        let dec = Decoder::new(ep, filter, maps, file.clone(), *pos, state, from);
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
            open: false,
        })
    }

    /// Returns committed transactions, at most about `max_changes` row changes, waiting
    /// up to `wait` for the first one; nothing when nothing arrived in time. A
    /// transaction is never split across reads unless it alone holds more than
    /// `max_changes` (or the read [`READ_BYTES`]): then it comes in parts (its first changes, read after read), with
    /// [`Read::continues`] set until the read that holds its end; such a read never
    /// comes back empty (the rest of the transaction is already in the binlog). The
    /// returned Position is just after the last transaction returned (inside it while it
    /// continues; after skipped ones; else unchanged). A batch ends right after any
    /// transaction that changes `ferry.ferry_signal`.
    pub async fn read(&mut self, max_changes: usize, wait: Duration) -> Result<Read, ConnectorError> {
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
        // Binlog bytes of the chunks taken by this read.
        let mut taken = 0usize;
        // The last transaction of `out` is the one going on in parts.
        let mut last_open = false;
        self.server_ids.clear();
        loop {
            while let Some(item) = self.pending.pop_front() {
                match item {
                    Item::Pos(p) => self.position = p,
                    Item::Part { txn, server_id } => {
                        if !self.open && !out.is_empty() && changes + txn.changes.len() > max_changes {
                            // A big transaction begins: it starts a read of its own.
                            self.pending.push_front(Item::Part { txn, server_id });
                            return Ok(self.done(out));
                        }
                        changes += txn.changes.len();
                        self.position = txn.position.clone();
                        self.open = true;
                        self.extend(&mut out, &mut last_open, txn, server_id);
                        if changes >= max_changes {
                            return Ok(self.done(out));
                        }
                    }
                    Item::Txn { txn, server_id, signal } if self.open => {
                        // The end of the transaction going on in parts.
                        changes += txn.changes.len();
                        self.position = txn.position.clone();
                        self.open = false;
                        self.extend(&mut out, &mut last_open, txn, server_id);
                        last_open = false;
                        if signal || changes >= max_changes {
                            return Ok(self.done(out));
                        }
                    }
                    Item::Txn { txn, server_id, signal } => {
                        // A schema change travels alone: the target applies it outside a
                        // transaction (DDL commits implicitly), between the rows around it.
                        let ddl = !txn.ddl.is_empty();
                        if !out.is_empty() && (ddl || changes + txn.changes.len() > max_changes) {
                            self.pending.push_front(Item::Txn { txn, server_id, signal });
                            return Ok(self.done(out));
                        }
                        changes += txn.changes.len();
                        self.position = txn.position.clone();
                        self.server_ids.push(server_id);
                        out.push(txn);
                        if signal || ddl || changes >= max_changes {
                            return Ok(self.done(out));
                        }
                    }
                }
            }
            let chunk = if !out.is_empty() && taken >= READ_BYTES {
                return Ok(self.done(out));
            } else if self.open {
                // Inside a transaction (the read's first, or one that fits it so far, not
                // to be cut where the decoder happens to be): its rest is in the binlog
                // already, so wait for it (a dead stream ends with an error from the
                // stream task).
                self.rx.recv().await
            } else if out.is_empty() {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Err(_) => return Ok(self.done(out)),
                    Ok(c) => c,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(_) => return Ok(self.done(out)),
                }
            };
            match chunk {
                Some(Ok(d)) => {
                    taken += d.bytes;
                    self.pending.extend(d.items);
                }
                Some(Err(e)) if out.is_empty() => {
                    self.stopped = true;
                    return Err(e);
                }
                Some(Err(e)) => {
                    self.failed = Some(e);
                    return Ok(self.done(out));
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

    /// Adds a part (or the end) of the transaction going on in parts to the read: to the
    /// last transaction of `out` when that is it, else as a new one.
    fn extend(&mut self, out: &mut Vec<Txn>, last_open: &mut bool, txn: Txn, server_id: u32) {
        match out.last_mut().filter(|_| *last_open) {
            Some(last) => {
                last.changes.extend(txn.changes);
                last.position = txn.position;
                last.commit_ts = txn.commit_ts;
                last.origin = txn.origin;
            }
            None => {
                self.server_ids.push(server_id);
                out.push(txn);
                *last_open = true;
            }
        }
    }

    /// What a read returns.
    fn done(&self, txns: Vec<Txn>) -> Read {
        Read { txns, position: self.position.clone(), continues: self.open }
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
    let mut size = ChunkSize::default();
    let mut next = Some(first);
    loop {
        let ev = match next.take() {
            Some(ev) => ev,
            None => {
                let polled = if chunk.is_empty() && !dec.moved() {
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
                            if !flush(&mut dec, &mut chunk, &mut size, &tx).await {
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
                        let _ = flush(&mut dec, &mut chunk, &mut size, &tx).await;
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    None => {
                        let e = dec.runtime("the server closed the binlog stream".into());
                        let _ = flush(&mut dec, &mut chunk, &mut size, &tx).await;
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        };
        let before = chunk.len();
        size.bytes += ev.header().event_size() as usize;
        if let Err(e) = dec.handle(&ev, &mut chunk).await {
            let _ = flush(&mut dec, &mut chunk, &mut size, &tx).await;
            let _ = tx.send(Err(e)).await;
            return;
        }
        let mut signal = false;
        for item in &chunk[before..] {
            match item {
                Item::Txn { txn, signal: s, .. } => {
                    size.changes += txn.changes.len();
                    signal |= *s;
                }
                Item::Part { txn, .. } => size.changes += txn.changes.len(),
                Item::Pos(_) => {}
            }
        }
        let full =
            size.changes >= CHUNK_CHANGES || chunk.len() + dec.skipped() >= CHUNK_TXNS || size.bytes >= CHUNK_BYTES;
        if (signal || full) && !flush(&mut dec, &mut chunk, &mut size, &tx).await {
            return;
        }
    }
}

/// What the chunk being filled holds so far.
#[derive(Default)]
struct ChunkSize {
    /// Row changes.
    changes: usize,
    /// Binlog bytes of the events decoded into it.
    bytes: usize,
}

/// Sends the chunk (with the position after skipped transactions); false when the reader is gone.
async fn flush(dec: &mut Decoder, chunk: &mut Vec<Item>, size: &mut ChunkSize, tx: &mpsc::Sender<Chunk>) -> bool {
    let bytes = std::mem::take(size).bytes;
    if let Some(pos) = dec.flush_position() {
        chunk.push(Item::Pos(pos));
    }
    if let Some(Item::Txn { txn, .. }) = chunk.last() {
        dec.handed_over(&txn.position);
    }
    if chunk.is_empty() {
        return true;
    }
    tx.send(Ok(Decoded { items: std::mem::take(chunk), bytes })).await.is_ok()
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Change, Column, Op, Prior, SiteId, TableName, TableSchema, Value};

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
            position: BinlogPos { file: "bin.000001".into(), pos, gtid: String::new() }.to_position(),
            changes: vec![change; changes],
            ddl: Vec::new(),
        }
    }

    fn item(pos: u64, changes: usize, signal: bool) -> Item {
        Item::Txn { txn: txn(pos, changes), server_id: 7, signal }
    }

    fn at(r: &Read) -> (Vec<u64>, u64) {
        let pos = |p: &Position| BinlogPos::of(p).map(|b| b.pos).unwrap_or(0);
        (r.txns.iter().map(|t| pos(&t.position)).collect(), pos(&r.position))
    }

    fn reader(rx: mpsc::Receiver<Chunk>) -> BinlogReader {
        BinlogReader {
            endpoint: "a".into(),
            rx,
            task: tokio::spawn(async {}),
            pending: VecDeque::new(),
            position: BinlogPos { file: "bin.000001".into(), pos: 4, gtid: String::new() }.to_position(),
            server_ids: Vec::new(),
            failed: None,
            stopped: false,
            open: false,
        }
    }

    /// Items as the stream task sends them, of no size in the binlog.
    fn decoded(items: Vec<Item>) -> Decoded {
        Decoded { items, bytes: 0 }
    }

    /// A part of the transaction starting at `start`.
    fn part(start: u64, n: u32, changes: usize) -> Item {
        let mut t = txn(start, changes);
        t.position = BinlogPos { file: "bin.000001".into(), pos: start, gtid: String::new() }.part_position(n);
        Item::Part { txn: t, server_id: 7 }
    }

    #[tokio::test]
    async fn a_transaction_bigger_than_a_read_comes_in_parts_and_the_rest_whole() {
        let (tx, rx) = mpsc::channel(8);
        let mut reader = reader(rx);
        let wait = Duration::from_millis(20);
        // A transaction of 8 changes, then one of 4 + 4 + 4 + 1 (from 100 to 300), then one more.
        let chunk = vec![
            item(100, 8, false),
            part(100, 1, 4),
            part(100, 2, 4),
            part(100, 3, 4),
            item(300, 1, false),
            item(400, 1, false),
        ];
        tx.send(Ok(decoded(chunk))).await.ok();
        // The first alone: the big one's first part would overflow the read.
        let r = reader.read(10, wait).await.expect("read");
        assert_eq!((at(&r), r.continues), ((vec![100], 100), false));
        // 4 + 4 + 4 >= 10: its first parts, as one transaction, going on.
        let r = reader.read(10, wait).await.expect("read");
        assert_eq!((r.txns.len(), r.txns[0].changes.len(), r.continues), (1, 12, true));
        assert!(BinlogPos::is_part(&r.position) && r.position == r.txns[0].position);
        // The rest of it, ending at its end position, and the next one in the same read.
        let r = reader.read(10, wait).await.expect("read");
        assert_eq!((at(&r), r.txns[0].changes.len(), r.continues), ((vec![300, 400], 400), 1, false));
        assert_eq!(reader.server_ids(), &[7, 7]);
        // A transaction that fits a read comes whole even when it was decoded in parts.
        tx.send(Ok(decoded(vec![part(400, 1, 3), item(500, 2, false)]))).await.ok();
        let r = reader.read(10, wait).await.expect("read");
        assert_eq!((at(&r), r.txns[0].changes.len(), r.continues), ((vec![500], 500), 5, false));
    }

    #[tokio::test]
    async fn a_read_takes_no_more_chunks_once_it_holds_its_bytes() {
        let (tx, rx) = mpsc::channel(8);
        let mut reader = reader(rx);
        let wait = Duration::from_millis(20);
        // Three chunks of wide rows, each half a read's bytes, one transaction each.
        for pos in [100, 200, 300] {
            tx.send(Ok(Decoded { items: vec![item(pos, 1, false)], bytes: READ_BYTES / 2 })).await.ok();
        }
        // Far below its change count, the read ends once its chunks reached the bytes.
        assert_eq!(at(&reader.read(1000, wait).await.expect("read")), (vec![100, 200], 200));
        assert_eq!(at(&reader.read(1000, wait).await.expect("read")), (vec![300], 300));
    }

    #[tokio::test]
    async fn a_transaction_that_fits_the_read_is_not_cut_where_the_decoder_is() {
        let (tx, rx) = mpsc::channel(8);
        let mut reader = reader(rx);
        // One transaction, then the first part of the next; its end comes later.
        tx.send(Ok(decoded(vec![item(50, 1, false), part(100, 1, 3)]))).await.ok();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Ok(decoded(vec![item(300, 1, false)]))).await.ok();
            tx
        });
        // 1 + 3 + 1 < 10: the read waits for the rest and returns both whole.
        let r = reader.read(10, Duration::from_millis(20)).await.expect("read");
        assert_eq!((at(&r), r.continues), ((vec![50, 300], 300), false));
        assert_eq!(r.txns[1].changes.len(), 4);
        drop(late.await);
    }

    #[tokio::test]
    async fn inside_a_transaction_a_read_waits_for_its_rest() {
        let (tx, rx) = mpsc::channel(8);
        let mut reader = reader(rx);
        tx.send(Ok(decoded(vec![part(100, 1, 10)]))).await.ok();
        let r = reader.read(10, Duration::from_millis(20)).await.expect("read");
        assert!(r.continues);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Ok(decoded(vec![item(300, 1, false)]))).await.ok();
            tx
        });
        // Far past the 20 ms wait, never empty: it waits for the rest of the transaction.
        let r = reader.read(10, Duration::from_millis(20)).await.expect("read");
        assert_eq!((at(&r), r.continues), ((vec![300], 300), false));
        drop(late.await);
    }

    #[tokio::test]
    async fn batches_keep_transactions_whole_and_end_after_signals() {
        let (tx, rx) = mpsc::channel(8);
        let mut reader = reader(rx);
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
            Item::Pos(BinlogPos { file: "bin.000001".into(), pos: 600, gtid: String::new() }.to_position()),
        ];
        tx.send(Ok(decoded(chunk))).await.ok();
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
}
