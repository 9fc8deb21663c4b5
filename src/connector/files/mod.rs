//! Files: `file:///abs/dir` as a blob source (sorted listing, notify hints, ranged
//! reads) and a blob sink (partial file under `.ferry/partial/` then a fenced rename,
//! mode, mtime, links, folders, owners when root). Nothing is written into a source;
//! a target's own files (partial files, `state.db`) live under its `.ferry/` folder,
//! which listings skip.

pub mod connector;
pub mod freeze;
pub mod list;
pub mod sink;
pub mod source;

use std::path::{Path, PathBuf};

pub use connector::Store;

use crate::connector::{ConnectorError, ErrorKind};

/// ferry's own folder in a target.
pub const OWN_DIR: &str = ".ferry";

/// An I/O error on a path of an endpoint, with what it calls for: a missing or
/// forbidden path needs a human; anything else (a full disk, a lost NFS server) is
/// retried.
pub fn io_error(endpoint: &str, what: &str, path: &str, e: std::io::Error) -> ConnectorError {
    use std::io::ErrorKind as K;
    let (kind, fix) = match e.kind() {
        K::PermissionDenied => (
            ErrorKind::Runtime,
            Some("give the user ferry runs as read access (source) or write access (target) to it".to_string()),
        ),
        K::StorageFull | K::QuotaExceeded => {
            (ErrorKind::Runtime, Some("free space on the target's disk; ferry resumes where it stopped".to_string()))
        }
        _ => (ErrorKind::Runtime, None),
    };
    ConnectorError::Blob {
        endpoint: endpoint.to_string(),
        what: what.into(),
        path: if path.is_empty() { "/".into() } else { path.to_string() },
        source: Box::new(e),
        kind,
        fix: fix.map(String::into_boxed_str),
    }
}

/// The folder of a `file://` endpoint URL (relative paths resolved against the task file).
pub fn root_of(ep: &crate::connector::endpoint::Endpoint) -> PathBuf {
    let rest = ep.url.rest();
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    ep.url.resolve(path)
}

/// `root/rel` for a `/`-separated relative path (a folder's trailing `/` dropped).
pub fn join(root: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_end_matches('/');
    if rel.is_empty() { root.to_path_buf() } else { root.join(rel) }
}

/// Nanoseconds since the epoch of a file's mtime.
pub fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime().saturating_mul(1_000_000_000).saturating_add(md.mtime_nsec())
}

/// The `SystemTime` of an mtime in ns.
pub fn system_time(ns: i64) -> std::time::SystemTime {
    let base = std::time::UNIX_EPOCH;
    if ns >= 0 {
        base + std::time::Duration::from_nanos(ns as u64)
    } else {
        base - std::time::Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Whether this process runs as root (then owners are carried).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
