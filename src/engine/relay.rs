//! The engine's hook for `[[task]] transport = "nats"` (docs/cluster.md, "Transport"):
//! a direction split into a publishing role, which reads the source and hands its
//! batches to a relay, and an applying role, which reads them back from the relay as its
//! source and tells it each position the target committed. The relay itself (a JetStream
//! stream) lives in `cluster::transport`; the engine only knows this contract.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::EngineError;
use super::metrics::DirectionMetrics;
use super::task::DirectionSpec;
use crate::connector::dynamic::DynSource;
use crate::connector::{Chunk, ConnectorError, DirectionId, ReadBatch, ReadRequest, Source};
use crate::model::{Key, Position, TableSchema};

/// Which half of a relayed direction a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRole {
    /// Near the source: reads changes and publishes them.
    Publish,
    /// Near the target: consumes them and applies them.
    Apply,
}

/// What the publishing role runs with.
pub struct PublishRun<'a> {
    /// The direction as planned (its id names the publishing role).
    pub spec: &'a DirectionSpec,
    /// The source's reader.
    pub source: Box<dyn DynSource>,
    /// A second session on the source for its heartbeat row.
    pub heartbeat: Box<dyn DynSource>,
    /// The role's metrics (state, alarm, buffered bytes).
    pub metrics: &'a Arc<DirectionMetrics>,
    /// Stops the role.
    pub shutdown: &'a CancellationToken,
}

/// What the applying role's reader is built from.
pub struct ReaderParts<'a> {
    /// The direction as planned.
    pub spec: &'a DirectionSpec,
    /// The source itself: tables, snapshot chunks and its head (what the stream does
    /// not carry).
    pub source: Box<dyn DynSource>,
    /// Every position the target committed, as it commits it: the relay acknowledges
    /// up to it, never further.
    pub commits: watch::Receiver<Option<Position>>,
    /// Stops waits inside the reader.
    pub shutdown: CancellationToken,
}

/// A carrier of change batches between the two roles.
pub trait Relay: Send + Sync {
    /// Runs the publishing role until `run.shutdown`, from the target's checkpoint on.
    fn publish<'a>(&'a self, run: PublishRun<'a>) -> BoxFuture<'a, Result<(), EngineError>>;
    /// The applying role's source: the relayed changes, and `parts.source` for the rest.
    fn reader<'a>(&'a self, parts: ReaderParts<'a>) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>>;
}

/// A direction's role with its relay (set by the cluster on `transport = "nats"`).
#[derive(Clone)]
pub struct RelayRun {
    /// This run's role.
    pub role: RelayRole,
    /// The direction both roles serve (the publishing role's own id differs).
    pub direction: DirectionId,
    /// The carrier.
    pub relay: Arc<dyn Relay>,
}

impl fmt::Debug for RelayRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayRun").field("role", &self.role).field("direction", &self.direction).finish()
    }
}

/// The applying role's heartbeat session: the publishing role writes the source's
/// heartbeat (it is near the source), so this one writes nothing and tells no time.
pub struct Silent {
    /// The source endpoint, for errors.
    pub endpoint: String,
}

impl Silent {
    fn refuse(&self) -> ConnectorError {
        ConnectorError::Setup {
            endpoint: self.endpoint.clone(),
            problem: "the applying side of a relayed direction used its heartbeat session to read".into(),
            fix: "report this as a bug with the log".into(),
        }
    }
}

impl Source for Silent {
    async fn tables(&mut self, _: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        Err(self.refuse())
    }
    async fn install_capture(&mut self, _: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        Err(self.refuse())
    }
    async fn head(&mut self) -> Result<Position, ConnectorError> {
        Err(self.refuse())
    }
    async fn read_chunk(
        &mut self,
        _: &TableSchema,
        _: Option<&Key>,
        _: usize,
        _: bool,
    ) -> Result<Chunk, ConnectorError> {
        Err(self.refuse())
    }
    async fn read_changes(&mut self, _: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        Err(self.refuse())
    }
    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn consumed(&mut self, _: &str, _: &Position) -> Result<(), ConnectorError> {
        Ok(())
    }
}
