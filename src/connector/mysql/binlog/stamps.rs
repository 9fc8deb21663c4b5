//! Two-way reads: each change paired with its row version. ferry's triggers write a
//! row's version (site, µs, deleted) to its version table in the same transaction as
//! the write (see `versions.rs`); the version table's row events give the version a
//! change left and the one it replaced, and the marker table's the origin of ferry's own
//! transactions where server ids cannot mark them.

use super::rows::decode_row;
use super::table_map::TableInfo;
use super::wire::{Cur, DecodeError};
use crate::connector::mysql::versions::{DELETED_COLUMN, SITE_COLUMN, Stamp, TS_COLUMN};
use crate::model::conflict::StampEvent;
use crate::model::{Op, Row, SiteId, Value};

/// The rows of a version table's rows event (stamps to pair with the changes, see
/// [`attach_stamps`]) or of the marker table (the origin of ferry's own transaction).
pub(super) fn stamp_rows(
    info: &TableInfo,
    op: Op,
    rows: &mut Cur<'_>,
    stamps: &mut Vec<StampEvent>,
    marker: &mut Option<SiteId>,
) -> Result<(), DecodeError> {
    let col = |name: &str| info.schema.column_index(name);
    let stamp = |row: &Row| -> Option<Stamp> {
        let site = match row.get(col(SITE_COLUMN)?)? {
            Value::Text(s) => SiteId::new(s),
            _ => return None,
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        };
        let ts = int(row.get(col(TS_COLUMN)?)?)?;
        let deleted = int(row.get(col(DELETED_COLUMN)?)?)? != 0;
        Some(Stamp { site, ts, deleted })
    };
    while !rows.is_empty() {
        let first = decode_row(info, rows)?;
        let second = if op == Op::Update { Some(decode_row(info, rows)?) } else { None };
        let (before, after) = match op {
            Op::Insert => (None, Some(first)),
            Op::Delete => (Some(first), None),
            Op::Update => (Some(first), second),
        };
        if info.marker {
            if let Some(Value::Text(site)) = after.as_ref().and_then(|r| col("site").and_then(|i| r.get(i))) {
                *marker = Some(SiteId::new(site));
            }
            continue;
        }
        let Some(table) = info.version_of.clone() else { continue };
        let image = after.as_ref().or(before.as_ref());
        let key = image.map(|r| info.schema.key_of(r)).unwrap_or_default();
        stamps.push(StampEvent {
            table,
            key,
            before: before.as_ref().and_then(stamp),
            after: after.as_ref().and_then(stamp),
        });
    }
    Ok(())
}
