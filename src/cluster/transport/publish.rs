//! The publishing role: reads the source from the target's checkpoint on and publishes
//! each batch to the direction's stream (in parts that fit a message, each with a
//! `Nats-Msg-Id` made of the batch's positions), writes the source's heartbeat, and
//! tells the source it may release history only up to what the target committed. A
//! stream that is full, or holds a change older than `transport_max_age`, stops the
//! reading with an alarm until the applying side drains it.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tracing::{info, warn};

use super::{AFTER, END, Names, NatsRelay, PART, limits, nats, wire};
use crate::connector::{ConnectorError, ReadBatch, ReadRequest, Source};
use crate::engine::EngineError;
use crate::engine::metrics::DirectionState;
use crate::engine::relay::PublishRun;
use crate::model::{Position, now_micros};

/// At most this many changes per published batch (whole commit groups may exceed it),
/// so a batch stays a few messages and a small stream still holds several.
const BATCH_CHANGES: usize = 20_000;
/// The least a published batch may be cut down to (bytes).
const MIN_BUDGET: usize = 64 * 1024;
/// How often the stream's fill and age are read.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How often a refused publish is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Runs the publishing role until shut down.
pub(super) async fn run(relay: &NatsRelay, run: PublishRun<'_>) -> Result<(), EngineError> {
    let PublishRun { spec, mut source, heartbeat, metrics, shutdown } = run;
    let Some(rr) = &spec.relay else { return Ok(()) };
    let names = Names::of(&rr.direction);
    let limits = limits(spec.transport.as_ref());
    metrics.set_state(DirectionState::Starting);
    let tables = Source::tables(&mut source, &spec.tables).await?;
    Source::install_capture(&mut source, &tables).await?;
    let stream = relay.stream(&names, &limits).await?;
    let Some(after) = start(relay, &names, &stream, shutdown).await? else {
        return Ok(());
    };
    // The heartbeat writes on its own session and task, off the publishing path; it is
    // owned here and stopped with the role.
    let beat = shutdown.child_token();
    let beating = tokio::spawn(beat_until(heartbeat, spec.tuning.heartbeat, beat.clone(), spec.id.to_string()));
    let result = publish_from(Publisher { relay, spec, metrics, shutdown, names: &names, stream }, source, after).await;
    beat.cancel();
    let _ = beating.await;
    result
}

/// The heartbeat writer: a row every `every` until `stop`.
async fn beat_until(
    mut heartbeat: Box<dyn crate::connector::dynamic::DynSource>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
    direction: String,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = Source::heartbeat(&mut heartbeat).await {
                    warn!(direction = %direction, error = %e, "heartbeat failed");
                }
            }
        }
    }
}

/// What the publishing loop works with.
struct Publisher<'a> {
    relay: &'a NatsRelay,
    spec: &'a crate::engine::task::DirectionSpec,
    metrics: &'a std::sync::Arc<crate::engine::metrics::DirectionMetrics>,
    shutdown: &'a tokio_util::sync::CancellationToken,
    names: &'a Names,
    stream: async_nats::jetstream::stream::Stream,
}

