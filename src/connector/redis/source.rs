//! The Redis [`Source`]: a replica of the endpoint's server. A snapshot is a full resync
//! (`PSYNC ? -1`): its RDB's keys come as snapshot chunks, all at the RDB's offset, framed
//! by begin/end items so the sink can drop what the RDB no longer has. Then the command
//! stream: each command (or `MULTI` block) of the endpoint's database whose keys match the
//! task's patterns is one transaction. A restart continues with `PSYNC REPLID OFFSET+1`;
//! a master that no longer has that history answers with a full resync, which this
//! source reports as [`ConnectorError::Resync`] so the engine copies everything again.
//!
//! Two-way (`versions`): a command the application ran here is carried as the whole
//! value of each key it wrote, read and versioned by the capture script when read
//! (docs/redis.md, "Two-way").

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tracing::{info, warn};

use super::crc64::dump_payload;
use super::position::{position, split};
use super::rdb::Entry;
use super::replica::{self, Event, Session, Start};
use super::resp::{Conn, Reply};
use super::stream::{self, kind};
use super::{HEARTBEAT_PREFIX, MARK_PREFIX, RedisEndpoint, VERSION_PREFIX, info_field, lua, own, wanted};
use crate::connector::{Chunk, ConnectorError, HEARTBEAT_TABLE, ReadBatch, ReadRequest, Retention, Source};
use crate::model::item::Item;
use crate::model::{Change, Column, Key, Op, Position, Prior, SiteId, TableName, TableSchema, Txn, Value, now_micros};

/// Where the replication session stands.
enum Mode {
    /// None open.
    Idle,
    /// A full resync's RDB is being read (for a snapshot).
    Rdb { replid: String, offset: u64, begun: bool, ended: bool },
    /// The command stream, applied up to `at` (with the stream's database then).
    Stream { replid: String, at: u64 },
}

/// A Redis source.
pub struct RedisSource {
    ep: RedisEndpoint,
    /// Two-way: carry captured whole values with versions.
    versions: bool,
    patterns: Vec<String>,
    side: Option<Conn>,
    session: Option<Session>,
    mode: Mode,
    /// The database the stream is in (SELECT).
    cur_db: u32,
    /// The offset the target committed (what REPLCONF ACK reports).
    acked: u64,
    capture_sha: Option<String>,
    table: Arc<TableSchema>,
    heartbeat_table: Arc<TableSchema>,
    warned_partial: bool,
}

/// The heartbeat table's shape (site, ts µs), as the engine reads heartbeats.
fn heartbeat_schema() -> Arc<TableSchema> {
    let col = |n: &str, t: &str| Column { name: n.into(), decl_type: t.into(), nullable: false };
    Arc::new(TableSchema {
        name: TableName::bare(HEARTBEAT_TABLE),
        columns: vec![col("site", "text"), col("ts", "int")],
        primary_key: vec![0],
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: None,
    })
}

/// One transaction being collected from the stream.
struct Building {
    origin: SiteId,
    changes: Vec<Change>,
}

impl RedisSource {
    /// A source for the endpoint (nothing is connected until needed).
    pub fn new(ep: RedisEndpoint, versions: bool) -> Self {
        let table = stream::table(ep.db);
        RedisSource {
            ep,
            versions,
            patterns: vec!["*".into()],
            side: None,
            session: None,
            mode: Mode::Idle,
            cur_db: 0,
            acked: 0,
            capture_sha: None,
            table,
            heartbeat_table: heartbeat_schema(),
            warned_partial: false,
        }
    }

    async fn side(&mut self) -> Result<&mut Conn, ConnectorError> {
        if self.side.is_none() {
            self.side = Some(self.ep.connect().await?);
        }
        Ok(self.side.as_mut().expect("connected above"))
    }

    /// Runs a request on the side connection; a lost connection is dropped for the next try.
    async fn side_call(&mut self, what: &str, args: &[Vec<u8>]) -> Result<Reply, ConnectorError> {
        let ep = self.ep.clone();
        let c = self.side().await?;
        match ep.call(c, what, args).await {
            Err(e @ ConnectorError::Stream { .. }) => {
                self.side = None;
                Err(e)
            }
            r => r,
        }
    }

