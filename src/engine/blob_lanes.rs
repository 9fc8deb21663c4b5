//! Copy lanes of a blob direction: tasks with their own source and target connections
//! that prepare copies at once — read, hash, write to a partial file, buffer or
//! multipart upload — and hand each over to the direction's sink, which makes it visible
//! in a fenced step ([`crate::connector::blob::BlobSink::finish_many`]).
//!
//! Small copies go to lanes of their own, many at once. Big files go to big lanes, which
//! read each in several ranges at once, make its partial write durable as it grows and
//! record how far it got in [`Uploads`], so a checkpoint resumes it after a crash; big
//! copies run beside the small ones instead of after them.
//!
//! The lanes are owned by [`Lanes`]: dropping it closes their queue and ends their
//! tasks. A small lane stops after the job in hand (a partial write it leaves is
//! truncated by the next copy); a big lane told to stop makes what it wrote durable,
//! records it and answers `None`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::blob::{Hasher, changed, md5_group, take_group, whole_ranges};
use super::throttle::Throttle;
use crate::connector::blob::dynamic::{DynBlobSink, DynBlobSource};
use crate::connector::blob::{BlobHashes, BlobMeta, BlobSink, BlobSource, BlobUpload};
use crate::connector::endpoint::Endpoint;
use crate::connector::{ConnectorError, ErrorKind, registry};

/// Bytes per read.
const CHUNK: u64 = 4 << 20;
/// A big copy makes its partial write durable and records it every this many bytes.
pub const RESUMABLE: u64 = 16 << 20;
/// Ranges of a big file read at once by a big lane (each a source connection of its own).
const RANGES: usize = 4;

/// A copy prepared by a lane: all of its content written, not yet visible.
pub struct Prepared {
    /// The partial write.
    pub upload: BlobUpload,
    /// Hashes of the content.
    pub hashes: BlobHashes,
    /// Bytes the lane's sink had not sent, for the sink that finishes it.
    pub held: Vec<u8>,
}

/// The answer to one job: the prepared copy, or `None` from a big lane told to stop
/// (its partial write recorded in [`Uploads`]).
pub type Answer = Result<Option<Prepared>, ConnectorError>;
/// Where the answer to one job comes.
pub type Reply = oneshot::Receiver<Answer>;

struct Job {
    meta: BlobMeta,
    resume: Option<BlobUpload>,
    reply: oneshot::Sender<Answer>,
}

/// The partial writes of big copies under way (or stopped), by path, as far as they
/// are durable: what the direction's checkpoint records, so a restart resumes them.
#[derive(Clone, Default)]
pub struct Uploads(Arc<UploadsInner>);

#[derive(Default)]
struct UploadsInner {
    /// The writes, and whether they changed since the checkpoint last took them.
    writes: std::sync::Mutex<(BTreeMap<String, BlobUpload>, bool)>,
    /// Woken when a lane records progress.
    recorded: Notify,
}

impl Uploads {
    fn writes(&self) -> std::sync::MutexGuard<'_, (BTreeMap<String, BlobUpload>, bool)> {
        self.0.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Records (or updates) a partial write.
    pub fn put(&self, upload: &BlobUpload) {
        let mut w = self.writes();
        w.0.insert(upload.path.clone(), upload.clone());
        w.1 = true;
        self.0.recorded.notify_one();
    }
    /// Forgets a path's partial write (finished or dropped); whether there was one.
    pub fn remove(&self, path: &str) -> bool {
        let mut w = self.writes();
        let had = w.0.remove(path).is_some();
        w.1 |= had;
        had
    }
    /// The partial writes, in path order, for a checkpoint (which is then up to date).
    pub fn for_checkpoint(&self) -> Vec<BlobUpload> {
        let mut w = self.writes();
        w.1 = false;
        w.0.values().cloned().collect()
    }
    /// Whether they changed since the checkpoint last took them.
    pub fn behind(&self) -> bool {
        self.writes().1
    }
    /// Waits for a lane to record progress (at once if it did since the last wait).
    pub async fn recorded(&self) {
        self.0.recorded.notified().await
    }
}

/// What a big lane shares with its direction.
#[derive(Clone)]
pub struct BigShare {
    /// Where partial writes are recorded.
    pub uploads: Uploads,
    /// The direction's byte rate limit.
    pub throttle: Arc<Throttle>,
    /// Tells the lanes to stop (the direction's shutdown).
    pub stop: CancellationToken,
    /// The direction, for the log.
    pub direction: String,
}