/// Reads the source after `after` and publishes until shut down.
async fn publish_from(
    p: Publisher<'_>,
    mut source: Box<dyn crate::connector::dynamic::DynSource>,
    mut after: Position,
) -> Result<(), EngineError> {
    let Publisher { relay, spec, metrics, shutdown, names, stream } = p;
    let Some(rr) = &spec.relay else { return Ok(()) };
    let limits = limits(spec.transport.as_ref());
    info!(direction = %spec.id, stream = %names.stream, position = %after, "publishing changes to the stream");
    let request = |after: Position| ReadRequest {
        after,
        until: None,
        max_changes: spec.tuning.batch_changes.min(BATCH_CHANGES),
        exclude_origin: spec.target.site.clone(),
        keep_transactions: spec.keep_transactions,
        before_images: spec.conflicts.is_some(),
    };
    // A batch stays well below the stream's size, so the applying side can always take
    // whole batches out of a full stream (only a single larger transaction exceeds it).
    let budget = relay.max_part().min(usize::try_from(limits.max_bytes / 8).unwrap_or(usize::MAX)).max(MIN_BUDGET);
    let mut out = Outbox { relay, names, stream, limits, metrics, full: false, watched: None };
    let consumer = rr.direction.to_string();
    let mut last_head = Instant::now() - Duration::from_secs(10);
    let mut last_consumed = Instant::now();
    let mut pending: Option<ReadBatch> = None;
    metrics.set_state(DirectionState::Streaming);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if last_head.elapsed() >= Duration::from_secs(1) {
            let head = Source::head(&mut source).await?;
            metrics.set_behind(after.changes_until(&head));
            last_head = Instant::now();
        }
        if last_consumed.elapsed() >= Duration::from_secs(5) {
            // The source keeps what the target has not committed, whatever was published.
            if let Some(applied) = relay.applied(names).await? {
                Source::consumed(&mut source, &consumer, &applied).await?;
            }
            last_consumed = Instant::now();
        }
        if !out.room(shutdown).await? {
            break;
        }
        let batch = match pending.take() {
            Some(b) => b,
            None => Source::read_changes(&mut source, &request(after.clone())).await?,
        };
        if batch.position == after {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(spec.tuning.poll) => {}
            }
            continue;
        }
        let changes: u64 = batch.txns.iter().map(|t| t.changes.len() as u64).sum();
        let txns = batch.txns.len() as u64;
        let end = batch.position.clone();
        // The next batch is read while this one is serialized (on a blocking thread: CPU
        // work) and published.
        let next = request(end.clone());
        let from = after.clone();
        let source_name = spec.source.name.clone();
        let publish_all = async {
            let pieces = tokio::task::spawn_blocking(move || cut(&from, batch, budget))
                .await
                .map_err(|e| ConnectorError::Setup {
                    endpoint: source_name.clone(),
                    problem: format!("the batch serializer ended abnormally: {e}"),
                    fix: "report this as a bug with the log".into(),
                })?
                .map_err(|e| ConnectorError::Setup {
                    endpoint: source_name,
                    problem: format!("cannot serialize a batch for the stream: {e}"),
                    fix: "report this as a bug with the log".into(),
                })?;
            for (from, to, bytes) in &pieces {
                if !out.publish(from, to, bytes, shutdown).await? {
                    return Ok(false);
                }
            }
            Ok::<bool, ConnectorError>(true)
        };
        let (published, read) = tokio::join!(publish_all, async { Source::read_changes(&mut source, &next).await });
        if !published? {
            break;
        }
        metrics.applied(changes, txns, 0, 0, &end);
        metrics.clear_error();
        after = end;
        pending = Some(read?);
    }
    info!(direction = %spec.id, position = %after, "stopped publishing");
    metrics.set_state(DirectionState::Stopped);
    Ok(())
}

/// A batch read after `after`, serialized, in pieces of about `budget` bytes or less,
/// cut between transactions (a transaction's position is where the next piece starts):
/// (after, end, bytes) of each.
fn cut(
    after: &Position,
    batch: ReadBatch,
    budget: usize,
) -> Result<Vec<(Position, Position, Vec<u8>)>, wire::WireError> {
    let bytes = wire::encode(after, &batch)?;
    if bytes.len() <= budget || batch.txns.len() < 2 {
        return Ok(vec![(after.clone(), batch.position, bytes)]);
    }
    let pieces = bytes.len().div_ceil(budget).min(batch.txns.len());
    let total: usize = batch.txns.iter().map(|t| t.changes.len().max(1)).sum();
    let per_piece = total.div_ceil(pieces);
    let mut out = Vec::with_capacity(pieces);
    let mut from = after.clone();
    let mut group = Vec::new();
    let mut size = 0;
    let last = batch.txns.len() - 1;
    for (i, txn) in batch.txns.into_iter().enumerate() {
        size += txn.changes.len().max(1);
        group.push(txn);
        if i == last || size >= per_piece {
            let (end, continues) = if i == last {
                (batch.position.clone(), batch.continues)
            } else {
                (group.last().map(|t| t.position.clone()).unwrap_or_else(|| from.clone()), false)
            };
            let piece = ReadBatch { txns: std::mem::take(&mut group), position: end.clone(), continues };
            out.push((from.clone(), end.clone(), wire::encode(&from, &piece)?));
            from = end;
            size = 0;
        }
    }
    Ok(out)
}

