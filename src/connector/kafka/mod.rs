//! Kafka as a sink of change events (`kafka://host:9092[,host2:9092]`): one topic per
//! table, the row's primary key as message key, a Debezium-compatible JSON envelope as
//! value (docs/kafka.md). Client: rskafka (pure Rust; no transactions). Exactly-once
//! effect across a crash comes from reading back, per partition, the last message this
//! direction wrote (its `ferry.position`/`ferry.seq` headers) and skipping what is
//! already there, under a lease kept in the `ferry.leases` topic.

mod connector;
mod envelope;
mod lease;
mod log;
mod message;
mod offsets;
mod partitioner;
mod sink;
mod source;
mod types;

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

pub use connector::Store;

use super::endpoint::{Endpoint, mask_password};
use super::{ConnectorError, ErrorKind};
use crate::model::SiteId;

/// ferry's checkpoint topic: one message per applied batch, keyed by direction.
pub const CHECKPOINT_TOPIC: &str = "ferry.checkpoints";
/// ferry's lease topic: claims, renewals and releases of each direction's lease.
pub const LEASE_TOPIC: &str = "ferry.leases";

/// A Kafka endpoint: its brokers and the sink's options from the URL's query.
#[derive(Debug, Clone)]
pub struct KafkaEndpoint {
    /// Endpoint name.
    pub name: String,
    /// Its site (stamped as the `ferry.origin` header).
    pub site: SiteId,
    /// `host:port` of each bootstrap broker.
    pub brokers: Vec<String>,
    /// Partitions of a topic ferry creates (`?partitions=N`, default 3).
    pub partitions: i32,
    /// Replication factor of a topic ferry creates (`?replication=N`, default 1).
    pub replication: i16,
    /// Create missing topics (`?create_topics=false` refuses instead).
    pub create_topics: bool,
    /// Largest message ferry sends (`?max_message_bytes=N`, default 1048576, Kafka's
    /// default `message.max.bytes`); a larger one stops the task naming its row.
    pub max_message_bytes: usize,
    /// Send a tombstone (null value) after each delete (`?tombstones=true`).
    pub tombstones: bool,
    /// The URL for messages.
    pub display: String,
}

impl KafkaEndpoint {
    /// The Kafka endpoint of a task file's endpoint.
    pub fn of(ep: &Endpoint) -> Result<Self, ConnectorError> {
        Self::parse(&ep.name, ep.site.clone(), ep.url.secret_text()).map_err(|(problem, fix)| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem,
            fix,
        })
    }

    /// Parses `kafka://host:port[,host:port][?option=value&…]`: `Err((problem, fix))`.
    pub fn parse(name: &str, site: SiteId, url: &str) -> Result<Self, (String, String)> {
        let display = mask_password(url);
        let fix = || {
            "write url = \"kafka://HOST:PORT[,HOST2:PORT]\" (options: ?partitions=N&replication=N&create_topics=false&max_message_bytes=N&tombstones=true)".to_string()
        };
        let rest = url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| (format!("url {display} is not a Kafka URL"), fix()))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        let mut brokers = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err((format!("url {display}: broker {h:?} is not HOST:PORT"), fix()));
            }
            brokers.push(h.to_string());
        }
        if brokers.is_empty() {
            return Err((format!("url {display} names no broker"), fix()));
        }
        let mut ep = KafkaEndpoint {
            name: name.to_string(),
            site,
            brokers,
            partitions: 3,
            replication: 1,
            create_topics: true,
            max_message_bytes: 1_048_576,
            tombstones: false,
            display: display.clone(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || (format!("url {display}: option {k}={v:?} is not valid"), fix());
            match k {
                "partitions" => ep.partitions = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
                "replication" => ep.replication = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
                "create_topics" => ep.create_topics = v.parse().map_err(|_| bad())?,
                "max_message_bytes" => ep.max_message_bytes = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
                "tombstones" => ep.tombstones = v.parse().map_err(|_| bad())?,
                _ => return Err((format!("url {display}: unknown option {k:?}"), fix())),
            }
        }
        Ok(ep)
    }

    /// Connects to the cluster; gives up after 10 s, naming the brokers.
    pub async fn connect(&self) -> Result<Client, ConnectorError> {
        let backoff = BackoffConfig {
            deadline: Some(Duration::from_secs(10)),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        ClientBuilder::new(self.brokers.clone())
            .client_id("ferry")
            .backoff_config(backoff)
            .build()
            .await
            .map_err(|e| ConnectorError::Setup {
                endpoint: self.name.clone(),
                problem: format!("cannot reach the Kafka brokers of {} ({}): {e}", self.display, self.brokers.join(", ")),
                fix: "check that the brokers run and the url's hosts and ports are right (the advertised listeners must be reachable from here too)".into(),
            })
    }

    /// Wraps a client error with this endpoint and what ferry was doing.
    pub fn error(&self, what: impl Into<String>) -> impl FnOnce(rskafka::client::error::Error) -> ConnectorError + '_ {
        let what = what.into();
        move |e| {
            let kind = error_kind(&e);
            ConnectorError::Stream { endpoint: self.name.clone(), what, source: Box::new(e), kind }
        }
    }

    /// A client of one partition of a topic that exists.
    pub async fn partition(
        &self,
        client: &Client,
        topic: &str,
        p: i32,
    ) -> Result<Arc<PartitionClient>, ConnectorError> {
        client
            .partition_client(topic.to_string(), p, UnknownTopicHandling::Error)
            .await
            .map(Arc::new)
            .map_err(self.error(format!("opening partition {p} of topic {topic}")))
    }
}

/// What a client error calls for: refused rights need a human, a refused size refuses
/// the row, the rest (connections, leaders moving) is retried.
pub fn error_kind(e: &rskafka::client::error::Error) -> ErrorKind {
    use rskafka::client::error::{Error, ProtocolError as P};
    match e {
        Error::ServerError { protocol_error, .. } => match protocol_error {
            P::TopicAuthorizationFailed
            | P::ClusterAuthorizationFailed
            | P::GroupAuthorizationFailed
            | P::InvalidTopicException
            | P::InvalidReplicationFactor
            | P::InvalidPartitions => ErrorKind::Setup,
            P::MessageTooLarge | P::RecordListTooLarge | P::InvalidRecord => ErrorKind::Refused,
            _ => ErrorKind::Runtime,
        },
        _ => ErrorKind::Runtime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_brokers_and_options() {
        let ep = KafkaEndpoint::parse("k", SiteId::new("k"), "kafka://a:9092,b:9093?partitions=6&tombstones=true")
            .expect("url");
        assert_eq!(ep.brokers, ["a:9092", "b:9093"]);
        assert_eq!((ep.partitions, ep.tombstones, ep.create_topics), (6, true, true));
        assert!(KafkaEndpoint::parse("k", SiteId::new("k"), "kafka://a").is_err(), "no port");
        assert!(KafkaEndpoint::parse("k", SiteId::new("k"), "kafka://a:1?nope=1").is_err(), "unknown option");
        assert!(KafkaEndpoint::parse("k", SiteId::new("k"), "kafka://").is_err(), "no broker");
    }
}
