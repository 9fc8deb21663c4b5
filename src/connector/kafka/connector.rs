//! Kafka in the registry: `kafka://host:9092[,host2:9092]`, a sink of change events.

use futures_util::future::BoxFuture;

use super::{CHECKPOINT_TOPIC, KafkaEndpoint, LEASE_TOPIC, envelope, sink::KafkaSink, types};
use crate::connector::dynamic::DynSink;
use crate::connector::endpoint::{Endpoint, EndpointUrl};
use crate::connector::registry::{Connector, SinkOptions, TargetState, TargetTable, unsupported};
use crate::connector::typemap::TypeMap;
use crate::connector::{ConnectorError, DirectionId};
use crate::model::{Position, PositionParseError, SiteId};

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
        // `kafka:PARTITION:OFFSET[,…]`: a mirror's position (not read by this release).
        let bad =
            || PositionParseError { text: text.to_string(), expected: "expected kafka:PARTITION:OFFSET[,…]".into() };
        let detail = text.strip_prefix("kafka:").ok_or_else(bad)?;
        let mut order = Vec::new();
        for part in detail.split(',') {
            let (p, o) = part.split_once(':').ok_or_else(bad)?;
            let (p, o): (u32, u64) = (p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?);
            order.extend(p.to_be_bytes());
            order.extend(o.to_be_bytes());
        }
        Ok(Position::new(text.to_string(), order, None))
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
            if opts.two_way_from.is_some() {
                return Err(unsupported(self.name(), ep, "one side of a two-way task"));
            }
            let sink = KafkaSink::open(KafkaEndpoint::of(ep)?, opts.topic.clone()).await?;
            Ok(Box::new(sink) as Box<dyn DynSink>)
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
