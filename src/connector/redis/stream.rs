//! What the replication stream's commands mean to ferry: the keys each one writes (to
//! filter by the task's key patterns), and the items that carry them to a sink.

use std::sync::Arc;

use super::resp::encode;
use crate::model::item::{Item, item_schema};
use crate::model::{Change, Op, Prior, Row, TableName, TableSchema, Value};

/// Item kinds a Redis source produces and a Redis sink applies.
pub mod kind {
    /// A command replayed as it was (value: the command in RESP).
    pub const CMD: &str = "cmd";
    /// A whole value from the RDB (value: a `DUMP` payload; TTL: absolute expiry).
    pub const DUMP: &str = "dump";
    /// A whole value with its version (two-way; value: a `DUMP` payload).
    pub const VALUE: &str = "value";
    /// A key's absence with its version (two-way).
    pub const ABSENT: &str = "absent";
    /// Two-way full resync: the source holds this key with a value that came from the
    /// target's site, so nothing is sent, but the sweep at the end must keep it.
    pub const HELD: &str = "held";
    /// FLUSHDB/FLUSHALL (value: the task's key patterns, JSON).
    pub const FLUSH: &str = "flush";
    /// A full resync starts: the sink notes every key it is given until the end.
    pub const BEGIN: &str = "rdb-begin";
    /// A full resync ends: the sink deletes the keys it holds that the RDB did not have
    /// (value: the task's key patterns, JSON).
    pub const END: &str = "rdb-end";
    /// A command ferry cannot carry (value: the command in RESP); the sink refuses it.
    pub const UNSUPPORTED: &str = "unsupported";
}

/// The collection (table) a Redis endpoint's items belong to: `db<N>`.
pub fn table(db: u32) -> Arc<TableSchema> {
    Arc::new(item_schema(TableName::bare(format!("db{db}"))))
}

/// Upper-cased command name.
pub fn name(args: &[Vec<u8>]) -> String {
    args.first().map(|a| String::from_utf8_lossy(a).to_ascii_uppercase()).unwrap_or_default()
}

/// Where a command's keys are.
#[derive(Debug, PartialEq)]
pub enum Keys {
    /// It names no key (PING, SELECT, FLUSHDB, PUBLISH…).
    None,
    /// The argument indexes of its keys; the key written is the first.
    At(Vec<usize>),
}

/// The keys of a write command as it appears in the replication stream.
pub fn keys(args: &[Vec<u8>]) -> Keys {
    let n = args.len();
    let all = |from: usize| Keys::At((from..n).collect());
    match name(args).as_str() {
        "PING" | "SELECT" | "MULTI" | "EXEC" | "DISCARD" | "REPLCONF" | "FLUSHDB" | "FLUSHALL" | "SWAPDB"
        | "FUNCTION" | "SCRIPT" | "PUBLISH" | "SPUBLISH" | "EVAL" | "EVALSHA" | "FCALL" => Keys::None,
        "DEL" | "UNLINK" | "SUNIONSTORE" | "SINTERSTORE" | "SDIFFSTORE" | "PFMERGE" => all(1),
        "MSET" | "MSETNX" => Keys::At((1..n).step_by(2).collect()),
        "RENAME" | "RENAMENX" | "SMOVE" | "LMOVE" | "RPOPLPUSH" | "BLMOVE" | "BRPOPLPUSH" | "ZRANGESTORE"
        | "GEOSEARCHSTORE" | "COPY" => Keys::At((1..n.min(3)).collect()),
        "ZUNIONSTORE" | "ZINTERSTORE" | "ZDIFFSTORE" => {
            let count = args.get(2).and_then(|c| std::str::from_utf8(c).ok()?.parse::<usize>().ok()).unwrap_or(0);
            Keys::At(std::iter::once(1).chain(3..(3 + count).min(n)).collect())
        }
        "BITOP" => all(2),
        "XGROUP" if n > 2 => Keys::At(vec![2]),
        "SORT" => {
            let store = args.iter().position(|a| a.eq_ignore_ascii_case(b"STORE")).filter(|i| i + 1 < n);
            match store {
                Some(i) => Keys::At(vec![i + 1, 1]),
                None => Keys::At(vec![1]),
            }
        }
        _ if n > 1 => Keys::At(vec![1]),
        _ => Keys::None,
    }
}

/// Whether a command moves data between databases (not carried).
pub fn crosses_databases(args: &[Vec<u8>]) -> bool {
    match name(args).as_str() {
        "MOVE" | "SWAPDB" => true,
        "COPY" => args.iter().any(|a| a.eq_ignore_ascii_case(b"DB")),
        _ => false,
    }
}

