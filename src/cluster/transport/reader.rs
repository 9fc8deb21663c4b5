//! The applying role's source: change batches read back from the direction's stream
//! through a durable pull consumer, those at or below the target's checkpoint skipped;
//! a message is acknowledged only once the target committed past its batch, and each
//! committed position is written to the `ferry_relay` bucket for the publishing side.
//! Tables, snapshot chunks and the head still come from the source itself.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::kv;
use async_nats::jetstream::message::Acker;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AFTER, CONSUMER, END, ENDPOINT, Names, NatsRelay, PART, limits, nats, wire};
use crate::connector::dynamic::DynSource;
use crate::connector::registry;
use crate::connector::{Chunk, ConnectorError, ReadBatch, ReadRequest, Retention, SIGNAL_TABLE, Source};
use crate::engine::relay::ReaderParts;
use crate::model::{Key, Position, TableSchema, Txn};

/// How long a read waits for a message when none is there (the engine polls again).
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How long a read up to a snapshot chunk's position waits for the stream to get there
/// (well within the target lease's renewal, which waits for the read); then the read
/// fails and the direction retries.
const UNTIL_WAIT: Duration = Duration::from_secs(5);
/// How long the server waits for an acknowledgement before delivering a message again
/// (a fresh consumer at each start redelivers at once anyway).
const ACK_WAIT: Duration = Duration::from_secs(300);
/// Messages asked of the server at a time.
const PULL_BATCH: usize = 32;

/// A batch being put together from its parts.
struct Assembly {
    after: String,
    end: String,
    next: usize,
    of: usize,
    bytes: Vec<u8>,
}

/// The applying role's source.
pub struct Reader {
    source: Box<dyn DynSource>,
    applied: kv::Store,
    names: Names,
    messages: pull::Stream,
    commits: watch::Receiver<Option<Position>>,
    shutdown: CancellationToken,
    /// Messages received and not acknowledged yet, with where their batch ends.
    unacked: Vec<(Acker, Position)>,
    assembling: Option<Assembly>,
    /// Whole batches not handed out yet.
    ready: VecDeque<wire::Batch>,
    /// The position last written to the bucket.
    reported: Option<Position>,
    /// The last position asked to read after: messages ending at or below it are skipped
    /// unread.
    floor: Option<Position>,
    /// The furthest batch end seen (the head when the source does not answer).
    seen: Option<Position>,
}

fn later(a: &Position, b: &Position) -> bool {
    a.stream_cmp(b) == Some(Ordering::Greater)
}

