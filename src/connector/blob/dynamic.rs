//! Object-safe twins of [`BlobSource`] and [`BlobSink`], so the registry can hand out
//! any blob store as one type; the boxes implement the plain traits again, so the
//! engine stays generic over the contracts.

use futures_util::future::BoxFuture;

use super::state::BlobState;

use super::{BlobCaps, BlobHashes, BlobHint, BlobMeta, BlobSink, BlobSource, BlobUpload, Finished, Listed};
use crate::connector::{ConnectorError, DirectionId};

/// [`BlobSource`] with boxed futures.
pub trait DynBlobSource: Send {
    /// See [`BlobSource::list`].
    fn list<'a>(
        &'a mut self,
        globs: &'a [String],
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<BlobMeta>, ConnectorError>>;
    /// See [`BlobSource::stat`].
    fn stat<'a>(&'a mut self, path: &'a str) -> BoxFuture<'a, Result<Option<BlobMeta>, ConnectorError>>;
    /// See [`BlobSource::hints`].
    fn hints<'a>(&'a mut self) -> BoxFuture<'a, Result<Vec<BlobHint>, ConnectorError>>;
    /// See [`BlobSource::read_range`].
    fn read_range<'a>(
        &'a mut self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, ConnectorError>>;
    /// See [`BlobSource::read_many`].
    fn read_many<'a>(
        &'a mut self,
        blobs: &'a [(String, u64)],
        buf: Vec<u8>,
    ) -> BoxFuture<'a, (Vec<u8>, Vec<Result<u64, ConnectorError>>)>;
    /// See [`BlobSource::etag_hashes_content`].
    fn etag_hashes_content(&self) -> bool;
}

impl<T: BlobSource> DynBlobSource for T {
    fn list<'a>(
        &'a mut self,
        globs: &'a [String],
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<BlobMeta>, ConnectorError>> {
        Box::pin(BlobSource::list(self, globs, after, limit))
    }
    fn stat<'a>(&'a mut self, path: &'a str) -> BoxFuture<'a, Result<Option<BlobMeta>, ConnectorError>> {
        Box::pin(BlobSource::stat(self, path))
    }
    fn hints<'a>(&'a mut self) -> BoxFuture<'a, Result<Vec<BlobHint>, ConnectorError>> {
        Box::pin(BlobSource::hints(self))
    }
    fn read_range<'a>(
        &'a mut self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, ConnectorError>> {
        Box::pin(BlobSource::read_range(self, path, offset, len))
    }
    fn read_many<'a>(
        &'a mut self,
        blobs: &'a [(String, u64)],
        buf: Vec<u8>,
    ) -> BoxFuture<'a, (Vec<u8>, Vec<Result<u64, ConnectorError>>)> {
        Box::pin(BlobSource::read_many(self, blobs, buf))
    }
    fn etag_hashes_content(&self) -> bool {
        BlobSource::etag_hashes_content(self)
    }
}

impl<'s> BlobSource for Box<dyn DynBlobSource + 's> {
    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        DynBlobSource::list(&mut **self, globs, after, limit).await
    }
    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        DynBlobSource::stat(&mut **self, path).await
    }
    async fn hints(&mut self) -> Result<Vec<BlobHint>, ConnectorError> {
        DynBlobSource::hints(&mut **self).await
    }
    async fn read_range(&mut self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
        DynBlobSource::read_range(&mut **self, path, offset, len).await
    }
    async fn read_many(
        &mut self,
        blobs: &[(String, u64)],
        buf: Vec<u8>,
    ) -> (Vec<u8>, Vec<Result<u64, ConnectorError>>) {
        DynBlobSource::read_many(&mut **self, blobs, buf).await
    }
    fn etag_hashes_content(&self) -> bool {
        DynBlobSource::etag_hashes_content(&**self)
    }
}