/// The lanes of a direction, opened on first use.
pub struct Lanes {
    width: usize,
    source: Endpoint,
    target: Endpoint,
    /// Set for big lanes.
    big: Option<BigShare>,
    queue: Option<mpsc::Sender<Job>>,
    tasks: JoinSet<()>,
}

impl Lanes {
    /// `width` lanes for small copies between these endpoints (none opened yet).
    pub fn new(width: usize, source: &Endpoint, target: &Endpoint) -> Lanes {
        Lanes {
            width: width.max(1),
            source: source.clone(),
            target: target.clone(),
            big: None,
            queue: None,
            tasks: JoinSet::new(),
        }
    }

    /// `width` lanes for big copies, sharing `share` with the direction.
    pub fn big(width: usize, source: &Endpoint, target: &Endpoint, share: BigShare) -> Lanes {
        Lanes { big: Some(share), ..Lanes::new(width, source, target) }
    }

    /// Queues a copy (a big one may resume a partial write); its answer comes on the
    /// returned channel.
    pub async fn submit(&mut self, meta: BlobMeta, resume: Option<BlobUpload>) -> Result<Reply, ConnectorError> {
        if self.queue.is_none() {
            self.open().await?;
        }
        let (tx, rx) = oneshot::channel();
        let sent = match &self.queue {
            Some(q) => q.send(Job { meta, resume, reply: tx }).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.stopped());
        }
        Ok(rx)
    }

    /// The answer of a job (a lane that stopped answers with an error).
    pub async fn answer(&self, reply: Reply) -> Answer {
        reply.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// The error of a lane whose task ended before it answered.
    pub fn stopped(&self) -> ConnectorError {
        ConnectorError::blob_task_stopped(
            &self.target.name,
            "a copy lane",
            Some("ferry retries the pass; report this as a bug if it persists"),
        )
    }

    async fn open(&mut self) -> Result<(), ConnectorError> {
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.width {
            let sink = registry::open_blob_sink(&self.target).await?;
            let (rx, name) = (rx.clone(), self.source.name.clone());
            match &self.big {
                Some(share) => {
                    let ranges = RangeReader::new(&self.source, RANGES);
                    self.tasks.spawn(big_lane(ranges, sink, rx, name, share.clone()));
                }
                None => {
                    let source = registry::open_blob_source(&self.source, true).await?;
                    self.tasks.spawn(lane(source, sink, rx, name));
                }
            }
        }
        self.queue = Some(tx);
        Ok(())
    }
}

/// A small lane: takes up to [`GROUP`] queued copies at once, reads them in one call
/// (one hop to a folder's blocking pool for the group), hashes their MD5s side by side
/// and writes them in one call; a blob not read whole (changed, unreadable) is copied
/// on its own, which says what is wrong.
async fn lane(
    mut source: Box<dyn DynBlobSource>,
    mut sink: Box<dyn DynBlobSink>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    source_name: String,
) {
    let md5 = DynBlobSink::caps(sink.as_ref()).md5;
    let engine = md5_many::Md5Many::new();
    // One buffer for every group, handed to the reader and back.
    let mut buf = Vec::new();
    loop {
        let group = {
            let mut queue = jobs.lock().await;
            let Some(first) = queue.recv().await else { return };
            take_group(&mut queue, first, |j| j.meta.size)
        };
        let wanted: Vec<(String, u64)> = group.iter().map(|j| (j.meta.path.clone(), j.meta.size)).collect();
        let (read, lens) = DynBlobSource::read_many(source.as_mut(), &wanted, std::mem::take(&mut buf)).await;
        let ranges = whole_ranges(&lens, group.iter().map(|j| j.meta.size));
        let sums = match md5 {
            true => md5_group(engine, &read, &ranges),
            false => vec![None; group.len()],
        };
        // What was read whole is written in one call (one hop to a folder's blocking
        // pool for the group); the rest is copied on its own, which says what is wrong.
        let whole: Vec<(usize, std::ops::Range<usize>)> =
            ranges.into_iter().enumerate().filter_map(|(k, r)| Some((k, r?))).collect();
        let blake3s: Vec<String> =
            whole.iter().map(|(_, r)| blake3::hash(&read[r.clone()]).to_hex().to_string()).collect();
        let blobs = whole.iter().map(|(k, r)| (group[*k].meta.clone(), r.clone())).collect();
        let (read, written) = DynBlobSink::write_many(sink.as_mut(), blobs, read).await;
        let mut answers: Vec<Option<Answer>> = (0..group.len()).map(|_| None).collect();
        for (((k, _), w), blake3) in whole.iter().zip(written).zip(blake3s) {
            let md5 = sums[*k].clone().unwrap_or_default();
            answers[*k] =
                Some(w.map(|(upload, held)| Some(Prepared { upload, hashes: BlobHashes { blake3, md5 }, held })));
        }
        for (job, answer) in group.into_iter().zip(answers) {
            let r = match answer {
                Some(a) => a,
                None => prepare(&mut source, &mut sink, &job.meta, &source_name).await.map(Some),
            };
            let _ = job.reply.send(r);
        }
        buf = read;
    }
}

