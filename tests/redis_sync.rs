//! Redis one-way: a full resync of every type (with TTLs, 100k keys and a 50 MB key),
//! then the command stream, with `ferry run` SIGKILLed during the full resync and during
//! streaming; a source restart with and without its backlog; ferry's own keys never
//! carried; both sides identical by `DEBUG DIGEST-VALUE` of every key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::FerryRun;
use crate::support::redis::{self, Client, Server, wait_identical};

fn words(s: &str) -> Vec<Vec<u8>> {
    s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

/// Every type and encoding, with expiries.
pub async fn populate_types(c: &mut Client, prefix: &str) {
    let p = prefix;
    let mut reqs: Vec<Vec<Vec<u8>>> = vec![
        words(&format!("SET {p}s:int 12345")),
        vec![b"SET".to_vec(), format!("{p}s:bin").into_bytes(), b"a\0b\r\nc\xff".to_vec()],
        words(&format!("SET {p}s:ttl v PX 3600000")),
        words(&format!("SET {p}s:ex v EX 7200")),
        words(&format!("RPUSH {p}l:small a b c 1 2 3")),
        words(&format!("HSET {p}h:small f1 v1 f2 2")),
        words(&format!("SADD {p}set:int 1 2 3 99999")),
        words(&format!("SADD {p}set:str a b c")),
        words(&format!("ZADD {p}z:small 1 a 2.5 b -3 c")),
        words(&format!("PFADD {p}hll a b c d")),
        words(&format!("SETBIT {p}bits 100 1")),
        words(&format!("GEOADD {p}geo 13.361389 38.115556 palermo")),
    ];
    let mut big_list = words(&format!("RPUSH {p}l:big"));
    let mut big_hash = words(&format!("HSET {p}h:big"));
    let mut big_set = words(&format!("SADD {p}set:big"));
    let mut big_z = words(&format!("ZADD {p}z:big"));
    for i in 0..1500 {
        big_list.push(format!("item-{i}-{}", "x".repeat(i % 50)).into_bytes());
        big_hash.push(format!("field{i}").into_bytes());
        big_hash.push(format!("value{i}").into_bytes());
        big_set.push(format!("m{i}").into_bytes());
        big_z.push(format!("{}", i as f64 / 7.0).into_bytes());
        big_z.push(format!("z{i}").into_bytes());
    }
    reqs.extend([big_list, big_hash, big_set, big_z]);
    reqs.push(words(&format!("EXPIRE {p}h:big 86400")));
    for i in 0..20 {
        reqs.push(words(&format!("XADD {p}stream {}-1 f {i} g x{i}", 1000 + i)));
    }
    reqs.push(words(&format!("XGROUP CREATE {p}stream grp 0")));
    reqs.push(words(&format!("XREADGROUP GROUP grp alice COUNT 5 STREAMS {p}stream >")));
    reqs.push(words(&format!("XACK {p}stream grp 1000-1")));
    reqs.push(words(&format!("XDEL {p}stream 1010-1")));
    c.pipe(&reqs).await;
}

/// 100k small keys and one 50 MB key that does not compress.
async fn populate_bulk(c: &mut Client) {
    let reqs: Vec<Vec<Vec<u8>>> = (0..100_000)
        .map(|i| vec![b"SET".to_vec(), format!("bulk:{i}").into_bytes(), format!("v{i}").into_bytes()])
        .collect();
    c.pipe(&reqs).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let blob: Vec<u8> = (0..50 << 20).map(|_| rng.u8(..)).collect();
    c.cmd(&[b"SET".as_slice(), b"big:blob", &blob]).await;
}

/// Writes commands of every kind until `stop`; returns how many it ran.
pub async fn write_mix(url: String, db: u32, prefix: String, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut c = Client::new(&url, db).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let p = prefix;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.u32(0..40);
        let cmd = match rng.u32(0..22) {
            0 => format!("SET {p}k{k} v{n}"),
            1 => format!("SET {p}k{k} v{n} EX 3000"),
            2 => format!("INCR {p}c{k}"),
            3 => format!("APPEND {p}k{k} +{n}"),
            4 => format!("DEL {p}k{k} {p}c{k}"),
            5 => format!("EXPIRE {p}k{k} 5000"),
            6 => format!("PERSIST {p}k{k}"),
            7 => format!("LPUSH {p}l{k} a{n} b{n}"),
            8 => format!("LTRIM {p}l{k} 0 5"),
            9 => format!("HSET {p}h{k} f{} {n}", n % 7),
            10 => format!("HDEL {p}h{k} f{}", n % 5),
            11 => format!("SADD {p}s{k} m{} m{}", n % 9, n % 4),
            12 => format!("SREM {p}s{k} m{}", n % 9),
            13 => format!("ZADD {p}z{k} {} m{}", n % 100, n % 6),
            14 => format!("ZINCRBY {p}z{k} 1.5 m{}", n % 6),
            15 => format!("XADD {p}x{k} * n {n}"),
            16 => format!("RENAME {p}k{k} {p}k{}", (k + 1) % 40),
            17 => format!("GETDEL {p}k{k}"),
            18 => format!("SETEX {p}e{k} 4000 v{n}"),
            19 => format!("HINCRBYFLOAT {p}h{k} f9 0.25"),
            20 => format!("MSET {p}m{k} a{n} {p}m{} b{n}", k + 1),
            _ => format!("SPOP {p}s{k}"),
        };
        if rng.u32(0..15) == 0 {
            // A transaction of several commands.
            let _ = c.0.call(&["MULTI"]).await;
            for w in [format!("INCR {p}tx{k}"), format!("SET {p}ty{k} {n}"), cmd] {
                let a: Vec<&str> = w.split(' ').collect();
                let _ = c.0.call(&a).await;
            }
            let _ = c.0.call(&["EXEC"]).await;
        } else {
            let a: Vec<&str> = cmd.split(' ').collect();
            let _ = c.0.call(&a).await;
        }
        n += 1;
        if n.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    n
}

/// Waits until the log has a line with `text`.
pub async fn wait_log(log: &std::path::Path, text: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let l = std::fs::read_to_string(log).unwrap_or_default();
        if l.contains(text) {
            return;
        }
        assert!(start.elapsed() < limit, "no {text:?} in the log after {limit:?}:\n{l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_type_syncs_through_a_full_resync_and_the_stream_across_sigkills() {
    redis::require();
    let (db_a, db_b) = (11, 12);
    let (url_a, url_b) = (format!("{}/{db_a}", redis::url_a()), format!("{}/{db_b}", redis::url_b()));
    let mut a = Client::new(&url_a, db_a).await;
    let mut b = Client::new(&url_b, db_b).await;
    a.run("FLUSHDB").await;
    b.run("FLUSHDB").await;
    // The target holds a key the source does not: the full resync removes it.
    b.run("SET stale:key left-over").await;
    populate_types(&mut a, "").await;
    populate_bulk(&mut a).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = redis::task_file(dir.path(), &url_a, &url_b, "one-way", "\"*\"", "");
    let log = dir.path().join("ferry.log");

    // SIGKILL while the RDB is being applied.
    let mut run = FerryRun::start(&config, &log);
    let start = Instant::now();
    while b.keys().await.len() < 10 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.kill();
    let mut run = FerryRun::start(&config, &log);
    wait_identical(&mut a, &mut b, Duration::from_secs(60), "after the full resync").await;
    assert_eq!(b.run("EXISTS stale:key").await.int(), Some(0), "the full resync removed the target's extra key");

    // The stream, with a SIGKILL in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_mix(url_a.clone(), db_a, "w:".into(), stop.clone(), 1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut run = FerryRun::start(&config, &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let n = writer.await.expect("writer");
    assert!(n > 100, "the writer ran {n} commands");
    // Expired-key deletions and a FLUSH of a pattern-free db go through the stream too.
    a.run("PEXPIRE s:int 50").await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after streaming").await;
    assert_eq!(b.run("EXISTS s:int").await.int(), Some(0));
    let l = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(l.contains("PSYNC +CONTINUE"), "the restart continued the stream:\n{l}");
    assert_eq!(run.terminate(), Some(0));
    // ferry's keys are never carried: the source's heartbeat is not on the target.
    assert_eq!(b.run("EXISTS ferry:heartbeat:dc-a").await.int(), Some(0));
    a.run("FLUSHDB").await;
    b.run("FLUSHDB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_restart_continues_with_its_backlog_and_resyncs_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut src = Server::start(&dir.path().join("src"), &["--repl-backlog-size", "16kb"]);
    let dst = Server::start(&dir.path().join("dst"), &[]);
    let (url_a, url_b) = (src.url(0), dst.url(0));
    let mut a = Client::new(&url_a, 0).await;
    let mut b = Client::new(&url_b, 0).await;
    populate_types(&mut a, "").await;
    let config = redis::task_file(dir.path(), &url_a, &url_b, "one-way", "\"*\"", "");
    let log = dir.path().join("ferry.log");
    let mut run = FerryRun::start(&config, &log);
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after the first sync").await;

    // With its backlog: the source shuts down (saving its RDB, which keeps the replication
    // id and offset, after waiting for its replicas, ferry among them, to acknowledge
    // everything) and comes back; ferry retries and continues the stream.
    src.shutdown_save().await;
    src.restart();
    let mut a = Client::new(&url_a, 0).await;
    a.run("SET after:restart 1").await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after the restart with backlog").await;
    wait_log(&log, "PSYNC +CONTINUE", Duration::from_secs(10)).await;

    // Without it: ferry is stopped while far more than the backlog is written, and keys
    // are deleted; its next start gets a full resync, which also removes those keys.
    assert_eq!(run.terminate(), Some(0));
    a.run("DEL l:small h:small").await;
    let reqs: Vec<Vec<Vec<u8>>> =
        (0..2000).map(|i| vec![b"SET".to_vec(), format!("fill:{i}").into_bytes(), vec![b'x'; 100]]).collect();
    a.pipe(&reqs).await;
    let mut run = FerryRun::start(&config, &log);
    wait_log(&log, "copying everything again (full resync)", Duration::from_secs(30)).await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after the resync without backlog").await;
    assert_eq!(b.run("EXISTS l:small").await.int(), Some(0));
    assert_eq!(run.terminate(), Some(0));
}
