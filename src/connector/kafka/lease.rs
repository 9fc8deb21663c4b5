//! A direction's lease in the `ferry.leases` topic (partition 0). Kafka has no
//! compare-and-set, so the log is the arbiter: every claim, renewal or release names the
//! offset of the direction's last message its writer saw (`base`); a message counts only
//! if no other message of the direction lies between its base and itself. Whoever
//! appends first after a state wins; a loser sees the winner when it reads back. Expiry
//! is judged by the writer's clock (Kafka keeps none that ferry can compare against).

use std::collections::BTreeMap;
use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::{Record, RecordAndOffset};
use serde::{Deserialize, Serialize};

use super::{KafkaEndpoint, log};
use crate::connector::{ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use crate::model::now_micros;

/// Header naming the direction of a message in ferry's topics.
pub const DIR_HEADER: &str = "ferry.dir";

/// One message of the lease log.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    holder: LeaseHolder,
    base: i64,
}

/// The lease as the log says it is.
#[derive(Debug, Default)]
pub struct View {
    /// The holder of the last message that counts, if any.
    pub current: Option<LeaseHolder>,
    /// Offset of the direction's newest message (counted or not); -1 for none.
    pub last: i64,
}

/// The direction's key in ferry's topics.
pub fn dir_key(dir: &DirectionId) -> String {
    dir.to_string()
}

fn entry(r: &RecordAndOffset) -> Option<Entry> {
    serde_json::from_slice(r.record.value.as_deref()?).ok()
}

/// Reads the lease of `dir`.
pub async fn read(ep: &KafkaEndpoint, pc: &PartitionClient, dir: &DirectionId) -> Result<View, ConnectorError> {
    let key = dir_key(dir);
    // Newest first: message k counts when its base is the offset of message k+1.
    let counts = |found: &[RecordAndOffset], k: usize| -> bool {
        match (entry(&found[k]), found.get(k + 1)) {
            (Some(e), Some(prev)) => e.base == prev.offset,
            (Some(e), None) => e.base == -1,
            (None, _) => false,
        }
    };
    let found = log::back(
        ep,
        pc,
        |r| log::header(r, DIR_HEADER) == Some(key.as_str()),
        |found| (0..found.len().saturating_sub(1)).any(|k| counts(found, k)),
    )
    .await?;
    let last = found.first().map_or(-1, |r| r.offset);
    let current = (0..found.len()).find(|&k| counts(&found, k)).and_then(|k| entry(&found[k])).map(|e| {
        let mut h = e.holder;
        h.expired = h.expires_us < now_micros();
        h
    });
    Ok(View { current, last })
}

/// Appends a message for `dir` based on `base`; true when it counts (nothing of the
/// direction came between).
async fn append(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    dir: &DirectionId,
    holder: LeaseHolder,
    base: i64,
) -> Result<bool, ConnectorError> {
    let key = dir_key(dir);
    let value = serde_json::to_vec(&Entry { holder, base }).unwrap_or_default();
    let record = Record {
        key: Some(key.clone().into_bytes()),
        value: Some(value),
        headers: BTreeMap::from([(DIR_HEADER.to_string(), key.clone().into_bytes())]),
        timestamp: log::now(),
    };
    let offsets = pc
        .produce(vec![record], Compression::NoCompression)
        .await
        .map_err(ep.error(format!("writing the lease of task {dir} to topic {}", pc.topic())))?;
    let at = offsets.first().copied().unwrap_or(base + 1);
    let between = log::range(ep, pc, base + 1, at).await?;
    Ok(!between.iter().any(|r| log::header(r, DIR_HEADER) == Some(key.as_str())))
}

/// Takes or renews the lease (see [`crate::connector::Sink::lease`]).
pub async fn claim(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    dir: &DirectionId,
    me: &LeaseHolder,
    ttl: Duration,
) -> Result<LeaseOutcome, ConnectorError> {
    let view = read(ep, pc, dir).await?;
    let fencing = match me.claim(view.current.as_ref()) {
        Ok(f) => f,
        Err(h) => return Ok(LeaseOutcome::HeldBy(h)),
    };
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
    let holder = LeaseHolder { expires_us: now_micros().saturating_add(ttl_us), expired: false, fencing, ..me.clone() };
    if append(ep, pc, dir, holder, view.last).await? {
        return Ok(LeaseOutcome::Acquired { fencing });
    }
    let now = read(ep, pc, dir).await?;
    Ok(match now.current {
        Some(h) if h.fencing == fencing && h.pid == me.pid && h.host == me.host => LeaseOutcome::Acquired { fencing },
        Some(h) => LeaseOutcome::HeldBy(h),
        None => LeaseOutcome::HeldBy(LeaseHolder { pid: 0, ..me.clone() }),
    })
}

/// Whether `fencing` is still the lease's tenure.
pub async fn check(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    dir: &DirectionId,
    fencing: i64,
) -> Result<Result<(), Option<LeaseHolder>>, ConnectorError> {
    let view = read(ep, pc, dir).await?;
    Ok(match view.current {
        Some(h) if h.fencing == fencing && h.pid != 0 => Ok(()),
        other => Err(other),
    })
}

/// Gives the lease up if `me.fencing` still holds it.
pub async fn release(
    ep: &KafkaEndpoint,
    pc: &PartitionClient,
    dir: &DirectionId,
    me: &LeaseHolder,
) -> Result<(), ConnectorError> {
    let view = read(ep, pc, dir).await?;
    if view.current.as_ref().is_some_and(|h| h.fencing == me.fencing && h.pid != 0) {
        let holder = LeaseHolder { pid: 0, expires_us: now_micros(), expired: true, ..me.clone() };
        append(ep, pc, dir, holder, view.last).await?;
    }
    Ok(())
}
