//! Verify of a blob task (files, objects): both sides listed in path order and merged;
//! every path that differs is named. Full mode reads every byte on both sides and
//! compares BLAKE3 hashes (trusting no cached hash), and checks a multipart ETag by
//! recomputing it with the part size ferry uses; quick mode compares size and mtime (a
//! target that keeps mtimes) or the manifest's record of the source state against the
//! target's ETag. `--manifest` writes an `md5sum -c` file of the source's content;
//! `--repair` copies or deletes what differs, under the direction's lease.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use md5::Digest as _;
use serde::Serialize;

use super::VerifyError;
use super::report::Report;
use crate::config::{Config, Task};
use crate::connector::blob::{BlobKind, BlobMeta, BlobSink, BlobSource, ManifestEntry};
use crate::connector::registry;
use crate::connector::{ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use crate::engine::blob::{Hasher, copy_one, hex};

/// Entries per listing page.
const PAGE: usize = 1000;
/// A blob store opened for reading, and one for writing (the traits stay unimported:
/// their methods would shadow the contract's).
type Reader = Box<dyn crate::connector::blob::dynamic::DynBlobSource>;
type Writer = Box<dyn crate::connector::blob::dynamic::DynBlobSink>;

/// Bytes per read.
const CHUNK: u64 = 4 << 20;
/// Pairs of blobs a full verify reads at once (each on its own source and target
/// connection): a read is mostly waiting for the store, not hashing.
const WIDTH: usize = 8;
/// Pairs held back for a concurrent full read before they are read.
const BATCH: usize = 256;

/// How to verify a blob task.
#[derive(Debug, Clone, Default)]
pub struct BlobOptions {
    /// Size and mtime/ETag only.
    pub quick: bool,
    /// Copy or delete what differs.
    pub repair: bool,
    /// Write an `md5sum -c` file of the source here.
    pub manifest: Option<PathBuf>,
    /// `[node] id`, for the lease a repair takes.
    pub node_id: String,
}

/// One path that differs.
#[derive(Debug, Clone, Serialize)]
pub struct BlobDiff {
    /// The path.
    pub path: String,
    /// How it differs.
    pub reason: String,
}

/// What a blob verify found.
#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    /// Task.
    pub task: String,
    /// Source endpoint.
    pub source: String,
    /// Target endpoint.
    pub target: String,
    /// `full` or `quick`.
    pub mode: String,
    /// Paths compared.
    pub checked: u64,
    /// Bytes read (full mode, both sides).
    pub bytes_read: u64,
    /// The paths that differ.
    pub differences: Vec<BlobDiff>,
    /// Paths repaired.
    pub repaired: u64,
    /// Wall time.
    pub seconds: f64,
}

impl BlobReport {
    /// Whether nothing differs (or everything that did was repaired).
    pub fn identical(&self) -> bool {
        self.differences.len() as u64 == self.repaired
    }

    /// For people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "task {} {} -> {} ({} verify): {} path(s) checked, {} differ{}, {:.1}s\n",
            self.task,
            self.source,
            self.target,
            self.mode,
            self.checked,
            self.differences.len(),
            if self.repaired > 0 { format!(", {} repaired", self.repaired) } else { String::new() },
            self.seconds
        );
        for d in &self.differences {
            out.push_str(&format!("  DIFF {}: {}\n", d.path, d.reason));
        }
        out.push_str(if self.identical() { "IDENTICAL\n" } else { "DIFFERENT\n" });
        out
    }

    /// The record-store report (for the audit log and cutover's preflight).
    pub fn as_report(&self) -> Report {
        Report {
            task: self.task.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            mode: self.mode.clone(),
            live: false,
            recheck_rounds: 0,
            identical: self.identical(),
            confirmed: self.differences.len() as u64 - self.repaired,
            transient: 0,
            unsettled: 0,
            rows_checked: self.checked,
            seconds: self.seconds,
            repair: None,
            tables: Vec::new(),
        }
    }
}

/// Whether a task moves blobs.
pub fn is_blob_task(config: &Config, task: &Task) -> bool {
    config.endpoint(&task.from).is_some_and(registry::is_blob)
}

