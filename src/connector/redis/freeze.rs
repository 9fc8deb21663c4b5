//! Freezing a Redis endpoint for a cutover, and removing ferry's keys.
//!
//! `revoke`: every ACL user but the exempt ones and ferry's own loses its write commands
//! (`ACL SETUSER USER -@write`); each user's rules are saved first in `ferry:freeze` and
//! restored exactly (`ACL SETUSER USER reset RULES…`) when the freeze is lifted. The probe
//! asks `ACL DRYRUN` whether such a user could still write. `read-only`, for servers
//! without application users: `CLIENT PAUSE WRITE` (every client's writes wait, ferry's
//! too), lifted by `CLIENT UNPAUSE`; the probe is a write that must wait.

use std::time::Duration;

use super::resp::Reply;
use super::{FREEZE_KEY, RedisEndpoint};
use crate::connector::ConnectorError;
use crate::connector::registry::{FreezeOutcome, FreezeRequest};
use crate::model::{FreezeMethod, now_micros};

/// How long a `read-only` freeze pauses writes at most (lifted by unfreeze before).
const PAUSE_MS: &str = "86400000";

/// Stops application writes and probes that they are refused.
pub async fn freeze(ep: &RedisEndpoint, how: &FreezeRequest) -> Result<FreezeOutcome, ConnectorError> {
    let mut c = ep.connect().await?;
    let since = now_micros().to_string();
    match how.method {
        FreezeMethod::Revoke => {
            let me = ep.user.clone().unwrap_or_else(|| "default".into());
            let list = ep.call(&mut c, "listing ACL users (ACL LIST)", &["ACL", "LIST"]).await?;
            let mut saved: Vec<(String, String)> = Vec::new();
            for line in list.items().iter().filter_map(Reply::text) {
                let mut words = line.splitn(3, ' ');
                let (Some("user"), Some(name)) = (words.next(), words.next()) else { continue };
                let rules = words.next().unwrap_or("").to_string();
                if name == me || how.exempt_users.iter().any(|u| u == name) {
                    continue;
                }
                saved.push((name.to_string(), rules));
            }
            if saved.is_empty() {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!(
                        "{} has no application user to revoke writes from (ferry connects as {me:?}; every other user is exempt)",
                        ep.display
                    ),
                    fix: "give applications their own ACL users, or freeze with method = \"read-only\" (CLIENT PAUSE WRITE)".into(),
                });
            }
            // Frozen already: the rules saved the first time are the ones to restore.
            let before = ep.call(&mut c, "reading the freeze", &["HGET", FREEZE_KEY, "users"]).await?;
            if let Some(json) = before.bytes()
                && let Ok(earlier) = serde_json::from_slice::<Vec<(String, String)>>(&json)
            {
                for (name, rules) in earlier {
                    match saved.iter_mut().find(|(n, _)| *n == name) {
                        Some(s) => s.1 = rules,
                        None => saved.push((name, rules)),
                    }
                }
            }
            let json = serde_json::to_string(&saved).unwrap_or_default();
            ep.call(
                &mut c,
                "recording the freeze",
                &[
                    "HSET",
                    FREEZE_KEY,
                    "since_us",
                    since.as_str(),
                    "method",
                    "revoke",
                    "users",
                    json.as_str(),
                    "reason",
                    how.reason.as_str(),
                ],
            )
            .await?;
            for (name, _) in &saved {
                ep.call(&mut c, "revoking write commands (ACL SETUSER)", &["ACL", "SETUSER", name.as_str(), "-@write"])
                    .await?;
            }
            let probe = match c.call(&["ACL", "DRYRUN", saved[0].0.as_str(), "SET", "ferry:probe", "1"]).await {
                Ok(Reply::Status(_)) => Ok(Ok(())),
                Ok(Reply::Bulk(Some(why))) => Ok(Err(String::from_utf8_lossy(&why).into_owned())),
                Ok(Reply::Error(e)) => Err(ep.refused("ACL DRYRUN (the freeze's probe)", &e)),
                Ok(other) => Ok(Err(format!("{other:?}"))),
                Err(e) => Err(ep.io("probing the freeze")(e)),
            };
            Ok(FreezeOutcome { count: saved.len(), probe })
        }
        FreezeMethod::ReadOnly => {
            ep.call(
                &mut c,
                "recording the freeze",
                &["HSET", FREEZE_KEY, "since_us", since.as_str(), "method", "read-only", "reason", how.reason.as_str()],
            )
            .await?;
            ep.call(&mut c, "pausing writes (CLIENT PAUSE WRITE)", &["CLIENT", "PAUSE", PAUSE_MS, "WRITE"]).await?;
            // The probe: a write must wait (a paused client is answered only after UNPAUSE;
            // closing the connection drops it unrun).
            let mut p = ep.connect().await?;
            let mut req = Vec::new();
            super::resp::encode(&["SET", "ferry:probe", "1"], &mut req);
            let probe = match p.send(&req).await {
                Err(e) => Err(ep.io("probing the freeze")(e)),
                Ok(()) => match tokio::time::timeout(Duration::from_millis(500), p.r.reply()).await {
                    Err(_) => Ok(Err("the probe write waits (CLIENT PAUSE WRITE holds it)".to_string())),
                    Ok(Ok(Reply::Error(e))) => Ok(Err(e)),
                    Ok(Ok(_)) => Ok(Ok(())),
                    Ok(Err(e)) => Err(ep.io("probing the freeze")(e)),
                },
            };
            drop(p);
            Ok(FreezeOutcome { count: 1, probe })
        }
    }
}

