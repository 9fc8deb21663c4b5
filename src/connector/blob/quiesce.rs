//! The cutover freeze of stores whose writers ferry cannot refuse: object storage and
//! SFTP. It is a watch, not a lock: the freeze lists the endpoint, waits the task's
//! `quiet_seconds`, lists it again, and holds only if nothing changed (same paths,
//! sizes, mtimes and ETags); a listing that changed fails the step, naming where, and
//! the cutover stops there. From then on the Drain step is the guard: it goes on only
//! after a full pass begun after the freeze (and `quiet_seconds` after the last change
//! it carried) found nothing to carry, and refuses while changes still appear.
//!
//! What it stops: nothing by itself. What it proves: no write landed in the listing
//! during the watch, and (through Drain) none after it until the target holds the
//! last one. What it cannot stop: a writer that goes on after the watch (Drain catches
//! its writes while it runs; a write after Drain, during Verify or Switch, is caught by
//! Verify if it lands before Verify reads that path, else it is lost to the cutover),
//! and a write that leaves the listing unchanged (an object rewritten with the same
//! size within the store's mtime resolution and the same ETag: the same content).
//!
//! Why not a lock. S3: a bucket policy denying `s3:PutObject`/`s3:DeleteObject` to
//! everyone but ferry would refuse writes on AWS, but the policy is written into the
//! source bucket, many S3-compatible servers ignore bucket policies (moto, the test
//! server, accepts and never evaluates them), and a bucket that already has a policy
//! would need it merged and restored byte for byte; a freeze that cannot be proven by a
//! probe is worse than a watch that says what it is. SFTP: `chmod a-w` over the tree
//! writes every mode into the source (and its ctime, which no thaw restores), does not
//! stop the files' owner (who may chmod back) or root (the usual SFTP login of
//! migrations), nor a file held open. Nothing is written into the source: the freeze
//! keeps its record in ferry's data folder.

use std::path::PathBuf;
use std::time::Duration;

use crate::connector::ConnectorError;
use crate::connector::endpoint::Endpoint;
use crate::connector::registry::{self, FreezeOutcome};
use crate::model::now_micros;

/// Paths per listing page; each page's fingerprint is kept, so two listings compare
/// page by page without holding every path.
const PAGE: usize = 1000;

/// `<ferry's data folder>/freeze/<hash of key>.<ext>`: where a freeze keeps its record
/// (outside the endpoint: nothing is written into a source).
pub fn own_file(key: &[u8], ext: &str) -> PathBuf {
    let id = blake3::hash(key).to_hex();
    super::state::data_dir().join("freeze").join(format!("{}.{ext}", &id.as_str()[..16]))
}

fn record(ep: &Endpoint) -> PathBuf {
    own_file(ep.url.secret_text().as_bytes(), "watch")
}

/// One listing: per page, its first path and the hash of its entries.
struct Listing {
    pages: Vec<(String, blake3::Hash)>,
    paths: u64,
}

async fn listing(ep: &Endpoint) -> Result<Listing, ConnectorError> {
    let mut source = registry::open_blob_source(ep, true).await?;
    let globs = vec!["**".to_string()];
    let mut after: Option<String> = None;
    let mut out = Listing { pages: Vec::new(), paths: 0 };
    loop {
        let page = source.list(&globs, after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { return Ok(out) };
        let mut h = blake3::Hasher::new();
        for m in &page {
            let line = format!(
                "{}\0{:?}\0{}\0{}\0{}\0{}\n",
                m.path,
                m.kind,
                m.size,
                m.mtime_ns,
                m.etag.as_deref().unwrap_or(""),
                m.link.as_deref().unwrap_or("")
            );
            h.update(line.as_bytes());
        }
        out.paths += page.len() as u64;
        out.pages.push((page[0].path.clone(), h.finalize()));
        after = Some(last.path.clone());
        if page.len() < PAGE {
            return Ok(out);
        }
    }
}

/// Where two listings first differ, in words; `None` when they are the same.
fn first_difference(a: &Listing, b: &Listing) -> Option<String> {
    if a.pages == b.pages {
        return None;
    }
    let i = a.pages.iter().zip(&b.pages).position(|(x, y)| x != y).unwrap_or(a.pages.len().min(b.pages.len()));
    let at = a.pages.get(i).or(b.pages.get(i)).map_or("the end".to_string(), |(p, _)| format!("{p:?}"));
    Some(format!("{} paths before, {} after; the first change at or after {at}", a.paths, b.paths))
}

/// Freezes by watching: the endpoint's listing must not change for `watch`. `store`
/// names the store in messages.
pub async fn freeze(ep: &Endpoint, store: &str, watch: Duration) -> Result<FreezeOutcome, ConnectorError> {
    let since = now_micros();
    let before = listing(ep).await?;
    tokio::time::sleep(watch).await;
    let after = listing(ep).await?;
    if let Some(diff) = first_difference(&before, &after) {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!(
                "the listing of {} changed while the freeze watched it for {}s ({diff}): a writer is still active, and ferry cannot refuse writes on {store} (the freeze is a watch, docs/files.md)",
                ep.url,
                watch.as_secs()
            ),
            fix: "stop the application's writers on this endpoint, then run the step again (`ferry cutover next`)"
                .into(),
        });
    }
    // A freeze run again keeps its first time: Drain waits for a pass begun after it.
    let path = record(ep);
    let since = frozen_at(ep).unwrap_or(since);
    let written = match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, since.to_string())),
        None => Ok(()),
    };
    written.map_err(|e| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("cannot record the freeze in {}: {e}", path.display()),
        fix: "let ferry write its data folder (~/.local/share/ferry)".into(),
    })?;
    let hash = blake3::hash(&after.pages.iter().flat_map(|(_, h)| *h.as_bytes()).collect::<Vec<u8>>()).to_hex();
    Ok(FreezeOutcome {
        count: 0,
        probe: Ok(Err(format!(
            "no write seen: the listing of {} paths was unchanged over {}s (fingerprint {}); {store} cannot refuse a write, so Drain keeps watching",
            after.paths,
            watch.as_secs(),
            &hash.as_str()[..16]
        ))),
    })
}

fn frozen_at(ep: &Endpoint) -> Option<i64> {
    std::fs::read_to_string(record(ep)).ok().map(|s| s.trim().parse().unwrap_or(0))
}

/// Lifts the freeze: forgets its record (idempotent).
pub fn unfreeze(ep: &Endpoint) -> Result<(), ConnectorError> {
    match std::fs::remove_file(record(ep)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("cannot remove the freeze record {}: {e}", record(ep).display()),
            fix: "remove that file by hand".into(),
        }),
        _ => Ok(()),
    }
}

/// Since when (µs) the endpoint is frozen, if it is.
pub fn frozen_since(ep: &Endpoint) -> Option<i64> {
    frozen_at(ep)
}
