//! What a cutover does to one endpoint, whatever its store: freeze it (and prove the
//! freeze with a probe write as an application would make it), lift the freeze, read
//! the head of its change stream, check it answers. The store's part is its freezer
//! in the registry.

use crate::config::{Endpoint, Task};
use crate::connector::ConnectorError;
use crate::connector::registry::{self, FreezeRequest};
use crate::model::Position;

/// What a freeze did.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// Application sessions ended (MySQL) or tables guarded (SQLite).
    pub count: usize,
    /// How the probe write was refused.
    pub probe: String,
}

/// Stops application writes on `ep` as the task's `[task.cutover]` says, then proves it
/// with a probe write as an application account; a probe that gets through undoes the
/// freeze and fails, and a freeze that failed half-way is undone.
pub async fn freeze(ep: &Endpoint, task: &Task, reason: &str) -> Result<Frozen, ConnectorError> {
    let how = FreezeRequest {
        method: task.cutover.freeze,
        exempt_users: task.cutover.exempt_users.clone(),
        reason: reason.to_string(),
        watch: std::time::Duration::from_secs(task.cutover.quiet_seconds),
    };
    freeze_with(ep, &how).await
}

/// [`freeze`] as `how` says.
pub async fn freeze_with(ep: &Endpoint, how: &FreezeRequest) -> Result<Frozen, ConnectorError> {
    let outcome = match registry::freeze(ep, how).await {
        Ok(o) => o,
        Err(e) => {
            if let Err(undo) = unfreeze(ep).await {
                tracing::warn!(endpoint = %ep.name, error = %undo, "could not undo a failed freeze");
            }
            return Err(e);
        }
    };
    match outcome.probe {
        Ok(Err(refused)) => Ok(Frozen { count: outcome.count, probe: refused }),
        Ok(Ok(())) => {
            unfreeze(ep).await?;
            Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: "a probe write as an application account got through the freeze; the freeze was undone".into(),
                fix: "check that application accounts lack SUPER / READ ONLY ADMIN (MySQL) and retry".into(),
            })
        }
        Err(e) => {
            unfreeze(ep).await?;
            Err(e)
        }
    }
}

/// Lifts a freeze (idempotent).
pub async fn unfreeze(ep: &Endpoint) -> Result<(), ConnectorError> {
    registry::unfreeze(ep).await
}

/// Since when (µs) the endpoint is frozen, if it is.
pub async fn frozen_since(ep: &Endpoint) -> Result<Option<i64>, ConnectorError> {
    registry::frozen_since(ep).await
}

/// Whether the endpoint answers; the error says why not.
pub async fn reachable(ep: &Endpoint) -> Result<(), ConnectorError> {
    registry::reachable(ep).await
}

/// The head of the endpoint's change stream (capture must be installed on SQLite).
pub async fn head(ep: &Endpoint) -> Result<Position, ConnectorError> {
    registry::source_head(ep).await?.ok_or_else(|| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: "cannot read the head of its change stream".into(),
        fix: "check that change capture is installed (SQLite) or the binary log is on (MySQL)".into(),
    })
}
