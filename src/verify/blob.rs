//! Verify of a blob task (files, objects): both sides listed in path order and merged;
//! every path that differs is named. Full mode compares content: a bucket side's ETag,
//! where it is an MD5 of the content or a multipart ETag ferry can recompute with its own
//! part size, stands for that side's content, so only the other side is read and hashed;
//! an ETag that does not match (SSE-KMS, another tool's part size, a changed object)
//! makes ferry read the bucket's bytes too before it reports anything, and two folders
//! are read on both sides and compared by BLAKE3. Quick mode compares size and mtime (a
//! target that keeps mtimes) or the manifest's record of the source state against the
//! target's ETag. `--manifest` writes an `md5sum -c` file of the source's content;
//! `--repair` copies or deletes what differs, under the direction's lease.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use md5_many::Digest as _;
use serde::Serialize;

use super::VerifyError;
use super::blob_lanes::{Ahead, Lanes, Listing, Reader, Sum};
use super::report::Report;
use crate::config::{Config, Task};
use crate::connector::blob::{BlobKind, BlobMeta, BlobSink, BlobSource, ManifestEntry};
use crate::connector::registry;
use crate::connector::{ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use crate::engine::blob::{Hasher, copy_one, hex};

/// A blob store opened for writing (the trait stays unimported: its methods would shadow
/// the contract's).
type Writer = Box<dyn crate::connector::blob::dynamic::DynBlobSink>;

/// Bytes per read.
const CHUNK: u64 = 4 << 20;

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
    /// Files found equal by a bucket's ETag (full mode): only the other side was read.
    pub by_etag: u64,
    /// Files with a bucket side whose ETag did not serve (not an MD5 ferry can recompute,
    /// or not matching): both sides were read.
    pub etag_fallbacks: u64,
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
            "task {} {} -> {} ({} verify): {} path(s) checked, {} differ{}{}, {:.1}s\n",
            self.task,
            self.source,
            self.target,
            self.mode,
            self.checked,
            self.differences.len(),
            if self.repaired > 0 { format!(", {} repaired", self.repaired) } else { String::new() },
            if self.by_etag + self.etag_fallbacks > 0 {
                format!(", {} by a bucket's ETag, {} read on both sides", self.by_etag, self.etag_fallbacks)
            } else {
                String::new()
            },
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
        by_etag: 0,
        etag_fallbacks: 0,
        differences: Vec::new(),
        repaired: 0,
        seconds: 0.0,
    };
    let (mut sp, mut tp) = (Listing::start(from, &globs).await?, Listing::start(to, &globs).await?);
    let sides = EtagSides { source: source.etag_hashes_content(), target: target.etag_hashes_content() };
    let mut lanes = Lanes::new(from, to, sides, manifest.is_some());
    let ctx = Ctx { dir: &dir, fencing, repair: opts.repair, manifest_path: &opts.manifest };
    // Against a bucket's ETags, the folder's MD5s are needed whatever the bucket holds:
    // its small files are hashed ahead, from the moment they are listed.
    let mut ahead = match !opts.quick && lanes.hashes_ahead() {
        true => Some(Ahead::start(from).await?),
        false => None,
    };
    loop {
        let s = sp.head().await?.cloned();
        if let Some(a) = &mut ahead {
            a.feed(&sp.buf).await?;
        }
        let t = tp.head().await?.cloned();
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
        let sum = match (&s, &mut ahead) {
            (Some(s), Some(a)) => a.take(&s.path),
            _ => None,
        };
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
                // Read by a lane beside other pairs; the manifest line comes from there.
                lanes.check(s.clone(), t.clone(), sum).await?;
                record(&mut lanes, false, &mut source, &mut sink, &mut manifest, &mut report, &ctx).await?;
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
    lanes.close();
    record(&mut lanes, true, &mut source, &mut sink, &mut manifest, &mut report, &ctx).await?;
    // Pairs read by the lanes report after the paths listed after them: path order again.
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
/// MD5 (with `md5`; `None` when it changed while being read) and the bytes read. A
/// store's ETag plays no part here: the bytes are the truth.
async fn read_both<S: BlobSource + ?Sized, T: BlobSource + ?Sized>(
    s: &BlobMeta,
    t: &BlobMeta,
    source: &mut S,
    target: &mut T,
    md5: bool,
) -> Result<(Option<String>, Option<String>, u64), ConnectorError> {
    let mut bytes = 0u64;
    let (mut hs, mut ht) = (Hasher::new(md5), blake3::Hasher::new());
    let mut off = 0;
    while off < s.size {
        let n = CHUNK.min(s.size - off);
        let a = source.read_range(&s.path, off, n).await?;
        let b = target.read_range(&t.path, off, n).await?;
        if a.is_empty() || b.is_empty() {
            return Ok((Some(CHANGED.into()), None, bytes));
        }
        hs.update(&a);
        ht.update(&b);
        bytes += (a.len() + b.len()) as u64;
        off += a.len().min(b.len()) as u64;
    }
    let sums = hs.finish();
    let md5 = Some(sums.md5).filter(|m| !m.is_empty());
    if sums.blake3 != ht.finalize().to_hex().to_string() {
        return Ok((Some("content differs (BLAKE3)".into()), md5, bytes));
    }
    Ok((None, md5, bytes))
}

/// Why a pair read as of different content when it changed under the read.
const CHANGED: &str = "changed while being verified";

/// Which sides' ETags are their store's hash of the content (buckets).
#[derive(Debug, Clone, Copy)]
pub(super) struct EtagSides {
    pub(super) source: bool,
    pub(super) target: bool,
}

/// What a bucket's ETag says about the content, for an object of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// 32 hex digits: the MD5 of the whole content (a single-part upload), lower case.
    Md5(String),
    /// `<32 hex>-<parts>`, `parts` the count ferry's part size gives this size: the MD5
    /// of the parts' MD5s, recomputable from the other side's bytes.
    Parts {
        /// The whole ETag, lower case.
        etag: String,
        /// The part size ferry uploads this size with.
        part: u64,
    },
    /// Nothing ferry can recompute: no ETag, not hex (SSE-C, some stores), a multipart
    /// ETag of another part count (another tool's part size), or none at all. The
    /// object's bytes are read.
    Opaque,
}

