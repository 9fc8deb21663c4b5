//! The table-map cache of a binlog stream: each followed table's columns, primary key
//! and how to read each value from a row image, decoded from the TABLE_MAP events'
//! (FULL) optional metadata and the server's collations; JSON columns (MariaDB: LONGTEXT
//! with a `json_valid` check) from the catalog.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{Event, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;

use super::filter::TableFilter;
use super::wire::le_uint;
use crate::connector::mysql::names::MARKER_TABLE;
use crate::connector::mysql::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::{ConnectorError, SIGNAL_TABLE};
use crate::model::{Column, TableName, TableSchema};

/// Table-map cache entries kept before the cache is cleared.
const TABLE_CACHE_MAX: usize = 4096;

/// How the bytes of a character column are turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charset {
    /// `binary`: the column holds bytes.
    Binary,
    /// utf8mb4, utf8mb3, ascii: the bytes are UTF-8.
    Utf8,
    /// MySQL's latin1 (Windows-1252 with the five holes mapped to C1 controls).
    Latin1,
}

/// Collation id -> character set name, from the server itself (MariaDB has ids MySQL lacks).
pub(super) async fn load_charsets(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<HashMap<u16, String>, ConnectorError> {
    let rows: Result<Vec<(u64, String)>, _> =
        conn.query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY").await;
    let rows = match rows {
        Ok(r) if r.iter().any(|(id, _)| *id > 0) => r,
        _ => conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(ep.error("reading the server's collations"))?,
    };
    Ok(rows.into_iter().filter_map(|(id, cs)| Some((u16::try_from(id).ok()?, cs))).collect())
}

/// How one column's value is read from a row image.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// TINYINT..BIGINT: width in bytes, and unsigned.
    Int(u8, bool),
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL(precision, scale).
    Decimal(u8, u8),
    /// YEAR (0000 is 0).
    Year,
    /// DATE.
    Date,
    /// TIME (MySQL 5.6+ format) with fractional digits.
    Time2(u8),
    /// Old TIME: HHMMSS as a signed 3-byte integer.
    TimeOld,
    /// DATETIME (MySQL 5.6+ format) with fractional digits.
    DateTime2(u8),
    /// Old DATETIME: YYYYMMDDhhmmss as an 8-byte integer.
    DateTimeOld,
    /// TIMESTAMP (MySQL 5.6+ format) with fractional digits.
    Timestamp2(u8),
    /// Old TIMESTAMP: whole seconds.
    TimestampOld,
    /// BIT(n): bytes.
    Bit(u8),
    /// ENUM: stored width and labels.
    Enum(u8, Arc<[String]>),
    /// SET: stored width and labels.
    Set(u8, Arc<[String]>),
    /// CHAR/BINARY: bytes of the length prefix, charset, declared byte length (BINARY pads to it).
    Char(u8, Charset, usize),
    /// VARCHAR/VARBINARY: bytes of the length prefix, charset.
    VarChar(u8, Charset),
    /// BLOB/TEXT: bytes of the length prefix, charset, whether the column holds JSON.
    Blob(u8, Charset, bool),
}

/// A decoded table map: the schema handed out with changes and how to read each column.
pub(super) struct TableInfo {
    /// The table as changes carry it.
    pub(super) schema: Arc<TableSchema>,
    /// How each column is read, in column order.
    pub(super) kinds: Vec<Kind>,
    /// This is ferry's signal table (a batch ends after its changes).
    pub(super) signal: bool,
    /// This is the version table of that user table (two-way).
    pub(super) version_of: Option<TableName>,
    /// This is ferry's marker table (origin of ferry's own transactions).
    pub(super) marker: bool,
}

/// A cached table map: its raw body (to notice a changed definition under the same id) and,
/// for filtered tables, the decoded info.
pub(super) struct TableEntry {
    raw: Vec<u8>,
    /// The decoded map, for a table the stream follows.
    pub(super) info: Option<Arc<TableInfo>>,
}