/// Where publishing starts: the later of the target's committed position (as the
/// applying side wrote it) and the end of the last whole batch the stream holds. Waits
/// (`None`: shut down first) while neither is known: the applying side has not started.
async fn start(
    relay: &NatsRelay,
    names: &Names,
    stream: &async_nats::jetstream::stream::Stream,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Position>, ConnectorError> {
    let mut said = false;
    loop {
        let applied = relay.applied(names).await?;
        let held = last_held(names, stream).await?;
        let start = match (applied, held) {
            (Some(a), Some(h)) => Some(if h.stream_cmp(&a) == Some(Ordering::Greater) { h } else { a }),
            (a, h) => a.or(h),
        };
        if start.is_some() {
            return Ok(start);
        }
        if !said {
            info!(stream = %names.stream, "waiting for the applying side's first checkpoint before publishing");
            said = true;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// Where the last batch the stream holds ends, or, when its last message is not the last
/// part of its batch (a publisher stopped in the middle), where that batch began.
async fn last_held(
    names: &Names,
    stream: &async_nats::jetstream::stream::Stream,
) -> Result<Option<Position>, ConnectorError> {
    let last = match stream.get_last_raw_message_by_subject(&names.subject).await {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => {
            return Ok(None);
        }
        Err(e) => return Err(nats(format!("reading the last message of stream {}", names.stream), e)),
    };
    let header = |name: &str| last.headers.get(name).map(|v| v.as_str().to_string());
    let (Some(after), Some(end), Some(part)) = (header(AFTER), header(END), header(PART)) else {
        return Ok(None);
    };
    let whole = part.split_once('/').is_some_and(|(i, n)| i.parse::<usize>().ok().map(|i| i + 1) == n.parse().ok());
    let text = if whole { end } else { after };
    Ok(crate::connector::registry::parse_position(&text).ok())
}

/// Publishes to the stream, and keeps the alarm while it is full or too old.
struct Outbox<'a> {
    relay: &'a NatsRelay,
    names: &'a Names,
    stream: async_nats::jetstream::stream::Stream,
    limits: crate::config::Transport,
    metrics: &'a crate::engine::metrics::DirectionMetrics,
    /// The alarm is on.
    full: bool,
    /// When the stream's fill and age were last read.
    watched: Option<Instant>,
}

impl Outbox<'_> {
    /// Waits while the stream holds a change older than `transport_max_age` (alarm on);
    /// `false` when shut down first. Reads the stream's fill every few seconds.
    async fn room(&mut self, shutdown: &tokio_util::sync::CancellationToken) -> Result<bool, ConnectorError> {
        loop {
            if self.watched.is_some_and(|t| t.elapsed() < WATCH_EVERY) {
                return Ok(true);
            }
            self.watched = Some(Instant::now());
            let info =
                self.stream.info().await.map_err(|e| nats(format!("reading stream {}", self.names.stream), e))?;
            let (bytes, messages) = (info.state.bytes, info.state.messages);
            let oldest_us = i64::try_from(info.state.first_timestamp.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
            let age = Duration::from_micros(u64::try_from(now_micros() - oldest_us).unwrap_or(0));
            let too_old = messages > 0 && age > self.limits.max_age;
            self.metrics.set_retained(Some(bytes), too_old || self.full);
            if !too_old {
                if self.full {
                    self.clear();
                }
                return Ok(true);
            }
            self.alarm(format!(
                "the stream {} holds a change {} s old, above transport_max_age {} s: the applying side is not consuming it; reading the source waits until it does (nothing is dropped)",
                self.names.stream,
                age.as_secs(),
                self.limits.max_age.as_secs()
            ));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }

    /// Publishes a batch's parts in order, each acknowledged by the server before the
    /// next; a refused part (stream full) is tried again until it is taken. `false` when
    /// shut down first.
    async fn publish(
        &mut self,
        after: &Position,
        end: &Position,
        bytes: &[u8],
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, ConnectorError> {
        let parts = wire::parts(bytes, self.relay.max_part());
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            loop {
                let msg = PublishMessage::build()
                    .payload(bytes::Bytes::copy_from_slice(part))
                    .message_id(format!("{after}>{end}#{i}/{n}"))
                    .header(AFTER, after.to_string().as_str())
                    .header(END, end.to_string().as_str())
                    .header(PART, format!("{i}/{n}").as_str());
                let sent = self.relay.js.send_publish(self.names.subject.clone(), msg).await;
                let acked = match sent {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match acked {
                    Ok(_) => {
                        if self.full {
                            self.clear();
                        }
                        break;
                    }
                    Err(e) if refused_for_room(&e) => {
                        self.alarm(format!(
                            "the stream {} is full (transport_max_bytes {}): the applying side is not consuming it; reading the source waits until it does (nothing is dropped)",
                            self.names.stream,
                            crate::engine::metrics::size_text(self.limits.max_bytes)
                        ));
                        self.metrics.set_retained(Some(self.limits.max_bytes), true);
                        tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => return Ok(false),
                            _ = tokio::time::sleep(RETRY_EVERY) => {}
                        }
                    }
                    Err(e) => return Err(nats(format!("publishing to stream {}", self.names.stream), e)),
                }
            }
        }
        Ok(true)
    }

    fn alarm(&mut self, message: String) {
        if !self.full {
            warn!(stream = %self.names.stream, "{message}");
            self.metrics.error(message);
        }
        self.full = true;
        self.metrics.set_state(DirectionState::TransportFull);
    }

    fn clear(&mut self) {
        info!(stream = %self.names.stream, "the stream has room again; publishing goes on");
        self.full = false;
        self.watched = None;
        self.metrics.clear_error();
        self.metrics.set_state(DirectionState::Streaming);
    }
}

/// Whether the server refused a message for want of room (discard new on a full stream).
fn refused_for_room(e: &async_nats::jetstream::context::PublishError) -> bool {
    e.kind() == PublishErrorKind::Other && e.to_string().contains("maximum")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::transport::wire::tests::{items, sqlite as at};
    use crate::model::{Change, Op, Prior, SiteId, Txn, Value};

    #[test]
    fn a_large_batch_is_cut_between_transactions_into_batches_that_follow_on() {
        let table = items();
        let txns: Vec<Txn> = (1..=40)
            .map(|i| Txn {
                origin: SiteId::new("a"),
                commit_ts: i,
                position: at(i),
                changes: vec![Change {
                    table: table.clone(),
                    op: Op::Insert,
                    key: vec![Value::Int(i)],
                    before: None,
                    after: Some(vec![Value::Int(i), Value::Bytes(vec![7; 200])]),
                    prior: Prior::Unknown,
                    seen: None,
                    version: None,
                }],
                ddl: Vec::new(),
            })
            .collect();
        let batch = ReadBatch { txns, position: at(41), continues: true };
        let pieces = cut(&at(0), batch, 4096).expect("cut");
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        let mut from = at(0);
        let mut seen = 0;
        for (i, (after, end, bytes)) in pieces.iter().enumerate() {
            assert!(bytes.len() <= 4096 * 2, "piece {i}: {} bytes", bytes.len());
            assert_eq!(after, &from, "piece {i} follows on");
            let back = wire::decode(bytes).expect("decodes");
            assert_eq!(back.continues, i == pieces.len() - 1, "only the last piece goes on");
            seen += back.txns.len();
            from = end.clone();
        }
        assert_eq!((from, seen), (at(41), 40));
    }
}