impl Reader {
    /// Opens the direction's stream with a fresh durable consumer: delivery starts at the
    /// oldest message the stream holds (what no earlier run acknowledged) at once,
    /// rather than after the old consumer's acknowledgement wait.
    pub(super) async fn open(relay: &NatsRelay, parts: ReaderParts<'_>) -> Result<Reader, ConnectorError> {
        let ReaderParts { spec, source, commits, shutdown } = parts;
        let direction = spec.relay.as_ref().map_or_else(|| spec.id.clone(), |r| r.direction.clone());
        let names = Names::of(&direction);
        let stream = relay.stream(&names, &limits(spec.transport.as_ref())).await?;
        // Absent on the first start; any other failure shows again when creating it.
        let _ = stream.delete_consumer(CONSUMER).await;
        let consumer: consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.to_string()),
                description: Some("ferry: the applying side of a relayed direction".into()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(format!("creating the consumer of stream {}", names.stream), e))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .messages()
            .await
            .map_err(|e| nats(format!("reading stream {}", names.stream), e))?;
        Ok(Reader {
            source,
            applied: relay.applied.clone(),
            names,
            messages,
            commits,
            shutdown,
            unacked: Vec::new(),
            assembling: None,
            ready: VecDeque::new(),
            reported: None,
            floor: None,
            seen: None,
        })
    }

    /// Acknowledges every message whose batch the target committed, and tells the
    /// publishing side the committed position.
    async fn acknowledge(&mut self) -> Result<(), ConnectorError> {
        let Some(committed) = self.commits.borrow().clone() else {
            return Ok(());
        };
        let mut keep = Vec::with_capacity(self.unacked.len());
        for (acker, end) in self.unacked.drain(..) {
            if later(&end, &committed) {
                keep.push((acker, end));
            } else {
                acker.ack().await.map_err(|source| ConnectorError::Stream {
                    endpoint: ENDPOINT.into(),
                    what: format!("acknowledging stream {}", self.names.stream),
                    source,
                    kind: crate::connector::ErrorKind::Runtime,
                })?;
            }
        }
        self.unacked = keep;
        if self.reported.as_ref() != Some(&committed) {
            self.applied
                .put(&self.names.key, committed.to_string().into_bytes().into())
                .await
                .map_err(|e| nats(format!("writing {} {}", super::BUCKET, self.names.key), e))?;
            self.reported = Some(committed);
        }
        Ok(())
    }

    /// Takes one message: notes it for acknowledgement and adds its part to the batch
    /// being put together (skipping batches already applied).
    fn take(&mut self, message: async_nats::jetstream::Message) -> Result<(), ConnectorError> {
        let (message, acker) = message.split();
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
        let (Some(after), Some(end), Some(part)) = (header(AFTER), header(END), header(PART)) else {
            return Err(self.foreign("a message without ferry's headers"));
        };
        let Some((i, n)) =
            part.split_once('/').and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        else {
            return Err(self.foreign("a message whose part is not i/n"));
        };
        let end_at =
            registry::parse_position(&end).map_err(|_| self.foreign("a message with an unreadable position"))?;
        if self.seen.as_ref().is_none_or(|s| later(&end_at, s)) {
            self.seen = Some(end_at.clone());
        }
        let applied = self.floor.as_ref().is_some_and(|f| !later(&end_at, f));
        self.unacked.push((acker, end_at));
        if applied {
            return Ok(());
        }
        let whole = if i == 0 && n == 1 {
            Some(wire::decode(&message.payload))
        } else {
            match &mut self.assembling {
                Some(a) if i > 0 && a.after == after && a.end == end && a.next == i => {
                    a.bytes.extend_from_slice(&message.payload);
                    a.next += 1;
                }
                // Parts of another batch came between (two publishers for a moment):
                // this one is dropped; a whole copy of it follows.
                _ if i > 0 => {
                    self.assembling = None;
                    return Ok(());
                }
                _ => self.assembling = Some(Assembly { after, end, next: 1, of: n, bytes: message.payload.to_vec() }),
            }
            match self.assembling.take_if(|a| a.next == a.of) {
                Some(a) => Some(wire::decode(&a.bytes)),
                None => None,
            }
        };
        if let Some(decoded) = whole {
            let batch = decoded.map_err(|e| ConnectorError::Setup {
                endpoint: ENDPOINT.into(),
                problem: format!("stream {}: {e}", self.names.stream),
                fix: "run the same ferry release on every node".into(),
            })?;
            self.ready.push_back(batch);
        }
        Ok(())
    }

    fn foreign(&self, what: &str) -> ConnectorError {
        ConnectorError::Setup {
            endpoint: ENDPOINT.into(),
            problem: format!(
                "stream {} holds {what}: something other than ferry publishes to {}",
                self.names.stream, self.names.subject
            ),
            fix: format!("publish nothing else to {}; ferry owns the stream", self.names.subject),
        }
    }

    /// The next message, waiting at most `wait` (`None`: none came).
    async fn next_message(&mut self, wait: Duration) -> Result<Option<async_nats::jetstream::Message>, ConnectorError> {
        let next = if wait.is_zero() {
            match self.messages.next().now_or_never() {
                Some(n) => n,
                None => return Ok(None),
            }
        } else {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(None),
                n = tokio::time::timeout(wait, self.messages.next()) => match n {
                    Ok(n) => n,
                    Err(_) => return Ok(None),
                },
            }
        };
        match next {
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => Err(nats(format!("reading stream {}", self.names.stream), e)),
            None => Err(ConnectorError::Stream {
                endpoint: ENDPOINT.into(),
                what: format!("reading stream {}", self.names.stream),
                source: "the consumer's message stream ended".into(),
                kind: crate::connector::ErrorKind::Runtime,
            }),
        }
    }
}

/// What a read has gathered so far.
struct Gathered {
    txns: Vec<Txn>,
    position: Position,
    continues: bool,
    changes: usize,
}

