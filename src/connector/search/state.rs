//! ferry's documents in the `.ferry-checkpoints` index, one per direction and kind: the
//! checkpoint (position, snapshot state, version epoch and counter), the lease (taken
//! and renewed by compare-and-set on the document's `_seq_no`) and the mark a refused
//! batch leaves (the next start moves to a new version epoch). Lease expiry is judged by
//! ferry's clock: the server offers none ferry can compare against.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::STATE_INDEX;
use super::http::{Body, Http, segment};
use crate::connector::registry::parse_position;
use crate::connector::{Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, TableProgress};
use crate::model::now_micros;

/// The checkpoint document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    /// Last source position applied.
    pub position: Option<String>,
    /// Snapshot state per table.
    pub tables: BTreeMap<String, TableProgress>,
    /// The lease tenure that wrote it.
    pub fencing: Option<i64>,
    /// Version epoch.
    #[serde(default)]
    pub epoch: u64,
    /// Changes numbered in the epoch up to `position`.
    #[serde(default)]
    pub seq: u64,
}

/// A document of ferry's index with its compare-and-set handle.
struct Found {
    source: Json,
    cas: (u64, u64),
}

fn id(kind: &str, dir: &DirectionId) -> String {
    format!("{kind}:{}:{}", dir.task, dir.direction())
}

/// Creates ferry's index unless it exists (its fields are stored, not searched).
pub async fn ensure_index(http: &Http) -> Result<(), ConnectorError> {
    let path = format!("/{}", segment(STATE_INDEX));
    let (status, _) =
        http.send(Method::HEAD, &path, None).await.map_err(http.error(format!("looking for index {STATE_INDEX}")))?;
    if status != StatusCode::NOT_FOUND {
        return Ok(());
    }
    let body = json!({
        "settings": {"index": {"number_of_shards": 1, "hidden": true}},
        "mappings": {"dynamic": false, "properties": {"kind": {"type": "keyword"}}},
    });
    match http.send(Method::PUT, &path, Some(Body::Json(body))).await {
        Ok(_) => Ok(()),
        // Another process created it meanwhile.
        Err(e) if e.to_string().contains("resource_already_exists_exception") => Ok(()),
        Err(e) => Err(http.error(format!("creating index {STATE_INDEX}"))(e)),
    }
}

async fn get(http: &Http, doc: &str) -> Result<Option<Found>, ConnectorError> {
    let path = format!("/{}/_doc/{}", segment(STATE_INDEX), segment(doc));
    let (status, j) =
        http.send(Method::GET, &path, None).await.map_err(http.error(format!("reading {doc} from {STATE_INDEX}")))?;
    if status == StatusCode::NOT_FOUND || j["found"] != Json::Bool(true) {
        return Ok(None);
    }
    let cas = (j["_seq_no"].as_u64().unwrap_or(0), j["_primary_term"].as_u64().unwrap_or(1));
    Ok(Some(Found { source: j["_source"].clone(), cas }))
}

/// Writes a document; with `cas`, only over that version of it (`None` inside: only if
/// absent). `Ok(false)` when someone else wrote first.
async fn put(http: &Http, doc: &str, body: Json, cas: Option<Option<(u64, u64)>>) -> Result<bool, ConnectorError> {
    let query = match cas {
        None => String::new(),
        Some(None) => "?op_type=create".into(),
        Some(Some((seq, term))) => format!("?if_seq_no={seq}&if_primary_term={term}"),
    };
    let path = format!("/{}/_doc/{}{query}", segment(STATE_INDEX), segment(doc));
    let (status, _) = http
        .send(Method::PUT, &path, Some(Body::Json(body)))
        .await
        .map_err(http.error(format!("writing {doc} to {STATE_INDEX}")))?;
    Ok(status != StatusCode::CONFLICT)
}

/// The checkpoint document of a direction, if any.
pub async fn read_stored(http: &Http, dir: &DirectionId) -> Result<Option<Stored>, ConnectorError> {
    let Some(found) = get(http, &id("checkpoint", dir)).await? else { return Ok(None) };
    serde_json::from_value(found.source).map(Some).map_err(|e| ConnectorError::Setup {
        endpoint: http.ep().name.clone(),
        problem: format!("the checkpoint of task {dir} in index {STATE_INDEX} is unreadable: {e}"),
        fix: "it was not written by ferry; delete the document (or the index) and copy the task anew".into(),
    })
}

