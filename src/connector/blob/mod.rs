//! The blob capabilities: files and object storage do not fit rows (a 5 GB file is not
//! a value), so those stores implement [`BlobSource`] and [`BlobSink`] instead of
//! `Source`/`Sink`. They share the rest with record stores: a task direction, a lease
//! with a fencing token on the target, a checkpoint, metrics, verify (hash manifests)
//! and cutover.
//!
//! Exactly-once effect: a blob is written to a temporary name (a partial file, an
//! unfinished multipart upload) and made visible by one atomic step — rename or
//! complete — that is conditional on the writer's fencing token; the manifest records
//! the source's stat of what was copied, so a restart re-copies only what differs.
//!
//! Order: every listing is in byte order of the path, with a folder listed as `dir/`
//! (its path and a slash) right before what it holds, so listings of any two stores
//! merge as sorted streams.

pub mod dynamic;
pub mod quiesce;
pub mod state;

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use state::BlobState;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// A regular file or an object.
    File,
    /// A folder (its path ends with `/`).
    Dir,
    /// A symbolic link, copied as a link.
    Link,
}

/// What a store says about one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// Path relative to the endpoint's root, `/`-separated; a folder's ends with `/`.
    pub path: String,
    /// File, folder or link.
    pub kind: BlobKind,
    /// Size in bytes (0 for folders and links).
    pub size: u64,
    /// Last modification, ns since the epoch (objects: the store's last-modified).
    pub mtime_ns: i64,
    /// Permission bits, where the store has them.
    pub mode: Option<u32>,
    /// Owner uid and gid, where the store has them.
    pub owner: Option<(u32, u32)>,
    /// A content hash or the store's ETag, when it has one without reading the blob.
    pub etag: Option<String>,
    /// A link's target.
    pub link: Option<String>,
}

impl BlobMeta {
    /// A regular file or object.
    pub fn file(path: impl Into<String>, size: u64, mtime_ns: i64) -> BlobMeta {
        BlobMeta {
            path: path.into(),
            kind: BlobKind::File,
            size,
            mtime_ns,
            mode: None,
            owner: None,
            etag: None,
            link: None,
        }
    }
}

/// A hint that something changed; periodic rescans are the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobHint {
    /// This path changed or appeared.
    Changed(String),
    /// This path is gone.
    Removed(String),
    /// This path was renamed (both ends seen).
    Renamed {
        /// Old path.
        from: String,
        /// New path.
        to: String,
    },
    /// Too much changed to say (a watch queue overflowed): rescan.
    Rescan,
}

/// A write in progress on a sink: resumable after a crash from `durable` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobUpload {
    /// Destination path.
    pub path: String,
    /// The store's handle of the partial write (temporary file name, multipart id).
    pub handle: String,
    /// Bytes handed to the sink so far.
    pub written: u64,
    /// Bytes that survive a crash (synced to disk, completed parts).
    pub durable: u64,
    /// The source's size when the copy began.
    pub size: u64,
    /// The source's mtime when the copy began: a changed source restarts the copy.
    pub mtime_ns: i64,
    /// The sink gave the blob the source's mode, owner and mtime while writing it (a
    /// folder's small file, still open): nothing is left to set before it lands.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub meta_set: bool,
}

/// A page of a target's listing and, when asked, a page of its manifest
/// ([`BlobSink::list_with_manifest`]).
pub type Listed = (Vec<BlobMeta>, Option<Vec<ManifestEntry>>);

/// Content hashes computed while copying.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobHashes {
    /// BLAKE3, hex.
    pub blake3: String,
    /// MD5, hex (the ETag of a single-part object, and `md5sum`'s); empty when not
    /// computed (a target whose ETags are no MD5s, see [`BlobCaps::md5`]).
    pub md5: String,
}

/// A write ready to be made visible: what [`BlobSink::finish_many`] takes.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The partial write, all of the content written.
    pub upload: BlobUpload,
    /// The source's state it copies.
    pub source: BlobMeta,
    /// Hashes of that content.
    pub hashes: BlobHashes,
}