/// Lifts a freeze (idempotent).
pub async fn unfreeze(ep: &RedisEndpoint) -> Result<(), ConnectorError> {
    let mut c = ep.connect().await?;
    // Unpausing first: under CLIENT PAUSE WRITE the record cannot be deleted.
    ep.call(&mut c, "lifting a pause (CLIENT UNPAUSE)", &["CLIENT", "UNPAUSE"]).await?;
    let r = ep.call(&mut c, "reading the freeze", &["HGET", FREEZE_KEY, "users"]).await?;
    if let Some(json) = r.bytes() {
        let saved: Vec<(String, String)> = serde_json::from_slice(&json).unwrap_or_default();
        for (name, rules) in saved {
            // ACL LIST describes a user from nothing: clear what it lists, then replay it
            // (not `reset`, which also changes the payload-sanitizing flag).
            let mut args: Vec<String> =
                ["ACL", "SETUSER", name.as_str(), "resetpass", "resetkeys", "resetchannels", "clearselectors", "-@all"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.extend(acl_words(&rules));
            ep.call(&mut c, &format!("restoring the rules of user {name:?}"), &args).await?;
        }
    }
    ep.call(&mut c, "removing the freeze record", &["DEL", FREEZE_KEY]).await?;
    Ok(())
}

/// The rules of an `ACL LIST` line, selectors (`(…)`) kept whole.
fn acl_words(rules: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for ch in rules.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ' ' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Since when the endpoint is frozen.
pub async fn frozen_since(ep: &RedisEndpoint) -> Result<Option<i64>, ConnectorError> {
    let mut c = ep.connect().await?;
    let r = ep.call(&mut c, "reading the freeze", &["HGET", FREEZE_KEY, "since_us"]).await?;
    Ok(r.int())
}

/// ferry's keys on the endpoint, one line each (versions counted, not listed).
pub async fn installed(ep: &RedisEndpoint) -> Result<Vec<String>, ConnectorError> {
    let keys = own_keys(ep).await?;
    let versions = keys.iter().filter(|k| k.starts_with(super::VERSION_PREFIX.as_bytes())).count();
    let mut out: Vec<String> = keys
        .iter()
        .filter(|k| !k.starts_with(super::VERSION_PREFIX.as_bytes()))
        .map(|k| format!("key {} (db {})", String::from_utf8_lossy(k), ep.db))
        .collect();
    out.sort();
    if versions > 0 {
        out.push(format!("{versions} per-key version keys ferry:v:* (db {})", ep.db));
    }
    Ok(out)
}

/// Removes ferry's keys; a frozen endpoint is refused.
pub async fn uninstall(ep: &RedisEndpoint) -> Result<Vec<String>, ConnectorError> {
    if frozen_since(ep).await?.is_some() {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!(
                "{} is frozen (ferry:freeze): removing ferry's keys would forget how to lift it",
                ep.display
            ),
            fix: "lift the freeze first (ferry cutover --abort, or ferry unfreeze), then uninstall".into(),
        });
    }
    let listed = installed(ep).await?;
    let keys = own_keys(ep).await?;
    let mut c = ep.connect().await?;
    for part in keys.chunks(500) {
        let mut args = vec![b"UNLINK".to_vec()];
        args.extend(part.iter().cloned());
        ep.call(&mut c, "removing ferry's keys", &args).await?;
    }
    Ok(listed)
}

async fn own_keys(ep: &RedisEndpoint) -> Result<Vec<Vec<u8>>, ConnectorError> {
    let mut c = ep.connect().await?;
    let mut out = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let r = ep
            .call(&mut c, "listing ferry's keys", &["SCAN", cursor.as_str(), "MATCH", "ferry:*", "COUNT", "1000"])
            .await?;
        let mut parts = r.items().into_iter();
        cursor = parts.next().and_then(|c| c.text()).unwrap_or_else(|| "0".into());
        out.extend(parts.next().map(Reply::items).unwrap_or_default().into_iter().filter_map(Reply::bytes));
        if cursor == "0" {
            break;
        }
    }
    Ok(out)
}
