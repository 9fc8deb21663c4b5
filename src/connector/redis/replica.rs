//! A replication session with a Redis master, as a replica has one: `REPLCONF capa eof
//! capa psync2`, `PSYNC`, then (after a full resync's RDB) the command stream. A task
//! reads the connection into a bounded channel (the master buffers while ferry applies);
//! another sends `REPLCONF ACK` every second, and at once when the master asks, with the
//! offset the target has committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::RedisEndpoint;
use super::rdb::{Entry, Item, RdbError, RdbReader};
use super::resp::{Reader, Reply, RespError, encode};
use crate::connector::{ConnectorError, ErrorKind};

/// What the session read.
#[derive(Debug)]
pub enum Event {
    /// A key of the full resync's RDB.
    Rdb(Entry),
    /// The RDB ended; the command stream follows.
    RdbEnd,
    /// A command of the stream and the offset just after it.
    Cmd {
        /// Its arguments.
        args: Vec<Vec<u8>>,
        /// The stream offset after it.
        end: u64,
    },
    /// The session ended.
    Lost(ConnectorError),
}

/// How a session started.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// `+FULLRESYNC`: an RDB of everything, then the stream after `offset`.
    Full {
        /// Replication id.
        replid: String,
        /// The stream offset the RDB is consistent with.
        offset: u64,
    },
    /// `+CONTINUE`: the stream after the offset asked for.
    Continue {
        /// Replication id (a new one after a failover or a restart).
        replid: String,
    },
}

/// A running replication session; dropping it closes the connection.
pub struct Session {
    /// How it started.
    pub start: Start,
    /// Events in stream order.
    pub rx: mpsc::Receiver<Event>,
    /// The offset to acknowledge (the target's committed one).
    pub ack: Arc<AtomicU64>,
    /// The RDB version of a full resync (once its header was read).
    pub rdb_version: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn stream_error(ep: &RedisEndpoint, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> ConnectorError {
    ConnectorError::Stream {
        endpoint: ep.name.clone(),
        what: format!("{what} (replication from {})", ep.display),
        source: Box::new(e),
        kind: ErrorKind::Runtime,
    }
}

fn refused(ep: &RedisEndpoint, what: &str, message: &str) -> ConnectorError {
    let why = if message.starts_with("NOPERM") {
        "ferry's user may not run it"
    } else if message.contains("unknown command") {
        "the server does not offer it (managed services and proxies often disable or rename it)"
    } else {
        "the server refused it"
    };
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("{} refused {what}, which ferry reads changes with: {message} ({why})", ep.display),
        fix: "allow replication for ferry's user (ACL SETUSER USER +psync +replconf +ping), or choose a standalone Redis that allows PSYNC; Redis Cluster and services that forbid PSYNC are not supported by this release".into(),
    }
}

/// Starts a session: continuing after `(replid, offset)` (the offset of the last byte
/// applied), or a full resync when `None`. `acked` is what the target has committed.
pub async fn start(ep: &RedisEndpoint, after: Option<(&str, u64)>, acked: u64) -> Result<Session, ConnectorError> {
    let mut c = ep.connect_raw().await?;
    let r = c.call(&["REPLCONF", "capa", "eof", "capa", "psync2"]).await.map_err(ep.io("REPLCONF capa"))?;
    if let Some(e) = r.error() {
        return Err(refused(ep, "REPLCONF", e));
    }
    let (id, from) = match after {
        Some((id, off)) => (id.to_string(), (off + 1).to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    let mut req = Vec::new();
    encode(&["PSYNC", id.as_str(), from.as_str()], &mut req);
    c.send(&req).await.map_err(ep.io("PSYNC"))?;
    // The reply is one status line, possibly after keepalive newlines.
    c.r.skip_newlines().await.map_err(ep.io("PSYNC"))?;
    let line = String::from_utf8_lossy(&c.r.line().await.map_err(ep.io("PSYNC"))?).into_owned();
    let mut words = line.split_whitespace();
    let start = match words.next() {
        Some("+FULLRESYNC") => {
            let replid = words.next().unwrap_or_default().to_string();
            let offset = words.next().and_then(|o| o.parse().ok()).unwrap_or(0);
            Start::Full { replid, offset }
        }
        Some("+CONTINUE") => {
            let replid = words.next().map(str::to_string).unwrap_or_else(|| id.clone());
            Start::Continue { replid }
        }
        _ if line.starts_with('-') => {
            let msg = line.trim_start_matches('-');
            if msg.starts_with("LOADING") || msg.starts_with("NOMASTERLINK") || msg.starts_with("MASTERDOWN") {
                return Err(ConnectorError::Stream {
                    endpoint: ep.name.clone(),
                    what: format!("PSYNC on {}", ep.display),
                    source: msg.to_string().into(),
                    kind: ErrorKind::Runtime,
                });
            }
            return Err(refused(ep, "PSYNC", msg));
        }
        _ => {
            return Err(stream_error(ep, "PSYNC", RespError::Protocol(format!("unexpected reply {line:?}"))));
        }
    };
    debug!(endpoint = %ep.name, ?start, "replication session started");
    let (tx, rx) = mpsc::channel(4096);
    let ack = Arc::new(AtomicU64::new(acked));
    let notify = Arc::new(Notify::new());
    let rdb_version = Arc::new(AtomicU64::new(0));
    let (full, base) = match &start {
        Start::Full { offset, .. } => (true, *offset),
        Start::Continue { .. } => (false, after.map_or(0, |(_, o)| o)),
    };
    let reader = {
        let ep = ep.clone();
        let notify = notify.clone();
        let version = rdb_version.clone();
        let mut r = c.r;
        tokio::spawn(async move {
            if let Err(e) = read(&ep, &mut r, &tx, full, base, &notify, &version).await {
                let _ = tx.send(Event::Lost(e)).await;
            }
        })
    };
    let acker = {
        let mut w = c.w;
        let ack = ack.clone();
        let notify = notify.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = notify.notified() => {}
                }
                let mut out = Vec::new();
                encode(&["REPLCONF".to_string(), "ACK".to_string(), ack.load(Ordering::Relaxed).to_string()], &mut out);
                if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        })
    };
    Ok(Session { start, rx, ack, rdb_version, tasks: vec![reader, acker] })
}

