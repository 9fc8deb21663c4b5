//! A remote folder tree listed over SFTP in the same order and pages as a local one
//! (see [`crate::connector::files::list`]): each folder's entries come with their
//! attributes from one READDIR, sorted with folders keyed as `name/`.

use futures_util::future::BoxFuture;
use russh_sftp::client::error::Error;
use russh_sftp::client::fs::Metadata;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::StatusCode;
use tracing::warn;

use super::SftpUrl;
use crate::connector::blob::{BlobKind, BlobMeta, matches, matches_all};
use crate::connector::files::OWN_DIR;

/// What went wrong, on which relative path.
pub type ListError = (String, Error);

/// A remote tree as a listing reads it: a source's session or a target's raw one.
pub trait Tree: Sync {
    /// The entries of a folder (`.` and `..` included or not) with their attributes.
    fn entries(&self, path: String) -> BoxFuture<'_, Result<Vec<(String, Metadata)>, Error>>;
    /// A link's target.
    fn link_target(&self, path: String) -> BoxFuture<'_, Result<String, Error>>;
}

impl Tree for SftpSession {
    fn entries(&self, path: String) -> BoxFuture<'_, Result<Vec<(String, Metadata)>, Error>> {
        Box::pin(async move { Ok(self.read_dir(path).await?.map(|e| (e.file_name(), e.metadata())).collect()) })
    }
    fn link_target(&self, path: String) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(self.read_link(path))
    }
}

impl Tree for RawSftpSession {
    fn entries(&self, path: String) -> BoxFuture<'_, Result<Vec<(String, Metadata)>, Error>> {
        Box::pin(async move {
            let handle = self.opendir(path).await?.handle;
            let mut out = Vec::new();
            let read = loop {
                match self.readdir(handle.as_str()).await {
                    Ok(name) => out.extend(name.files.into_iter().map(|f| (f.filename, f.attrs))),
                    Err(Error::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            let closed = self.close(handle).await;
            read?;
            closed?;
            Ok(out)
        })
    }
    fn link_target(&self, path: String) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move {
            let name = self.readlink(path).await?;
            name.files.into_iter().next().map(|f| f.filename).ok_or(Error::UnexpectedBehavior("no link target".into()))
        })
    }
}

/// Up to `limit` entries of the tree after `after` that match the globs; with
/// `skip_own` (a target) ferry's `.ferry/` folder is left out.
pub async fn list(
    sftp: &dyn Tree,
    url: &SftpUrl,
    globs: &[String],
    after: Option<&str>,
    limit: usize,
    skip_own: bool,
) -> Result<Vec<BlobMeta>, ListError> {
    let mut out = Vec::new();
    let walk = Walk { sftp, url, globs, all: matches_all(globs), after, limit, skip_own };
    walk.dir(String::new(), &mut out).await?;
    Ok(out)
}

struct Walk<'a> {
    sftp: &'a dyn Tree,
    url: &'a SftpUrl,
    globs: &'a [String],
    all: bool,
    after: Option<&'a str>,
    limit: usize,
    skip_own: bool,
}

impl<'a> Walk<'a> {
    /// Lists folder `rel` (`""` or `a/b/`) into `out`; `true` once the page is full.
    fn dir<'b>(&'b self, rel: String, out: &'b mut Vec<BlobMeta>) -> BoxFuture<'b, Result<bool, ListError>> {
        Box::pin(async move {
            let rd = self.sftp.entries(self.url.join(&rel)).await.map_err(|e| (rel.clone(), e))?;
            let mut entries: Vec<(String, Metadata)> = Vec::new();
            for (name, md) in rd {
                if name == "." || name == ".." || (self.skip_own && rel.is_empty() && name == OWN_DIR) {
                    continue;
                }
                entries.push((if kind_of(&md) == Some(BlobKind::Dir) { format!("{name}/") } else { name }, md));
            }
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, md) in entries {
                let full = format!("{rel}{key}");
                if kind_of(&md) == Some(BlobKind::Dir) {
                    // Skip a subtree that sorts wholly before `after`.
                    if let Some(a) = self.after
                        && full.as_str() <= a
                        && !a.starts_with(full.as_str())
                    {
                        continue;
                    }
                    if self.all
                        && self.after.is_none_or(|a| full.as_str() > a)
                        && let Some(m) = blob_meta(&full, &md, None)
                    {
                        out.push(m);
                        if out.len() >= self.limit {
                            return Ok(true);
                        }
                    }
                    match self.dir(full, out).await {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        // Gone since it was listed.
                        Err((_, e)) if super::not_found(&e) => {}
                        Err(e) => return Err(e),
                    }
                } else {
                    if self.after.is_some_and(|a| full.as_str() <= a) || !matches(self.globs, &full) {
                        continue;
                    }
                    let link = if kind_of(&md) == Some(BlobKind::Link) {
                        match self.sftp.link_target(self.url.join(&full)).await {
                            Ok(t) => Some(t),
                            Err(e) if super::not_found(&e) => continue,
                            Err(e) => return Err((full, e)),
                        }
                    } else {
                        None
                    };
                    let Some(m) = blob_meta(&full, &md, link) else { continue };
                    out.push(m);
                    if out.len() >= self.limit {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })
    }
}

/// The kind of an entry by its mode's type bits (`S_IFMT`); `None` for special files.
pub fn kind_of(md: &Metadata) -> Option<BlobKind> {
    match md.permissions.unwrap_or(0) & 0o170000 {
        0o040000 => Some(BlobKind::Dir),
        0o100000 => Some(BlobKind::File),
        0o120000 => Some(BlobKind::Link),
        _ => None,
    }
}

/// A listed entry as ferry's metadata; `None` (with a warning) for special files.
pub fn blob_meta(rel: &str, md: &Metadata, link: Option<String>) -> Option<BlobMeta> {
    let Some(kind) = kind_of(md) else {
        warn!(path = %rel, "skipping a special file: ferry copies files, folders and links only");
        return None;
    };
    let base = rel.trim_end_matches('/');
    let (path, size) = match kind {
        BlobKind::Dir => (format!("{base}/"), 0),
        BlobKind::Link => (base.to_string(), 0),
        BlobKind::File => (base.to_string(), md.size.unwrap_or(0)),
    };
    Some(BlobMeta {
        path,
        kind,
        size,
        // SFTP v3 carries whole seconds.
        mtime_ns: i64::from(md.mtime.unwrap_or(0)) * 1_000_000_000,
        mode: md.permissions.map(|p| p & 0o7777),
        owner: md.uid.zip(md.gid),
        etag: None,
        link,
    })
}
