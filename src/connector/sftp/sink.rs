//! A remote folder written over SFTP as a blob sink: each file goes to
//! `.ferry/partial/<hash of its path>` on the server, gets the source's mode and mtime,
//! and is renamed into place by `posix-rename@openssh.com` (an atomic rename over the
//! old file) inside a transaction of the local state file that checks the lease's
//! fencing token, with its manifest line. A server without that extension gets a
//! remove then a plain rename (a reader may find the path missing in between). A
//! partial file survives a crash of ferry: the copy resumes at its recorded length.

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use russh_sftp::client::error::Error;
use russh_sftp::client::fs::Metadata;
use russh_sftp::protocol::{OpenFlags, Packet, StatusCode};
use tracing::warn;

use super::link::{self, POSIX_RENAME, RawLink};
use super::list::{self, Tree};
use super::{SftpUrl, not_found, sftp_error};
use crate::connector::blob::state::BlobState;
use crate::connector::blob::{BlobCaps, BlobHashes, BlobKind, BlobMeta, BlobSink, BlobUpload, ManifestEntry};
use crate::connector::endpoint::Endpoint;
use crate::connector::files::OWN_DIR;
use crate::connector::{ConnectorError, DirectionId};

/// Bytes per SFTP write request (OpenSSH takes up to 256 KiB).
const WRITE: usize = 64 << 10;
/// Write requests in flight at once.
const IN_FLIGHT: usize = 16;

/// A remote folder as a target.
pub struct SftpSink {
    endpoint: String,
    url: SftpUrl,
    link: RawLink,
    state_path: PathBuf,
    state: Option<BlobState>,
    /// Open partial files: upload handle -> SFTP handle.
    open: HashMap<String, String>,
}

/// The local state file of an SFTP target: `state=` in the URL, else ferry's data folder.
pub fn state_path(url: &SftpUrl) -> PathBuf {
    match &url.state {
        Some(p) => PathBuf::from(p),
        None => crate::connector::blob::state::local_path(
            "sftp",
            &url.host,
            &format!("{}@{}:{}{}", url.user.as_deref().unwrap_or(""), url.host, url.port, url.root),
        ),
    }
}

/// `size:mtime_ns` of a target file: what the manifest records to see it changed
/// behind ferry's back (SFTP carries whole seconds).
fn tag(m: &BlobMeta) -> String {
    format!("{}:{}", m.size, m.mtime_ns)
}

/// A target entry with its tag as ETag, so the engine compares it with the manifest.
fn tagged(mut m: BlobMeta) -> BlobMeta {
    if m.kind == BlobKind::File {
        m.etag = Some(tag(&m));
    }
    m
}

