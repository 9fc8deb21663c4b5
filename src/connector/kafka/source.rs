//! The Kafka [`Source`] (topic mirroring): the topics matching the task's globs, each
//! read partition by partition from the offsets of the position. A snapshot copies what
//! a topic holds (from each partition's start); the stream then follows from where the
//! direction started. Messages whose origin header names the target's site came from
//! there and are dropped (two-way without loops); the position still moves past them.

use std::sync::Arc;

use futures_util::future::try_join_all;
use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;

use super::message;
use super::offsets::{self, Offsets};
use super::{CHECKPOINT_TOPIC, KafkaEndpoint, LEASE_TOPIC, log};
use crate::connector::{Chunk, ConnectorError, ReadBatch, ReadRequest, Source};
use crate::model::{Change, Key, Op, Position, SiteId, TableSchema, Txn, Value};

/// Bytes asked of one partition per read.
const FETCH_BYTES: i32 = 1 << 20;

/// A topic being mirrored: its schema and a client per partition.
struct Topic {
    schema: Arc<TableSchema>,
    partitions: Vec<Arc<PartitionClient>>,
}

/// A Kafka cluster whose topics are mirrored.
pub struct KafkaSource {
    ep: KafkaEndpoint,
    client: Client,
    topics: Vec<Topic>,
}

impl KafkaSource {
    /// Connects to the source cluster.
    pub async fn open(ep: KafkaEndpoint) -> Result<Self, ConnectorError> {
        let client = ep.connect().await?;
        Ok(KafkaSource { ep, client, topics: Vec::new() })
    }

    fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.schema.name.name == name)
    }

    /// The first offset still held by a partition.
    async fn earliest(&self, pc: &PartitionClient) -> Result<i64, ConnectorError> {
        pc.get_offset(OffsetAt::Earliest).await.map_err(self.ep.error(format!(
            "reading the start of partition {} of topic {}",
            pc.partition(),
            pc.topic()
        )))
    }

    /// Reads a partition from `at`: fails when retention already deleted messages the
    /// direction had not read (they would be lost without a word).
    async fn read_from(&self, pc: &PartitionClient, at: i64) -> Result<Vec<RecordAndOffset>, ConnectorError> {
        let records = log::fetch(&self.ep, pc, at, FETCH_BYTES, 50).await?;
        // A gap at the start is compaction, or retention overtaking the direction.
        if records.first().is_some_and(|r| r.offset > at) {
            let earliest = self.earliest(pc).await?;
            if earliest > at {
                return Err(ConnectorError::Setup {
                    endpoint: self.ep.name.clone(),
                    problem: format!(
                        "partition {} of topic {} starts at offset {earliest}, but the direction had read only up to offset {at}: the cluster's retention deleted messages {at}..{} before they were mirrored",
                        pc.partition(),
                        pc.topic(),
                        earliest - 1
                    ),
                    fix: "raise the topic's retention (retention.ms / retention.bytes) above the mirror's longest pause; to go on without the lost messages, delete the task's checkpoint in the target's ferry.checkpoints topic and run again (it copies the topic anew)".into(),
                });
            }
        }
        Ok(records)
    }
}

