//! Copy lanes of a blob direction: tasks with their own source and target connections
//! that prepare small copies at once — read, hash, write to a partial file or buffer —
//! and hand each over to the direction's sink, which makes a batch of them visible in
//! one fenced step ([`crate::connector::blob::BlobSink::finish_many`]).
//!
//! The lanes are owned by [`Lanes`]: dropping it closes their queue, and each stops
//! after the job in hand (a partial write it leaves is truncated by the next copy).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::blob::{Hasher, changed};
use crate::connector::blob::dynamic::{DynBlobSink, DynBlobSource};
use crate::connector::blob::{BlobHashes, BlobMeta, BlobSink, BlobSource, BlobUpload};
use crate::connector::endpoint::Endpoint;
use crate::connector::{ConnectorError, ErrorKind, registry};

/// Bytes per read.
const CHUNK: u64 = 4 << 20;

/// A copy prepared by a lane: all of its content written, not yet visible.
pub struct Prepared {
    /// The partial write.
    pub upload: BlobUpload,
    /// Hashes of the content.
    pub hashes: BlobHashes,
    /// Bytes the lane's sink had not sent, for the sink that finishes it.
    pub held: Vec<u8>,
}

/// The answer to one job.
pub type Reply = oneshot::Receiver<Result<Prepared, ConnectorError>>;

struct Job {
    meta: BlobMeta,
    reply: oneshot::Sender<Result<Prepared, ConnectorError>>,
}

/// The lanes of a direction, opened on first use.
pub struct Lanes {
    width: usize,
    source: Endpoint,
    target: Endpoint,
    queue: Option<mpsc::Sender<Job>>,
    tasks: JoinSet<()>,
}

impl Lanes {
    /// `width` lanes between these endpoints (none opened yet).
    pub fn new(width: usize, source: &Endpoint, target: &Endpoint) -> Lanes {
        Lanes {
            width: width.max(1),
            source: source.clone(),
            target: target.clone(),
            queue: None,
            tasks: JoinSet::new(),
        }
    }

    /// Queues a copy; its answer comes on the returned channel.
    pub async fn submit(&mut self, meta: BlobMeta) -> Result<Reply, ConnectorError> {
        if self.queue.is_none() {
            self.open().await?;
        }
        let (tx, rx) = oneshot::channel();
        let sent = match &self.queue {
            Some(q) => q.send(Job { meta, reply: tx }).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.stopped());
        }
        Ok(rx)
    }

    /// The answer of a job (a lane that stopped answers with an error).
    pub async fn answer(&self, reply: Reply) -> Result<Prepared, ConnectorError> {
        reply.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> ConnectorError {
        ConnectorError::Blob {
            endpoint: self.target.name.clone(),
            what: "a copy lane stopped:".into(),
            path: String::new(),
            source: Box::new(std::io::Error::other("its task ended")),
            kind: ErrorKind::Runtime,
            fix: Some("ferry retries the pass; report this as a bug if it persists".into()),
        }
    }

    async fn open(&mut self) -> Result<(), ConnectorError> {
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.width {
            let source = registry::open_blob_source(&self.source, true).await?;
            let sink = registry::open_blob_sink(&self.target).await?;
            let (rx, name) = (rx.clone(), self.source.name.clone());
            self.tasks.spawn(lane(source, sink, rx, name));
        }
        self.queue = Some(tx);
        Ok(())
    }
}

async fn lane(
    mut source: Box<dyn DynBlobSource>,
    mut sink: Box<dyn DynBlobSink>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    source_name: String,
) {
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { return };
        let r = prepare(&mut source, &mut sink, &job.meta, &source_name).await;
        let _ = job.reply.send(r);
    }
}

/// Copies a blob's content into a new partial write on `sink`, hashing it, and hands
/// the write over (see [`BlobSink::hand_over`]).
pub async fn prepare<S: BlobSource, K: BlobSink>(
    source: &mut S,
    sink: &mut K,
    meta: &BlobMeta,
    source_name: &str,
) -> Result<Prepared, ConnectorError> {
    let mut upload = sink.begin(meta, None).await?;
    let mut h = Hasher::new(sink.caps().md5);
    if let Err(e) = fill(source, sink, meta, &mut upload, &mut h, source_name).await {
        let _ = sink.abort(&upload).await;
        return Err(e);
    }
    let held = sink.hand_over(&upload).await?;
    Ok(Prepared { upload, hashes: h.finish(), held })
}