/// What `etag` claims about an object of `size` bytes. A 32-hex-digit ETag that is not
/// an MD5 (SSE-KMS) claims an MD5 it will not match; the mismatch then makes ferry read
/// the bytes, so such an ETag costs a read, never a wrong verdict.
fn claim(etag: Option<&str>, size: u64) -> Claim {
    let Some(e) = etag else { return Claim::Opaque };
    let e = e.to_ascii_lowercase();
    let md5_like = |h: &str| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit());
    match e.split_once('-') {
        None if md5_like(&e) => Claim::Md5(e),
        Some((h, n)) if md5_like(h) => {
            let part = crate::connector::blob::part_size(size);
            match n.parse::<u64>() {
                Ok(parts) if parts >= 1 && parts == size.div_ceil(part).max(1) => Claim::Parts { etag: e, part },
                _ => Claim::Opaque,
            }
        }
        _ => Claim::Opaque,
    }
}

/// Whether two buckets' ETags state the same content: equal, and of a content hash's
/// shape (an MD5, or a multipart ETag of any part count: equal part MD5s in equal order).
fn same_claim(a: &str, b: &str) -> bool {
    let md5_like = |h: &str| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit());
    let shaped = match a.split_once('-') {
        None => md5_like(a),
        Some((h, n)) => md5_like(h) && n.parse::<u64>().is_ok_and(|n| n >= 1),
    };
    shaped && a.eq_ignore_ascii_case(b)
}

/// MD5s of one blob's bytes: of the whole and/or of its parts of one size.
struct Digest {
    whole: Option<md5_many::Md5>,
    part: u64,
    current: Option<md5_many::Md5>,
    fill: u64,
    sums: Vec<u8>,
}

