//! A folder read as a blob source: sorted listing, ranged reads, and change hints from
//! inotify (the `notify` crate) that the engine checks against the files themselves.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use tracing::warn;

use super::{io_error, list};
use crate::connector::ConnectorError;
use crate::connector::blob::{BlobHint, BlobMeta, BlobSource};

/// More events than this at once: rescan instead of checking each.
const MOST_HINTS: usize = 50_000;
/// Tests lower [`MOST_HINTS`] to overflow the watch with a few hundred changes.
const MOST_HINTS_ENV: &str = "FERRY_TEST_MOST_HINTS";

fn most_hints() -> usize {
    std::env::var(MOST_HINTS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(MOST_HINTS)
}

/// A folder as a source. With `skip_own` (a target read back by verify) its `.ferry/`
/// folder is left out.
pub struct FileSource {
    endpoint: String,
    root: PathBuf,
    skip_own: bool,
    watcher: Option<(notify::RecommendedWatcher, Receiver<notify::Result<notify::Event>>)>,
    open: Option<(String, Arc<File>)>,
    /// More events than this at once: rescan ([`MOST_HINTS`] unless a test lowers it).
    most_hints: usize,
}

impl FileSource {
    /// A source over `root`, which must be a folder.
    pub fn open(endpoint: &str, root: PathBuf, skip_own: bool) -> Result<FileSource, ConnectorError> {
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ConnectorError::Setup {
                    endpoint: endpoint.into(),
                    problem: format!("{} is not a folder", root.display()),
                    fix: "point the file:// URL at a folder".into(),
                });
            }
            Err(e) => {
                return Err(ConnectorError::Setup {
                    endpoint: endpoint.into(),
                    problem: format!("cannot open folder {}: {e}", root.display()),
                    fix: "create the folder or correct the file:// URL, and let this user read it".into(),
                });
            }
        }
        Ok(FileSource {
            endpoint: endpoint.into(),
            root,
            skip_own,
            watcher: None,
            open: None,
            most_hints: most_hints(),
        })
    }

    fn rel(&self, p: &Path) -> Option<String> {
        let rel = p.strip_prefix(&self.root).ok()?.to_str()?.to_string();
        if rel.is_empty() || (self.skip_own && (rel == super::OWN_DIR || rel.starts_with(".ferry/"))) {
            return None;
        }
        Some(rel)
    }

    fn start_watch(&mut self) -> Result<(), ConnectorError> {
        let (tx, rx) = channel();
        let mut w = notify::recommended_watcher(tx).map_err(|e| self.watch_error(e))?;
        w.watch(&self.root, RecursiveMode::Recursive).map_err(|e| self.watch_error(e))?;
        self.watcher = Some((w, rx));
        Ok(())
    }

    fn watch_error(&self, e: notify::Error) -> ConnectorError {
        ConnectorError::Blob {
            endpoint: self.endpoint.clone(),
            what: "cannot watch".into(),
            path: self.root.display().to_string(),
            source: Box::new(e),
            kind: crate::connector::ErrorKind::Runtime,
            fix: Some(
                "raise fs.inotify.max_user_watches (sysctl) or ignore this: periodic rescans still find every change"
                    .into(),
            ),
        }
    }
}

