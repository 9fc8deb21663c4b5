//! Redis two-way: both sides written at once, whole-value writes and merging commands on
//! the same keys, with a SIGKILL in between (the stream continues) and another after
//! which both sides' backlogs are gone (both directions copy everything again while the
//! writers go on); afterwards both sides are identical by `DEBUG DIGEST-VALUE`, nothing
//! loops, and conflicts are in `ferry:conflicts` on each side. The servers are the
//! test's own: a full resync needs a backlog that other tests' replicas do not hold on to. The merge policy (docs/redis.md): a merging command is carried as the key's
//! whole value after it; when both sides changed a key concurrently, the later version
//! wins whole and the other side's merge is lost (logged as a conflict).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::redis_sync::populate_types;
use crate::support::FerryRun;
use crate::support::redis::{self, Client, Server, wait_identical};

/// Starts `ferry run` and waits until it runs (and so stops cleanly on SIGTERM).
async fn start(config: &std::path::Path, log: &std::path::Path) -> FerryRun {
    let count = || std::fs::read_to_string(log).unwrap_or_default().matches("running; stop with Ctrl-C").count();
    let before = count();
    let run = FerryRun::start(config, log);
    let t = std::time::Instant::now();
    while count() == before {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "ferry did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run
}

/// Writes on one side until `stop`: whole values and merging commands on shared keys.
async fn writer(url: String, db: u32, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut c = Client::new(&url, db).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.u32(0..12);
        let cmd = match rng.u32(0..12) {
            0 | 1 => format!("SET w{k} {seed}-{n}"),
            2 => format!("SET w{k} {seed}-{n} PX 600000"),
            3 => format!("DEL w{k}"),
            4 => format!("PERSIST w{k}"),
            5 => format!("INCR m:c{k}"),
            6 => format!("APPEND m:a{k} {seed}"),
            7 => format!("SADD m:s{k} {seed}-{}", n % 5),
            8 => format!("HSET m:h{k} f{} {seed}", n % 4),
            9 => format!("LPUSH m:l{k} {seed}"),
            10 => format!("ZINCRBY m:z{k} 1 {seed}"),
            _ => format!("EXPIRE w{k} 900"),
        };
        let a: Vec<&str> = cmd.split(' ').collect();
        let _ = c.0.call(&a).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    n
}

/// How many times the log says a direction copies everything again.
fn resyncs(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("copying everything again (full resync)").count()
}

/// Waits until the log names `n` full resyncs.
async fn wait_resyncs(log: &std::path::Path, n: usize) {
    let t = std::time::Instant::now();
    while resyncs(log) < n {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{n} full resyncs expected in the log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes more than a server's replication backlog (1 MB by default) into a database the
/// task does not carry, so a restarted ferry cannot continue its stream.
async fn overrun_backlog(url: &str) {
    let mut c = Client::new(url, 9).await;
    let fill: Vec<Vec<Vec<u8>>> =
        (0..2500).map(|i| vec![b"SET".to_vec(), format!("fill:{i}").into_bytes(), vec![b'x'; 600]]).collect();
    c.pipe(&fill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_sides_written_at_once_converge_and_log_their_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_a = Server::start(&dir.path().join("a"), &[]);
    let server_b = Server::start(&dir.path().join("b"), &[]);
    // Database 3 on A is database 5 on B.
    let (db_a, db_b) = (3, 5);
    let (url_a, url_b) = (server_a.url(db_a), server_b.url(db_b));
    let mut a = Client::new(&url_a, db_a).await;
    let mut b = Client::new(&url_b, db_b).await;
    // Each side starts with data of its own, and a key both have with other values.
    populate_types(&mut a, "a:").await;
    populate_types(&mut b, "b:").await;
    a.run("SET both from-a").await;
    b.run("SET both from-b").await;
    let config = redis::task_file(dir.path(), &url_a, &url_b, "two-way", "\"*\"", "");
    let log = dir.path().join("ferry.log");
    let mut run = start(&config, &log).await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after both snapshots").await;
    assert!(a.run("EXISTS a:l:big b:l:big").await.int() == Some(2), "each side's keys reached the other");

    // Racing writers on both sides, with a SIGKILL in the middle (the streams continue),
    // and another after which both backlogs are overrun: both directions copy everything
    // again while the writers go on.
    let stop = Arc::new(AtomicBool::new(false));
    let wa = tokio::spawn(writer(url_a.clone(), db_a, stop.clone(), 1));
    let wb = tokio::spawn(writer(url_b.clone(), db_b, stop.clone(), 2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut run = start(&config, &log).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        resyncs(&log),
        0,
        "the restart continued both streams:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    run.kill();
    overrun_backlog(&url_a).await;
    overrun_backlog(&url_b).await;
    let mut run = start(&config, &log).await;
    wait_resyncs(&log, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (na, nb) = (wa.await.expect("writer a"), wb.await.expect("writer b"));
    assert!(na > 100 && nb > 100, "writers ran {na} and {nb} commands");
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after racing writers").await;
    let ca = a.run("XLEN ferry:conflicts").await.int().unwrap_or(0);
    let cb = b.run("XLEN ferry:conflicts").await.int().unwrap_or(0);
    assert!(ca > 0 && cb > 0, "conflicts are logged on each side ({ca}, {cb})");

    // A full resync in two-way mode: with ferry stopped, A deletes a key that came from B
    // and writes more than its backlog holds; the resync carries the deletion (a
    // tombstone) to B rather than bringing the key back.
    assert_eq!(run.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    a.run("DEL b:s:int").await;
    overrun_backlog(&url_a).await;
    let before = resyncs(&log);
    let mut run = start(&config, &log).await;
    wait_resyncs(&log, before + 1).await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after a two-way full resync").await;
    assert_eq!(b.run("EXISTS b:s:int").await.int(), Some(0), "the deletion reached B");

    // The merge policy, deterministically: ferry stopped, both sides increment the same
    // counter; once running again the two whole values meet, the later version wins on
    // both sides and the other increment is lost, logged as a conflict on each side.
    assert_eq!(run.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    a.run("SET merge:n 100").await;
    b.run("SET merge:n 100").await;
    let mut run = start(&config, &log).await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "before the merge").await;
    assert_eq!(run.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let (before_a, before_b) = (a.run("XLEN ferry:conflicts").await.int(), b.run("XLEN ferry:conflicts").await.int());
    a.run("INCRBY merge:n 1").await;
    b.run("INCRBY merge:n 10").await;
    let mut run = start(&config, &log).await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after concurrent increments").await;
    let n = a.run("GET merge:n").await.int();
    assert!(n == Some(101) || n == Some(110), "one side's whole value won, not a sum: {n:?}");
    assert!(
        a.run("XLEN ferry:conflicts").await.int() > before_a && b.run("XLEN ferry:conflicts").await.int() > before_b
    );
    // Sequential merges are not conflicts: each side's increment reaches the other.
    a.run("INCRBY merge:n 1000").await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after a sequential increment").await;
    b.run("INCRBY merge:n 1000").await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after another").await;
    assert_eq!(b.run("GET merge:n").await.int(), n.map(|n| n + 2000));
    assert_eq!(run.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
}
