//! SFTP in the registry: `sftp://user@host:22/abs/dir`, a blob source (pull a remote
//! tree) and a blob sink (push a tree to a server).

use futures_util::future::BoxFuture;

use super::SftpUrl;
use super::sink::{SftpSink, state_path};
use super::source::SftpSource;
use crate::connector::blob::dynamic::{DynBlobSink, DynBlobSource};
use crate::connector::blob::state::BlobState;
use crate::connector::blob::{self, NoTypes};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{Connector, DataKind, SourceCheck, SourceFindings, TargetState, TargetTable};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, TableName};

/// The SFTP store.
pub struct Store;

fn url_of(ep: &Endpoint) -> Result<SftpUrl, ConnectorError> {
    SftpUrl::parse(ep.url.secret_text()).map_err(|p| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("url {}: {p}", ep.url),
        fix: "write url = \"sftp://USER@HOST:PORT/ABS/DIR\"".into(),
    })
}

impl Connector for Store {
    fn name(&self) -> &'static str {
        "sftp"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["sftp"]
    }
    fn url_form(&self) -> &'static str {
        "sftp://USER@HOST:PORT/ABS/DIR"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        SftpUrl::parse(url.secret_text())
            .map(|_| ())
            .map_err(|p| (format!("url {url}: {p}"), "write url = \"sftp://USER@HOST:PORT/ABS/DIR\"".into()))
    }
    fn position_kind(&self) -> &'static str {
        "sftp"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        blob::parse_position("sftp", text)
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
        Box::pin(async move { Ok(Box::new(SftpSource::open(ep, url_of(ep)?, own).await?) as Box<dyn DynBlobSource>) })
    }
    fn open_blob_sink<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Box<dyn DynBlobSink>, ConnectorError>> {
        Box::pin(async move { Ok(Box::new(SftpSink::open(ep, url_of(ep)?).await?) as Box<dyn DynBlobSink>) })
    }
    fn overlaps(&self, a: &Endpoint, b: &Endpoint) -> bool {
        match (url_of(a), url_of(b)) {
            (Ok(a), Ok(b)) => {
                a.host == b.host && a.port == b.port && (a.root.starts_with(&b.root) || b.root.starts_with(&a.root))
            }
            _ => false,
        }
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move {
            let Ok(url) = url_of(ep) else { return Ok(TargetState::default()) };
            BlobState::target_state(&ep.name, &state_path(&url), dir, "sftp").await
        })
    }
    fn source_head<'a>(&'a self, _ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { SftpSource::open(ep, url_of(ep)?, false).await.map(|_| ()) })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        _how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            let mut found = SourceFindings::default();
            match self.reachable(ep).await {
                Ok(()) => {
                    found.tables =
                        patterns.iter().map(|p| TargetTable { name: TableName::bare(p), columns: None }).collect()
                }
                Err(e) => found.problems.push(e.to_string()),
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
        // Logging in proves the host key and the key; the folder (or its parent) must
        // be there for `prepare` to make ferry's folder in it.
        Box::pin(async move {
            let sink = async {
                let url = url_of(ep)?;
                let parent = url.root.rsplit_once('/').map(|(p, _)| p.to_string()).filter(|p| !p.is_empty());
                let sink = SftpSink::open(ep, url.clone()).await?;
                sink.check_folder(parent.as_deref().unwrap_or("/")).await
            };
            sink.await.err().map(|e| e.to_string()).into_iter().collect()
        })
    }
    fn freezes_by_watching(&self) -> bool {
        true
    }
}
