//! Redis verify, repair and freeze: `ferry verify` finds every key that differs (extra,
//! missing, another value, another expiry) by canonical per-type hashes, `--quick` sees
//! the counts differ, `--repair` rewrites the keys from the source; a freeze revokes the
//! application users' writes (proven by ACL DRYRUN) and restores their rules exactly, or
//! pauses writes where ACLs are not used.

use std::time::Duration;

use ferry::connector::endpoint::{Endpoint, EndpointUrl};
use ferry::connector::registry::{self, FreezeRequest};
use ferry::model::{FreezeMethod, SiteId};

use crate::redis_sync::populate_types;
use crate::support::redis::{self, Client, Server, wait_identical};
use crate::support::{FerryRun, ferry_within};

async fn verify(config: &std::path::Path, extra: &[&str]) -> crate::support::Outcome {
    let mut args = vec!["verify", "--config", config.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    ferry_within(&args, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_names_each_differing_key_and_repair_rewrites_them() {
    redis::require();
    let (db_a, db_b) = (13, 14);
    let (url_a, url_b) = (format!("{}/{db_a}", redis::url_a()), format!("{}/{db_b}", redis::url_b()));
    let mut a = Client::new(&url_a, db_a).await;
    let mut b = Client::new(&url_b, db_b).await;
    a.run("FLUSHDB").await;
    b.run("FLUSHDB").await;
    populate_types(&mut a, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = redis::task_file(dir.path(), &url_a, &url_b, "one-way", "\"*\"", "");
    let mut run = FerryRun::start(&config, &dir.path().join("ferry.log"));
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after the sync").await;
    let out = verify(&config, &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("IDENTICAL"), "{}", out.all());
    assert_eq!(run.terminate(), Some(0));

    // Differences of every kind on the target; ferry's own keys are not among them.
    b.run("SET extra 1").await;
    b.run("HSET h:small f1 changed").await;
    b.run("DEL l:small").await;
    b.run("ZADD z:big 99 z1").await;
    b.run("PEXPIRE s:ttl 99999999").await;
    b.run("PERSIST s:ex").await;
    let out = verify(&config, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    for (key, why) in [
        ("extra", "only on the target"),
        ("h:small", "the hash values differ"),
        ("l:small", "missing on the target"),
        ("z:big", "the zset values differ"),
        ("s:ttl", "expiry differs"),
        ("s:ex", "expiry differs"),
    ] {
        assert!(out.stdout.contains(&format!("DIFF {key}: {why}")), "{key}: {}", out.all());
    }
    assert!(!out.stdout.contains("ferry:"), "{}", out.all());
    let out = verify(&config, &["--quick"]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let out = verify(&config, &["--repair"]).await;
    assert!(out.stdout.contains("6 repaired"), "{}", out.all());
    let out = verify(&config, &["--format", "json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(json["identical"], true);
    assert_eq!(json["item_tasks"][0]["differences"].as_array().map(Vec::len), Some(0));
    wait_identical(&mut a, &mut b, Duration::from_secs(5), "after the repair").await;
    a.run("FLUSHDB").await;
    b.run("FLUSHDB").await;
}

async fn acl_list(c: &mut Client) -> Vec<String> {
    c.0.call(&["ACL", "LIST"]).await.expect("acl list").items().iter().filter_map(|l| l.text()).collect()
}

/// An endpoint named `a` at `url`.
pub fn endpoint(url: String) -> Endpoint {
    Endpoint {
        name: "a".into(),
        site: SiteId::new("a"),
        url: EndpointUrl::new(url, "/"),
        password: None,
        ssh: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_revokes_application_writes_and_restores_them_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"), &[]);
    let mut admin = Client::new(&server.url(0), 0).await;
    admin.run("ACL SETUSER app on >apppw ~app:* &* +@all -flushall").await;
    admin.run("ACL SETUSER ops on >opspw ~* +@all").await;
    let before = acl_list(&mut admin).await;
    let ep = endpoint(server.url(0));
    let how = FreezeRequest {
        method: FreezeMethod::Revoke,
        exempt_users: vec!["ops".into()],
        reason: "test".into(),
        watch: Default::default(),
    };
    let out = registry::freeze(&ep, &how).await.expect("freeze");
    assert_eq!(out.count, 1, "app only: ops is exempt and ferry's own user keeps writing");
    let probe = out.probe.expect("probe ran");
    assert!(probe.as_ref().is_err_and(|m| m.contains("no permissions")), "{probe:?}");
    assert!(registry::frozen_since(&ep).await.expect("read").is_some());
    let mut app = Client::new(&server.url(0), 0).await;
    let r = app.0.call(&["AUTH", "app", "apppw"]).await.expect("auth");
    assert!(r.error().is_none());
    let refused = app.0.call(&["SET", "app:1", "x"]).await.expect("reply");
    assert!(refused.error().is_some_and(|e| e.starts_with("NOPERM")), "{refused:?}");
    // Freezing again keeps the rules saved the first time.
    registry::freeze(&ep, &how).await.expect("again");
    let e = registry::uninstall(&ep).await.expect_err("frozen");
    assert!(e.to_string().contains("is frozen"), "{e}");
    registry::unfreeze(&ep).await.expect("unfreeze");
    registry::unfreeze(&ep).await.expect("unfreeze twice");
    assert_eq!(acl_list(&mut admin).await, before, "every user's rules as they were");
    assert!(app.0.call(&["SET", "app:1", "x"]).await.expect("reply").error().is_none());
    assert!(registry::frozen_since(&ep).await.expect("read").is_none());

    // Without application users: writes pause (a write waits) until unfrozen.
    let how = FreezeRequest {
        method: FreezeMethod::ReadOnly,
        exempt_users: Vec::new(),
        reason: "test".into(),
        watch: Default::default(),
    };
    let out = registry::freeze(&ep, &how).await.expect("freeze");
    assert!(out.probe.expect("probe").is_err_and(|m| m.contains("waits")));
    let mut writer = Client::new(&server.url(0), 0).await;
    let pending = tokio::spawn(async move { writer.0.call(&["SET", "k", "v"]).await.map(|r| r.error().is_none()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "a write waits while frozen");
    registry::unfreeze(&ep).await.expect("unfreeze");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("the write goes through")
            .expect("task")
            .expect("reply")
    );
    let listed = registry::installed(&ep).await.expect("installed");
    assert!(listed.iter().all(|l| l.contains("ferry:")), "{listed:?}");
    registry::uninstall(&ep).await.expect("uninstall");
    assert!(registry::installed(&ep).await.expect("installed").is_empty());
}
