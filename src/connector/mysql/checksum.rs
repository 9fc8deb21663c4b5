//! Comparing MySQL/MariaDB tables: the server's own `CHECKSUM TABLE … EXTENDED`, and rows
//! in key order (binary protocol, decoded as docs/mysql-types.md says) for bisection.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::schema::qualified;
use super::values::{self, ColumnKind, at, decode_row, to_param};
use super::{MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::{Key, KeyRange, Row, TableName, TableSchema};

/// The server's checksum of a whole table (`None` when the table does not exist).
pub async fn checksum_table(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableName,
) -> Result<Option<u64>, ConnectorError> {
    let sql = format!("CHECKSUM TABLE {} EXTENDED", qualified(table));
    let row: Option<(String, Option<u64>)> =
        conn.query_first(sql).await.map_err(ep.error(format!("checksumming table {table}")))?;
    Ok(row.and_then(|(_, sum)| sum))
}

/// `WHERE` condition selecting keys after a bound key, written as
/// `a > ? OR (a = ? AND b > ?) …` (MariaDB does not use an index for row-value `>`),
/// with the key values to bind, in order.
pub fn after_key_condition(table: &TableSchema, after: &Key) -> (String, Vec<mysql_async::Value>) {
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let mut ors = Vec::with_capacity(cols.len());
    let mut params = Vec::new();
    for i in 0..cols.len() {
        let mut ands: Vec<String> = Vec::with_capacity(i + 1);
        for (j, col) in cols.iter().enumerate().take(i) {
            ands.push(format!("{col} = ?"));
            params.push(to_param(&after[j]));
        }
        ands.push(format!("{} > ?", cols[i]));
        params.push(to_param(&after[i]));
        ors.push(if ands.len() == 1 { ands.remove(0) } else { format!("({})", ands.join(" AND ")) });
    }
    (ors.join(" OR "), params)
}

/// `ORDER BY` list of the primary key.
pub fn key_order(table: &TableSchema) -> String {
    table.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
}

/// Up to `limit` rows with keys after `after`, in key order (the server's collation).
pub async fn rows_after(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<Row>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let (filter, params) = match after {
        Some(k) => {
            let (cond, params) = after_key_condition(table, k);
            (format!(" WHERE {cond}"), params)
        }
        None => (String::new(), Vec::new()),
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
        cols.join(", "),
        qualified(&table.name),
        key_order(table)
    );
    let params = if params.is_empty() { mysql_async::Params::Empty } else { mysql_async::Params::Positional(params) };
    let rows: Vec<mysql_async::Row> =
        conn.exec(sql, params).await.map_err(ep.error(format!("reading rows of {}", table.name)))?;
    rows.into_iter().map(|r| decode_row(table, &kinds, r).map_err(|e| at(ep, e))).collect()
}

/// How verify reads a MySQL table's keys: in the server's own collation order (both
/// sides MySQL), or in byte order (`CAST(.. AS BINARY)` on text key columns), which is
/// the order a SQLite peer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// The server's collation; indexes serve every range.
    Server,
    /// Byte order of text key columns (slower: the server sorts).
    Bytes,
}

/// The key column expressions in `order`.
fn key_exprs(ep: &MysqlEndpoint, table: &TableSchema, order: KeyOrder) -> Result<Vec<String>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    Ok(table
        .primary_key
        .iter()
        .map(|&i| {
            let col = ident(&table.columns[i].name);
            let textual = matches!(kinds[i], ColumnKind::Text | ColumnKind::Enum(_) | ColumnKind::Set(_));
            if order == KeyOrder::Bytes && textual { format!("CAST({col} AS BINARY)") } else { col }
        })
        .collect())
}

