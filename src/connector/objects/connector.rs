//! Object storage in the registry: `s3://bucket/prefix?endpoint=…&region=…`.

use futures_util::future::BoxFuture;

use super::client::{S3Client, S3Url};
use super::sink::{S3Sink, state_path};
use super::source::S3Source;
use crate::connector::blob::dynamic::{DynBlobSink, DynBlobSource};
use crate::connector::blob::state::BlobState;
use crate::connector::blob::{self, NoTypes};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{Connector, DataKind, SourceCheck, SourceFindings, TargetState, TargetTable};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, TableName};

/// The object storage store.
pub struct Store;

/// Buckets (by URL) this process found answering with its credentials.
static CHECKED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

fn checked(ep: &Endpoint) -> bool {
    CHECKED.lock().unwrap_or_else(|p| p.into_inner()).contains(ep.url.secret_text())
}

impl Connector for Store {
    fn name(&self) -> &'static str {
        "object storage"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["s3"]
    }
    fn url_form(&self) -> &'static str {
        "s3://BUCKET/PREFIX?endpoint=URL&region=REGION"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        S3Url::parse(url.secret_text()).map(|_| ()).map_err(|p| {
            (format!("url {url}: {p}"), "write s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=REGION".into())
        })
    }
    fn position_kind(&self) -> &'static str {
        "s3"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        blob::parse_position("s3", text)
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
        Box::pin(async move {
            let client = S3Client::new(ep)?;
            // Checked once a process: copy and verify lanes open the same bucket again,
            // and a store that lists by walking the whole bucket (s3s-fs) makes each
            // check cost that walk.
            if !checked(ep) {
                client.check_bucket().await?;
                CHECKED.lock().unwrap_or_else(|p| p.into_inner()).insert(ep.url.secret_text().to_string());
            }
            Ok(Box::new(S3Source::new(client, own)) as Box<dyn DynBlobSource>)
        })
    }
    fn open_blob_sink<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Box<dyn DynBlobSink>, ConnectorError>> {
        Box::pin(async move { Ok(Box::new(S3Sink::new(S3Client::new(ep)?)) as Box<dyn DynBlobSink>) })
    }
    fn overlaps(&self, a: &Endpoint, b: &Endpoint) -> bool {
        match (S3Url::parse(a.url.secret_text()), S3Url::parse(b.url.secret_text())) {
            (Ok(a), Ok(b)) => {
                a.bucket == b.bucket
                    && a.param("endpoint") == b.param("endpoint")
                    && (a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix))
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
            let Ok(client) = S3Client::new(ep) else { return Ok(TargetState::default()) };
            BlobState::target_state(&ep.name, &state_path(&client), dir, "s3").await
        })
    }
    fn source_head<'a>(&'a self, _ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { S3Client::new(ep)?.check_bucket().await })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        _how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            let mut found = SourceFindings::default();
            match S3Client::new(ep) {
                Ok(c) => match c.check_bucket().await {
                    Ok(()) => {
                        found.tables =
                            patterns.iter().map(|p| TargetTable { name: TableName::bare(p), columns: None }).collect()
                    }
                    Err(e) => found.problems.push(e.to_string()),
                },
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
        Box::pin(async move {
            match S3Client::new(ep) {
                Ok(c) => c.check_bucket().await.err().map(|e| e.to_string()).into_iter().collect(),
                Err(e) => vec![e.to_string()],
            }
        })
    }
    fn freezes_by_watching(&self) -> bool {
        true
    }
}
