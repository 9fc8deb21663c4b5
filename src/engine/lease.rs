//! A direction's tenure of its lease, the same for database and blob directions: what
//! each answer of the target's lease table means, and when the lease is due again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::EngineError;
use super::metrics::{DirectionMetrics, DirectionState};
use crate::connector::{DirectionId, LeaseHolder, LeaseOutcome};

/// How long a lease lasts without renewal (by the target's clock).
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(3);
/// How long to wait before asking again for a lease another host holds.
const RETRY: Duration = Duration::from_secs(1);

/// This process's claim on a direction: who it is, the fencing token of its tenure,
/// and when it last renewed.
pub struct Tenure<'a> {
    /// This process, with its tenure's fencing token (0 before it holds one).
    pub me: LeaseHolder,
    /// Whether an earlier attempt of this run held the lease (shared across retries).
    held: &'a AtomicBool,
    last_renew: Instant,
}

impl<'a> Tenure<'a> {
    /// A tenure not yet taken, for this node's process; `floor` is the cluster lease's
    /// token (0 outside a cluster, see [`LeaseHolder::floor`]).
    pub fn new(node: &str, floor: i64, held: &'a AtomicBool) -> Self {
        let me = LeaseHolder {
            node: node.to_string(),
            host: crate::connector::host::host_name(),
            pid: std::process::id(),
            expires_us: 0,
            expired: false,
            fencing: 0,
            floor,
        };
        Tenure { me, held, last_renew: Instant::now() }
    }

    /// Starts taking the lease: a new tenure gets a new fencing token.
    pub fn begin(&mut self) {
        self.me.fencing = 0;
    }

    /// Judges the answer to a take: `true` when held, `false` when another host holds
    /// it (wait and ask again, see [`wait`]). Held by another process on this host, or
    /// taken away after this run held it, is an error.
    pub fn taken(
        &mut self,
        dir: &DirectionId,
        outcome: LeaseOutcome,
        metrics: &DirectionMetrics,
    ) -> Result<bool, EngineError> {
        match outcome {
            LeaseOutcome::Acquired { fencing } => {
                self.me.fencing = fencing;
                self.held.store(true, Ordering::Relaxed);
                self.last_renew = Instant::now();
                info!(direction = %dir, fencing, "took the lease");
                Ok(true)
            }
            LeaseOutcome::HeldBy(h) if self.held.load(Ordering::Relaxed) => {
                Err(EngineError::LeaseLost { dir: dir.clone(), holder: Box::new(h) })
            }
            LeaseOutcome::HeldBy(h) if h.host == self.me.host => {
                Err(EngineError::LeaseHeld { dir: dir.clone(), holder: Box::new(h) })
            }
            LeaseOutcome::HeldBy(h) => {
                metrics.set_state(DirectionState::WaitingForLease);
                info!(direction = %dir, holder = %h, "waiting for the lease held by another host to expire (it lasts {} s after its last renewal)", LEASE_TTL.as_secs());
                Ok(false)
            }
        }
    }

    /// Whether the lease is due for renewal (every few seconds, so no phase lets it run out).
    pub fn due(&self) -> bool {
        self.last_renew.elapsed() >= LEASE_RENEW
    }

    /// Judges the answer to a renewal: anything but ours again means the lease was lost.
    pub fn renewed(&mut self, dir: &DirectionId, outcome: LeaseOutcome) -> Result<(), EngineError> {
        match outcome {
            LeaseOutcome::Acquired { .. } => {
                self.last_renew = Instant::now();
                Ok(())
            }
            LeaseOutcome::HeldBy(h) => Err(EngineError::LeaseLost { dir: dir.clone(), holder: Box::new(h) }),
        }
    }
}

/// Waits before asking again for a lease another host holds; `false` when shut down.
pub async fn wait(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(RETRY) => true,
    }
}
