//! The whole cluster as any node sees it: every node's record and every direction's
//! owner (the node API's `/api/v1/cluster`, `ferry cluster status`).

use async_nats::jetstream::kv::Store;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::lease::{self, LeaseRecord};
use super::members::{self, Member};

/// Nodes and owners.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The NATS servers, passwords masked.
    pub nats: String,
    /// Every node with a record (gone ones until their record expires).
    pub nodes: Vec<Member>,
    /// Every direction with a live lease, and its owner.
    pub owners: Vec<LeaseRecord>,
}

/// Reads both buckets.
pub async fn read(nats: &str, member_store: &Store, lease_store: &Store) -> Result<ClusterView, ClusterError> {
    let nodes = members::all(member_store).await?;
    let keys = super::list_keys(lease_store, "the leases").await?;
    let mut owners = Vec::new();
    // Lease keys are task.from.to; other keys (a rebalance request) are not leases.
    for key in keys.iter().filter(|k| k.matches('.').count() == 2) {
        // As stored: a record between its create and the write of its token says 0 (shown
        // unknown), never a number guessed from the key's revision.
        if let Some(held) = lease::read(lease_store, key).await? {
            owners.push(held.record);
        }
    }
    owners.sort_by(|a, b| (&a.task, &a.from, &a.to).cmp(&(&b.task, &b.from, &b.to)));
    Ok(ClusterView { nats: nats.to_string(), nodes, owners })
}
