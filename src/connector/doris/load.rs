//! One batch's loads: each table's changes as JSON lines (one line per key, its last
//! change: an upsert, or the key with the flavour's op field, `__DORIS_DELETE_SIGN__`
//! or StarRocks's `__op`, = 1), and one Stream Load sending them, judged by the status
//! the server answers with (the same for both). A label the server already
//! holds is a load that happened: success when it FINISHED and ferry recorded it
//! before (a replay), a wait while it still runs, and a refusal when ferry never
//! recorded it (the label was used for other data).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value as Json};

use super::Flavor;
use super::stream_load::{Http, transient};
use crate::connector::endpoint::path_segment as segment;
use crate::connector::{ApplyBatch, ApplyFailure, ConnectorError, ErrorKind, HEARTBEAT_TABLE, SIGNAL_TABLE};
use crate::model::json::value_json;
use crate::model::{Op, Position, Row, TableSchema, Value, key_text, timestamp_text};

/// How long a load that the server reports still running is waited for.
const RUNNING_WAIT: Duration = Duration::from_secs(120);

/// One table's part of a batch, ready to send.
#[derive(Debug, Clone)]
pub struct TableLoad {
    /// The Doris table.
    pub table: String,
    /// JSON lines.
    pub data: Vec<u8>,
}

/// Lines of one table, one per key in first-seen order.
#[derive(Default)]
struct Lines {
    order: Vec<String>,
    by_key: HashMap<String, Json>,
}

impl Lines {
    fn put(&mut self, key: String, line: Json) {
        if self.by_key.insert(key.clone(), line).is_none() {
            self.order.push(key);
        }
    }
}

/// A value as Doris reads it from JSON: as every JSON sink writes it
/// ([`value_json`]), except instants and date-times, as `YYYY-MM-DD HH:MM:SS.ffffff`
/// (UTC for instants), which Doris's DATETIME parses.
fn encode(v: &Value) -> Json {
    match v {
        Value::Timestamp(us) => {
            let t = timestamp_text(*us);
            Json::String(if t.contains('.') { t } else { format!("{t}.000000") })
        }
        Value::DateTime { year, month, day, hour, minute, second, micros } => {
            Json::String(format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}"))
        }
        other => value_json(other),
    }
}

/// A row as a line: every column by name, and the op field (0).
fn upsert(flavor: Flavor, table: &TableSchema, row: &Row) -> Json {
    let mut m = Map::new();
    for (c, v) in table.columns.iter().zip(row) {
        m.insert(c.name.clone(), encode(v));
    }
    m.insert(flavor.op_field().into(), Json::from(0));
    Json::Object(m)
}

/// A delete as a line: the key's columns (the whole before-image where the change has
/// one), and the op field set (1).
fn delete(flavor: Flavor, table: &TableSchema, key: &[Value], before: Option<&Row>) -> Json {
    let mut m = Map::new();
    match before {
        Some(row) => {
            for (c, v) in table.columns.iter().zip(row) {
                m.insert(c.name.clone(), encode(v));
            }
        }
        None => {
            for (&i, v) in table.primary_key.iter().zip(key) {
                m.insert(table.columns[i].name.clone(), encode(v));
            }
        }
    }
    m.insert(flavor.op_field().into(), Json::from(1));
    Json::Object(m)
}

/// The batch's loads, one per table (ferry's own tables left out), and the range of
/// source positions they cover (`first`, `last`): the transactions' positions, or for
/// a snapshot chunk its table, first and last key at the checkpoint's position.
pub fn build(flavor: Flavor, batch: &ApplyBatch) -> (Vec<TableLoad>, String, String) {
    let mut tables: Vec<(String, Lines)> = Vec::new();
    let mut slot: HashMap<String, usize> = HashMap::new();
    let mut lines_of = |name: &str, tables: &mut Vec<(String, Lines)>| -> usize {
        *slot.entry(name.to_string()).or_insert_with(|| {
            tables.push((name.to_string(), Lines::default()));
            tables.len() - 1
        })
    };
    for txn in &batch.txns {
        for c in &txn.changes {
            if c.table.name.name == HEARTBEAT_TABLE || c.table.name.name == SIGNAL_TABLE {
                continue;
            }
            let i = lines_of(&c.table.name.name, &mut tables);
            let lines = &mut tables[i].1;
            let new_key = c.new_key();
            if c.op == Op::Delete || (c.op == Op::Update && new_key != c.key) {
                lines.put(key_text(&c.key), delete(flavor, &c.table, &c.key, c.before.as_ref()));
            }
            if let Some(after) = &c.after {
                lines.put(key_text(&new_key), upsert(flavor, &c.table, after));
            }
        }
    }
    let mut range = match (batch.txns.first(), batch.txns.last()) {
        (Some(a), Some(b)) => (a.position.to_string(), b.position.to_string()),
        _ => (String::new(), String::new()),
    };
    if let Some(s) = &batch.snapshot {
        let i = lines_of(&s.table.name.name, &mut tables);
        for row in &s.rows {
            tables[i].1.put(key_text(&s.table.key_of(row)), upsert(flavor, &s.table, row));
        }
        let at = batch.checkpoint.position.as_ref().map(Position::to_string).unwrap_or_default();
        let key = |r: Option<&Row>| r.map(|r| key_text(&s.table.key_of(r))).unwrap_or_default();
        range.0.push_str(&format!("|snapshot {} at {at} from {}", s.table.name, key(s.rows.first())));
        range.1.push_str(&format!("|to {}", key(s.rows.last())));
    }
    let loads = tables
        .into_iter()
        .filter(|(_, l)| !l.order.is_empty())
        .map(|(table, l)| {
            let mut data = Vec::new();
            for k in &l.order {
                data.extend_from_slice(l.by_key[k].to_string().as_bytes());
                data.push(b'\n');
            }
            TableLoad { table, data }
        })
        .collect();
    (loads, range.0, range.1)
}