impl Digest {
    /// The whole content's MD5 with `whole`; the parts' MD5s when `part` is not 0.
    fn new(whole: bool, part: u64) -> Digest {
        Digest {
            whole: whole.then(md5_many::Md5::new),
            part,
            current: (part > 0).then(md5_many::Md5::new),
            fill: 0,
            sums: Vec::new(),
        }
    }
    fn update(&mut self, mut data: &[u8]) {
        if let Some(w) = &mut self.whole {
            w.update(data);
        }
        let Some(cur) = &mut self.current else { return };
        while !data.is_empty() {
            let take = ((self.part - self.fill) as usize).min(data.len());
            cur.update(&data[..take]);
            self.fill += take as u64;
            data = &data[take..];
            if self.fill == self.part {
                self.sums.extend_from_slice(&std::mem::take(cur).finalize());
                self.fill = 0;
            }
        }
    }
    /// The whole MD5 (hex, if computed) and the multipart ETag (if parts were computed).
    fn finish(mut self) -> (Option<String>, Option<String>) {
        if let Some(cur) = self.current.take()
            && (self.fill > 0 || self.sums.is_empty())
        {
            self.sums.extend_from_slice(&cur.finalize());
        }
        let whole = self.whole.map(|w| hex(&w.finalize()));
        let parts =
            (self.part > 0).then(|| format!("{}-{}", hex(&md5_many::Md5::digest(&self.sums)), self.sums.len() / 16));
        (whole, parts)
    }
}

/// Reads a blob's `size` bytes into a [`Digest`]; `None` when it ended early (changed).
async fn digest_of<R: BlobSource + ?Sized>(
    r: &mut R,
    path: &str,
    size: u64,
    mut d: Digest,
) -> Result<Option<(Option<String>, Option<String>)>, ConnectorError> {
    let mut off = 0;
    while off < size {
        let data = r.read_range(path, off, CHUNK.min(size - off)).await?;
        if data.is_empty() {
            return Ok(None);
        }
        d.update(&data);
        off += data.len() as u64;
    }
    Ok(Some(d.finish()))
}

/// A bucket side's ETag: the listing's, else a HEAD's (s3s-fs lists none); `Err` with
/// the reason when the object is gone or resized since it was listed.
async fn etag_of<R: BlobSource + ?Sized>(
    r: &mut R,
    m: &BlobMeta,
) -> Result<Result<Option<String>, String>, ConnectorError> {
    if m.etag.is_some() {
        return Ok(Ok(m.etag.clone()));
    }
    Ok(match r.stat(&m.path).await? {
        Some(now) if now.size == m.size => Ok(now.etag),
        _ => Err(CHANGED.into()),
    })
}

/// What checking one pair of equal-sized files found.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// Why they differ, if they do.
    reason: Option<String>,
    /// The source's MD5, when asked for (`--manifest`) or known anyway.
    md5: Option<String>,
    /// Bytes read, both sides.
    bytes: u64,
    /// Found equal by a bucket's ETag, only the other side read.
    by_etag: bool,
    /// A bucket side's ETag did not serve: both sides read.
    fallback: bool,
}

