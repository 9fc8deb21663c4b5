//! MySQL/MariaDB in the registry: `mysql://user@host:3306[/db]` (also `mariadb://`).

use futures_util::future::BoxFuture;

use mysql_async::prelude::Queryable;

use super::verifier::MysqlSide;
use super::{FERRY_DB, MysqlEndpoint, apply::MysqlSink, freezer, ident, position, source::MysqlSource, state, types};
use crate::connector::dynamic::{DynSink, DynSource};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{
    ConflictRecord, Connector, FreezeOutcome, FreezeRequest, SideOptions, SinkOptions, SourceCheck, SourceFindings,
    SourceOptions, TargetState, TargetTable,
};
use crate::connector::typemap::TypeMap;
use crate::connector::verifier::AnySide;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, TableName};

/// The MySQL/MariaDB store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "MySQL/MariaDB"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["mysql", "mariadb"]
    }
    fn url_form(&self) -> &'static str {
        "mysql://USER:PASSWORD@HOST:PORT[/DB]"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        if !url.rest().starts_with("//") {
            return Err((
                format!("endpoint url {url} is not a MySQL URL"),
                "write url = \"mysql://USER:PASSWORD@HOST:PORT\" (the database part is optional)".into(),
            ));
        }
        Ok(())
    }
    fn position_kind(&self) -> &'static str {
        "mysql"
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
        opts: &'a SourceOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>> {
        Box::pin(async move {
            let source = MysqlSource::open(MysqlEndpoint::of(ep)?, &opts.stream).await?;
            Ok(Box::new(source.with_versions(opts.versions)) as Box<dyn DynSource>)
        })
    }
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            let sink = MysqlSink::open(MysqlEndpoint::of(ep)?).await?.with_workers(opts.workers.max(1));
            let sink = match &opts.two_way_from {
                Some(site) => sink.with_two_way(site.clone()),
                None => sink,
            };
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move {
            let ep = MysqlEndpoint::of(ep)?;
            let mut conn = ep.connect().await?;
            let checkpoint = state::load_checkpoint(&ep, &mut conn, dir).await.ok().flatten();
            let lease = state::lease_holder(&ep, &mut conn, dir).await.ok().flatten();
            let _ = conn.disconnect().await;
            Ok(TargetState { checkpoint, lease, blob: None })
        })
    }
    fn source_head<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async move {
            let ep = MysqlEndpoint::of(ep)?;
            let mut conn = ep.connect().await?;
            let head = super::source::binlog_head(&ep, &mut conn).await.ok();
            let _ = conn.disconnect().await;
            Ok(head)
        })
    }
    fn conflicts<'a>(
        &'a self,
        ep: &'a Endpoint,
        task: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<ConflictRecord>>, ConnectorError>> {
        Box::pin(async move {
            let m = MysqlEndpoint::of(ep)?;
            let mut conn = m.connect().await?;
            let sql = format!(
                "SELECT id, task, direction, tbl, pk, policy, winner, incoming_site, local_site, detected_us, \
                 incoming_ts, local_ts, incoming_row, local_row \
                 FROM {}.{} WHERE (? IS NULL OR task = ?) ORDER BY id DESC LIMIT ?",
                ident(FERRY_DB),
                ident("ferry_conflict")
            );
            let rows: Result<Vec<mysql_async::Row>, _> =
                conn.exec(sql, (task, task, u64::try_from(limit).unwrap_or(u64::MAX))).await;
            let _ = conn.disconnect().await;
            let rows = match rows {
                Ok(rows) => rows,
                // A target that never ran two-way has no conflict table: an empty log.
                Err(mysql_async::Error::Server(e)) if matches!(e.code, 1049 | 1146) => Vec::new(),
                Err(e) => return Err(m.error("reading the conflict log")(e)),
            };
            let text = |r: &mysql_async::Row, i: usize| r.get::<Option<String>, _>(i).flatten().unwrap_or_default();
            Ok(Some(
                rows.iter()
                    .map(|r| ConflictRecord {
                        id: r.get(0).unwrap_or_default(),
                        task: text(r, 1),
                        direction: text(r, 2),
                        table: text(r, 3),
                        key: text(r, 4),
                        policy: text(r, 5),
                        winner: text(r, 6),
                        incoming_site: text(r, 7),
                        local_site: text(r, 8),
                        detected_us: r.get(9).unwrap_or_default(),
                        incoming_ts: r.get(10).unwrap_or_default(),
                        local_ts: r.get(11).unwrap_or_default(),
                        incoming_row: r.get::<Option<String>, _>(12).flatten(),
                        local_row: r.get::<Option<String>, _>(13).flatten(),
                    })
                    .collect(),
            ))
        })
    }
    fn open_side<'a>(
        &'a self,
        ep: &'a Endpoint,
        _how: &'a SideOptions,
    ) -> BoxFuture<'a, Result<AnySide, ConnectorError>> {
        Box::pin(async move { Ok(AnySide::new(MysqlSide::open(MysqlEndpoint::of(ep)?).await?)) })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            match MysqlEndpoint::of(ep) {
                Ok(m) => super::preflight::check_source(&m, patterns, how).await,
                Err(e) => SourceFindings { tables: Vec::new(), problems: vec![e.to_string()], warnings: Vec::new() },
            }
        })
    }
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        _source: &'a str,
        tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            match MysqlEndpoint::of(ep) {
                Ok(m) => super::preflight::check_target(&m, tables).await,
                Err(e) => vec![e.to_string()],
            }
        })
    }
    fn target_warnings<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            match MysqlEndpoint::of(ep) {
                Ok(m) => super::preflight::target_warnings(&m).await,
                Err(_) => Vec::new(),
            }
        })
    }
    fn check_two_way<'a>(&'a self, ep: &'a Endpoint, tables: &'a [TargetTable]) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            match MysqlEndpoint::of(ep) {
                Ok(m) => super::preflight::check_two_way(&m, tables).await,
                Err(e) => vec![e.to_string()],
            }
        })
    }
    fn qualify(&self, ep: &Endpoint, name: &TableName) -> TableName {
        match MysqlEndpoint::of(ep) {
            Ok(m) => super::preflight::qualify(&m, name),
            Err(_) => name.clone(),
        }
    }
    fn installed<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { super::uninstall::installed(&MysqlEndpoint::of(ep)?).await })
    }
    fn uninstall<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { super::uninstall::uninstall(&MysqlEndpoint::of(ep)?).await })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let m = MysqlEndpoint::of(ep)?;
            let mut conn = m.connect().await?;
            let r = conn.query_drop("SELECT 1").await.map_err(m.error("checking the server answers"));
            let _ = conn.disconnect().await;
            r
        })
    }
    fn freeze<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a FreezeRequest,
    ) -> BoxFuture<'a, Result<FreezeOutcome, ConnectorError>> {
        Box::pin(async move { freezer::freeze_and_probe(&MysqlEndpoint::of(ep)?, how).await })
    }
    fn unfreeze<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { freezer::unfreeze(&MysqlEndpoint::of(ep)?).await })
    }
    fn frozen_since<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<i64>, ConnectorError>> {
        Box::pin(async move { freezer::frozen_since(&MysqlEndpoint::of(ep)?).await })
    }
}
