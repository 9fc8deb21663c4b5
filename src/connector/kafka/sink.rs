//! The Kafka [`Sink`]: each change becomes a message on its table's topic, in the
//! partition of its key, carrying the headers `ferry.dir` (the direction),
//! `ferry.position` (its transaction's source position), `ferry.seq` (its index in that
//! transaction) and `ferry.origin` (its site). Messages of one partition are appended
//! in stream order, so the last one of a direction says how far that partition got: at
//! the first write to a partition after a start, ferry reads it back and skips every
//! change at or before it. The checkpoint goes to `ferry.checkpoints` after the batch's
//! messages are acknowledged; a crash in between re-reads from the older checkpoint and
//! the read-back drops what already landed: an exactly-once effect without Kafka
//! transactions. Snapshot rows (`op` r) carry no position and are at-least-once.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;
use serde::{Deserialize, Serialize};

use super::envelope::{self, SourceInfo};
use super::lease::{self, DIR_HEADER, dir_key};
use super::message::{self, OFFSET_HEADER, ORIGIN_HEADER};
use super::partitioner::partition_of;
use super::{CHECKPOINT_TOPIC, KafkaEndpoint, LEASE_TOPIC, log};
use crate::connector::registry::{TargetState, parse_position};
use crate::connector::{
    ApplyBatch, ApplyFailure, ApplyReport, Checkpoint, ConnectorError, DirectionId, HEARTBEAT_TABLE, LeaseHolder,
    LeaseOutcome, Sink, TableProgress,
};
use crate::model::{Op, Position, Row, TableName, TableSchema, key_text};

/// Header: the source position of the message's transaction.
const POSITION_HEADER: &str = "ferry.position";
/// Header: the change's index in its transaction.
const SEQ_HEADER: &str = "ferry.seq";
/// Bytes per produce request (a partition's messages go in several, in order).
const REQUEST_BYTES: usize = 512 * 1024;

/// The checkpoint message's value.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    position: Option<String>,
    tables: BTreeMap<String, TableProgress>,
    fencing: Option<i64>,
}

/// A topic's partitions.
struct Topic {
    name: String,
    partitions: Vec<Arc<PartitionClient>>,
}

/// How far a direction got in one partition: (position, seq) of its last message there.
type Mark = Option<(Position, u64)>;

/// A Kafka cluster change events are written to.
pub struct KafkaSink {
    ep: KafkaEndpoint,
    client: Client,
    template: String,
    topics: HashMap<TableName, Arc<Topic>>,
    marks: HashMap<(String, i32), Mark>,
    checkpoints: Option<Arc<PartitionClient>>,
    leases: Option<Arc<PartitionClient>>,
    /// The lease partition's end when this process last saw its own tenure hold.
    lease_end: i64,
    /// A source transaction applied in parts: its position and the next change index.
    open: Option<(Position, u64)>,
    /// Mirrored topics (tables of the message schema) and their source's partition count.
    mirrored: HashMap<TableName, usize>,
    /// How far a direction mirrored a partition: the source offset of its last message.
    copied: HashMap<(String, i32), Option<i64>>,
    /// Both directions of a task run: only mirrored topics may take part.
    two_way: bool,
}

/// Where a batch's messages go: per (topic, partition), in order.
type Groups = Vec<(Arc<Topic>, usize, Vec<Record>)>;

impl KafkaSink {
    /// Connects; `template` names each table's topic (`ferry.{db}.{table}`); `two_way`
    /// when both directions of the task run.
    pub async fn open(ep: KafkaEndpoint, template: String, two_way: bool) -> Result<Self, ConnectorError> {
        let client = ep.connect().await?;
        Ok(KafkaSink {
            ep,
            client,
            template,
            topics: HashMap::new(),
            marks: HashMap::new(),
            checkpoints: None,
            leases: None,
            lease_end: -1,
            open: None,
            mirrored: HashMap::new(),
            copied: HashMap::new(),
            two_way,
        })
    }