/// What a command becomes for keys filtered by `wanted`: the command to carry (whole,
/// narrowed to the wanted keys, or none) and the key it writes.
pub fn narrow(args: &[Vec<u8>], wanted: impl Fn(&[u8]) -> bool) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    let Keys::At(at) = keys(args) else { return None };
    let keep: Vec<usize> = at.iter().copied().filter(|&i| wanted(&args[i])).collect();
    let first = *keep.first()?;
    if keep.len() == at.len() {
        return Some((args.to_vec(), args[at[0]].clone()));
    }
    match name(args).as_str() {
        "DEL" | "UNLINK" => {
            let mut out = vec![args[0].clone()];
            out.extend(keep.iter().map(|&i| args[i].clone()));
            Some((out, args[first].clone()))
        }
        "MSET" | "MSETNX" => {
            let mut out = vec![b"MSET".to_vec()];
            for &i in &keep {
                out.push(args[i].clone());
                out.push(args.get(i + 1).cloned().unwrap_or_default());
            }
            Some((out, args[first].clone()))
        }
        // The key written is wanted: carried whole (keys it reads come from the target).
        _ if keep[0] == at[0] => Some((args.to_vec(), args[at[0]].clone())),
        _ => None,
    }
}

/// A change carrying an item.
pub fn change(table: &Arc<TableSchema>, item: Item) -> Change {
    let key = vec![Value::Bytes(item.key.clone())];
    Change {
        table: table.clone(),
        op: Op::Update,
        key,
        before: None,
        after: Some(item.to_row()),
        prior: Prior::Unknown,
        seen: None,
        version: None,
    }
}

/// An item of a command.
pub fn command_item(kind: &str, key: Vec<u8>, args: &[Vec<u8>]) -> Item {
    let mut value = Vec::new();
    encode(args, &mut value);
    Item { key, value: Some(value), headers: Vec::new(), ttl_ms: None, kind: kind.into() }
}

/// A marker item (begin/end of a full resync, a flush) carrying the key patterns.
pub fn marker(kind: &str, patterns: &[String]) -> Item {
    let value = serde_json::to_vec(patterns).unwrap_or_default();
    Item { key: Vec::new(), value: Some(value), headers: Vec::new(), ttl_ms: None, kind: kind.into() }
}

/// The command an item of kind [`kind::CMD`] carries.
pub fn decode_command(value: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut i = 0;
    let read_line = |i: &mut usize| -> Option<usize> {
        let rest = value.get(*i..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&rest[1..end]).ok()?.parse().ok()?;
        *i += end + 2;
        Some(n)
    };
    if value.first() != Some(&b'*') {
        return None;
    }
    let n = read_line(&mut i)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if value.get(i) != Some(&b'$') {
            return None;
        }
        let len = read_line(&mut i)?;
        out.push(value.get(i..i + len)?.to_vec());
        i += len + 2;
    }
    Some(out)
}

/// The item of a change's row.
pub fn item_of(row: &Row) -> Option<Item> {
    Item::from_row(row).ok()
}

/// A header of an item.
pub fn header<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn commands_name_their_keys() {
        assert_eq!(keys(&a("SET k v")), Keys::At(vec![1]));
        assert_eq!(keys(&a("MSET a 1 b 2")), Keys::At(vec![1, 3]));
        assert_eq!(keys(&a("ZUNIONSTORE d 2 x y WEIGHTS 1 2")), Keys::At(vec![1, 3, 4]));
        assert_eq!(keys(&a("SORT src BY w STORE dst")), Keys::At(vec![5, 1]));
        assert_eq!(keys(&a("XGROUP CREATE s g $")), Keys::At(vec![2]));
        assert_eq!(keys(&a("FLUSHDB")), Keys::None);
        assert!(crosses_databases(&a("COPY a b DB 2")) && crosses_databases(&a("MOVE k 1")));
    }

    #[test]
    fn partial_matches_narrow_or_drop() {
        let w = |k: &[u8]| k.starts_with(b"u:");
        assert_eq!(narrow(&a("DEL u:1 x u:2"), w), Some((a("DEL u:1 u:2"), b"u:1".to_vec())));
        assert_eq!(narrow(&a("MSETNX x 1 u:1 2"), w), Some((a("MSET u:1 2"), b"u:1".to_vec())));
        assert_eq!(narrow(&a("RENAME x u:1"), w), None, "written key not wanted");
        assert_eq!(narrow(&a("SUNIONSTORE u:1 x"), w).map(|c| c.0), Some(a("SUNIONSTORE u:1 x")));
        assert_eq!(narrow(&a("SET x 1"), w), None);
    }

    #[test]
    fn command_items_round_trip() {
        let item = command_item(kind::CMD, b"k".to_vec(), &a("SET k v\r\nx"));
        assert_eq!(decode_command(item.value.as_deref().unwrap_or_default()), Some(a("SET k v\r\nx")));
    }
}
