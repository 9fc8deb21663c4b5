//! One direction of a blob task (files, objects): lease, resume of partial writes, full
//! passes that merge the sorted listings of source, target and manifest (the scan
//! position checkpointed), then change hints between passes — hints are checked
//! against the stores, and a periodic rescan is the truth.
//!
//! A path is copied when the target lacks it or differs: by size and mtime (and mode)
//! where the target keeps mtimes, else by the manifest's record of the source state it
//! holds and the target's ETag. A source path that cannot be read is named and left
//! for the next pass; the rest goes on.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::EngineError;
use super::blob_lanes::{Answer, BigShare, Lanes, Prepared, RESUMABLE, Reply, Uploads, fill};
use super::lease::{self, LEASE_TTL, Tenure};
use super::metrics::{DirectionMetrics, DirectionState};
use super::task::DirectionSpec;
use super::throttle::Throttle;
use crate::connector::blob::{
    self, BlobCaps, BlobCheckpoint, BlobHashes, BlobHint, BlobKind, BlobMeta, BlobSink, BlobSource, BlobUpload,
    Finished, ManifestEntry,
};
use crate::connector::registry;
use crate::connector::{ConnectorError, DirectionId, ErrorKind};
use crate::model::now_micros;

/// Entries per listing page.
const PAGE: usize = 1000;
/// Big files (at least [`RESUMABLE`] bytes: their partial writes are made durable and
/// checkpointed as they grow) copied at once, each by a lane of its own.
const BIG_LANES: usize = 2;
/// Big copies handed to the big lanes and not yet visible: a prepared copy may hold its
/// whole content in memory (an object sent in one PUT), so this bounds that memory.
const BIG_INFLIGHT: usize = BIG_LANES + 1;
/// How often the lease is renewed and the big copies' progress checkpointed while the
/// direction waits for one.
const BIG_TICK: Duration = Duration::from_secs(1);
/// How often a pass records its position.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// How often hints are read.
const POLL: Duration = Duration::from_millis(100);
/// How often the watch asks whether the source was frozen for a cutover.
const FROZEN_CHECK: Duration = Duration::from_secs(1);
/// Small copies made visible together (one fenced transaction of the state file); as
/// many more are prepared by the lanes meanwhile. Measured against s3s-fs (20,000 small
/// files): 512 with 32 PUTs in flight took 6.0-6.1 s, 128 with 16 took 6.4-7.1 s (each
/// batch ends with its last PUTs in flight alone, then its commit).
const BATCH: usize = 512;
/// Bytes of small copies held before they are made visible (a bucket's are in memory).
const BATCH_BYTES: u64 = 64 << 20;
/// Big files a pass lists and keeps waiting for a big lane (so a big copy does not hold
/// back the small files listed after it); past this many, the pass waits for one to
/// land where it lists the next.
const MAX_DEFERRED: usize = 256;

/// Runs a blob direction until `shutdown` (or, with `spec.once`, one full pass).
pub async fn run(
    spec: &DirectionSpec,
    metrics: &Arc<DirectionMetrics>,
    shutdown: &CancellationToken,
    held: &AtomicBool,
    progressed: &AtomicBool,
) -> Result<(), EngineError> {
    registry::check_blob_pair(&spec.source, &spec.target)?;
    if spec.conflicts.is_some() {
        return Err(ConnectorError::Setup {
            endpoint: spec.target.name.clone(),
            problem: format!("task {} is two-way: two-way sync of files and objects is not built", spec.id.task),
            fix: "make it one-way (mode = \"one-way\"); to move writes to the other side, use `ferry cutover`".into(),
        }
        .into());
    }
    // A source's `.ferry/` is ferry's (it was a target once, or the other direction of a
    // cut-over task writes there): never copied, or it would land on the target's own.
    let source = registry::open_blob_source(&spec.source, true).await?;
    let sink = registry::open_blob_sink(&spec.target).await?;
    let kind = registry::store(&spec.target)?.position_kind();
    let caps = sink.caps();
    let (uploads, throttle) = (Uploads::default(), Arc::new(Throttle::new(spec.max_bytes_per_sec)));
    let share = BigShare {
        uploads: uploads.clone(),
        throttle: throttle.clone(),
        stop: shutdown.clone(),
        direction: spec.id.to_string(),
    };
    let mut r = Runner {
        spec,
        metrics,
        shutdown,
        progressed,
        caps,
        source,
        sink,
        kind,
        tenure: Tenure::new(&spec.node_id, spec.lease_floor, held),
        lanes: Lanes::new(spec.workers.max(1) as usize, &spec.source, &spec.target),
        big: Lanes::big(BIG_LANES, &spec.source, &spec.target, share),
        uploads,
        throttle,
        batch: Vec::new(),
        batch_bytes: 0,
        big_queue: VecDeque::new(),
        big_inflight: Vec::new(),
        defer_big: false,
        to_record: Vec::new(),
        metas: Vec::new(),
        dir_times: Vec::new(),
        cp: BlobCheckpoint::default(),
        failed: Vec::new(),
        copied: 0,
        deleted: 0,
        changes: 0,
    };
    let result = r.run().await;
    if r.tenure.me.fencing != 0 {
        let _ = r.sink.release(&spec.id, &r.tenure.me).await;
    }
    result
}

/// Copies one blob from a source to a sink outside a running direction (verify's
/// repair): begin, read and write, finish under `fencing`.
pub async fn copy_one<S: BlobSource, K: BlobSink>(
    source: &mut S,
    sink: &mut K,
    dir: &DirectionId,
    meta: &BlobMeta,
    fencing: i64,
) -> Result<(), ConnectorError> {
    let mut upload = sink.begin(meta, None).await?;
    let mut h = Hasher::new(sink.caps().md5);
    if let Err(e) = fill(source, sink, meta, &mut upload, &mut h, &dir.from).await {
        sink.abort(&upload).await?;
        return Err(e);
    }
    sink.finish(dir, upload, meta, &h.finish(), fencing).await
}

