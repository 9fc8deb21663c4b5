//! Reading a partition back from its end: the last messages a direction wrote (its
//! checkpoint, its lease, its last change per partition) are found by scanning
//! backwards in windows, so a start costs a few fetches, not a replay of the topic.

use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;

use super::KafkaEndpoint;
use crate::connector::ConnectorError;

/// Offsets fetched per step backwards.
const WINDOW: i64 = 500;

/// The offset the next message of the partition will get: the high watermark of a
/// fetch, since tansu 0.6 answers ListOffsets(latest) with a stale offset once other
/// connections have produced (seen here: 285 while the partition held 464 messages).
pub async fn end(ep: &KafkaEndpoint, pc: &PartitionClient) -> Result<i64, ConnectorError> {
    let what = || format!("reading the end of partition {} of topic {}", pc.partition(), pc.topic());
    let listed = pc.get_offset(OffsetAt::Latest).await.map_err(ep.error(what()))?;
    let start = pc.get_offset(OffsetAt::Earliest).await.map_err(ep.error(what()))?;
    // Fetch the last message the listing knows of: the answer carries the true end. An
    // empty partition answers a fetch with no topic at all.
    match pc.fetch_records((listed - 1).max(start), 1..2, 50).await {
        Ok((_, high)) => Ok(high.max(listed)),
        Err(rskafka::client::error::Error::InvalidResponse(_)) => Ok(listed),
        Err(e) => Err(ep.error(what())(e)),
    }
}

/// The messages of offsets `from..to`, in order (`to` = `i64::MAX`: up to the last one
/// the broker returns, whatever its listed end says).
pub async fn range(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    from: i64,
    to: i64,
) -> Result<Vec<RecordAndOffset>, ConnectorError> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let records = fetch(ep, pc, at, 8_000_000, 100).await?;
        let Some(last) = records.last().map(|r| r.offset) else { break };
        out.extend(records.into_iter().filter(|r| r.offset < to));
        at = last + 1;
    }
    Ok(out)
}

/// One fetch from offset `at` (about `max_bytes`, waiting up to `wait_ms` for data): the
/// messages at or after `at`, in order; empty at the end of the partition.
pub async fn fetch(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    at: i64,
    max_bytes: i32,
    wait_ms: i32,
) -> Result<Vec<RecordAndOffset>, ConnectorError> {
    match pc.fetch_records(at, 1..max_bytes.max(2), wait_ms).await {
        // A compressed batch may start before `at`.
        Ok((records, _high)) => Ok(records.into_iter().filter(|r| r.offset >= at).collect()),
        // tansu answers a fetch past the end with no topic at all.
        Err(rskafka::client::error::Error::InvalidResponse(_)) => Ok(Vec::new()),
        Err(e) => {
            let what = format!("reading partition {} of topic {} at offset {at}", pc.partition(), pc.topic());
            Err(ep.error(what)(e))
        }
    }
}

/// Messages matching `wanted`, newest first, read backwards from the end until `enough`
/// says so (given those found) or the partition's start is reached.
pub async fn back(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    wanted: impl Fn(&RecordAndOffset) -> bool,
    enough: impl Fn(&[RecordAndOffset]) -> bool,
) -> Result<Vec<RecordAndOffset>, ConnectorError> {
    let start = pc.get_offset(OffsetAt::Earliest).await.map_err(ep.error(format!(
        "reading the start of partition {} of topic {}",
        pc.partition(),
        pc.topic()
    )))?;
    let mut to = end(ep, pc).await?;
    let mut found = Vec::new();
    // The first window reads on to the real end: a listed end may lag what is there.
    let mut upto = i64::MAX;
    while to > start || upto == i64::MAX {
        let from = (to - WINDOW).max(start);
        let mut window = range(ep, pc, from, upto).await?;
        upto = from;
        window.reverse();
        found.extend(window.into_iter().filter(|r| wanted(r)));
        if enough(&found) {
            break;
        }
        to = from;
    }
    Ok(found)
}

/// A header's text.
pub fn header<'r>(r: &'r RecordAndOffset, name: &str) -> Option<&'r str> {
    r.record.headers.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

/// Now, as a message timestamp.
pub fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    rskafka::chrono::DateTime::from_timestamp_micros(crate::model::now_micros()).unwrap_or_default()
}
