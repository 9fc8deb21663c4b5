//! The Redis [`Sink`]: each batch is one `MULTI`/`EXEC` holding its changes and the
//! direction's checkpoint (`ferry:checkpoint:TASK:FROM->TO`), so a batch lands whole
//! with its position or not at all; the direction's lease key is `WATCH`ed, so a batch
//! of a process that lost the lease does not land. Each run of changes from one site is
//! framed by `SET ferry:mark:SITE` / `DEL ferry:mark:SITE`: a reader of this server's
//! stream knows where they came from (and a two-way task's reverse direction drops
//! them). Keys of an RDB are `RESTORE`d (`REPLACE ABSTTL`), or written as ordinary
//! commands when the target cannot restore them (`rewrite.rs`); two-way values go
//! through the apply script (a compare-and-set of versions).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tracing::{debug, info, warn};

use super::resp::{Conn, Reply, encode};
use super::rewrite::{self, Plan};
use super::stream::{self, kind};
use super::{CONFLICTS_KEY, MARK_PREFIX, RedisEndpoint, VERSION_PREFIX, lua, own, rdb_value};
use crate::connector::registry::{ConflictRecord, TargetState};
use crate::connector::{
    ApplyBatch, ApplyFailure, ApplyReport, Checkpoint, ConflictRules, ConnectorError, DirectionId, HEARTBEAT_TABLE,
    LeaseHolder, LeaseOutcome, Sink, TableProgress,
};
use crate::model::item::Item;
use crate::model::{ConflictPolicy, Position, SiteId, TableName, TableSchema};
use crate::redis_cmd;

/// The checkpoint key of a direction.
pub fn checkpoint_key(dir: &DirectionId) -> String {
    format!("ferry:checkpoint:{}:{}", dir.task, dir.direction())
}

/// The lease key of a direction.
pub fn lease_key(dir: &DirectionId) -> String {
    format!("ferry:lease:{}:{}", dir.task, dir.direction())
}

/// The checkpoint's stored form.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    position: Option<String>,
    tables: std::collections::BTreeMap<String, TableProgress>,
}

/// What each queued command came from, to name a refused one.
struct Origin {
    position: Option<Position>,
    key: Vec<u8>,
    what: &'static str,
}

/// A Redis target.
pub struct RedisSink {
    ep: RedisEndpoint,
    conn: Conn,
    /// Two-way: the site whose versions this sink records.
    two_way_from: Option<SiteId>,
    /// Keys given since a full resync began (None: none running).
    seen: Option<HashSet<Vec<u8>>>,
    /// The keys the target held when the full resync began: what the sweep may delete.
    before: HashSet<Vec<u8>>,
    apply_sha: Option<String>,
    sweep_sha: Option<String>,
    flush_sha: Option<String>,
    /// The target's `proto-max-bulk-len`: a longer `RESTORE` payload is rewritten.
    bulk_limit: u64,
    /// The newest RDB version the target's `RESTORE` reads (None: unknown).
    restore_version: Option<u16>,
    /// Whether a key rewritten for its RDB version was logged already.
    logged_newer: bool,
}

impl RedisSink {
    /// Connects to the endpoint's database.
    pub async fn open(ep: RedisEndpoint, two_way_from: Option<SiteId>) -> Result<Self, ConnectorError> {
        let conn = ep.connect().await?;
        Ok(RedisSink {
            ep,
            conn,
            two_way_from,
            seen: None,
            before: HashSet::new(),
            apply_sha: None,
            sweep_sha: None,
            flush_sha: None,
            bulk_limit: rewrite::DEFAULT_BULK_LIMIT,
            restore_version: None,
            logged_newer: false,
        })
    }

    async fn load(&mut self, script: &str) -> Result<String, ConnectorError> {
        let r = self.ep.call(&mut self.conn, "loading ferry's scripts", &["SCRIPT", "LOAD", script]).await?;
        Ok(r.text().unwrap_or_default())
    }

