//! SQLite in the registry: `sqlite://path.db` (relative to the task file's folder).

use futures_util::future::BoxFuture;

use sqlx::Row as _;

use super::verifier::SqliteSide;
use super::{Access, SqliteEndpoint, apply::SqliteSink, capture::SqliteSource, freezer, position, state, types};
use crate::connector::dynamic::{DynSink, DynSource};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{
    ConflictRecord, Connector, FreezeOutcome, FreezeRequest, SideOptions, SinkOptions, SourceCheck, SourceFindings,
    SourceOptions, TargetState, TargetTable,
};
use crate::connector::typemap::TypeMap;
use crate::connector::verifier::AnySide;
use crate::connector::{ConnectorError, DirectionId, Source};
use crate::model::{Position, PositionParseError, TableName};

/// The SQLite store.
pub struct Store;

impl SqliteEndpoint {
    /// The SQLite endpoint of a task file's endpoint.
    pub fn of(ep: &Endpoint) -> SqliteEndpoint {
        let rest = ep.url.rest();
        let path = ep.url.resolve(rest.strip_prefix("//").unwrap_or(rest));
        SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path }
    }
}

impl Connector for Store {
    fn name(&self) -> &'static str {
        "SQLite"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["sqlite"]
    }
    fn url_form(&self) -> &'static str {
        "sqlite://FILE"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        if url.rest().trim_start_matches('/').is_empty() {
            return Err(("sqlite URL has no file path".into(), "write url = \"sqlite://path/to/file.db\"".into()));
        }
        Ok(())
    }
    fn position_kind(&self) -> &'static str {
        "sqlite"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        position::parse(text)
    }
    fn types(&self) -> &'static dyn TypeMap {
        &types::Types
    }
    fn open_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        _opts: &'a SourceOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>> {
        Box::pin(async move {
            let source = SqliteSource::open(SqliteEndpoint::of(ep), Access::ReadWrite).await?;
            Ok(Box::new(source) as Box<dyn DynSource>)
        })
    }
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        _opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            let sink = SqliteSink::open(SqliteEndpoint::of(ep), Access::ReadWrite).await?;
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move {
            let ep = SqliteEndpoint::of(ep);
            let mut conn = ep.connect(Access::ReadOnly).await?;
            // A target that never ran has no ferry tables: nothing recorded.
            let checkpoint = state::load_checkpoint(&mut conn, dir).await.ok().flatten();
            let lease = state::lease_holder(&mut conn, dir).await.ok().flatten();
            super::close(conn).await;
            Ok(TargetState { checkpoint, lease, blob: None })
        })
    }
    fn source_head<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async move {
            let mut s = SqliteSource::open(SqliteEndpoint::of(ep), Access::ReadOnly).await?;
            Ok(Source::head(&mut s).await.ok())
        })
    }
    fn conflicts<'a>(
        &'a self,
        ep: &'a Endpoint,
        task: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<ConflictRecord>>, ConnectorError>> {
        Box::pin(async move {
            let mut conn = SqliteEndpoint::of(ep).connect(Access::ReadOnly).await?;
            let rows = sqlx::query(
                "SELECT id, task, direction, tbl, pk, policy, winner, incoming_site, local_site, detected_us, \
                 incoming_ts, local_ts, incoming_row, local_row \
                 FROM ferry_conflict WHERE (?1 IS NULL OR task = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .bind(task)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut conn)
            .await;
            super::close(conn).await;
            // A target that never ran two-way has no ferry_conflict table: an empty log.
            let Ok(rows) = rows else { return Ok(Some(Vec::new())) };
            Ok(Some(
                rows.iter()
                    .map(|r| ConflictRecord {
                        id: r.get(0),
                        task: r.get(1),
                        direction: r.get(2),
                        table: r.get(3),
                        key: r.get(4),
                        policy: r.get(5),
                        winner: r.get(6),
                        incoming_site: r.get(7),
                        local_site: r.get(8),
                        detected_us: r.get(9),
                        incoming_ts: r.get(10),
                        local_ts: r.get(11),
                        incoming_row: r.get(12),
                        local_row: r.get(13),
                    })
                    .collect(),
            ))
        })
    }
    fn open_side<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a SideOptions,
    ) -> BoxFuture<'a, Result<AnySide, ConnectorError>> {
        Box::pin(async move { Ok(AnySide::new(SqliteSide::open(SqliteEndpoint::of(ep), how.write).await?)) })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(
            async move { super::preflight::check_source(&SqliteEndpoint::of(ep), patterns, how.require_match).await },
        )
    }
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        source: &'a str,
        tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move { super::preflight::check_target(&SqliteEndpoint::of(ep), source, tables).await })
    }
    fn qualify(&self, _ep: &Endpoint, name: &TableName) -> TableName {
        super::preflight::qualify(name)
    }
    fn installed<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { super::uninstall::installed(&SqliteEndpoint::of(ep)).await })
    }
    fn uninstall<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { super::uninstall::uninstall(&SqliteEndpoint::of(ep)).await })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let conn = SqliteEndpoint::of(ep).connect(Access::ReadOnly).await?;
            super::close(conn).await;
            Ok(())
        })
    }
    fn freeze<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a FreezeRequest,
    ) -> BoxFuture<'a, Result<FreezeOutcome, ConnectorError>> {
        // SQLite has no accounts: every writer but ferry is an application.
        Box::pin(async move { freezer::freeze_and_probe(&SqliteEndpoint::of(ep), &how.reason).await })
    }
    fn unfreeze<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { freezer::unfreeze(&SqliteEndpoint::of(ep)).await })
    }
    fn frozen_since<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<i64>, ConnectorError>> {
        Box::pin(async move { freezer::frozen_since(&SqliteEndpoint::of(ep)).await })
    }
}