/// One line of a direction's manifest: what was copied, as the source stated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path.
    pub path: String,
    /// Source size.
    pub size: u64,
    /// Source mtime, ns.
    pub mtime_ns: i64,
    /// Source mode.
    pub mode: Option<u32>,
    /// Content hashes, when ferry read the content.
    pub hashes: Option<BlobHashes>,
    /// The target's stat after the write (`size:mtime_ns` or its ETag), to tell a target
    /// changed behind ferry's back.
    pub target: Option<String>,
}

impl ManifestEntry {
    /// The entry of a path as the source states it, with the hashes of what was copied
    /// and the target's stat or ETag after the write.
    pub fn of(source: &BlobMeta, hashes: Option<BlobHashes>, target: Option<String>) -> ManifestEntry {
        ManifestEntry {
            path: source.path.clone(),
            size: source.size,
            mtime_ns: source.mtime_ns,
            mode: source.mode,
            hashes,
            target,
        }
    }
}

/// Where a blob direction stands: the scan cursor and the partial writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCheckpoint {
    /// The last path of the current full scan that was handled (scans go in path order).
    pub scan_after: Option<String>,
    /// Partial writes to resume.
    pub uploads: Vec<BlobUpload>,
    /// Full scans completed.
    #[serde(default)]
    pub passes: u64,
    /// When the pass under way began (µs); a pass resumed after a restart keeps it.
    #[serde(default)]
    pub pass_began_us: Option<i64>,
    /// The last completed pass: when it began (µs).
    #[serde(default)]
    pub done_began_us: Option<i64>,
    /// The last completed pass: paths it copied, set or deleted, and paths it could
    /// not copy (since it began or resumed).
    #[serde(default)]
    pub done_changes: u64,
    /// The last completed pass: paths it could not copy.
    #[serde(default)]
    pub done_failed: u64,
    /// When a change was last carried, by a pass or a hint (µs).
    #[serde(default)]
    pub changed_us: Option<i64>,
}

impl BlobCheckpoint {
    /// Whether the source is drained for a cutover frozen at `frozen_us`: a full pass
    /// that began after the freeze, and at least `quiet_us` after the last change
    /// carried, found nothing to carry and nothing it could not read.
    pub fn drained(&self, frozen_us: i64, quiet_us: i64) -> bool {
        let Some(began) = self.done_began_us else { return false };
        began >= frozen_us
            && began >= self.changed_us.unwrap_or(0).saturating_add(quiet_us)
            && self.done_changes == 0
            && self.done_failed == 0
    }
}

/// What a sink can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobCaps {
    /// Folders (empty ones too) and links.
    pub tree: bool,
    /// It keeps the source's mtime, so a stat compares with the source's directly; else
    /// the manifest tells what source state the target holds.
    pub keeps_mtime: bool,
    /// Its ETags are MD5s of the content (a bucket's, for single-part objects): the
    /// manifest keeps each copy's MD5 too (elsewhere BLAKE3 alone: MD5 costs ~4x more).
    pub md5: bool,
}

/// Whether a path matches the task's globs (`tables`): `*` and `**` (any folders);
/// the pattern `*` alone matches everything.
pub fn matches(globs: &[String], path: &str) -> bool {
    let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    let bare = path.trim_end_matches('/');
    globs.iter().any(|g| g == "*" || g == "**" || glob::Pattern::new(g).is_ok_and(|p| p.matches_with(bare, opts)))
}

/// Whether the globs take every path (folders and links are then carried too).
pub fn matches_all(globs: &[String]) -> bool {
    globs.iter().any(|g| g == "*" || g == "**" || g == "**/*")
}