/// One load as recorded: its table, label and data.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The Doris table.
    pub table: String,
    /// The load's label.
    pub label: String,
    /// JSON lines.
    pub data: bytes::Bytes,
    /// The label was recorded by this call (ferry never sent it before).
    pub fresh: bool,
}

/// Where a refused load came from, for its message.
pub struct Origin<'a> {
    /// The batch's first source position.
    pub position: Option<&'a Position>,
    /// Inside a source transaction applied in parts.
    pub in_parts: bool,
}

/// Sends one load until the server took it (or had it already); retries what may pass
/// (no answer, 5xx, a load still running) with backoff up to the endpoint's
/// `max_retries`.
pub async fn send(http: &Http, load: &Recorded, origin: &Origin<'_>) -> Result<(), ConnectorError> {
    let ep = http.ep();
    let path = format!("/api/{}/{}/_stream_load", segment(&ep.db), segment(&load.table));
    let (body, columns) = match ep.flavor {
        Flavor::Doris => (load.data.clone(), String::new()),
        Flavor::StarRocks => starrocks_body(&load.data),
    };
    let mut headers = vec![
        ("label", load.label.as_str()),
        ("format", "json"),
        ("strict_mode", "true"),
        ("content-type", "application/json"),
    ];
    match ep.flavor {
        Flavor::Doris => headers.extend([("read_json_by_line", "true"), ("hidden_columns", Flavor::Doris.op_field())]),
        Flavor::StarRocks => headers.extend([("strip_outer_array", "true"), ("columns", columns.as_str())]),
    }
    let what = || format!("loading table {}.{} under label {}", ep.db, load.table, load.label);
    let mut attempt = 0u32;
    let started = tokio::time::Instant::now();
    loop {
        let answer = http.send(Method::PUT, &path, &headers, Some(body.clone())).await;
        let again = match answer {
            Ok((_, j)) => match judge(&j) {
                Answer::Loaded => return Ok(()),
                Answer::Exists(state) if is_finished(&state) => {
                    if load.fresh {
                        return Err(foreign(http, load, &state));
                    }
                    tracing::info!(endpoint = %ep.name, table = %load.table, label = %load.label, "the server had this load already (a replay): kept once");
                    return Ok(());
                }
                Answer::Exists(state) => {
                    if started.elapsed() > RUNNING_WAIT {
                        return Err(ConnectorError::Stream {
                            endpoint: ep.name.clone(),
                            what: what(),
                            source: format!(
                                "a load under this label is still {state} after {} s",
                                RUNNING_WAIT.as_secs()
                            )
                            .into(),
                            kind: ErrorKind::Runtime,
                        });
                    }
                    // The load of an earlier process is still running: wait for its end.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Answer::Refused(message) => return Err(refused(http, load, origin, &message)),
                Answer::Failed(message) => message,
            },
            Err(e) if transient(&e) => e.to_string(),
            Err(e) => return Err(http.error(what())(e)),
        };
        attempt += 1;
        if attempt > ep.max_retries {
            return Err(ConnectorError::Stream {
                endpoint: ep.name.clone(),
                what: what(),
                source: format!("the load failed {attempt} times in a row; the last time: {again}").into(),
                kind: ErrorKind::Runtime,
            });
        }
        let wait = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5));
        tracing::info!(endpoint = %ep.name, table = %load.table, label = %load.label, attempt, error = %again, "the load failed; sending it again under the same label");
        tokio::time::sleep(wait).await;
    }
}

