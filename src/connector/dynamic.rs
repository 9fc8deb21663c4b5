//! Object-safe twins of [`Source`] and [`Sink`], so the registry can hand out any
//! store's reader and writer as one type (`Box<dyn DynSource>`, `Box<dyn DynSink>`). A
//! store implements the plain traits; the twins follow by blanket impls, and the boxes
//! implement the plain traits again, so the engine stays generic over the contracts.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{
    ApplyBatch, ApplyReport, Checkpoint, Chunk, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, ReadBatch,
    ReadRequest, Retention, Sink, Source,
};
use crate::model::{Key, Position, TableSchema};

/// [`Source`] with boxed futures.
pub trait DynSource: Send {
    /// See [`Source::tables`].
    fn tables<'a>(&'a mut self, p: &'a [String]) -> BoxFuture<'a, Result<Vec<Arc<TableSchema>>, ConnectorError>>;
    /// See [`Source::install_capture`].
    fn install_capture<'a>(&'a mut self, t: &'a [Arc<TableSchema>]) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`Source::head`].
    fn head(&mut self) -> BoxFuture<'_, Result<Position, ConnectorError>>;
    /// See [`Source::read_chunk`].
    fn read_chunk<'a>(
        &'a mut self,
        table: &'a TableSchema,
        after: Option<&'a Key>,
        limit: usize,
        versions: bool,
    ) -> BoxFuture<'a, Result<Chunk, ConnectorError>>;
    /// See [`Source::read_changes`].
    fn read_changes<'a>(&'a mut self, req: &'a ReadRequest) -> BoxFuture<'a, Result<ReadBatch, ConnectorError>>;
    /// See [`Source::heartbeat`].
    fn heartbeat(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>>;
    /// See [`Source::consumed`].
    fn consumed<'a>(&'a mut self, consumer: &'a str, at: &'a Position) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`Source::clock`].
    fn clock(&mut self) -> BoxFuture<'_, Result<Option<i64>, ConnectorError>>;
    /// See [`Source::retention`].
    fn retention(&mut self) -> BoxFuture<'_, Result<Option<Retention>, ConnectorError>>;
    /// See [`Source::estimate_rows`].
    fn estimate_rows<'a>(&'a mut self, t: &'a TableSchema) -> BoxFuture<'a, Result<Option<u64>, ConnectorError>>;
    /// See [`Source::batch_changes`].
    fn batch_changes(&self) -> Option<usize>;
    /// See [`Source::close`].
    fn close_boxed<'a>(self: Box<Self>) -> BoxFuture<'a, ()>
    where
        Self: 'a;
}

impl<T: Source> DynSource for T {
    fn tables<'a>(&'a mut self, p: &'a [String]) -> BoxFuture<'a, Result<Vec<Arc<TableSchema>>, ConnectorError>> {
        Box::pin(Source::tables(self, p))
    }
    fn install_capture<'a>(&'a mut self, t: &'a [Arc<TableSchema>]) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Source::install_capture(self, t))
    }
    fn head(&mut self) -> BoxFuture<'_, Result<Position, ConnectorError>> {
        Box::pin(Source::head(self))
    }
    fn read_chunk<'a>(
        &'a mut self,
        table: &'a TableSchema,
        after: Option<&'a Key>,
        limit: usize,
        versions: bool,
    ) -> BoxFuture<'a, Result<Chunk, ConnectorError>> {
        Box::pin(Source::read_chunk(self, table, after, limit, versions))
    }
    fn read_changes<'a>(&'a mut self, req: &'a ReadRequest) -> BoxFuture<'a, Result<ReadBatch, ConnectorError>> {
        Box::pin(Source::read_changes(self, req))
    }
    fn heartbeat(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(Source::heartbeat(self))
    }
    fn consumed<'a>(&'a mut self, consumer: &'a str, at: &'a Position) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Source::consumed(self, consumer, at))
    }
    fn clock(&mut self) -> BoxFuture<'_, Result<Option<i64>, ConnectorError>> {
        Box::pin(Source::clock(self))
    }
    fn retention(&mut self) -> BoxFuture<'_, Result<Option<Retention>, ConnectorError>> {
        Box::pin(Source::retention(self))
    }
    fn estimate_rows<'a>(&'a mut self, t: &'a TableSchema) -> BoxFuture<'a, Result<Option<u64>, ConnectorError>> {
        Box::pin(Source::estimate_rows(self, t))
    }
    fn batch_changes(&self) -> Option<usize> {
        Source::batch_changes(self)
    }
    fn close_boxed<'a>(self: Box<Self>) -> BoxFuture<'a, ()>
    where
        Self: 'a,
    {
        Box::pin(Source::close(*self))
    }
}