/// A store blobs are read from. Listing is streamed in sorted order, a page at a time,
/// so no listing holds every key in memory.
pub trait BlobSource: Send {
    /// Up to `limit` blobs matching the globs, in path order, after `after`.
    fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<BlobMeta>, ConnectorError>> + Send;
    /// One blob's metadata; `None` if it does not exist (a folder's path may be given
    /// with or without its `/`).
    fn stat(&mut self, path: &str) -> impl Future<Output = Result<Option<BlobMeta>, ConnectorError>> + Send;
    /// Change hints since the last call (may be empty; never the only truth). The first
    /// call starts watching.
    fn hints(&mut self) -> impl Future<Output = Result<Vec<BlobHint>, ConnectorError>> + Send;
    /// Up to `len` bytes of a blob from `offset` (fewer only at its end).
    fn read_range(
        &mut self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, ConnectorError>> + Send;
    /// The content of several small blobs, one after the other in `buf` (cleared first,
    /// handed back to be used again): each blob's length read, up to its given size
    /// (shorter: it ended early, so it changed since it was listed), or why it could not
    /// be read. A store that can fetch many at once overrides it (a folder reads a group
    /// in one hop to its blocking pool instead of one a file); by default they are read
    /// one by one.
    fn read_many(
        &mut self,
        blobs: &[(String, u64)],
        mut buf: Vec<u8>,
    ) -> impl Future<Output = (Vec<u8>, Vec<Result<u64, ConnectorError>>)> + Send {
        async move {
            buf.clear();
            let mut lens = Vec::with_capacity(blobs.len());
            for (path, size) in blobs {
                let start = buf.len();
                let read = loop {
                    let got = (buf.len() - start) as u64;
                    if got == *size {
                        break Ok(got);
                    }
                    match self.read_range(path, got, *size - got).await {
                        Ok(more) if more.is_empty() => break Ok(got),
                        Ok(more) => buf.extend_from_slice(&more),
                        Err(e) => break Err(e),
                    }
                };
                if read.is_err() {
                    buf.truncate(start);
                }
                lens.push(read);
            }
            (buf, lens)
        }
    }
    /// Whether the `etag` of its listings and stats is the store's own hash of the bytes
    /// it holds (a bucket's: the MD5 of a single-part object, the MD5 of the parts' MD5s of
    /// a multipart one, or a value ferry cannot recompute under SSE-KMS or SSE-C), so a
    /// verify may compare it with the other side's content instead of reading this side.
    fn etag_hashes_content(&self) -> bool {
        false
    }
}

/// A store blobs are written to. Every step that makes data visible or records progress
/// is conditional on `fencing`, the token of the lease the writer holds. A sink lists
/// what it holds as a source does, without ferry's own area.
pub trait BlobSink: Send {
    /// What it can hold.
    fn caps(&self) -> BlobCaps;
    /// Creates ferry's own area (a `.ferry/` folder, a key prefix) if missing.
    fn prepare(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// What the target holds, as [`BlobSource::list`].
    fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<BlobMeta>, ConnectorError>> + Send;
    /// One blob's metadata on the target.
    fn stat(&mut self, path: &str) -> impl Future<Output = Result<Option<BlobMeta>, ConnectorError>> + Send;
    /// Starts (or, given an upload, resumes) writing a blob as the source states it;
    /// a resumed upload comes back with `written == durable`, where the copy goes on.
    fn begin(
        &mut self,
        source: &BlobMeta,
        resume: Option<&BlobUpload>,
    ) -> impl Future<Output = Result<BlobUpload, ConnectorError>> + Send;
    /// Appends bytes at `upload.written`.
    fn write(
        &mut self,
        upload: &mut BlobUpload,
        data: &[u8],
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Makes what was written durable where the store can (`upload.durable`).
    fn flush(&mut self, upload: &mut BlobUpload) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Makes the blob visible with the source's metadata (rename, multipart complete)
    /// and records it in the manifest, if the writer still holds `fencing`.
    fn finish(
        &mut self,
        dir: &DirectionId,
        upload: BlobUpload,
        source: &BlobMeta,
        hashes: &BlobHashes,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Makes several finished writes visible and records them, in as few fenced
    /// transactions as the store allows (one per call where it can), in order; stops at
    /// the first that fails, those before it recorded.
    fn finish_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<Finished>,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async move {
            for f in items {
                self.finish(dir, f.upload, &f.source, &f.hashes, fencing).await?;
            }
            Ok(())
        }
    }
    /// Hands a partial write over to another sink of the same target (copies are
    /// prepared on several connections, one sink makes them visible): lets go of what
    /// this sink holds open for it and returns the bytes it has not sent yet.
    fn hand_over(&mut self, upload: &BlobUpload) -> impl Future<Output = Result<Vec<u8>, ConnectorError>> + Send;
    /// Takes over a partial write another sink of this target handed over, with the
    /// bytes that sink had not sent.
    fn take_over(&mut self, upload: &BlobUpload, held: Vec<u8>);
    /// Writes several small blobs whole, each into a new partial write handed over at
    /// once (as [`BlobSink::begin`], [`BlobSink::write`] and [`BlobSink::hand_over`]
    /// do for one): blob `i` is `data[ranges[i]]`. Each answers with its write and the
    /// bytes held back, or why it failed (a failed one leaves no partial write). A store
    /// that can write many at once overrides it (a folder writes a group in one hop to
    /// its blocking pool instead of two a file); `data` is handed back to be used again.
    fn write_many(
        &mut self,
        blobs: Vec<(BlobMeta, std::ops::Range<usize>)>,
        data: Vec<u8>,
    ) -> impl Future<Output = (Vec<u8>, Vec<Result<(BlobUpload, Vec<u8>), ConnectorError>>)> + Send {
        async move {
            let mut out = Vec::with_capacity(blobs.len());
            for (meta, range) in &blobs {
                let written = async {
                    let mut upload = self.begin(meta, None).await?;
                    if let Err(e) = self.write(&mut upload, &data[range.clone()]).await {
                        let _ = self.abort(&upload).await;
                        return Err(e);
                    }
                    let held = self.hand_over(&upload).await?;
                    Ok((upload, held))
                };
                out.push(written.await);
            }
            (data, out)
        }
    }
    /// Drops a partial write.
    fn abort(&mut self, upload: &BlobUpload) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Makes a folder or link, or sets a file's mode and mtime when only those differ,
    /// as the source states them, if the writer still holds `fencing`.
    fn put_meta(
        &mut self,
        dir: &DirectionId,
        source: &BlobMeta,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// [`BlobSink::put_meta`] of several paths, in order, in as few fenced transactions
    /// as the store allows; stops at the first that fails.
    fn put_meta_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<BlobMeta>,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async move {
            for m in &items {
                self.put_meta(dir, m, fencing).await?;
            }
            Ok(())
        }
    }
    /// Renames a blob on the target (a rename seen on the source); `false` when the
    /// store cannot (the engine then copies).
    fn rename(
        &mut self,
        dir: &DirectionId,
        from: &str,
        to: &str,
        fencing: i64,
    ) -> impl Future<Output = Result<bool, ConnectorError>> + Send;
    /// Deletes a blob (a folder when empty) and its manifest entry, if the writer still
    /// holds `fencing`; a missing blob is no error.
    fn delete(
        &mut self,
        dir: &DirectionId,
        path: &str,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// ferry's own state for this target (manifest, checkpoints, lease), opened on first
    /// use: every blob store keeps it the same way, so the steps below need nothing else.
    fn state(&mut self) -> impl Future<Output = Result<&mut BlobState, ConnectorError>> + Send;
    /// Up to `limit` manifest entries after `after`, in path order.
    fn manifest(
        &mut self,
        dir: &DirectionId,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ManifestEntry>, ConnectorError>> + Send {
        async move { self.state().await?.manifest(dir, after, limit).await }
    }
    /// A page of the target's listing after `after` and, with `man`, a page of the
    /// manifest after its own position (`Some(after)`), each of up to `limit`: read side
    /// by side where the store can (a folder walks its tree while SQLite reads the
    /// manifest); by default one after the other.
    fn list_with_manifest(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        man: Option<(&DirectionId, Option<&str>)>,
        limit: usize,
    ) -> impl Future<Output = Result<Listed, ConnectorError>> + Send {
        async move {
            let listed = self.list(globs, after, limit).await?;
            let manifest = match man {
                Some((dir, from)) => Some(self.manifest(dir, from, limit).await?),
                None => None,
            };
            Ok((listed, manifest))
        }
    }
    /// One path's manifest entry.
    fn entry(
        &mut self,
        dir: &DirectionId,
        path: &str,
    ) -> impl Future<Output = Result<Option<ManifestEntry>, ConnectorError>> + Send {
        async move { self.state().await?.entry(dir, path).await }
    }
    /// Records a manifest entry for a blob found identical without copying.
    fn record(
        &mut self,
        dir: &DirectionId,
        entry: &ManifestEntry,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async move { self.state().await?.record(dir, entry, fencing).await }
    }
    /// The direction's checkpoint, if any.
    fn load_checkpoint(
        &mut self,
        dir: &DirectionId,
    ) -> impl Future<Output = Result<Option<BlobCheckpoint>, ConnectorError>> + Send {
        async move { self.state().await?.load_checkpoint(dir).await }
    }
    /// Records progress, if the writer still holds `fencing`.
    fn save_checkpoint(
        &mut self,
        dir: &DirectionId,
        checkpoint: &BlobCheckpoint,
        fencing: i64,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async move { self.state().await?.save_checkpoint(dir, checkpoint, fencing).await }
    }
    /// Takes or renews the direction's lease (as [`super::Sink::lease`]).
    fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<LeaseOutcome, ConnectorError>> + Send {
        async move { self.state().await?.lease(dir, holder, ttl).await }
    }
    /// Gives the lease up (clean shutdown), if `holder.fencing` is still its tenure.
    fn release(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        async move { self.state().await?.release(dir, holder).await }
    }
}

/// The smallest multipart part ferry uploads (S3 needs 5 MiB but for the last).
pub const MIN_PART: u64 = 8 << 20;

/// The part size ferry uses for an object of `size` bytes (at most 10,000 parts, whole
/// MiB): what a multipart ETag is recomputed with.
pub fn part_size(size: u64) -> u64 {
    let need = size.div_ceil(10_000);
    MIN_PART.max(need.div_ceil(1 << 20) << 20)
}

/// Blob stores hold no typed columns: every "type" is bytes.
pub struct NoTypes;

impl super::typemap::TypeMap for NoTypes {
    fn canonical(&self, _decl: &str) -> super::typemap::Canonical {
        super::typemap::Canonical::Bytes
    }
    fn native(&self, _t: &super::typemap::Canonical, _keyed: bool) -> String {
        "bytes".into()
    }
}

/// A blob direction's position as `ferry status` shows it: `KIND:pass N after PATH`.
pub fn position(kind: &str, cp: &BlobCheckpoint) -> crate::model::Position {
    let text = match &cp.scan_after {
        Some(p) => format!("{kind}:pass {} at {p}", cp.passes + 1),
        None => format!("{kind}:pass {} done", cp.passes),
    };
    crate::model::Position::new(text.clone(), text.into_bytes(), None)
}

/// Reads a blob position back (it is only shown, never compared across passes).
pub fn parse_position(kind: &str, text: &str) -> Result<crate::model::Position, crate::model::PositionParseError> {
    if text.split_once(':').is_some_and(|(k, _)| k == kind) {
        return Ok(crate::model::Position::new(text.to_string(), text.as_bytes().to_vec(), None));
    }
    Err(crate::model::PositionParseError { text: text.into(), expected: format!("{kind}:pass N …") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_drained_only_by_a_clean_pass_begun_after_the_freeze_and_the_quiet_time() {
        let cp = |began: i64, changes: u64, failed: u64, changed: Option<i64>| BlobCheckpoint {
            done_began_us: Some(began),
            done_changes: changes,
            done_failed: failed,
            changed_us: changed,
            ..BlobCheckpoint::default()
        };
        let (frozen, quiet) = (1_000, 100);
        assert!(cp(1_500, 0, 0, Some(900)).drained(frozen, quiet));
        assert!(!cp(900, 0, 0, None).drained(frozen, quiet), "the pass began before the freeze");
        assert!(!cp(1_500, 1, 0, Some(1_400)).drained(frozen, quiet), "the pass carried a change");
        assert!(!cp(1_500, 0, 1, None).drained(frozen, quiet), "the pass could not read a path");
        assert!(!cp(1_500, 0, 0, Some(1_450)).drained(frozen, quiet), "a change within the quiet time");
        assert!(!cp(1_500, 0, 0, Some(1_600)).drained(frozen, quiet), "a change after the pass began");
        assert!(!BlobCheckpoint::default().drained(frozen, quiet), "no pass completed");
    }

    #[test]
    fn globs_match_paths_with_folders() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&g(&["*"]), "a/b/c.txt"));
        assert!(matches(&g(&["**/*.jpg"]), "a/b/c.jpg"));
        assert!(matches(&g(&["**/*.jpg"]), "c.jpg"));
        assert!(!matches(&g(&["**/*.jpg"]), "a/c.png"));
        assert!(matches(&g(&["docs/*"]), "docs/x"));
        assert!(!matches(&g(&["docs/*"]), "docs/x/y"));
    }
}
