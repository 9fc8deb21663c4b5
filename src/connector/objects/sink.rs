//! A bucket prefix written as a blob sink: an object below the upload cutoff
//! ([`super::client::UPLOAD_CUTOFF`], or `upload_cutoff=` in the URL) is held in memory
//! and sent in one PUT at finish; a bigger one goes up as a multipart upload whose parts
//! survive a crash (resumed through ListParts) and is completed at finish. Both visible steps run
//! inside the state file's fenced transaction, with the manifest line (source stat,
//! hashes, the object's ETag).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};

use super::client::{ListAhead, S3Client};
use crate::connector::blob::state::BlobState;
use crate::connector::blob::{BlobCaps, BlobHashes, BlobMeta, BlobSink, BlobUpload, Finished, ManifestEntry};
use crate::connector::{ConnectorError, DirectionId};

pub use crate::connector::blob::{MIN_PART, part_size};

/// Single-request uploads a batch keeps in flight at once.
const PUTS_IN_FLIGHT: usize = 32;
/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A part being sent: its ETag when done.
type PartSend = tokio::task::JoinHandle<Result<String, ConnectorError>>;

/// A bucket prefix as a target.
pub struct S3Sink {
    client: S3Client,
    state_path: PathBuf,
    state: Option<BlobState>,
    /// Bytes not yet sent, per upload handle.
    buffers: HashMap<String, Vec<u8>>,
    /// Parts being sent, in order, per upload handle; owned here, aborted when their
    /// upload is or the sink is dropped.
    sending: HashMap<String, VecDeque<PartSend>>,
    /// The bucket's listing read ahead (see [`ListAhead`]).
    listing: ListAhead,
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        for part in self.sending.values().flatten() {
            part.abort();
        }
    }
}

/// The local state file of a bucket target: `state=` in the URL, else ferry's data folder.
pub fn state_path(client: &S3Client) -> PathBuf {
    if let Some(p) = &client.state {
        return PathBuf::from(p);
    }
    crate::connector::blob::state::local_path("s3", client.bucket_name(), &client.shown)
}

impl S3Sink {
    /// A sink over a client.
    pub fn new(client: S3Client) -> S3Sink {
        let state_path = state_path(&client);
        S3Sink {
            client,
            state_path,
            state: None,
            buffers: HashMap::new(),
            sending: HashMap::new(),
            listing: ListAhead::default(),
        }
    }

    /// Waits for the oldest parts in flight of an upload: all of them with `all`, else
    /// those already done and as many more as keep at most `PARTS_IN_FLIGHT - 1` in
    /// flight. `durable` covers only parts done in order from the first, which is what
    /// a resume keeps (ListParts from part 1 on).
    async fn settle(&mut self, upload: &mut BlobUpload, all: bool) -> Result<(), ConnectorError> {
        let part = part_size(upload.size);
        let Some(queue) = self.sending.get_mut(&upload.handle) else { return Ok(()) };
        while let Some(front) = queue.front() {
            if !all && !front.is_finished() && queue.len() < PARTS_IN_FLIGHT {
                break;
            }
            let Some(send) = queue.pop_front() else { break };
            let sent = send.await.map_err(|e| ConnectorError::Blob {
                endpoint: self.client.endpoint.clone(),
                what: "a part upload stopped:".into(),
                path: upload.path.clone(),
                source: Box::new(std::io::Error::other(e.to_string())),
                kind: crate::connector::ErrorKind::Runtime,
                fix: Some("ferry retries the copy (it resumes through ListParts)".into()),
            })?;
            sent?;
            upload.durable += part;
        }
        Ok(())
    }

    /// Drops the parts in flight of an upload.
    fn drop_sending(&mut self, handle: &str) {
        for part in self.sending.remove(handle).into_iter().flatten() {
            part.abort();
        }
    }

    /// Records a manifest line inside an already fenced transaction, then commits.
    async fn commit_entry(&mut self, dir: &DirectionId, entry: &ManifestEntry) -> Result<(), ConnectorError> {
        let st = self.state().await?;
        let step = st.put_entry(dir, entry).await;
        st.end(step).await
    }
}

fn upload_id(handle: &str) -> Option<&str> {
    handle.strip_prefix("mpu:")
}

impl BlobSink for S3Sink {
    async fn state(&mut self) -> Result<&mut BlobState, ConnectorError> {
        let st = match self.state.take() {
            Some(st) => st,
            None => BlobState::open_local(&self.client.endpoint, &self.state_path, "s3://").await?,
        };
        Ok(self.state.insert(st))
    }