fn input(problem: String, fix: &str) -> VerifyError {
    VerifyError::Input { problem, fix: fix.into() }
}

/// A page-at-a-time sorted listing.
struct Pages {
    buf: std::collections::VecDeque<BlobMeta>,
    after: Option<String>,
    done: bool,
}

impl Pages {
    fn new() -> Self {
        Pages { buf: Default::default(), after: None, done: false }
    }
    async fn head<S: BlobSource>(&mut self, s: &mut S, globs: &[String]) -> Result<Option<&BlobMeta>, ConnectorError> {
        if self.buf.is_empty() && !self.done {
            let page = s.list(globs, self.after.as_deref(), PAGE).await?;
            self.done = page.len() < PAGE;
            self.after = page.last().map(|m| m.path.clone()).or(self.after.take());
            self.buf.extend(page);
        }
        Ok(self.buf.front())
    }
}

/// Verifies one blob task.
pub async fn verify_blob_task(config: &Config, task: &Task, opts: &BlobOptions) -> Result<BlobReport, VerifyError> {
    let started = Instant::now();
    let (Some(from), Some(to)) = (config.endpoint(&task.from), config.endpoint(&task.to)) else {
        return Err(input(format!("task {}: an endpoint is not defined", task.name), "define both endpoints"));
    };
    if opts.quick && opts.manifest.is_some() {
        return Err(input(
            "--manifest needs the content's MD5 sums, which --quick does not read".into(),
            "drop --quick to write a manifest",
        ));
    }
    registry::check_blob_pair(from, to)?;
    let dir = DirectionId { task: task.name.clone(), from: from.name.clone(), to: to.name.clone() };
    let mut source = registry::open_blob_source(from, true).await?;
    let mut target = registry::open_blob_source(to, true).await?;
    let mut sink = registry::open_blob_sink(to).await?;
    let keeps_mtime = sink.caps().keeps_mtime;
    let tree = sink.caps().tree;
    let mut fencing = 0;
    let me = LeaseHolder {
        node: opts.node_id.clone(),
        host: crate::connector::host::host_name(),
        pid: std::process::id(),
        expires_us: 0,
        expired: false,
        fencing: 0,
        floor: 0,
    };
    if opts.repair {
        sink.prepare().await?;
        match sink.lease(&dir, &me, std::time::Duration::from_secs(60)).await? {
            LeaseOutcome::Acquired { fencing: f } => fencing = f,
            LeaseOutcome::HeldBy(h) => {
                return Err(input(
                    format!("task {dir} is running ({h}): a repair would race it"),
                    "stop the task, repair, then start it again (it copies what differs by itself anyway)",
                ));
            }
        }
    }
    let mut manifest = match &opts.manifest {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| VerifyError::RepairFile { path: p.clone(), source: e })?,
        )),
        None => None,
    };
    let globs = task.tables.clone();
    let mut report = BlobReport {
        task: task.name.clone(),
        source: from.name.clone(),
        target: to.name.clone(),
        mode: if opts.quick { "quick".into() } else { "full".into() },
        checked: 0,
        bytes_read: 0,
        differences: Vec::new(),
        repaired: 0,
        seconds: 0.0,
    };
    let (mut sp, mut tp) = (Pages::new(), Pages::new());
    // The extra connections of a full read, opened at the first batch.
    let mut readers: Vec<(Reader, Reader)> = Vec::new();
    let mut pending: Vec<(BlobMeta, BlobMeta)> = Vec::new();
    let ctx = Ctx { from, to, dir: &dir, fencing, repair: opts.repair, manifest_path: &opts.manifest };
    loop {
        let s = sp.head(&mut source, &globs).await?.cloned();
        let t = tp.head(&mut target, &globs).await?.cloned();
        let path = match (&s, &t) {
            (None, None) => break,
            (Some(s), None) => s.path.clone(),
            (None, Some(t)) => t.path.clone(),
            (Some(s), Some(t)) => s.path.clone().min(t.path.clone()),
        };
        // A folder on the target holding what the source holds under that prefix is
        // implied by it (object stores list no folders): the source's next path is inside it.
        let implied = s.as_ref().is_some_and(|m| m.path != path && m.path.starts_with(&path) && path.ends_with('/'));
        let s = s.filter(|m| m.path == path);
        let t = t.filter(|m| m.path == path);
        if s.is_some() {
            sp.buf.pop_front();
        }
        if t.is_some() {
            tp.buf.pop_front();
        }
        report.checked += 1;
        let reason = match (&s, &t) {
            (Some(s), _) if !tree && s.kind != BlobKind::File => None,
            (Some(_), None) => Some("missing on the target".to_string()),
            (None, Some(t)) if implied && t.kind == BlobKind::Dir => None,
            (None, Some(_)) => Some("only on the target (gone from the source)".to_string()),
            (Some(s), Some(t)) if !opts.quick && full_read(s, t, keeps_mtime) => {
                // Read later, with other pairs at once; the manifest line comes from there.
                pending.push((s.clone(), t.clone()));
                if pending.len() >= BATCH {
                    read_pending(
                        &mut pending,
                        &mut readers,
                        &mut source,
                        &mut target,
                        &mut sink,
                        &mut manifest,
                        &mut report,
                        &ctx,
                    )
                    .await?;
                }
                continue;
            }
            (Some(s), Some(t)) => {
                let m = if keeps_mtime || !opts.quick { None } else { sink.entry(&dir, &s.path).await? };
                compare(s, t, m.as_ref(), opts.quick, keeps_mtime, &mut source, &mut target, &mut manifest, &mut report)
                    .await?
            }
            (None, None) => None,
        };
        if let (Some(w), Some(s)) = (&mut manifest, &s)
            && s.kind == BlobKind::File
            && reason.as_deref().is_none_or(|r| !r.starts_with("cannot"))
            && !(matches!(&t, Some(t) if t.kind == BlobKind::File && t.size == s.size))
        {
            // Not read by the comparison (missing on the target): hash the source alone.
            let (md5, n) = md5_of(&mut source, s).await?;
            report.bytes_read += n;
            writeln!(w, "{md5}  {}", s.path).map_err(|e| manifest_error(opts, e))?;
        }
        let Some(reason) = reason else { continue };
        report.differences.push(BlobDiff { path: path.clone(), reason });
        if opts.repair {
            match (&s, &t) {
                (Some(s), _) if s.kind == BlobKind::File => copy_one(&mut source, &mut sink, &dir, s, fencing).await?,
                (Some(s), _) => sink.put_meta(&dir, s, fencing).await?,
                (None, Some(t)) => sink.delete(&dir, t.path.trim_end_matches('/'), fencing).await?,
                (None, None) => {}
            }
            report.repaired += 1;
        }
    }
    read_pending(&mut pending, &mut readers, &mut source, &mut target, &mut sink, &mut manifest, &mut report, &ctx)
        .await?;
    // Pairs read in batches report after the paths listed after them: path order again.
    report.differences.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(mut w) = manifest {
        w.flush().map_err(|e| manifest_error(opts, e))?;
    }
    if opts.repair {
        let _ = sink.release(&dir, &LeaseHolder { fencing, ..me }).await;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn manifest_error(opts: &BlobOptions, e: std::io::Error) -> VerifyError {
    VerifyError::RepairFile { path: opts.manifest.clone().unwrap_or_default(), source: e }
}

/// Why two blobs of one path differ, if they do; writes the source's MD5 line.
#[allow(clippy::too_many_arguments)]
async fn compare<S: BlobSource, T: BlobSource>(
    s: &BlobMeta,
    t: &BlobMeta,
    m: Option<&ManifestEntry>,
    quick: bool,
    keeps_mtime: bool,
    source: &mut S,
    target: &mut T,
    manifest: &mut Option<std::io::BufWriter<std::fs::File>>,
    report: &mut BlobReport,
) -> Result<Option<String>, VerifyError> {
    if s.kind != t.kind {
        return Ok(Some(format!("a {:?} on the source, a {:?} on the target", s.kind, t.kind)));
    }
    match s.kind {
        BlobKind::Dir => {
            return Ok((keeps_mtime && s.mode.is_some() && t.mode.is_some() && s.mode != t.mode).then(|| {
                format!("mode {:o} on the source, {:o} on the target", s.mode.unwrap_or(0), t.mode.unwrap_or(0))
            }));
        }
        BlobKind::Link => {
            return Ok((s.link != t.link)
                .then(|| format!("link to {:?} on the source, to {:?} on the target", s.link, t.link)));
        }
        BlobKind::File => {}
    }
    if s.size != t.size {
        return Ok(Some(format!("size {} on the source, {} on the target", s.size, t.size)));
    }
    if keeps_mtime && s.mode.is_some() && t.mode.is_some() && s.mode != t.mode {
        return Ok(Some(format!(
            "mode {:o} on the source, {:o} on the target",
            s.mode.unwrap_or(0),
            t.mode.unwrap_or(0)
        )));
    }
    if quick {
        if keeps_mtime {
            return Ok((s.mtime_ns != t.mtime_ns).then(|| "mtime differs (same size)".to_string()));
        }
        let by_manifest = m.is_some_and(|m| crate::engine::blob::holds(s, t, m));
        let by_etag = s.etag.is_some() && s.etag == t.etag;
        return Ok(
            (!by_manifest && !by_etag).then(|| "changed since it was copied (manifest and ETag disagree)".into())
        );
    }
    let (reason, md5, bytes) = read_both(s, t, source, target, manifest.is_some()).await?;
    report.bytes_read += bytes;
    if let (Some(w), Some(md5)) = (manifest, md5) {
        writeln!(w, "{md5}  {}", s.path).map_err(|e| VerifyError::RepairFile { path: PathBuf::new(), source: e })?;
    }
    Ok(reason)
}

/// Whether a pair needs both contents read: two files of one size and (where the target
/// keeps modes) one mode, which is what [`compare`] reads in full mode.
fn full_read(s: &BlobMeta, t: &BlobMeta, keeps_mtime: bool) -> bool {
    s.kind == BlobKind::File
        && t.kind == BlobKind::File
        && s.size == t.size
        && !(keeps_mtime && s.mode.is_some() && t.mode.is_some() && s.mode != t.mode)
}

/// Reads every byte of a pair on both sides: why they differ (if they do), the source's
/// MD5 (with `md5`; `None` when it changed while being read) and the bytes read.
async fn read_both<S: BlobSource + ?Sized, T: BlobSource + ?Sized>(
    s: &BlobMeta,
    t: &BlobMeta,
    source: &mut S,
    target: &mut T,
    md5: bool,
) -> Result<(Option<String>, Option<String>, u64), ConnectorError> {
    let mut bytes = 0u64;
    let (mut hs, mut ht) = (Hasher::new(md5), blake3::Hasher::new());
    let multipart = t.etag.as_deref().and_then(|e| e.split_once('-')).map(|(_, n)| n.to_string());
    let part = crate::connector::blob::part_size(t.size);
    let (mut part_md5, mut part_fill, mut part_sums) = (md5::Md5::new(), 0u64, Vec::<u8>::new());
    let mut off = 0;
    while off < s.size {
        let n = CHUNK.min(s.size - off);
        let a = source.read_range(&s.path, off, n).await?;
        let b = target.read_range(&t.path, off, n).await?;
        if a.is_empty() || b.is_empty() {
            return Ok((Some("changed while being verified".into()), None, bytes));
        }
        hs.update(&a);
        ht.update(&b);
        if multipart.is_some() {
            let mut rest = &b[..];
            while !rest.is_empty() {
                let take = ((part - part_fill) as usize).min(rest.len());
                part_md5.update(&rest[..take]);
                part_fill += take as u64;
                rest = &rest[take..];
                if part_fill == part {
                    part_sums.extend_from_slice(&std::mem::take(&mut part_md5).finalize());
                    part_fill = 0;
                }
            }
        }
        bytes += (a.len() + b.len()) as u64;
        off += a.len().min(b.len()) as u64;
    }
    let sums = hs.finish();
    let md5 = Some(sums.md5).filter(|m| !m.is_empty());
    if sums.blake3 != ht.finalize().to_hex().to_string() {
        return Ok((Some("content differs (BLAKE3)".into()), md5, bytes));
    }
    if let Some(count) = multipart {
        if part_fill > 0 {
            part_sums.extend_from_slice(&part_md5.finalize());
        }
        let expect = format!("{}-{}", hex(&md5::Md5::digest(&part_sums)), part_sums.len() / 16);
        if t.etag.as_deref() != Some(expect.as_str()) {
            let why = format!(
                "the target's multipart ETag {:?} is not that of its content ({expect}, {count} part(s) expected)",
                t.etag.as_deref().unwrap_or("")
            );
            return Ok((Some(why), md5, bytes));
        }
    }
    Ok((None, md5, bytes))
}

/// What a batch of full reads needs besides its connections.
struct Ctx<'a> {
    from: &'a crate::config::Endpoint,
    to: &'a crate::config::Endpoint,
    dir: &'a DirectionId,
    fencing: i64,
    repair: bool,
    manifest_path: &'a Option<PathBuf>,
}

