//! `[[task]] transport = "nats"` (docs/cluster.md, "Transport"): a direction's change
//! batches travel through a JetStream stream, one per direction (file storage, work-queue
//! retention, discard new), from a publishing role near the source ([`publish`]) to an
//! applying role near the target ([`reader`]). Each role holds its own cluster lease.
//!
//! The target's checkpoint is the truth. The applying side acknowledges a message only
//! once the target committed past it, and writes each committed position to the
//! `ferry_relay` KV bucket; the publishing side starts from that position (or the end
//! of what the stream still holds, whichever is later) and tells the source it may
//! release history only up to it. A republished batch is dropped by the server
//! (`Nats-Msg-Id` from its positions) or skipped by the applying side (at or below its
//! checkpoint). A full stream refuses what is published: the publishing side waits
//! with an alarm, never dropping anything.

pub mod publish;
pub mod reader;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures_util::future::BoxFuture;

use super::{Candidate, ClusterError};
use crate::config::{DEFAULT_TRANSPORT_MAX_AGE, DEFAULT_TRANSPORT_MAX_BYTES, Transport};
use crate::connector::dynamic::DynSource;
use crate::connector::{ConnectorError, DirectionId, ErrorKind};
use crate::engine::EngineError;
use crate::engine::relay::{PublishRun, ReaderParts, Relay, RelayRole, RelayRun};

/// The bucket holding each relayed direction's last position committed on the target.
pub const BUCKET: &str = "ferry_relay";
/// The applying side's durable consumer (one per stream).
const CONSUMER: &str = "apply";
/// How long the server remembers a message id to drop a republished copy.
const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// Room left in a message for its headers.
const HEADER_ROOM: usize = 4096;
/// Header: the source position the batch of this message follows.
const AFTER: &str = "Ferry-After";
/// Header: where the batch of this message ends (its source position).
const END: &str = "Ferry-End";
/// Header: which part of its batch this message is (`i/n`).
const PART: &str = "Ferry-Part";
/// The name errors give the stream's side.
const ENDPOINT: &str = "nats transport";

/// One direction's stream and key.
#[derive(Debug, Clone)]
struct Names {
    /// Key in [`BUCKET`] (the direction's lease key).
    key: String,
    /// The stream.
    stream: String,
    /// Its one subject.
    subject: String,
}

impl Names {
    fn of(dir: &DirectionId) -> Names {
        let key = super::lease::key(dir);
        // Stream names may not hold dots; escaped key parts never hold `~`.
        Names { stream: format!("ferry_relay_{}", key.replace('.', "~")), subject: format!("ferry.relay.{key}"), key }
    }
}

/// The relay over this node's NATS connection.
pub struct NatsRelay {
    js: jetstream::Context,
    applied: kv::Store,
    /// Copies of each stream (`[cluster] replicas`), as of ferry's buckets.
    replicas: usize,
}

impl NatsRelay {
    /// Opens the relay's KV bucket (creating it when missing), with `replicas` copies of
    /// it and of every relay stream.
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Arc<NatsRelay>, ClusterError> {
        let applied = super::open_bucket(
            &js,
            kv::Config {
                bucket: BUCKET.to_string(),
                description: "ferry: each relayed direction's position committed on the target".to_string(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Arc::new(NatsRelay { js, applied, replicas }))
    }

    /// The largest part of a batch one message may carry.
    fn max_part(&self) -> usize {
        self.js.client().server_info().max_payload.saturating_sub(HEADER_ROOM).max(HEADER_ROOM)
    }

    /// The direction's stream, created when missing and given the task's limits.
    async fn stream(&self, names: &Names, limits: &Transport) -> Result<stream::Stream, ConnectorError> {
        let config = stream::Config {
            name: names.stream.clone(),
            description: Some("ferry: one relayed direction's change batches".into()),
            subjects: vec![names.subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            // A full stream refuses new messages rather than dropping old ones; age is
            // watched by the publishing side (a max_age would drop unapplied changes).
            discard: stream::DiscardPolicy::New,
            max_bytes: i64::try_from(limits.max_bytes).unwrap_or(i64::MAX),
            max_messages: -1,
            max_message_size: -1,
            duplicate_window: DEDUPE_WINDOW,
            num_replicas: self.replicas,
            ..Default::default()
        };
        match self.js.get_stream(&names.stream).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| nats(format!("reading stream {}", names.stream), e))?;
                if info.config.max_bytes != config.max_bytes {
                    self.js
                        .update_stream(config)
                        .await
                        .map_err(|e| nats(format!("setting the limits of stream {}", names.stream), e))?;
                }
                Ok(s)
            }
            Err(_) => self
                .js
                .get_or_create_stream(config)
                .await
                .map_err(|e| nats(format!("creating stream {}", names.stream), e)),
        }
    }