impl<'s> Source for Box<dyn DynSource + 's> {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        DynSource::tables(&mut **self, patterns).await
    }
    async fn install_capture(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        DynSource::install_capture(&mut **self, tables).await
    }
    async fn head(&mut self) -> Result<Position, ConnectorError> {
        DynSource::head(&mut **self).await
    }
    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        DynSource::read_chunk(&mut **self, table, after, limit, versions).await
    }
    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        DynSource::read_changes(&mut **self, req).await
    }
    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        DynSource::heartbeat(&mut **self).await
    }
    async fn consumed(&mut self, consumer: &str, position: &Position) -> Result<(), ConnectorError> {
        DynSource::consumed(&mut **self, consumer, position).await
    }
    async fn clock(&mut self) -> Result<Option<i64>, ConnectorError> {
        DynSource::clock(&mut **self).await
    }
    async fn retention(&mut self) -> Result<Option<Retention>, ConnectorError> {
        DynSource::retention(&mut **self).await
    }
    async fn estimate_rows(&mut self, table: &TableSchema) -> Result<Option<u64>, ConnectorError> {
        DynSource::estimate_rows(&mut **self, table).await
    }
    fn batch_changes(&self) -> Option<usize> {
        DynSource::batch_changes(&**self)
    }
    fn close(self) -> impl Future<Output = ()> + Send {
        DynSource::close_boxed(self)
    }
}

/// [`Sink`] with boxed futures.
pub trait DynSink: Send {
    /// See [`Sink::prepare`].
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>>;
    /// See [`Sink::ensure_tables`].
    fn ensure_tables<'a>(&'a mut self, t: &'a [Arc<TableSchema>]) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`Sink::load_checkpoint`].
    fn load_checkpoint<'a>(
        &'a mut self,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, ConnectorError>>;
    /// See [`Sink::apply`].
    fn apply<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        b: &'a ApplyBatch,
    ) -> BoxFuture<'a, Result<ApplyReport, ConnectorError>>;
    /// See [`Sink::lease`].
    fn lease<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        h: &'a LeaseHolder,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<LeaseOutcome, ConnectorError>>;
    /// See [`Sink::rollback`].
    fn rollback(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>>;
    /// See [`Sink::release`].
    fn release<'a>(&'a mut self, dir: &'a DirectionId, h: &'a LeaseHolder)
    -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`Sink::close`].
    fn close_boxed<'a>(self: Box<Self>) -> BoxFuture<'a, ()>
    where
        Self: 'a;
}

impl<T: Sink> DynSink for T {
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(Sink::prepare(self))
    }
    fn ensure_tables<'a>(&'a mut self, t: &'a [Arc<TableSchema>]) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Sink::ensure_tables(self, t))
    }
    fn load_checkpoint<'a>(
        &'a mut self,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, ConnectorError>> {
        Box::pin(Sink::load_checkpoint(self, dir))
    }
    fn apply<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        b: &'a ApplyBatch,
    ) -> BoxFuture<'a, Result<ApplyReport, ConnectorError>> {
        Box::pin(Sink::apply(self, dir, b))
    }
    fn lease<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        h: &'a LeaseHolder,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<LeaseOutcome, ConnectorError>> {
        Box::pin(Sink::lease(self, dir, h, ttl))
    }
    fn rollback(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(Sink::rollback(self))
    }
    fn release<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        h: &'a LeaseHolder,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Sink::release(self, dir, h))
    }
    fn close_boxed<'a>(self: Box<Self>) -> BoxFuture<'a, ()>
    where
        Self: 'a,
    {
        Box::pin(Sink::close(*self))
    }
}

impl<'s> Sink for Box<dyn DynSink + 's> {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        DynSink::prepare(&mut **self).await
    }
    async fn ensure_tables(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        DynSink::ensure_tables(&mut **self, tables).await
    }
    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        DynSink::load_checkpoint(&mut **self, dir).await
    }
    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        DynSink::apply(&mut **self, dir, batch).await
    }
    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        DynSink::lease(&mut **self, dir, holder, ttl).await
    }
    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        DynSink::rollback(&mut **self).await
    }
    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        DynSink::release(&mut **self, dir, holder).await
    }
    fn close(self) -> impl Future<Output = ()> + Send {
        DynSink::close_boxed(self)
    }
}
