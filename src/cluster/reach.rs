//! Which endpoints this node can reach: a node may take a direction only when it
//! reaches both of its endpoints (DESIGN.md "Beyond one machine": by default any node
//! that can reach both). Probed with each store's own reachability check, all at once
//! and each bounded, every few seconds in a task of its own so a hanging endpoint never
//! delays the lease renewals; the names that did not answer go into this node's record
//! for the others to judge by.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::connector::endpoint::Endpoint;
use crate::connector::registry;

/// How long one endpoint may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every endpoint is probed again.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// The least time between two probes, also when one is asked for sooner.
const PROBE_GAP: Duration = Duration::from_secs(2);

/// The endpoints this node could not reach at the last probe, by name, and a way to ask
/// for the next probe early.
#[derive(Debug, Clone, Default)]
pub struct Unreachable {
    names: Arc<Mutex<BTreeSet<String>>>,
    soon: Arc<tokio::sync::Notify>,
}

impl Unreachable {
    /// The names as last probed.
    pub fn names(&self) -> BTreeSet<String> {
        self.names.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Asks for the next probe now rather than at its time (at most every [`PROBE_GAP`]):
    /// a direction running here is retrying an endpoint, which may be out of this node's
    /// reach, and the sooner that is known the sooner a node that reaches it takes over.
    pub fn probe_soon(&self) {
        self.soon.notify_one();
    }

    fn set(&self, names: BTreeSet<String>) {
        if let Ok(mut s) = self.names.lock() {
            *s = names;
        }
    }
}

/// Probes every endpoint once, all at once; returns the names that did not answer in time.
pub async fn probe(endpoints: &[Endpoint]) -> BTreeSet<String> {
    let checks = endpoints.iter().map(|ep| async move {
        match tokio::time::timeout(PROBE_TIMEOUT, registry::reachable(ep)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some((ep.name.clone(), e.to_string())),
            Err(_) => Some((ep.name.clone(), format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))),
        }
    });
    let mut out = BTreeSet::new();
    for (name, why) in futures_util::future::join_all(checks).await.into_iter().flatten() {
        warn!(endpoint = %name, error = %why, "this node cannot reach the endpoint; it will not take directions that use it");
        out.insert(name);
    }
    out
}

/// Starts from `first` (what the node's start-up probe found), then probes every
/// [`PROBE_EVERY`], or sooner when asked ([`Unreachable::probe_soon`]), in a task ended
/// by `shutdown`.
pub fn watch(
    endpoints: Vec<Endpoint>,
    first: BTreeSet<String>,
    shutdown: CancellationToken,
) -> (Unreachable, JoinHandle<()>) {
    let found = Unreachable::default();
    found.set(first);
    let out = found.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_GAP) => {}
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = out.soon.notified() => {}
                _ = tokio::time::sleep(PROBE_EVERY - PROBE_GAP) => {}
            }
            let now = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                n = probe(&endpoints) => n,
            };
            let before = out.names();
            for back in before.difference(&now) {
                info!(endpoint = %back, "this node reaches the endpoint again");
            }
            out.set(now);
        }
    });
    (found, task)
}
