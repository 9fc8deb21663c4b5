//! The S3 requests ferry makes, signed by `rusty-s3` (presigned URLs) and sent by
//! [`Http`] (hyper, see its module for why not reqwest); every error names the bucket and key, and says whether it calls for a
//! human (a missing bucket, refused credentials) or a retry.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use reqwest::Url;
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::http::{Http, Response};
use super::{OWN_PREFIX, bare_etag, parse_http_date, parse_rfc3339};
use crate::connector::blob::{BlobKind, BlobMeta, MIN_PART, matches, matches_all};
use crate::connector::endpoint::Endpoint;
use crate::connector::{ConnectorError, ErrorKind};

/// How long a signed URL stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// A bucket and prefix of one endpoint, with its credentials.
#[derive(Clone)]
pub struct S3Client {
    /// Endpoint name.
    pub endpoint: String,
    bucket: Arc<Bucket>,
    creds: Arc<Credentials>,
    /// The key prefix (`""` or ending with `/`).
    pub prefix: String,
    http: Http,
    /// `s3://bucket/prefix` for messages.
    pub shown: String,
    /// The state file, when the URL names one.
    pub state: Option<String>,
    /// Objects this big or bigger are written as multipart uploads (`upload_cutoff=`;
    /// never below [`MIN_PART`]).
    pub upload_cutoff: u64,
}

/// Objects under this size go in one PUT by default: AWS's own guidance for when a
/// multipart upload pays. One PUT gives the object a plain MD5 ETag (any tool can check
/// it against a file) and spares a store that joins the parts into one file at
/// completion a second write of the whole object; a crash re-sends it whole.
pub const UPLOAD_CUTOFF: u64 = 100 << 20;

/// The parts of an `s3://` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Url {
    /// Bucket.
    pub bucket: String,
    /// Prefix (`""` or ending with `/`).
    pub prefix: String,
    /// Query parameters.
    pub params: Vec<(String, String)>,
}

