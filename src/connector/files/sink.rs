//! A folder written as a blob sink: each file goes to `.ferry/partial/<hash of its
//! path>`, gets the source's mode and mtime (and owner when ferry runs as root), and is
//! renamed into place inside a transaction of the state file that checks the lease's
//! fencing token, with its manifest line. A partial file synced to disk survives a
//! crash: the copy resumes at its recorded length.

use std::collections::HashMap;
use std::fs::{File, FileTimes, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::{OWN_DIR, io_error, join, list, running_as_root, system_time};
use crate::connector::blob::state::BlobState;
use crate::connector::blob::{
    BlobCaps, BlobHashes, BlobKind, BlobMeta, BlobSink, BlobUpload, Finished, Listed, ManifestEntry,
};
use crate::connector::{ConnectorError, DirectionId};

/// A folder as a target.
pub struct FileSink {
    endpoint: String,
    root: PathBuf,
    state: Option<BlobState>,
    open: HashMap<String, Arc<File>>,
    root_user: bool,
}

/// The state file of a folder target.
pub fn state_path(root: &Path) -> PathBuf {
    root.join(OWN_DIR).join("state.db")
}

/// `size:mtime_ns` of a target file: what the manifest records to see it changed.
fn tag(m: &BlobMeta) -> String {
    format!("{}:{}", m.size, m.mtime_ns)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other).and_then(|r| r)
}

impl FileSink {
    /// A sink over `root`; the folder is created at [`BlobSink::prepare`] when its parent exists.
    pub fn open(endpoint: &str, root: PathBuf) -> FileSink {
        FileSink { endpoint: endpoint.into(), root, state: None, open: HashMap::new(), root_user: running_as_root() }
    }

    fn err(&self, what: &str, path: &str) -> impl FnOnce(std::io::Error) -> ConnectorError + use<> {
        let (ep, what, path) = (self.endpoint.clone(), what.to_string(), path.to_string());
        move |e| io_error(&ep, &what, &path, e)
    }

