//! `_bulk` requests: operations with external versions, cut into requests of at most the
//! endpoint's `bulk_bytes`, and each item's answer judged on its own. Landed, already
//! newer (409) and deleting what is gone (404) count as applied; a pushed-back item
//! (429, a rejected execution, a busy shard) is sent again after a backoff; a document
//! the index refuses (a mapping error) stops the batch naming index, document and
//! field; a write block stops it naming the block.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

use super::http::{Body, Http, HttpError};
use crate::connector::{ApplyFailure, ConnectorError, ErrorKind};
use crate::model::{Position, TableName};

/// Where an operation came from, for a refusal's message.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The source transaction's position (or the snapshot's checkpoint position).
    pub position: Position,
    /// The (target) table.
    pub table: TableName,
    /// The key, rendered.
    pub key: String,
    /// Inside a source transaction applied in parts.
    pub in_parts: bool,
}

/// One document operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Index.
    pub index: String,
    /// Document id.
    pub id: String,
    /// External version.
    pub version: i64,
    /// The document; `None` deletes it.
    pub doc: Option<Json>,
    /// Where it came from.
    pub origin: Origin,
}

impl Op {
    /// The operation's NDJSON lines.
    fn lines(&self, out: &mut Vec<u8>) {
        let meta = json!({"_index": self.index, "_id": self.id, "version": self.version, "version_type": "external"});
        let action = if self.doc.is_some() { "index" } else { "delete" };
        out.extend_from_slice(json!({ action: meta }).to_string().as_bytes());
        out.push(b'\n');
        if let Some(d) = &self.doc {
            out.extend_from_slice(d.to_string().as_bytes());
            out.push(b'\n');
        }
    }
}

/// How one item ended.
enum Outcome {
    Applied,
    Again,
    Refused(String),
    Blocked(String),
}

/// Judges one item of a `_bulk` answer.
fn outcome(item: &Json, deleting: bool) -> Outcome {
    let body = item.as_object().and_then(|m| m.values().next()).cloned().unwrap_or(Json::Null);
    let status = body["status"].as_u64().unwrap_or(0);
    let err = &body["error"];
    let ty = err["type"].as_str().unwrap_or("");
    let reason = || {
        let mut r = format!("{ty}: {}", err["reason"].as_str().unwrap_or(""));
        if let Some(c) = err["caused_by"]["reason"].as_str() {
            r.push_str(&format!(" ({c})"));
        }
        r
    };
    match status {
        200..=299 | 409 => Outcome::Applied,
        404 if deleting => Outcome::Applied,
        429 | 502..=504 => Outcome::Again,
        _ if ty == "es_rejected_execution_exception" || ty == "rejected_execution_exception" => Outcome::Again,
        403 | 423 if ty.contains("block") || reason().contains("blocked by") => Outcome::Blocked(reason()),
        _ => Outcome::Refused(reason()),
    }
}

/// The field a mapping error names (`failed to parse field [x]`, `introduction of [x]`).
fn field_of(reason: &str) -> Option<&str> {
    ["field [", "introduction of [", "mapper ["]
        .iter()
        .find_map(|p| reason.split_once(p))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(f, _)| f)
}

