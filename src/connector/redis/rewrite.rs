//! A key the target cannot `RESTORE` — its `DUMP` payload is longer than the target's
//! `proto-max-bulk-len`, or of a newer RDB version than the target reads — written as
//! ordinary commands instead: `DEL`, then the value in commands each bounded in bytes
//! (`SET`/`APPEND`, `RPUSH`, `HSET`, `SADD`, `ZADD`, `XADD` with the original ids, then
//! `XSETID` and the consumer groups), then `PEXPIREAT`. The commands are grouped in parts,
//! one `MULTI` each; the first part starts with the `DEL`, so writing the key again from
//! its start (after a crash) never adds to what an interrupted write left.

use tracing::{info, warn};

use super::RedisEndpoint;
use super::rdb_value::{DecodeError, Stream, Value, decode, split_payload};
use super::resp::{Conn, Reply};
use crate::connector::ConnectorError;
use crate::redis_cmd;

/// The `proto-max-bulk-len` Redis has by default (512 MB).
pub const DEFAULT_BULK_LIMIT: u64 = 512 << 20;
/// Bytes of arguments one command carries at most (unless one element is longer).
const COMMAND_BYTES: usize = 256 << 10;
/// Bytes of commands one `MULTI` part carries at most (unless one command is longer).
const PART_BYTES: usize = 1 << 20;

/// How a `DUMP` payload reaches the target.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// `RESTORE` as it is.
    Restore,
    /// Longer than the target's `proto-max-bulk-len`: rewritten.
    TooLong {
        /// The payload's length.
        len: usize,
        /// The target's limit.
        limit: u64,
    },
    /// Of an RDB version newer than the target reads: rewritten.
    Newer {
        /// The payload's RDB version.
        payload: u16,
        /// The newest the target reads.
        target: u16,
    },
}

/// Decides how a payload reaches a target with this bulk limit and RDB version (`None`:
/// unknown, so any version is tried).
pub fn plan(payload: &[u8], limit: u64, target_version: Option<u16>) -> Plan {
    if payload.len() as u64 > limit {
        return Plan::TooLong { len: payload.len(), limit };
    }
    match (split_payload(payload), target_version) {
        (Some((_, v)), Some(t)) if v > t => Plan::Newer { payload: v, target: t },
        _ => Plan::Restore,
    }
}

/// Learns what a target's `RESTORE` takes: its `proto-max-bulk-len` (`CONFIG GET`;
/// Redis's default when `CONFIG` is refused) and its RDB version (the `DUMP` of a probe
/// key written and deleted in one `MULTI`; `None` when that is refused).
pub async fn probe(ep: &RedisEndpoint, c: &mut Conn) -> Result<(u64, Option<u16>), ConnectorError> {
    let r = c.call(&["CONFIG", "GET", "proto-max-bulk-len"]).await.map_err(ep.io("reading proto-max-bulk-len"))?;
    let read = r.clone().items().get(1).and_then(Reply::text).and_then(|v| v.parse::<u64>().ok());
    let limit = match read {
        Some(l) if l > 0 => l,
        _ => {
            let reason = r.error().map_or_else(|| "no value".to_string(), str::to_string);
            warn!(endpoint = %ep.name, %reason, "cannot read the target's proto-max-bulk-len (CONFIG GET refused); taking Redis's default of 512 MB: a key whose DUMP payload is longer than the target's real limit is refused");
            DEFAULT_BULK_LIMIT
        }
    };
    let key = "ferry:probe:restore";
    let replies = c
        .pipeline(&[
            redis_cmd!("MULTI"),
            redis_cmd!("SET", key, "1"),
            redis_cmd!("DUMP", key),
            redis_cmd!("DEL", key),
            redis_cmd!("EXEC"),
        ])
        .await
        .map_err(ep.io("probing the target's RDB version"))?;
    let dump = replies.last().cloned().map(Reply::items).and_then(|v| v.get(1).cloned()).and_then(Reply::bytes);
    let version = dump.as_deref().and_then(split_payload).map(|(_, v)| v);
    info!(endpoint = %ep.name, proto_max_bulk_len = limit, rdb_version = ?version, "what the target's RESTORE takes: longer payloads and newer RDB versions are written as ordinary commands");
    Ok((limit, version))
}