    /// A page of the tree after `after`, walked on the blocking pool (started at once,
    /// before the future is first polled).
    fn walk(
        &self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<BlobMeta>, ConnectorError>> + Send + use<> {
        let (root, globs, after) = (self.root.clone(), globs.to_vec(), after.map(str::to_string));
        let walk = tokio::task::spawn_blocking(move || list::list(&root, &globs, after.as_deref(), limit, true));
        let endpoint = self.endpoint.clone();
        async move {
            match walk.await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err((path, e))) => Err(io_error(&endpoint, "cannot list", &path, e)),
                Err(e) => Err(io_error(&endpoint, "cannot list", "", std::io::Error::other(e))),
            }
        }
    }

    /// `.ferry/partial/<2 hex>/<30 hex>` of the path's hash: spread over 256 folders, as
    /// one folder took every lane's file creations under its one lock (a seventh of a
    /// full copy's samples spun on it) and ext4 then sought free inodes in one place.
    fn partial(&self, path: &str) -> PathBuf {
        let h = blake3::hash(path.as_bytes()).to_hex();
        self.root.join(OWN_DIR).join("partial").join(&h.as_str()[..2]).join(&h.as_str()[2..32])
    }

    /// Creates (truncating) a partial file, and its folder when it is not there yet.
    fn create_partial(p: &Path) -> std::io::Result<File> {
        let open = || OpenOptions::new().write(true).create(true).truncate(true).open(p);
        match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(p.parent().unwrap_or(p))?;
                open()
            }
            r => r,
        }
    }

    /// Creates the folders above a relative path; a file in the way is removed (the
    /// source has a folder there now).
    fn make_parents(root: &Path, rel: &str) -> std::io::Result<()> {
        let Some(parent) = Path::new(rel.trim_end_matches('/')).parent() else { return Ok(()) };
        if parent.as_os_str().is_empty() {
            return Ok(());
        }
        let full = root.join(parent);
        match std::fs::create_dir_all(&full) {
            Ok(()) => Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists || e.kind() == std::io::ErrorKind::NotADirectory =>
            {
                let mut p = root.to_path_buf();
                for c in parent.components() {
                    p.push(c);
                    if let Ok(md) = std::fs::symlink_metadata(&p)
                        && !md.is_dir()
                    {
                        std::fs::remove_file(&p)?;
                    }
                }
                std::fs::create_dir_all(&full)
            }
            Err(e) => Err(e),
        }
    }

    /// Clears whatever of another kind is at `p` (a folder where a file goes, …).
    fn clear(p: &Path, keep_dir: bool) -> std::io::Result<()> {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() && !keep_dir => std::fs::remove_dir_all(p),
            Ok(md) if !md.is_dir() && keep_dir => std::fs::remove_file(p),
            _ => Ok(()),
        }
    }

    /// Gives the file, folder or link at `p` the source's owner (as root), mode and mtime
    /// (a link: its owner only).
    fn set_meta(p: &Path, m: &BlobMeta, root_user: bool) -> std::io::Result<()> {
        if m.kind == BlobKind::Link {
            if root_user && let Some((uid, gid)) = m.owner {
                std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
            }
            return Ok(());
        }
        // A folder's mtime too: the pass sets it again once what it holds has landed.
        let f = match m.kind {
            BlobKind::File => File::options().write(true).open(p).or_else(|_| File::open(p))?,
            _ => File::open(p)?,
        };
        FileSink::set_meta_open(&f, m, root_user)
    }

    /// [`FileSink::set_meta`] on a file or folder already open (a small file still being
    /// written gets its metadata without a path lookup). Owner first: a chown clears the
    /// set-id bits.
    fn set_meta_open(f: &File, m: &BlobMeta, root_user: bool) -> std::io::Result<()> {
        if root_user && let Some((uid, gid)) = m.owner {
            std::os::unix::fs::fchown(f, Some(uid), Some(gid))?;
        }
        if let Some(mode) = m.mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.set_times(FileTimes::new().set_modified(system_time(m.mtime_ns)))
    }

    /// Makes a folder or link (or sets a file's mode and mtime) as the source states it.
    fn make_meta(root: &Path, meta: &BlobMeta, root_user: bool) -> std::io::Result<()> {
        let dest = join(root, &meta.path);
        FileSink::make_parents(root, &meta.path)?;
        match meta.kind {
            BlobKind::Dir => {
                FileSink::clear(&dest, true)?;
                std::fs::create_dir_all(&dest)?;
            }
            BlobKind::Link => {
                if std::fs::symlink_metadata(&dest).is_ok() {
                    FileSink::clear(&dest, false)?;
                    if std::fs::symlink_metadata(&dest).is_ok() {
                        std::fs::remove_file(&dest)?;
                    }
                }
                std::os::unix::fs::symlink(meta.link.as_deref().unwrap_or(""), &dest)?;
            }
            BlobKind::File => {}
        }
        FileSink::set_meta(&dest, meta, root_user)
    }

    async fn fenced<T: Send + 'static>(
        &mut self,
        dir: &DirectionId,
        fencing: i64,
        what: &str,
        path: &str,
        op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, ConnectorError> {
        let err = self.err(what, path);
        let st = self.state().await?;
        st.begin_fenced(dir, fencing).await?;
        match blocking(op).await {
            Ok(v) => Ok(v),
            Err(e) => {
                st.rollback().await;
                Err(err(e))
            }
        }
    }
}

impl BlobSink for FileSink {
    async fn state(&mut self) -> Result<&mut BlobState, ConnectorError> {
        if self.state.is_none() {
            let s = BlobState::open(&self.endpoint, &state_path(&self.root), true).await?;
            self.state = s;
        }
        self.state.as_mut().ok_or_else(|| ConnectorError::Setup {
            endpoint: self.endpoint.clone(),
            problem: "ferry's state file could not be opened".into(),
            fix: "check the target folder's permissions".into(),
        })
    }

