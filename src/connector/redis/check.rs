//! `ferry check` for Redis: reachable, logged in, standalone (not Cluster), 7.0 or later,
//! and as a source allowed to replicate (`PSYNC`, `REPLCONF`); each problem with its fix.

use super::resp::Conn;
use super::{RedisEndpoint, info_field, version_of};
use crate::connector::ConnectorError;
use crate::connector::endpoint::Endpoint;
use crate::connector::registry::{SourceFindings, TargetTable};
use crate::model::TableName;

/// Redis Cluster, refused with the reason.
pub fn cluster_refused(ep: &RedisEndpoint) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "{} runs in cluster mode: ferry reads one standalone server's replication stream, and a cluster spreads its keys over several primaries, each with a stream of its own",
            ep.display
        ),
        fix: "point the endpoint at a standalone Redis (Redis Cluster is not supported by this release)".into(),
    }
}

/// Connects and reads `INFO server` and `INFO modules`: problems and warnings found.
async fn common(ep: &RedisEndpoint) -> Result<(Conn, Vec<String>, Vec<String>), Vec<String>> {
    let mut c = ep.connect().await.map_err(|e| match e {
        e @ ConnectorError::Stream { .. } => {
            vec![format!("{e}\n  fix: check that the server runs and that the url's host and port are right")]
        }
        e => vec![e.to_string()],
    })?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let info = ep.call(&mut c, "reading INFO server", &["INFO", "server"]).await.map_err(|e| vec![e.to_string()])?;
    let info = info.text().unwrap_or_default();
    if info_field(&info, "redis_mode") == Some("cluster") {
        problems.push(cluster_refused(ep).to_string());
    }
    match version_of(&info) {
        Some(v) if v < (7, 0) => problems.push(format!(
            "endpoint {}: {} runs Redis {}.{}; ferry needs 7.0 or later (absolute expiries in the replication stream, PEXPIRETIME)\n  fix: upgrade the server to Redis 7",
            ep.name, ep.display, v.0, v.1
        )),
        None => warnings.push(format!("endpoint {}: {} does not say its version (INFO server)", ep.name, ep.display)),
        _ => {}
    }
    if let Ok(m) = ep.call(&mut c, "reading INFO modules", &["INFO", "modules"]).await {
        let text = m.text().unwrap_or_default();
        let modules: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("module:name="))
            .map(|l| l.split(',').next().unwrap_or(l))
            .collect();
        if !modules.is_empty() {
            warnings.push(format!(
                "endpoint {}: modules are loaded ({}): keys of a module's own types cannot be carried, and a task stops at the first one it meets\n  fix: leave such keys out of the task's key patterns (tables)",
                ep.name,
                modules.join(", ")
            ));
        }
    }
    Ok((c, problems, warnings))
}