    /// Creates a topic unless it exists (or says how to when ferry may not).
    async fn ensure_topic(
        &self,
        name: &str,
        partitions: i32,
        table: Option<&TableName>,
    ) -> Result<usize, ConnectorError> {
        if let Some(n) = existing(&self.ep, &self.client, name).await? {
            return Ok(n);
        }
        let what = table.map_or_else(String::new, |t| format!(" (of table {t})"));
        if !self.ep.create_topics {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("topic {name}{what} does not exist, and the url says create_topics=false"),
                fix: format!(
                    "create topic {name} (kafka-topics.sh --create --topic {name}), or drop create_topics=false from the url"
                ),
            });
        }
        let controller = self.client.controller_client().map_err(self.ep.error("reaching the controller"))?;
        if let Err(e) = controller.create_topic(name, partitions, self.ep.replication, 10_000).await {
            use rskafka::client::error::{Error, ProtocolError};
            match &e {
                Error::ServerError { protocol_error: ProtocolError::TopicAlreadyExists, .. } => {}
                Error::ServerError {
                    protocol_error: ProtocolError::TopicAuthorizationFailed | ProtocolError::ClusterAuthorizationFailed,
                    ..
                } => {
                    return Err(ConnectorError::Setup {
                        endpoint: self.ep.name.clone(),
                        problem: format!("topic {name}{what} does not exist, and ferry may not create it: {e}"),
                        fix: format!(
                            "create topic {name} yourself, or grant ferry's principal CREATE on the cluster or the topic"
                        ),
                    });
                }
                _ => return Err(self.ep.error(format!("creating topic {name}{what}"))(e)),
            }
        }
        // A new topic's metadata may lag its creation by a moment.
        for _ in 0..50 {
            if let Some(n) = existing(&self.ep, &self.client, name).await? {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ConnectorError::Stream {
            endpoint: self.ep.name.clone(),
            what: format!("waiting for topic {name} to appear after creating it"),
            source: "the brokers do not list it after 5 s".into(),
            kind: crate::connector::ErrorKind::Runtime,
        })
    }

    /// The topic of a table, created when missing.
    async fn topic(&mut self, table: &TableName) -> Result<Arc<Topic>, ConnectorError> {
        if let Some(t) = self.topics.get(table) {
            return Ok(t.clone());
        }
        // A mirrored topic keeps its name ([[task.map]] renames it); change events take
        // the template's.
        let mirror = self.mirrored.get(table).copied();
        let name = match mirror {
            Some(_) => table.to_string(),
            None => envelope::topic_of(&self.template, table),
        };
        if let Some(why) = envelope::invalid_topic(&name) {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("table {table}: {why}"),
                fix: format!("change the task's topic template {:?} or map the table to another name", self.template),
            });
        }
        let wanted = mirror.map_or(self.ep.partitions, |n| i32::try_from(n).unwrap_or(i32::MAX));
        let n = self.ensure_topic(&name, wanted, Some(table)).await?;
        if let Some(source) = mirror.filter(|m| n < *m) {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!(
                    "topic {name} has {n} partitions, fewer than the {source} of the topic it mirrors: each message keeps its partition number"
                ),
                fix: format!(
                    "add partitions to {name} (kafka-topics.sh --alter --topic {name} --partitions {source}), or let ferry create it"
                ),
            });
        }
        let mut partitions = Vec::with_capacity(n);
        for p in 0..n {
            partitions.push(self.ep.partition(&self.client, &name, p as i32).await?);
        }
        let t = Arc::new(Topic { name, partitions });
        self.topics.insert(table.clone(), t.clone());
        Ok(t)
    }

    /// ferry's own one-partition topic, created when missing.
    async fn own(&self, name: &str) -> Result<Arc<PartitionClient>, ConnectorError> {
        self.ensure_topic(name, 1, None).await?;
        self.ep.partition(&self.client, name, 0).await
    }

    async fn leases(&mut self) -> Result<Arc<PartitionClient>, ConnectorError> {
        if self.leases.is_none() {
            self.leases = Some(self.own(LEASE_TOPIC).await?);
        }
        Ok(self.leases.clone().expect("set above"))
    }

    async fn checkpoints(&mut self) -> Result<Arc<PartitionClient>, ConnectorError> {
        if self.checkpoints.is_none() {
            self.checkpoints = Some(self.own(CHECKPOINT_TOPIC).await?);
        }
        Ok(self.checkpoints.clone().expect("set above"))
    }

    /// How far `dir` got in a partition, read back once per process.
    async fn mark(&mut self, dir: &str, topic: &Topic, p: usize) -> Result<Mark, ConnectorError> {
        let id = (topic.name.clone(), p as i32);
        if let Some(m) = self.marks.get(&id) {
            return Ok(m.clone());
        }
        let ours = |r: &rskafka::record::RecordAndOffset| {
            log::header(r, DIR_HEADER) == Some(dir) && log::header(r, POSITION_HEADER).is_some()
        };
        let found = log::back(&self.ep, &topic.partitions[p], ours, |f| !f.is_empty()).await?;
        let mark = found.first().and_then(|r| {
            let pos = parse_position(log::header(r, POSITION_HEADER)?).ok()?;
            Some((pos, log::header(r, SEQ_HEADER)?.parse().ok()?))
        });
        tracing::debug!(topic = %topic.name, partition = p, mark = ?mark.as_ref().map(|(at, n)| format!("{at}#{n}")), "read back how far the direction got");
        self.marks.insert(id, mark.clone());
        Ok(mark)
    }

    /// The source offset of the last message `dir` mirrored into a partition, read back
    /// once per process.
    async fn copied(&mut self, dir: &str, topic: &Topic, p: usize) -> Result<Option<i64>, ConnectorError> {
        let id = (topic.name.clone(), p as i32);
        if let Some(m) = self.copied.get(&id) {
            return Ok(*m);
        }
        let ours = |r: &rskafka::record::RecordAndOffset| {
            log::header(r, DIR_HEADER) == Some(dir) && log::header(r, OFFSET_HEADER).is_some()
        };
        let found = log::back(&self.ep, &topic.partitions[p], ours, |f| !f.is_empty()).await?;
        let mark = found.first().and_then(|r| log::header(r, OFFSET_HEADER)?.parse().ok());
        tracing::debug!(topic = %topic.name, partition = p, mark = ?mark, "read back how far the mirror got");
        self.copied.insert(id, mark);
        Ok(mark)
    }

    /// A mirrored message for its partition, unless it came from this cluster (a loop)
    /// or the read-back says it already landed.
    async fn mirror(
        &mut self,
        dir: &str,
        table: &TableSchema,
        row: &Row,
        at: &Position,
        in_parts: bool,
    ) -> Result<Option<(Arc<Topic>, usize, Record)>, ConnectorError> {
        let msg = message::message_of(row).map_err(|why| ConnectorError::Setup {
            endpoint: self.ep.name.clone(),
            problem: format!("a message of topic {} is not one ferry read: {why}", table.name),
            fix: "report this as a bug".into(),
        })?;
        if message::origin(&msg.record, "") == self.ep.site.as_str() {
            return Ok(None);
        }
        let topic = self.topic(&table.name).await?;
        let p = usize::try_from(msg.partition).unwrap_or(usize::MAX);
        if p >= topic.partitions.len() {
            return Err(ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!(
                    "the message at offset {} of partition {p} of the source topic has no partition {p} in topic {} ({} partitions)",
                    msg.offset,
                    topic.name,
                    topic.partitions.len()
                ),
                fix: format!("add partitions to topic {}", topic.name),
            });
        }
        if self.copied(dir, &topic, p).await?.is_some_and(|m| msg.offset <= m) {
            return Ok(None);
        }
        let mut record = msg.record;
        record.headers.insert(DIR_HEADER.to_string(), dir.as_bytes().to_vec());
        record.headers.insert(OFFSET_HEADER.to_string(), msg.offset.to_string().into_bytes());
        let key = vec![crate::model::Value::Int(i64::from(msg.partition)), crate::model::Value::Int(msg.offset)];
        self.fits(&record, &topic.name, at, &table.name, &key, in_parts)?;
        Ok(Some((topic, p, record)))
    }

    /// Stops unless this process still holds the lease under `fencing`.
    async fn fence(&mut self, dir: &DirectionId, fencing: i64) -> Result<(), ConnectorError> {
        let pc = self.leases().await?;
        let end = log::end(&self.ep, &pc).await?;
        if end == self.lease_end {
            return Ok(());
        }
        match lease::check(&self.ep, &pc, dir, fencing).await? {
            Ok(()) => {
                self.lease_end = end;
                Ok(())
            }
            Err(holder) => Err(ConnectorError::Fenced {
                endpoint: self.ep.name.clone(),
                dir: dir.to_string(),
                mine: fencing,
                holder: holder.map(Box::new),
            }),
        }
    }

    /// The messages of a batch per partition, in stream order, skipping what the
    /// read-back says already landed.
    async fn messages(&mut self, dir: &str, batch: &ApplyBatch) -> Result<(Groups, u64), ConnectorError> {
        let mut out: Groups = Vec::new();
        let mut slot: HashMap<(String, usize), usize> = HashMap::new();
        let mut rows = 0u64;
        let now = log::now();
        for txn in &batch.txns {
            // A transaction continued from the previous part keeps counting its changes.
            let first = match &self.open {
                Some((p, n)) if *p == txn.position => *n,
                _ => 0,
            };
            let position = txn.position.to_string();
            for (i, c) in txn.changes.iter().enumerate() {
                let seq = first + i as u64;
                if c.table.name.name == HEARTBEAT_TABLE {
                    continue;
                }
                if self.mirrored.contains_key(&c.table.name) {
                    let Some(row) = c.after.as_ref() else { continue };
                    if let Some((topic, p, r)) = self.mirror(dir, &c.table, row, &txn.position, !batch.commit).await? {
                        push(&mut out, &mut slot, topic, p, r);
                        rows += 1;
                    }
                    continue;
                }
                let topic = self.topic(&c.table.name).await?;
                let key = envelope::key_bytes(&c.table, &c.new_key());
                let p = partition_of(&key, topic.partitions.len());
                if let Some((at, n)) = self.mark(dir, &topic, p).await? {
                    match txn.position.stream_cmp(&at) {
                        Some(Ordering::Less) => continue,
                        Some(Ordering::Equal) if seq <= n => continue,
                        _ => {}
                    }
                }
                let src = SourceInfo {
                    site: txn.origin.as_str(),
                    position: &position,
                    table: &c.table.name,
                    commit_us: txn.commit_ts,
                    snapshot: false,
                };
                let value = envelope::envelope(&c.table, c.op, c.before.as_ref(), c.after.as_ref(), &src);
                let headers = BTreeMap::from([
                    (DIR_HEADER.to_string(), dir.as_bytes().to_vec()),
                    (POSITION_HEADER.to_string(), position.as_bytes().to_vec()),
                    (SEQ_HEADER.to_string(), seq.to_string().into_bytes()),
                    (ORIGIN_HEADER.to_string(), txn.origin.as_str().as_bytes().to_vec()),
                ]);
                let mut records = vec![Record {
                    key: Some(key.clone()),
                    value: Some(value),
                    headers: headers.clone(),
                    timestamp: now,
                }];
                if c.op == Op::Delete && self.ep.tombstones {
                    records.push(Record { key: Some(key), value: None, headers, timestamp: now });
                }
                for r in records {
                    self.fits(&r, &topic.name, &txn.position, &c.table.name, &c.key, !batch.commit)?;
                    push(&mut out, &mut slot, topic.clone(), p, r);
                }
                rows += 1;
            }
        }
        if let Some(s) = batch.snapshot.as_ref().filter(|s| self.mirrored.contains_key(&s.table.name)) {
            let at = batch.checkpoint.position.clone().unwrap_or_else(super::offsets::start);
            for row in &s.rows {
                if let Some((topic, p, r)) = self.mirror(dir, &s.table, row, &at, false).await? {
                    push(&mut out, &mut slot, topic, p, r);
                    rows += 1;
                }
            }
        } else if let Some(s) = &batch.snapshot {
            let position = batch.checkpoint.position.as_ref().map(|p| p.to_string()).unwrap_or_default();
            let topic = self.topic(&s.table.name).await?;
            for row in &s.rows {
                let key = envelope::key_bytes(&s.table, &s.table.key_of(row));
                let p = partition_of(&key, topic.partitions.len());
                let src = SourceInfo {
                    site: "",
                    position: &position,
                    table: &s.table.name,
                    commit_us: crate::model::now_micros(),
                    snapshot: true,
                };
                let value = envelope::envelope(&s.table, Op::Insert, None, Some(row), &src);
                let headers = BTreeMap::from([(DIR_HEADER.to_string(), dir.as_bytes().to_vec())]);
                let record = Record { key: Some(key), value: Some(value), headers, timestamp: now };
                if let Some(at) = &batch.checkpoint.position {
                    self.fits(&record, &topic.name, at, &s.table.name, &s.table.key_of(row), false)?;
                }
                push(&mut out, &mut slot, topic.clone(), p, record);
                rows += 1;
            }
        }
        Ok((out, rows))
    }

    /// Refuses a message above the URL's `max_message_bytes`, naming its row.
    fn fits(
        &self,
        r: &Record,
        topic: &str,
        position: &Position,
        table: &TableName,
        key: &[crate::model::Value],
        in_parts: bool,
    ) -> Result<(), ConnectorError> {
        let size = r.approximate_size();
        if size <= self.ep.max_message_bytes {
            return Ok(());
        }
        Err(ConnectorError::Apply(Box::new(ApplyFailure {
            endpoint: self.ep.name.clone(),
            position: position.clone(),
            table: table.clone(),
            key: key_text(key),
            message: format!(
                "the message for topic {topic} is {size} bytes, above the {} bytes the url allows (max_message_bytes); nothing of this batch's checkpoint was written",
                self.ep.max_message_bytes
            ),
            in_parts,
        })))
    }

    /// Sends one partition's messages in order, a request at a time.
    async fn send(ep: &KafkaEndpoint, pc: &PartitionClient, records: Vec<Record>) -> Result<(), ConnectorError> {
        let mut part = Vec::new();
        let mut bytes = 0;
        let total = records.len();
        for (i, r) in records.into_iter().enumerate() {
            bytes += r.approximate_size();
            part.push(r);
            if bytes >= REQUEST_BYTES || i + 1 == total {
                pc.produce(std::mem::take(&mut part), Compression::NoCompression).await.map_err(ep.error(format!(
                    "writing {} messages to partition {} of topic {}",
                    total,
                    pc.partition(),
                    pc.topic()
                )))?;
                bytes = 0;
            }
        }
        Ok(())
    }
}

