//! A folder tree listed in byte order of the `/`-separated path, a page at a time: each
//! folder's entries are sorted with folders keyed as `name/`, so a depth-first walk
//! yields every path in global order; a page starts after a path by skipping whole
//! subtrees that sort before it. Only one folder's entries are in memory per level.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tracing::warn;

use super::{OWN_DIR, mtime_ns};
use crate::connector::blob::{BlobKind, BlobMeta, matches, matches_all};

/// What went wrong, on which relative path.
pub type ListError = (String, std::io::Error);

/// Up to `limit` entries of the tree at `root` after `after` that match the globs;
/// `skip_own` leaves out the target's `.ferry/` folder.
pub fn list(
    root: &Path,
    globs: &[String],
    after: Option<&str>,
    limit: usize,
    skip_own: bool,
) -> Result<Vec<BlobMeta>, ListError> {
    // Sized for the page at once: grown by doubling, the page was copied into fresh
    // memory again and again (a fifth of a no-change pass's CPU went to it).
    let mut out = Vec::with_capacity(limit.min(8192));
    let walk = Walk { root, globs, all: matches_all(globs), after, limit, skip_own };
    walk.dir("", &mut out)?;
    Ok(out)
}

struct Walk<'a> {
    root: &'a Path,
    globs: &'a [String],
    all: bool,
    after: Option<&'a str>,
    limit: usize,
    skip_own: bool,
}

impl Walk<'_> {
    /// Lists folder `rel` (`""` or `a/b/`) into `out`; `true` once the page is full.
    fn dir(&self, rel: &str, out: &mut Vec<BlobMeta>) -> Result<bool, ListError> {
        let path = if rel.is_empty() { self.root.to_path_buf() } else { self.root.join(rel.trim_end_matches('/')) };
        let rd = std::fs::read_dir(&path).map_err(|e| (rel.to_string(), e))?;
        // Each entry keeps its `DirEntry`: its metadata is read relative to the open
        // folder (one name to look up, not the whole path from the root), as rsync does.
        let mut entries: Vec<(String, bool, std::fs::DirEntry)> = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| (rel.to_string(), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            if rel.is_empty() && self.skip_own && name == OWN_DIR {
                continue;
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            entries.push((if is_dir { format!("{name}/") } else { name }, is_dir, entry));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, is_dir, entry) in entries {
            let full = format!("{rel}{key}");
            if is_dir {
                // Everything under `full` sorts after it; the subtree is all before
                // `after` when `full` is and `after` is not inside it.
                if let Some(a) = self.after
                    && full.as_str() <= a
                    && !a.starts_with(full.as_str())
                {
                    continue;
                }
                if self.all && self.after.is_none_or(|a| full.as_str() > a) {
                    match self.meta(&full, &entry) {
                        Ok(Some(m)) => out.push(m),
                        Ok(None) => {}
                        // Gone since it was listed.
                        Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                    if out.len() >= self.limit {
                        return Ok(true);
                    }
                }
                match self.dir(&full, out) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            } else {
                if self.after.is_some_and(|a| full.as_str() <= a) || !matches(self.globs, &full) {
                    continue;
                }
                match self.meta(&full, &entry) {
                    Ok(Some(m)) => {
                        if m.kind == BlobKind::Link && !self.all && !matches(self.globs, &full) {
                            continue;
                        }
                        out.push(m);
                    }
                    Ok(None) => {}
                    Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                if out.len() >= self.limit {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn meta(&self, rel: &str, entry: &std::fs::DirEntry) -> Result<Option<BlobMeta>, ListError> {
        let md = match entry.metadata() {
            Ok(md) => md,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                return Ok(None);
            }
            Err(e) => return Err((rel.to_string(), e)),
        };
        meta_of(self.root, rel, &md).map_err(|e| (rel.to_string(), e))
    }
}

/// One path's metadata (not following links): `None` for special files (refused
/// with a warning) and paths that do not exist.
pub fn stat(root: &Path, rel: &str) -> Result<Option<BlobMeta>, std::io::Error> {
    let p = super::join(root, rel);
    let md = match std::fs::symlink_metadata(&p) {
        Ok(md) => md,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    meta_of(root, rel, &md)
}

/// The metadata of `rel` (read without following links) as a listing entry: `None` for
/// special files (refused with a warning).
fn meta_of(root: &Path, rel: &str, md: &std::fs::Metadata) -> Result<Option<BlobMeta>, std::io::Error> {
    let ft = md.file_type();
    let base = rel.trim_end_matches('/');
    let (kind, path, size, link) = if ft.is_dir() {
        (BlobKind::Dir, format!("{base}/"), 0, None)
    } else if ft.is_file() {
        (BlobKind::File, base.to_string(), md.len(), None)
    } else if ft.is_symlink() {
        let p = super::join(root, rel);
        let target = std::fs::read_link(&p)?;
        let Some(target) = target.to_str().map(str::to_string) else {
            warn!(path = %p.display(), "skipping a link whose target is not UTF-8");
            return Ok(None);
        };
        (BlobKind::Link, base.to_string(), 0, Some(target))
    } else {
        let what = if ft.is_fifo() {
            "a named pipe"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "a special file"
        };
        warn!(path = %super::join(root, rel).display(), "skipping {what}: ferry copies files, folders and links only");
        return Ok(None);
    };
    Ok(Some(BlobMeta {
        path,
        kind,
        size,
        mtime_ns: mtime_ns(md),
        mode: Some(md.mode() & 0o7777),
        owner: Some((md.uid(), md.gid())),
        etag: None,
        link,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_in_byte_order_and_pages_after_a_path() {
        let d = tempfile::tempdir().expect("tmp");
        for p in ["a.txt", "a/b", "a/c/d", "a-b", "b", ".ferry/x", "z/"] {
            let path = d.path().join(p);
            if p.ends_with('/') {
                std::fs::create_dir_all(&path).expect("dir");
            } else {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                std::fs::write(&path, p).expect("write");
            }
        }
        let all = vec!["*".to_string()];
        let names = |v: Vec<BlobMeta>| v.into_iter().map(|m| m.path).collect::<Vec<_>>();
        let every = names(list(d.path(), &all, None, 100, true).expect("list"));
        assert_eq!(every, ["a-b", "a.txt", "a/", "a/b", "a/c/", "a/c/d", "b", "z/"]);
        let mut sorted = every.clone();
        sorted.sort();
        assert_eq!(every, sorted);
        for i in 0..every.len() {
            let page = names(list(d.path(), &all, Some(&every[i]), 2, true).expect("page"));
            assert_eq!(page, every[i + 1..].iter().take(2).cloned().collect::<Vec<_>>(), "after {}", every[i]);
        }
        assert!(names(list(d.path(), &all, None, 100, false).expect("list")).contains(&".ferry/x".to_string()));
    }
}