/// [`BlobSink`] with boxed futures.
pub trait DynBlobSink: Send {
    /// See [`BlobSink::caps`].
    fn caps(&self) -> BlobCaps;
    /// See [`BlobSink::prepare`].
    fn prepare<'a>(&'a mut self) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::list`].
    fn list<'a>(
        &'a mut self,
        globs: &'a [String],
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<BlobMeta>, ConnectorError>>;
    /// See [`BlobSink::stat`].
    fn stat<'a>(&'a mut self, path: &'a str) -> BoxFuture<'a, Result<Option<BlobMeta>, ConnectorError>>;
    /// See [`BlobSink::begin`].
    fn begin<'a>(
        &'a mut self,
        source: &'a BlobMeta,
        resume: Option<&'a BlobUpload>,
    ) -> BoxFuture<'a, Result<BlobUpload, ConnectorError>>;
    /// See [`BlobSink::write`].
    fn write<'a>(&'a mut self, upload: &'a mut BlobUpload, data: &'a [u8])
    -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::flush`].
    fn flush<'a>(&'a mut self, upload: &'a mut BlobUpload) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::finish`].
    fn finish<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        upload: BlobUpload,
        source: &'a BlobMeta,
        hashes: &'a BlobHashes,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::finish_many`].
    fn finish_many<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        items: Vec<Finished>,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::hand_over`].
    fn hand_over<'a>(&'a mut self, upload: &'a BlobUpload) -> BoxFuture<'a, Result<Vec<u8>, ConnectorError>>;
    /// See [`BlobSink::take_over`].
    fn take_over(&mut self, upload: &BlobUpload, held: Vec<u8>);
    /// See [`BlobSink::write_many`].
    fn write_many<'a>(
        &'a mut self,
        blobs: Vec<(BlobMeta, std::ops::Range<usize>)>,
        data: Vec<u8>,
    ) -> BoxFuture<'a, (Vec<u8>, Vec<Result<(BlobUpload, Vec<u8>), ConnectorError>>)>;
    /// See [`BlobSink::abort`].
    fn abort<'a>(&'a mut self, upload: &'a BlobUpload) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::put_meta`].
    fn put_meta<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        source: &'a BlobMeta,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::put_meta_many`].
    fn put_meta_many<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        items: Vec<BlobMeta>,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::rename`].
    fn rename<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        from: &'a str,
        to: &'a str,
        fencing: i64,
    ) -> BoxFuture<'a, Result<bool, ConnectorError>>;
    /// See [`BlobSink::delete`].
    fn delete<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        path: &'a str,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// See [`BlobSink::state`].
    fn state<'a>(&'a mut self) -> BoxFuture<'a, Result<&'a mut BlobState, ConnectorError>>;
    /// See [`BlobSink::list_with_manifest`].
    fn list_with_manifest<'a>(
        &'a mut self,
        globs: &'a [String],
        after: Option<&'a str>,
        man: Option<(&'a DirectionId, Option<&'a str>)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Listed, ConnectorError>>;
}

impl<T: BlobSink> DynBlobSink for T {
    fn caps(&self) -> BlobCaps {
        BlobSink::caps(self)
    }
    fn prepare<'a>(&'a mut self) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::prepare(self))
    }
    fn list<'a>(
        &'a mut self,
        globs: &'a [String],
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<BlobMeta>, ConnectorError>> {
        Box::pin(BlobSink::list(self, globs, after, limit))
    }
    fn stat<'a>(&'a mut self, path: &'a str) -> BoxFuture<'a, Result<Option<BlobMeta>, ConnectorError>> {
        Box::pin(BlobSink::stat(self, path))
    }
    fn begin<'a>(
        &'a mut self,
        source: &'a BlobMeta,
        resume: Option<&'a BlobUpload>,
    ) -> BoxFuture<'a, Result<BlobUpload, ConnectorError>> {
        Box::pin(BlobSink::begin(self, source, resume))
    }
    fn write<'a>(
        &'a mut self,
        upload: &'a mut BlobUpload,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::write(self, upload, data))
    }
    fn flush<'a>(&'a mut self, upload: &'a mut BlobUpload) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::flush(self, upload))
    }
    fn finish<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        upload: BlobUpload,
        source: &'a BlobMeta,
        hashes: &'a BlobHashes,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::finish(self, dir, upload, source, hashes, fencing))
    }
    fn finish_many<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        items: Vec<Finished>,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::finish_many(self, dir, items, fencing))
    }
    fn hand_over<'a>(&'a mut self, upload: &'a BlobUpload) -> BoxFuture<'a, Result<Vec<u8>, ConnectorError>> {
        Box::pin(BlobSink::hand_over(self, upload))
    }
    fn take_over(&mut self, upload: &BlobUpload, held: Vec<u8>) {
        BlobSink::take_over(self, upload, held)
    }
    fn write_many<'a>(
        &'a mut self,
        blobs: Vec<(BlobMeta, std::ops::Range<usize>)>,
        data: Vec<u8>,
    ) -> BoxFuture<'a, (Vec<u8>, Vec<Result<(BlobUpload, Vec<u8>), ConnectorError>>)> {
        Box::pin(BlobSink::write_many(self, blobs, data))
    }
    fn abort<'a>(&'a mut self, upload: &'a BlobUpload) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::abort(self, upload))
    }
    fn put_meta<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        source: &'a BlobMeta,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::put_meta(self, dir, source, fencing))
    }
    fn put_meta_many<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        items: Vec<BlobMeta>,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::put_meta_many(self, dir, items, fencing))
    }
    fn rename<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        from: &'a str,
        to: &'a str,
        fencing: i64,
    ) -> BoxFuture<'a, Result<bool, ConnectorError>> {
        Box::pin(BlobSink::rename(self, dir, from, to, fencing))
    }
    fn delete<'a>(
        &'a mut self,
        dir: &'a DirectionId,
        path: &'a str,
        fencing: i64,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(BlobSink::delete(self, dir, path, fencing))
    }
    fn state<'a>(&'a mut self) -> BoxFuture<'a, Result<&'a mut BlobState, ConnectorError>> {
        Box::pin(BlobSink::state(self))
    }
    fn list_with_manifest<'a>(
        &'a mut self,
        globs: &'a [String],
        after: Option<&'a str>,
        man: Option<(&'a DirectionId, Option<&'a str>)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Listed, ConnectorError>> {
        Box::pin(BlobSink::list_with_manifest(self, globs, after, man, limit))
    }
}

impl<'s> BlobSink for Box<dyn DynBlobSink + 's> {
    fn caps(&self) -> BlobCaps {
        DynBlobSink::caps(&**self)
    }
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        DynBlobSink::prepare(&mut **self).await
    }
    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        DynBlobSink::list(&mut **self, globs, after, limit).await
    }
    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        DynBlobSink::stat(&mut **self, path).await
    }
    async fn begin(&mut self, source: &BlobMeta, resume: Option<&BlobUpload>) -> Result<BlobUpload, ConnectorError> {
        DynBlobSink::begin(&mut **self, source, resume).await
    }
    async fn write(&mut self, upload: &mut BlobUpload, data: &[u8]) -> Result<(), ConnectorError> {
        DynBlobSink::write(&mut **self, upload, data).await
    }
    async fn flush(&mut self, upload: &mut BlobUpload) -> Result<(), ConnectorError> {
        DynBlobSink::flush(&mut **self, upload).await
    }
    async fn finish(
        &mut self,
        dir: &DirectionId,
        upload: BlobUpload,
        source: &BlobMeta,
        hashes: &BlobHashes,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        DynBlobSink::finish(&mut **self, dir, upload, source, hashes, fencing).await
    }
    async fn finish_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<Finished>,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        DynBlobSink::finish_many(&mut **self, dir, items, fencing).await
    }
    async fn hand_over(&mut self, upload: &BlobUpload) -> Result<Vec<u8>, ConnectorError> {
        DynBlobSink::hand_over(&mut **self, upload).await
    }
    fn take_over(&mut self, upload: &BlobUpload, held: Vec<u8>) {
        DynBlobSink::take_over(&mut **self, upload, held)
    }
    async fn write_many(
        &mut self,
        blobs: Vec<(BlobMeta, std::ops::Range<usize>)>,
        data: Vec<u8>,
    ) -> (Vec<u8>, Vec<Result<(BlobUpload, Vec<u8>), ConnectorError>>) {
        DynBlobSink::write_many(&mut **self, blobs, data).await
    }
    async fn abort(&mut self, upload: &BlobUpload) -> Result<(), ConnectorError> {
        DynBlobSink::abort(&mut **self, upload).await
    }
    async fn put_meta(&mut self, dir: &DirectionId, source: &BlobMeta, fencing: i64) -> Result<(), ConnectorError> {
        DynBlobSink::put_meta(&mut **self, dir, source, fencing).await
    }
    async fn put_meta_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<BlobMeta>,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        DynBlobSink::put_meta_many(&mut **self, dir, items, fencing).await
    }
    async fn rename(&mut self, dir: &DirectionId, from: &str, to: &str, fencing: i64) -> Result<bool, ConnectorError> {
        DynBlobSink::rename(&mut **self, dir, from, to, fencing).await
    }
    async fn delete(&mut self, dir: &DirectionId, path: &str, fencing: i64) -> Result<(), ConnectorError> {
        DynBlobSink::delete(&mut **self, dir, path, fencing).await
    }
    async fn state(&mut self) -> Result<&mut BlobState, ConnectorError> {
        DynBlobSink::state(&mut **self).await
    }
    async fn list_with_manifest(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        man: Option<(&DirectionId, Option<&str>)>,
        limit: usize,
    ) -> Result<Listed, ConnectorError> {
        DynBlobSink::list_with_manifest(&mut **self, globs, after, man, limit).await
    }
}