/// Why a key cannot be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The payload could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A string or an element longer than the target allows.
    #[error(
        "it holds {what} of {len} bytes, more than the target's proto-max-bulk-len ({limit}), and Redis refuses a string or element longer than that to any client but its master; raise proto-max-bulk-len on the target (CONFIG SET proto-max-bulk-len …) to at least {len}"
    )]
    TooLong {
        /// What is too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The target's limit.
        limit: u64,
    },
}

/// A command's arguments.
pub type Command = Vec<Vec<u8>>;

/// The commands that write a payload's value to `key` (expiry `expire_ms`, absolute),
/// grouped in parts for one `MULTI` each: the first starts with `DEL key`.
pub fn parts(
    key: &[u8],
    payload: &[u8],
    expire_ms: Option<i64>,
    limit: u64,
) -> Result<Vec<Vec<Command>>, RewriteError> {
    let body = split_payload(payload).map(|(b, _)| b).ok_or(DecodeError::Corrupt("a payload without a trailer"))?;
    let cmds = commands(key, &decode(body)?, expire_ms, limit)?;
    Ok(group(cmds, PART_BYTES))
}

fn size(c: &Command) -> usize {
    c.iter().map(|a| a.len() + 16).sum()
}

/// Groups commands in order into parts of at most `budget` bytes each (a longer command
/// alone).
pub fn group(cmds: Vec<Command>, budget: usize) -> Vec<Vec<Command>> {
    let mut out: Vec<Vec<Command>> = Vec::new();
    let mut used = 0;
    for c in cmds {
        let n = size(&c);
        match out.last_mut() {
            Some(p) if used + n <= budget => p.push(c),
            _ => {
                out.push(vec![c]);
                used = 0;
            }
        }
        used += n;
    }
    out
}

fn word(w: &str) -> Vec<u8> {
    w.as_bytes().to_vec()
}

/// Appends `head` commands, each followed by as many element groups as fit in
/// `COMMAND_BYTES` (one group at least).
fn variadic(out: &mut Vec<Command>, head: &[Vec<u8>], groups: impl Iterator<Item = Vec<Vec<u8>>>) {
    let mut cur: Command = head.to_vec();
    let mut used = 0;
    for g in groups {
        let n: usize = g.iter().map(|a| a.len() + 16).sum();
        if cur.len() > head.len() && used + n > COMMAND_BYTES {
            out.push(std::mem::replace(&mut cur, head.to_vec()));
            used = 0;
        }
        cur.extend(g);
        used += n;
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
}

/// The commands, in order, that write `value` to `key`.
pub(crate) fn commands(
    key: &[u8],
    value: &Value,
    expire_ms: Option<i64>,
    limit: u64,
) -> Result<Vec<Command>, RewriteError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let too_long = |what, len: usize| RewriteError::TooLong { what, len, limit };
    let check = |what, items: &mut dyn Iterator<Item = usize>| match items.max() {
        Some(n) if n > limit_usize => Err(too_long(what, n)),
        _ => Ok(()),
    };
    let k = key.to_vec();
    let mut out: Vec<Command> = vec![vec![word("DEL"), k.clone()]];
    match value {
        Value::Str(s) => {
            check("a string", &mut std::iter::once(s.len()))?;
            let mut chunks = s.chunks(COMMAND_BYTES);
            out.push(vec![word("SET"), k.clone(), chunks.next().unwrap_or_default().to_vec()]);
            out.extend(chunks.map(|c| vec![word("APPEND"), k.clone(), c.to_vec()]));
        }
        Value::List(items) => {
            check("a list element", &mut items.iter().map(Vec::len))?;
            variadic(&mut out, &[word("RPUSH"), k.clone()], items.iter().map(|i| vec![i.clone()]));
        }
        Value::Set(items) => {
            check("a set member", &mut items.iter().map(Vec::len))?;
            variadic(&mut out, &[word("SADD"), k.clone()], items.iter().map(|i| vec![i.clone()]));
        }
        Value::Hash(pairs) => {
            check("a hash field or value", &mut pairs.iter().map(|(f, v)| f.len().max(v.len())))?;
            variadic(&mut out, &[word("HSET"), k.clone()], pairs.iter().map(|(f, v)| vec![f.clone(), v.clone()]));
        }
        Value::ZSet(pairs) => {
            check("a sorted set member", &mut pairs.iter().map(|(m, _)| m.len()))?;
            // `{:?}` writes the shortest text that parses back to the same double
            // (`inf`, `-inf` as Redis reads them).
            let groups = pairs.iter().map(|(m, s)| vec![format!("{s:?}").into_bytes(), m.clone()]);
            variadic(&mut out, &[word("ZADD"), k.clone()], groups);
        }
        Value::Stream(s) => {
            check(
                "a stream field or value",
                &mut s.entries.iter().flat_map(|(_, f)| f.iter().map(|(a, b)| a.len().max(b.len()))),
            )?;
            stream_commands(&k, s, &mut out);
        }
    }
    if let Some(ms) = expire_ms {
        out.push(vec![word("PEXPIREAT"), k, ms.to_string().into_bytes()]);
    }
    Ok(out)
}