/// The checkpoint of a stored document.
pub fn checkpoint_of(http: &Http, dir: &DirectionId, s: &Stored) -> Result<Checkpoint, ConnectorError> {
    let position = match &s.position {
        Some(text) => Some(parse_position(text).map_err(|e| ConnectorError::Setup {
            endpoint: http.ep().name.clone(),
            problem: format!("the checkpoint of task {dir}: {e}"),
            fix: "it was written by a newer ferry or not by ferry; use that release or copy the task anew".into(),
        })?),
        None => None,
    };
    Ok(Checkpoint { position, tables: s.tables.clone() })
}

/// Records a checkpoint.
pub async fn write_stored(http: &Http, dir: &DirectionId, s: &Stored) -> Result<(), ConnectorError> {
    let mut body = serde_json::to_value(s).unwrap_or_default();
    body["kind"] = json!("checkpoint");
    put(http, &id("checkpoint", dir), body, None).await.map(|_| ())
}

/// Whether a refused batch left its mark (the next start takes a new epoch).
pub async fn refused(http: &Http, dir: &DirectionId) -> Result<bool, ConnectorError> {
    Ok(get(http, &id("refused", dir)).await?.is_some())
}

/// Leaves (`true`) or clears (`false`) the refusal mark.
pub async fn mark_refused(http: &Http, dir: &DirectionId, on: bool) -> Result<(), ConnectorError> {
    let doc = id("refused", dir);
    if on {
        return put(http, &doc, json!({"kind": "refused", "at_us": now_micros()}), None).await.map(|_| ());
    }
    let path = format!("/{}/_doc/{}", segment(STATE_INDEX), segment(&doc));
    http.send(Method::DELETE, &path, None).await.map_err(http.error(format!("deleting {doc} from {STATE_INDEX}")))?;
    Ok(())
}

/// The lease holder recorded, with its compare-and-set handle.
async fn read_lease(http: &Http, dir: &DirectionId) -> Result<Option<(LeaseHolder, (u64, u64))>, ConnectorError> {
    let Some(found) = get(http, &id("lease", dir)).await? else { return Ok(None) };
    let Ok(mut h) = serde_json::from_value::<LeaseHolder>(found.source["holder"].clone()) else {
        return Ok(None);
    };
    h.expired = h.expires_us < now_micros();
    Ok(Some((h, found.cas)))
}

/// The lease of a direction, read without writing.
pub async fn lease_of(http: &Http, dir: &DirectionId) -> Result<Option<LeaseHolder>, ConnectorError> {
    Ok(read_lease(http, dir).await?.map(|(h, _)| h))
}

/// Takes or renews the lease (see [`crate::connector::Sink::lease`]).
pub async fn claim(
    http: &Http,
    dir: &DirectionId,
    me: &LeaseHolder,
    ttl: Duration,
) -> Result<LeaseOutcome, ConnectorError> {
    let current = read_lease(http, dir).await?;
    let fencing = match me.claim(current.as_ref().map(|(h, _)| h)) {
        Ok(f) => f,
        Err(h) => return Ok(LeaseOutcome::HeldBy(h)),
    };
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
    let holder = LeaseHolder { expires_us: now_micros().saturating_add(ttl_us), expired: false, fencing, ..me.clone() };
    let body = json!({"kind": "lease", "holder": holder});
    if put(http, &id("lease", dir), body, Some(current.as_ref().map(|(_, cas)| *cas))).await? {
        return Ok(LeaseOutcome::Acquired { fencing });
    }
    // Someone wrote in between: whoever it is holds it now.
    Ok(match lease_of(http, dir).await? {
        Some(h) => LeaseOutcome::HeldBy(h),
        None => LeaseOutcome::HeldBy(LeaseHolder { pid: 0, ..me.clone() }),
    })
}

/// Whether `fencing` is still the lease's tenure; `Err` with who holds it otherwise.
pub async fn check(
    http: &Http,
    dir: &DirectionId,
    fencing: i64,
) -> Result<Result<(), Option<LeaseHolder>>, ConnectorError> {
    Ok(match lease_of(http, dir).await? {
        Some(h) if h.fencing == fencing && h.pid != 0 => Ok(()),
        other => Err(other),
    })
}

/// Gives the lease up if `me.fencing` still holds it.
pub async fn release(http: &Http, dir: &DirectionId, me: &LeaseHolder) -> Result<(), ConnectorError> {
    if let Some((h, cas)) = read_lease(http, dir).await?
        && h.fencing == me.fencing
        && h.pid != 0
    {
        let holder = LeaseHolder { pid: 0, expires_us: now_micros(), expired: true, ..me.clone() };
        put(http, &id("lease", dir), json!({"kind": "lease", "holder": holder}), Some(Some(cas))).await?;
    }
    Ok(())
}