    /// Opens a replication session (continuing after `after`, or a full resync).
    async fn open(&mut self, after: Option<(&str, u64, u32)>) -> Result<Start, ConnectorError> {
        self.session = None;
        let s = replica::start(&self.ep, after.map(|(r, o, _)| (r, o)), self.acked).await?;
        let start = s.start.clone();
        self.session = Some(s);
        // A continued stream goes on in the database it had selected; a full resync's
        // stream selects one before its first command.
        self.cur_db = match start {
            Start::Continue { .. } => after.map_or(0, |(_, _, db)| db),
            Start::Full { .. } => 0,
        };
        Ok(start)
    }

    /// The next event of the session, waiting at most `wait`.
    async fn next_event(&mut self, wait: Option<Duration>) -> Result<Option<Event>, ConnectorError> {
        let Some(s) = self.session.as_mut() else { return Ok(None) };
        let ev = match wait {
            None => match s.rx.try_recv() {
                Ok(e) => Some(e),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Event::Lost(self.lost("the replication session ended"))),
            },
            Some(w) => match tokio::time::timeout(w, s.rx.recv()).await {
                Ok(Some(e)) => Some(e),
                Ok(None) => Some(Event::Lost(self.lost("the replication session ended"))),
                Err(_) => None,
            },
        };
        if let Some(Event::Lost(e)) = ev {
            self.session = None;
            self.mode = Mode::Idle;
            return Err(e);
        }
        Ok(ev)
    }

    fn lost(&self, what: &str) -> ConnectorError {
        ConnectorError::Stream {
            endpoint: self.ep.name.clone(),
            what: format!("replication from {}", self.ep.display),
            source: what.to_string().into(),
            kind: crate::connector::ErrorKind::Runtime,
        }
    }

    fn rdb_version(&self) -> u16 {
        self.session.as_ref().map_or(0, |s| s.rdb_version.load(Ordering::Relaxed) as u16)
    }

    /// The item of an RDB key (one-way: its DUMP payload).
    fn dump_item(&self, e: Entry) -> Item {
        let version = self.rdb_version();
        Item {
            key: e.key,
            value: Some(dump_payload(e.raw, version)),
            headers: Vec::new(),
            ttl_ms: e.expire_ms,
            kind: kind::DUMP.into(),
        }
    }

    /// Reads keys' whole values with their versions (two-way captures), in order; keys
    /// whose value came from another site are left out (they are where they belong), or,
    /// with `held`, given as [`kind::HELD`] items (a full resync's sweep must keep them).
    async fn capture(&mut self, keys: Vec<Vec<u8>>, held: bool) -> Result<Vec<Item>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.capture_sha.is_none() {
            let r = self
                .side_call(
                    "loading ferry's capture script",
                    &[b"SCRIPT".to_vec(), b"LOAD".to_vec(), lua::capture().into_bytes()],
                )
                .await?;
            self.capture_sha = r.text();
        }
        let sha = self.capture_sha.clone().unwrap_or_default();
        let site = self.ep.site.as_str().as_bytes().to_vec();
        let ttl = self.ep.tombstone_ttl.to_string().into_bytes();
        let mut out = Vec::with_capacity(keys.len());
        for part in keys.chunks(500) {
            let reqs: Vec<Vec<Vec<u8>>> = part
                .iter()
                .map(|k| {
                    let mut vk = VERSION_PREFIX.as_bytes().to_vec();
                    vk.extend_from_slice(k);
                    vec![
                        b"EVALSHA".to_vec(),
                        sha.clone().into_bytes(),
                        b"2".to_vec(),
                        k.clone(),
                        vk,
                        site.clone(),
                        ttl.clone(),
                    ]
                })
                .collect();
            let ep = self.ep.clone();
            let c = self.side().await?;
            let replies = c.pipeline(&reqs).await.map_err(ep.io("capturing values"));
            let replies = match replies {
                Ok(r) => r,
                Err(e) => {
                    self.side = None;
                    return Err(e);
                }
            };
            for (k, r) in part.iter().zip(replies) {
                if let Some(e) = r.error() {
                    return Err(self.ep.refused("the capture script", e));
                }
                let mut f = r.items().into_iter();
                let dump = f.next().and_then(Reply::bytes);
                let exp = f.next().and_then(|r| r.int()).unwrap_or(-1);
                let t = f.next().and_then(|r| r.text()).unwrap_or_default();
                let s = f.next().and_then(|r| r.text()).unwrap_or_default();
                let pt = f.next().and_then(|r| r.text()).unwrap_or_default();
                let ps = f.next().and_then(|r| r.text()).unwrap_or_default();
                if s != self.ep.site.as_str() {
                    if held {
                        out.push(Item {
                            key: k.clone(),
                            value: None,
                            headers: Vec::new(),
                            ttl_ms: None,
                            kind: kind::HELD.into(),
                        });
                    }
                    continue;
                }
                let headers = vec![
                    ("t".to_string(), t.into_bytes()),
                    ("s".to_string(), s.into_bytes()),
                    ("pt".to_string(), pt.into_bytes()),
                    ("ps".to_string(), ps.into_bytes()),
                ];
                let kind = if dump.is_some() { kind::VALUE } else { kind::ABSENT };
                out.push(Item {
                    key: k.clone(),
                    value: dump,
                    headers,
                    ttl_ms: (exp >= 0).then_some(exp),
                    kind: kind.into(),
                });
            }
        }
        Ok(out)
    }

    /// Turns one stream command into changes of the transaction being built.
    fn command(&mut self, args: Vec<Vec<u8>>, txn: &mut Building) {
        let name = stream::name(&args);
        match name.as_str() {
            "SELECT" => {
                self.cur_db = args.get(1).and_then(|d| std::str::from_utf8(d).ok()?.parse().ok()).unwrap_or(0);
                return;
            }
            "PING" | "REPLCONF" | "MULTI" | "EXEC" | "PUBLISH" | "SPUBLISH" | "FUNCTION" | "SCRIPT" => return,
            _ => {}
        }
        let here = self.cur_db == self.ep.db;
        if name == "FLUSHALL" || (here && name == "FLUSHDB") {
            let item = stream::marker(kind::FLUSH, &self.patterns);
            txn.changes.push(stream::change(&self.table, item));
            return;
        }
        if name == "SWAPDB" || (here && stream::crosses_databases(&args)) {
            let involved = name != "SWAPDB"
                || args[1..]
                    .iter()
                    .any(|d| std::str::from_utf8(d).ok().and_then(|d| d.parse::<u32>().ok()) == Some(self.ep.db));
            if involved {
                let item = stream::command_item(kind::UNSUPPORTED, args.get(1).cloned().unwrap_or_default(), &args);
                txn.changes.push(stream::change(&self.table, item));
            }
            return;
        }
        if !here {
            return;
        }
        let key = args.get(1).cloned().unwrap_or_default();
        if own(&key) {
            let text = String::from_utf8_lossy(&key).into_owned();
            if let Some(site) = text.strip_prefix(MARK_PREFIX) {
                if name == "SET" {
                    txn.origin = SiteId::new(site);
                } else if name == "DEL" || name == "UNLINK" {
                    txn.origin = self.ep.site.clone();
                }
            } else if let Some(site) = text.strip_prefix(HEARTBEAT_PREFIX)
                && name == "SET"
                && let Some(ts) = args.get(2).and_then(|t| std::str::from_utf8(t).ok()?.parse::<i64>().ok())
            {
                txn.changes.push(Change {
                    table: self.heartbeat_table.clone(),
                    op: Op::Update,
                    key: vec![Value::Text(site.to_string())],
                    before: None,
                    after: Some(vec![Value::Text(site.to_string()), Value::Int(ts)]),
                    prior: Prior::Unknown,
                    seen: None,
                    version: None,
                });
            }
            return;
        }
        let patterns = &self.patterns;
        let Some((cmd, key)) = stream::narrow(&args, |k| wanted(patterns, k)) else {
            if let stream::Keys::At(at) = stream::keys(&args)
                && at.iter().any(|&i| wanted(patterns, &args[i]))
                && !self.warned_partial
            {
                self.warned_partial = true;
                warn!(endpoint = %self.ep.name, command = %name, "a command reads keys the task's patterns take but writes one they leave out; such commands are not carried (docs/redis.md)");
            }
            return;
        };
        txn.changes.push(stream::change(&self.table, stream::command_item(kind::CMD, key, &cmd)));
    }

    /// Two-way: the local transactions' commands become captured whole values (each key
    /// once per batch, in its last transaction).
    async fn versioned(&mut self, txns: Vec<Txn>) -> Result<Vec<Txn>, ConnectorError> {
        let mut last: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
        for (i, t) in txns.iter().enumerate() {
            if t.origin != self.ep.site {
                continue;
            }
            for c in &t.changes {
                let Some(item) = c.after.as_ref().and_then(stream::item_of) else { continue };
                if item.kind == kind::CMD
                    && let Some(args) = item.value.as_deref().and_then(stream::decode_command)
                    && let stream::Keys::At(at) = stream::keys(&args)
                {
                    for k in at {
                        if wanted(&self.patterns, &args[k]) {
                            last.insert(args[k].clone(), i);
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(txns.len());
        for (i, mut t) in txns.into_iter().enumerate() {
            if t.origin != self.ep.site {
                out.push(t);
                continue;
            }
            let mut keys = Vec::new();
            let mut kept = Vec::new();
            for c in t.changes {
                let item = c.after.as_ref().and_then(stream::item_of);
                match item {
                    Some(item) if item.kind == kind::CMD => {
                        let args = item.value.as_deref().and_then(stream::decode_command).unwrap_or_default();
                        if let stream::Keys::At(at) = stream::keys(&args) {
                            for k in at {
                                if last.get(&args[k]) == Some(&i) && !keys.contains(&args[k]) {
                                    keys.push(args[k].clone());
                                }
                            }
                        }
                    }
                    _ => kept.push(c),
                }
            }
            for item in self.capture(keys, false).await? {
                kept.push(stream::change(&self.table, item));
            }
            t.changes = kept;
            out.push(t);
        }
        Ok(out)
    }

    /// Reads the stream after `req.after` (the session is open and there).
    async fn read_stream(&mut self, req: &ReadRequest, replid: &str, at: u64) -> Result<ReadBatch, ConnectorError> {
        let until = req.until.as_ref().and_then(|u| split(&u.to_string()).map(|(_, o, _)| o));
        let mut txns: Vec<Txn> = Vec::new();
        let mut end = at;
        let mut count = 0usize;
        let mut in_multi = false;
        let mut building = Building { origin: self.ep.site.clone(), changes: Vec::new() };
        loop {
            if !in_multi && (count >= req.max_changes || until.is_some_and(|u| end >= u)) {
                break;
            }
            let wait = in_multi.then_some(Duration::from_secs(30));
            let Some(ev) = self.next_event(wait).await? else {
                if in_multi {
                    return Err(self.lost("a MULTI block did not end within 30 s"));
                }
                break;
            };
            let Event::Cmd { args, end: e } = ev else {
                return Err(self.lost("an RDB arrived inside the command stream"));
            };
            let name = stream::name(&args);
            end = e;
            if name == "MULTI" {
                in_multi = true;
                building = Building { origin: self.ep.site.clone(), changes: Vec::new() };
                continue;
            }
            if !in_multi {
                building = Building { origin: self.ep.site.clone(), changes: Vec::new() };
            }
            let before = building.origin.clone();
            self.command(args, &mut building);
            if in_multi && building.origin != before && !building.changes.is_empty() {
                // A marker starts or ends a run of another origin: the run so far is one
                // transaction.
                let run = std::mem::take(&mut building.changes);
                count += run.len();
                txns.push(Txn {
                    origin: before,
                    commit_ts: now_micros(),
                    position: position(replid, e, self.cur_db),
                    changes: run,
                    ddl: Vec::new(),
                });
            }
            if name == "EXEC" {
                in_multi = false;
            }
            if !in_multi && !building.changes.is_empty() {
                let changes = std::mem::take(&mut building.changes);
                count += changes.len();
                txns.push(Txn {
                    origin: building.origin.clone(),
                    commit_ts: now_micros(),
                    position: position(replid, end, self.cur_db),
                    changes,
                    ddl: Vec::new(),
                });
            }
        }
        txns.retain(|t| t.origin != req.exclude_origin);
        if self.versions {
            txns = self.versioned(txns).await?;
            txns.retain(|t| !t.changes.is_empty());
        }
        self.mode = Mode::Stream { replid: replid.to_string(), at: end };
        Ok(ReadBatch { txns, position: position(replid, end, self.cur_db), continues: false })
    }
}

impl Source for RedisSource {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        self.patterns = if patterns.is_empty() { vec!["*".into()] } else { patterns.to_vec() };
        self.side().await?;
        Ok(vec![self.table.clone()])
    }

    async fn install_capture(&mut self, _tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        // A replica needs nothing installed; two-way loads its capture script when it
        // first captures.
        Ok(())
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        let r = self.side_call("reading INFO replication", &[b"INFO".to_vec(), b"replication".to_vec()]).await?;
        let info = r.text().unwrap_or_default();
        let replid = info_field(&info, "master_replid").unwrap_or_default().to_string();
        let offset = info_field(&info, "master_repl_offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        Ok(position(&replid, offset, 0))
    }

    async fn read_chunk(
        &mut self,
        _table: &TableSchema,
        _after: Option<&Key>,
        limit: usize,
        _versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        if !matches!(self.mode, Mode::Rdb { .. }) {
            match self.open(None).await? {
                Start::Full { replid, offset } => {
                    info!(endpoint = %self.ep.name, %replid, offset, "full resync: copying the source's keys from its RDB");
                    self.mode = Mode::Rdb { replid, offset, begun: false, ended: false };
                }
                Start::Continue { .. } => return Err(self.lost("PSYNC ? -1 was answered with +CONTINUE")),
            }
        }
        let (replid, offset, begun, ended) = match &self.mode {
            Mode::Rdb { replid, offset, begun, ended } => (replid.clone(), *offset, *begun, *ended),
            _ => unreachable!("set above"),
        };
        let mut items: Vec<Item> = Vec::new();
        if !begun {
            items.push(stream::marker(kind::BEGIN, &self.patterns));
        }
        let mut now_ended = ended;
        // Two-way: keys are captured (read anew with their versions) in passes, each
        // filling the chunk up to `limit` items, so a chunk is short only at the RDB's end
        // (a short chunk tells the engine the copy is done).
        while !now_ended && items.len() < limit {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut listed: HashSet<Vec<u8>> = HashSet::new();
            while !now_ended && items.len() + keys.len() < limit {
                match self.next_event(Some(Duration::from_secs(600))).await? {
                    None => return Err(self.lost("no RDB data for 10 minutes")),
                    Some(Event::Rdb(e)) => {
                        if e.db != self.ep.db {
                            continue;
                        }
                        // Two-way: a version key without its key is a deletion (a
                        // tombstone); it is captured like a key, so the other side learns
                        // of it too.
                        if self.versions
                            && let Some(k) = e.key.strip_prefix(VERSION_PREFIX.as_bytes())
                            && wanted(&self.patterns, k)
                        {
                            if listed.insert(k.to_vec()) {
                                keys.push(k.to_vec());
                            }
                            continue;
                        }
                        if !wanted(&self.patterns, &e.key) {
                            continue;
                        }
                        if !self.versions {
                            items.push(self.dump_item(e));
                        } else if listed.insert(e.key.clone()) {
                            keys.push(e.key);
                        }
                    }
                    Some(Event::RdbEnd) => now_ended = true,
                    Some(Event::Cmd { .. } | Event::Lost(_)) => return Err(self.lost("the RDB ended early")),
                }
            }
            if self.versions {
                items.extend(self.capture(keys, true).await?);
            }
        }
        if now_ended && !ended {
            items.push(stream::marker(kind::END, &self.patterns));
        }
        self.mode = Mode::Rdb { replid: replid.clone(), offset, begun: true, ended: now_ended };
        Ok(Chunk {
            rows: items.into_iter().map(Item::into_row).collect(),
            position: Some(position(&replid, offset, 0)),
            marks: None,
            versions: None,
            native: None,
        })
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        let Some((replid, after, db)) = split(&req.after.to_string()).map(|(r, o, d)| (r.to_string(), o, d)) else {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("{} is not a Redis stream position", req.after),
                fix: "the task's checkpoint was written for another store; copy the task anew".into(),
            });
        };
        match &self.mode {
            Mode::Rdb { replid: r, offset, ended: true, .. } if *offset == after => {
                // The engine's position may still carry the replication id it read before
                // the resync at the same offset (a master renames its stream when its first
                // replica attaches). A full resync's stream selects its database before its
                // first command.
                self.mode = Mode::Stream { replid: r.clone(), at: after };
            }
            Mode::Rdb { .. } => {
                // A snapshot's RDB holds everything up to its offset: nothing before it is
                // read, and the stream after it waits until the RDB is applied.
                return Ok(ReadBatch { txns: Vec::new(), position: req.after.clone(), continues: false });
            }
            Mode::Stream { replid: r, at } if *at == after && *r == replid => {}
            _ => match self.open(Some((&replid, after, db))).await? {
                Start::Continue { replid: now } => {
                    info!(endpoint = %self.ep.name, offset = after, replid = %now, "continuing the source's replication stream (PSYNC +CONTINUE)");
                    self.mode = Mode::Stream { replid: now, at: after };
                }
                Start::Full { replid: now, offset } => {
                    self.session = None;
                    self.mode = Mode::Idle;
                    return Err(ConnectorError::Resync {
                        endpoint: self.ep.name.clone(),
                        reason: format!(
                            "{} no longer has its replication stream from {replid} offset {after} (its backlog was overwritten, or it restarted without it: it offered a full resync at {now} offset {offset})",
                            self.ep.display
                        ),
                    });
                }
            },
        }
        let (replid, at) = match &self.mode {
            Mode::Stream { replid, at } => (replid.clone(), *at),
            _ => unreachable!("stream mode set above"),
        };
        self.read_stream(req, &replid, at).await
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        let key = format!("{HEARTBEAT_PREFIX}{}", self.ep.site);
        self.side_call(
            "writing the heartbeat",
            &[b"SET".to_vec(), key.into_bytes(), now_micros().to_string().into_bytes()],
        )
        .await
        .map(|_| ())
    }

    async fn consumed(&mut self, _consumer: &str, position: &Position) -> Result<(), ConnectorError> {
        if let Some((_, offset, _)) = split(&position.to_string()) {
            self.acked = offset;
            if let Some(s) = &self.session {
                s.ack.store(offset, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn clock(&mut self) -> Result<Option<i64>, ConnectorError> {
        let r = self.side_call("reading the server's clock", &[b"TIME".to_vec()]).await?;
        let parts = r.items();
        let secs = parts.first().and_then(Reply::int).unwrap_or(0);
        let micros = parts.get(1).and_then(Reply::int).unwrap_or(0);
        Ok(Some(secs * 1_000_000 + micros))
    }

    async fn retention(&mut self) -> Result<Option<Retention>, ConnectorError> {
        let Mode::Stream { at, .. } = self.mode else { return Ok(None) };
        let r = self.side_call("reading INFO replication", &[b"INFO".to_vec(), b"replication".to_vec()]).await?;
        let info = r.text().unwrap_or_default();
        let num = |f: &str| info_field(&info, f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (head, first, hist) =
            (num("master_repl_offset"), num("repl_backlog_first_byte_offset"), num("repl_backlog_histlen"));
        let committed = if self.acked > 0 { self.acked } else { at };
        let needed = head.saturating_sub(committed);
        // The backlog is shared and overwritten oldest first: ferry's position in its oldest
        // quarter is about to fall out of it (a restart then needs a full resync).
        let at_risk = hist > 0 && committed + 1 < first + hist / 4;
        Ok(Some(Retention { bytes: needed, unconfirmed_bytes: needed, at_risk }))
    }
}