/// Why a table map could not be taken in; the decoder adds where in the stream it stands.
pub(super) enum MapError {
    /// A setting or the table's shape stands in the way: the problem and its fix.
    Setup(String, String),
    /// The event does not parse.
    Corrupt(String),
    /// Looking up the JSON columns of `db.table` failed.
    Lookup(String, mysql_async::Error),
    /// The side connection could not be opened again.
    Connect(ConnectorError),
}

impl MapError {
    fn setup(problem: String, fix: impl Into<String>) -> Self {
        MapError::Setup(problem, fix.into())
    }

    fn corrupt(what: &str) -> Self {
        MapError::Corrupt(what.to_string())
    }
}

/// The table maps seen on the stream, by table id, and what decoding them needs.
pub(super) struct TableMaps {
    ep: MysqlEndpoint,
    mariadb: bool,
    /// Collation id -> character set name.
    charsets: HashMap<u16, String>,
    /// A side connection for catalog lookups (JSON columns); reopened when it fails.
    meta: Option<Conn>,
    tables: HashMap<u64, TableEntry>,
}

impl TableMaps {
    /// An empty cache; `meta` is the side connection for catalog lookups.
    pub(super) fn new(ep: MysqlEndpoint, mariadb: bool, charsets: HashMap<u16, String>, meta: Conn) -> Self {
        TableMaps { ep, mariadb, charsets, meta: Some(meta), tables: HashMap::new() }
    }

    /// The cached map of a table id.
    pub(super) fn get(&self, id: u64) -> Option<&TableEntry> {
        self.tables.get(&id)
    }

    /// Takes in a TABLE_MAP event: decodes it for a table the stream follows, unless the
    /// same map is cached under its id already.
    pub(super) async fn read(&mut self, ev: &Event, filter: &TableFilter) -> Result<(), MapError> {
        let data = ev.data();
        let ph = usize::from(ev.fde().get_event_type_header_length(EventType::TABLE_MAP_EVENT));
        let id_len = if ph == 6 { 4 } else { 6 };
        if data.len() < id_len {
            return Err(MapError::corrupt("TABLE_MAP event too short"));
        }
        let id = le_uint(&data[..id_len]);
        let body = &data[id_len..];
        if self.tables.get(&id).is_some_and(|e| e.raw == body) {
            return Ok(());
        }
        let tme: TableMapEvent<'_> = ev.read_event().map_err(|e| MapError::corrupt(&format!("TABLE_MAP: {e}")))?;
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let info = if filter.contains(&db, &table) || filter.versioned_by(&db, &table).is_some() {
            let json = self.json_columns(&db, &table, &tme).await?;
            Some(Arc::new(self.table_info(&tme, db, table, &json, filter)?))
        } else {
            None
        };
        if self.tables.len() >= TABLE_CACHE_MAX {
            self.tables.clear();
        }
        self.tables.insert(id, TableEntry { raw: body.to_vec(), info });
        Ok(())
    }

    /// Names of the table's JSON columns: MariaDB stores JSON as LONGTEXT with a
    /// `json_valid()` check, which only the catalog shows.
    async fn json_columns(
        &mut self,
        db: &str,
        table: &str,
        tme: &TableMapEvent<'_>,
    ) -> Result<HashSet<String>, MapError> {
        let n = tme.columns_count() as usize;
        let has_longtext = (0..n).any(|i| {
            matches!(tme.get_column_type(i), Ok(Some(ColumnType::MYSQL_TYPE_BLOB)))
                && tme.get_column_metadata(i).is_some_and(|m| m.first() == Some(&4))
        });
        if !self.mariadb || !has_longtext {
            return Ok(HashSet::new());
        }
        let sql = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                   WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";
        let mut last = None;
        for _ in 0..2 {
            if self.meta.is_none() {
                self.meta = Some(self.ep.connect().await.map_err(MapError::Connect)?);
            }
            let Some(conn) = self.meta.as_mut() else { continue };
            match conn.exec::<String, _, _>(sql, (db, table)).await {
                Ok(clauses) => {
                    return Ok(clauses.iter().filter_map(|c| json_valid_column(c)).collect());
                }
                Err(e) => {
                    self.meta = None;
                    last = Some(e);
                }
            }
        }
        let e = last.unwrap_or_else(|| mysql_async::Error::Other("no connection".into()));
        Err(MapError::Lookup(format!("{db}.{table}"), e))
    }

