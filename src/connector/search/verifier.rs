//! A search index as the target side of a verification: a table's index is named by
//! the task's `index` template, its columns come from the mapping's `_meta.ferry`
//! (written when ferry created it), rows of a key range
//! are read with a range query sorted by the key fields (exact `keyword`/numeric
//! fields, so in byte order) and compared with the source's through the canonical
//! form. Repairs re-index: the repair statements are written with JSON literals in this
//! dialect and applied as index and delete operations without external versions (the
//! server then gives each a version above the document's, and the task's next change
//! of the document is above that).

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value as Json, json};

use super::document::{decode, encode, id_of};
use super::http::{Body, Http, segment};
use super::mapping::{self, Types};
use super::{SearchEndpoint, index_of};
use crate::connector::endpoint::Endpoint;
use crate::connector::typemap::TypeMap;
use crate::connector::verifier::{Dialect, Extent, Side};
use crate::connector::{ConnectorError, ErrorKind};
use crate::model::{Key, KeyRange, Row, TableName, TableSchema, Value};

/// Rows per search page.
const PAGE: usize = 5_000;

/// One search endpoint as a verified side.
pub struct SearchSide {
    http: Http,
    /// The task's index template.
    template: String,
    /// The index of each table described.
    indexes: HashMap<TableName, String>,
    /// Each described table's schema (from its index's mapping).
    schemas: HashMap<TableName, TableSchema>,
}

impl SearchSide {
    /// A side of `ep` whose tables sit in the indexes `template` names (no request made yet).
    pub fn open(ep: &Endpoint, template: String) -> Result<Self, ConnectorError> {
        let http = Http::new(&SearchEndpoint::of(ep)?)?;
        Ok(SearchSide { http, template, indexes: HashMap::new(), schemas: HashMap::new() })
    }

    fn index(&self, table: &TableSchema) -> Result<&str, ConnectorError> {
        self.indexes.get(&table.name).map(String::as_str).ok_or_else(|| ConnectorError::Setup {
            endpoint: self.http.ep().name.clone(),
            problem: format!("table {} was not described on this side", table.name),
            fix: "report this as a bug".into(),
        })
    }

    async fn search(&self, index: &str, body: Json) -> Result<Json, ConnectorError> {
        let path = format!("/{}/_search", segment(index));
        let (_, j) = self
            .http
            .send(Method::POST, &path, Some(Body::Json(body)))
            .await
            .map_err(self.http.error(format!("searching index {index}")))?;
        Ok(j)
    }

    /// A hit's source as a row of `table`.
    fn row(table: &TableSchema, source: &Json) -> Row {
        table.columns.iter().map(|c| decode(&Types.canonical(&c.decl_type), &source[&c.name])).collect()
    }

