//! Redis in the registry: `redis://[USER[:PASSWORD]@]HOST:PORT[/DB]`, `rediss://` for TLS.

use futures_util::future::BoxFuture;

use super::sink::RedisSink;
use super::source::RedisSource;
use super::{RedisEndpoint, check, freeze, items, parse_url, position};
use crate::connector::blob::NoTypes;
use crate::connector::dynamic::{DynSink, DynSource};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::items::DynItemSide;
use crate::connector::registry::{
    ConflictRecord, Connector, DataKind, FreezeOutcome, FreezeRequest, SinkOptions, SourceCheck, SourceFindings,
    SourceOptions, TargetState, TargetTable,
};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, TableName};

/// The Redis store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "Redis"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["redis", "rediss"]
    }
    fn url_form(&self) -> &'static str {
        "redis://[USER[:PASSWORD]@]HOST:PORT[/DB]"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        parse_url(url.secret_text()).map(|_| ())
    }
    fn position_kind(&self) -> &'static str {
        "redis"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        position::parse(text)
    }
    fn data_kind(&self) -> DataKind {
        DataKind::Items
    }
    fn types(&self) -> &'static dyn TypeMap {
        &NoTypes
    }
    fn open_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        opts: &'a SourceOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>> {
        Box::pin(
            async move { Ok(Box::new(RedisSource::new(RedisEndpoint::of(ep)?, opts.versions)) as Box<dyn DynSource>) },
        )
    }
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            let sink = RedisSink::open(RedisEndpoint::of(ep)?, opts.two_way_from.clone()).await?;
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move { super::sink::target_state(&RedisEndpoint::of(ep)?, dir).await })
    }
    fn source_head<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async move {
            let mut s = RedisSource::new(RedisEndpoint::of(ep)?, false);
            Ok(Some(crate::connector::Source::head(&mut s).await?))
        })
    }
    // source_retention: the contract's default (None): Redis keeps one backlog for
    // every replica, not history per reader.
    fn conflicts<'a>(
        &'a self,
        ep: &'a Endpoint,
        task: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<ConflictRecord>>, ConnectorError>> {
        Box::pin(async move { Ok(Some(super::sink::conflicts(&RedisEndpoint::of(ep)?, task, limit).await?)) })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let r = RedisEndpoint::of(ep)?;
            let mut c = r.connect().await?;
            r.call(&mut c, "PING", &["PING"]).await.map(|_| ())
        })
    }
    fn open_items<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Box<dyn DynItemSide>, ConnectorError>> {
        Box::pin(
            async move { Ok(Box::new(items::RedisItems::open(RedisEndpoint::of(ep)?).await?) as Box<dyn DynItemSide>) },
        )
    }
    fn installed<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { freeze::installed(&RedisEndpoint::of(ep)?).await })
    }
    fn uninstall<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { freeze::uninstall(&RedisEndpoint::of(ep)?).await })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        _how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(check::source(ep, patterns))
    }
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        _source: &'a str,
        tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(check::target(ep, tables))
    }
    fn target_warnings<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Vec<String>> {
        Box::pin(check::target_warnings(ep))
    }
    fn check_two_way<'a>(&'a self, ep: &'a Endpoint, _tables: &'a [TargetTable]) -> BoxFuture<'a, Vec<String>> {
        Box::pin(check::two_way(ep))
    }
    fn qualify(&self, ep: &Endpoint, _name: &TableName) -> TableName {
        // One collection per endpoint: its database.
        let db = parse_url(ep.url.secret_text()).map(|p| p.db).unwrap_or(0);
        TableName::bare(format!("db{db}"))
    }
    fn freeze<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a FreezeRequest,
    ) -> BoxFuture<'a, Result<FreezeOutcome, ConnectorError>> {
        Box::pin(async move { freeze::freeze(&RedisEndpoint::of(ep)?, how).await })
    }
    fn unfreeze<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { freeze::unfreeze(&RedisEndpoint::of(ep)?).await })
    }
    fn frozen_since<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<i64>, ConnectorError>> {
        Box::pin(async move { freeze::frozen_since(&RedisEndpoint::of(ep)?).await })
    }
}