/// Whether a glob holds wildcard characters (a plain name must match a topic).
fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// The topics of `names` matching the globs (ferry's own and the brokers' internal
/// topics only when named), or the first plain name that matches nothing.
pub fn matching(names: &[String], patterns: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let glob = glob::Pattern::new(p).map_err(|e| format!("topic glob {p:?} is not valid: {e}"))?;
        let own = |n: &str| n == CHECKPOINT_TOPIC || n == LEASE_TOPIC || n.starts_with("__");
        let found: Vec<&String> =
            names.iter().filter(|n| if is_glob(p) { glob.matches(n) && !own(n) } else { *n == p }).collect();
        if !is_glob(p) && found.is_empty() {
            return Err(format!("topic {p} does not exist"));
        }
        for n in found {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The change that carries one message.
fn change(schema: &Arc<TableSchema>, p: i32, m: &RecordAndOffset, site: &str) -> Change {
    Change {
        table: schema.clone(),
        op: Op::Insert,
        key: vec![Value::Int(i64::from(p)), Value::Int(m.offset)],
        before: None,
        after: Some(message::row_of(p, m, site)),
        prior: Default::default(),
        seen: None,
        version: None,
    }
}

impl Source for KafkaSource {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        let listed = self.client.list_topics().await.map_err(self.ep.error("listing topics"))?;
        let names: Vec<String> = listed.iter().map(|t| t.name.clone()).collect();
        let wanted = matching(&names, patterns).map_err(|problem| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem,
            fix: "name existing topics in the task's tables (globs like \"orders.*\" match topic names)".into(),
        })?;
        self.topics.clear();
        for name in wanted {
            let n = listed.iter().find(|t| t.name == name).map_or(0, |t| t.partitions.len());
            let mut partitions = Vec::with_capacity(n);
            for p in 0..n {
                partitions.push(self.ep.partition(&self.client, &name, p as i32).await?);
            }
            self.topics.push(Topic { schema: Arc::new(message::schema(&name, n)), partitions });
        }
        Ok(self.topics.iter().map(|t| t.schema.clone()).collect())
    }

    async fn install_capture(&mut self, _tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        // A log needs nothing installed to be read.
        Ok(())
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        let ep = &self.ep;
        let ends = try_join_all(self.topics.iter().flat_map(|t| {
            t.partitions.iter().map(move |pc| async move {
                Ok::<_, ConnectorError>(((t.schema.name.name.clone(), pc.partition()), log::end(ep, pc).await?))
            })
        }))
        .await?;
        Ok(offsets::position(&ends.into_iter().collect()))
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        _versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        let topic = self.topic(&table.name.name).ok_or_else(|| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!("topic {} is not among the task's topics", table.name),
            fix: "report this as a bug".into(),
        })?;
        // Where the last chunk stopped: (partition, offset) of its last message.
        let (mut p, mut at) = match after.map(Vec::as_slice) {
            Some([Value::Int(p), Value::Int(o)]) => (*p as usize, Some(o + 1)),
            _ => (0, None),
        };
        let mut rows = Vec::new();
        while p < topic.partitions.len() && rows.len() < limit {
            let pc = &topic.partitions[p];
            let from = match at {
                Some(o) => o,
                None => self.earliest(pc).await?,
            };
            let got = self.read_from(pc, from).await?;
            let Some(last) = got.last().map(|r| r.offset) else {
                (p, at) = (p + 1, None);
                continue;
            };
            let take = limit - rows.len();
            rows.extend(got.iter().take(take).map(|m| message::row_of(p as i32, m, self.ep.site.as_str())));
            at = Some(if got.len() > take { got[take].offset } else { last + 1 });
        }
        Ok(Chunk { rows, position: Some(offsets::start()), marks: None, versions: None, native: None })
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        let mut next = offsets::parse(&req.after.to_string()).map_err(|e| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!("the direction's position is not a Kafka source's: {e}"),
            fix: "the task's source was changed to a Kafka endpoint: delete its checkpoint in the target and run again"
                .into(),
        })?;
        // Partitions the position does not know yet (a topic matched since) start at
        // their beginning.
        for t in &self.topics {
            for pc in &t.partitions {
                let id = (t.schema.name.name.clone(), pc.partition());
                if let std::collections::btree_map::Entry::Vacant(e) = next.entry(id) {
                    e.insert(self.earliest(pc).await?);
                }
            }
        }
        let this = &*self;
        let next_ref = &next;
        let fetched = try_join_all(this.topics.iter().flat_map(|t| {
            t.partitions.iter().map(move |pc| async move {
                let at = next_ref.get(&(t.schema.name.name.clone(), pc.partition())).copied().unwrap_or(0);
                Ok::<_, ConnectorError>((t, pc.partition(), this.read_from(pc, at).await?))
            })
        }))
        .await?;
        let mut txns = Vec::new();
        let site = self.ep.site.as_str();
        for (t, p, records) in fetched {
            // One transaction per run of messages of one origin in a partition.
            let mut run: Vec<Change> = Vec::new();
            let mut run_origin: Option<String> = None;
            let mut commit_ts = 0;
            for m in &records {
                let origin = message::origin(&m.record, site).to_string();
                if run_origin.as_deref().is_some_and(|o| o != origin) {
                    flush(&mut txns, &mut run, run_origin.take(), commit_ts, &next, req);
                }
                next.insert((t.schema.name.name.clone(), p), m.offset + 1);
                commit_ts = m.record.timestamp.timestamp_micros();
                run_origin = Some(origin);
                run.push(change(&t.schema, p, m, site));
            }
            flush(&mut txns, &mut run, run_origin, commit_ts, &next, req);
        }
        Ok(ReadBatch { txns, position: offsets::position(&next), continues: false })
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        // ferry writes nothing into a mirrored cluster; lag is counted in messages.
        Ok(())
    }

    async fn consumed(&mut self, _consumer: &str, _position: &Position) -> Result<(), ConnectorError> {
        // The position lives in the target (ferry.checkpoints); no consumer group here.
        Ok(())
    }
}

/// Ends a run of messages as one transaction, unless it came from the target.
fn flush(
    txns: &mut Vec<Txn>,
    run: &mut Vec<Change>,
    origin: Option<String>,
    commit_ts: i64,
    next: &Offsets,
    req: &ReadRequest,
) {
    let changes = std::mem::take(run);
    let Some(origin) = origin else { return };
    if changes.is_empty() || origin == req.exclude_origin.as_str() {
        return;
    }
    txns.push(Txn {
        origin: SiteId::new(&origin),
        commit_ts,
        position: offsets::position(next),
        changes,
        ddl: Vec::new(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_topics_and_a_plain_name_must_exist() {
        let names: Vec<String> =
            ["orders", "orders.eu", "ferry.checkpoints", "__consumer_offsets", "users"].map(String::from).to_vec();
        assert_eq!(matching(&names, &["orders*".into()]).expect("glob"), ["orders", "orders.eu"]);
        assert_eq!(matching(&names, &["*".into()]).expect("all").len(), 3, "ferry's and internal topics left out");
        assert!(matching(&names, &["nope".into()]).is_err());
    }
}