/// A stream's entries with their ids, its last id, counters, groups, consumers and
/// pending entries (what `XINFO` shows, but consumers' seen times).
fn stream_commands(k: &[u8], s: &Stream, out: &mut Vec<Command>) {
    let k = k.to_vec();
    for (id, fields) in &s.entries {
        let mut c = vec![word("XADD"), k.clone(), id.to_string().into_bytes()];
        for (f, v) in fields {
            c.push(f.clone());
            c.push(v.clone());
        }
        out.push(c);
    }
    // An empty stream exists only through a group: create it with one, dropped after
    // when it is not the stream's own.
    let scratch = b"ferry:scratch".to_vec();
    if s.entries.is_empty() {
        let g = s.groups.first().map_or(scratch.clone(), |g| g.name.clone());
        out.push(vec![word("XGROUP"), word("CREATE"), k.clone(), g, word("0"), word("MKSTREAM")]);
    }
    let mut setid = vec![word("XSETID"), k.clone(), s.last_id.to_string().into_bytes()];
    if let Some(n) = s.entries_added {
        setid.extend([word("ENTRIESADDED"), n.to_string().into_bytes()]);
    }
    if let Some(d) = s.max_deleted {
        setid.extend([word("MAXDELETEDID"), d.to_string().into_bytes()]);
    }
    out.push(setid);
    if s.entries.is_empty() {
        match s.groups.first() {
            Some(g) => out.push(vec![word("XGROUP"), word("DESTROY"), k.clone(), g.name.clone()]),
            None => out.push(vec![word("XGROUP"), word("DESTROY"), k.clone(), scratch]),
        }
    }
    for g in &s.groups {
        let mut c = vec![word("XGROUP"), word("CREATE"), k.clone(), g.name.clone(), g.last_id.to_string().into_bytes()];
        if let Some(n) = g.entries_read {
            c.extend([word("ENTRIESREAD"), n.to_string().into_bytes()]);
        }
        out.push(c);
        for consumer in &g.consumers {
            out.push(vec![word("XGROUP"), word("CREATECONSUMER"), k.clone(), g.name.clone(), consumer.name.clone()]);
            for id in &consumer.pending {
                let Some(p) = g.pending.iter().find(|p| p.id == *id) else { continue };
                // FORCE creates the pending entry; JUSTID leaves the count to RETRYCOUNT.
                out.push(vec![
                    word("XCLAIM"),
                    k.clone(),
                    g.name.clone(),
                    consumer.name.clone(),
                    word("0"),
                    id.to_string().into_bytes(),
                    word("TIME"),
                    p.delivered_ms.to_string().into_bytes(),
                    word("RETRYCOUNT"),
                    p.count.to_string().into_bytes(),
                    word("FORCE"),
                    word("JUSTID"),
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::crc64::dump_payload;
    use super::super::rdb_value::{Group, StreamId};
    use super::*;

    #[test]
    fn payloads_restore_unless_too_long_or_newer() {
        let p = dump_payload(vec![0, 3, b'a', b'b', b'c'], 11);
        assert_eq!(plan(&p, 1 << 20, Some(11)), Plan::Restore);
        assert_eq!(plan(&p, 1 << 20, None), Plan::Restore, "an unknown target version tries RESTORE");
        assert_eq!(plan(&p, 1 << 20, Some(10)), Plan::Newer { payload: 11, target: 10 });
        assert_eq!(plan(&p, 15, Some(12)), Plan::Restore, "a payload as long as the limit is accepted");
        assert_eq!(plan(&p, 14, Some(12)), Plan::TooLong { len: 15, limit: 14 });
    }

    #[test]
    fn big_values_split_into_bounded_commands_and_parts() {
        let s = vec![b'x'; 3 * COMMAND_BYTES + 5];
        let cmds = commands(b"k", &Value::Str(s.clone()), Some(99), 1 << 30).expect("string");
        assert_eq!(cmds[0], vec![word("DEL"), word("k")]);
        assert_eq!((cmds[1][0].as_slice(), cmds[2][0].as_slice()), (b"SET".as_slice(), b"APPEND".as_slice()));
        assert_eq!(cmds.len(), 1 + 4 + 1, "DEL, SET, 3 APPENDs, PEXPIREAT");
        let rebuilt: Vec<u8> = cmds[1..5].iter().flat_map(|c| c[2].clone()).collect();
        assert_eq!(rebuilt, s);
        assert_eq!(cmds[5], vec![word("PEXPIREAT"), word("k"), word("99")]);

        let items: Vec<Vec<u8>> = (0..20_000).map(|i| format!("element-{i:06}").into_bytes()).collect();
        let cmds = commands(b"l", &Value::List(items.clone()), None, 1 << 30).expect("list");
        assert!(cmds.len() > 3, "several RPUSHes: {}", cmds.len());
        assert!(cmds[1..].iter().all(|c| c[0] == b"RPUSH" && size(c) <= COMMAND_BYTES + 64));
        let pushed: Vec<Vec<u8>> = cmds[1..].iter().flat_map(|c| c[2..].to_vec()).collect();
        assert_eq!(pushed, items, "every element once, in order");

        let parts = group(cmds.clone(), COMMAND_BYTES + 1024);
        assert!(parts.len() > 1 && parts[0][0] == vec![word("DEL"), word("l")], "the first part starts with DEL");
        assert_eq!(parts.concat(), cmds, "grouping keeps every command in order");
        assert!(parts.iter().all(|p| p.iter().map(size).sum::<usize>() <= COMMAND_BYTES + 1024));
    }

    #[test]
    fn scores_stay_exact_and_too_long_strings_are_refused() {
        let z = Value::ZSet(vec![(word("a"), 0.1), (word("b"), f64::INFINITY), (word("c"), -1e300)]);
        let cmds = commands(b"z", &z, None, 1 << 20).expect("zset");
        assert_eq!(cmds[1][2..], [word("0.1"), word("a"), word("inf"), word("b"), word("-1e300"), word("c")]);
        let e = commands(b"s", &Value::Str(vec![0; 100]), None, 99).expect_err("too long");
        assert!(e.to_string().contains("a string of 100 bytes"), "{e}");
    }

    #[test]
    fn streams_keep_ids_counters_and_groups() {
        let s = Stream {
            entries: vec![(StreamId { ms: 5, seq: 1 }, vec![(word("f"), word("v"))])],
            last_id: StreamId { ms: 7, seq: 0 },
            entries_added: Some(3),
            max_deleted: Some(StreamId { ms: 6, seq: 0 }),
            groups: vec![Group {
                name: word("g"),
                last_id: StreamId { ms: 5, seq: 1 },
                entries_read: Some(1),
                pending: vec![super::super::rdb_value::Pending {
                    id: StreamId { ms: 5, seq: 1 },
                    delivered_ms: 42,
                    count: 2,
                }],
                consumers: vec![super::super::rdb_value::Consumer {
                    name: word("c"),
                    pending: vec![StreamId { ms: 5, seq: 1 }],
                }],
            }],
        };
        let cmds = commands(b"x", &Value::Stream(Box::new(s)), None, 1 << 20).expect("stream");
        let text: Vec<String> = cmds.iter().map(|c| String::from_utf8_lossy(&c.join(&b' ')).into_owned()).collect();
        assert_eq!(
            text,
            [
                "DEL x",
                "XADD x 5-1 f v",
                "XSETID x 7-0 ENTRIESADDED 3 MAXDELETEDID 6-0",
                "XGROUP CREATE x g 5-1 ENTRIESREAD 1",
                "XGROUP CREATECONSUMER x g c",
                "XCLAIM x g c 0 5-1 TIME 42 RETRYCOUNT 2 FORCE JUSTID",
            ]
        );
    }
}
