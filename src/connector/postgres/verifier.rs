//! PostgreSQL as one side of a verification: rows and ranges in key order (bytes, with
//! `COLLATE "C"` on text keys, against another store), a per-chunk checksum computed by
//! the server, and repairs in its SQL.
//!
//! The in-database checksum hashes each row's record text (`t::text`: fields quoted
//! where they hold a delimiter, NULL distinct from an empty string, floats exact with
//! extra_float_digits=3) with md5, takes 64 bits of it, and sums them as numeric, so the
//! aggregate does not depend on row order and never overflows.

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::source::{decode_rows, text_columns};
use super::values::{Kind, decode, encode, timestamptz_text};
use super::{PgEndpoint, ident, qualified, schema};
use crate::connector::ConnectorError;
use crate::connector::verifier::{Dialect, Extent, Side};
use crate::model::{Key, KeyRange, Row, TableName, TableSchema, Value};

/// A PostgreSQL side: one session in UTC.
pub struct PgSide {
    ep: PgEndpoint,
    conn: PgConnection,
    bytes: bool,
}

impl PgSide {
    /// Opens a session.
    pub async fn open(ep: PgEndpoint) -> Result<PgSide, ConnectorError> {
        let conn = ep.connect().await?;
        Ok(PgSide { ep, conn, bytes: false })
    }

    /// A key column as ordered: text-like keys by bytes when asked.
    fn key_expr(&self, t: &TableSchema, i: usize) -> String {
        let c = &t.columns[i];
        let text = Kind::of_decl(&c.decl_type) == Kind::Text && !c.decl_type.contains("uuid");
        if self.bytes && text { format!("t.{} COLLATE \"C\"", ident(&c.name)) } else { format!("t.{}", ident(&c.name)) }
    }

    fn param(&self, t: &TableSchema, i: usize, n: usize) -> String {
        let c = &t.columns[i];
        let text = Kind::of_decl(&c.decl_type) == Kind::Text && !c.decl_type.contains("uuid");
        if self.bytes && text {
            format!("${n}::{} COLLATE \"C\"", c.decl_type)
        } else {
            format!("${n}::{}", c.decl_type)
        }
    }

    /// `WHERE` of a key range and its parameters.
    fn range(&self, t: &TableSchema, r: &KeyRange) -> (String, Vec<Option<String>>) {
        let keys: Vec<String> = t.primary_key.iter().map(|&i| self.key_expr(t, i)).collect();
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for (key, op) in [(&r.after, ">"), (&r.upto, "<=")] {
            if let Some(k) = key {
                let mut p = Vec::new();
                for (n, &i) in t.primary_key.iter().enumerate() {
                    p.push(self.param(t, i, params.len() + n + 1));
                }
                conds.push(format!("({}) {op} ({})", keys.join(", "), p.join(", ")));
                params.extend(k.iter().map(encode));
            }
        }
        let w = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        (w, params)
    }

    fn order(&self, t: &TableSchema, desc: bool) -> String {
        let dir = if desc { " DESC" } else { "" };
        t.primary_key.iter().map(|&i| format!("{}{dir}", self.key_expr(t, i))).collect::<Vec<_>>().join(", ")
    }