impl BlobSource for FileSource {
    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        let (root, globs, after, skip) = (self.root.clone(), globs.to_vec(), after.map(str::to_string), self.skip_own);
        let r = tokio::task::spawn_blocking(move || list::list(&root, &globs, after.as_deref(), limit, skip)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((path, e))) => Err(io_error(&self.endpoint, "cannot list", &path, e)),
            Err(e) => Err(io_error(&self.endpoint, "cannot list", "", std::io::Error::other(e))),
        }
    }

    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        list::stat(&self.root, path).map_err(|e| io_error(&self.endpoint, "cannot stat", path, e))
    }

    async fn hints(&mut self) -> Result<Vec<BlobHint>, ConnectorError> {
        if self.watcher.is_none() {
            if let Err(e) = self.start_watch() {
                // Rescans are the truth: run on without hints.
                warn!(error = %e, "no change hints; periodic rescans find every change");
                self.watcher = None;
            }
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let events: Vec<notify::Result<notify::Event>> = match &self.watcher {
            // Drained whole: what is left after an overflow is covered by the rescan.
            Some((_, rx)) => rx.try_iter().collect(),
            None => Vec::new(),
        };
        if events.len() > self.most_hints {
            return Ok(vec![BlobHint::Rescan]);
        }
        for ev in events {
            let ev = match ev {
                Ok(ev) => ev,
                Err(_) => {
                    out.push(BlobHint::Rescan);
                    continue;
                }
            };
            if ev.need_rescan() {
                out.push(BlobHint::Rescan);
                continue;
            }
            let rels: Vec<String> = ev.paths.iter().filter_map(|p| self.rel(p)).collect();
            match ev.kind {
                EventKind::Access(_) => {}
                EventKind::Remove(_) => out.extend(rels.into_iter().map(BlobHint::Removed)),
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if rels.len() == 2 => {
                    out.push(BlobHint::Renamed { from: rels[0].clone(), to: rels[1].clone() })
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                    out.extend(rels.into_iter().map(BlobHint::Removed))
                }
                _ => out.extend(rels.into_iter().map(BlobHint::Changed)),
            }
        }
        Ok(out)
    }

    async fn read_range(&mut self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
        let file = match &self.open {
            // A copy starts at 0: open anew then (the file may have been replaced).
            Some((p, f)) if p == path && offset > 0 => f.clone(),
            _ => {
                let f = File::open(super::join(&self.root, path))
                    .map_err(|e| io_error(&self.endpoint, "cannot read", path, e))?;
                let f = Arc::new(f);
                self.open = Some((path.to_string(), f.clone()));
                f
            }
        };
        // The buffer is allocated here, on the caller's thread, which also frees it once
        // the bytes are used: allocated on a blocking-pool thread, every read took fresh
        // pages from the kernel (a third of a verify's CPU went to zeroing them).
        let mut buf = vec![0u8; len as usize];
        let r = tokio::task::spawn_blocking(move || {
            let mut got = 0usize;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        r.map_err(|e| io_error(&self.endpoint, "cannot read", path, e))
    }

    async fn read_many(
        &mut self,
        blobs: &[(String, u64)],
        mut buf: Vec<u8>,
    ) -> (Vec<u8>, Vec<Result<u64, ConnectorError>>) {
        // One hop to the blocking pool for the whole group, into the caller's buffer (no
        // fresh pages to zero once it has grown, no byte zeroed before it is read).
        let (root, wanted) = (self.root.clone(), blobs.to_vec());
        let read = tokio::task::spawn_blocking(move || {
            buf.clear();
            let lens: Vec<std::io::Result<u64>> = wanted
                .iter()
                .map(|(path, size)| {
                    let start = buf.len();
                    // Up to the listed size: a file grown since is read as listed, and
                    // its hash then disagrees, as it should.
                    let read = File::open(super::join(&root, path))
                        .and_then(|f| f.take(*size).read_to_end(&mut buf))
                        .map(|n| n as u64);
                    if read.is_err() {
                        buf.truncate(start);
                    }
                    read
                })
                .collect();
            (buf, lens)
        })
        .await;
        match read {
            Ok((buf, lens)) => {
                let lens = lens
                    .into_iter()
                    .zip(blobs)
                    .map(|(r, (path, _))| r.map_err(|e| io_error(&self.endpoint, "cannot read", path, e)))
                    .collect();
                (buf, lens)
            }
            Err(e) => {
                let lens = blobs
                    .iter()
                    .map(|(path, _)| {
                        Err(io_error(&self.endpoint, "cannot read", path, std::io::Error::other(e.to_string())))
                    })
                    .collect();
                (Vec::new(), lens)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_is_read_into_one_buffer_each_up_to_its_size_and_what_fails_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a"), b"0123456789").expect("a");
        std::fs::write(dir.path().join("c"), b"abcde").expect("c");
        std::fs::write(dir.path().join("d"), b"grown since listed").expect("d");
        let mut src = FileSource::open("src", dir.path().to_path_buf(), false).expect("open");
        let wanted: Vec<(String, u64)> = vec![("a".into(), 10), ("b".into(), 4), ("c".into(), 8), ("d".into(), 5)];
        // A buffer handed back from an earlier group: cleared, not appended to.
        let (buf, lens) = src.read_many(&wanted, b"stale".to_vec()).await;
        assert_eq!(lens[0].as_ref().ok(), Some(&10));
        match &lens[1] {
            Err(e) => assert!(e.to_string().contains('b'), "the missing file is named: {e}"),
            Ok(n) => panic!("a missing file read {n} bytes"),
        }
        assert_eq!(lens[2].as_ref().ok(), Some(&5), "shorter than listed: read short");
        assert_eq!(lens[3].as_ref().ok(), Some(&5), "longer than listed: read up to the listed size");
        assert_eq!(buf, b"0123456789abcdegrown".to_vec());
    }
}