/// A source file that became shorter while it was read.
pub fn changed(endpoint: &str, path: &str) -> ConnectorError {
    ConnectorError::Blob {
        endpoint: endpoint.to_string(),
        what: "changed while being copied:".into(),
        path: path.to_string(),
        source: Box::new(std::io::Error::other("the file became shorter than when it was listed")),
        kind: ErrorKind::Runtime,
        fix: Some("nothing to do: it is copied again when it stops changing".into()),
    }
}

/// BLAKE3 and (unless told not to) MD5 at once.
pub struct Hasher {
    b3: blake3::Hasher,
    md5: Option<md5_many::Md5>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new(true)
    }
}

impl Hasher {
    /// BLAKE3, and MD5 with `md5`.
    pub fn new(md5: bool) -> Hasher {
        use md5_many::Digest;
        Hasher { b3: blake3::Hasher::new(), md5: md5.then(md5_many::Md5::new) }
    }
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        use md5_many::Digest;
        self.b3.update(data);
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
    }
    /// The digests, hex (MD5 empty when not computed).
    pub fn finish(self) -> BlobHashes {
        use md5_many::Digest;
        let md5 = self.md5.map(|m| hex(&m.finalize())).unwrap_or_default();
        BlobHashes { blake3: self.b3.finalize().to_hex().to_string(), md5 }
    }
}

/// Small blobs read and hashed as one group (one read of the source, their MD5s side by
/// side in SIMD lanes), and the most bytes of a group.
pub const GROUP: usize = 64;
/// See [`GROUP`].
pub const GROUP_BYTES: u64 = 8 << 20;

/// A group off a queue: `first`, then what is queued already, up to [`GROUP`] blobs
/// or [`GROUP_BYTES`] (`size` says a job's bytes).
pub fn take_group<T>(queue: &mut tokio::sync::mpsc::Receiver<T>, first: T, size: impl Fn(&T) -> u64) -> Vec<T> {
    let mut bytes = size(&first);
    let mut group = vec![first];
    while group.len() < GROUP && bytes < GROUP_BYTES {
        let Ok(next) = queue.try_recv() else { break };
        bytes += size(&next);
        group.push(next);
    }
    group
}

/// Where each blob of a group read one after the other into one buffer (what
/// [`BlobSource::read_many`](crate::connector::blob::BlobSource::read_many) gives: `lens`,
/// for blobs of `sizes`) lies in it, for those read whole; `None` for an error or a short
/// read, which is for the blob's own read to find and report.
pub fn whole_ranges(
    lens: &[Result<u64, ConnectorError>],
    sizes: impl IntoIterator<Item = u64>,
) -> Vec<Option<std::ops::Range<usize>>> {
    let mut at = 0usize;
    lens.iter()
        .zip(sizes)
        .map(|(len, size)| {
            let n = *len.as_ref().unwrap_or(&0) as usize;
            let range = at..at + n;
            at += n;
            (len.is_ok() && n as u64 == size).then_some(range)
        })
        .collect()
}

/// The MD5s (hex) of the blobs read whole into `read` (at `whole`, from
/// [`whole_ranges`]), hashed side by side in SIMD lanes; `None` for the others.
pub fn md5_group(
    engine: md5_many::Md5Many,
    read: &[u8],
    whole: &[Option<std::ops::Range<usize>>],
) -> Vec<Option<String>> {
    let inputs: Vec<&[u8]> = whole.iter().flatten().map(|r| &read[r.clone()]).collect();
    let mut outs = vec![[0u8; 16]; inputs.len()];
    engine.hash_many(&inputs, &mut outs);
    let mut outs = outs.into_iter();
    whole.iter().map(|r| r.as_ref().and_then(|_| outs.next().map(|o| hex(&o)))).collect()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sorted stream read a page at a time.
struct Pager<T> {
    buf: std::collections::VecDeque<T>,
    after: Option<String>,
    done: bool,
}

impl<T> Pager<T> {
    fn new(after: Option<String>) -> Self {
        Pager { buf: Default::default(), after, done: false }
    }
    fn fill(&mut self, page: Vec<T>, path: impl Fn(&T) -> &str) {
        self.done = page.len() < PAGE;
        if let Some(last) = page.last() {
            self.after = Some(path(last).to_string());
        }
        self.buf.extend(page);
    }
}

/// The source's folders a pass's walk is inside, each with whether its mtime is due
/// (the target's differed, or something in it changed): writing into a folder changes
/// its mtime, so it is set only once the walk has left it and what it holds has landed.
#[derive(Default)]
struct FolderTimes {
    open: Vec<(BlobMeta, bool)>,
}

impl FolderTimes {
    /// Moves the walk to `path` (source `s`, target `t`): the folders it has left go to
    /// `due` if they are; a change at `path` (`touched`) makes the folder holding it due;
    /// a folder is entered.
    fn step(&mut self, path: &str, s: Option<&BlobMeta>, t: Option<&BlobMeta>, touched: bool, due: &mut Vec<BlobMeta>) {
        while self.open.last().is_some_and(|(d, _)| !path.starts_with(d.path.as_str())) {
            if let Some((d, true)) = self.open.pop() {
                due.push(d);
            }
        }
        if touched && let Some((_, d)) = self.open.last_mut() {
            *d = true;
        }
        if let Some(s) = s.filter(|s| s.kind == BlobKind::Dir) {
            self.open.push((s.clone(), t.is_none_or(|t| t.mtime_ns != s.mtime_ns)));
        }
    }

    /// The walk's end: the folders still open that are due, deepest first.
    fn close(self, due: &mut Vec<BlobMeta>) {
        due.extend(self.open.into_iter().rev().filter(|(_, d)| *d).map(|(d, _)| d));
    }
}

struct Runner<'a, S, K> {
    spec: &'a DirectionSpec,
    metrics: &'a Arc<DirectionMetrics>,
    shutdown: &'a CancellationToken,
    progressed: &'a AtomicBool,
    caps: BlobCaps,
    source: S,
    sink: K,
    kind: &'static str,
    tenure: Tenure<'a>,
    /// Where small copies are prepared, several at once.
    lanes: Lanes,
    /// Where big copies are made, several at once, beside the small ones.
    big: Lanes,
    /// Their partial writes, checkpointed.
    uploads: Uploads,
    /// The direction's byte rate limit, shared with the big lanes.
    throttle: Arc<Throttle>,
    /// Small copies submitted to the lanes, in path order, not yet visible; their
    /// bytes.
    batch: Vec<(BlobMeta, Found, Reply)>,
    batch_bytes: u64,
    /// Big files waiting for a big lane (a resumed one with its partial write).
    big_queue: VecDeque<(BlobMeta, Option<BlobUpload>, Found)>,
    /// Big copies handed to the big lanes, not yet visible (at most [`BIG_INFLIGHT`]);
    /// each is made visible as soon as it is ready.
    big_inflight: Vec<(BlobMeta, Found, Reply)>,
    /// Set while a pass lists: it goes on while big copies are made.
    defer_big: bool,
    /// Manifest lines of paths found identical without a copy, recorded together.
    to_record: Vec<ManifestEntry>,
    /// Folders and links to make, made together before the queued copies land.
    metas: Vec<BlobMeta>,
    /// Folders whose mtime is set to the source's once what they hold has landed
    /// (writing into a folder changes its mtime).
    dir_times: Vec<BlobMeta>,
    cp: BlobCheckpoint,
    /// Source paths that could not be read in this pass, with why.
    failed: Vec<String>,
    /// Files copied and paths deleted in this pass.
    copied: u64,
    deleted: u64,
    /// Changes carried (copies, metadata, deletes) since the pass began.
    changes: u64,
}

