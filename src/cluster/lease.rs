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
    /// The revision `create` returned: the tenure's fencing floor on the target.
    pub fencing: u64,
    /// The owner holds the direction paused (`ferry_tasks`): its engine is stopped.
    #[serde(default)]
    pub paused: bool,
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
/// was first. The tenure's fencing token is the revision it was created at.
pub async fn take(store: &Store, key: &str, record: &LeaseRecord) -> Result<Option<Held>, ClusterError> {
    let body = serde_json::to_vec(record).map_err(|source| ClusterError::Record { key: key.to_string(), source })?;
    match store.create(key, body.into()).await {
        Ok(revision) => {
            // The record stored says fencing 0 until the first renewal writes it; the
            // owner knows its token from here on.
            let mut record = record.clone();
            record.fencing = revision;
            Ok(Some(Held { record, revision }))
        }
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(ClusterError::nats(format!("taking lease {key}"), e)),
    }
}

/// Renews our lease by compare-and-set on its revision: `Some` with the new revision,
/// `None` when the key changed since (expired and taken, or released): it is lost.
pub async fn renew(store: &Store, key: &str, held: &Held) -> Result<Option<Held>, ClusterError> {
    let body =
        serde_json::to_vec(&held.record).map_err(|source| ClusterError::Record { key: key.to_string(), source })?;
    match store.update(key, body.into(), held.revision).await {
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