/// The attributes that give a path the source's mode and mtime.
fn attrs_of(m: &BlobMeta) -> Metadata {
    let secs = u32::try_from(m.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let time = (m.kind == BlobKind::File).then_some(secs);
    Metadata { permissions: m.mode, atime: time, mtime: time, ..Metadata::default() }
}

/// `string` as SFTP encodes it: a 32-bit length, then the bytes.
fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn status_ok(p: Packet) -> Result<(), Error> {
    match p {
        Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(s) => Err(Error::Status(s)),
        _ => Err(Error::UnexpectedPacket),
    }
}

impl SftpSink {
    /// Logs in; the folder is created at [`BlobSink::prepare`] when its parent exists.
    pub async fn open(ep: &Endpoint, url: SftpUrl) -> Result<SftpSink, ConnectorError> {
        let link = link::connect_raw(ep, &url).await?;
        if !link.posix_rename {
            warn!(endpoint = %ep.name, "the SFTP server lacks posix-rename@openssh.com: a file is replaced by a remove then a rename, so a reader may find it missing in between");
        }
        Ok(SftpSink {
            endpoint: ep.name.clone(),
            state_path: state_path(&url),
            url,
            link,
            state: None,
            open: HashMap::new(),
        })
    }

    /// `Ok` when the target folder is one, or is missing but `parent` is a folder (then
    /// `prepare` makes it); else what is wrong with the fix.
    pub async fn check_folder(&self, parent: &str) -> Result<(), ConnectorError> {
        let at = |p: &str| format!("{p} on {}:{}", self.url.host, self.url.port);
        let problem = match self.lstat(&self.url.root).await {
            Ok(Some(m)) if list::kind_of(&m) == Some(BlobKind::Dir) => return Ok(()),
            Ok(Some(_)) => format!("{} is not a folder", at(&self.url.root)),
            Ok(None) => match self.lstat(parent).await {
                Ok(Some(m)) if list::kind_of(&m) == Some(BlobKind::Dir) => return Ok(()),
                _ => format!("neither {} nor its parent folder exists", at(&self.url.root)),
            },
            Err(e) => format!("cannot stat {}: {e}", at(&self.url.root)),
        };
        Err(ConnectorError::Setup {
            endpoint: self.endpoint.clone(),
            problem,
            fix: "point the sftp:// URL at a folder the SFTP user may write to (or whose parent exists)".into(),
        })
    }

    fn err(&self, what: &str, path: &str) -> impl FnOnce(Error) -> ConnectorError + use<> {
        let (ep, what, path) = (self.endpoint.clone(), what.to_string(), path.to_string());
        move |e| sftp_error(&ep, &what, &path, e)
    }

    /// The partial file of a path, on the server.
    fn partial(&self, path: &str) -> String {
        let h = blake3::hash(path.as_bytes()).to_hex();
        format!("{}/{OWN_DIR}/partial/{}", self.url.root, &h.as_str()[..32])
    }

    async fn lstat(&self, full: &str) -> Result<Option<Metadata>, Error> {
        match self.link.raw.lstat(full).await {
            Ok(a) => Ok(Some(a.attrs)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn mkdir(&self, full: &str) -> Result<(), Error> {
        let Err(e) = self.link.raw.mkdir(full, Metadata::default()).await else { return Ok(()) };
        // Made already (or by an earlier, interrupted step): fine.
        match self.lstat(full).await? {
            Some(m) if list::kind_of(&m) == Some(BlobKind::Dir) => Ok(()),
            _ => Err(e),
        }
    }

    /// Creates the folders above a relative path; a file in the way is removed (the
    /// source has a folder there now).
    async fn make_parents(&self, rel: &str) -> Result<(), Error> {
        let parts: Vec<&str> = rel.trim_end_matches('/').split('/').collect();
        let mut at = self.url.root.clone();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at = format!("{at}/{part}");
            match self.lstat(&at).await? {
                Some(m) if list::kind_of(&m) == Some(BlobKind::Dir) => {}
                Some(_) => {
                    self.link.raw.remove(at.as_str()).await?;
                    self.mkdir(&at).await?;
                }
                None => self.mkdir(&at).await?,
            }
        }
        Ok(())
    }

    /// Removes a path whatever it is, a folder with all it holds.
    async fn remove_all(&self, full: &str) -> Result<(), Error> {
        let Some(m) = self.lstat(full).await? else { return Ok(()) };
        if list::kind_of(&m) != Some(BlobKind::Dir) {
            return self.link.raw.remove(full).await.map(|_| ());
        }
        for (name, _) in self.link.raw.entries(full.to_string()).await? {
            if name != "." && name != ".." {
                Box::pin(self.remove_all(&format!("{full}/{name}"))).await?;
            }
        }
        self.link.raw.rmdir(full).await.map(|_| ())
    }

    /// Clears whatever of another kind is at `full` (a folder where a file goes, …).
    async fn clear(&self, full: &str, keep_dir: bool) -> Result<(), Error> {
        match self.lstat(full).await? {
            Some(m) if (list::kind_of(&m) == Some(BlobKind::Dir)) != keep_dir => self.remove_all(full).await,
            _ => Ok(()),
        }
    }

    /// Renames `from` over `to` atomically where the server can; else removes `to` first.
    async fn rename_over(&self, from: &str, to: &str) -> Result<(), Error> {
        if self.link.posix_rename {
            let mut data = Vec::with_capacity(from.len() + to.len() + 8);
            put_string(&mut data, from);
            put_string(&mut data, to);
            return status_ok(self.link.raw.extended(POSIX_RENAME, data).await?);
        }
        if self.lstat(to).await?.is_some() {
            self.link.raw.remove(to).await?;
        }
        self.link.raw.rename(from, to).await.map(|_| ())
    }

    /// Opens the state transaction that checks the fencing token: the server step that
    /// follows runs only while this writer holds the lease.
    async fn fence(&mut self, dir: &DirectionId, fencing: i64) -> Result<(), ConnectorError> {
        self.state().await?.begin_fenced(dir, fencing).await
    }

    /// After the server step of a fenced transaction: on failure the transaction is
    /// rolled back and the error names the path; on success it stays open for the
    /// manifest line.
    async fn fenced<T>(&mut self, step: Result<T, Error>, what: &str, path: &str) -> Result<T, ConnectorError> {
        match step {
            Ok(v) => Ok(v),
            Err(e) => {
                self.state().await?.rollback().await;
                Err(sftp_error(&self.endpoint, what, path, e))
            }
        }
    }

    async fn stat_rel(&self, path: &str) -> Result<Option<BlobMeta>, Error> {
        let full = self.url.join(path);
        let Some(md) = self.lstat(&full).await? else { return Ok(None) };
        let kind = list::kind_of(&md);
        let link = if kind == Some(BlobKind::Link) { Some(self.link.raw.link_target(full).await?) } else { None };
        let rel = if kind == Some(BlobKind::Dir) {
            format!("{}/", path.trim_end_matches('/'))
        } else {
            path.trim_end_matches('/').to_string()
        };
        Ok(list::blob_meta(&rel, &md, link).map(tagged))
    }
}

impl BlobSink for SftpSink {
    async fn state(&mut self) -> Result<&mut BlobState, ConnectorError> {
        let st = match self.state.take() {
            Some(st) => st,
            None => BlobState::open_local(&self.endpoint, &self.state_path, "sftp://").await?,
        };
        Ok(self.state.insert(st))
    }

    fn caps(&self) -> BlobCaps {
        // Whole-second mtimes: the manifest tells what source state a file holds.
        BlobCaps { tree: true, keeps_mtime: false, md5: false }
    }

    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        let root = self.url.root.clone();
        let made = async {
            self.mkdir(&root).await?;
            self.mkdir(&format!("{root}/{OWN_DIR}")).await?;
            self.mkdir(&format!("{root}/{OWN_DIR}/partial")).await
        }
        .await;
        made.map_err(|e| ConnectorError::Blob {
            endpoint: self.endpoint.clone(),
            what: "cannot create ferry's folder in".into(),
            path: root.clone(),
            source: Box::new(e),
            kind: crate::connector::ErrorKind::Setup,
            fix: Some(
                "create the target folder on the server (its parent must exist) and let the SFTP user write to it"
                    .into(),
            ),
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
        let page = list::list(&self.link.raw, &self.url, globs, after, limit, true)
            .await
            .map_err(|(path, e)| sftp_error(&self.endpoint, "cannot list", &path, e))?;
        Ok(page.into_iter().map(tagged).collect())
    }

    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        self.stat_rel(path).await.map_err(|e| sftp_error(&self.endpoint, "cannot stat", path, e))
    }

    async fn begin(&mut self, source: &BlobMeta, resume: Option<&BlobUpload>) -> Result<BlobUpload, ConnectorError> {
        let partial = self.partial(&source.path);
        let durable = resume.filter(|u| u.handle == partial).map(|u| u.durable);
        let r = async {
            if let Some(d) = durable
                && self.lstat(&partial).await?.is_some_and(|m| m.size.unwrap_or(0) >= d)
            {
                let h = self.link.raw.open(partial.as_str(), OpenFlags::WRITE, Metadata::default()).await?.handle;
                let cut = Metadata { size: Some(d), ..Metadata::default() };
                self.link.raw.fsetstat(h.as_str(), cut).await?;
                return Ok((h, d));
            }
            let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
            let h = self.link.raw.open(partial.as_str(), flags, Metadata::default()).await?.handle;
            Ok((h, 0))
        }
        .await;
        let (handle, written) = r.map_err(self.err("cannot create a partial file for", &source.path))?;
        self.open.insert(partial.clone(), handle);
        Ok(BlobUpload {
            path: source.path.clone(),
            handle: partial,
            written,
            durable: written,
            size: source.size,
            mtime_ns: source.mtime_ns,
            meta_set: false,
        })
    }

    async fn write(&mut self, upload: &mut BlobUpload, data: &[u8]) -> Result<(), ConnectorError> {
        let Some(h) = self.open.get(&upload.handle).cloned() else {
            return Err(sftp_error(&self.endpoint, "no partial file open for", &upload.path, Error::UnexpectedPacket));
        };
        let at = upload.written;
        let raw = &self.link.raw;
        // Several write requests in flight: one round trip per request would bound
        // the copy by the link's latency.
        let pieces: Vec<(u64, Vec<u8>)> =
            data.chunks(WRITE).enumerate().map(|(i, piece)| (at + (i * WRITE) as u64, piece.to_vec())).collect();
        stream::iter(pieces)
            .map(|(off, piece)| raw.write(h.as_str(), off, piece))
            .buffer_unordered(IN_FLIGHT)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(self.err("cannot write", &upload.path))?;
        upload.written += data.len() as u64;
        Ok(())
    }

    async fn flush(&mut self, upload: &mut BlobUpload) -> Result<(), ConnectorError> {
        // Every write was acknowledged, so it is in the server's file; fsync makes it
        // survive the server's crash too, where the server offers it.
        if self.link.fsync
            && let Some(h) = self.open.get(&upload.handle).cloned()
        {
            self.link.raw.fsync(h).await.map_err(self.err("cannot sync", &upload.path))?;
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
        let handle = self.open.remove(&upload.handle);
        // Metadata goes on before the rename, so the file appears whole.
        let r = async {
            if let Some(h) = handle {
                self.link.raw.fsetstat(h.as_str(), attrs_of(source)).await?;
                self.link.raw.close(h).await?;
            } else {
                self.link.raw.setstat(upload.handle.as_str(), attrs_of(source)).await?;
            }
            Ok(())
        }
        .await;
        r.map_err(self.err("cannot set mode and mtime of", &source.path))?;
        let dest = self.url.join(&source.path);
        self.fence(dir, fencing).await?;
        let step = async {
            self.make_parents(&source.path).await?;
            self.clear(&dest, false).await?;
            self.rename_over(&upload.handle, &dest).await
        }
        .await;
        self.fenced(step, "cannot move into place", &source.path).await?;
        let target = self.stat_rel(&source.path).await.ok().flatten().and_then(|t| t.etag);
        let entry = ManifestEntry::of(source, Some(hashes.clone()), target);
        let st = self.state().await?;
        let step = st.put_entry(dir, &entry).await;
        st.end(step).await
    }

    async fn hand_over(&mut self, upload: &BlobUpload) -> Result<Vec<u8>, ConnectorError> {
        // The handle is this session's: closed here, the file is found by its path.
        if let Some(h) = self.open.remove(&upload.handle) {
            self.link.raw.close(h).await.map_err(self.err("cannot close", &upload.path))?;
        }
        Ok(Vec::new())
    }

    fn take_over(&mut self, _upload: &BlobUpload, _held: Vec<u8>) {}

    async fn abort(&mut self, upload: &BlobUpload) -> Result<(), ConnectorError> {
        if let Some(h) = self.open.remove(&upload.handle) {
            let _ = self.link.raw.close(h).await;
        }
        if upload.handle.starts_with(&format!("{}/{OWN_DIR}/", self.url.root)) {
            let _ = self.link.raw.remove(upload.handle.as_str()).await;
        }
        Ok(())
    }

    async fn put_meta(&mut self, dir: &DirectionId, source: &BlobMeta, fencing: i64) -> Result<(), ConnectorError> {
        let dest = self.url.join(&source.path);
        self.fence(dir, fencing).await?;
        let step = async {
            self.make_parents(&source.path).await?;
            match source.kind {
                BlobKind::Dir => {
                    self.clear(&dest, true).await?;
                    self.mkdir(&dest).await?;
                }
                BlobKind::Link => {
                    self.remove_all(&dest).await?;
                    // OpenSSH's server takes SSH_FXP_SYMLINK's two paths the other way
                    // round from the draft: the link's target first, then the link.
                    self.link.raw.symlink(source.link.as_deref().unwrap_or(""), dest.as_str()).await?;
                    return Ok(());
                }
                BlobKind::File => {}
            }
            self.link.raw.setstat(dest.as_str(), attrs_of(source)).await.map(|_| ())
        }
        .await;
        self.fenced(step, "cannot create", &source.path).await?;
        let target = if source.kind == BlobKind::File {
            self.stat_rel(&source.path).await.ok().flatten().and_then(|t| t.etag)
        } else {
            None
        };
        let st = self.state().await?;
        if source.kind == BlobKind::File {
            let old = st.entry(dir, &source.path).await?;
            let entry = ManifestEntry::of(source, old.filter(|o| o.size == source.size).and_then(|o| o.hashes), target);
            if let Err(e) = st.put_entry(dir, &entry).await {
                st.rollback().await;
                return Err(e);
            }
        }
        st.commit().await
    }

    async fn rename(&mut self, dir: &DirectionId, from: &str, to: &str, fencing: i64) -> Result<bool, ConnectorError> {
        let (a, b) = (self.url.join(from), self.url.join(to));
        self.fence(dir, fencing).await?;
        let step = async {
            self.make_parents(to).await?;
            self.rename_over(&a, &b).await
        }
        .await;
        self.fenced(step, "cannot rename", from).await?;
        let st = self.state().await?;
        let step = st.rename_entry(dir, from, to).await;
        st.end(step).await?;
        Ok(true)
    }

    async fn delete(&mut self, dir: &DirectionId, path: &str, fencing: i64) -> Result<(), ConnectorError> {
        let dest = self.url.join(path);
        let is_dir_path = path.ends_with('/');
        self.fence(dir, fencing).await?;
        let s = &*self;
        let step = async {
            let Some(md) = s.lstat(&dest).await? else { return Ok(()) };
            let is_dir = list::kind_of(&md) == Some(BlobKind::Dir);
            match (is_dir, is_dir_path) {
                (true, true) => match s.link.raw.rmdir(dest.as_str()).await {
                    Ok(_) => Ok(()),
                    Err(Error::Status(st)) if st.status_code == StatusCode::Failure => {
                        warn!(path = %path, "folder gone from the source still holds files the task does not copy; kept");
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                (true, false) => s.remove_all(&dest).await,
                // A folder's path (`a/`) names only a folder: a file there now is the
                // source's (it replaced the folder) and stays.
                (false, true) => Ok(()),
                (false, false) => match s.link.raw.remove(dest.as_str()).await {
                    Err(e) if not_found(&e) => Ok(()),
                    r => r.map(|_| ()),
                },
            }
        }
        .await;
        self.fenced(step, "cannot delete", path).await?;
        let st = self.state().await?;
        let step = st.remove_entry(dir, path).await;
        st.end(step).await
    }
}
