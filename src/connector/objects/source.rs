//! A bucket prefix read as a blob source. Buckets give no change hints here: the engine's
//! periodic listing against the manifest is how changes are found.

use super::client::{ListAhead, S3Client};
use crate::connector::ConnectorError;
use crate::connector::blob::{BlobHint, BlobMeta, BlobSource};

/// A bucket prefix as a source (`own`: a target read back, its ferry area left out).
pub struct S3Source {
    client: S3Client,
    own: bool,
    listing: ListAhead,
}

impl S3Source {
    /// A source over a client.
    pub fn new(client: S3Client, own: bool) -> S3Source {
        S3Source { client, own, listing: ListAhead::default() }
    }
}

impl BlobSource for S3Source {
    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        self.listing.list(&self.client, globs, after, limit, self.own).await
    }
    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        self.client.head(path).await
    }
    async fn hints(&mut self) -> Result<Vec<BlobHint>, ConnectorError> {
        Ok(Vec::new())
    }
    async fn read_range(&mut self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
        self.client.get_range(path, offset, len).await
    }
    fn etag_hashes_content(&self) -> bool {
        true
    }
}