/// Appends a message to its partition's group, in order.
fn push(out: &mut Groups, slot: &mut HashMap<(String, usize), usize>, topic: Arc<Topic>, p: usize, r: Record) {
    let idx = *slot.entry((topic.name.clone(), p)).or_insert_with(|| {
        out.push((topic.clone(), p, Vec::new()));
        out.len() - 1
    });
    out[idx].2.push(r);
}

/// The partition count of a topic, if it exists.
async fn existing(ep: &KafkaEndpoint, client: &Client, name: &str) -> Result<Option<usize>, ConnectorError> {
    let topics = client.list_topics().await.map_err(ep.error("listing topics"))?;
    Ok(topics.into_iter().find(|t| t.name == name).map(|t| t.partitions.len()).filter(|n| *n > 0))
}

/// The checkpoint `dir` last recorded in `pc`, if any.
async fn read_checkpoint(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    dir: &DirectionId,
) -> Result<Option<Checkpoint>, ConnectorError> {
    let key = dir_key(dir);
    let found = log::back(ep, pc, |r| log::header(r, DIR_HEADER) == Some(key.as_str()), |f| !f.is_empty()).await?;
    let Some(r) = found.first() else { return Ok(None) };
    let stored: Stored =
        serde_json::from_slice(r.record.value.as_deref().unwrap_or_default()).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!(
                "the checkpoint of task {dir} at offset {} of topic {CHECKPOINT_TOPIC} is unreadable: {e}",
                r.offset
            ),
            fix: "it was not written by ferry; remove the message (or the topic) and copy the task anew".into(),
        })?;
    let position = match stored.position {
        Some(text) => Some(parse_position(&text).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("the checkpoint of task {dir}: {e}"),
            fix: "it was written by a newer ferry or not by ferry; use that release or copy the task anew".into(),
        })?),
        None => None,
    };
    Ok(Some(Checkpoint { position, tables: stored.tables }))
}

