//! Column types of a search index: ferry's canonical types to field mappings and back
//! ([`Types`]), the mapping of an index ferry creates, and the check of one that exists.
//! docs/search.md says which field type each canonical type becomes and why.

use serde_json::{Map, Value as Json, json};

use super::Strings;
use crate::connector::typemap::{Canonical, TypeMap, precision_scale};
use crate::model::{Column, TableName, TableSchema};

/// The search store's type map: the declared types of a target schema name the field
/// mapping ferry gives the column.
pub struct Types;

impl TypeMap for Types {
    fn canonical(&self, decl: &str) -> Canonical {
        let d = decl.to_ascii_lowercase();
        match d.split('(').next().unwrap_or("") {
            "boolean" => Canonical::Bool,
            "long" => Canonical::Int { bits: 64, unsigned: false },
            "unsigned_long" => Canonical::Int { bits: 64, unsigned: true },
            "double" => Canonical::Float,
            "decimal" => Canonical::Decimal(precision_scale(&d)),
            "binary" => Canonical::Bytes,
            "timestamp" => Canonical::Timestamp,
            "datetime" => Canonical::DateTime,
            "date" => Canonical::Date,
            "time" => Canonical::Time,
            "json" => Canonical::Json,
            "uuid" => Canonical::Uuid,
            _ => Canonical::Text,
        }
    }

    fn native(&self, t: &Canonical, keyed: bool) -> String {
        match t {
            Canonical::Bool => "boolean".into(),
            Canonical::Int { unsigned: true, bits: 64 } => "unsigned_long".into(),
            Canonical::Int { .. } => "long".into(),
            Canonical::Float => "double".into(),
            Canonical::Decimal(Some((p, s))) => format!("decimal({p},{s})"),
            Canonical::Decimal(None) => "decimal".into(),
            Canonical::Bytes => "binary".into(),
            Canonical::Timestamp => "timestamp".into(),
            Canonical::DateTime => "datetime".into(),
            Canonical::Date => "date".into(),
            Canonical::Time => "time".into(),
            Canonical::Json => "json".into(),
            Canonical::Uuid => "uuid".into(),
            Canonical::Text if !keyed => "text".into(),
            Canonical::Text | Canonical::Enum(_) => "keyword".into(),
        }
    }
}

/// The field mapping of a column declared `decl` (a [`Types`] name); `keyed` columns
/// (primary key) are exact and sortable, so verify can walk them in order.
pub fn field(decl: &str, keyed: bool, strings: Strings) -> Json {
    let date = |format: &str| json!({"type": "date", "format": format});
    match Types.canonical(decl) {
        Canonical::Bool => json!({"type": "boolean"}),
        Canonical::Int { unsigned: true, .. } => json!({"type": "unsigned_long"}),
        Canonical::Int { .. } => json!({"type": "long"}),
        Canonical::Float => json!({"type": "double"}),
        // The exact text is the value (no rounding, verify compares it); the `number`
        // sub-field serves range queries and aggregations.
        Canonical::Decimal(ps) => {
            let number = match ps {
                Some((_, s)) if s <= 9 => json!({"type": "scaled_float", "scaling_factor": 10f64.powi(s as i32)}),
                _ => json!({"type": "double"}),
            };
            json!({"type": "keyword", "fields": {"number": number}})
        }
        Canonical::Bytes => json!({"type": "binary"}),
        Canonical::Timestamp | Canonical::DateTime => date("strict_date_optional_time_nanos"),
        Canonical::Date => date("strict_date"),
        Canonical::Json => json!({"type": "object", "enabled": false}),
        Canonical::Text if !keyed && strings == Strings::Text => {
            json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}})
        }
        Canonical::Text | Canonical::Time | Canonical::Uuid | Canonical::Enum(_) => json!({"type": "keyword"}),
    }
}

/// The `mappings` of a new index for a table: strict (a field ferry did not map is
/// refused, never guessed), with the source schema in `_meta.ferry` for verify.
pub fn mappings(table: &TableSchema, strings: Strings) -> Json {
    let mut props = Map::new();
    for (i, c) in table.columns.iter().enumerate() {
        props.insert(c.name.clone(), field(&c.decl_type, table.primary_key.contains(&i), strings));
    }
    json!({"dynamic": "strict", "_meta": {"ferry": meta(table)}, "properties": props})
}

/// What `_meta.ferry` records of a table.
fn meta(table: &TableSchema) -> Json {
    json!({
        "table": table.name.to_string(),
        "schema": table.name.schema,
        "name": table.name.name,
        "columns": table.columns.iter().map(|c| json!({"name": c.name, "type": c.decl_type, "nullable": c.nullable})).collect::<Vec<_>>(),
        "primary_key": table.primary_key,
    })
}

/// The table an index's mapping says it holds (`_meta.ferry`), if ferry made it.
pub fn table_of(mapping: &Json) -> Option<TableSchema> {
    let m = &mapping["_meta"]["ferry"];
    let columns = m["columns"]
        .as_array()?
        .iter()
        .map(|c| {
            Some(Column {
                name: c["name"].as_str()?.to_string(),
                decl_type: c["type"].as_str()?.to_string(),
                nullable: c["nullable"].as_bool().unwrap_or(true),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let primary_key =
        m["primary_key"].as_array()?.iter().map(|i| i.as_u64().map(|i| i as usize)).collect::<Option<_>>()?;
    Some(TableSchema {
        name: TableName { schema: m["schema"].as_str().map(str::to_string), name: m["name"].as_str()?.to_string() },
        columns,
        primary_key,
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: None,
    })
}

/// The fields an existing index lacks (to add) and those it maps differently (each
/// `(field, wanted type, found type)`), for a table's columns.
pub fn compare(
    existing: &Json,
    table: &TableSchema,
    strings: Strings,
) -> (Map<String, Json>, Vec<(String, String, String)>) {
    let mut missing = Map::new();
    let mut conflicts = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        let want = field(&c.decl_type, table.primary_key.contains(&i), strings);
        let found = &existing["properties"][&c.name];
        if found.is_null() {
            missing.insert(c.name.clone(), want);
            continue;
        }
        // An object field is listed by its properties, without a type.
        let ty = |j: &Json| {
            j["type"].as_str().unwrap_or(if j["properties"].is_object() { "object" } else { "?" }).to_string()
        };
        if ty(found) != ty(&want) {
            conflicts.push((c.name.clone(), ty(&want), ty(found)));
        }
    }
    (missing, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_types_map_to_fields_and_back() {
        for t in [
            Canonical::Bool,
            Canonical::Int { bits: 64, unsigned: false },
            Canonical::Int { bits: 64, unsigned: true },
            Canonical::Float,
            Canonical::Decimal(Some((10, 2))),
            Canonical::Bytes,
            Canonical::Timestamp,
            Canonical::Date,
            Canonical::Json,
        ] {
            assert_eq!(Types.canonical(&Types.native(&t, false)), t);
        }
        assert_eq!(field("decimal(10,2)", false, Strings::Text)["fields"]["number"]["scaling_factor"], json!(100.0));
        assert_eq!(field("text", true, Strings::Text)["type"], json!("keyword"), "keys are exact");
        assert_eq!(field("text", false, Strings::Keyword)["type"], json!("keyword"));
    }
}