/// `a OP1 ? OR (a = ? AND b OP2 ?)`: keys after (`>`,`>`) or up to (`<`,`<=`) a bound.
fn bound_condition(
    exprs: &[String],
    key: &Key,
    strict: &str,
    last: &str,
    params: &mut Vec<mysql_async::Value>,
) -> String {
    let mut ors = Vec::with_capacity(exprs.len());
    for i in 0..exprs.len() {
        let mut ands: Vec<String> = Vec::with_capacity(i + 1);
        for (j, e) in exprs.iter().enumerate().take(i) {
            ands.push(format!("{e} = ?"));
            params.push(to_param(&key[j]));
        }
        let op = if i + 1 == exprs.len() { last } else { strict };
        ands.push(format!("{} {op} ?", exprs[i]));
        params.push(to_param(&key[i]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// `WHERE` text for a key range and its parameters.
fn range_filter(exprs: &[String], range: &KeyRange) -> (String, Vec<mysql_async::Value>) {
    let mut params = Vec::new();
    let mut conds = Vec::new();
    if let Some(k) = &range.after {
        conds.push(bound_condition(exprs, k, ">", ">", &mut params));
    }
    if let Some(k) = &range.upto {
        conds.push(bound_condition(exprs, k, "<", "<=", &mut params));
    }
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    (filter, params)
}

fn params_of(p: Vec<mysql_async::Value>) -> mysql_async::Params {
    if p.is_empty() { mysql_async::Params::Empty } else { mysql_async::Params::Positional(p) }
}

async fn fetch_rows(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    sql: String,
    params: Vec<mysql_async::Value>,
) -> Result<Vec<Row>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    let rows: Vec<mysql_async::Row> =
        conn.exec(sql, params_of(params)).await.map_err(ep.error(format!("reading rows of {}", table.name)))?;
    rows.into_iter().map(|r| decode_row(table, &kinds, r).map_err(|e| at(ep, e))).collect()
}

/// Rows with keys in `range`, in key `order`, at most `limit` of them.
pub async fn rows_in_range(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    range: &KeyRange,
    order: KeyOrder,
    limit: Option<usize>,
) -> Result<Vec<Row>, ConnectorError> {
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let (filter, params) = range_filter(&exprs, range);
    let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {}{limit}",
        cols.join(", "),
        qualified(&table.name),
        exprs.join(", ")
    );
    fetch_rows(ep, conn, table, sql, params).await
}

/// The key `offset` rows past the start of `range` (0 = its first key), if there is one.
pub async fn key_at(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    range: &KeyRange,
    order: KeyOrder,
    offset: u64,
) -> Result<Option<Key>, ConnectorError> {
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let (filter, params) = range_filter(&exprs, range);
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT 1 OFFSET {offset}",
        cols.join(", "),
        qualified(&table.name),
        exprs.join(", ")
    );
    Ok(fetch_rows(ep, conn, &table.key_only(), sql, params).await?.into_iter().next())
}

/// The rows with these keys (missing keys are left out), in no particular order.
pub async fn rows_by_keys(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    keys: &[Key],
) -> Result<Vec<Row>, ConnectorError> {
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let conds: Vec<String> = table.key_columns().iter().map(|c| format!("{} = ?", ident(c))).collect();
    let sql = format!("SELECT {} FROM {} WHERE {}", cols.join(", "), qualified(&table.name), conds.join(" AND "));
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.extend(fetch_rows(ep, conn, table, sql.clone(), k.iter().map(to_param).collect()).await?);
    }
    Ok(out)
}

/// Row count and the lowest and highest key of a table, in key `order`.
pub async fn count_min_max(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    order: KeyOrder,
) -> Result<(u64, Option<Key>, Option<Key>), ConnectorError> {
    let n: Option<u64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {}", qualified(&table.name)))
        .await
        .map_err(ep.error(format!("counting rows of {}", table.name)))?;
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let desc: Vec<String> = exprs.iter().map(|e| format!("{e} DESC")).collect();
    let mut ends = Vec::new();
    for by in [exprs.join(", "), desc.join(", ")] {
        let sql = format!("SELECT {} FROM {} ORDER BY {by} LIMIT 1", cols.join(", "), qualified(&table.name));
        ends.push(fetch_rows(ep, conn, &table.key_only(), sql, Vec::new()).await?.into_iter().next());
    }
    let max = ends.pop().flatten();
    let min = ends.pop().flatten();
    Ok((n.unwrap_or(0), min, max))
}

/// The collation of each primary-key column (`None` for columns without one).
pub async fn key_collations(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
) -> Result<Vec<Option<String>>, ConnectorError> {
    let cols: Vec<(String, Option<String>)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.name.schema.clone().unwrap_or_default(), &table.name.name),
        )
        .await
        .map_err(ep.error(format!("reading the collations of {}", table.name)))?;
    Ok(table
        .key_columns()
        .iter()
        .map(|k| cols.iter().find(|(c, _)| c == k).and_then(|(_, coll)| coll.clone()))
        .collect())
}

/// The server's estimate of a table's rows (information_schema), for progress.
pub async fn estimated_rows(ep: &MysqlEndpoint, conn: &mut Conn, table: &TableName) -> Result<u64, ConnectorError> {
    let n: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.schema.clone().unwrap_or_default(), &table.name),
        )
        .await
        .map_err(ep.error(format!("estimating the rows of {table}")))?;
    Ok(n.flatten().unwrap_or(0))
}