    /// Rows of a range in key order, at most `limit`, page by page.
    async fn range_rows(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        let index = self.index(table)?.to_string();
        let keys: Vec<&str> = table.key_columns();
        let sort: Vec<Json> = keys.iter().map(|k| json!({ *k: "asc" })).collect();
        let query = range_query(&keys, range);
        let mut out = Vec::new();
        let mut after: Option<Json> = None;
        loop {
            let size = limit.map_or(PAGE, |l| (l - out.len()).min(PAGE));
            if size == 0 {
                break;
            }
            let mut body = json!({"size": size, "sort": sort, "query": query, "track_total_hits": false});
            if let Some(a) = &after {
                body["search_after"] = a.clone();
            }
            let j = self.search(&index, body).await?;
            let hits = j["hits"]["hits"].as_array().cloned().unwrap_or_default();
            for h in &hits {
                out.push(Self::row(table, &h["_source"]));
            }
            match hits.last() {
                Some(h) if hits.len() == size => after = Some(h["sort"].clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Runs one repair statement.
    async fn repair(&self, statement: &str) -> Result<(), ConnectorError> {
        let bad = || ConnectorError::Setup {
            endpoint: self.http.ep().name.clone(),
            problem: format!("repair statement not understood: {}", statement.chars().take(200).collect::<String>()),
            fix: "apply repairs to a search index with `ferry verify --repair`, which writes them in this form".into(),
        };
        let (verb, rest) = statement.split_once(' ').ok_or_else(bad)?;
        let (doc, id, index) = match verb {
            "INSERT" => {
                let rest = rest.strip_prefix("INTO ").ok_or_else(bad)?;
                let (table, rest) = json_value(rest).ok_or_else(bad)?;
                let (cols, rest) = json_list(rest.trim_start()).ok_or_else(bad)?;
                let (vals, _) =
                    json_list(rest.trim_start().strip_prefix("VALUES ").ok_or_else(bad)?).ok_or_else(bad)?;
                let (index, schema) = self.by_name(&table).ok_or_else(bad)?;
                let mut m = Map::new();
                for (c, v) in cols.iter().zip(vals) {
                    m.insert(c.as_str().unwrap_or_default().to_string(), v);
                }
                let key: Vec<Json> =
                    schema.key_columns().iter().map(|k| m.get(*k).cloned().unwrap_or(Json::Null)).collect();
                (Some(Json::Object(m)), json_id(&key), index)
            }
            "DELETE" | "UPDATE" => {
                let rest = rest.strip_prefix("FROM ").unwrap_or(rest);
                let (table, rest) = json_value(rest).ok_or_else(bad)?;
                let (index, schema) = self.by_name(&table).ok_or_else(bad)?;
                let (sets, cond) = match rest.trim_start().strip_prefix("SET ") {
                    Some(s) => {
                        let (pairs, r) = pairs(s, ", ", " WHERE ").ok_or_else(bad)?;
                        (pairs, r)
                    }
                    None => (Vec::new(), rest.trim_start().strip_prefix("WHERE ").ok_or_else(bad)?),
                };
                let (conds, _) = pairs(cond, " AND ", "").ok_or_else(bad)?;
                let by: HashMap<String, Json> = conds.into_iter().collect();
                let key: Vec<Json> =
                    schema.key_columns().iter().map(|k| by.get(*k).cloned().unwrap_or(Json::Null)).collect();
                let id = json_id(&key);
                if verb == "DELETE" {
                    (None, id, index)
                } else {
                    let path = format!("/{}/_doc/{}", segment(&index), segment(&id));
                    let (_, cur) = self
                        .http
                        .send(Method::GET, &path, None)
                        .await
                        .map_err(self.http.error(format!("reading document {id} of index {index}")))?;
                    let mut m = cur["_source"].as_object().cloned().unwrap_or_default();
                    for (c, v) in sets {
                        m.insert(c, v);
                    }
                    (Some(Json::Object(m)), id, index)
                }
            }
            _ => return Err(bad()),
        };
        let path = format!("/{}/_doc/{}", segment(&index), segment(&id));
        let sent = match doc {
            Some(d) => self.http.send(Method::PUT, &path, Some(Body::Json(d))).await,
            None => self.http.send(Method::DELETE, &path, None).await,
        };
        sent.map(|_| ()).map_err(self.http.error(format!("repairing document {id} of index {index}")))
    }

    /// The index and schema of a table named as the repair statements name it.
    fn by_name(&self, name: &Json) -> Option<(String, TableSchema)> {
        let name = name.as_str()?;
        let (t, i) = self.indexes.iter().find(|(t, _)| t.to_string() == name)?;
        Some((i.clone(), self.schemas.get(t)?.clone()))
    }
}

/// `term` on a key field.
fn term(field: &str, v: &Value) -> Json {
    json!({"term": { field: encode(v) }})
}

/// The query of a key range: the lexicographic order of the key columns.
fn range_query(keys: &[&str], range: &KeyRange) -> Json {
    let bound = |key: &Key, op: &str, inclusive: bool| {
        let mut any = Vec::new();
        for i in 0..keys.len() {
            let mut must: Vec<Json> = (0..i).map(|j| term(keys[j], &key[j])).collect();
            must.push(json!({"range": { keys[i]: { op: encode(&key[i]) }}}));
            any.push(json!({"bool": {"filter": must}}));
        }
        if inclusive {
            any.push(json!({"bool": {"filter": (0..keys.len()).map(|j| term(keys[j], &key[j])).collect::<Vec<_>>()}}));
        }
        json!({"bool": {"should": any, "minimum_should_match": 1}})
    };
    let mut filter = Vec::new();
    if let Some(a) = &range.after {
        filter.push(bound(a, "gt", false));
    }
    if let Some(u) = &range.upto {
        filter.push(bound(u, "lt", true));
    }
    json!({"bool": {"filter": filter}})
}

/// The document id of a key given as document values.
fn json_id(key: &[Json]) -> String {
    let text = |j: &Json| match j {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    match key {
        [one] => text(one),
        many => Json::Array(many.to_vec()).to_string(),
    }
}

/// One JSON value at the start of `s`, and the rest.
fn json_value(s: &str) -> Option<(Json, &str)> {
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<Json>();
    let v = it.next()?.ok()?;
    Some((v, &s[it.byte_offset()..]))
}

/// `(v, v, …)` at the start of `s`, and the rest.
fn json_list(s: &str) -> Option<(Vec<Json>, &str)> {
    let mut rest = s.strip_prefix('(')?;
    let mut out = Vec::new();
    loop {
        let (v, r) = json_value(rest.trim_start())?;
        out.push(v);
        let r = r.trim_start();
        if let Some(r) = r.strip_prefix(')') {
            return Some((out, r));
        }
        rest = r.strip_prefix(',')?;
    }
}

/// `"col" = v<sep>"col" = v…` up to `end` (or the end), and the rest after `end`.
fn pairs<'a>(s: &'a str, sep: &str, end: &str) -> Option<(Vec<(String, Json)>, &'a str)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let (c, r) = json_value(rest)?;
        let (v, r) = json_value(r.trim_start().strip_prefix('=')?.trim_start())?;
        out.push((c.as_str()?.to_string(), v));
        if let Some(r) = r.strip_prefix(sep) {
            rest = r;
        } else if end.is_empty() {
            return Some((out, r));
        } else {
            return Some((out, r.strip_prefix(end)?));
        }
    }
}

/// Repair statements with JSON literals: table and column names as JSON strings,
/// values as their document encoding.
pub struct SearchDialect;

impl Dialect for SearchDialect {
    fn store(&self) -> &'static str {
        "Elasticsearch/OpenSearch"
    }
    fn quote_table(&self, t: &TableName) -> String {
        json!(t.to_string()).to_string()
    }
    fn quote_ident(&self, name: &str) -> String {
        json!(name).to_string()
    }
    fn string(&self, s: &str) -> String {
        json!(s).to_string()
    }
    fn unsigned_above_i64_as_text(&self) -> bool {
        false
    }
    fn preamble(&self) -> Vec<String> {
        vec!["-- ferry repair of a search index: INSERT re-indexes, DELETE deletes, UPDATE re-indexes with the fields set (JSON literals)".into()]
    }
    fn target_name(&self, mapped: &TableName, _default_db: Option<String>) -> Result<TableName, (String, String)> {
        Ok(mapped.clone())
    }
    fn native_method(&self, _floats: bool) -> Option<&'static str> {
        None
    }
    fn own_literal(&self, v: &Value) -> Option<String> {
        Some(encode(v).to_string())
    }
}

impl Side for SearchSide {
    fn name(&self) -> &str {
        &self.http.ep().name
    }
    fn dialect(&self) -> &'static dyn Dialect {
        &SearchDialect
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        let index = index_of(&self.template, table);
        let path = format!("/{}", segment(&index));
        let (status, found) = self
            .http
            .send(Method::GET, &format!("{path}/_mapping"), None)
            .await
            .map_err(self.http.error(format!("reading the mapping of index {index}")))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mapping =
            found.as_object().and_then(|m| m.values().next()).map(|v| v["mappings"].clone()).unwrap_or(Json::Null);
        let Some(mut t) = mapping::table_of(&mapping) else {
            return Err(ConnectorError::Setup {
                endpoint: self.http.ep().name.clone(),
                problem: format!("index {index} (of table {table}) was not created by ferry: its mapping has no _meta.ferry with the table's columns"),
                fix: "let ferry create the index (point the task's index template at a new one), or leave the table out with --tables".into(),
            });
        };
        // Named as the source's table (renames already applied by the caller).
        t.name = table.clone();
        // What was indexed becomes searchable (a server refreshes about every second).
        self.http
            .send(Method::POST, &format!("{path}/_refresh"), None)
            .await
            .map_err(self.http.error(format!("refreshing index {index}")))?;
        self.indexes.insert(t.name.clone(), index);
        self.schemas.insert(t.name.clone(), t.clone());
        Ok(Some(t))
    }
    async fn matching(&mut self, _patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        Err(ConnectorError::Setup {
            endpoint: self.http.ep().name.clone(),
            problem: "a search index is verified as a target only".into(),
            fix: "make the search endpoint the task's `to`".into(),
        })
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        self.extent(table).await.map(|e| e.0)
    }
    async fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        self.range_rows(table, range, limit).await
    }
    async fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> Result<Option<Key>, ConnectorError> {
        let rows = self
            .range_rows(table, range, Some(usize::try_from(offset).unwrap_or(usize::MAX).saturating_add(1)))
            .await?;
        Ok(rows.get(usize::try_from(offset).unwrap_or(usize::MAX)).map(|r| table.key_of(r)))
    }
    async fn rows_by_keys(&mut self, table: &TableSchema, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        let index = self.index(table)?.to_string();
        let docs: Vec<Json> = keys.iter().map(|k| json!({"_index": index, "_id": id_of(k)})).collect();
        let (_, j) = self
            .http
            .send(Method::POST, "/_mget", Some(Body::Json(json!({"docs": docs}))))
            .await
            .map_err(self.http.error(format!("reading documents of index {index}")))?;
        Ok(j["docs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["found"] == Json::Bool(true))
            .map(|d| Self::row(table, &d["_source"]))
            .collect())
    }
    async fn native_checksum(
        &mut self,
        _table: &TableSchema,
        _range: &KeyRange,
    ) -> Result<Option<(u64, String)>, ConnectorError> {
        Ok(None)
    }
    async fn extent(&mut self, table: &TableSchema) -> Result<Extent, ConnectorError> {
        let index = self.index(table)?.to_string();
        let path = format!("/{}/_count", segment(&index));
        let (_, c) = self
            .http
            .send(Method::GET, &path, None)
            .await
            .map_err(self.http.error(format!("counting index {index}")))?;
        let n = c["count"].as_u64().ok_or_else(|| ConnectorError::Stream {
            endpoint: self.http.ep().name.clone(),
            what: format!("counting index {index}"),
            source: format!("no count in {c}").into(),
            kind: ErrorKind::Runtime,
        })?;
        let keys = table.key_columns();
        let end = |dir: &str| json!({"size": 1, "sort": keys.iter().map(|k| json!({ *k: dir })).collect::<Vec<_>>()});
        let first = self.search(&index, end("asc")).await?;
        let last = self.search(&index, end("desc")).await?;
        let key = |j: &Json| j["hits"]["hits"].get(0).map(|h| table.key_of(&Self::row(table, &h["_source"])));
        Ok((n, key(&first), key(&last)))
    }
    async fn apply(&mut self, statements: &[String]) -> Result<(), ConnectorError> {
        for s in statements {
            self.repair(s).await?;
        }
        // Repaired documents are searchable at once (a verify run follows a repair).
        let _ = self.http.send(Method::POST, "/_refresh", None).await;
        Ok(())
    }
    fn set_byte_order(&mut self) {
        // Key fields are keyword or numeric: keywords sort by bytes already.
    }
    async fn close(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_statements_read_back_with_json_literals() {
        let (t, rest) = json_value(r#""shop.items" ("id", "v") VALUES (1, "a, b)")"#).expect("table");
        assert_eq!(t, json!("shop.items"));
        let (cols, rest) = json_list(rest.trim_start()).expect("columns");
        assert_eq!(cols, [json!("id"), json!("v")]);
        let (vals, _) = json_list(rest.trim_start().strip_prefix("VALUES ").expect("values")).expect("values");
        assert_eq!(vals, [json!(1), json!("a, b)")], "a comma or parenthesis inside a string is data");
        let (sets, cond) = pairs(r#""v" = "x AND y" WHERE "id" = 2 AND "k" = "z""#, ", ", " WHERE ").expect("sets");
        assert_eq!(sets, [("v".to_string(), json!("x AND y"))]);
        let (conds, _) = pairs(cond, " AND ", "").expect("conditions");
        assert_eq!(conds.len(), 2);
        assert_eq!(json_id(&[json!(2)]), "2");
        assert_eq!(json_id(&[json!(2), json!("z")]), r#"[2,"z"]"#);
    }

    #[test]
    fn key_ranges_become_lexicographic_queries() {
        let q = range_query(&["a", "b"], &KeyRange { after: Some(vec![Value::Int(1), Value::Int(5)]), upto: None });
        let should = &q["bool"]["filter"][0]["bool"]["should"];
        assert_eq!(should[0]["bool"]["filter"][0], json!({"range": {"a": {"gt": 1}}}));
        assert_eq!(should[1]["bool"]["filter"][0], json!({"term": {"a": 1}}));
        assert_eq!(should[1]["bool"]["filter"][1], json!({"range": {"b": {"gt": 5}}}));
    }
}