    /// The position the target last committed, as the applying side wrote it.
    async fn applied(&self, names: &Names) -> Result<Option<crate::model::Position>, ConnectorError> {
        let entry =
            self.applied.entry(&names.key).await.map_err(|e| nats(format!("reading {BUCKET} {}", names.key), e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&entry.value);
        Ok(Some(crate::connector::registry::parse_position(&text).map_err(|e| ConnectorError::Setup {
            endpoint: ENDPOINT.into(),
            problem: format!("{BUCKET} {} holds {text:?}: {e}", names.key),
            fix: "run the same ferry release on every node".into(),
        })?))
    }
}

impl Relay for NatsRelay {
    fn publish<'a>(&'a self, run: PublishRun<'a>) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(publish::run(self, run))
    }

    fn reader<'a>(&'a self, parts: ReaderParts<'a>) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>> {
        Box::pin(async move {
            let reader = reader::Reader::open(self, parts).await?;
            Ok(Box::new(reader) as Box<dyn DynSource>)
        })
    }
}

/// The task's limits, or the defaults.
fn limits(t: Option<&Transport>) -> Transport {
    t.cloned().unwrap_or(Transport {
        max_bytes: DEFAULT_TRANSPORT_MAX_BYTES,
        max_age: DEFAULT_TRANSPORT_MAX_AGE,
        publish_nodes: Vec::new(),
    })
}

/// A NATS failure as a connector error: retried (the servers may come back).
fn nats(what: String, source: impl std::error::Error + Send + Sync + 'static) -> ConnectorError {
    ConnectorError::Stream { endpoint: ENDPOINT.into(), what, source: Box::new(source), kind: ErrorKind::Runtime }
}

/// Splits each relayed direction into its publishing and applying roles, each a
/// candidate of its own (its own lease); other candidates stay as they are. `nodes` says
/// who may apply, `publish_nodes` who may publish.
pub fn split(candidates: Vec<Candidate>, relay: &Arc<NatsRelay>) -> Vec<Candidate> {
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let Some(publish_nodes) = c.spec.transport.as_ref().map(|t| t.publish_nodes.clone()) else {
            out.push(c);
            continue;
        };
        let direction = c.spec.id.clone();
        let carrier: Arc<dyn Relay> = relay.clone();
        let mut publisher = c.spec.clone();
        publisher.id.to = publishing_name(&direction.to);
        publisher.relay =
            Some(RelayRun { role: RelayRole::Publish, direction: direction.clone(), relay: carrier.clone() });
        let mut applier = c.spec;
        applier.relay = Some(RelayRun { role: RelayRole::Apply, direction, relay: carrier });
        out.push(Candidate { spec: publisher, nodes: publish_nodes });
        out.push(Candidate { spec: applier, nodes: c.nodes });
    }
    out
}

/// How the publishing role of a direction to `to` is named (its lease, its metrics):
/// `task from->to/publish`.
pub fn publishing_name(to: &str) -> String {
    format!("{to}/publish")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direction_names_a_stream_nats_accepts() {
        let n = Names::of(&DirectionId { task: "orders.eu".into(), from: "dc a".into(), to: "dc-b".into() });
        assert_eq!(n.stream, "ferry_relay_orders=2Eeu~dc=20a~dc-b");
        assert_eq!(n.subject, "ferry.relay.orders=2Eeu.dc=20a.dc-b");
        assert!(!n.stream.contains(['.', ' ', '*', '>', '/']));
    }
}