/// Compares the content of a pair of files of one size. A bucket side whose ETag claims
/// a hash ferry can recompute is compared with the other side's bytes, so it is not
/// read; when the claim does not match, or nothing is claimed, the bucket's bytes are
/// read too and the two contents compared, so a wrong or foreign ETag costs a read but
/// never a wrong verdict. Two buckets stating the same content hash are equal unread.
/// `known`: the source's whole MD5, being hashed ahead from these same listed metadata.
pub(super) async fn check_pair<S: BlobSource + ?Sized, T: BlobSource + ?Sized>(
    s: &BlobMeta,
    t: &BlobMeta,
    source: &mut S,
    target: &mut T,
    sides: EtagSides,
    md5: bool,
    known: Option<Sum>,
) -> Result<Checked, ConnectorError> {
    let both = |(reason, md5, bytes)| Checked { reason, md5, bytes, ..Checked::default() };
    if !sides.source && !sides.target {
        return Ok(both(read_both(s, t, source, target, md5).await?));
    }
    let changed = |reason: String| -> Result<Checked, ConnectorError> {
        Ok(Checked { reason: Some(reason), ..Checked::default() })
    };
    let st = match sides.source {
        true => match etag_of(source, s).await? {
            Ok(e) => e,
            Err(r) => return changed(r),
        },
        false => None,
    };
    let tt = match sides.target {
        true => match etag_of(target, t).await? {
            Ok(e) => e,
            Err(r) => return changed(r),
        },
        false => None,
    };
    if let (Some(a), Some(b)) = (&st, &tt)
        && same_claim(a, b)
    {
        let (md5, bytes) = match claim(Some(a), s.size) {
            Claim::Md5(m) => (Some(m), 0),
            _ if md5 => {
                let (m, n) = md5_of(source, s).await?;
                (Some(m), n)
            }
            _ => (None, 0),
        };
        return Ok(Checked { md5, bytes, by_etag: true, ..Checked::default() });
    }
    // The bucket side checked by its ETag (the target's first), the other side read.
    let (tc, sc) = (claim(tt.as_deref(), t.size), claim(st.as_deref(), s.size));
    let (on_target, c) = match (tc, sc) {
        (tc, _) if tc != Claim::Opaque => (true, tc),
        (_, sc) if sc != Claim::Opaque => (false, sc),
        _ => {
            let mut c = both(read_both(s, t, source, target, md5).await?);
            c.fallback = true;
            return Ok(c);
        }
    };
    let (whole, part, expect) = match &c {
        Claim::Md5(m) => (true, 0, m.clone()),
        Claim::Parts { etag, part } => (md5, *part, etag.clone()),
        Claim::Opaque => (true, 0, String::new()),
    };
    // The source's MD5, hashed ahead from this same listing entry, when that worked.
    let known = match (on_target, part, known) {
        (true, 0, Some(sum)) => sum.await.ok().flatten(),
        _ => None,
    };
    let read = match (on_target, known) {
        (true, Some(sum)) => Some((Some(sum), None)),
        (true, None) => digest_of(source, &s.path, s.size, Digest::new(whole, part)).await?,
        (false, _) => digest_of(target, &t.path, t.size, Digest::new(whole, part)).await?,
    };
    let Some(read) = read else { return changed(CHANGED.into()) };
    let got = if part > 0 { read.1.clone() } else { read.0.clone() };
    if got.as_deref() == Some(expect.as_str()) {
        // The other side's bytes hash to what the bucket's server computed of its own.
        return Ok(Checked { md5: read.0, bytes: s.size, by_etag: true, ..Checked::default() });
    }
    // The ETag does not match: read the bucket's bytes the same way and compare them.
    let other = match on_target {
        true => digest_of(target, &t.path, t.size, Digest::new(whole, part)).await?,
        false => digest_of(source, &s.path, s.size, Digest::new(whole, part)).await?,
    };
    let Some(other) = other else { return changed(CHANGED.into()) };
    let reason = (other != read).then(|| "content differs (MD5)".to_string());
    // The source's whole MD5, for --manifest: of the side read that is the source.
    let md5 = if on_target { read.0 } else { other.0 };
    Ok(Checked { reason, md5, bytes: s.size + t.size, fallback: true, ..Checked::default() })
}

/// What recording a checked pair needs besides the connections.
struct Ctx<'a> {
    dir: &'a DirectionId,
    fencing: i64,
    repair: bool,
    manifest_path: &'a Option<PathBuf>,
}

/// Records the pairs the lanes have checked, in the order they were handed over: each
/// one's manifest line, difference and repair. With `wait`, until every pair is
/// recorded; else those answered so far.
#[allow(clippy::too_many_arguments)]
async fn record(
    lanes: &mut Lanes,
    wait: bool,
    source: &mut Reader,
    sink: &mut Writer,
    manifest: &mut Option<std::io::BufWriter<std::fs::File>>,
    report: &mut BlobReport,
    ctx: &Ctx<'_>,
) -> Result<(), VerifyError> {
    while let Some((s, Checked { reason, md5, bytes, by_etag, fallback })) = lanes.next(wait).await? {
        report.bytes_read += bytes;
        report.by_etag += u64::from(by_etag);
        report.etag_fallbacks += u64::from(fallback);
        if let (Some(w), Some(md5)) = (manifest.as_mut(), md5) {
            writeln!(w, "{md5}  {}", s.path).map_err(|e| VerifyError::RepairFile {
                path: ctx.manifest_path.clone().unwrap_or_default(),
                source: e,
            })?;
        }
        let Some(reason) = reason else { continue };
        report.differences.push(BlobDiff { path: s.path.clone(), reason });
        if ctx.repair {
            copy_one(&mut *source, &mut *sink, ctx.dir, &s, ctx.fencing).await?;
            report.repaired += 1;
        }
    }
    Ok(())
}