/// A direction's checkpoint and lease, read without writing.
pub async fn target_state(ep: &KafkaEndpoint, dir: &DirectionId) -> Result<TargetState, ConnectorError> {
    let client = ep.connect().await?;
    let mut state = TargetState::default();
    if existing(ep, &client, CHECKPOINT_TOPIC).await?.is_some() {
        let pc = ep.partition(&client, CHECKPOINT_TOPIC, 0).await?;
        state.checkpoint = read_checkpoint(ep, &pc, dir).await?;
    }
    if existing(ep, &client, LEASE_TOPIC).await?.is_some() {
        let pc = ep.partition(&client, LEASE_TOPIC, 0).await?;
        state.lease = lease::read(ep, &pc, dir).await?.current;
    }
    Ok(state)
}

impl Sink for KafkaSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        self.checkpoints().await?;
        self.leases().await?;
        Ok(())
    }

    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        for t in tables {
            if t.name.name == HEARTBEAT_TABLE {
                continue;
            }
            match message::partitions_of(t) {
                Some(n) => {
                    self.mirrored.insert(t.name.clone(), n);
                }
                None if self.two_way => {
                    return Err(ConnectorError::Setup {
                        endpoint: self.ep.name.clone(),
                        problem: format!(
                            "table {} cannot take part in a two-way task with Kafka: change events from a database go one way",
                            t.name
                        ),
                        fix: "make the task one-way (mode = \"one-way\"); two-way with Kafka is for mirroring topics between two Kafka clusters".into(),
                    });
                }
                None => {}
            }
            self.topic(&t.name).await?;
        }
        Ok(())
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        let pc = self.checkpoints().await?;
        // Marks are read back afresh: what landed since the last read is not known here.
        self.marks.clear();
        self.copied.clear();
        self.open = None;
        read_checkpoint(&self.ep, &pc, dir).await
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        if let Some(f) = batch.fence {
            self.fence(dir, f).await?;
        }
        let key = dir_key(dir);
        let (groups, rows) = self.messages(&key, batch).await?;
        let ep = &self.ep;
        try_join_all(groups.iter().map(|(topic, p, records)| Self::send(ep, &topic.partitions[*p], records.clone())))
            .await?;
        // What landed is now the partition's mark (the last message sent there).
        for (topic, p, records) in &groups {
            let last = records.iter().rev().find_map(|r| {
                let pos = parse_position(std::str::from_utf8(r.headers.get(POSITION_HEADER)?).ok()?).ok()?;
                Some((pos, std::str::from_utf8(r.headers.get(SEQ_HEADER)?).ok()?.parse().ok()?))
            });
            if last.is_some() {
                self.marks.insert((topic.name.clone(), *p as i32), last);
            }
            let copied = records
                .iter()
                .rev()
                .find_map(|r| std::str::from_utf8(r.headers.get(OFFSET_HEADER)?).ok()?.parse().ok());
            if copied.is_some() {
                self.copied.insert((topic.name.clone(), *p as i32), copied);
            }
        }
        self.open = match (batch.commit, batch.txns.last()) {
            (false, Some(t)) => {
                let first = match &self.open {
                    Some((p, n)) if *p == t.position => *n,
                    _ => 0,
                };
                Some((t.position.clone(), first + t.changes.len() as u64))
            }
            _ => None,
        };
        if batch.commit {
            let stored = Stored {
                position: batch.checkpoint.position.as_ref().map(|p| p.to_string()),
                tables: batch.checkpoint.tables.clone(),
                fencing: batch.fence,
            };
            let record = Record {
                key: Some(key.clone().into_bytes()),
                value: Some(serde_json::to_vec(&stored).unwrap_or_default()),
                headers: BTreeMap::from([(DIR_HEADER.to_string(), key.into_bytes())]),
                timestamp: log::now(),
            };
            let pc = self.checkpoints().await?;
            Self::send(&self.ep, &pc, vec![record]).await?;
        }
        Ok(ApplyReport { rows, conflicts: 0 })
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        let pc = self.leases().await?;
        let out = lease::claim(&self.ep, &pc, dir, holder, ttl).await?;
        if matches!(out, LeaseOutcome::Acquired { .. }) {
            self.lease_end = log::end(&self.ep, &pc).await?;
        }
        Ok(out)
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        // Messages of an open group are out already; the read-back skips them when the
        // group is applied again.
        self.open = None;
        self.marks.clear();
        self.copied.clear();
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        let pc = self.leases().await?;
        lease::release(&self.ep, &pc, dir, holder).await
    }
}