    fn keys_of(&self, t: &TableSchema, rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Key>, ConnectorError> {
        rows.iter()
            .map(|r| {
                t.primary_key
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| {
                        let text: Option<String> =
                            r.try_get(n).map_err(self.ep.error(format!("reading keys of {}", t.name)))?;
                        Ok(match text {
                            None => Value::Null,
                            Some(s) => decode(Kind::of_decl(&t.columns[i].decl_type), &s).map_err(|e| {
                                ConnectorError::Setup {
                                    endpoint: self.ep.name.clone(),
                                    problem: format!("key of {}: {e}", t.name),
                                    fix: "report this as a bug".into(),
                                }
                            })?,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn key_list(t: &TableSchema) -> String {
        t.primary_key.iter().map(|&i| format!("t.{}::text", ident(&t.columns[i].name))).collect::<Vec<_>>().join(", ")
    }
}

/// PostgreSQL's SQL for repairs.
pub struct PgDialect;

impl Dialect for PgDialect {
    fn store(&self) -> &'static str {
        "PostgreSQL"
    }
    fn quote_table(&self, t: &TableName) -> String {
        qualified(t)
    }
    fn quote_ident(&self, name: &str) -> String {
        ident(name)
    }
    fn string(&self, s: &str) -> String {
        super::string_literal(s)
    }
    fn unsigned_above_i64_as_text(&self) -> bool {
        false
    }
    fn preamble(&self) -> Vec<String> {
        vec!["SET TimeZone = 'UTC'".into(), "BEGIN".into()]
    }
    fn target_name(&self, mapped: &TableName, _default_db: Option<String>) -> Result<TableName, (String, String)> {
        Ok(super::check::qualify(mapped))
    }
    fn native_method(&self, _floats: bool) -> Option<&'static str> {
        // Floats print exactly (extra_float_digits = 3): every table can be summed inside.
        Some("in-database")
    }
    fn typed_literal(&self, v: &Value, decl: &str) -> Option<String> {
        match v {
            Value::Json(_) | Value::Text(_) if decl.trim_end().ends_with("[]") => {
                super::values::encode_as(v, decl).map(|t| super::string_literal(&t))
            }
            _ => None,
        }
    }
    fn own_literal(&self, v: &Value) -> Option<String> {
        match v {
            Value::Bytes(_) => encode(v).map(|s| format!("'{s}'::bytea")),
            Value::Timestamp(us) => Some(format!("'{}'::timestamptz", timestamptz_text(*us))),
            Value::Float(f) if f.is_nan() => Some("'NaN'".into()),
            Value::Float(f) if f.is_infinite() => Some(if *f > 0.0 { "'Infinity'" } else { "'-Infinity'" }.into()),
            _ => None,
        }
    }
}

impl Side for PgSide {
    fn name(&self) -> &str {
        &self.ep.name
    }
    fn dialect(&self) -> &'static dyn Dialect {
        &PgDialect
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        schema::describe(&self.ep, &mut self.conn, &super::check::qualify(table)).await
    }
    async fn matching(&mut self, patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        schema::matching_tables(&self.ep, &mut self.conn, patterns).await
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        Ok(super::schema::estimated_rows(&self.ep, &mut self.conn, &table.name).await?.unwrap_or(0))
    }
    async fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        let (w, params) = self.range(table, range);
        let lim = limit.map_or(String::new(), |l| format!(" LIMIT {l}"));
        let sql = format!(
            "SELECT {} FROM {} AS t {w} ORDER BY {}{lim}",
            text_columns(table),
            qualified(&table.name),
            self.order(table, false)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        let rows =
            q.fetch_all(&mut self.conn).await.map_err(self.ep.error(format!("reading rows of {}", table.name)))?;
        decode_rows(&self.ep, table, &rows)
    }
    async fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> Result<Option<Key>, ConnectorError> {
        let (w, params) = self.range(table, range);
        let sql = format!(
            "SELECT {} FROM {} AS t {w} ORDER BY {} OFFSET {offset} LIMIT 1",
            Self::key_list(table),
            qualified(&table.name),
            self.order(table, false)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        let rows = q
            .fetch_all(&mut self.conn)
            .await
            .map_err(self.ep.error(format!("finding a chunk boundary of {}", table.name)))?;
        Ok(self.keys_of(table, &rows)?.into_iter().next())
    }
    async fn rows_by_keys(&mut self, table: &TableSchema, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let n = table.primary_key.len();
        let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let cond: Vec<String> = table
            .primary_key
            .iter()
            .enumerate()
            .map(|(j, &i)| format!("t.{} = u.k{j}::{}", ident(&table.columns[i].name), table.columns[i].decl_type))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} AS t JOIN unnest({}) AS u({}) ON {} ORDER BY {}",
            text_columns(table),
            qualified(&table.name),
            arrays.join(", "),
            names.join(", "),
            cond.join(" AND "),
            self.order(table, false)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in 0..n {
            q = q.bind(keys.iter().map(|k| k.get(j).and_then(encode)).collect::<Vec<_>>());
        }
        let rows = q
            .fetch_all(&mut self.conn)
            .await
            .map_err(self.ep.error(format!("reading rows of {} by key", table.name)))?;
        decode_rows(&self.ep, table, &rows)
    }
    async fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Option<(u64, String)>, ConnectorError> {
        let (w, params) = self.range(table, range);
        let sql = format!(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM {} AS t {w}",
            qualified(&table.name)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        let r = q.fetch_one(&mut self.conn).await.map_err(self.ep.error(format!("checksumming {}", table.name)))?;
        let n: i64 = r.get(0);
        Ok(Some((u64::try_from(n).unwrap_or(0), r.get(1))))
    }
    async fn extent(&mut self, table: &TableSchema) -> Result<Extent, ConnectorError> {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {}", qualified(&table.name))))
                .fetch_one(&mut self.conn)
                .await
                .map_err(self.ep.error(format!("counting rows of {}", table.name)))?;
        let mut ends = Vec::new();
        for desc in [false, true] {
            let sql = format!(
                "SELECT {} FROM {} AS t ORDER BY {} LIMIT 1",
                Self::key_list(table),
                qualified(&table.name),
                self.order(table, desc)
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut self.conn)
                .await
                .map_err(self.ep.error(format!("reading the key range of {}", table.name)))?;
            ends.push(self.keys_of(table, &rows)?.into_iter().next());
        }
        let hi = ends.pop().flatten();
        let lo = ends.pop().flatten();
        Ok((u64::try_from(count).unwrap_or(0), lo, hi))
    }
    async fn apply(&mut self, statements: &[String]) -> Result<(), ConnectorError> {
        let what = "applying repair statements";
        self.ep.exec(&mut self.conn, what, "BEGIN").await?;
        for s in statements {
            if let Err(e) = self.ep.exec(&mut self.conn, &format!("{what}: {s}"), s).await {
                let _ = self.ep.exec(&mut self.conn, what, "ROLLBACK").await;
                return Err(e);
            }
        }
        self.ep.exec(&mut self.conn, what, "COMMIT").await
    }
    fn default_database(&self) -> Option<String> {
        Some("public".into())
    }
    fn set_byte_order(&mut self) {
        self.bytes = true;
    }
    async fn close(self) {
        let _ = sqlx::Connection::close(self.conn).await;
    }
}