    fn caps(&self) -> BlobCaps {
        BlobCaps { tree: true, keeps_mtime: true, md5: false }
    }

    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        let root = self.root.clone();
        let r = blocking(move || {
            if !root.exists() {
                std::fs::create_dir(&root)?;
            }
            std::fs::create_dir_all(root.join(OWN_DIR).join("partial"))
        })
        .await;
        r.map_err(|e| ConnectorError::Blob {
            endpoint: self.endpoint.clone(),
            what: "cannot create ferry's folder in".into(),
            path: self.root.display().to_string(),
            source: Box::new(e),
            kind: crate::connector::ErrorKind::Setup,
            fix: Some("create the target folder (its parent must exist) and let this user write to it".into()),
        })?;
        self.state().await?;
        Ok(())
    }

    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        self.walk(globs, after, limit).await
    }

    async fn list_with_manifest(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        man: Option<(&DirectionId, Option<&str>)>,
        limit: usize,
    ) -> Result<Listed, ConnectorError> {
        // The walk runs on the blocking pool from here on, while SQLite reads the page.
        let walk = self.walk(globs, after, limit);
        let Some((dir, from)) = man else { return Ok((walk.await?, None)) };
        let st = self.state().await?;
        let (listed, manifest) = tokio::join!(walk, st.manifest(dir, from, limit));
        Ok((listed?, Some(manifest?)))
    }

    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        list::stat(&self.root, path).map_err(|e| io_error(&self.endpoint, "cannot stat", path, e))
    }

    async fn begin(&mut self, source: &BlobMeta, resume: Option<&BlobUpload>) -> Result<BlobUpload, ConnectorError> {
        let partial = self.partial(&source.path);
        let handle = partial.display().to_string();
        let durable = resume.filter(|u| u.handle == handle).map(|u| u.durable);
        let p = partial.clone();
        let (file, written) = blocking(move || {
            if let Some(d) = durable
                && let Ok(f) = OpenOptions::new().write(true).open(&p)
                && f.metadata()?.len() >= d
            {
                f.set_len(d)?;
                return Ok((f, d));
            }
            Ok((FileSink::create_partial(&p)?, 0))
        })
        .await
        .map_err(self.err("cannot create a partial file for", &source.path))?;
        self.open.insert(handle.clone(), Arc::new(file));
        Ok(BlobUpload {
            path: source.path.clone(),
            handle,
            written,
            durable: written,
            size: source.size,
            mtime_ns: source.mtime_ns,
            meta_set: false,
        })
    }

    async fn write(&mut self, upload: &mut BlobUpload, data: &[u8]) -> Result<(), ConnectorError> {
        let Some(f) = self.open.get(&upload.handle).cloned() else {
            return Err(io_error(
                &self.endpoint,
                "no partial file open for",
                &upload.path,
                std::io::Error::other("lost"),
            ));
        };
        let (buf, at) = (data.to_vec(), upload.written);
        blocking(move || f.write_all_at(&buf, at)).await.map_err(self.err("cannot write", &upload.path))?;
        upload.written += data.len() as u64;
        Ok(())
    }

    async fn flush(&mut self, upload: &mut BlobUpload) -> Result<(), ConnectorError> {
        if let Some(f) = self.open.get(&upload.handle).cloned() {
            blocking(move || f.sync_data()).await.map_err(self.err("cannot sync", &upload.path))?;
        }
        upload.durable = upload.written;
        Ok(())
    }

    async fn finish(
        &mut self,
        dir: &DirectionId,
        upload: BlobUpload,
        source: &BlobMeta,
        hashes: &BlobHashes,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        let file = self.open.remove(&upload.handle);
        let preset = upload.meta_set;
        let partial = PathBuf::from(&upload.handle);
        let (root, rel, meta, root_user) = (self.root.clone(), source.path.clone(), source.clone(), self.root_user);
        let dest = join(&root, &rel);
        // Metadata goes on before the rename, so the file appears whole.
        let p = partial.clone();
        blocking(move || {
            drop(file);
            if preset { Ok(()) } else { FileSink::set_meta(&p, &meta, root_user) }
        })
        .await
        .map_err(self.err("cannot set mode and mtime of", &source.path))?;
        let (r2, rel2) = (root.clone(), rel.clone());
        self.fenced(dir, fencing, "cannot move into place", &source.path, move || {
            FileSink::make_parents(&r2, &rel2)?;
            FileSink::clear(&dest, false)?;
            std::fs::rename(&partial, &dest)
        })
        .await?;
        let entry =
            ManifestEntry::of(source, Some(hashes.clone()), Some(format!("{}:{}", source.size, source.mtime_ns)));
        let st = self.state().await?;
        let step = st.put_entry(dir, &entry).await;
        st.end(step).await
    }

    async fn finish_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<Finished>,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        for f in &items {
            self.open.remove(&f.upload.handle);
        }
        let (root, root_user) = (self.root.clone(), self.root_user);
        let files: Arc<Vec<(PathBuf, BlobMeta, bool)>> = Arc::new(
            items.iter().map(|f| (PathBuf::from(&f.upload.handle), f.source.clone(), f.upload.meta_set)).collect(),
        );
        // Metadata goes on before the renames, so each file appears whole (most were
        // given theirs while written); all in one trip to the blocking pool, as the
        // renames below.
        let fs = files.clone();
        let set = blocking(move || {
            Ok(fs
                .iter()
                .enumerate()
                .filter(|(_, (_, _, set))| !set)
                .find_map(|(i, (p, m, _))| FileSink::set_meta(p, m, root_user).err().map(|e| (i, e))))
        })
        .await
        .map_err(self.err("cannot set mode and mtime of", ""))?;
        if let Some((i, e)) = set {
            return Err(io_error(&self.endpoint, "cannot set mode and mtime of", &items[i].source.path, e));
        }
        let fs = files.clone();
        let moved = self
            .fenced(dir, fencing, "cannot move into place", "", move || {
                // Files come in path order: one folder's files follow each other, and
                // its parents are made once for them.
                let mut made: Option<&Path> = None;
                for (i, (partial, m, _)) in fs.iter().enumerate() {
                    let dest = join(&root, &m.path);
                    let parent = Path::new(&m.path).parent();
                    let parents = match made.is_some() && made == parent {
                        true => Ok(()),
                        false => FileSink::make_parents(&root, &m.path),
                    };
                    made = parent.filter(|_| parents.is_ok());
                    // A file in the way is replaced by the rename itself; only a folder
                    // there (the rename refuses it) is cleared first.
                    let step = parents.and_then(|()| {
                        std::fs::rename(partial, &dest)
                            .or_else(|_| FileSink::clear(&dest, false).and_then(|()| std::fs::rename(partial, &dest)))
                    });
                    if let Err(e) = step {
                        return Ok((i, Some(e)));
                    }
                }
                Ok((fs.len(), None))
            })
            .await?;
        // The files moved are recorded, with the transaction that fenced them.
        let (done, failed) = moved;
        let st = self.state().await?;
        let mut step = Ok(());
        for f in &items[..done] {
            let entry = ManifestEntry::of(&f.source, Some(f.hashes.clone()), Some(tag(&f.source)));
            step = st.put_entry(dir, &entry).await;
            if step.is_err() {
                break;
            }
        }
        st.end(step).await?;
        match failed {
            Some(e) => Err(io_error(&self.endpoint, "cannot move into place", &items[done].source.path, e)),
            None => Ok(()),
        }
    }

    async fn hand_over(&mut self, upload: &BlobUpload) -> Result<Vec<u8>, ConnectorError> {
        // Written straight to the partial file: nothing held back but the open file.
        self.open.remove(&upload.handle);
        Ok(Vec::new())
    }

    fn take_over(&mut self, _upload: &BlobUpload, _held: Vec<u8>) {}

    async fn write_many(
        &mut self,
        blobs: Vec<(BlobMeta, std::ops::Range<usize>)>,
        data: Vec<u8>,
    ) -> (Vec<u8>, Vec<Result<(BlobUpload, Vec<u8>), ConnectorError>>) {
        // One hop to the blocking pool for the whole group: each partial file created,
        // written, given the source's mode, owner and mtime, and closed (handed over:
        // nothing is held open for it). A blob written whole here is a whole file.
        let partials: Vec<PathBuf> = blobs.iter().map(|(m, _)| self.partial(&m.path)).collect();
        let ps = partials.clone();
        let metas: Vec<(BlobMeta, std::ops::Range<usize>)> = blobs.clone();
        let root_user = self.root_user;
        let done = tokio::task::spawn_blocking(move || {
            let done: Vec<std::io::Result<()>> = ps
                .iter()
                .zip(&metas)
                .map(|(p, (m, r))| {
                    let written = FileSink::create_partial(p).and_then(|f| {
                        f.write_all_at(&data[r.clone()], 0)?;
                        match r.len() as u64 == m.size {
                            true => FileSink::set_meta_open(&f, m, root_user),
                            false => Ok(()),
                        }
                    });
                    if written.is_err() {
                        let _ = std::fs::remove_file(p);
                    }
                    written
                })
                .collect();
            (data, done)
        })
        .await;
        let (data, done) = match done {
            Ok(d) => d,
            Err(e) => {
                let failed = blobs
                    .iter()
                    .map(|(m, _)| {
                        Err(io_error(&self.endpoint, "cannot write", &m.path, std::io::Error::other(e.to_string())))
                    })
                    .collect();
                return (Vec::new(), failed);
            }
        };
        let out = blobs
            .into_iter()
            .zip(partials)
            .zip(done)
            .map(|(((m, r), p), d)| match d {
                Ok(()) => {
                    let written = r.len() as u64;
                    let upload = BlobUpload {
                        path: m.path.clone(),
                        handle: p.display().to_string(),
                        written,
                        durable: 0,
                        size: m.size,
                        mtime_ns: m.mtime_ns,
                        meta_set: written == m.size,
                    };
                    Ok((upload, Vec::new()))
                }
                Err(e) => Err(io_error(&self.endpoint, "cannot write", &m.path, e)),
            })
            .collect();
        (data, out)
    }

    async fn abort(&mut self, upload: &BlobUpload) -> Result<(), ConnectorError> {
        self.open.remove(&upload.handle);
        let p = PathBuf::from(&upload.handle);
        if p.starts_with(self.root.join(OWN_DIR)) {
            let _ = blocking(move || std::fs::remove_file(p)).await;
        }
        Ok(())
    }

    async fn put_meta(&mut self, dir: &DirectionId, source: &BlobMeta, fencing: i64) -> Result<(), ConnectorError> {
        let (root, meta, root_user) = (self.root.clone(), source.clone(), self.root_user);
        self.fenced(dir, fencing, "cannot create", &source.path, move || FileSink::make_meta(&root, &meta, root_user))
            .await?;
        let st = self.state().await?;
        if source.kind == BlobKind::File {
            let old = st.entry(dir, &source.path).await?;
            let entry = ManifestEntry::of(
                source,
                old.filter(|o| o.size == source.size).and_then(|o| o.hashes),
                Some(tag(source)),
            );
            if let Err(e) = st.put_entry(dir, &entry).await {
                st.rollback().await;
                return Err(e);
            }
        }
        st.commit().await
    }

    async fn put_meta_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<BlobMeta>,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        if items.iter().any(|m| m.kind == BlobKind::File) {
            for m in &items {
                self.put_meta(dir, m, fencing).await?;
            }
            return Ok(());
        }
        // Folders and links: no manifest lines, one fenced transaction, one trip to the
        // blocking pool.
        let (root, root_user) = (self.root.clone(), self.root_user);
        let failed = self
            .fenced(dir, fencing, "cannot create", "", move || {
                Ok(items.into_iter().find_map(|m| FileSink::make_meta(&root, &m, root_user).err().map(|e| (m.path, e))))
            })
            .await?;
        self.state().await?.commit().await?;
        match failed {
            Some((path, e)) => Err(io_error(&self.endpoint, "cannot create", &path, e)),
            None => Ok(()),
        }
    }

    async fn rename(&mut self, dir: &DirectionId, from: &str, to: &str, fencing: i64) -> Result<bool, ConnectorError> {
        let root = self.root.clone();
        let (a, b, to2) = (join(&root, from), join(&root, to), to.to_string());
        self.fenced(dir, fencing, "cannot rename", from, move || {
            FileSink::make_parents(&root, &to2)?;
            std::fs::rename(a, b)
        })
        .await?;
        let st = self.state().await?;
        let step = st.rename_entry(dir, from, to).await;
        st.end(step).await?;
        Ok(true)
    }

    async fn delete(&mut self, dir: &DirectionId, path: &str, fencing: i64) -> Result<(), ConnectorError> {
        let dest = join(&self.root, path);
        let is_dir_path = path.ends_with('/');
        let shown = path.to_string();
        self.fenced(dir, fencing, "cannot delete", path, move || {
            match std::fs::symlink_metadata(&dest) {
                // Gone, or a file replaced a folder above it: nothing of it is left.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(()),
                Err(e) => Err(e),
                Ok(md) if md.is_dir() => {
                    if is_dir_path {
                        match std::fs::remove_dir(&dest) {
                            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                                warn!(path = %shown, "folder gone from the source still holds files the task does not copy; kept");
                                Ok(())
                            }
                            r => r,
                        }
                    } else {
                        std::fs::remove_dir_all(&dest)
                    }
                }
                // A folder's path (`a/`) names only a folder: a file there now is the
                // source's (it replaced the folder) and stays.
                Ok(_) if is_dir_path => Ok(()),
                Ok(_) => match std::fs::remove_file(&dest) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r,
                },
            }
        })
        .await?;
        let st = self.state().await?;
        let step = st.remove_entry(dir, path).await;
        st.end(step).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_listing_page_read_with_the_manifest_is_the_same_as_each_read_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("t");
        let mut sink = FileSink::open("dst", root.clone());
        sink.prepare().await.expect("prepare");
        for p in ["a", "b/c", "b/d", "e"] {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("dir");
            std::fs::write(&f, p).expect("write");
        }
        let d = DirectionId { task: "files".into(), from: "a".into(), to: "b".into() };
        let me = crate::connector::blob::state::holder("here", std::process::id(), 0);
        let st = sink.state().await.expect("state");
        st.lease(&d, &me, Duration::from_secs(15)).await.expect("lease");
        st.begin_fenced(&d, 1).await.expect("fenced");
        let mut step = Ok(());
        // The manifest holds a line the tree lacks (`ab`), and lacks the folder `b/`.
        for p in ["a", "ab", "b/c", "e"] {
            let m = list::stat(&root, p).expect("stat").unwrap_or_else(|| BlobMeta {
                path: p.into(),
                kind: BlobKind::File,
                size: 1,
                mtime_ns: 1,
                mode: None,
                owner: None,
                etag: None,
                link: None,
            });
            step = step.and(st.put_entry(&d, &ManifestEntry::of(&m, None, Some(tag(&m)))).await);
        }
        st.end(step).await.expect("manifest written");
        let all = vec!["*".to_string()];
        let paths = |v: &[BlobMeta]| v.iter().map(|m| m.path.clone()).collect::<Vec<_>>();
        for (after, from) in [(None, None), (Some("a"), Some("ab")), (Some("b/"), None), (Some("e"), Some("e"))] {
            let (listed, manifest) =
                sink.list_with_manifest(&all, after, Some((&d, from)), 2).await.expect("listed with the manifest");
            let alone = sink.list(&all, after, 2).await.expect("listed");
            let lines = sink.manifest(&d, from, 2).await.expect("manifest");
            assert_eq!(paths(&listed), paths(&alone), "listing after {after:?}");
            let manifest = manifest.expect("the manifest page was asked for");
            assert_eq!(
                manifest.iter().map(|m| &m.path).collect::<Vec<_>>(),
                lines.iter().map(|m| &m.path).collect::<Vec<_>>(),
                "manifest after {from:?}"
            );
        }
        let (_, first) = sink.list_with_manifest(&all, Some("b/c"), Some((&d, Some("a"))), 2).await.expect("pages");
        assert_eq!(first.expect("asked for").iter().map(|m| m.path.as_str()).collect::<Vec<_>>(), ["ab", "b/c"]);
        let (listed, manifest) = sink.list_with_manifest(&all, None, None, 10).await.expect("listed alone");
        assert_eq!(paths(&listed), ["a", "b/", "b/c", "b/d", "e"]);
        assert!(manifest.is_none(), "no manifest page read when none was asked for");
    }
}
