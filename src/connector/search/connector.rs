//! Elasticsearch/OpenSearch in the registry: `elasticsearch://`, `opensearch://` (and
//! `+https`), a sink of any record source and a verified target.

use futures_util::future::BoxFuture;
use reqwest::Method;

use super::http::Http;
use super::sink::SearchSink;
use super::{SearchEndpoint, mapping, state, verifier};
use crate::connector::dynamic::DynSink;
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{Connector, SideOptions, SinkOptions, TargetState, TargetTable};
use crate::connector::typemap::TypeMap;
use crate::connector::verifier::AnySide;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError};

/// The Elasticsearch/OpenSearch store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "Elasticsearch/OpenSearch"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["elasticsearch", "opensearch", "elasticsearch+https", "opensearch+https"]
    }
    fn url_form(&self) -> &'static str {
        "opensearch://[USER@]HOST:PORT (or elasticsearch://, +https for TLS)"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        SearchEndpoint::parse("", url.secret_text()).map(|_| ())
    }
    fn position_kind(&self) -> &'static str {
        // Never a source: no position of its own.
        "search"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        Err(PositionParseError {
            text: text.to_string(),
            expected: "a search index is not a change source and has no positions".into(),
        })
    }
    fn transactional(&self) -> bool {
        // A `_bulk` request is not atomic: external versions make its replay harmless.
        false
    }
    fn types(&self) -> &'static dyn TypeMap {
        &mapping::Types
    }
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            if opts.two_way_from.is_some() {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: "a search index cannot take part in a two-way task: it is not a change source".into(),
                    fix: "make the task one-way (mode = \"one-way\")".into(),
                });
            }
            let sink = SearchSink::open(&SearchEndpoint::of(ep)?, opts.index.clone())?;
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move {
            let http = Http::new(&SearchEndpoint::of(ep)?)?;
            let checkpoint = match state::read_stored(&http, dir).await? {
                Some(s) => Some(state::checkpoint_of(&http, dir, &s)?),
                None => None,
            };
            Ok(TargetState { checkpoint, lease: state::lease_of(&http, dir).await?, blob: None })
        })
    }
    fn source_head<'a>(&'a self, _ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { ping(ep).await })
    }
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        _source: &'a str,
        _tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        // Index names come from the task's template, which the run checks (with each
        // existing index's mapping).
        Box::pin(async move { ping(ep).await.err().map(|e| e.to_string()).into_iter().collect() })
    }
    fn open_side<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a SideOptions,
    ) -> BoxFuture<'a, Result<AnySide, ConnectorError>> {
        Box::pin(async move { Ok(AnySide::new(verifier::SearchSide::open(ep, how.index.clone())?)) })
    }
}

/// Asks the server for its cluster health: it answers, and accepts ferry's login.
async fn ping(ep: &Endpoint) -> Result<(), ConnectorError> {
    let http = Http::new(&SearchEndpoint::of(ep)?)?;
    http.send(Method::GET, "/_cluster/health", None)
        .await
        .map(|_| ())
        .map_err(http.error("asking for the cluster's health"))
}