    /// Decodes a followed table's map: its columns, primary key and how to read each value.
    fn table_info(
        &self,
        tme: &TableMapEvent<'_>,
        db: String,
        table: String,
        json: &HashSet<String>,
        filter: &TableFilter,
    ) -> Result<TableInfo, MapError> {
        let qualified = format!("{db}.{table}");
        let n = tme.columns_count() as usize;
        let meta_err = |e: std::io::Error| MapError::corrupt(&format!("optional metadata of {qualified}: {e}"));

        let mut unsigned: Vec<bool> = Vec::new();
        let mut default_cs: Option<u16> = None;
        let mut non_default: HashMap<u64, u16> = HashMap::new();
        let mut column_cs: Option<Vec<u16>> = None;
        let mut es_default_cs: Option<u16> = None;
        let mut es_non_default: HashMap<u64, u16> = HashMap::new();
        let mut es_column_cs: Option<Vec<u16>> = None;
        let mut names: Option<Vec<String>> = None;
        let mut enum_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut set_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut pk: Vec<usize> = Vec::new();
        for field in tme.iter_optional_meta() {
            match field.map_err(meta_err)? {
                OptionalMetadataField::Signedness(bits) => unsigned = bits.iter().by_vals().collect(),
                OptionalMetadataField::DefaultCharset(d) => {
                    default_cs = Some(d.default_charset());
                    for x in d.iter_non_default() {
                        let x = x.map_err(meta_err)?;
                        non_default.insert(x.column_index(), x.charset());
                    }
                }
                OptionalMetadataField::ColumnCharset(c) => {
                    column_cs = Some(c.iter_charsets().collect::<Result<_, _>>().map_err(meta_err)?);
                }
                OptionalMetadataField::EnumAndSetDefaultCharset(d) => {
                    es_default_cs = Some(d.default_charset());
                    for x in d.iter_non_default() {
                        let x = x.map_err(meta_err)?;
                        es_non_default.insert(x.column_index(), x.charset());
                    }
                }
                OptionalMetadataField::EnumAndSetColumnCharset(c) => {
                    es_column_cs = Some(c.iter_charsets().collect::<Result<_, _>>().map_err(meta_err)?);
                }
                OptionalMetadataField::ColumnName(c) => {
                    let mut v = Vec::with_capacity(n);
                    for name in c.iter_names() {
                        v.push(name.map_err(meta_err)?.name().into_owned());
                    }
                    names = Some(v);
                }
                OptionalMetadataField::EnumStrValue(e) => {
                    for labels in e.iter_values() {
                        let labels = labels.map_err(meta_err)?;
                        enum_labels.push(labels.values().iter().map(|l| l.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(s) => {
                    for labels in s.iter_values() {
                        let labels = labels.map_err(meta_err)?;
                        set_labels.push(labels.values().iter().map(|l| l.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SimplePrimaryKey(k) => {
                    for i in k.iter_indexes() {
                        pk.push(i.map_err(meta_err)? as usize);
                    }
                }
                OptionalMetadataField::PrimaryKeyWithPrefix(k) => {
                    for key in k.iter_keys() {
                        pk.push(key.map_err(meta_err)?.column_index() as usize);
                    }
                }
                _ => {}
            }
        }
        let Some(names) = names.filter(|v| v.len() == n) else {
            return Err(MapError::setup(
                format!("the table map of {qualified} has no column names (binlog_row_metadata is not FULL)"),
                "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf); changes logged before that cannot be read",
            ));
        };
        let unsupported = |col: &str, what: &str| {
            MapError::setup(
                format!("column {qualified}.{col} has type {what}, which ferry cannot carry"),
                format!("leave {qualified} out of the task's tables, or change the column's type"),
            )
        };
        let charset_of = |col: &str, id: Option<u16>| -> Result<(Charset, usize), MapError> {
            let Some(id) = id else {
                return Err(MapError::setup(
                    format!("the table map of {qualified} has no character set for column {col}"),
                    "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf)",
                ));
            };
            let name = match self.charsets.get(&id) {
                Some(n) => n.clone(),
                None => mysql_common::collations::Collation::resolve(id.into()).charset().to_string(),
            };
            match name.as_str() {
                "binary" => Ok((Charset::Binary, 1)),
                "utf8mb4" => Ok((Charset::Utf8, 4)),
                "utf8mb3" | "utf8" => Ok((Charset::Utf8, 3)),
                "ascii" => Ok((Charset::Utf8, 1)),
                "latin1" => Ok((Charset::Latin1, 1)),
                other => Err(MapError::setup(
                    format!(
                        "column {qualified}.{col} uses character set {other:?} (collation id {id}); ferry reads utf8mb4, utf8mb3, ascii, latin1 and binary"
                    ),
                    format!("ALTER TABLE {} CONVERT TO CHARACTER SET utf8mb4", qualified_ident(&qualified)),
                )),
            }
        };
        let label_text = |cs: Charset, raw: &[u8], col: &str| -> Result<String, MapError> {
            text_of(cs, raw).map_err(|e| MapError::corrupt(&format!("ENUM/SET label of {qualified}.{col}: {e}")))
        };

        let nullable = tme.null_bitmask();
        let (mut numeric, mut character, mut enum_set, mut enums, mut sets) = (0usize, 0u64, 0u64, 0usize, 0usize);
        let mut kinds = Vec::with_capacity(n);
        let mut columns = Vec::with_capacity(n);
        for (i, name) in names.iter().enumerate() {
            let raw = tme.get_raw_column_type(i).ok().flatten();
            let ty = match tme.get_column_type(i) {
                Ok(Some(t)) => t,
                _ => return Err(unsupported(name, &format!("{raw:?}"))),
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let m0 = meta.first().copied().unwrap_or(0);
            let m1 = meta.get(1).copied().unwrap_or(0);
            let is_unsigned = if raw.is_some_and(|r| r.is_numeric_type()) {
                numeric += 1;
                unsigned.get(numeric - 1).copied().unwrap_or(false)
            } else {
                false
            };
            let uns = if is_unsigned { " unsigned" } else { "" };
            let mut next_cs = || {
                let id = match &column_cs {
                    Some(v) => v.get(character as usize).copied(),
                    None => non_default.get(&character).copied().or(default_cs),
                };
                character += 1;
                charset_of(name, id)
            };
            use ColumnType as T;
            let (kind, decl) = match ty {
                T::MYSQL_TYPE_TINY => (Kind::Int(1, is_unsigned), format!("tinyint{uns}")),
                T::MYSQL_TYPE_SHORT => (Kind::Int(2, is_unsigned), format!("smallint{uns}")),
                T::MYSQL_TYPE_INT24 => (Kind::Int(3, is_unsigned), format!("mediumint{uns}")),
                T::MYSQL_TYPE_LONG => (Kind::Int(4, is_unsigned), format!("int{uns}")),
                T::MYSQL_TYPE_LONGLONG => (Kind::Int(8, is_unsigned), format!("bigint{uns}")),
                T::MYSQL_TYPE_FLOAT => (Kind::Float, format!("float{uns}")),
                T::MYSQL_TYPE_DOUBLE => (Kind::Double, format!("double{uns}")),
                T::MYSQL_TYPE_NEWDECIMAL => (Kind::Decimal(m0, m1), format!("decimal({m0},{m1}){uns}")),
                T::MYSQL_TYPE_YEAR => (Kind::Year, "year".into()),
                T::MYSQL_TYPE_NEWDATE | T::MYSQL_TYPE_DATE => (Kind::Date, "date".into()),
                T::MYSQL_TYPE_TIME2 => (Kind::Time2(m0), with_fsp("time", m0)),
                T::MYSQL_TYPE_TIME => (Kind::TimeOld, "time".into()),
                T::MYSQL_TYPE_DATETIME2 => (Kind::DateTime2(m0), with_fsp("datetime", m0)),
                T::MYSQL_TYPE_DATETIME => (Kind::DateTimeOld, "datetime".into()),
                T::MYSQL_TYPE_TIMESTAMP2 => (Kind::Timestamp2(m0), with_fsp("timestamp", m0)),
                T::MYSQL_TYPE_TIMESTAMP => (Kind::TimestampOld, "timestamp".into()),
                T::MYSQL_TYPE_BIT => {
                    let bits = u32::from(m1) * 8 + u32::from(m0);
                    (Kind::Bit(bits.div_ceil(8) as u8), format!("bit({bits})"))
                }
                T::MYSQL_TYPE_ENUM | T::MYSQL_TYPE_SET => {
                    let id = match &es_column_cs {
                        Some(v) => v.get(enum_set as usize).copied(),
                        None => es_non_default.get(&enum_set).copied().or(es_default_cs),
                    };
                    enum_set += 1;
                    let (cs, _) = charset_of(name, id)?;
                    let is_enum = ty == T::MYSQL_TYPE_ENUM;
                    let raw_labels = if is_enum {
                        enums += 1;
                        enum_labels.get(enums - 1)
                    } else {
                        sets += 1;
                        set_labels.get(sets - 1)
                    };
                    let Some(raw_labels) = raw_labels else {
                        return Err(MapError::setup(
                            format!("the table map of {qualified} has no labels for column {name}"),
                            "SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf)",
                        ));
                    };
                    let labels: Vec<String> =
                        raw_labels.iter().map(|l| label_text(cs, l, name)).collect::<Result<_, _>>()?;
                    let decl = format!(
                        "{}({})",
                        if is_enum { "enum" } else { "set" },
                        labels.iter().map(|l| format!("'{}'", l.replace('\'', "''"))).collect::<Vec<_>>().join(",")
                    );
                    let width = m1.max(1);
                    let labels: Arc<[String]> = labels.into();
                    (if is_enum { Kind::Enum(width, labels) } else { Kind::Set(width, labels) }, decl)
                }
                T::MYSQL_TYPE_STRING => {
                    let (cs, mb) = next_cs()?;
                    let len = if m0 & 0x30 != 0x30 {
                        usize::from(m1) | ((usize::from(m0 & 0x30) ^ 0x30) << 4)
                    } else {
                        usize::from(m1)
                    };
                    let decl =
                        if cs == Charset::Binary { format!("binary({len})") } else { format!("char({})", len / mb) };
                    (Kind::Char(if len < 256 { 1 } else { 2 }, cs, len), decl)
                }
                T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
                    let (cs, mb) = next_cs()?;
                    let len = usize::from(u16::from_le_bytes([m0, m1]));
                    let decl = if cs == Charset::Binary {
                        format!("varbinary({len})")
                    } else {
                        format!("varchar({})", len / mb)
                    };
                    (Kind::VarChar(if len < 256 { 1 } else { 2 }, cs), decl)
                }
                T::MYSQL_TYPE_BLOB | T::MYSQL_TYPE_TINY_BLOB | T::MYSQL_TYPE_MEDIUM_BLOB | T::MYSQL_TYPE_LONG_BLOB => {
                    let (cs, _) = next_cs()?;
                    if !(1..=4).contains(&m0) {
                        return Err(MapError::corrupt(&format!(
                            "BLOB column {qualified}.{name} with length size {m0}"
                        )));
                    }
                    let is_json = cs != Charset::Binary && m0 == 4 && json.contains(&name.to_ascii_lowercase());
                    let size = ["tiny", "", "medium", "long"][usize::from(m0 - 1)];
                    let decl = if is_json {
                        "json".to_string()
                    } else if cs == Charset::Binary {
                        format!("{size}blob")
                    } else {
                        format!("{size}text")
                    };
                    (Kind::Blob(m0, cs, is_json), decl)
                }
                T::MYSQL_TYPE_GEOMETRY => return Err(unsupported(name, "GEOMETRY")),
                T::MYSQL_TYPE_JSON => return Err(unsupported(name, "JSON (MySQL binary JSON)")),
                other => return Err(unsupported(name, &format!("{other:?}"))),
            };
            kinds.push(kind);
            columns.push(Column {
                name: name.clone(),
                decl_type: decl,
                nullable: nullable.get(i).map(|b| *b).unwrap_or(true),
            });
        }
        if pk.is_empty() {
            return Err(MapError::setup(
                format!("table {qualified} has no primary key; ferry needs one to apply its changes"),
                format!("add a primary key (ALTER TABLE {} ADD PRIMARY KEY (...))", qualified_ident(&qualified)),
            ));
        }
        if let Some(bad) = pk.iter().find(|&&i| i >= n) {
            return Err(MapError::corrupt(&format!("primary key column index {bad} of {qualified} out of range")));
        }
        let signal = db == FERRY_DB && table == SIGNAL_TABLE;
        let marker = db == FERRY_DB && table == MARKER_TABLE;
        let version_of = filter.versioned_by(&db, &table);
        let schema = TableSchema {
            name: TableName { schema: Some(db), name: table },
            columns,
            primary_key: pk,
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        };
        Ok(TableInfo { schema: Arc::new(schema), kinds, signal, version_of, marker })
    }
}

/// Text of a character-set value.
pub(super) fn text_of(cs: Charset, bytes: &[u8]) -> Result<String, String> {
    match cs {
        Charset::Utf8 | Charset::Binary => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(format!("invalid UTF-8 ({e})")),
        },
        Charset::Latin1 => Ok(bytes.iter().map(|&b| latin1_char(b)).collect()),
    }
}

/// MySQL's latin1 is Windows-1252, with 0x81, 0x8D, 0x8F, 0x90 and 0x9D as C1 controls.
fn latin1_char(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D,
        0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9f => char::from_u32(u32::from(HIGH[usize::from(b - 0x80)])).unwrap_or('\u{fffd}'),
        _ => char::from(b),
    }
}

/// A temporal type's declaration with its fractional digits.
fn with_fsp(name: &str, fsp: u8) -> String {
    if fsp == 0 { name.to_string() } else { format!("{name}({fsp})") }
}

/// `db`.`table` quoted, from `db.table`.
fn qualified_ident(qualified: &str) -> String {
    match qualified.split_once('.') {
        Some((d, t)) => format!("{}.{}", ident(d), ident(t)),
        None => ident(qualified),
    }
}

/// The column a `json_valid(`col`)` check constraint guards, lowercased.
fn json_valid_column(clause: &str) -> Option<String> {
    let c = clause.trim();
    let inner = c.strip_prefix("json_valid(").or_else(|| c.strip_prefix("JSON_VALID("))?.strip_suffix(')')?;
    let name = inner.trim().strip_prefix('`')?.strip_suffix('`')?;
    Some(name.replace("``", "`").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(text_of(Charset::Latin1, &[0x80, b'a', 0xe9, 0x81]).expect("latin1"), "€aé\u{81}");
    }

    #[test]
    fn json_checks_name_their_column() {
        assert_eq!(json_valid_column("json_valid(`Doc`)").as_deref(), Some("doc"));
        assert_eq!(json_valid_column("`a` > 0"), None);
    }
}