/// Odd 32-bit multipliers spreading each CRC over 64 bits (Knuth's and xxHash's primes).
const K1: u64 = 2_654_435_761;
/// See [`K1`].
const K2: u64 = 2_246_822_519;

/// How the server hashes one row's text into 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowHash {
    /// `CRC32(row) * K1 ^ CRC32C(row) * K2`: two different polynomials over the same
    /// bytes, both hardware-assisted (MariaDB 10.8+), each spread over 64 bits by an odd
    /// 32-bit constant (no overflow; the carries make the result non-linear in the CRCs).
    Crc32Pair,
    /// [`RowHash::Crc32Pair`] over a row text built once per row: `CRC32(@r := row)`
    /// then `CRC32C(@r)`, where the server was seen to evaluate the left operand first
    /// (about a fifth less work than building the text twice).
    Crc32PairOnce,
    /// The first 64 bits of `MD5(row)`, for servers without `CRC32C` (MySQL); slower.
    Md5,
}

impl RowHash {
    /// Which hash this server offers: `CRC32C` where it exists, else MD5.
    pub async fn detect(conn: &mut Conn) -> RowHash {
        // MySQL answers "FUNCTION CRC32C does not exist": then MD5 it is.
        if conn.query_first::<u64, _>("SELECT CRC32C('')").await.is_err() {
            return RowHash::Md5;
        }
        // The one-text form is only right if the assignment runs before CRC32C reads
        // the variable; ask the server rather than rely on it. A server that answered
        // otherwise would mix rows' halves: still deterministic, but weaker.
        let left_first: Option<u64> = conn
            .query_first(
                "SELECT ((CRC32(@ferry_row := 'ferry') << 32) | CRC32C(@ferry_row)) \
                 = ((CRC32('ferry') << 32) | CRC32C('ferry'))",
            )
            .await
            .unwrap_or(None);
        if left_first == Some(1) { RowHash::Crc32PairOnce } else { RowHash::Crc32Pair }
    }

    /// The name written before the sum, so two sides hashing differently never match
    /// (they then fall back to comparing rows, which is exact).
    fn tag(self) -> &'static str {
        match self {
            RowHash::Crc32Pair | RowHash::Crc32PairOnce => "xor:crc32*k1^crc32c*k2",
            RowHash::Md5 => "xor:md5-64",
        }
    }

    /// The SQL of the 64-bit hash of the row text `row`.
    fn sql(self, row: &str) -> String {
        match self {
            RowHash::Crc32Pair => format!("((CRC32({row}) * {K1}) ^ (CRC32C({row}) * {K2}))"),
            RowHash::Crc32PairOnce => format!("((CRC32(@ferry_row := {row}) * {K1}) ^ (CRC32C(@ferry_row) * {K2}))"),
            RowHash::Md5 => format!("CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)"),
        }
    }
}

/// Whether a column's server text can contain the `#` separator (strings, bit strings,
/// JSON, ENUM and SET labels); numbers and times never do.
fn free_text(kind: &ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::Text
            | ColumnKind::Bytes
            | ColumnKind::Bit
            | ColumnKind::Enum(_)
            | ColumnKind::Set(_)
            | ColumnKind::Json
    )
}

/// The separator of a row's fields: a byte that UTF-8 and ASCII text never hold.
const SEPARATOR: &str = "CAST(x'FF' AS BINARY)";

/// Per column, whether its server text can hold the [`SEPARATOR`] byte: free text
/// (strings, bit strings, JSON, ENUM and SET labels) except in UTF-8 or ASCII, which
/// never hold 0xFF; numbers and times never do.
pub async fn may_hold_separator(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
) -> Result<Vec<bool>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    let charsets: Vec<(String, Option<String>)> = conn
        .exec(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.name.schema.clone().unwrap_or_default(), &table.name.name),
        )
        .await
        .map_err(ep.error(format!("reading the character sets of {}", table.name)))?;
    let text_without_ff = |name: &str| {
        charsets.iter().any(|(c, set)| {
            c == name && set.as_deref().is_some_and(|s| matches!(s, "utf8mb4" | "utf8mb3" | "utf8" | "ascii"))
        })
    };
    Ok(table.columns.iter().zip(&kinds).map(|(c, k)| free_text(k) && !text_without_ff(&c.name)).collect())
}