/// Reads the pending pairs, [`WIDTH`] at once (the main source and target plus the
/// extra `readers`), then records each in path order: its manifest line, its
/// difference, and its repair.
#[allow(clippy::too_many_arguments)]
async fn read_pending(
    pending: &mut Vec<(BlobMeta, BlobMeta)>,
    readers: &mut Vec<(Reader, Reader)>,
    source: &mut Reader,
    target: &mut Reader,
    sink: &mut Writer,
    manifest: &mut Option<std::io::BufWriter<std::fs::File>>,
    report: &mut BlobReport,
    ctx: &Ctx<'_>,
) -> Result<(), VerifyError> {
    if pending.is_empty() {
        return Ok(());
    }
    let pairs = std::mem::take(pending);
    while readers.len() + 1 < WIDTH.min(pairs.len()) {
        readers
            .push((registry::open_blob_source(ctx.from, true).await?, registry::open_blob_source(ctx.to, true).await?));
    }
    let mut lanes: Vec<(&mut Reader, &mut Reader)> = vec![(&mut *source, &mut *target)];
    lanes.extend(readers.iter_mut().map(|(a, b)| (a, b)));
    // Each lane takes the next pair when it is free: one big blob holds up one lane only.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (pairs_ref, next_ref, md5) = (&pairs, &next, manifest.is_some());
    let runs = lanes.into_iter().map(|(src, tgt)| async move {
        let mut out = Vec::new();
        loop {
            let i = next_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((s, t)) = pairs_ref.get(i) else { break };
            out.push((i, read_both(s, t, &mut *src, &mut *tgt, md5).await?));
        }
        Ok::<_, ConnectorError>(out)
    });
    let mut results: Vec<(usize, (Option<String>, Option<String>, u64))> = Vec::with_capacity(pairs.len());
    for lane in futures_util::future::join_all(runs).await {
        results.extend(lane?);
    }
    results.sort_by_key(|(i, _)| *i);
    for (i, (reason, md5, bytes)) in results {
        let (s, _) = &pairs[i];
        report.bytes_read += bytes;
        if let (Some(w), Some(md5)) = (manifest.as_mut(), md5) {
            writeln!(w, "{md5}  {}", s.path).map_err(|e| VerifyError::RepairFile {
                path: ctx.manifest_path.clone().unwrap_or_default(),
                source: e,
            })?;
        }
        let Some(reason) = reason else { continue };
        report.differences.push(BlobDiff { path: s.path.clone(), reason });
        if ctx.repair {
            copy_one(&mut *source, &mut *sink, ctx.dir, s, ctx.fencing).await?;
            report.repaired += 1;
        }
    }
    Ok(())
}

/// The MD5 of a blob's content, and the bytes read.
async fn md5_of<S: BlobSource>(source: &mut S, s: &BlobMeta) -> Result<(String, u64), ConnectorError> {
    let mut h = md5::Md5::new();
    let mut off = 0;
    while off < s.size {
        let data = source.read_range(&s.path, off, CHUNK.min(s.size - off)).await?;
        if data.is_empty() {
            break;
        }
        h.update(&data);
        off += data.len() as u64;
    }
    Ok((hex(&h.finalize()), off))
}