/// What found a change, for the log.
#[derive(Debug, Clone, Copy)]
enum Found {
    Rescan,
    Watch,
    Resume,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Found::Rescan => "rescan",
            Found::Watch => "watch",
            Found::Resume => "resume",
        })
    }
}

impl<S: BlobSource, K: BlobSink> Runner<'_, S, K> {
    async fn run(&mut self) -> Result<(), EngineError> {
        let id = self.spec.id.clone();
        self.metrics.set_state(DirectionState::Starting);
        self.sink.prepare().await?;
        if !self.take_lease().await? {
            return Ok(());
        }
        self.cp = self.sink.load_checkpoint(&id).await?.unwrap_or_default();
        // Watching starts before the pass, so nothing changed during it is missed; a
        // `--once` run ends with its pass and watches nothing (a recursive watch stats
        // every path of the tree once more).
        if !self.spec.once {
            let _ = self.source.hints().await?;
        }
        // Partial writes resumed side by side; each stays checkpointed until it lands.
        for u in std::mem::take(&mut self.cp.uploads) {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.source.stat(&u.path).await? {
                Some(m) if m.kind == BlobKind::File && m.size == u.size && m.mtime_ns == u.mtime_ns => {
                    self.uploads.put(&u);
                    self.big_queue.push_back((m, Some(u), Found::Resume));
                }
                _ => {
                    info!(direction = %id, path = %u.path, "the source changed since its copy stopped; starting it over");
                    self.sink.abort(&u).await?;
                }
            }
        }
        if !self.big_wait().await? {
            return Ok(());
        }
        loop {
            if !self.pass().await? {
                return Ok(());
            }
            if self.spec.once {
                if let Some(first) = self.failed.first() {
                    return Err(ConnectorError::Blob {
                        endpoint: self.spec.source.name.clone(),
                        what: format!("{} path(s) could not be copied; the first:", self.failed.len()).into(),
                        path: String::new(),
                        source: Box::new(std::io::Error::other(first.clone())),
                        kind: ErrorKind::Setup,
                        fix: Some(
                            "fix those paths (see the log for each) and run again: only what differs is copied".into(),
                        ),
                    }
                    .into());
                }
                return Ok(());
            }
            if !self.watch().await? {
                return Ok(());
            }
        }
    }

    async fn take_lease(&mut self) -> Result<bool, EngineError> {
        self.tenure.begin();
        loop {
            let outcome = self.sink.lease(&self.spec.id, &self.tenure.me, LEASE_TTL).await?;
            if self.tenure.taken(&self.spec.id, outcome, self.metrics)? {
                return Ok(true);
            }
            if !lease::wait(self.shutdown).await {
                return Ok(false);
            }
        }
    }

    async fn keep_lease(&mut self) -> Result<(), EngineError> {
        if !self.tenure.due() {
            return Ok(());
        }
        let outcome = self.sink.lease(&self.spec.id, &self.tenure.me, LEASE_TTL).await?;
        self.tenure.renewed(&self.spec.id, outcome)
    }

    /// Checkpoints the big copies' partial writes, if they moved since the last save (a
    /// crash then resumes them from there).
    async fn save_uploads(&mut self) -> Result<(), EngineError> {
        if self.uploads.behind() {
            self.save().await?;
            self.keep_lease().await?;
        }
        Ok(())
    }

    async fn save(&mut self) -> Result<(), EngineError> {
        self.cp.uploads = self.uploads.for_checkpoint();
        self.sink.save_checkpoint(&self.spec.id, &self.cp, self.tenure.me.fencing).await?;
        Ok(())
    }

    fn counted(&mut self, first_pass: bool) {
        self.changes += 1;
        self.cp.changed_us = Some(now_micros());
        let pos = blob::position(self.kind, &self.cp);
        if first_pass {
            self.metrics.applied(0, 0, 1, 0, &pos)
        } else {
            self.metrics.applied(1, 1, 0, 0, &pos)
        }
        self.progressed.store(true, AtomicOrdering::Relaxed);
    }

    /// One full pass from the checkpointed position; `false` when stopped.
    async fn pass(&mut self) -> Result<bool, EngineError> {
        let id = self.spec.id.clone();
        let globs = self.spec.tables.clone();
        let began = now_micros();
        let first = self.cp.passes == 0;
        self.failed.clear();
        (self.copied, self.deleted, self.changes) = (0, 0, 0);
        if self.cp.scan_after.is_none() || self.cp.pass_began_us.is_none() {
            self.cp.pass_began_us = Some(began);
        }
        self.metrics.set_state(DirectionState::Snapshotting(format!("pass {}", self.cp.passes + 1)));
        if let Some(at) = &self.cp.scan_after {
            info!(direction = %id, after = %at, "resuming the pass where it stopped");
        }
        let start = self.cp.scan_after.clone();
        let mut src: Pager<BlobMeta> = Pager::new(start.clone());
        let mut dst: Pager<BlobMeta> = Pager::new(start.clone());
        let mut man: Pager<ManifestEntry> = Pager::new(start.clone());
        // Folders gone from the source, deleted once the walk has left them (after
        // what they held).
        let mut gone_dirs: Vec<String> = Vec::new();
        // Folder mtimes, on a target that lists folders and keeps mtimes.
        let mut folders = (self.caps.tree && self.caps.keeps_mtime).then(FolderTimes::default);
        let mut last_save = Instant::now();
        // The position saved while big files wait: the path listed before the first of
        // them (a restart lists them again; what was copied after them is found equal).
        let (mut prev, mut hold): (Option<String>, Option<Option<String>>) = (start.clone(), None);
        self.defer_big = true;
        loop {
            if self.shutdown.is_cancelled() {
                // The small copies under way are finished, so none is done twice; the big
                // ones stop where they are; the checkpoint records both.
                self.flush(0).await?;
                return self.big_wait().await;
            }
            if dst.buf.is_empty() && !dst.done {
                // Both trees walked at once (two folders' worth of stat calls in flight),
                // and the manifest's next page read beside them while it is short.
                let (source, sink) = (&mut self.source, &mut self.sink);
                let man_page = (!man.done && man.buf.len() < PAGE).then_some((&id, man.after.as_deref()));
                let want_src = src.buf.is_empty() && !src.done;
                let (a, b) = tokio::join!(
                    async {
                        match want_src {
                            true => Some(source.list(&globs, src.after.as_deref(), PAGE).await),
                            false => None,
                        }
                    },
                    sink.list_with_manifest(&globs, dst.after.as_deref(), man_page, PAGE)
                );
                if let Some(a) = a {
                    src.fill(a?, |m| &m.path);
                }
                let (b, m) = b?;
                dst.fill(b, |m| &m.path);
                if let Some(m) = m {
                    man.fill(m, |m| &m.path);
                }
            }
            if src.buf.is_empty() && !src.done {
                let page = self.source.list(&globs, src.after.as_deref(), PAGE).await?;
                src.fill(page, |m| &m.path);
            }
            if dst.buf.is_empty() && !dst.done {
                let page = self.sink.list(&globs, dst.after.as_deref(), PAGE).await?;
                dst.fill(page, |m| &m.path);
            }
            if man.buf.is_empty() && !man.done {
                let page = self.sink.manifest(&id, man.after.as_deref(), PAGE).await?;
                man.fill(page, |m| &m.path);
            }
            let next =
                [src.buf.front().map(|m| &m.path), dst.buf.front().map(|m| &m.path), man.buf.front().map(|m| &m.path)]
                    .into_iter()
                    .flatten()
                    .min()
                    .cloned();
            let Some(path) = next else { break };
            let s = src.buf.front().is_some_and(|m| m.path == path).then(|| src.buf.pop_front()).flatten();
            let t = dst.buf.front().is_some_and(|m| m.path == path).then(|| dst.buf.pop_front()).flatten();
            let m = man.buf.front().is_some_and(|m| m.path == path).then(|| man.buf.pop_front()).flatten();
            while let Some(d) = gone_dirs.last() {
                if path.starts_with(d.as_str()) {
                    break;
                }
                let d = gone_dirs.pop().unwrap_or_default();
                self.sink.delete(&id, &d, self.tenure.me.fencing).await?;
                self.deleted += 1;
                self.counted(first);
            }
            if let Some(folders) = folders.as_mut() {
                // Whatever changes here changes the folder holding it.
                let touched = match (&s, &t) {
                    (Some(s), t) => !self.up_to_date(s, t.as_ref(), m.as_ref()),
                    (None, Some(_)) => true,
                    (None, None) => false,
                };
                folders.step(&path, s.as_ref(), t.as_ref(), touched, &mut self.dir_times);
                if self.dir_times.len() >= BATCH && self.big_pending() == 0 {
                    self.set_dir_times().await?;
                }
            }
            match (s, t) {
                (Some(s), t) => {
                    // Every folder left on the stack holds this source path: not gone, only
                    // unlisted (object stores list no folders).
                    gone_dirs.clear();
                    let waiting = self.big_pending();
                    if !self.handle(&s, t.as_ref(), m.as_ref(), Found::Rescan).await? {
                        return Ok(false);
                    }
                    if waiting == 0 && self.big_pending() > 0 {
                        hold = Some(prev.clone());
                    }
                }
                (None, Some(t)) if t.kind == BlobKind::Dir => gone_dirs.push(t.path),
                (None, Some(t)) => {
                    info!(direction = %id, path = %t.path, found_by = %Found::Rescan, "deleting: gone from the source");
                    self.sink.delete(&id, &t.path, self.tenure.me.fencing).await?;
                    self.deleted += 1;
                    self.counted(first);
                }
                (None, None) => {
                    if blob::matches(&globs, &path) {
                        self.sink.delete(&id, &path, self.tenure.me.fencing).await?;
                    }
                }
            }
            if self.big_pending() > 0 {
                // A stop is seen at the top of the loop, which checkpoints.
                self.big_pump().await?;
                self.save_uploads().await?;
            }
            if last_save.elapsed() >= SAVE_EVERY {
                // The position moves past a path only once its copy is visible.
                self.flush(0).await?;
                if self.big_pending() == 0 {
                    hold = None;
                }
                self.cp.scan_after = hold.clone().unwrap_or_else(|| Some(path.clone()));
                self.save().await?;
                self.keep_lease().await?;
                last_save = Instant::now();
            }
            prev = Some(path);
        }
        self.flush(0).await?;
        self.defer_big = false;
        if let Some(at) = hold {
            self.cp.scan_after = at;
        }
        if !self.big_wait().await? {
            return Ok(false);
        }
        while let Some(d) = gone_dirs.pop() {
            self.sink.delete(&id, &d, self.tenure.me.fencing).await?;
            self.deleted += 1;
            self.counted(first);
        }
        if let Some(folders) = folders {
            folders.close(&mut self.dir_times);
        }
        self.set_dir_times().await?;
        self.cp.scan_after = None;
        self.cp.passes += 1;
        self.cp.done_began_us = self.cp.pass_began_us.take();
        self.cp.done_changes = self.changes;
        self.cp.done_failed = self.failed.len() as u64;
        self.save().await?;
        self.metrics.heartbeat_applied(began);
        self.metrics.set_behind(Some(self.failed.len() as u64));
        info!(direction = %id, pass = self.cp.passes, copied = self.copied, deleted = self.deleted, failed = self.failed.len(), "pass done");
        Ok(true)
    }

    /// Between passes: change hints until the next rescan; `false` when stopped.
    async fn watch(&mut self) -> Result<bool, EngineError> {
        let id = self.spec.id.clone();
        self.metrics.set_state(DirectionState::Streaming);
        let rescan_at = Instant::now() + self.spec.rescan;
        let mut frozen_check = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(POLL) => {}
            }
            self.keep_lease().await?;
            let now = now_micros();
            let mut hints = self.source.hints().await?;
            if !hints.is_empty() {
                // A burst (a copy being written, many files at once): take it whole.
                tokio::time::sleep(POLL).await;
                hints.extend(self.source.hints().await?);
            }
            if hints.contains(&BlobHint::Rescan) {
                info!(direction = %id, "too many changes for the watch to follow (its queue overflowed): rescanning");
                return Ok(true);
            }
            // A rename arrives as its two ends and as a pair: the pair carries it.
            let renamed: HashSet<String> = hints
                .iter()
                .filter_map(|h| match h {
                    BlobHint::Renamed { from, .. } => Some(from.clone()),
                    _ => None,
                })
                .collect();
            hints.retain(|h| !matches!(h, BlobHint::Removed(p) if renamed.contains(p)));
            hints.sort_by_key(|h| !matches!(h, BlobHint::Renamed { .. }));
            let before = self.changes;
            let mut seen = HashSet::new();
            for h in hints {
                if !seen.insert(format!("{h:?}")) {
                    continue;
                }
                if !self.hint(h).await? {
                    return Ok(false);
                }
            }
            self.flush(0).await?;
            if self.changes > before {
                // A cutover's drain reads when the last change was carried.
                self.save().await?;
            }
            self.metrics.heartbeat_applied(now);
            if Instant::now() >= rescan_at {
                info!(direction = %id, "periodic rescan");
                return Ok(true);
            }
            if frozen_check.elapsed() >= FROZEN_CHECK {
                frozen_check = Instant::now();
                if drain_pass_due(self.spec, &self.cp).await {
                    info!(direction = %id, "the source is frozen for a cutover: rescanning to drain it");
                    return Ok(true);
                }
            }
        }
    }

    async fn hint(&mut self, h: BlobHint) -> Result<bool, EngineError> {
        let id = self.spec.id.clone();
        match h {
            BlobHint::Rescan => Ok(true),
            BlobHint::Renamed { from, to } => {
                // Copies queued for either end land first.
                self.flush(0).await?;
                if blob::matches(&self.spec.tables, &to)
                    && blob::matches(&self.spec.tables, &from)
                    && let Some(s) = self.source.stat(&to).await?
                    && let Some(t) = self.sink.stat(&from).await?
                    && self.sink.stat(&to).await?.is_none()
                    && s.kind == t.kind
                    && (s.kind == BlobKind::Dir || (s.size == t.size && s.mtime_ns == t.mtime_ns))
                    && self.sink.rename(&id, &from, &to, self.tenure.me.fencing).await?
                {
                    info!(direction = %id, from = %from, to = %to, found_by = %Found::Watch, "renamed");
                    self.counted(false);
                    return Ok(true);
                }
                if !Box::pin(self.hint(BlobHint::Removed(from))).await? {
                    return Ok(false);
                }
                Box::pin(self.hint(BlobHint::Changed(to))).await
            }
            BlobHint::Changed(p) | BlobHint::Removed(p) => {
                match self.source.stat(&p).await? {
                    Some(s) => {
                        if !blob::matches(&self.spec.tables, &s.path) {
                            return Ok(true);
                        }
                        let t = self.sink.stat(&s.path).await?;
                        let fresh_dir = s.kind == BlobKind::Dir && t.is_none();
                        let m = if self.caps.keeps_mtime { None } else { self.sink.entry(&id, &s.path).await? };
                        if !self.handle(&s, t.as_ref(), m.as_ref(), Found::Watch).await? {
                            return Ok(false);
                        }
                        if fresh_dir {
                            // What was put in it before the watch reached it.
                            return self.scan_under(&s.path).await;
                        }
                        Ok(true)
                    }
                    None => {
                        // A copy queued for it lands before the delete.
                        self.flush(0).await?;
                        let p = p.trim_end_matches('/');
                        let t = match self.sink.stat(p).await? {
                            Some(t) => Some(t),
                            None => self.sink.stat(&format!("{p}/")).await?,
                        };
                        if let Some(t) = t
                            && blob::matches(&self.spec.tables, &t.path)
                        {
                            info!(direction = %id, path = %t.path, found_by = %Found::Watch, "deleting: gone from the source");
                            // A folder goes with what it holds.
                            self.sink.delete(&id, t.path.trim_end_matches('/'), self.tenure.me.fencing).await?;
                            self.counted(false);
                        }
                        Ok(true)
                    }
                }
            }
        }
    }

    /// Copies what a new folder holds.
    async fn scan_under(&mut self, prefix: &str) -> Result<bool, EngineError> {
        let globs = self.spec.tables.clone();
        let mut after = Some(prefix.to_string());
        loop {
            let page = self.source.list(&globs, after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE;
            for s in page {
                if !s.path.starts_with(prefix) {
                    return Ok(true);
                }
                after = Some(s.path.clone());
                let t = self.sink.stat(&s.path).await?;
                if !self.handle(&s, t.as_ref(), None, Found::Watch).await? {
                    return Ok(false);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// Whether the target holds what the source states.
    fn up_to_date(&self, s: &BlobMeta, t: Option<&BlobMeta>, m: Option<&ManifestEntry>) -> bool {
        let same_mode = |t: &BlobMeta| match (s.mode, t.mode) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        match s.kind {
            BlobKind::Dir | BlobKind::Link if !self.caps.tree => true,
            BlobKind::Dir => t.is_some_and(|t| t.kind == BlobKind::Dir && same_mode(t)),
            BlobKind::Link => t.is_some_and(|t| t.kind == BlobKind::Link && t.link == s.link),
            BlobKind::File => {
                let Some(t) = t.filter(|t| t.kind == BlobKind::File && t.size == s.size) else { return false };
                if self.caps.keeps_mtime {
                    return t.mtime_ns == s.mtime_ns && same_mode(t);
                }
                match m {
                    Some(m) => holds(s, t, m) && same_mode(t),
                    // A target filled before ferry: same size and not older.
                    None => t.mtime_ns >= s.mtime_ns,
                }
            }
        }
    }

    /// Brings one path to the source's state; `false` when stopped mid-copy.
    async fn handle(
        &mut self,
        s: &BlobMeta,
        t: Option<&BlobMeta>,
        m: Option<&ManifestEntry>,
        found: Found,
    ) -> Result<bool, EngineError> {
        if self.up_to_date(s, t, m) {
            // A line the manifest lacks (a target filled before ferry, or a crash between
            // a rename and its transaction's commit). A watch reads no manifest where the
            // target keeps mtimes: only a rescan knows a line is missing there.
            if m.is_none()
                && s.kind == BlobKind::File
                && (!self.caps.keeps_mtime || matches!(found, Found::Rescan))
                && let Some(t) = t
            {
                let stat = self.caps.keeps_mtime.then(|| format!("{}:{}", t.size, t.mtime_ns));
                self.to_record.push(ManifestEntry {
                    path: s.path.clone(),
                    size: s.size,
                    mtime_ns: s.mtime_ns,
                    mode: s.mode,
                    hashes: None,
                    target: t.etag.clone().or(stat),
                });
                if self.to_record.len() >= BATCH {
                    self.record_pending().await?;
                }
            }
            return Ok(true);
        }
        let first = self.cp.passes == 0;
        match s.kind {
            BlobKind::Dir | BlobKind::Link => {
                self.metas.push(s.clone());
                if self.metas.len() >= BATCH {
                    self.flush(0).await?;
                }
                Ok(true)
            }
            BlobKind::File => {
                // Only the mode differs: the content is the source's (by the target's
                // stat, or by the manifest where the target cannot keep the mtime).
                let meta_only = t.is_some_and(|t| {
                    t.kind == BlobKind::File
                        && t.size == s.size
                        && if self.caps.keeps_mtime {
                            t.mtime_ns == s.mtime_ns
                        } else {
                            m.is_some_and(|m| holds(s, t, m))
                        }
                });
                if meta_only {
                    info!(direction = %self.spec.id, path = %s.path, found_by = %found, "mode changed");
                    self.sink.put_meta(&self.spec.id, s, self.tenure.me.fencing).await?;
                    self.counted(first);
                    return Ok(true);
                }
                if s.size < RESUMABLE {
                    self.enqueue(s, found).await?;
                    return Ok(true);
                }
                info!(direction = %self.spec.id, path = %s.path, size = s.size, found_by = %found, "copying");
                self.big_queue.push_back((s.clone(), None, found));
                if !self.defer_big {
                    return self.big_wait().await;
                }
                // A stop is seen where the pass lists the next path, which checkpoints.
                while self.big_queue.len() > MAX_DEFERRED && !self.shutdown.is_cancelled() {
                    self.big_land_next().await?;
                }
                self.big_pump().await?;
                Ok(true)
            }
        }
    }

    /// Big files listed or resumed and not yet visible.
    fn big_pending(&self) -> usize {
        self.big_queue.len() + self.big_inflight.len()
    }

    /// Makes the big copies that are ready visible and hands waiting big files to the
    /// lanes (none once the direction stops).
    async fn big_pump(&mut self) -> Result<(), EngineError> {
        let mut i = 0;
        while i < self.big_inflight.len() {
            match self.big_inflight[i].2.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => i += 1,
                r => {
                    let (s, found, _) = self.big_inflight.swap_remove(i);
                    self.land(&s, found, r.unwrap_or_else(|_| Err(self.big.stopped()))).await?;
                }
            }
        }
        if self.shutdown.is_cancelled() {
            // What waits is listed again by the next pass (or resumed, if it had begun).
            self.big_queue.clear();
            return Ok(());
        }
        while self.big_inflight.len() < BIG_INFLIGHT
            && let Some((s, resume, found)) = self.big_queue.pop_front()
        {
            let reply = self.big.submit(s.clone(), resume).await?;
            self.big_inflight.push((s, found, reply));
        }
        Ok(())
    }

    /// Waits for the next big copy to be ready and makes it visible, renewing the lease
    /// and checkpointing the big copies' progress meanwhile.
    async fn big_land_next(&mut self) -> Result<(), EngineError> {
        self.big_pump().await?;
        if self.big_inflight.is_empty() {
            return Ok(());
        }
        // When stopping, the copies in flight are still waited for (they answer soon).
        let (i, answer) = loop {
            let ready = futures_util::future::select_all(self.big_inflight.iter_mut().map(|(_, _, r)| r));
            tokio::select! {
                (r, i, _) = ready => break (i, r.unwrap_or_else(|_| Err(self.big.stopped()))),
                _ = self.uploads.recorded() => self.save_uploads().await?,
                _ = tokio::time::sleep(BIG_TICK) => self.keep_lease().await?,
            }
        };
        let (s, found, _) = self.big_inflight.swap_remove(i);
        self.land(&s, found, answer).await?;
        self.big_pump().await
    }

    /// Makes every big copy listed or resumed visible; `false` when the direction
    /// stops: those under way then stop where they are, checkpointed.
    async fn big_wait(&mut self) -> Result<bool, EngineError> {
        while self.big_pending() > 0 {
            self.big_land_next().await?;
        }
        if self.shutdown.is_cancelled() {
            self.save().await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Makes a big copy visible; a source that could not be read is named and left for
    /// the next pass. A copy stopped by the direction's shutdown (`None`) is recorded
    /// in [`Uploads`] by its lane.
    async fn land(&mut self, s: &BlobMeta, found: Found, answer: Answer) -> Result<(), EngineError> {
        match answer {
            Ok(Some(p)) => {
                let Prepared { upload, hashes, held } = p;
                self.sink.take_over(&upload, held);
                self.sink.finish(&self.spec.id, upload, s, &hashes, self.tenure.me.fencing).await?;
                self.copied += 1;
                if self.uploads.remove(&s.path) {
                    self.save().await?;
                }
                self.counted(self.cp.passes == 0);
            }
            Ok(None) => {}
            Err(e @ ConnectorError::Blob { .. }) if e_is_source(&e, &self.spec.source.name) => {
                warn!(direction = %self.spec.id, path = %s.path, found_by = %found, error = %e, "cannot copy; left for the next pass");
                self.metrics.error(e.to_string());
                self.failed.push(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Queues a small copy for the lanes; makes the oldest queued copies visible when a
    /// batch's worth more is queued behind them (so the lanes work on while they land).
    async fn enqueue(&mut self, s: &BlobMeta, found: Found) -> Result<(), EngineError> {
        if matches!(found, Found::Watch) {
            info!(direction = %self.spec.id, path = %s.path, size = s.size, found_by = %found, "copying");
        }
        let reply = self.lanes.submit(s.clone(), None).await?;
        self.batch.push((s.clone(), found, reply));
        self.batch_bytes += s.size;
        if self.batch_bytes >= BATCH_BYTES {
            self.flush(0).await?;
        } else if self.batch.len() >= 2 * BATCH {
            self.flush(BATCH).await?;
        }
        Ok(())
    }

    /// Makes the queued copies visible but the newest `keep`, in one fenced step; a
    /// source that could not be read is named and left for the next pass.
    async fn flush(&mut self, keep: usize) -> Result<(), EngineError> {
        if keep == 0 {
            self.record_pending().await?;
        }
        if !self.metas.is_empty() {
            // Folders first: the copies below land in them.
            let metas = std::mem::take(&mut self.metas);
            let n = metas.len();
            self.sink.put_meta_many(&self.spec.id, metas, self.tenure.me.fencing).await?;
            let first = self.cp.passes == 0;
            for _ in 0..n {
                self.counted(first);
            }
        }
        if self.batch.len() <= keep {
            return Ok(());
        }
        let rest = self.batch.split_off(self.batch.len() - keep);
        let due = std::mem::replace(&mut self.batch, rest);
        let mut ready = Vec::with_capacity(due.len());
        let mut failure = None;
        for (s, _found, reply) in due {
            self.batch_bytes -= s.size.min(self.batch_bytes);
            match self.lanes.answer(reply).await {
                Ok(Some(p)) => ready.push((s, p)),
                // Only a big lane answers without a copy: a small one that did would
                // leave the pass moving past a path never copied.
                Ok(None) => {
                    failure.get_or_insert(self.lanes.stopped());
                }
                Err(e) if e_is_source(&e, &self.spec.source.name) => {
                    warn!(direction = %self.spec.id, path = %s.path, error = %e, "cannot copy; left for the next pass");
                    self.metrics.error(e.to_string());
                    self.failed.push(e.to_string());
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let mut items = Vec::with_capacity(ready.len());
        let mut bytes = 0;
        for (s, p) in ready {
            self.sink.take_over(&p.upload, p.held);
            if failure.is_some() {
                self.sink.abort(&p.upload).await?;
                continue;
            }
            bytes += s.size;
            items.push(Finished { upload: p.upload, source: s, hashes: p.hashes });
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        let n = items.len();
        self.sink.finish_many(&self.spec.id, items, self.tenure.me.fencing).await?;
        self.copied += n as u64;
        let first = self.cp.passes == 0;
        for _ in 0..n {
            self.counted(first);
        }
        self.throttle.wait(bytes, self.shutdown).await;
        self.keep_lease().await?;
        Ok(())
    }

    /// Gives the folders due their source's mtime, once the copies queued in them have
    /// landed (a stop before leaves them to the next pass, which finds them differing).
    async fn set_dir_times(&mut self) -> Result<(), EngineError> {
        if self.dir_times.is_empty() {
            return Ok(());
        }
        self.flush(0).await?;
        let dirs = std::mem::take(&mut self.dir_times);
        self.sink.put_meta_many(&self.spec.id, dirs, self.tenure.me.fencing).await?;
        Ok(())
    }

    /// Records the pending manifest lines in one fenced transaction.
    async fn record_pending(&mut self) -> Result<(), EngineError> {
        if self.to_record.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.to_record);
        let (id, fencing) = (self.spec.id.clone(), self.tenure.me.fencing);
        let st = self.sink.state().await?;
        st.begin_fenced(&id, fencing).await?;
        let mut step = Ok(());
        for e in &entries {
            step = st.put_entry(&id, e).await;
            if step.is_err() {
                break;
            }
        }
        st.end(step).await?;
        Ok(())
    }
}

/// Whether the source is frozen (a cutover) and a full pass is due to prove it drained:
/// none began since the freeze, or the last one carried a change (or could not copy a
/// path), or a change came after it, and the quiet time since the last change passed.
async fn drain_pass_due(spec: &DirectionSpec, cp: &BlobCheckpoint) -> bool {
    let Ok(Some(frozen)) = registry::frozen_since(&spec.source).await else { return false };
    let quiet = i64::try_from(spec.quiet_seconds).unwrap_or(0).saturating_mul(1_000_000);
    if cp.drained(frozen, quiet) {
        return false;
    }
    now_micros() >= cp.changed_us.unwrap_or(0).saturating_add(quiet)
}

/// Whether a target file holds the source's content by the manifest: it records the
/// source's size and mtime as copied, and the target's stat (or ETag) is still the one
/// recorded after the write. A store whose listing gives no ETag (s3s-fs) is taken at
/// the manifest's word and the size (the caller checks it): a same-size rewrite behind
/// ferry's back there is found by `ferry verify`, not by a pass.
pub fn holds(s: &BlobMeta, t: &BlobMeta, m: &ManifestEntry) -> bool {
    m.size == s.size && m.mtime_ns == s.mtime_ns && (m.target.is_none() || t.etag.is_none() || m.target == t.etag)
}

/// Whether an error is about reading the source (a path to name and skip) rather than
/// writing the target (which stops the pass and is retried).
fn e_is_source(e: &ConnectorError, source: &str) -> bool {
    matches!(e, ConnectorError::Blob { endpoint, .. } if endpoint == source)
}

#[cfg(test)]
mod tests {
    use md5::Digest as _;

    use super::*;

    #[test]
    fn a_folder_is_due_once_left_when_its_time_differed_or_something_in_it_changed() {
        let meta = |path: &str, kind: BlobKind, mtime_ns: i64| BlobMeta {
            path: path.into(),
            kind,
            size: 0,
            mtime_ns,
            mode: None,
            owner: None,
            etag: None,
            link: None,
        };
        let (dir, file) = (BlobKind::Dir, BlobKind::File);
        let mut f = FolderTimes::default();
        let mut due = Vec::new();
        // (path, source, target, changed here)
        let walk = [
            ("a/", Some(meta("a/", dir, 5)), Some(meta("a/", dir, 5)), false),
            ("a/x", Some(meta("a/x", file, 1)), None, true),
            ("a/y", Some(meta("a/y", file, 1)), Some(meta("a/y", file, 1)), false),
            ("b/", Some(meta("b/", dir, 7)), Some(meta("b/", dir, 8)), false),
            ("b/c/", Some(meta("b/c/", dir, 9)), Some(meta("b/c/", dir, 9)), false),
            ("b/c/z", Some(meta("b/c/z", file, 1)), Some(meta("b/c/z", file, 1)), false),
            ("b/d/", Some(meta("b/d/", dir, 3)), Some(meta("b/d/", dir, 3)), false),
            ("b/d/gone", None, Some(meta("b/d/gone", file, 1)), true),
            ("b/e/", Some(meta("b/e/", dir, 4)), None, true),
        ];
        let mut seen = Vec::new();
        for (path, s, t, touched) in &walk {
            f.step(path, s.as_ref(), t.as_ref(), *touched, &mut due);
            seen.push(due.iter().map(|d| d.path.clone()).collect::<Vec<_>>());
        }
        // `a/` is due (a file was copied into it) once the walk left it, not before.
        assert_eq!(seen[2], Vec::<String>::new());
        assert_eq!(seen[3], ["a/"]);
        // `b/c/` held nothing changed and kept its time; `b/d/` lost a file.
        assert_eq!(seen[8], ["a/", "b/d/"]);
        f.close(&mut due);
        // Still open at the end, deepest first: the new `b/e/`, then `b/` (its time
        // differed, and `b/e/` was made in it).
        assert_eq!(due.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(), ["a/", "b/d/", "b/e/", "b/"]);
    }

    #[test]
    fn a_group_hashes_to_each_files_own_md5_and_leaves_out_what_was_not_read_whole() {
        // Lengths around MD5's 64-byte blocks and its 56-byte padding edge, and longer.
        let sizes = [0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 4096, 70_001, 1 << 20];
        let files: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(k, &n)| (0..n).map(|i| (i * 31 + k * 7) as u8).collect()).collect();
        let mut read = Vec::new();
        let mut lens = Vec::new();
        let mut wanted = Vec::new();
        for (k, f) in files.iter().enumerate() {
            wanted.push((format!("f{k}"), f.len() as u64));
            read.extend_from_slice(f);
            lens.push(Ok(f.len() as u64));
        }
        // One that could not be read, and one shorter than listed (it changed).
        wanted.push(("gone".into(), 10));
        lens.push(Err(ConnectorError::Setup { endpoint: "src".into(), problem: "gone".into(), fix: String::new() }));
        wanted.push(("shrunk".into(), 10));
        read.extend_from_slice(b"abc");
        lens.push(Ok(3));
        let whole = whole_ranges(&lens, wanted.iter().map(|(_, size)| *size));
        let sums = md5_group(md5_many::Md5Many::new(), &read, &whole);
        assert_eq!(sums.len(), wanted.len());
        for (k, f) in files.iter().enumerate() {
            let want = hex(&md5::Md5::digest(f));
            assert_eq!(sums[k].as_deref(), Some(want.as_str()), "file of {} bytes", f.len());
        }
        assert_eq!(sums[files.len()], None, "not read");
        assert_eq!(sums[files.len() + 1], None, "read short");
    }
}