impl S3Url {
    /// Reads `s3://bucket/prefix?k=v&…`.
    pub fn parse(text: &str) -> Result<S3Url, String> {
        let rest = text.strip_prefix("s3://").ok_or("an s3 URL starts with s3://")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err("the URL names no bucket".into());
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let params = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Ok(S3Url { bucket: bucket.to_string(), prefix, params })
    }

    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The URL's `upload_cutoff=`, else [`UPLOAD_CUTOFF`].
fn upload_cutoff(url: &S3Url, ep: &Endpoint) -> Result<u64, ConnectorError> {
    let Some(v) = url.param("upload_cutoff") else { return Ok(UPLOAD_CUTOFF) };
    crate::config::parse_size(v).filter(|&n| n >= MIN_PART).ok_or_else(|| {
        setup(
            &ep.name,
            format!("upload_cutoff={v} in {} is not a size of at least 8 MiB", ep.url),
            "write upload_cutoff=SIZE, e.g. upload_cutoff=200MiB (multipart parts are at least 8 MiB)",
        )
    })
}

fn setup(endpoint: &str, problem: String, fix: &str) -> ConnectorError {
    ConnectorError::Setup { endpoint: endpoint.to_string(), problem, fix: fix.to_string() }
}

impl S3Client {
    /// A client of an endpoint; credentials come from the environment (or the
    /// endpoint's password for the secret key).
    pub fn new(ep: &Endpoint) -> Result<S3Client, ConnectorError> {
        let url = S3Url::parse(ep.url.secret_text()).map_err(|p| {
            setup(&ep.name, format!("url {}: {p}", ep.url), "write s3://BUCKET/PREFIX?endpoint=URL&region=REGION")
        })?;
        let region = url.param("region").unwrap_or("us-east-1").to_string();
        let (base, style) = match url.param("endpoint") {
            Some(e) => (e.to_string(), UrlStyle::Path),
            None => (format!("https://s3.{region}.amazonaws.com"), UrlStyle::VirtualHost),
        };
        let base: Url = base.parse().map_err(|e| {
            setup(
                &ep.name,
                format!("endpoint {base:?} in {} is not a URL: {e}", ep.url),
                "write endpoint=http://HOST:PORT",
            )
        })?;
        let bucket = Bucket::new(base, style, url.bucket.clone(), region).map_err(|e| {
            setup(
                &ep.name,
                format!("bucket {:?} at that endpoint: {e}", url.bucket),
                "check the bucket name and endpoint",
            )
        })?;
        let upload_cutoff = upload_cutoff(&url, ep)?;
        let key_var = url.param("access_key_env").unwrap_or("AWS_ACCESS_KEY_ID").to_string();
        let secret_var = url.param("secret_key_env").unwrap_or("AWS_SECRET_ACCESS_KEY").to_string();
        let fix = format!(
            "export {key_var} and {secret_var} (or name other variables with access_key_env= and secret_key_env= in the URL)"
        );
        let key = std::env::var(&key_var)
            .map_err(|_| setup(&ep.name, format!("no access key: {key_var} is not set"), &fix))?;
        let secret = match &ep.password {
            Some(p) => p.expose().to_string(),
            None => std::env::var(&secret_var)
                .map_err(|_| setup(&ep.name, format!("no secret key: {secret_var} is not set"), &fix))?,
        };
        crate::client::install_crypto_provider();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&ep.name, format!("TLS cannot be set up: {e}"), "report this as a bug"))?
            .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
            .with_no_client_auth();
        let http = Http::new(tls);
        Ok(S3Client {
            endpoint: ep.name.clone(),
            shown: format!("s3://{}/{}", url.bucket, url.prefix),
            bucket: Arc::new(bucket),
            creds: Arc::new(Credentials::new(key, secret)),
            state: url.param("state").map(str::to_string),
            upload_cutoff,
            prefix: url.prefix,
            http,
        })
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// An error of a request about `path`, from the HTTP status and S3 error code.
    fn fail(&self, what: &str, path: &str, status: Option<StatusCode>, detail: String) -> ConnectorError {
        let (code, kind, fix) = classify(status.map(|s| s.as_u16()), &detail, self.bucket.name());
        let message = match status {
            Some(s) if code.is_empty() => format!("HTTP {s}: {}", detail.chars().take(200).collect::<String>()),
            Some(s) => format!("HTTP {s}: {code}"),
            None => detail,
        };
        ConnectorError::Blob {
            endpoint: self.endpoint.clone(),
            what: format!("{what} (bucket {:?})", self.bucket.name()).into(),
            path: path.to_string(),
            source: Box::new(std::io::Error::other(message)),
            kind,
            fix: Some(fix.into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        what: &str,
        path: &str,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Vec<u8>,
        ok_missing: bool,
    ) -> Result<Option<Response>, ConnectorError> {
        let resp =
            self.http.send(method, url.as_str(), headers, body).await.map_err(|e| self.fail(what, path, None, e))?;
        let status = resp.status;
        if status.is_success() {
            return Ok(Some(resp));
        }
        let body = resp.text();
        if ok_missing && status == StatusCode::NOT_FOUND && !body.contains("NoSuchBucket") {
            return Ok(None);
        }
        Err(self.fail(what, path, Some(status), body))
    }

    /// The most keys one listing request asks for. AWS, MinIO and most stores answer at
    /// most 1,000 whatever is asked (the loop below then follows the continuation); a
    /// store that answers more (s3s-fs walks the whole bucket for every request) is
    /// walked once per this many keys instead of once per 1,000.
    const MAX_PAGE: usize = 50_000;
    /// The page size most stores cap a listing answer at.
    const COMMON_CAP: usize = 1000;

    /// Whether the bucket answers with these credentials (a one-key listing: unlike
    /// HEAD, its error names the cause). It lists ferry's own prefix under the
    /// endpoint's, one level deep: a store that walks the bucket for a listing (s3s-fs)
    /// then reads only the folders on that prefix's path, and a policy that allows
    /// listing the endpoint's prefix allows it.
    pub async fn check_bucket(&self) -> Result<(), ConnectorError> {
        let mut action = self.bucket.list_objects_v2(Some(&self.creds));
        action.with_max_keys(1);
        action.with_prefix(self.key(OWN_PREFIX));
        action.with_delimiter("/");
        let url = action.sign(SIGNED_FOR);
        self.send("cannot open", "", Method::GET, url, &[], Vec::new(), false).await.map(|_| ())
    }

    /// Up to `limit` objects after `after` that match the globs, in key order;
    /// `own`: a target's listing (no ferry area, no folder markers).
    pub async fn list(
        &self,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
        own: bool,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        ListAhead::default().list(self, globs, after, limit, own).await
    }

    /// One listing request from the key after `start`: the matching objects and, when
    /// the listing goes on, the last key the answer held (where the next request starts).
    async fn list_request(
        &self,
        globs: &[String],
        start: Option<&str>,
        shown_after: &str,
        own: bool,
    ) -> Result<(Vec<BlobMeta>, Option<String>), ConnectorError> {
        let all = matches_all(globs);
        let mut action = self.bucket.list_objects_v2(Some(&self.creds));
        if !self.prefix.is_empty() {
            action.with_prefix(self.prefix.as_str());
        }
        if let Some(s) = start {
            action.with_start_after(s);
        }
        action.with_max_keys(Self::MAX_PAGE);
        let url = action.sign(SIGNED_FOR);
        let resp = self.send("cannot list", shown_after, Method::GET, url, &[], Vec::new(), false).await?;
        let text = resp.map(|r| r.text()).unwrap_or_default();
        let parsed = ListObjectsV2::parse_response(&text)
            .map_err(|e| self.fail("cannot read the listing of", "", None, e.to_string()))?;
        let n = parsed.contents.len();
        let mut last = None;
        let mut out = Vec::with_capacity(n);
        for c in parsed.contents {
            last = Some(c.key.clone());
            let Some(path) = c.key.strip_prefix(self.prefix.as_str()) else { continue };
            if path.is_empty() || (own && path.starts_with(OWN_PREFIX)) {
                continue;
            }
            let mtime_ns = c.last_modified.as_deref().and_then(parse_rfc3339).unwrap_or(0);
            let meta = if path.ends_with('/') {
                if own || !all {
                    continue;
                }
                BlobMeta { kind: BlobKind::Dir, ..BlobMeta::file(path, 0, mtime_ns) }
            } else {
                if !matches(globs, path) {
                    continue;
                }
                BlobMeta {
                    etag: c.etag.as_deref().map(bare_etag),
                    ..BlobMeta::file(path, c.size.unwrap_or(0), mtime_ns)
                }
            };
            out.push(meta);
        }
        // A store that caps its answers below what was asked says so by a continuation
        // token, or at least by the page size it answers with (`MaxKeys`); one that
        // says neither is asked again after a page of 1,000 (the common cap), so a
        // truncated answer is never taken for the end of the bucket.
        let cap = parsed.max_keys.map_or(Self::COMMON_CAP, usize::from);
        let more = n > 0 && (parsed.next_continuation_token.is_some() || n >= cap.min(Self::MAX_PAGE));
        Ok((out, if more { last } else { None }))
    }

    /// One object's metadata.
    pub async fn head(&self, path: &str) -> Result<Option<BlobMeta>, ConnectorError> {
        if path.is_empty() || path.ends_with('/') {
            return Ok(None);
        }
        let key = self.key(path);
        let url = self.bucket.head_object(Some(&self.creds), &key).sign(SIGNED_FOR);
        let Some(resp) = self.send("cannot stat", path, Method::HEAD, url, &[], Vec::new(), true).await? else {
            return Ok(None);
        };
        let get = |n: &str| resp.header(n).map(str::to_string);
        let size = get("content-length").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mtime_ns = get("last-modified").as_deref().and_then(parse_http_date).unwrap_or(0);
        Ok(Some(BlobMeta { etag: get("etag").as_deref().map(bare_etag), ..BlobMeta::file(path, size, mtime_ns) }))
    }

    /// Bytes `offset..offset+len` of an object.
    pub async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = self.key(path);
        let url = self.bucket.get_object(Some(&self.creds), &key).sign(SIGNED_FOR);
        let range = [("range", format!("bytes={}-{}", offset, offset + len - 1))];
        let resp = self.http.send(Method::GET, url.as_str(), &range, Vec::new()).await;
        let resp = resp.map_err(|e| self.fail("cannot read", path, None, e))?;
        match resp.status {
            s if s.is_success() => Ok(resp.body.to_vec()),
            // Asked from past its end: it became shorter since it was listed.
            StatusCode::RANGE_NOT_SATISFIABLE => Ok(Vec::new()),
            StatusCode::NOT_FOUND if !resp.text().contains("NoSuchBucket") => {
                Err(self.fail("cannot read", path, Some(s404()), "gone since it was listed".into()))
            }
            s => Err(self.fail("cannot read", path, Some(s), resp.text())),
        }
    }

    /// Writes a whole object; its ETag.
    pub async fn put(&self, path: &str, data: Vec<u8>) -> Result<String, ConnectorError> {
        let key = self.key(path);
        let url = self.bucket.put_object(Some(&self.creds), &key).sign(SIGNED_FOR);
        let resp = self.send("cannot write", path, Method::PUT, url, &[], data, false).await?;
        Ok(resp.and_then(|r| r.header("etag").map(bare_etag)).unwrap_or_default())
    }

    /// Starts a multipart upload; its id.
    pub async fn create_multipart(&self, path: &str) -> Result<String, ConnectorError> {
        let key = self.key(path);
        let url = self.bucket.create_multipart_upload(Some(&self.creds), &key).sign(SIGNED_FOR);
        let resp = self.send("cannot start an upload of", path, Method::POST, url, &[], Vec::new(), false).await?;
        let text = resp.map(|r| r.text()).unwrap_or_default();
        let parsed = rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map_err(|e| self.fail("cannot start an upload of", path, None, e.to_string()))?;
        Ok(parsed.upload_id().to_string())
    }

    /// Uploads part `n` (from 1).
    pub async fn upload_part(&self, path: &str, id: &str, n: u16, data: Vec<u8>) -> Result<String, ConnectorError> {
        let key = self.key(path);
        let url = self.bucket.upload_part(Some(&self.creds), &key, n, id).sign(SIGNED_FOR);
        let resp = self.send("cannot upload a part of", path, Method::PUT, url, &[], data, false).await?;
        Ok(resp.and_then(|r| r.header("etag").map(bare_etag)).unwrap_or_default())
    }

    /// The parts uploaded so far (number, size, ETag); `None` when the upload is gone.
    pub async fn list_parts(&self, path: &str, id: &str) -> Result<Option<Vec<(u16, u64, String)>>, ConnectorError> {
        let key = self.key(path);
        let mut out = Vec::new();
        let mut marker: Option<u16> = None;
        loop {
            let mut action = self.bucket.list_parts(Some(&self.creds), &key, id);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = action.sign(SIGNED_FOR);
            let Some(resp) =
                self.send("cannot list the parts of", path, Method::GET, url, &[], Vec::new(), true).await?
            else {
                return Ok(None);
            };
            let text = resp.text();
            // Parsed by hand: stores name the root element differently (moto:
            // ListPartsResponse, AWS: ListPartsResult).
            for part in text.split("<Part>").skip(1) {
                let part = part.split("</Part>").next().unwrap_or("");
                let n = tag(part, "PartNumber").and_then(|v| v.parse::<u16>().ok());
                let size = tag(part, "Size").and_then(|v| v.parse::<u64>().ok());
                if let (Some(n), Some(size)) = (n, size) {
                    let etag = tag(part, "ETag").map(bare_etag).unwrap_or_default();
                    out.push((n, size, etag));
                }
            }
            let truncated = tag(&text, "IsTruncated").is_some_and(|v| v == "true");
            match tag(&text, "NextPartNumberMarker").and_then(|v| v.parse::<u16>().ok()) {
                Some(m) if truncated => marker = Some(m),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// Completes a multipart upload from its parts' ETags; the object's ETag.
    pub async fn complete(&self, path: &str, id: &str, etags: &[String]) -> Result<String, ConnectorError> {
        let key = self.key(path);
        let action =
            self.bucket.complete_multipart_upload(Some(&self.creds), &key, id, etags.iter().map(String::as_str));
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let resp =
            self.send("cannot complete the upload of", path, Method::POST, url, &[], body.into_bytes(), false).await?;
        let text = resp.map(|r| r.text()).unwrap_or_default();
        // Some stores answer 200 with an error inside.
        if text.contains("<Error>") {
            return Err(self.fail("cannot complete the upload of", path, Some(StatusCode::OK), text));
        }
        Ok(text.split("<ETag>").nth(1).and_then(|s| s.split("</ETag>").next()).map(bare_etag).unwrap_or_default())
    }

    /// Drops a multipart upload (gone already is fine).
    pub async fn abort(&self, path: &str, id: &str) -> Result<(), ConnectorError> {
        let key = self.key(path);
        let url = self.bucket.abort_multipart_upload(Some(&self.creds), &key, id).sign(SIGNED_FOR);
        self.send("cannot drop the upload of", path, Method::DELETE, url, &[], Vec::new(), true).await?;
        Ok(())
    }

    /// Deletes an object (gone already is fine).
    pub async fn delete(&self, path: &str) -> Result<(), ConnectorError> {
        let key = self.key(path);
        let url = self.bucket.delete_object(Some(&self.creds), &key).sign(SIGNED_FOR);
        self.send("cannot delete", path, Method::DELETE, url, &[], Vec::new(), true).await?;
        Ok(())
    }
}

fn s404() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// The text of the first `<name>…</name>` in an XML fragment.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim())
}

/// What an S3 error calls for, by its HTTP status and error code: the code (if any), the
/// kind, and the fix.
pub fn classify(status: Option<u16>, body: &str, bucket: &str) -> (String, ErrorKind, String) {
    let code = tag(body, "Code").unwrap_or("").to_string();
    let (kind, fix) = match (status, code.as_str()) {
        (_, "NoSuchBucket") => {
            (ErrorKind::Setup, format!("create bucket {bucket:?} (or correct the URL); ferry does not create buckets"))
        }
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") | (Some(403), _) => (
            ErrorKind::Setup,
            "check the access key and secret key (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and that they may read and write this bucket".into(),
        ),
        (Some(400 | 405 | 411 | 413 | 501), _) => (ErrorKind::Setup, "check the endpoint and region in the URL".into()),
        _ => (ErrorKind::Runtime, "ferry retries; check the endpoint if this persists".into()),
    };
    (code, kind, fix)
}

/// A listing read ahead: one request asks for [`S3Client::MAX_PAGE`] keys and what
/// the caller's page did not take is kept for the call that continues after it. A
/// store that walks the whole bucket per request (s3s-fs: ~1.2 s at 20,000 objects) is
/// then walked once per 50,000 keys, not once per engine page of 1,000. Only a call
/// that continues the last one (same globs, `after` = the last path returned) is
/// served from what was kept; any other call (a new pass starts with none) asks the
/// store again, so a pass never sees a listing older than its own start.
#[derive(Default)]
pub struct ListAhead {
    /// The globs and `own` of the kept listing.
    of: Option<(Vec<String>, bool)>,
    /// The last path handed out.
    last: Option<String>,
    /// Matching objects received and not yet handed out.
    kept: std::collections::VecDeque<BlobMeta>,
    /// Where the next request starts: after `Some(key)`, or from the start with
    /// `Some(None)`; `None`: the listing is complete.
    next: Option<Option<String>>,
}

impl ListAhead {
    /// Up to `limit` objects after `after` that match the globs, in key order.
    pub async fn list(
        &mut self,
        client: &S3Client,
        globs: &[String],
        after: Option<&str>,
        limit: usize,
        own: bool,
    ) -> Result<Vec<BlobMeta>, ConnectorError> {
        self.begin(globs, own, after, after.map(|a| client.key(a)));
        let mut out = Vec::new();
        while let Some(from) = self.pour(&mut out, limit) {
            match client.list_request(globs, from.as_deref(), after.unwrap_or(""), own).await {
                Ok((page, next)) => self.fill(page, next),
                Err(e) => {
                    // Nothing half-kept: the retry asks anew.
                    self.of = None;
                    return Err(e);
                }
            }
        }
        self.end(&out);
        Ok(out)
    }

    /// Starts a call: what is kept serves only a call that continues the last one.
    fn begin(&mut self, globs: &[String], own: bool, after: Option<&str>, start: Option<String>) {
        let continues = after.is_some()
            && self.last.as_deref() == after
            && self.of.as_ref().is_some_and(|(g, o)| g.as_slice() == globs && *o == own);
        if !continues {
            self.of = Some((globs.to_vec(), own));
            self.kept.clear();
            self.next = Some(start);
        }
        self.last = None;
    }

    /// Moves kept objects into `out` up to `limit`; where the next request must start
    /// when more are needed and the listing goes on.
    fn pour(&mut self, out: &mut Vec<BlobMeta>, limit: usize) -> Option<Option<String>> {
        let room = limit.max(1).saturating_sub(out.len());
        out.extend(self.kept.drain(..room.min(self.kept.len())));
        if out.len() >= limit.max(1) { None } else { self.next.take() }
    }

    /// Keeps a request's answer and where the listing goes on (`None`: it is complete).
    fn fill(&mut self, page: Vec<BlobMeta>, next: Option<String>) {
        self.kept.extend(page);
        self.next = next.map(Some);
    }

    /// Ends a call that handed out `out`.
    fn end(&mut self, out: &[BlobMeta]) {
        self.last = out.last().map(|m| m.path.clone());
        if self.last.is_none() {
            self.of = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_cutoff_is_read_as_a_size_and_one_below_a_part_is_refused_with_the_fix() {
        let cutoff = |text: &str| {
            let ep = Endpoint {
                name: "s".into(),
                site: crate::model::SiteId::new("a"),
                url: crate::connector::endpoint::EndpointUrl::new(text, "/"),
                password: None,
                ssh: Default::default(),
            };
            upload_cutoff(&S3Url::parse(text).expect("url"), &ep)
        };
        assert_eq!(cutoff("s3://b/p?endpoint=http://127.0.0.1:1").expect("default"), UPLOAD_CUTOFF);
        assert_eq!(cutoff("s3://b/p?upload_cutoff=16MiB").expect("given"), 16 << 20);
        let text = cutoff("s3://b/p?upload_cutoff=1MiB").expect_err("under a part").to_string();
        assert!(text.contains("upload_cutoff=1MiB") && text.contains("upload_cutoff=200MiB"), "{text}");
    }

    #[test]
    fn refused_keys_and_missing_buckets_need_a_human_and_say_why() {
        let body = "<Error><Code>InvalidAccessKeyId</Code><Message>no</Message></Error>";
        let (code, kind, fix) = classify(Some(403), body, "b");
        assert_eq!((code.as_str(), kind), ("InvalidAccessKeyId", ErrorKind::Setup));
        assert!(fix.contains("access key"));
        let (_, kind, fix) = classify(Some(403), "", "b");
        assert_eq!(kind, ErrorKind::Setup, "{fix}");
        let (_, kind, fix) = classify(Some(404), "<Code>NoSuchBucket</Code>", "bk");
        assert_eq!(kind, ErrorKind::Setup);
        assert!(fix.contains("create bucket \"bk\""));
        assert_eq!(classify(Some(503), "<Code>SlowDown</Code>", "b").1, ErrorKind::Runtime);
        assert_eq!(classify(None, "connection refused", "b").1, ErrorKind::Runtime);
    }

    /// One call of `ahead` against a fake store of `keys` answering `per` keys a
    /// request, counting the requests in `asked`.
    fn call(
        ahead: &mut ListAhead,
        keys: &[String],
        per: usize,
        (globs, after, limit): (&[String], Option<&str>, usize),
        asked: &mut usize,
    ) -> Vec<BlobMeta> {
        ahead.begin(globs, true, after, after.map(str::to_string));
        let mut out = Vec::new();
        while let Some(from) = ahead.pour(&mut out, limit) {
            *asked += 1;
            let rest: Vec<&String> = keys.iter().filter(|k| from.as_ref().is_none_or(|f| *k > f)).take(per).collect();
            let next = (rest.len() == per).then(|| rest[per - 1].clone());
            ahead.fill(rest.into_iter().map(|k| BlobMeta::file(k, 1, 0)).collect(), next);
        }
        ahead.end(&out);
        out
    }

    /// Every page of a listing through `ahead`, pages of `limit`.
    fn walk(keys: &[String], per: usize, limit: usize, asked: &mut usize) -> Vec<String> {
        let (mut ahead, mut got, mut after) = (ListAhead::default(), Vec::new(), None::<String>);
        loop {
            let page = call(&mut ahead, keys, per, (&[], after.as_deref(), limit), asked);
            after = page.last().map(|m| m.path.clone());
            let n = page.len();
            got.extend(page.into_iter().map(|m| m.path));
            if n < limit {
                return got;
            }
        }
    }

    #[test]
    fn a_listing_read_ahead_hands_out_every_key_once_in_order_with_one_request_per_store_page() {
        let keys: Vec<String> = (0..2_345).map(|i| format!("k{i:05}")).collect();
        let mut asked = 0;
        assert_eq!(walk(&keys, 50_000, 1000, &mut asked), keys, "every key once, in order");
        assert_eq!(asked, 1, "one request served three pages");
        // A store that caps its answers (AWS: 1,000) is followed request by request.
        let mut asked = 0;
        assert_eq!(walk(&keys, 1000, 700, &mut asked), keys);
        assert_eq!(asked, 3);
        // A listing that is an exact multiple of the store's page ends with an empty ask.
        let mut asked = 0;
        assert_eq!(walk(&keys[..2000], 1000, 1000, &mut asked), keys[..2000].to_vec());
        assert_eq!(asked, 3);
    }

    #[test]
    fn a_listing_that_does_not_continue_the_last_one_asks_the_store_again() {
        let mut keys: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
        let (mut ahead, mut asked) = (ListAhead::default(), 0);
        assert_eq!(call(&mut ahead, &keys, 100, (&[], None, 10), &mut asked).len(), 10);
        // A key added behind the kept listing: a new pass (no `after`) sees it.
        keys.push("k99".into());
        assert_eq!(call(&mut ahead, &keys, 100, (&[], None, 100), &mut asked).len(), 31);
        assert_eq!(asked, 2);
        // Another position asks anew.
        let moved = call(&mut ahead, &keys, 100, (&[], Some("k05"), 3), &mut asked);
        assert_eq!((moved[0].path.as_str(), asked), ("k06", 3));
        // The continuation of that call is served from what was kept; other globs are not.
        let next = call(&mut ahead, &keys, 100, (&[], Some("k08"), 3), &mut asked);
        assert_eq!((next[0].path.as_str(), asked), ("k09", 3));
        let globs = vec!["*.x".to_string()];
        call(&mut ahead, &keys, 100, (&globs, Some("k11"), 3), &mut asked);
        assert_eq!(asked, 4);
    }
}
