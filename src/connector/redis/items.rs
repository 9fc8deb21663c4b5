//! One side of a Redis verify: `SCAN` (ferry's keys left out), each key's value read by
//! type and hashed in a canonical form (hash fields and set members sorted, sorted sets
//! as member/score pairs in order, lists in order, streams as entries and groups), so
//! two servers compare equal whatever their encodings or versions; `DUMP`/`RESTORE` for
//! a repair (or ordinary commands for a key the target cannot restore, `rewrite.rs`).

use futures_util::future::BoxFuture;

use super::resp::{Conn, Reply};
use super::rewrite::{self, Plan};
use super::{RedisEndpoint, own};
use crate::connector::ConnectorError;
use crate::connector::items::{Digest, DynItemSide};
use crate::connector::verifier::hash_bytes;
use crate::model::item::Item;

/// Keys read per round trip.
const BATCH: usize = 200;
/// Keys expiring sooner than this are left out (on both sides alike).
const EXPIRING_MS: i64 = 2_000;

/// A Redis side.
pub struct RedisItems {
    ep: RedisEndpoint,
    c: Conn,
    /// What this server's `RESTORE` takes (bulk limit, RDB version), probed at the first
    /// repair.
    restore: Option<(u64, Option<u16>)>,
}

impl RedisItems {
    /// Connects to the endpoint's database.
    pub async fn open(ep: RedisEndpoint) -> Result<Self, ConnectorError> {
        let c = ep.connect().await?;
        Ok(RedisItems { ep, c, restore: None })
    }