/// A recorded load (JSON lines) as StarRocks takes it: one JSON array
/// (`strip_outer_array`), and the `columns` header naming every field of its lines,
/// `__op` among them, since StarRocks reads `__op` only when `columns` names it.
fn starrocks_body(lines: &[u8]) -> (bytes::Bytes, String) {
    let mut columns: Vec<String> = Vec::new();
    let mut body = Vec::with_capacity(lines.len() + 2);
    body.push(b'[');
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(line);
        // ferry wrote these lines itself, each an object; the union of their fields
        // (a delete without a before-image carries only the key).
        let fields = serde_json::from_slice::<Map<String, Json>>(line).unwrap_or_default();
        for k in fields.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    body.push(b']');
    let columns = columns.iter().map(|c| format!("`{}`", c.replace('`', "``"))).collect::<Vec<_>>().join(",");
    (body.into(), columns)
}

/// How a Stream Load ended, by its JSON status.
enum Answer {
    Loaded,
    /// "Label Already Exists", with the existing job's state.
    Exists(String),
    /// The data itself was refused (rows filtered, a value that does not fit).
    Refused(String),
    /// Anything else that failed (may pass).
    Failed(String),
}

fn judge(j: &Json) -> Answer {
    let status = j["Status"].as_str().unwrap_or("");
    let message = || {
        let mut m = j["Message"].as_str().or_else(|| j["msg"].as_str()).unwrap_or("").to_string();
        if let Some(url) = j["ErrorURL"].as_str().filter(|u| !u.is_empty()) {
            m.push_str(&format!(" (rows refused: {url})"));
        }
        m
    };
    match status {
        "Success" | "Publish Timeout" => Answer::Loaded,
        "Label Already Exists" => Answer::Exists(j["ExistingJobStatus"].as_str().unwrap_or("UNKNOWN").to_string()),
        "Fail" if j["NumberFilteredRows"].as_u64().unwrap_or(0) > 0 || message().contains("filtered") => {
            Answer::Refused(message())
        }
        "Fail" => Answer::Failed(message()),
        other => Answer::Failed(format!("status {other:?}: {}", j.to_string().chars().take(300).collect::<String>())),
    }
}

fn is_finished(state: &str) -> bool {
    matches!(state.to_ascii_uppercase().as_str(), "FINISHED" | "VISIBLE")
}

/// A label the server holds that ferry never recorded: it carried other data.
fn foreign(http: &Http, load: &Recorded, state: &str) -> ConnectorError {
    let ep = http.ep();
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "table {}.{}: label {} is already used on the server (its load is {state}) for data ferry did not record under it: a load with this label carried other data, and sending ferry's data under it would be dropped as a duplicate",
            ep.db, load.table, load.label
        ),
        fix: format!(
            "another task of the same name, or a copy of this task with its state file ({}) lost, loads into {}; give this task another name (labels derive from it), or remove the other writer and copy the task anew",
            ep.state.display(),
            ep.db
        ),
    }
}

fn refused(http: &Http, load: &Recorded, origin: &Origin<'_>, message: &str) -> ConnectorError {
    let ep = http.ep();
    ConnectorError::Apply(Box::new(ApplyFailure {
        endpoint: ep.name.clone(),
        position: origin.position.cloned().unwrap_or_else(|| Position::new(String::new(), Vec::new(), None)),
        table: crate::model::TableName { schema: Some(ep.db.clone()), name: load.table.clone() },
        key: format!("(rows of load {})", load.label),
        message: format!("{} refused rows of the load: {message}", ep.flavor.name()),
        in_parts: origin.in_parts,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stream_load_answers_are_judged_by_their_status() {
        assert!(matches!(judge(&json!({"Status": "Success"})), Answer::Loaded));
        assert!(matches!(judge(&json!({"Status": "Publish Timeout"})), Answer::Loaded));
        match judge(&json!({"Status": "Label Already Exists", "ExistingJobStatus": "RUNNING"})) {
            Answer::Exists(s) => assert!(!is_finished(&s)),
            _ => panic!("an existing label"),
        }
        let filtered = json!({"Status": "Fail", "Message": "too many filtered rows", "NumberFilteredRows": 2, "ErrorURL": "http://be/err"});
        assert!(matches!(judge(&filtered), Answer::Refused(m) if m.contains("http://be/err")));
        assert!(matches!(judge(&json!({"Status": "Fail", "Message": "tablet writer failed"})), Answer::Failed(_)));
    }

    #[test]
    fn starrocks_gets_one_array_and_the_columns_of_every_line() {
        let lines = b"{\"id\":1,\"v\":\"a\",\"__op\":0}\n{\"id\":2,\"__op\":1}\n";
        let (body, columns) = starrocks_body(lines);
        let rows: Json = serde_json::from_slice(&body).expect("one JSON array");
        assert_eq!(rows, json!([{"id": 1, "v": "a", "__op": 0}, {"id": 2, "__op": 1}]));
        // JSON fields are matched by name: the order of `columns` does not matter.
        let mut named: Vec<&str> = columns.split(',').collect();
        named.sort_unstable();
        assert_eq!(named, ["`__op`", "`id`", "`v`"]);
    }
}