impl Source for Reader {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        Source::tables(&mut self.source, patterns).await
    }

    async fn install_capture(&mut self, _: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        // The publishing side installs it: it reads the stream.
        Ok(())
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        match Source::head(&mut self.source).await {
            Ok(p) => Ok(p),
            Err(e) => self.seen.clone().ok_or(e),
        }
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        Source::read_chunk(&mut self.source, table, after, limit, versions).await
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        self.acknowledge().await?;
        self.floor = Some(req.after.clone());
        let mut got = Gathered { txns: Vec::new(), position: req.after.clone(), continues: false, changes: 0 };
        // A read up to a chunk's position must get there: reading nothing would say no
        // change lies in between.
        let must_reach = req.until.as_ref().filter(|u| later(u, &req.after)).cloned();
        let started = Instant::now();
        loop {
            while let Some(mut b) = self.ready.pop_front() {
                if !later(&b.end, &got.position) {
                    continue;
                }
                if later(&b.after, &got.position) {
                    return Err(ConnectorError::Setup {
                        endpoint: ENDPOINT.into(),
                        problem: format!(
                            "stream {} misses the changes between {} and {}: the target's checkpoint is older than anything the stream holds (the target was restored, or the stream or its {} key was removed while changes were in it)",
                            self.names.stream,
                            got.position,
                            b.after,
                            super::BUCKET
                        ),
                        fix: format!(
                            "stop the nodes of the task, remove stream {} and key {} of bucket {}, and start them again: publishing starts over from the target's checkpoint",
                            self.names.stream,
                            self.names.key,
                            super::BUCKET
                        ),
                    });
                }
                let floor = got.position.clone();
                b.txns.retain(|t| later(&t.position, &floor));
                if let Some(until) = &req.until
                    && later(&b.end, until)
                {
                    let rest: Vec<Txn> = b.txns.extract_if(.., |t| later(&t.position, until)).collect();
                    got.txns.append(&mut b.txns);
                    got.position = until.clone();
                    self.ready.push_front(wire::Batch {
                        after: until.clone(),
                        end: b.end,
                        continues: b.continues,
                        txns: rest,
                    });
                    return Ok(ReadBatch { txns: got.txns, position: got.position, continues: false });
                }
                // A snapshot's watermark ends a batch: nothing after it may come before it.
                let signal = b.txns.iter().any(|t| t.changes.iter().any(|c| c.table.name.name == SIGNAL_TABLE));
                got.changes += b.txns.iter().map(|t| t.changes.len()).sum::<usize>();
                got.txns.append(&mut b.txns);
                got.position = b.end;
                got.continues = b.continues;
                if signal || got.changes >= req.max_changes {
                    return Ok(ReadBatch { txns: got.txns, position: got.position, continues: got.continues });
                }
            }
            let reached = must_reach.as_ref().is_none_or(|u| !later(u, &got.position));
            let have = got.position != req.after;
            let wait = if have {
                // Take what is already here, without waiting for more.
                Duration::ZERO
            } else if !reached {
                UNTIL_WAIT.saturating_sub(started.elapsed())
            } else {
                IDLE_WAIT
            };
            match self.next_message(wait).await? {
                Some(m) => self.take(m)?,
                None if have || reached || self.shutdown.is_cancelled() => {
                    return Ok(ReadBatch { txns: got.txns, position: got.position, continues: got.continues });
                }
                None => {
                    return Err(ConnectorError::Stream {
                        endpoint: ENDPOINT.into(),
                        what: format!("reading stream {}", self.names.stream),
                        source: format!(
                            "the stream did not reach {} within {} s: is the publishing side running?",
                            must_reach.map(|u| u.to_string()).unwrap_or_default(),
                            UNTIL_WAIT.as_secs()
                        )
                        .into(),
                        kind: crate::connector::ErrorKind::Runtime,
                    });
                }
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn consumed(&mut self, _: &str, _: &Position) -> Result<(), ConnectorError> {
        // Reads acknowledge and report what the target committed.
        self.acknowledge().await
    }

    async fn retention(&mut self) -> Result<Option<Retention>, ConnectorError> {
        Ok(None)
    }

    async fn estimate_rows(&mut self, table: &TableSchema) -> Result<Option<u64>, ConnectorError> {
        Source::estimate_rows(&mut self.source, table).await
    }
}