/// The MD5 of a blob's content, and the bytes read.
pub(super) async fn md5_of<S: BlobSource + ?Sized>(
    source: &mut S,
    s: &BlobMeta,
) -> Result<(String, u64), ConnectorError> {
    let mut h = md5_many::Md5::new();
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

#[cfg(test)]
mod tests {
    use md5::Digest as _;

    use super::*;

    /// A store held in memory: a bucket (its ETags stand for the content) or a folder,
    /// counting the bytes read from it.
    struct Mem {
        data: Vec<u8>,
        bucket: bool,
        read: u64,
    }

    impl BlobSource for Mem {
        async fn list(&mut self, _: &[String], _: Option<&str>, _: usize) -> Result<Vec<BlobMeta>, ConnectorError> {
            Ok(Vec::new())
        }
        async fn stat(&mut self, _: &str) -> Result<Option<BlobMeta>, ConnectorError> {
            Ok(None)
        }
        async fn hints(&mut self) -> Result<Vec<crate::connector::blob::BlobHint>, ConnectorError> {
            Ok(Vec::new())
        }
        async fn read_range(&mut self, _: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
            let from = (offset as usize).min(self.data.len());
            let to = (from + len as usize).min(self.data.len());
            self.read += (to - from) as u64;
            Ok(self.data[from..to].to_vec())
        }
        fn etag_hashes_content(&self) -> bool {
            self.bucket
        }
    }

    fn md5_hex(data: &[u8]) -> String {
        hex(&md5::Md5::digest(data))
    }

    /// ferry's multipart ETag of `data`.
    fn parts_etag(data: &[u8]) -> String {
        let part = crate::connector::blob::part_size(data.len() as u64) as usize;
        let sums: Vec<u8> = data.chunks(part).flat_map(|c| md5::Md5::digest(c).to_vec()).collect();
        format!("{}-{}", md5_hex(&sums), data.len().div_ceil(part))
    }

    #[test]
    fn an_etag_claims_an_md5_a_recomputable_multipart_hash_or_nothing() {
        let md5 = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(claim(Some(md5), 10), Claim::Md5(md5.to_ascii_lowercase()));
        let size = (17 << 20) + 5;
        let p = crate::connector::blob::part_size(size);
        assert_eq!(
            claim(Some(&format!("{md5}-3")), size),
            Claim::Parts { etag: format!("{}-3", md5.to_ascii_lowercase()), part: p }
        );
        assert_eq!(claim(Some(&format!("{md5}-4")), size), Claim::Opaque, "another tool's part size");
        assert_eq!(claim(Some(&format!("{md5}-0")), size), Claim::Opaque);
        assert_eq!(claim(Some("abc"), 10), Claim::Opaque, "not an MD5");
        assert_eq!(claim(Some("12:34"), 10), Claim::Opaque, "an SFTP target's size:mtime tag");
        assert_eq!(claim(Some(&format!("{md5}0")), 10), Claim::Opaque, "33 digits");
        assert_eq!(claim(None, 10), Claim::Opaque);
        assert!(same_claim(md5, &md5.to_ascii_lowercase()));
        assert!(same_claim(&format!("{md5}-4"), &format!("{md5}-4")), "equal multipart ETags of any part size");
        assert!(!same_claim("opaque", "opaque"), "equal, but not of a content hash's shape");
        assert!(!same_claim(md5, &format!("{md5}-1")));
    }

    /// Checks a folder file against a bucket object whose listing says `etag`.
    async fn check(folder: &[u8], object: &[u8], etag: &str, md5: bool) -> (Checked, Mem, Mem) {
        let s = BlobMeta::file("f", folder.len() as u64, 0);
        let t = BlobMeta { etag: Some(etag.to_string()), ..BlobMeta::file("f", object.len() as u64, 0) };
        let mut src = Mem { data: folder.to_vec(), bucket: false, read: 0 };
        let mut tgt = Mem { data: object.to_vec(), bucket: true, read: 0 };
        let sides = EtagSides { source: false, target: true };
        let c = check_pair(&s, &t, &mut src, &mut tgt, sides, md5, None).await.expect("check");
        (c, src, tgt)
    }

    #[tokio::test]
    async fn a_matching_etag_spares_the_bucket_read_and_one_that_does_not_match_never_decides() {
        let data = b"the same content".to_vec();
        let mut other = data.clone();
        other[3] ^= 1;
        // The MD5 ETag matches: the bucket is not read.
        let (c, src, tgt) = check(&data, &data, &md5_hex(&data), true).await;
        assert!(c.reason.is_none() && c.by_etag && !c.fallback, "{c:?}");
        assert_eq!((src.read, tgt.read), (data.len() as u64, 0));
        assert_eq!(c.md5, Some(md5_hex(&data)), "the source's MD5 for --manifest");
        // An ETag that is not the content's MD5 (SSE-KMS: 32 hex digits of something
        // else), on equal content: read, found equal, not reported.
        let kms = "9f2c6b1e0d4a3b5c7e8f9a0b1c2d3e4f";
        let (c, src, tgt) = check(&data, &data, kms, false).await;
        assert!(c.reason.is_none() && !c.by_etag && c.fallback, "{c:?}");
        assert_eq!((src.read, tgt.read), (data.len() as u64, data.len() as u64));
        // The same ETag on different content of one size: read, reported.
        let (c, _, tgt) = check(&data, &other, kms, false).await;
        assert_eq!(c.reason.as_deref(), Some("content differs (MD5)"), "{c:?}");
        assert_eq!(tgt.read, data.len() as u64);
        // An MD5 ETag that is not that of the bytes the bucket holds (stale, a store's
        // bug) does not make equal content differ: the bytes decide.
        let (c, _, _) = check(&data, &data, &md5_hex(&other), false).await;
        assert!(c.reason.is_none() && c.fallback, "{c:?}");
    }

    #[tokio::test]
    async fn a_source_md5_hashed_ahead_spares_its_read_and_never_decides_alone() {
        let data = b"hashed while the bucket was listed".to_vec();
        let s = BlobMeta::file("f", data.len() as u64, 0);
        let t = BlobMeta { etag: Some(md5_hex(&data)), ..BlobMeta::file("f", data.len() as u64, 0) };
        let sides = EtagSides { source: false, target: true };
        let (mut src, mut tgt) =
            (Mem { data: data.clone(), bucket: false, read: 0 }, Mem { data: data.clone(), bucket: true, read: 0 });
        let c = check_pair(&s, &t, &mut src, &mut tgt, sides, true, Some(hashed(Some(md5_hex(&data)))))
            .await
            .expect("check");
        assert!(c.reason.is_none() && c.by_etag, "{c:?}");
        assert_eq!((src.read, tgt.read), (0, 0), "neither side read again");
        assert_eq!(c.bytes, data.len() as u64, "the bytes hashed ahead are counted");
        assert_eq!(c.md5, Some(md5_hex(&data)));
        // What was hashed ahead disagrees with the ETag: the bucket's bytes are read and
        // compared with it, as with any mismatch.
        let mut other = data.clone();
        other[0] ^= 1;
        let c = check_pair(&s, &t, &mut src, &mut tgt, sides, false, Some(hashed(Some(md5_hex(&other)))))
            .await
            .expect("check");
        assert_eq!(c.reason.as_deref(), Some("content differs (MD5)"), "{c:?}");
        assert!(c.fallback);
        assert_eq!((src.read, tgt.read), (0, data.len() as u64));
        // Not read whole ahead (changed, unreadable): the lane reads it itself.
        let (mut src, mut tgt) =
            (Mem { data: data.clone(), bucket: false, read: 0 }, Mem { data, bucket: true, read: 0 });
        let c = check_pair(&s, &t, &mut src, &mut tgt, sides, false, Some(hashed(None))).await.expect("check");
        assert!(c.reason.is_none() && c.by_etag, "{c:?}");
        assert_eq!((src.read, tgt.read), (s.size, 0));
    }

    /// What hashing ahead answered.
    fn hashed(sum: Option<String>) -> Sum {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(sum).expect("the receiver is here");
        rx
    }

    #[tokio::test]
    async fn a_multipart_etag_is_recomputed_with_ferrys_part_size() {
        let size = (2 * crate::connector::blob::MIN_PART + 3) as usize;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let (c, _, tgt) = check(&data, &data, &parts_etag(&data), true).await;
        assert!(c.reason.is_none() && c.by_etag, "{c:?}");
        assert_eq!(tgt.read, 0);
        assert_eq!(c.md5, Some(md5_hex(&data)), "the whole MD5 too, for --manifest");
        // Another part size (4 parts): ferry cannot recompute it and reads both sides.
        let four = format!("{}-4", md5_hex(b"x"));
        let (c, _, tgt) = check(&data, &data, &four, false).await;
        assert!(c.reason.is_none() && c.fallback && !c.by_etag, "{c:?}");
        assert_eq!(tgt.read, size as u64);
    }
}
