//! Files in the registry: `file:///abs/dir` (a relative path resolves against the task
//! file's folder).

use futures_util::future::BoxFuture;

use super::sink::{FileSink, state_path};
use super::source::FileSource;
use super::{OWN_DIR, root_of};
use crate::connector::blob::dynamic::{DynBlobSink, DynBlobSource};
use crate::connector::blob::state::BlobState;
use crate::connector::blob::{self, NoTypes};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{
    Connector, DataKind, FreezeOutcome, FreezeRequest, SourceCheck, SourceFindings, TargetState, TargetTable,
};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, TableName};

/// The files store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "files"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["file"]
    }
    fn url_form(&self) -> &'static str {
        "file:///ABS/DIR"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        let rest = url.rest();
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.trim_matches('/').is_empty() {
            return Err((
                format!("file URL {url} names no folder (the root folder is not a sync endpoint)"),
                "write url = \"file:///path/to/folder\"".into(),
            ));
        }
        Ok(())
    }
    fn position_kind(&self) -> &'static str {
        "file"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        blob::parse_position("file", text)
    }
    fn data_kind(&self) -> DataKind {
        DataKind::Blobs
    }
    fn transactional(&self) -> bool {
        false
    }
    fn types(&self) -> &'static dyn TypeMap {
        &NoTypes
    }
    fn open_blob_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        own: bool,
    ) -> BoxFuture<'a, Result<Box<dyn DynBlobSource>, ConnectorError>> {
        Box::pin(async move { Ok(Box::new(FileSource::open(&ep.name, root_of(ep), own)?) as Box<dyn DynBlobSource>) })
    }
    fn open_blob_sink<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Box<dyn DynBlobSink>, ConnectorError>> {
        // A folder frozen for a cutover is written through ferry's writable twin of it.
        let root = super::freeze::writable_root(&root_of(ep));
        Box::pin(async move { Ok(Box::new(FileSink::open(&ep.name, root)) as Box<dyn DynBlobSink>) })
    }
    fn overlaps(&self, a: &Endpoint, b: &Endpoint) -> bool {
        let (a, b) = (root_of(a), root_of(b));
        a.starts_with(&b) || b.starts_with(&a)
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        // A folder frozen for a cutover: its state file is read through the writable twin
        // (SQLite's WAL cannot be opened on a read-only mount).
        let root = super::freeze::writable_root(&root_of(ep));
        Box::pin(async move { BlobState::target_state(&ep.name, &state_path(&root), dir, "file").await })
    }
    fn source_head<'a>(&'a self, _ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { FileSource::open(&ep.name, root_of(ep), false).map(|_| ()) })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        _how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            let mut found = SourceFindings::default();
            let root = root_of(ep);
            match std::fs::read_dir(&root) {
                Ok(_) => {
                    found.tables = patterns.iter().map(|p| TargetTable { name: TableName::bare(p), columns: None }).collect();
                    if root.join(OWN_DIR).exists() {
                        found.warnings.push(format!(
                            "endpoint {}: {} holds a {OWN_DIR}/ folder (it was a target once); ferry keeps its own files there, so it is not copied",
                            ep.name,
                            root.display()
                        ));
                    }
                }
                Err(e) => found.problems.push(format!(
                    "endpoint {}: cannot read folder {}: {e}\n  fix: create it or correct the file:// URL, and let this user read it",
                    ep.name,
                    root.display()
                )),
            }
            found
        })
    }
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        _source: &'a str,
        _tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let root = root_of(ep);
            let md = std::fs::metadata(&root);
            let problem = match md {
                Ok(m) if !m.is_dir() => Some(format!("{} is not a folder", root.display())),
                Ok(m) if m.permissions().readonly() => Some(format!("{} is read-only", root.display())),
                Ok(_) => None,
                Err(_) if root.parent().is_some_and(|p| p.is_dir()) => None,
                Err(e) => Some(format!("cannot reach folder {}: {e}", root.display())),
            };
            problem
                .map(|p| format!("endpoint {}: {p}\n  fix: point the file:// URL at a folder this user may write to (or whose parent exists)", ep.name))
                .into_iter()
                .collect()
        })
    }
    fn freeze<'a>(
        &'a self,
        ep: &'a Endpoint,
        _how: &'a FreezeRequest,
    ) -> BoxFuture<'a, Result<FreezeOutcome, ConnectorError>> {
        // A folder has no accounts: every writer but ferry (which never writes into a
        // source) is an application.
        Box::pin(async move { super::freeze::freeze(ep) })
    }
    fn unfreeze<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { super::freeze::unfreeze(ep) })
    }
    fn frozen_since<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<i64>, ConnectorError>> {
        Box::pin(async move { Ok(super::freeze::frozen_since(ep)) })
    }
}