/// Preflight as a source.
pub async fn source(ep: &Endpoint, patterns: &[String]) -> SourceFindings {
    let mut found = SourceFindings::default();
    let r = match RedisEndpoint::of(ep) {
        Ok(r) => r,
        Err(e) => {
            found.problems.push(e.to_string());
            return found;
        }
    };
    let (mut c, problems, warnings) = match common(&r).await {
        Ok(x) => x,
        Err(p) => {
            found.problems = p;
            return found;
        }
    };
    found.problems = problems;
    found.warnings = warnings;
    for p in patterns {
        if p.is_empty() {
            found.problems.push(format!(
                "endpoint {}: an empty key pattern matches nothing\n  fix: write key patterns as SCAN MATCH takes them (\"*\", \"user:*\")",
                ep.name
            ));
        }
    }
    // PSYNC cannot be tried without starting a full resync: ask whether the command exists
    // and whether ferry's user may run it.
    let info = c.call(&["COMMAND", "INFO", "PSYNC", "REPLCONF"]).await;
    let missing = match &info {
        Ok(r) => r
            .clone()
            .items()
            .iter()
            .any(|i| matches!(i, super::resp::Reply::Array(None) | super::resp::Reply::Bulk(None))),
        Err(_) => false,
    };
    if missing {
        found.problems.push(psync_refused(
            &r,
            "the server does not offer PSYNC or REPLCONF (disabled or renamed, as managed services do)",
        ));
    } else {
        let who = c.call(&["ACL", "WHOAMI"]).await.ok().and_then(|w| w.text());
        let mut decided = false;
        if let Some(user) = who {
            for cmd in [&["PSYNC", "?", "-1"][..], &["REPLCONF", "capa", "eof"][..]] {
                let mut args = vec!["ACL", "DRYRUN", user.as_str()];
                args.extend_from_slice(cmd);
                match c.call(&args).await {
                    Ok(super::resp::Reply::Status(_)) => decided = true,
                    Ok(super::resp::Reply::Bulk(Some(why))) => {
                        decided = true;
                        found.problems.push(psync_refused(&r, &String::from_utf8_lossy(&why)));
                        break;
                    }
                    _ => {}
                }
            }
        }
        if !decided {
            match c.call(&["REPLCONF", "capa", "eof"]).await {
                Ok(super::resp::Reply::Error(e)) => found.problems.push(psync_refused(&r, &e)),
                Err(e) => found.problems.push(format!("endpoint {}: {e}", ep.name)),
                _ => {}
            }
        }
    }
    if let Ok(cfg) = c.call(&["CONFIG", "GET", "repl-backlog-size"]).await {
        let size = cfg.items().get(1).and_then(super::resp::Reply::int).unwrap_or(0);
        if size > 0 && size < 16 << 20 {
            found.warnings.push(format!(
                "endpoint {}: repl-backlog-size is {} bytes: a ferry restart longer than the writes it holds needs a full resync\n  fix: CONFIG SET repl-backlog-size 256mb (and in redis.conf)",
                ep.name, size
            ));
        }
    }
    found.tables = vec![TargetTable { name: TableName::bare(format!("db{}", r.db)), columns: None }];
    found
}

fn psync_refused(ep: &RedisEndpoint, why: &str) -> String {
    format!(
        "endpoint {}: {} does not let ferry replicate (PSYNC): {why}\n  fix: allow replication for ferry's user (ACL SETUSER USER +psync +replconf +ping), or choose a standalone Redis that allows PSYNC; Redis Cluster and services that forbid PSYNC are not supported by this release",
        ep.name, ep.display
    )
}

/// Preflight as a target.
pub async fn target(ep: &Endpoint, _tables: &[TargetTable]) -> Vec<String> {
    let r = match RedisEndpoint::of(ep) {
        Ok(r) => r,
        Err(e) => return vec![e.to_string()],
    };
    match common(&r).await {
        Ok((_, problems, _)) => problems,
        Err(p) => p,
    }
}

/// What works as a target but less safely than it could.
pub async fn target_warnings(ep: &Endpoint) -> Vec<String> {
    let Ok(r) = RedisEndpoint::of(ep) else { return Vec::new() };
    let Ok((mut c, _, mut warnings)) = common(&r).await else { return Vec::new() };
    if let Ok(cfg) = c.call(&["CONFIG", "GET", "maxmemory-policy"]).await {
        let policy = cfg.items().get(1).and_then(super::resp::Reply::text).unwrap_or_default();
        if !policy.is_empty() && policy != "noeviction" {
            warnings.push(format!(
                "endpoint {}: maxmemory-policy is {policy}: the target may evict keys the source keeps, and they stay missing until `ferry verify --repair`\n  fix: CONFIG SET maxmemory-policy noeviction on the target",
                ep.name
            ));
        }
    }
    warnings
}

/// What two-way needs: scripts (the versions' compare-and-set).
pub async fn two_way(ep: &Endpoint) -> Vec<String> {
    let Ok(r) = RedisEndpoint::of(ep) else { return Vec::new() };
    let Ok(mut c) = r.connect().await else { return Vec::new() };
    match c.call(&["EVAL", "return 1", "0"]).await {
        Ok(super::resp::Reply::Error(e)) => vec![format!(
            "endpoint {}: two-way needs Lua scripts (the per-key versions' compare-and-set), and {} refused one: {e}\n  fix: allow EVAL/EVALSHA/SCRIPT for ferry's user",
            ep.name, r.display
        )],
        _ => Vec::new(),
    }
}