/// Reads the connection: a full resync's RDB, then commands, into the channel.
async fn read(
    ep: &RedisEndpoint,
    r: &mut Reader,
    tx: &mpsc::Sender<Event>,
    full: bool,
    base: u64,
    notify: &Notify,
    version: &AtomicU64,
) -> Result<(), ConnectorError> {
    let lost = |e: RespError| stream_error(ep, "reading the replication stream", e);
    if full {
        r.skip_newlines().await.map_err(lost)?;
        let head = String::from_utf8_lossy(&r.line().await.map_err(lost)?).into_owned();
        let mark = match head.strip_prefix("$EOF:") {
            Some(m) => Some(m.as_bytes().to_vec()),
            None if head.starts_with('$') => None,
            None => return Err(lost(RespError::Protocol(format!("expected the RDB's length, got {head:?}")))),
        };
        let started = r.consumed;
        let mut rdb = RdbReader::open(r).await.map_err(|e| rdb_error(ep, e))?;
        version.store(u64::from(rdb.version), Ordering::Relaxed);
        let mut keys = 0u64;
        loop {
            match rdb.next().await.map_err(|e| rdb_error(ep, e))? {
                Item::Key(e) => {
                    keys += 1;
                    if tx.send(Event::Rdb(e)).await.is_err() {
                        return Ok(());
                    }
                }
                Item::Function => debug!(endpoint = %ep.name, "the RDB holds server functions; they are not synced"),
                Item::End => break,
            }
        }
        match mark {
            Some(m) => {
                let got = r.exact(m.len()).await.map_err(lost)?;
                if got != m {
                    return Err(lost(RespError::Protocol("the diskless RDB's end mark does not match".into())));
                }
            }
            None => {
                let len: u64 = head[1..].trim().parse().unwrap_or(0);
                let read = r.consumed - started;
                if read < len {
                    r.exact((len - read) as usize).await.map_err(lost)?;
                }
            }
        }
        info!(endpoint = %ep.name, keys, "read the source's RDB (full resync)");
        if tx.send(Event::RdbEnd).await.is_err() {
            return Ok(());
        }
        // A diskless sync streams commands only after the first ACK.
        notify.notify_one();
    }
    let start = r.consumed;
    loop {
        let reply = r.reply().await.map_err(lost)?;
        let end = base + (r.consumed - start);
        let args: Vec<Vec<u8>> = match reply {
            Reply::Array(Some(items)) => items.into_iter().filter_map(Reply::bytes).collect(),
            Reply::Status(s) if s == "PING" => vec![b"PING".to_vec()],
            other => {
                return Err(lost(RespError::Protocol(format!("unexpected item in the replication stream: {other:?}"))));
            }
        };
        if args.len() >= 2 && args[0].eq_ignore_ascii_case(b"REPLCONF") && args[1].eq_ignore_ascii_case(b"GETACK") {
            notify.notify_one();
        }
        if tx.send(Event::Cmd { args, end }).await.is_err() {
            return Ok(());
        }
    }
}

fn rdb_error(ep: &RedisEndpoint, e: RdbError) -> ConnectorError {
    match e {
        RdbError::Io(e) => stream_error(ep, "reading the RDB", e),
        RdbError::Unsupported { .. } => ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("{} has data ferry cannot carry: {e}", ep.display),
            fix: "leave such keys out of the task's key patterns (tables), or remove them; nothing was applied past this point".into(),
        },
        RdbError::Format(_) => ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("{}: {e}", ep.display),
            fix: "ferry reads the RDB of Redis 7.x; use a matching release of ferry".into(),
        },
    }
}
