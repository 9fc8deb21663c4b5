//! A task direction's ownership: one key per direction in the `ferry_leases` KV bucket,
//! taken with `create` (only when absent) and renewed with `update` by compare-and-set
//! on the key's revision; the bucket's max_age removes a lease nobody renewed.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, Store};
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::connector::DirectionId;

/// The bucket holding one lease per task direction.
pub const BUCKET: &str = "ferry_leases";

/// What a lease key holds: who owns the direction, readable by any node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Task name.
    pub task: String,
    /// Source endpoint.
    pub from: String,
    /// Target endpoint.
    pub to: String,
    /// `[node] id` of the owner.
    pub node: String,
    /// `[node] site` of the owner.
    pub site: Option<String>,
    /// When this tenure began (µs since the epoch, by the owner's clock).
    pub since_us: i64,
    /// The revision `create` returned: the tenure's fencing floor on the target. 0 only
    /// for the instant between the `create` and the write that stamps it ([`take`]), or
    /// in a record written by a release that did not stamp it: readers show it unknown.
    pub fencing: u64,
    /// The owner holds the direction paused (`ferry_tasks`): its engine is stopped.
    #[serde(default)]
    pub paused: bool,
}

impl LeaseRecord {
    /// The tenure's fencing token, `None` while the record does not carry it yet (see
    /// `fencing`): never inferred from the key's revision, which moves with each renewal.
    pub fn token(&self) -> Option<u64> {
        (self.fencing != 0).then_some(self.fencing)
    }
}

/// A lease as read: its record and current revision.
#[derive(Debug, Clone)]
pub struct Held {
    /// The record.
    pub record: LeaseRecord,
    /// The key's revision (the CAS token for the next renewal).
    pub revision: u64,
}

/// Opens (creating when missing) the lease bucket, whose max_age is the lease TTL.
pub async fn bucket(
    js: &async_nats::jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<Store, ClusterError> {
    let config = kv::Config {
        bucket: BUCKET.to_string(),
        description: "ferry: one lease per task direction".to_string(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas,
        ..Default::default()
    };
    super::open_bucket(js, config).await
}

/// The direction's key: its names as key parts, joined by dots.
pub fn key(dir: &DirectionId) -> String {
    format!("{}.{}.{}", super::key_part(&dir.task), super::key_part(&dir.from), super::key_part(&dir.to))
}

/// The lease on `key`, `None` when free (never taken, released or expired).
pub async fn read(store: &Store, key: &str) -> Result<Option<Held>, ClusterError> {
    let entry = store.entry(key).await.map_err(|e| ClusterError::nats(format!("reading lease {key}"), e))?;
    let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
        return Ok(None);
    };
    let record: LeaseRecord =
        serde_json::from_slice(&entry.value).map_err(|source| ClusterError::Record { key: key.to_string(), source })?;
    Ok(Some(Held { record, revision: entry.revision }))
}

/// Takes the free lease on `key`: `Some` when this node got it, `None` when another node
/// was first. The tenure's fencing token is the revision `create` returned; the record
/// written by `create` cannot hold its own revision, so it is written again at once with
/// the token, by compare-and-set on that revision: from then on the record carries the
/// exact token and no reader has to infer it (a record saying 0 is a tenure being taken).
pub async fn take(store: &Store, key: &str, record: &LeaseRecord) -> Result<Option<Held>, ClusterError> {
    let mut record = LeaseRecord { fencing: 0, ..record.clone() };
    let created = match store.create(key, encode(key, &record)?).await {
        Ok(revision) => revision,
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(ClusterError::nats(format!("taking lease {key}"), e)),
    };
    record.fencing = created;
    // The token is the create's revision, not this write's: every revision of the key
    // between the two is ours (the write is a compare-and-set on the create's), and a
    // later tenure's create comes after both, so either orders tenures the same; the
    // create's is the one a record can carry exactly.
    match store.update(key, encode(key, &record)?, created).await {
        Ok(revision) => Ok(Some(Held { record, revision })),
        // Changed since the create (it cannot have expired so soon; an operator removed
        // it): not ours.
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => {
            // Unanswered: give the unstamped record back so it does not stand a whole
            // TTL; if the write did land after all, the record carries the token and
            // expires unrenewed.
            let _ = store.delete_expect_revision(key, Some(created)).await;
            Err(ClusterError::nats(format!("writing the fencing token into lease {key}"), e))
        }
    }
}

fn encode(key: &str, record: &LeaseRecord) -> Result<bytes::Bytes, ClusterError> {
    let body = serde_json::to_vec(record).map_err(|source| ClusterError::Record { key: key.to_string(), source })?;
    Ok(body.into())
}

/// Renews our lease by compare-and-set on its revision: `Some` with the new revision,
/// `None` when the key changed since (expired and taken, or released): it is lost.
pub async fn renew(store: &Store, key: &str, held: &Held) -> Result<Option<Held>, ClusterError> {
    match store.update(key, encode(key, &held.record)?, held.revision).await {
        Ok(revision) => Ok(Some(Held { record: held.record.clone(), revision })),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(ClusterError::nats(format!("renewing lease {key}"), e)),
    }
}

/// Gives our lease up (a clean stop, a failed direction, a rebalance), only if it is
/// still at our revision.
pub async fn release(store: &Store, key: &str, held: &Held) -> Result<(), ClusterError> {
    store
        .delete_expect_revision(key, Some(held.revision))
        .await
        .map_err(|e| ClusterError::nats(format!("releasing lease {key}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_escapes_what_kv_keys_may_not_hold() {
        let dir = DirectionId { task: "orders.eu".into(), from: "dc a".into(), to: "dc-b".into() };
        assert_eq!(key(&dir), "orders=2Eeu.dc=20a.dc-b");
    }
}