/// The SQL text of one row that no other row of the same columns can share:
/// `CONCAT_WS(0xFF, …)` over the columns, where every column whose text may hold the
/// byte 0xFF (`may_hold`: text in single-byte character sets, binary strings, BIT) but
/// the last is preceded by its length in bytes, followed by one NULL flag per nullable
/// column. pt-table-checksum's plain `CONCAT_WS('#', …)` makes `('p#','q')` and
/// `('p','#q')` the same text; here a reader can split the text back into the values:
/// numbers, times and UTF-8 text hold no 0xFF, a length says where another value ends,
/// and the one such value without a length is what lies between the fields before and
/// after it (the NULL flags, of known width, say which fields are present). Measured on
/// MariaDB 10.11: a quarter less server work per row than a `#` separator with a length
/// before every text column.
pub fn row_text(table: &TableSchema, may_hold: &[bool]) -> String {
    let last = may_hold.iter().rposition(|&m| m);
    let mut parts = Vec::with_capacity(table.columns.len() * 2 + 1);
    for (i, c) in table.columns.iter().enumerate() {
        let col = ident(&c.name);
        if may_hold.get(i).copied().unwrap_or(true) && Some(i) != last {
            // Bytes, not characters: LENGTH reads the stored length, CHAR_LENGTH
            // counts characters and costs a scan of every value.
            parts.push(format!("LENGTH({col})"));
        }
        parts.push(col);
    }
    // NULL flags keep NULL apart from '' (CONCAT_WS skips NULLs).
    let nulls: Vec<String> =
        table.columns.iter().filter(|c| c.nullable).map(|c| format!("ISNULL({})", ident(&c.name))).collect();
    if !nulls.is_empty() {
        parts.push(format!("CONCAT({})", nulls.join(", ")));
    }
    format!("CONCAT_WS({SEPARATOR}, {})", parts.join(", "))
}

/// A key range's checksum computed by the server: row count and the `BIT_XOR` of a
/// non-linear 64-bit hash of each row's unambiguous text ([`row_text`], hashed as
/// [`RowHash`] says; `row` is [`row_text`] of the table), as `tag:xor` text. Both sides
/// must be MySQL with the same column types (the text of a value is the server's
/// rendering of it).
///
/// Why not pt-table-checksum's `BIT_XOR(CRC32(CONCAT_WS('#', …)))`: its text is
/// ambiguous (see [`row_text`]), 32 bits let one changed row in 4 billion pass, and a
/// CRC is linear, so the XOR of the CRCs of equal-length rows is the CRC of their XOR:
/// two rows that swap a value of the same length checksum the same. Multiplying each
/// CRC by a constant breaks that linearity (carries), so the XOR sees the swap. Why
/// not a `SUM`: it runs as DECIMAL arithmetic per row, about a sixth more server work
/// per row than `BIT_XOR` (measured on MariaDB 10.11), and carries alone keep a swap
/// hidden whenever the flipped bits go up in one row's CRC and down in the other's.
pub async fn range_checksum(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    range: &KeyRange,
    order: KeyOrder,
    hash: RowHash,
    row: &str,
) -> Result<(u64, String), ConnectorError> {
    let exprs = key_exprs(ep, table, order)?;
    let row_hash = hash.sql(row);
    let (filter, params) = range_filter(&exprs, range);
    let sql = format!("SELECT COUNT(*), CAST(BIT_XOR({row_hash}) AS CHAR) FROM {}{filter}", qualified(&table.name));
    let r: Option<(u64, String)> = conn
        .exec_first(sql, params_of(params))
        .await
        .map_err(ep.error(format!("checksumming rows of {}", table.name)))?;
    let (n, sum) = r.unwrap_or((0, "0".into()));
    Ok((n, format!("{}:{sum}", hash.tag())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    fn col(name: &str, decl: &str, nullable: bool) -> Column {
        Column { name: name.into(), decl_type: decl.into(), nullable }
    }

    #[test]
    fn every_column_that_may_hold_the_separator_but_the_last_carries_its_length() {
        let table = TableSchema {
            name: TableName { schema: Some("d".into()), name: "t".into() },
            columns: vec![
                col("id", "int(11)", false),
                col("a", "varchar(10)", false),
                col("n", "decimal(10,2)", true),
                col("b", "varchar(10)", true),
            ],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        };
        // `a` is latin1 (may hold 0xFF), `b` UTF-8: only `a` needs its length, and
        // only because a second such column could follow; alone it needs none.
        assert_eq!(
            row_text(&table, &[false, true, false, false]),
            "CONCAT_WS(CAST(x'FF' AS BINARY), `id`, `a`, `n`, `b`, CONCAT(ISNULL(`n`), ISNULL(`b`)))"
        );
        assert_eq!(
            row_text(&table, &[false, true, false, true]),
            "CONCAT_WS(CAST(x'FF' AS BINARY), `id`, LENGTH(`a`), `a`, `n`, `b`, CONCAT(ISNULL(`n`), ISNULL(`b`)))"
        );
    }
}