    /// The sweep at the end of a full resync: what the target holds of the patterns that
    /// the RDB did not have.
    async fn stale(&mut self, patterns: &[String], seen: &HashSet<Vec<u8>>) -> Result<Vec<Vec<u8>>, ConnectorError> {
        let mut out = Vec::new();
        let mut listed = HashSet::new();
        for p in patterns {
            let mut cursor = "0".to_string();
            loop {
                let r = self
                    .ep
                    .call(
                        &mut self.conn,
                        "listing the target's keys",
                        &["SCAN", cursor.as_str(), "MATCH", p.as_str(), "COUNT", "1000"],
                    )
                    .await?;
                let mut parts = r.items().into_iter();
                cursor = parts.next().and_then(|c| c.text()).unwrap_or_else(|| "0".into());
                for k in parts.next().map(Reply::items).unwrap_or_default() {
                    if let Some(k) = k.bytes()
                        && !own(&k)
                        && !seen.contains(&k)
                        && listed.insert(k.clone())
                    {
                        out.push(k);
                    }
                }
                if cursor == "0" {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Stops unless `fencing` is still the lease's tenure; WATCHes the lease key, so a
    /// change of it until EXEC discards the batch.
    async fn fence(&mut self, dir: &DirectionId, fencing: i64) -> Result<(), ConnectorError> {
        let key = lease_key(dir);
        let replies = self
            .conn
            .pipeline(&[redis_cmd!("WATCH", key), redis_cmd!("HGET", key, "fencing")])
            .await
            .map_err(self.ep.io("checking the lease"))?;
        let current = replies.get(1).and_then(Reply::int);
        if current == Some(fencing) {
            return Ok(());
        }
        let _ = self.conn.call(&["UNWATCH"]).await;
        let holder = read_lease(&self.ep, &mut self.conn, dir).await?;
        Err(ConnectorError::Fenced {
            endpoint: self.ep.name.clone(),
            dir: dir.to_string(),
            mine: fencing,
            holder: holder.map(Box::new),
        })
    }
}

/// The lease as the target holds it, with its expiry judged by the server's clock.
async fn read_lease(
    ep: &RedisEndpoint,
    c: &mut Conn,
    dir: &DirectionId,
) -> Result<Option<LeaseHolder>, ConnectorError> {
    let replies = c
        .pipeline(&[redis_cmd!("TIME"), redis_cmd!("HGETALL", lease_key(dir))])
        .await
        .map_err(ep.io("reading the lease"))?;
    let mut it = replies.into_iter();
    let now = server_micros(it.next().unwrap_or(Reply::Array(None)));
    let fields = it.next().map(Reply::items).unwrap_or_default();
    if fields.is_empty() {
        return Ok(None);
    }
    let mut h = LeaseHolder {
        node: String::new(),
        host: String::new(),
        pid: 0,
        expires_us: 0,
        expired: false,
        fencing: 0,
        floor: 0,
    };
    for pair in fields.chunks(2) {
        let (Some(k), Some(v)) = (pair[0].text(), pair.get(1).and_then(Reply::text)) else { continue };
        match k.as_str() {
            "node" => h.node = v,
            "host" => h.host = v,
            "pid" => h.pid = v.parse().unwrap_or(0),
            "expires_us" => h.expires_us = v.parse().unwrap_or(0),
            "fencing" => h.fencing = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    h.expired = h.expires_us < now;
    Ok(Some(h))
}

/// µs of a `TIME` reply.
fn server_micros(r: Reply) -> i64 {
    let parts = r.items();
    parts.first().and_then(Reply::int).unwrap_or(0) * 1_000_000 + parts.get(1).and_then(Reply::int).unwrap_or(0)
}

/// Reads a direction's checkpoint.
async fn read_checkpoint(
    ep: &RedisEndpoint,
    c: &mut Conn,
    dir: &DirectionId,
) -> Result<Option<Checkpoint>, ConnectorError> {
    let r = ep.call(c, "reading the checkpoint", &["GET".to_string(), checkpoint_key(dir)]).await?;
    let Some(bytes) = r.bytes() else { return Ok(None) };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("the checkpoint {} of task {dir} is unreadable: {e}", checkpoint_key(dir)),
        fix: "it was not written by ferry; delete the key and copy the task anew".into(),
    })?;
    let position = match stored.position {
        Some(p) => Some(super::position::parse(&p).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("the checkpoint of task {dir}: {e}"),
            fix: "it was written by another release or not by ferry; delete the key and copy the task anew".into(),
        })?),
        None => None,
    };
    Ok(Some(Checkpoint { position, tables: stored.tables }))
}

/// A direction's checkpoint and lease, read without writing.
pub async fn target_state(ep: &RedisEndpoint, dir: &DirectionId) -> Result<TargetState, ConnectorError> {
    let mut c = ep.connect().await?;
    Ok(TargetState {
        checkpoint: read_checkpoint(ep, &mut c, dir).await?,
        lease: read_lease(ep, &mut c, dir).await?,
        blob: None,
    })
}

/// The newest entries of the conflict log.
pub async fn conflicts(
    ep: &RedisEndpoint,
    task: Option<&str>,
    limit: usize,
) -> Result<Vec<ConflictRecord>, ConnectorError> {
    let mut c = ep.connect().await?;
    let count = (limit.max(1) * 4).to_string();
    let r = ep
        .call(&mut c, "reading the conflict log", &["XREVRANGE", CONFLICTS_KEY, "+", "-", "COUNT", count.as_str()])
        .await?;
    let mut out = Vec::new();
    for e in r.items() {
        let mut parts = e.items().into_iter();
        let id = parts.next().and_then(|i| i.text()).unwrap_or_default();
        let fields = parts.next().map(Reply::items).unwrap_or_default();
        let mut get = std::collections::HashMap::new();
        for pair in fields.chunks(2) {
            if let (Some(k), Some(v)) = (pair[0].text(), pair.get(1).and_then(Reply::text)) {
                get.insert(k, v);
            }
        }
        let f = |n: &str| get.get(n).cloned().unwrap_or_default();
        if task.is_some_and(|t| t != f("task")) {
            continue;
        }
        out.push(ConflictRecord {
            id: id.split('-').next().and_then(|m| m.parse().ok()).unwrap_or(0),
            task: f("task"),
            direction: f("direction"),
            table: format!("db{}", ep.db),
            key: f("key"),
            policy: f("policy"),
            winner: f("winner"),
            incoming_site: f("incoming_site"),
            local_site: f("local_site"),
            detected_us: f("detected_us").parse().unwrap_or(0),
            // The versions' times where the log has them; Redis logs no row images.
            incoming_ts: f("incoming_t").parse().unwrap_or(0),
            local_ts: f("local_t").parse().unwrap_or(0),
            incoming_row: None,
            local_row: None,
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The policy argument of the apply script.
fn policy_arg(rules: Option<&ConflictRules>) -> String {
    match rules.map(|r| (r.policy, r)) {
        Some((ConflictPolicy::LogOnly, _)) => "log".into(),
        Some((ConflictPolicy::PreferFrom, r)) => format!("prefer:{}", r.from_site),
        Some((ConflictPolicy::PreferTo, r)) => format!("prefer:{}", r.to_site),
        _ => "lww".into(),
    }
}

/// Commands of one batch and what each came from.
struct Queue {
    cmds: Vec<u8>,
    origins: Vec<Origin>,
}

impl Queue {
    fn push<A: AsRef<[u8]>>(&mut self, args: &[A], origin: Origin) {
        encode(args, &mut self.cmds);
        self.origins.push(origin);
    }
}

impl Sink for RedisSink {
    async fn prepare(&mut self) -> Result<(), ConnectorError> {
        let r = self.ep.call(&mut self.conn, "reading INFO server", &["INFO", "server"]).await?;
        let info = r.text().unwrap_or_default();
        if super::info_field(&info, "redis_mode") == Some("cluster") {
            return Err(super::check::cluster_refused(&self.ep));
        }
        (self.bulk_limit, self.restore_version) = rewrite::probe(&self.ep, &mut self.conn).await?;
        self.flush_sha = Some(self.load(lua::FLUSH).await?);
        if self.two_way_from.is_some() {
            self.apply_sha = Some(self.load(&lua::apply()).await?);
            self.sweep_sha = Some(self.load(&lua::sweep()).await?);
        }
        Ok(())
    }

    async fn ensure_tables(&mut self, _tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<Checkpoint>, ConnectorError> {
        self.seen = None;
        read_checkpoint(&self.ep, &mut self.conn, dir).await
    }

    async fn apply(&mut self, dir: &DirectionId, batch: &ApplyBatch) -> Result<ApplyReport, ConnectorError> {
        // The wire bytes of the whole MULTI, built in place.
        let mut q = Queue { cmds: Vec::new(), origins: Vec::new() };
        encode(&["MULTI"], &mut q.cmds);
        let mut rows = 0u64;
        let mut sweep: Option<Vec<String>> = None;
        let policy = policy_arg(batch.conflicts.as_ref());
        let from_site = self.two_way_from.clone();
        // RESTOREs by their place in the queue, to rewrite one the target refuses.
        let mut restores: std::collections::HashMap<usize, &Item> = std::collections::HashMap::new();
        // Each run of one origin is framed by its marker.
        let mut runs: Vec<(SiteId, Vec<(Option<&Position>, Item)>)> = Vec::new();
        for txn in &batch.txns {
            let mut items = Vec::new();
            for c in &txn.changes {
                if c.table.name.name == HEARTBEAT_TABLE {
                    continue;
                }
                let Some(item) = c.after.as_ref().and_then(stream::item_of) else { continue };
                items.push((Some(&txn.position), item));
            }
            rows += items.len() as u64;
            match runs.last_mut() {
                Some((o, v)) if *o == txn.origin => v.extend(items),
                _ if items.is_empty() => {}
                _ => runs.push((txn.origin.clone(), items)),
            }
        }
        if let Some(s) = &batch.snapshot {
            let origin = batch.conflicts.as_ref().map_or_else(|| self.ep.site.clone(), |r| r.remote_site.clone());
            let items: Vec<_> = s.rows.iter().filter_map(|r| stream::item_of(r).map(|i| (None, i))).collect();
            rows += s.rows.len() as u64;
            runs.push((origin, items));
        }
        // Keys a sweep would delete are listed before the transaction (SCAN cannot run in
        // it): those the target held when the resync began (an empty target costs nothing).
        for (_, items) in &runs {
            for (_, item) in items {
                match item.kind.as_str() {
                    kind::BEGIN => {
                        let patterns: Vec<String> =
                            serde_json::from_slice(item.value.as_deref().unwrap_or_default()).unwrap_or_default();
                        self.before = self.stale(&patterns, &HashSet::new()).await?.into_iter().collect();
                        self.seen = Some(HashSet::new());
                    }
                    kind::END => {
                        sweep =
                            Some(serde_json::from_slice(item.value.as_deref().unwrap_or_default()).unwrap_or_default())
                    }
                    _ => {
                        if let Some(seen) = &mut self.seen
                            && self.before.contains(&item.key)
                        {
                            seen.insert(item.key.clone());
                        }
                    }
                }
            }
        }
        let stale = match (&sweep, self.seen.take()) {
            (Some(_), Some(seen)) => {
                let before = std::mem::take(&mut self.before);
                Some(before.into_iter().filter(|k| !seen.contains(k)).collect::<Vec<_>>())
            }
            (None, seen) => {
                self.seen = seen;
                None
            }
            (Some(_), None) => None,
        };
        let (apply_sha, sweep_sha, flush_sha) = (
            self.apply_sha.clone().unwrap_or_default(),
            self.sweep_sha.clone().unwrap_or_default(),
            self.flush_sha.clone().unwrap_or_default(),
        );
        let task = dir.task.clone();
        let direction = dir.direction();
        let ttl = self.ep.tombstone_ttl.to_string();
        let local = self.ep.site.to_string();
        for (origin, items) in &runs {
            let mark = format!("{MARK_PREFIX}{origin}");
            q.push(
                &["SET", mark.as_str(), "1"],
                Origin { position: None, key: mark.clone().into_bytes(), what: "marker" },
            );
            for (position, item) in items {
                let at = |what| Origin { position: position.cloned(), key: item.key.clone(), what };
                match item.kind.as_str() {
                    kind::CMD => {
                        let args = item.value.as_deref().and_then(stream::decode_command).unwrap_or_default();
                        // The target would refuse such an argument by dropping the
                        // connection, and refuse it again after every retry.
                        if let Some(long) = args.iter().map(Vec::len).max().filter(|n| *n as u64 > self.bulk_limit) {
                            let what = format!("the source ran `{}` with an argument", stream::name(&args));
                            return Err(self.too_long(*position, batch, &item.key, &what, long));
                        }
                        q.push(&args, at("command"));
                    }
                    kind::DUMP => {
                        let payload = item.value.as_deref().unwrap_or_default();
                        match rewrite::plan(payload, self.bulk_limit, self.restore_version) {
                            Plan::Restore => {
                                let ttl = item.ttl_ms.unwrap_or(0).max(0).to_string();
                                let args: [&[u8]; 6] =
                                    [b"RESTORE", &item.key, ttl.as_bytes(), payload, b"REPLACE", b"ABSTTL"];
                                restores.insert(q.origins.len(), item);
                                q.push(&args, at("RESTORE"));
                            }
                            why => {
                                // Every part but the last is its own MULTI, now; the last
                                // lands with the batch's checkpoint.
                                let mut parts = self.rewrite_parts(item, *position, batch, &why)?;
                                let last = parts.pop().unwrap_or_default();
                                for part in &parts {
                                    self.apply_part(dir, batch, origin, item, *position, part).await?;
                                }
                                for c in &last {
                                    q.push(c, at("rewrite"));
                                }
                            }
                        }
                    }
                    kind::VALUE | kind::ABSENT => {
                        // The compare-and-set RESTOREs inside its script: a value the
                        // target cannot take in one argument cannot be rewritten there.
                        let len = item.value.as_ref().map_or(0, Vec::len);
                        if len as u64 > self.bulk_limit {
                            let what =
                                "a two-way task writes a value whole through its compare-and-set, and its DUMP payload";
                            return Err(self.too_long(*position, batch, &item.key, what, len));
                        }
                        let mut vk = VERSION_PREFIX.as_bytes().to_vec();
                        vk.extend_from_slice(&item.key);
                        let h = |n: &str| stream::header(item, n).unwrap_or_default().to_string();
                        let absent = if item.kind == kind::ABSENT { "1" } else { "0" };
                        let exp = item.ttl_ms.unwrap_or(-1).to_string();
                        let payload = item.value.clone().unwrap_or_default();
                        let args: Vec<Vec<u8>> = vec![
                            b"EVALSHA".to_vec(),
                            apply_sha.clone().into_bytes(),
                            b"3".to_vec(),
                            item.key.clone(),
                            vk,
                            CONFLICTS_KEY.as_bytes().to_vec(),
                            payload,
                            absent.into(),
                            exp.into_bytes(),
                            h("t").into_bytes(),
                            h("s").into_bytes(),
                            h("pt").into_bytes(),
                            h("ps").into_bytes(),
                            local.clone().into_bytes(),
                            policy.clone().into_bytes(),
                            task.clone().into_bytes(),
                            direction.clone().into_bytes(),
                            ttl.clone().into_bytes(),
                        ];
                        q.push(&args, at("versioned write"));
                    }
                    // The source holds the key (its value came from this side): only
                    // the sweep needs to know.
                    kind::HELD => {}
                    kind::FLUSH => {
                        let patterns: Vec<String> =
                            serde_json::from_slice(item.value.as_deref().unwrap_or_default()).unwrap_or_default();
                        let mut args = vec!["EVALSHA".to_string(), flush_sha.clone(), "0".into()];
                        args.extend(patterns);
                        q.push(&args, at("FLUSHDB"));
                    }
                    kind::UNSUPPORTED => {
                        let args = item.value.as_deref().and_then(stream::decode_command).unwrap_or_default();
                        let text: Vec<String> =
                            args.iter().take(4).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                        return Err(refused(
                            &self.ep,
                            position.cloned().or_else(|| batch.checkpoint.position.clone()),
                            &item.key,
                            format!(
                                "the source ran `{}`, which moves keys between databases; ferry carries one database per endpoint and cannot apply it",
                                text.join(" ")
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            if let Some(stale) = stale.as_ref().filter(|_| items.iter().any(|(_, i)| i.kind == kind::END)) {
                for k in stale {
                    if from_site.is_some() {
                        let mut vk = VERSION_PREFIX.as_bytes().to_vec();
                        vk.extend_from_slice(k);
                        let site = origin.to_string();
                        let args: Vec<&[u8]> = vec![b"EVALSHA", sweep_sha.as_bytes(), b"2", k, &vk, site.as_bytes()];
                        q.push(&args, Origin { position: None, key: k.clone(), what: "sweep" });
                    } else {
                        q.push(&[b"DEL".as_slice(), k], Origin { position: None, key: k.clone(), what: "sweep" });
                    }
                }
            }
            q.push(&["DEL", mark.as_str()], Origin { position: None, key: mark.clone().into_bytes(), what: "marker" });
        }
        let stored = Stored {
            position: batch.checkpoint.position.as_ref().map(|p| p.to_string()),
            tables: batch.checkpoint.tables.clone(),
        };
        let json = serde_json::to_string(&stored).unwrap_or_default();
        q.push(
            &["SET".to_string(), checkpoint_key(dir), json],
            Origin { position: None, key: Vec::new(), what: "checkpoint" },
        );

        let (results, origins) = self.exec(dir, batch, q).await?;
        let mut refused_versions = Vec::new();
        let mut conflicts = 0;
        for (i, r) in results.iter().enumerate() {
            if let Some(e) = r.error() {
                if let Some(item) = restores.get(&i).filter(|_| e.contains("payload version or checksum are wrong")) {
                    refused_versions.push(*item);
                    continue;
                }
                // Redis applied the rest of the MULTI (it does not roll back): the target
                // differs from the source at this key until it is repaired.
                return Err(self.failure(&origins[i], batch, e, true));
            }
            if origins[i].what == "versioned write"
                && let Some(c) = r.clone().items().get(1).and_then(Reply::int)
            {
                conflicts += c as u64;
            }
        }
        // RESTORE refused a payload's version after all: the key is rewritten now, whole.
        // Its batch's checkpoint is already written, which is safe because RDB keys come
        // only in a full resync, and a full resync interrupted by a crash starts over.
        for item in refused_versions {
            let payload = item.value.as_deref().unwrap_or_default();
            let Some((_, v)) = rdb_value::split_payload(payload) else { continue };
            let target = v.saturating_sub(1);
            if self.restore_version.is_none_or(|t| t > target) {
                warn!(endpoint = %self.ep.name, key = %String::from_utf8_lossy(&item.key), payload_version = v, "the target's RESTORE refused a payload's RDB version; keys of this version are written as ordinary commands from now on");
                self.restore_version = Some(target);
            }
            let why = Plan::Newer { payload: v, target };
            let site = runs.last().map_or_else(|| self.ep.site.clone(), |(o, _)| o.clone());
            for part in &self.rewrite_parts(item, None, batch, &why)? {
                self.apply_part(dir, batch, &site, item, None, part).await?;
            }
        }
        Ok(ApplyReport { rows, conflicts })
    }

    async fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        let key = lease_key(dir);
        for _ in 0..10 {
            self.conn.call(&["WATCH", key.as_str()]).await.map_err(self.ep.io("taking the lease"))?;
            let current = read_lease(&self.ep, &mut self.conn, dir).await?;
            let fencing = match holder.claim(current.as_ref()) {
                Ok(f) => f,
                Err(h) => {
                    let _ = self.conn.call(&["UNWATCH"]).await;
                    return Ok(LeaseOutcome::HeldBy(h));
                }
            };
            let now = server_micros(self.conn.call(&["TIME"]).await.map_err(self.ep.io("reading the clock"))?);
            let expires = now + i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
            let replies = self
                .conn
                .pipeline(&[
                    redis_cmd!("MULTI"),
                    redis_cmd!(
                        "HSET",
                        key,
                        "node",
                        holder.node,
                        "host",
                        holder.host,
                        "pid",
                        holder.pid.to_string(),
                        "expires_us",
                        expires.to_string(),
                        "fencing",
                        fencing.to_string()
                    ),
                    redis_cmd!("EXEC"),
                ])
                .await
                .map_err(self.ep.io("taking the lease"))?;
            match replies.last() {
                Some(Reply::Array(Some(_))) => return Ok(LeaseOutcome::Acquired { fencing }),
                Some(Reply::Error(e)) => return Err(self.ep.refused("writing the lease", e)),
                _ => continue,
            }
        }
        Ok(match read_lease(&self.ep, &mut self.conn, dir).await? {
            Some(h) => LeaseOutcome::HeldBy(h),
            None => LeaseOutcome::HeldBy(LeaseHolder { pid: 0, ..holder.clone() }),
        })
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        // Every batch commits in its own MULTI: nothing is left open.
        Ok(())
    }

    async fn release(&mut self, dir: &DirectionId, holder: &LeaseHolder) -> Result<(), ConnectorError> {
        let key = lease_key(dir);
        self.conn.call(&["WATCH", key.as_str()]).await.map_err(self.ep.io("releasing the lease"))?;
        match read_lease(&self.ep, &mut self.conn, dir).await? {
            Some(h) if h.fencing == holder.fencing && h.pid != 0 => {
                let now = server_micros(self.conn.call(&["TIME"]).await.map_err(self.ep.io("reading the clock"))?);
                self.conn
                    .pipeline(&[
                        redis_cmd!("MULTI"),
                        redis_cmd!("HSET", key, "pid", "0", "expires_us", now.to_string()),
                        redis_cmd!("EXEC"),
                    ])
                    .await
                    .map_err(self.ep.io("releasing the lease"))?;
            }
            _ => {
                let _ = self.conn.call(&["UNWATCH"]).await;
            }
        }
        Ok(())
    }
}

impl RedisSink {
    /// Refuses something longer than the target's `proto-max-bulk-len` by name.
    fn too_long(
        &self,
        position: Option<&Position>,
        batch: &ApplyBatch,
        key: &[u8],
        what: &str,
        len: usize,
    ) -> ConnectorError {
        refused(
            &self.ep,
            position.cloned().or_else(|| batch.checkpoint.position.clone()),
            key,
            format!(
                "{what} is of {len} bytes, longer than the target's proto-max-bulk-len ({}), which the target refuses; raise proto-max-bulk-len on the target (CONFIG SET proto-max-bulk-len …) to at least {len}",
                self.bulk_limit
            ),
        )
    }

    /// The commands that write a key the target cannot `RESTORE`, in parts.
    fn rewrite_parts(
        &mut self,
        item: &Item,
        position: Option<&Position>,
        batch: &ApplyBatch,
        why: &Plan,
    ) -> Result<Vec<Vec<rewrite::Command>>, ConnectorError> {
        let payload = item.value.as_deref().unwrap_or_default();
        let reason = match why {
            Plan::TooLong { len, limit } => {
                format!("its DUMP payload of {len} bytes is longer than the target's proto-max-bulk-len ({limit})")
            }
            Plan::Newer { payload, target } => {
                format!("its DUMP payload is of RDB version {payload}, newer than the target reads ({target})")
            }
            Plan::Restore => "RESTORE".into(),
        };
        let key = String::from_utf8_lossy(&item.key);
        // Keys too long for RESTORE are few and each costs time: each is logged. A newer
        // RDB version concerns every key of the copy: only the first is.
        if matches!(why, Plan::TooLong { .. }) || !std::mem::replace(&mut self.logged_newer, true) {
            info!(endpoint = %self.ep.name, %key, %reason, "writing a key as ordinary commands");
        } else {
            debug!(endpoint = %self.ep.name, %key, %reason, "writing a key as ordinary commands");
        }
        rewrite::parts(&item.key, payload, item.ttl_ms, self.bulk_limit).map_err(|e| {
            refused(
                &self.ep,
                position.cloned().or_else(|| batch.checkpoint.position.clone()),
                &item.key,
                format!("the key cannot be RESTOREd ({reason}) nor written as ordinary commands: {e}"),
            )
        })
    }

    /// One part of a rewritten key in its own `MULTI`, framed by the origin's marker
    /// (fenced by the lease like every batch; no checkpoint).
    async fn apply_part(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
        origin: &SiteId,
        item: &Item,
        position: Option<&Position>,
        part: &[rewrite::Command],
    ) -> Result<(), ConnectorError> {
        let mut q = Queue { cmds: Vec::new(), origins: Vec::new() };
        encode(&["MULTI"], &mut q.cmds);
        let mark = format!("{MARK_PREFIX}{origin}");
        let marker = || Origin { position: None, key: mark.clone().into_bytes(), what: "marker" };
        q.push(&["SET", mark.as_str(), "1"], marker());
        for c in part {
            q.push(c, Origin { position: position.cloned(), key: item.key.clone(), what: "rewrite" });
        }
        q.push(&["DEL", mark.as_str()], marker());
        let (results, origins) = self.exec(dir, batch, q).await?;
        match results.iter().enumerate().find_map(|(i, r)| r.error().map(|e| (i, e))) {
            Some((i, e)) => Err(self.failure(&origins[i], batch, e, true)),
            None => Ok(()),
        }
    }

    /// Sends a queued `MULTI` (its lease fenced) and returns `EXEC`'s results with what
    /// each command came from.
    async fn exec(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
        mut q: Queue,
    ) -> Result<(Vec<Reply>, Vec<Origin>), ConnectorError> {
        if let Some(f) = batch.fence {
            self.fence(dir, f).await?;
        }
        encode(&["EXEC"], &mut q.cmds);
        self.conn.send(&q.cmds).await.map_err(self.ep.io("applying a batch"))?;
        let multi = self.conn.r.reply().await.map_err(self.ep.io("applying a batch"))?;
        if let Some(e) = multi.error() {
            return Err(self.ep.refused("MULTI", e));
        }
        let mut queued_error: Option<(usize, String)> = None;
        for i in 0..q.origins.len() {
            let r = self.conn.r.reply().await.map_err(self.ep.io("applying a batch"))?;
            if let (Some(e), None) = (r.error(), &queued_error) {
                queued_error = Some((i, e.to_string()));
            }
        }
        let exec = self.conn.r.reply().await.map_err(self.ep.io("applying a batch"))?;
        if let Some((i, e)) = queued_error {
            // Refused when queued: EXEC discarded the whole batch.
            return Err(self.failure(&q.origins[i], batch, &e, false));
        }
        match exec {
            Reply::Array(None) => {
                let holder = read_lease(&self.ep, &mut self.conn, dir).await?;
                Err(ConnectorError::Fenced {
                    endpoint: self.ep.name.clone(),
                    dir: dir.to_string(),
                    mine: batch.fence.unwrap_or(0),
                    holder: holder.map(Box::new),
                })
            }
            Reply::Error(e) => Err(self.ep.refused("EXEC", &e)),
            r => Ok((r.items(), q.origins)),
        }
    }

    /// A refused command as an [`ApplyFailure`] (or a runtime error when it may pass).
    fn failure(&self, origin: &Origin, batch: &ApplyBatch, message: &str, applied_rest: bool) -> ConnectorError {
        let code = message.split_whitespace().next().unwrap_or("");
        if matches!(code, "OOM" | "BUSY" | "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "NOSCRIPT") {
            return self
                .ep
                .refused(&format!("the {} of key {:?}", origin.what, String::from_utf8_lossy(&origin.key)), message);
        }
        let note = if applied_rest {
            " (Redis applied the rest of the batch and its checkpoint: a MULTI does not roll back; `ferry verify --repair` rewrites this key from the source)"
        } else {
            " (nothing of the batch was applied)"
        };
        refused(
            &self.ep,
            origin.position.clone().or_else(|| batch.checkpoint.position.clone()),
            &origin.key,
            format!("the {} was refused: {message}{note}", origin.what),
        )
    }
}

fn refused(ep: &RedisEndpoint, position: Option<Position>, key: &[u8], message: String) -> ConnectorError {
    ConnectorError::Apply(Box::new(ApplyFailure {
        endpoint: ep.name.clone(),
        position: position.unwrap_or_else(|| super::position::position(&"0".repeat(40), 0, 0)),
        table: TableName::bare(format!("db{}", ep.db)),
        key: format!("{:?}", String::from_utf8_lossy(key)),
        message,
        in_parts: false,
    }))
}