/// Sends every operation (in order, per request) until each is applied; `Ok(n)` applied.
pub async fn send_all(http: &Http, ops: &[Op]) -> Result<u64, ConnectorError> {
    let ep = http.ep();
    let mut pending: Vec<&Op> = ops.iter().collect();
    let mut attempt = 0u32;
    loop {
        let mut again = Vec::new();
        let mut start = 0;
        while start < pending.len() {
            let mut body = Vec::new();
            let mut end = start;
            while end < pending.len() {
                let before = body.len();
                pending[end].lines(&mut body);
                if body.len() > ep.bulk_bytes && end > start {
                    body.truncate(before);
                    break;
                }
                end += 1;
            }
            let part = &pending[start..end];
            start = end;
            let answer = match http.send(Method::POST, "/_bulk", Some(Body::Ndjson(body))).await {
                Ok((_, j)) => j,
                Err(e) if pushed_back(&e) => {
                    again.extend_from_slice(part);
                    continue;
                }
                Err(e) => return Err(http.error(format!("sending {} documents to _bulk", part.len()))(e)),
            };
            let items = answer["items"].as_array().cloned().unwrap_or_default();
            if items.len() != part.len() {
                return Err(ConnectorError::Stream {
                    endpoint: ep.name.clone(),
                    what: "reading a _bulk answer".into(),
                    source: format!("{} items answered for {} sent", items.len(), part.len()).into(),
                    kind: ErrorKind::Runtime,
                });
            }
            for (op, item) in part.iter().zip(&items) {
                match outcome(item, op.doc.is_none()) {
                    Outcome::Applied => {}
                    Outcome::Again => again.push(*op),
                    Outcome::Refused(reason) => return Err(refusal(http, op, &reason)),
                    Outcome::Blocked(reason) => {
                        return Err(ConnectorError::Setup {
                            endpoint: ep.name.clone(),
                            problem: format!("index {} refuses writes: {reason}", op.index),
                            fix: format!(
                                "lift the block (PUT /{}/_settings {{\"index.blocks.write\": false}}, or free disk space if the server set read_only_allow_delete), then `ferry run` again",
                                op.index
                            ),
                        });
                    }
                }
            }
        }
        if again.is_empty() {
            return Ok(ops.len() as u64);
        }
        attempt += 1;
        if attempt > ep.max_retries {
            return Err(ConnectorError::Stream {
                endpoint: ep.name.clone(),
                what: format!(
                    "indexing {} documents (first: index {}, document {})",
                    again.len(),
                    again[0].index,
                    again[0].id
                ),
                source: format!("the server pushed them back (429 or busy) {} times in a row", attempt).into(),
                kind: ErrorKind::Runtime,
            });
        }
        let wait = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5));
        tracing::info!(endpoint = %ep.name, documents = again.len(), attempt, wait_ms = wait.as_millis() as u64, "server pushed back documents; sending them again");
        tokio::time::sleep(wait).await;
        pending = again;
    }
}

/// A whole request the server pushed back (429, 503): sent again after the backoff.
fn pushed_back(e: &HttpError) -> bool {
    matches!(
        e.status(),
        Some(
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::BAD_GATEWAY
                | StatusCode::GATEWAY_TIMEOUT
        )
    )
}

/// The refusal of one document, naming index, document and field.
fn refusal(http: &Http, op: &Op, reason: &str) -> ConnectorError {
    let field = field_of(reason).map(|f| format!(", field {f}")).unwrap_or_default();
    ConnectorError::Apply(Box::new(ApplyFailure {
        endpoint: http.ep().name.clone(),
        position: op.origin.position.clone(),
        table: op.origin.table.clone(),
        key: op.origin.key.clone(),
        message: format!(
            "index {} refused document {}{field}: {reason} (fix the index's mapping to take it, or map the column elsewhere)",
            op.index, op.id
        ),
        in_parts: op.origin.in_parts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_judged_one_by_one() {
        let ok = json!({"index": {"status": 201}});
        let newer = json!({"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}});
        let gone = json!({"delete": {"status": 404}});
        let busy = json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}});
        let bad = json!({"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n] of type [long]"}}});
        let blocked = json!({"index": {"status": 403, "error": {"type": "cluster_block_exception", "reason": "index [x] blocked by: [FORBIDDEN/8/index write (api)];"}}});
        assert!(matches!(outcome(&ok, false), Outcome::Applied));
        assert!(matches!(outcome(&newer, false), Outcome::Applied));
        assert!(matches!(outcome(&gone, true), Outcome::Applied));
        assert!(matches!(outcome(&busy, false), Outcome::Again));
        assert!(matches!(outcome(&blocked, false), Outcome::Blocked(_)));
        match outcome(&bad, false) {
            Outcome::Refused(r) => assert_eq!(field_of(&r), Some("n")),
            _ => panic!("a mapping error is refused"),
        }
        assert_eq!(field_of("mapping set to strict, dynamic introduction of [zzz] within [_doc]"), Some("zzz"));
    }
}
