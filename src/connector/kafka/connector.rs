//! Kafka in the registry: `kafka://host:9092[,host2:9092]`, a sink of change events
//! and, as a source, topics mirrored to another cluster.

use futures_util::future::BoxFuture;

use super::source::{self, KafkaSource};
use super::{CHECKPOINT_TOPIC, KafkaEndpoint, LEASE_TOPIC, envelope, offsets, sink::KafkaSink, types};
use crate::connector::dynamic::{DynSink, DynSource};
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{
    Connector, SinkOptions, SourceCheck, SourceFindings, SourceOptions, TargetState, TargetTable,
};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, SiteId, TableName};

/// The Kafka store.
pub struct Store;

impl Connector for Store {
    fn name(&self) -> &'static str {
        "Kafka"
    }
    fn schemes(&self) -> &'static [&'static str] {
        &["kafka"]
    }
    fn url_form(&self) -> &'static str {
        "kafka://HOST:PORT[,HOST2:PORT]"
    }
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)> {
        KafkaEndpoint::parse("", SiteId::new(""), url.secret_text()).map(|_| ())
    }
    fn position_kind(&self) -> &'static str {
        "kafka"
    }
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError> {
        offsets::parse(text).map(|o| offsets::position(&o))
    }
    fn transactional(&self) -> bool {
        // rskafka has no transactions, and tansu 0.6 shows aborted batches to
        // read_committed consumers anyway (docs/kafka.md).
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
            // Two-way is for mirrored topics only: `ensure_tables` refuses other tables.
            let two_way = opts.two_way_from.is_some();
            let sink = KafkaSink::open(KafkaEndpoint::of(ep)?, opts.topic.clone(), two_way).await?;
            Ok(Box::new(sink) as Box<dyn DynSink>)
        })
    }
    fn open_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        _opts: &'a SourceOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>> {
        Box::pin(async move {
            let source = KafkaSource::open(KafkaEndpoint::of(ep)?).await?;
            Ok(Box::new(source) as Box<dyn DynSource>)
        })
    }
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        patterns: &'a [String],
        _how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            let mut found = SourceFindings::default();
            let listed = async {
                let k = KafkaEndpoint::of(ep)?;
                let client = k.connect().await?;
                client.list_topics().await.map_err(k.error("listing topics"))
            };
            match listed.await {
                Err(e) => found.problems.push(e.to_string()),
                Ok(topics) => {
                    let names: Vec<String> = topics.into_iter().map(|t| t.name).collect();
                    match source::matching(&names, patterns) {
                        Ok(m) => {
                            found.tables = m
                                .into_iter()
                                .map(|n| TargetTable { name: TableName::bare(n), columns: None })
                                .collect();
                        }
                        Err(problem) => found.problems.push(format!(
                            "endpoint {}: {problem}\n  fix: name existing topics in the task's tables",
                            ep.name
                        )),
                    }
                }
            }
            found
        })
    }
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>> {
        Box::pin(async move { super::sink::target_state(&KafkaEndpoint::of(ep)?, dir).await })
    }
    fn source_head<'a>(&'a self, _ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let k = KafkaEndpoint::of(ep)?;
            let client = k.connect().await?;
            client.list_topics().await.map(|_| ()).map_err(k.error("listing topics"))
        })
    }
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        _source: &'a str,
        tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let k = match KafkaEndpoint::of(ep) {
                Ok(k) => k,
                Err(e) => return vec![e.to_string()],
            };
            let client = match k.connect().await {
                Ok(c) => c,
                Err(e) => return vec![e.to_string()],
            };
            let topics = match client.list_topics().await {
                Ok(t) => t.into_iter().map(|t| t.name).collect::<Vec<_>>(),
                Err(e) => return vec![k.error("listing topics")(e).to_string()],
            };
            let mut problems = Vec::new();
            // The task's own topic template is not known here: the tables' topic names
            // are checked when the task runs (a missing one is named there).
            let _ = tables;
            let wanted: Vec<String> = vec![CHECKPOINT_TOPIC.into(), LEASE_TOPIC.into()];
            for name in wanted {
                if let Some(why) = envelope::invalid_topic(&name) {
                    problems.push(format!("endpoint {}: {why}\n  fix: change the task's topic template", ep.name));
                } else if !k.create_topics && !topics.contains(&name) {
                    problems.push(format!(
                        "endpoint {}: topic {name} does not exist, and the url says create_topics=false\n  fix: create topic {name}, or drop create_topics=false from the url",
                        ep.name
                    ));
                }
            }
            problems
        })
    }
}