    async fn pipeline(&mut self, what: &str, reqs: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, ConnectorError> {
        self.c.pipeline(reqs).await.map_err(self.ep.io(what.to_string()))
    }

    /// Keys matching the patterns, sorted, without ferry's.
    async fn keys(&mut self, patterns: &[String]) -> Result<Vec<Vec<u8>>, ConnectorError> {
        let mut out = std::collections::BTreeSet::new();
        for p in patterns {
            let mut cursor = "0".to_string();
            loop {
                let r = self
                    .ep
                    .call(&mut self.c, "listing keys", &["SCAN", cursor.as_str(), "MATCH", p.as_str(), "COUNT", "1000"])
                    .await?;
                let mut parts = r.items().into_iter();
                cursor = parts.next().and_then(|c| c.text()).unwrap_or_else(|| "0".into());
                for k in parts.next().map(Reply::items).unwrap_or_default() {
                    if let Some(k) = k.bytes()
                        && !own(&k)
                    {
                        out.insert(k);
                    }
                }
                if cursor == "0" {
                    break;
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    async fn now_ms(&mut self) -> Result<i64, ConnectorError> {
        let r = self.ep.call(&mut self.c, "reading the clock", &["TIME"]).await?;
        let p = r.items();
        Ok(p.first().and_then(Reply::int).unwrap_or(0) * 1000 + p.get(1).and_then(Reply::int).unwrap_or(0) / 1000)
    }

    /// Digests of keys (absent or about to expire: `None`).
    async fn digest_keys(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Digest>>, ConnectorError> {
        let now = self.now_ms().await?;
        let mut out = Vec::with_capacity(keys.len());
        for part in keys.chunks(BATCH) {
            let mut reqs = Vec::with_capacity(part.len() * 2);
            for k in part {
                reqs.push(vec![b"TYPE".to_vec(), k.clone()]);
                reqs.push(vec![b"PEXPIRETIME".to_vec(), k.clone()]);
            }
            let meta = self.pipeline("reading key types", &reqs).await?;
            let mut reads = Vec::new();
            let mut kinds = Vec::new();
            for (i, k) in part.iter().enumerate() {
                let kind = meta[2 * i].text().unwrap_or_default();
                let exp = meta[2 * i + 1].int().unwrap_or(-2);
                kinds.push((kind.clone(), exp));
                let k = k.clone();
                match kind.as_str() {
                    "string" => reads.push(vec![vec![b"GET".to_vec(), k]]),
                    "list" => reads.push(vec![vec![b"LRANGE".to_vec(), k, b"0".to_vec(), b"-1".to_vec()]]),
                    "set" => reads.push(vec![vec![b"SMEMBERS".to_vec(), k]]),
                    "zset" => reads.push(vec![vec![
                        b"ZRANGE".to_vec(),
                        k,
                        b"0".to_vec(),
                        b"-1".to_vec(),
                        b"WITHSCORES".to_vec(),
                    ]]),
                    "hash" => reads.push(vec![vec![b"HGETALL".to_vec(), k]]),
                    "stream" => reads.push(vec![
                        vec![b"XRANGE".to_vec(), k.clone(), b"-".to_vec(), b"+".to_vec()],
                        vec![b"XINFO".to_vec(), b"STREAM".to_vec(), k.clone()],
                        vec![b"XINFO".to_vec(), b"GROUPS".to_vec(), k],
                    ]),
                    _ => reads.push(Vec::new()),
                }
            }
            let flat: Vec<Vec<Vec<u8>>> = reads.iter().flatten().cloned().collect();
            let replies = self.pipeline("reading values", &flat).await?;
            let mut it = replies.into_iter();
            for ((k, (kind, exp)), req) in part.iter().zip(kinds).zip(&reads) {
                let got: Vec<Reply> = (0..req.len()).filter_map(|_| it.next()).collect();
                if kind == "none" {
                    out.push(None);
                    continue;
                }
                if req.is_empty() {
                    // A type ferry does not read (a module's): its type alone is compared.
                    out.push(Some(Digest { key: k.clone(), hash: hash_bytes(kind.as_bytes()), kind, expire_ms: None }));
                    continue;
                }
                if exp >= 0 && exp - now < EXPIRING_MS {
                    out.push(None);
                    continue;
                }
                let mut bytes = Vec::new();
                canonical(&kind, got, &mut bytes);
                out.push(Some(Digest {
                    key: k.clone(),
                    hash: hash_bytes(&bytes),
                    kind,
                    expire_ms: (exp >= 0).then_some(exp),
                }));
            }
        }
        Ok(out)
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn flat(r: Reply, out: &mut Vec<Vec<u8>>) {
    match r {
        Reply::Array(Some(v)) => {
            out.push(format!("[{}", v.len()).into_bytes());
            for x in v {
                flat(x, out);
            }
        }
        Reply::Array(None) => out.push(b"[nil".to_vec()),
        Reply::Bulk(None) => out.push(b"nil".to_vec()),
        Reply::Int(i) => out.push(format!(":{i}").into_bytes()),
        other => out.push(other.bytes().unwrap_or_default()),
    }
}

/// The canonical bytes of a value read by type.
fn canonical(kind: &str, replies: Vec<Reply>, out: &mut Vec<u8>) {
    put(out, kind.as_bytes());
    let mut replies = replies.into_iter();
    let first = replies.next().unwrap_or(Reply::Bulk(None));
    match kind {
        "string" => put(out, &first.bytes().unwrap_or_default()),
        "list" | "zset" => {
            for x in first.items() {
                put(out, &x.bytes().unwrap_or_default());
            }
        }
        "set" => {
            let mut v: Vec<Vec<u8>> = first.items().into_iter().filter_map(Reply::bytes).collect();
            v.sort();
            for x in v {
                put(out, &x);
            }
        }
        "hash" => {
            let items: Vec<Vec<u8>> = first.items().into_iter().filter_map(Reply::bytes).collect();
            let mut pairs: Vec<(&Vec<u8>, &Vec<u8>)> =
                items.chunks(2).filter(|c| c.len() == 2).map(|c| (&c[0], &c[1])).collect();
            pairs.sort();
            for (f, v) in pairs {
                put(out, f);
                put(out, v);
            }
        }
        "stream" => {
            let mut parts = Vec::new();
            flat(first, &mut parts);
            // XINFO STREAM: the fields that are the stream's state, not the server's.
            let info = replies.next().map(Reply::items).unwrap_or_default();
            for pair in info.chunks(2) {
                let name = pair[0].text().unwrap_or_default();
                if matches!(
                    name.as_str(),
                    "length" | "last-generated-id" | "max-deleted-entry-id" | "entries-added" | "groups"
                ) && let Some(v) = pair.get(1)
                {
                    parts.push(name.into_bytes());
                    flat(v.clone(), &mut parts);
                }
            }
            let mut groups: Vec<Vec<u8>> = Vec::new();
            for g in replies.next().map(Reply::items).unwrap_or_default() {
                let mut g_parts = Vec::new();
                let fields = g.items();
                for pair in fields.chunks(2) {
                    let name = pair[0].text().unwrap_or_default();
                    if matches!(name.as_str(), "name" | "pending" | "last-delivered-id" | "entries-read")
                        && let Some(v) = pair.get(1)
                    {
                        g_parts.push(name.into_bytes());
                        flat(v.clone(), &mut g_parts);
                    }
                }
                groups.push(g_parts.concat());
            }
            groups.sort();
            parts.extend(groups);
            for p in parts {
                put(out, &p);
            }
        }
        _ => {}
    }
}

impl DynItemSide for RedisItems {
    fn name(&self) -> &str {
        &self.ep.name
    }

    fn digests<'a>(&'a mut self, patterns: &'a [String]) -> BoxFuture<'a, Result<Vec<Digest>, ConnectorError>> {
        Box::pin(async move {
            let keys = self.keys(patterns).await?;
            Ok(self.digest_keys(&keys).await?.into_iter().flatten().collect())
        })
    }

    fn digests_of<'a>(&'a mut self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<Vec<Option<Digest>>, ConnectorError>> {
        Box::pin(self.digest_keys(keys))
    }

    fn count<'a>(
        &'a mut self,
        patterns: &'a [String],
        sample: usize,
    ) -> BoxFuture<'a, Result<(u64, Vec<Vec<u8>>), ConnectorError>> {
        Box::pin(async move {
            let keys = self.keys(patterns).await?;
            let n = keys.len() as u64;
            let step = (keys.len() / sample.max(1)).max(1);
            Ok((n, keys.into_iter().step_by(step).take(sample).collect()))
        })
    }

    fn read<'a>(&'a mut self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<Vec<Option<Item>>, ConnectorError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for part in keys.chunks(BATCH) {
                let mut reqs = Vec::new();
                for k in part {
                    reqs.push(vec![b"DUMP".to_vec(), k.clone()]);
                    reqs.push(vec![b"PEXPIRETIME".to_vec(), k.clone()]);
                }
                let r = self.pipeline("reading values for the repair", &reqs).await?;
                for (i, k) in part.iter().enumerate() {
                    let dump = r[2 * i].clone().bytes();
                    let exp = r[2 * i + 1].int().unwrap_or(-1);
                    out.push(dump.map(|d| Item {
                        key: k.clone(),
                        value: Some(d),
                        headers: Vec::new(),
                        ttl_ms: (exp >= 0).then_some(exp),
                        kind: super::stream::kind::DUMP.into(),
                    }));
                }
            }
            Ok(out)
        })
    }

    fn write<'a>(&'a mut self, items: &'a [(Vec<u8>, Option<Item>)]) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let (limit, version) = match self.restore {
                Some(r) => r,
                None => *self.restore.insert(rewrite::probe(&self.ep, &mut self.c).await?),
            };
            let named = |k: &[u8]| format!("the repair of key {:?}", String::from_utf8_lossy(k));
            for part in items.chunks(BATCH) {
                let mut reqs: Vec<Vec<Vec<u8>>> = Vec::new();
                let mut keys: Vec<&[u8]> = Vec::new();
                let mut rewrites = Vec::new();
                for (k, item) in part {
                    let req = match item {
                        Some(i) => {
                            let payload = i.value.clone().unwrap_or_default();
                            if rewrite::plan(&payload, limit, version) != Plan::Restore {
                                rewrites.push((k, i));
                                continue;
                            }
                            let ttl = i.ttl_ms.unwrap_or(0).max(0).to_string().into_bytes();
                            vec![b"RESTORE".to_vec(), k.clone(), ttl, payload, b"REPLACE".to_vec(), b"ABSTTL".to_vec()]
                        }
                        None => vec![b"DEL".to_vec(), k.clone()],
                    };
                    reqs.push(req);
                    keys.push(k);
                }
                let replies = self.pipeline("repairing keys", &reqs).await?;
                for (k, r) in keys.iter().zip(replies) {
                    if let Some(e) = r.error() {
                        return Err(self.ep.refused(&named(k), e));
                    }
                }
                // A key the target cannot RESTORE: its commands, one MULTI a part.
                for (k, i) in rewrites {
                    let payload = i.value.as_deref().unwrap_or_default();
                    let parts = rewrite::parts(k, payload, i.ttl_ms, limit)
                        .map_err(|e| self.ep.refused(&named(k), &e.to_string()))?;
                    for cmds in parts {
                        let mut reqs = vec![vec![b"MULTI".to_vec()]];
                        reqs.extend(cmds);
                        reqs.push(vec![b"EXEC".to_vec()]);
                        let replies = self.pipeline("repairing keys", &reqs).await?;
                        let exec = replies.last().cloned().map(Reply::items).unwrap_or_default();
                        if let Some(e) = replies.iter().chain(&exec).find_map(Reply::error) {
                            return Err(self.ep.refused(&named(k), e));
                        }
                    }
                }
            }
            Ok(())
        })
    }
}
