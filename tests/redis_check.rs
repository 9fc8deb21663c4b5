//! Redis bad input: an unreachable server, a refused login, a user that may not
//! replicate (PSYNC refused) and Redis Cluster are each named by `ferry check` with the
//! fix, and `ferry run` stops on them without writing anything.

use std::time::Duration;

use crate::support::redis::{self, Client, Server};
use crate::support::{FerryRun, ferry_within};

async fn check(dir: &std::path::Path, a: &str, b: &str) -> crate::support::Outcome {
    let config = redis::task_file(dir, a, b, "one-way", "\"*\"", "");
    ferry_within(&["check", "--config", config.to_str().expect("utf-8 path")], Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_servers_and_accounts_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = Server::start(&dir.path().join("good"), &[]);
    let locked = Server::start(&dir.path().join("locked"), &["--requirepass", "s3cret"]);
    let cluster = Server::start(
        &dir.path().join("cluster"),
        &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
    );
    let mut admin = Client::new(&good.url(0), 0).await;
    admin.run("ACL SETUSER app on >pw ~* &* +@all -psync -replconf -sync").await;

    let nowhere = format!("redis://127.0.0.1:{}/0", redis::free_port());
    let out = check(dir.path(), &nowhere, &good.url(1)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("cannot reach the Redis server") && out.stderr.contains("fix:"), "{}", out.all());

    let no_password = format!("redis://127.0.0.1:{}/0", locked.port);
    let out = check(dir.path(), &no_password, &good.url(1)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("asks for a password"), "{}", out.all());
    let wrong = format!("redis://:nope@127.0.0.1:{}/0", locked.port);
    let out = check(dir.path(), &wrong, &good.url(1)).await;
    assert!(out.stderr.contains("refused the login") && !out.stderr.contains("nope"), "{}", out.all());

    let no_psync = format!("redis://app:pw@127.0.0.1:{}/0", good.port);
    let out = check(dir.path(), &no_psync, &good.url(1)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("does not let ferry replicate (PSYNC)") && out.stderr.contains("+psync"),
        "{}",
        out.all()
    );
    // `ferry run` stops on it too, and writes nothing to the target.
    let config = redis::task_file(dir.path(), &no_psync, &good.url(1), "one-way", "\"*\"", "");
    let log = dir.path().join("run.log");
    let mut run = FerryRun::start(&config, &log);
    let start = std::time::Instant::now();
    while !run.exited() {
        assert!(start.elapsed() < Duration::from_secs(30), "ferry run did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(l.contains("does not let ferry replicate (PSYNC)") && l.contains("nothing was changed"), "{l}");
    let mut target = Client::new(&good.url(1), 1).await;
    assert!(target.keys().await.is_empty());

    let out = check(dir.path(), &cluster.url(0), &good.url(1)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("runs in cluster mode") && out.stderr.contains("standalone"), "{}", out.all());
}