    fn caps(&self) -> BlobCaps {
        BlobCaps { tree: false, keeps_mtime: false, md5: true }
    }

    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        self.client.check_bucket().await?;
        self.state().await?;
        Ok(())
    }

    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        self.listing.list(&self.client, globs, after, limit, true).await
    }

    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        self.client.head(path).await
    }

    async fn begin(&mut self, source: &BlobMeta, resume: Option<&BlobUpload>) -> Result<BlobUpload, ConnectorError> {
        let part = part_size(source.size);
        let mut up = BlobUpload {
            path: source.path.clone(),
            handle: "single".into(),
            written: 0,
            durable: 0,
            size: source.size,
            mtime_ns: source.mtime_ns,
            meta_set: false,
        };
        if source.size < self.client.upload_cutoff {
            if let Some(r) = resume
                && let Some(id) = upload_id(&r.handle)
            {
                // Begun as a multipart upload under another cutoff: sent whole instead.
                self.client.abort(&r.path, id).await?;
            }
            up.handle = format!("single:{}", source.path);
            // Its whole content is held: one allocation, not a doubling per write.
            self.buffers.insert(up.handle.clone(), Vec::with_capacity(source.size as usize));
            return Ok(up);
        }
        if let Some(r) = resume
            && let Some(id) = upload_id(&r.handle)
            && let Some(parts) = self.client.list_parts(&source.path, id).await?
        {
            // The whole parts in order from 1 are kept; the copy goes on after them.
            let mut n = 0u64;
            for (i, (num, size, _)) in parts.iter().enumerate() {
                if u64::from(*num) != i as u64 + 1 || *size != part {
                    break;
                }
                n += 1;
            }
            up.handle = r.handle.clone();
            up.written = n * part;
            up.durable = up.written;
            self.buffers.insert(up.handle.clone(), Vec::new());
            return Ok(up);
        }
        let id = self.client.create_multipart(&source.path).await?;
        up.handle = format!("mpu:{id}");
        self.buffers.insert(up.handle.clone(), Vec::new());
        Ok(up)
    }

    async fn write(&mut self, upload: &mut BlobUpload, data: &[u8]) -> Result<(), ConnectorError> {
        let buf = self.buffers.entry(upload.handle.clone()).or_default();
        buf.extend_from_slice(data);
        upload.written += data.len() as u64;
        let Some(id) = upload_id(&upload.handle).map(str::to_string) else { return Ok(()) };
        let part = part_size(upload.size);
        while self.buffers.get(&upload.handle).is_some_and(|b| b.len() as u64 >= part) {
            let Some(buf) = self.buffers.get_mut(&upload.handle) else { break };
            let chunk: Vec<u8> = buf.drain(..part as usize).collect();
            // Sent in the background, several at once; numbered after those done and
            // those in flight.
            self.settle(upload, false).await?;
            let queue = self.sending.entry(upload.handle.clone()).or_default();
            let n = u16::try_from(upload.durable / part + queue.len() as u64 + 1).unwrap_or(u16::MAX);
            let (client, path, id) = (self.client.clone(), upload.path.clone(), id.clone());
            queue.push_back(tokio::spawn(async move { client.upload_part(&path, &id, n, chunk).await }));
        }
        Ok(())
    }

    async fn flush(&mut self, upload: &mut BlobUpload) -> Result<(), ConnectorError> {
        // Parts are durable once uploaded; what is buffered waits for a whole part. The
        // parts in flight go on: only those done count.
        self.settle(upload, false).await
    }

    async fn finish(
        &mut self,
        dir: &DirectionId,
        mut upload: BlobUpload,
        source: &BlobMeta,
        hashes: &BlobHashes,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        let rest = self.buffers.remove(&upload.handle).unwrap_or_default();
        let mut entry = ManifestEntry::of(source, Some(hashes.clone()), None);
        match upload_id(&upload.handle).map(str::to_string) {
            None => {
                self.state().await?.begin_fenced(dir, fencing).await?;
                let etag = match self.client.put(&source.path, rest).await {
                    Ok(e) => e,
                    Err(e) => {
                        self.state().await?.rollback().await;
                        return Err(e);
                    }
                };
                entry.target = Some(etag);
            }
            Some(id) => {
                let settled = self.settle(&mut upload, true).await;
                self.drop_sending(&upload.handle);
                settled?;
                let part = part_size(upload.size);
                // Numbered after every whole part sent (by this sink or by the lane that
                // handed the upload over, whose `durable` this copy may not have seen).
                let whole = (upload.written - rest.len() as u64) / part;
                if !rest.is_empty() || whole == 0 {
                    let n = u16::try_from(whole + 1).unwrap_or(u16::MAX);
                    upload.durable += rest.len() as u64;
                    self.client.upload_part(&upload.path, &id, n, rest).await?;
                }
                let parts = self.client.list_parts(&upload.path, &id).await?.unwrap_or_default();
                let etags: Vec<String> = parts.into_iter().map(|(_, _, e)| format!("\"{e}\"")).collect();
                self.state().await?.begin_fenced(dir, fencing).await?;
                let etag = match self.client.complete(&upload.path, &id, &etags).await {
                    Ok(e) => e,
                    Err(e) => {
                        self.state().await?.rollback().await;
                        return Err(e);
                    }
                };
                entry.target = Some(etag);
            }
        }
        // The object's ETag as listings show it (complete answers may differ in form).
        if let Ok(Some(m)) = self.client.head(&source.path).await {
            entry.target = m.etag;
        }
        self.commit_entry(dir, &entry).await
    }

    async fn finish_many(
        &mut self,
        dir: &DirectionId,
        items: Vec<Finished>,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        let (single, multi): (Vec<Finished>, Vec<Finished>) =
            items.into_iter().partition(|f| upload_id(&f.upload.handle).is_none());
        if !single.is_empty() {
            // Every PUT of the batch inside one fenced transaction, several in flight.
            let puts: Vec<(Finished, Vec<u8>)> = single
                .into_iter()
                .map(|f| {
                    let data = self.buffers.remove(&f.upload.handle).unwrap_or_default();
                    (f, data)
                })
                .collect();
            self.state().await?.begin_fenced(dir, fencing).await?;
            let client = self.client.clone();
            let sent: Vec<Result<ManifestEntry, ConnectorError>> = stream::iter(puts)
                .map(|(f, data)| {
                    let client = client.clone();
                    async move {
                        let etag = client.put(&f.source.path, data).await?;
                        // The object's ETag as listings show it, when the answer lacks it.
                        let etag = match etag.is_empty() {
                            false => Some(etag),
                            true => client.head(&f.source.path).await?.and_then(|m| m.etag),
                        };
                        Ok(ManifestEntry::of(&f.source, Some(f.hashes), etag))
                    }
                })
                .buffered(PUTS_IN_FLIGHT)
                .collect()
                .await;
            // What was made visible is recorded, up to the first failure.
            let st = self.state().await?;
            let mut failed = None;
            for r in sent {
                match r {
                    Ok(entry) if failed.is_none() => {
                        if let Err(e) = st.put_entry(dir, &entry).await {
                            failed = Some(e);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            st.commit().await?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        for f in multi {
            self.finish(dir, f.upload, &f.source, &f.hashes, fencing).await?;
        }
        Ok(())
    }

    async fn hand_over(&mut self, upload: &BlobUpload) -> Result<Vec<u8>, ConnectorError> {
        // The parts in flight are this sink's: sent before another sink completes it.
        let settled = self.settle(&mut upload.clone(), true).await;
        self.drop_sending(&upload.handle);
        settled?;
        Ok(self.buffers.remove(&upload.handle).unwrap_or_default())
    }

    fn take_over(&mut self, upload: &BlobUpload, held: Vec<u8>) {
        self.buffers.insert(upload.handle.clone(), held);
    }

    async fn abort(&mut self, upload: &BlobUpload) -> Result<(), ConnectorError> {
        self.buffers.remove(&upload.handle);
        self.drop_sending(&upload.handle);
        if let Some(id) = upload_id(&upload.handle) {
            self.client.abort(&upload.path, id).await?;
        }
        Ok(())
    }

    async fn put_meta(&mut self, _dir: &DirectionId, _source: &BlobMeta, _fencing: i64) -> Result<(), ConnectorError> {
        // Objects have no folders, links or modes.
        Ok(())
    }

    async fn rename(
        &mut self,
        _dir: &DirectionId,
        _from: &str,
        _to: &str,
        _fencing: i64,
    ) -> Result<bool, ConnectorError> {
        Ok(false)
    }

    async fn delete(&mut self, dir: &DirectionId, path: &str, fencing: i64) -> Result<(), ConnectorError> {
        self.state().await?.begin_fenced(dir, fencing).await?;
        if !path.ends_with('/')
            && let Err(e) = self.client.delete(path).await
        {
            self.state().await?.rollback().await;
            return Err(e);
        }
        let st = self.state().await?;
        let step = st.remove_entry(dir, path).await;
        st.end(step).await
    }
}