async fn big_lane(
    mut ranges: RangeReader,
    mut sink: Box<dyn DynBlobSink>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    source_name: String,
    share: BigShare,
) {
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { return };
        let r = match share.stop.is_cancelled() {
            // Not begun: a resumed write stays recorded as it was.
            true => Ok(None),
            false => prepare_big(&mut ranges, &mut sink, &job.meta, job.resume.as_ref(), &source_name, &share).await,
        };
        let _ = job.reply.send(r);
    }
}

/// Copies a big blob (resuming `resume`) into a partial write on `sink`, reading ranges
/// ahead and recording the write in `share.uploads` from its start and each time it is
/// made durable, and hands it over; `None` when told to stop (what was written made
/// durable and recorded). A source that changed drops the write; a failure elsewhere
/// leaves it recorded, for the next start to resume.
async fn prepare_big<K: BlobSink>(
    ranges: &mut RangeReader,
    sink: &mut K,
    meta: &BlobMeta,
    resume: Option<&BlobUpload>,
    source_name: &str,
    share: &BigShare,
) -> Answer {
    let mut upload = sink.begin(meta, resume).await?;
    share.uploads.put(&upload);
    let mut h = Hasher::new(sink.caps().md5);
    match fill_big(ranges, sink, meta, &mut upload, &mut h, source_name, share).await {
        Ok(true) => {
            let held = sink.hand_over(&upload).await?;
            Ok(Some(Prepared { upload, hashes: h.finish(), held }))
        }
        Ok(false) => {
            sink.flush(&mut upload).await?;
            share.uploads.put(&upload);
            Ok(None)
        }
        Err(e) => {
            if matches!(&e, ConnectorError::Blob { endpoint, .. } if endpoint == source_name) {
                // The path is copied anew once the source can be read whole.
                share.uploads.remove(&meta.path);
                let _ = sink.abort(&upload).await;
            }
            Err(e)
        }
    }
}

/// Hashes what a resumed write already holds (read again from the source), then reads
/// and writes the rest; `false` when told to stop.
async fn fill_big<K: BlobSink>(
    ranges: &mut RangeReader,
    sink: &mut K,
    meta: &BlobMeta,
    upload: &mut BlobUpload,
    h: &mut Hasher,
    source_name: &str,
    share: &BigShare,
) -> Result<bool, ConnectorError> {
    if upload.written > 0 {
        tracing::info!(direction = %share.direction, path = %meta.path, at = upload.written, size = meta.size, "resuming the copy where it stopped");
        // The hashes cover the whole content: read back what the source had up to there.
        ranges.start(&meta.path, 0, upload.written);
        let mut off = 0;
        while let Some(data) = ranges.next().await? {
            if data.len() as u64 != CHUNK.min(upload.written - off) {
                return Err(changed(source_name, &meta.path));
            }
            h.update(&data);
            off += data.len() as u64;
        }
    }
    let (mut off, mut flushed_at, mut recorded) = (upload.written, upload.written, upload.durable);
    ranges.start(&meta.path, off, meta.size);
    while off < meta.size {
        if share.stop.is_cancelled() {
            return Ok(false);
        }
        let data = ranges.next().await?.unwrap_or_default();
        if data.len() as u64 != CHUNK.min(meta.size - off) {
            return Err(changed(source_name, &meta.path));
        }
        h.update(&data);
        sink.write(upload, &data).await?;
        off += data.len() as u64;
        share.throttle.wait(data.len() as u64, &share.stop).await;
        // Durable where the store needs a step for it; recorded when that moved (a
        // multipart upload advances by whole parts).
        if upload.written - flushed_at >= RESUMABLE {
            sink.flush(upload).await?;
            flushed_at = upload.written;
            if upload.durable > recorded {
                recorded = upload.durable;
                share.uploads.put(upload);
            }
        }
    }
    Ok(true)
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
