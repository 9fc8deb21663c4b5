//! Doris in the registry: `doris://` and `doris+https://`, and StarRocks as its flavour
//! (`starrocks://`, `starrocks+https://`), a sink of any record source.

use futures_util::future::BoxFuture;
use reqwest::Method;

use super::sink::DorisSink;
use super::state::State;
use super::stream_load::Http;
use super::{DorisEndpoint, URL_FORM, types};
use crate::connector::dynamic::DynSink;
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{Connector, SinkOptions, TargetState, TargetTable};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError};

/// The Doris store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "Doris/StarRocks"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["doris", "doris+https", "starrocks", "starrocks+https"]
    }
    fn url_form(&self) -> &'static str {
        URL_FORM
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        DorisEndpoint::parse("", url.secret_text()).map(|_| ())
    }
    fn position_kind(&self) -> &'static str {
        // Never a source: no position of its own.
        "doris"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        Err(PositionParseError {
            text: text.to_string(),
            expected: "a Doris database is not a change source and has no positions".into(),
        })
    }
    fn transactional(&self) -> bool {
        // One Stream Load per table: a batch over several tables is not atomic; labels
        // make its replay harmless.
        false
    }
    fn types(&self) -> &'static dyn TypeMap {
        &types::Types
    }
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            let d = DorisEndpoint::of(ep)?;
            if opts.two_way_from.is_some() {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!(
                        "a {} database cannot take part in a two-way task: it is not a change source",
                        d.flavor.name()
                    ),
                    fix: "make the task one-way (mode = \"one-way\")".into(),
                });
            }
            let sink = DorisSink::open(&d).await?;
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move {
            let Some(mut state) = State::open(&DorisEndpoint::of(ep)?, false).await? else {
                return Ok(TargetState::default());
            };
            let checkpoint = match state.checkpoint(dir).await? {
                Some((stored, _)) => Some(state.checkpoint_of(dir, &stored)?),
                None => None,
            };
            Ok(TargetState { checkpoint, lease: state.lease(dir).await?, blob: None })
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
        // Tables are created or checked by the run, through the query port.
        Box::pin(async move { ping(ep).await.err().map(|e| e.to_string()).into_iter().collect() })
    }
}

/// Asks the FE for its health: it answers, and the state file can be opened.
async fn ping(ep: &Endpoint) -> Result<(), ConnectorError> {
    let d = DorisEndpoint::of(ep)?;
    let http = Http::new(&d)?;
    http.send(Method::GET, "/api/health", &[], None)
        .await
        .map(|_| ())
        .map_err(http.error("asking the FE for its health"))
}