/// Reads the rest of a blob from `upload.written` and writes it to the sink.
pub async fn fill<S: BlobSource, K: BlobSink>(
    source: &mut S,
    sink: &mut K,
    meta: &BlobMeta,
    upload: &mut BlobUpload,
    h: &mut Hasher,
    source_name: &str,
) -> Result<(), ConnectorError> {
    let mut off = upload.written;
    while off < meta.size {
        let data = source.read_range(&meta.path, off, CHUNK.min(meta.size - off)).await?;
        if data.is_empty() {
            return Err(changed(source_name, &meta.path));
        }
        h.update(&data);
        sink.write(upload, &data).await?;
        off += data.len() as u64;
    }
    Ok(())
}

/// Ranges of one big blob read ahead, several at once, each over a source connection
/// of its own (parallel ranged GETs on a bucket; reads overlapping the hashing and
/// writing on a folder), handed back in order, so the hashes are computed over the
/// content in order and a partial write grows from its start. Owned by the direction
/// that copies: starting another range or dropping it aborts the reads in flight.
pub struct RangeReader {
    endpoint: Endpoint,
    width: usize,
    /// Connections not reading now (a read in flight owns its own).
    spare: Vec<Box<dyn DynBlobSource>>,
    inflight: VecDeque<JoinHandle<(Box<dyn DynBlobSource>, Result<Vec<u8>, ConnectorError>)>>,
    path: String,
    next: u64,
    end: u64,
}

impl RangeReader {
    /// Up to `width` reads at once from `endpoint` (connections opened on first use).
    pub fn new(endpoint: &Endpoint, width: usize) -> RangeReader {
        RangeReader {
            endpoint: endpoint.clone(),
            width: width.max(1),
            spare: Vec::new(),
            inflight: VecDeque::new(),
            path: String::new(),
            next: 0,
            end: 0,
        }
    }

    /// Reads `path` from `from` to `to` next, in [`CHUNK`]s; reads of an earlier range
    /// still in flight are dropped (their connections with them).
    pub fn start(&mut self, path: &str, from: u64, to: u64) {
        self.abort();
        self.path = path.to_string();
        self.next = from;
        self.end = to;
    }

    /// The next chunk in order (shorter than asked: the blob became shorter); `None`
    /// once the range is read.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ConnectorError> {
        self.fill().await?;
        let Some(read) = self.inflight.pop_front() else { return Ok(None) };
        let (source, data) = read.await.map_err(|e| ConnectorError::Blob {
            endpoint: self.endpoint.name.clone(),
            what: "a range read stopped:".into(),
            path: self.path.clone(),
            source: Box::new(std::io::Error::other(e.to_string())),
            kind: ErrorKind::Runtime,
            fix: Some("ferry retries the pass; report this as a bug if it persists".into()),
        })?;
        self.spare.push(source);
        let data = data?;
        self.fill().await?;
        Ok(Some(data))
    }

    async fn fill(&mut self) -> Result<(), ConnectorError> {
        while self.inflight.len() < self.width && self.next < self.end {
            let mut source = match self.spare.pop() {
                Some(s) => s,
                None => registry::open_blob_source(&self.endpoint, true).await?,
            };
            let (path, off, len) = (self.path.clone(), self.next, CHUNK.min(self.end - self.next));
            self.next += len;
            self.inflight.push_back(tokio::spawn(async move {
                // A store may answer a read with less than asked (SFTP): read on to the end.
                let mut buf: Vec<u8> = Vec::new();
                while (buf.len() as u64) < len {
                    let at = off + buf.len() as u64;
                    match DynBlobSource::read_range(source.as_mut(), &path, at, len - buf.len() as u64).await {
                        Ok(d) if d.is_empty() => break,
                        Ok(d) if buf.is_empty() => buf = d,
                        Ok(d) => buf.extend_from_slice(&d),
                        Err(e) => return (source, Err(e)),
                    }
                }
                (source, Ok(buf))
            }));
        }
        Ok(())
    }

    fn abort(&mut self) {
        for read in self.inflight.drain(..) {
            read.abort();
        }
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        self.abort();
    }
}
