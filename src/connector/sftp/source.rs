//! A remote folder read over SFTP as a blob source: sorted listing, ranged reads. SFTP
//! has no change notification, so changes are found by the engine's periodic rescans.

use russh_sftp::client::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::link::{self, SftpLink};
use super::{SftpUrl, list, not_found, sftp_error};
use crate::connector::ConnectorError;
use crate::connector::blob::{BlobHint, BlobMeta, BlobSource};
use crate::connector::endpoint::Endpoint;

/// A remote folder as a source.
pub struct SftpSource {
    endpoint: String,
    url: SftpUrl,
    link: SftpLink,
    /// The file being read, and where the next sequential read starts.
    open: Option<(String, File, u64)>,
    /// A target read back (verify): its `.ferry/` folder is left out.
    skip_own: bool,
}

impl SftpSource {
    /// Logs in and checks that the folder is one; with `skip_own` (a target read back)
    /// its `.ferry/` folder is left out.
    pub async fn open(ep: &Endpoint, url: SftpUrl, skip_own: bool) -> Result<SftpSource, ConnectorError> {
        let link = link::connect(ep, &url).await?;
        match link.sftp.metadata(url.root.clone()).await {
            Ok(md) if list::kind_of(&md) == Some(crate::connector::blob::BlobKind::Dir) => {}
            Ok(_) => {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("{} on {} is not a folder", url.root, url.host),
                    fix: "point the sftp:// URL at a folder".into(),
                });
            }
            Err(e) => {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("cannot open folder {} on {}: {e}", url.root, url.host),
                    fix: "create the folder or correct the sftp:// URL, and let the SFTP user read it".into(),
                });
            }
        }
        Ok(SftpSource { endpoint: ep.name.clone(), url, link, open: None, skip_own })
    }
}

impl BlobSource for SftpSource {
    async fn list(
        &mut self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        list::list(&self.link.sftp, &self.url, globs, after, limit, self.skip_own)
            .await
            .map_err(|(path, e)| sftp_error(&self.endpoint, "cannot list", &path, e))
    }

    async fn stat(&mut self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        let full = self.url.join(path);
        let md = match self.link.sftp.symlink_metadata(full.clone()).await {
            Ok(md) => md,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(sftp_error(&self.endpoint, "cannot stat", path, e)),
        };
        let kind = list::kind_of(&md);
        let link = if kind == Some(crate::connector::blob::BlobKind::Link) {
            Some(
                self.link
                    .sftp
                    .read_link(full)
                    .await
                    .map_err(|e| sftp_error(&self.endpoint, "cannot read link", path, e))?,
            )
        } else {
            None
        };
        let rel = if kind == Some(crate::connector::blob::BlobKind::Dir) {
            format!("{}/", path.trim_end_matches('/'))
        } else {
            path.to_string()
        };
        Ok(list::blob_meta(&rel, &md, link))
    }

    async fn hints(&mut self) -> Result<Vec<BlobHint>, ConnectorError> {
        Ok(Vec::new())
    }

    async fn read_range(&mut self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
        let err = |e: std::io::Error| sftp_error(&self.endpoint, "cannot read", path, e.into());
        // A copy starts at 0: open anew then (the file may have been replaced).
        let reuse = matches!(&self.open, Some((p, _, _)) if p == path && offset > 0);
        if !reuse {
            let f = self
                .link
                .sftp
                .open(self.url.join(path))
                .await
                .map_err(|e| sftp_error(&self.endpoint, "cannot read", path, e))?;
            self.open = Some((path.to_string(), f, 0));
        }
        let Some((_, file, at)) = self.open.as_mut() else { return Ok(Vec::new()) };
        if *at != offset {
            file.seek(std::io::SeekFrom::Start(offset)).await.map_err(err)?;
        }
        let mut buf = Vec::with_capacity(len as usize);
        let got = (&mut *file).take(len).read_to_end(&mut buf).await;
        let got = got.map_err(|e| sftp_error(&self.endpoint, "cannot read", path, e.into()))?;
        *at = offset + got as u64;
        Ok(buf)
    }
}
