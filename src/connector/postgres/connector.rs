//! PostgreSQL in the registry: `postgres://user@host:5432/db` (also `postgresql://`).

use futures_util::future::BoxFuture;

use super::{PgEndpoint, check, position, sink::PgSink, source::PgSource, types};
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

/// The PostgreSQL store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["postgres", "postgresql"]
    }
    fn url_form(&self) -> &'static str {
        "postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem]"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        if url.rest().starts_with("//") {
            super::tls::parse(url.secret_text(), |f| url.resolve(f))
                .map_err(|e| (format!("endpoint url {url}: {}", e.problem), e.fix))?;
        }
        let plain = super::tls::strip(url.secret_text());
        if !url.rest().starts_with("//") || plain.parse::<sqlx::postgres::PgConnectOptions>().is_err() {
            return Err((
                format!("endpoint url {url} is not a PostgreSQL URL"),
                "write url = \"postgres://USER:PASSWORD@HOST:PORT/DATABASE\"".into(),
            ));
        }
        Ok(())
    }
    fn position_kind(&self) -> &'static str {
        "pg"
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
            let source = PgSource::open(PgEndpoint::of(ep)?, &opts.stream).await?;
            let source = source
                .with_versions(opts.versions)
                .with_native_chunks(opts.native_chunks)
                .with_handover(opts.former_stream.clone(), opts.takeover);
            Ok(Box::new(source) as Box<dyn DynSource>)
        })
    }
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            let mut sink = PgSink::open(PgEndpoint::of(ep)?).await?.with_workers(opts.workers);
            if let Some(site) = &opts.two_way_from {
                sink = sink.with_two_way(site.clone());
            }
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move { super::sink::target_state(&PgEndpoint::of(ep)?, dir).await })
    }
    fn source_head<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async move {
            let ep = PgEndpoint::of(ep)?;
            let mut conn = ep.connect().await?;
            Ok(super::source::wal_head(&ep, &mut conn).await.ok())
        })
    }
    fn source_retention<'a>(
        &'a self,
        ep: &'a Endpoint,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::connector::Retention>, ConnectorError>> {
        Box::pin(async move {
            let ep = PgEndpoint::of(ep)?;
            let mut conn = ep.connect().await?;
            super::slot::retention(&ep, &mut conn, stream).await
        })
    }
    fn conflicts<'a>(
        &'a self,
        ep: &'a Endpoint,
        task: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<ConflictRecord>>, ConnectorError>> {
        Box::pin(async move {
            use sqlx::Row as _;
            let p = PgEndpoint::of(ep)?;
            let mut conn = p.connect().await?;
            let sql = format!(
                "SELECT id, task, direction, tbl, pk, policy, winner, incoming_site, local_site, detected_us, \
                 incoming_ts, local_ts, incoming_row, local_row \
                 FROM {} WHERE ($1::text IS NULL OR task = $1) ORDER BY id DESC LIMIT $2",
                super::sink::conflict_table()
            );
            let rows = match sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(task)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut conn)
                .await
            {
                Ok(rows) => rows,
                Err(e) if super::sqlstate(&e).as_deref() == Some("42P01") => Vec::new(),
                Err(e) => return Err(p.error("reading the conflict log")(e)),
            };
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
        _how: &'a SideOptions,
    ) -> BoxFuture<'a, Result<AnySide, ConnectorError>> {
        Box::pin(async move { Ok(AnySide::new(super::verifier::PgSide::open(PgEndpoint::of(ep)?).await?)) })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            match PgEndpoint::of(ep) {
                Ok(p) => check::check_source(&p, patterns, how).await,
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
            match PgEndpoint::of(ep) {
                Ok(p) => check::check_target(&p, tables).await,
                Err(e) => vec![e.to_string()],
            }
        })
    }
    fn check_two_way<'a>(&'a self, ep: &'a Endpoint, _tables: &'a [TargetTable]) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            match PgEndpoint::of(ep) {
                Ok(p) => check::check_two_way(&p).await,
                Err(e) => vec![e.to_string()],
            }
        })
    }
    fn qualify(&self, _ep: &Endpoint, name: &TableName) -> TableName {
        check::qualify(name)
    }
    fn installed<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { super::uninstall::installed(&PgEndpoint::of(ep)?).await })
    }
    fn uninstall<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { super::uninstall::uninstall(&PgEndpoint::of(ep)?).await })
    }
    fn freeze<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a FreezeRequest,
    ) -> BoxFuture<'a, Result<FreezeOutcome, ConnectorError>> {
        Box::pin(async move { super::freezer::freeze_and_probe(&PgEndpoint::of(ep)?, how).await })
    }
    fn unfreeze<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { super::freezer::unfreeze(&PgEndpoint::of(ep)?).await })
    }
    fn frozen_since<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<i64>, ConnectorError>> {
        Box::pin(async move { super::freezer::frozen_since(&PgEndpoint::of(ep)?).await })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let p = PgEndpoint::of(ep)?;
            let mut conn = p.connect().await?;
            p.exec(&mut conn, "checking the server answers", "SELECT 1").await
        })
    }
}
