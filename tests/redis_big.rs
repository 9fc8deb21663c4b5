//! Redis keys the target cannot `RESTORE` (a `DUMP` payload longer than its
//! `proto-max-bulk-len`) are written as ordinary commands: every type, several MB each
//! with TTLs, through a full resync with a SIGKILL in the middle of a big key, identical
//! on both sides by `DEBUG DIGEST-VALUE`; every encoding Redis writes decodes and rewrites
//! to the same value; a string longer than the target allows is refused by name.

use std::time::{Duration, Instant};

use ferry::connector::redis::resp::Reply;
use ferry::connector::redis::rewrite;

use crate::redis_sync::{populate_types, wait_log};
use crate::support::redis::{self, Client, Server, wait_identical};
use crate::support::{FerryRun, ferry_within};

/// The smallest `proto-max-bulk-len` Redis takes.
const LIMIT: &str = "1mb";
const BIG_LEN: i64 = 40_000;

fn random(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.u8(..)).collect()
}

fn cmd(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Keys of every type whose payloads are longer than 1 MB (random bytes: LZF cannot
/// shrink them), with expiries; and a string just under the limit.
async fn populate_big(c: &mut Client, expire_ms: i64) {
    let mut rng = fastrand::Rng::with_seed(19);
    let mut reqs = Vec::new();
    let s = random(&mut rng, (1 << 20) - 8);
    reqs.push(cmd(&[b"SET", b"big:str", &s]));
    for i in 0..BIG_LEN {
        let v = random(&mut rng, 60);
        reqs.push(cmd(&[b"RPUSH", b"big:list", &v]));
        reqs.push(cmd(&[b"HSET", b"big:hash", format!("f{i}").as_bytes(), &v]));
        reqs.push(cmd(&[b"SADD", b"big:set", &random(&mut rng, 48)]));
        let score = match i {
            0 => "inf".to_string(),
            1 => "-inf".into(),
            2 => "1e300".into(),
            3 => "0.1".into(),
            _ => format!("{}", i as f64 / 7.0),
        };
        reqs.push(cmd(&[b"ZADD", b"big:zset", score.as_bytes(), &random(&mut rng, 40)]));
        if i < BIG_LEN / 2 {
            reqs.push(cmd(&[b"XADD", b"big:stream", format!("{}-{}", 1000 + i / 3, i % 3).as_bytes(), b"f", &v]));
        }
    }
    c.pipe(&reqs).await;
    for w in [
        "XGROUP CREATE big:stream g1 0",
        "XGROUP CREATE big:stream g2 1005-0",
        "XGROUP CREATECONSUMER big:stream g2 bob",
        "XDEL big:stream 1002-1",
    ] {
        c.run(w).await;
    }
    c.run("XREADGROUP GROUP g1 alice COUNT 10 STREAMS big:stream >").await;
    c.run("XACK big:stream g1 1000-0").await;
    for k in ["big:str", "big:list", "big:hash", "big:zset", "big:stream"] {
        c.cmd(&["PEXPIREAT", k, &expire_ms.to_string()]).await;
    }
}

/// The lengths of the big keys on a side.
async fn lengths(c: &mut Client) -> Vec<i64> {
    let reqs: Vec<Vec<Vec<u8>>> =
        ["LLEN big:list", "HLEN big:hash", "SCARD big:set", "ZCARD big:zset", "XLEN big:stream"]
            .iter()
            .map(|w| w.split(' ').map(|x| x.as_bytes().to_vec()).collect())
            .collect();
    c.0.pipeline(&reqs).await.expect("lengths").iter().map(|r| r.int().unwrap_or(-1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_longer_than_the_targets_bulk_limit_are_rewritten_exactly_across_a_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Server::start(&dir.path().join("src"), &[]);
    let dst = Server::start(&dir.path().join("dst"), &["--proto-max-bulk-len", LIMIT]);
    let (url_a, url_b) = (src.url(0), dst.url(0));
    let mut a = Client::new(&url_a, 0).await;
    let mut b = Client::new(&url_b, 0).await;
    populate_types(&mut a, "small:").await;
    let expire = {
        let t = a.run("TIME").await.items();
        t[0].int().unwrap_or(0) * 1000 + 86_400_000
    };
    populate_big(&mut a, expire).await;
    let full = lengths(&mut a).await;
    assert!(full.iter().all(|n| *n > 10_000), "{full:?}");
    for k in ["big:str", "big:list", "big:hash", "big:set", "big:zset", "big:stream"] {
        let d = a.cmd(&["DUMP", k]).await.bytes().unwrap_or_default();
        assert!(d.len() > 1 << 20, "the DUMP payload of {k} is {} bytes, not longer than the target's limit", d.len());
    }
    let config = redis::task_file(dir.path(), &url_a, &url_b, "one-way", "\"*\"", "");
    let log = dir.path().join("ferry.log");

    // SIGKILL while a big key is half written: seen by one of its lengths between 0 and
    // the source's.
    let mut run = FerryRun::start(&config, &log);
    let start = Instant::now();
    let half = loop {
        let now = lengths(&mut b).await;
        if now.iter().zip(&full).any(|(n, f)| *n > 0 && n < f) {
            run.kill();
            break now;
        }
        assert!(
            now != full && start.elapsed() < Duration::from_secs(60),
            "never saw a big key half written ({now:?} of {full:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    // (A MULTI already sent may still land after the kill; what the restart must do is
    // the same either way.)
    let after_kill = lengths(&mut b).await;
    eprintln!("killed with the big keys' lengths at {half:?} (then {after_kill:?}) of {full:?}");

    // The restart copies everything again; each big key starts over from its DEL.
    let mut run = FerryRun::start(&config, &log);
    wait_identical(&mut a, &mut b, Duration::from_secs(90), "after the full resync").await;
    assert_eq!(lengths(&mut b).await, full, "no element doubled");
    let l = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        l.contains("what the target's RESTORE takes") && l.contains("proto_max_bulk_len") && l.contains("1048576"),
        "{l}"
    );
    assert!(l.contains("writing a key as ordinary commands") && l.contains("longer than the target's"), "{l}");
    // The stream's state beyond its entries (what verify compares) came along.
    for w in ["XINFO GROUPS big:stream", "XPENDING big:stream g1 - + 100 alice"] {
        let (x, y) = (a.run(w).await, b.run(w).await);
        assert_eq!(strip_times(x), strip_times(y), "{w}");
    }
    let out =
        ferry_within(&["verify", "--config", config.to_str().expect("utf-8 path")], Duration::from_secs(90)).await;
    assert_eq!(out.code, Some(0), "verify: {}", out.all());

    // A string longer than the target allows, written on the source: the direction stops
    // naming it (the target would drop the connection on such an argument).
    let mut rng = fastrand::Rng::with_seed(3);
    a.cmd(&[b"SET".as_slice(), b"big:toolong", &random(&mut rng, 3 << 20)]).await;
    wait_log(&log, "big:toolong", Duration::from_secs(60)).await;
    let l = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(l.contains("proto-max-bulk-len"), "{l}");
    run.terminate();

    // `verify --repair` rewrites damaged big keys the same way.
    a.run("DEL big:toolong").await;
    for w in ["LPOP big:list", "HDEL big:hash f5", "DEL big:zset", "SET big:str short", "XGROUP DESTROY big:stream g2"]
    {
        b.run(w).await;
    }
    let verify = |extra: &'static str| {
        let config = config.clone();
        async move {
            let mut args = vec!["verify", "--config", config.to_str().expect("utf-8 path")];
            args.extend(extra.split_whitespace());
            ferry_within(&args, Duration::from_secs(90)).await
        }
    };
    let out = verify("--repair").await;
    assert!(out.stdout.contains("5 repaired"), "{}", out.all());
    let out = verify("").await;
    assert_eq!(out.code, Some(0), "after the repair: {}", out.all());
    wait_identical(&mut a, &mut b, Duration::from_secs(10), "after the repair").await;
}

/// Reply items without the idle times and delivery times XPENDING shows (now-relative).
fn strip_times(r: Reply) -> String {
    let mut out = String::new();
    for x in r.items() {
        match x {
            Reply::Array(Some(v)) => {
                for (i, y) in v.into_iter().enumerate() {
                    if i != 2 {
                        out.push_str(&format!("{y:?} "));
                    }
                }
            }
            y => out.push_str(&format!("{y:?} ")),
        }
        out.push('|');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_rewrites_to_the_same_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("srv"), &[]);
    let mut a = Client::new(&srv.url(0), 0).await;
    let mut b = Client::new(&srv.url(1), 1).await;
    populate_types(&mut a, "").await;
    let reqs = vec![
        cmd(&[b"SET", b"s:lzf", &b"abc".repeat(400)]),
        cmd(&[b"SET", b"s:neg", b"-70000"]),
        cmd(&[b"XADD", b"x:empty", b"1-1", b"f", b"v"]),
        cmd(&[b"XDEL", b"x:empty", b"1-1"]),
        cmd(&[b"XGROUP", b"CREATE", b"x:grouped", b"g", b"0", b"MKSTREAM"]),
        cmd(&[b"ZADD", b"z:neg", b"-0.5", b"a", b"1e-300", b"b", b"12", b"c"]),
        cmd(&[b"RPUSH", b"l:ints", b"1", b"-1", b"300", b"-70000", b"5000000000", b"x"]),
        cmd(&[b"HSET", b"h:ints", b"1", b"-200", b"big", b"123456789012"]),
    ];
    a.pipe(&reqs).await;
    let keys = a.keys().await;
    assert!(keys.len() > 20);
    for k in &keys {
        let payload = a.cmd(&[b"DUMP".as_slice(), k]).await.bytes().expect("dump");
        let exp = a.cmd(&[b"PEXPIRETIME".as_slice(), k]).await.int().filter(|e| *e >= 0);
        let parts = rewrite::parts(k, &payload, exp, 1 << 20)
            .unwrap_or_else(|e| panic!("key {}: {e}", String::from_utf8_lossy(k)));
        for part in parts {
            b.pipe(&part).await;
        }
    }
    let (sa, sb) = (a.state().await, b.state().await);
    assert_eq!(sa, sb, "every key the same by DEBUG DIGEST-VALUE and expiry");
    for k in ["stream", "x:empty", "x:grouped"] {
        for w in [format!("XINFO STREAM {k}"), format!("XINFO GROUPS {k}")] {
            let (x, y) = (a.run(&w).await, b.run(&w).await);
            assert_eq!(stream_state(x), stream_state(y), "{w}");
        }
    }
}

/// An `XINFO` reply without the radix tree's sizes (they depend on how the stream was
/// built, not on its content).
fn stream_state(r: Reply) -> String {
    let items = r.items();
    if items.first().is_some_and(|x| matches!(x, Reply::Array(_))) {
        return format!("{items:?}");
    }
    items
        .chunks(2)
        .filter(|p| !p[0].text().unwrap_or_default().starts_with("radix-tree"))
        .map(|p| format!("{p:?}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_value_longer_than_the_targets_limit_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Server::start(&dir.path().join("a"), &[]);
    let dst = Server::start(&dir.path().join("b"), &["--proto-max-bulk-len", LIMIT]);
    let mut a = Client::new(&src.url(0), 0).await;
    let mut rng = fastrand::Rng::with_seed(5);
    let reqs: Vec<Vec<Vec<u8>>> = (0..30_000).map(|_| cmd(&[b"RPUSH", b"wide:list", &random(&mut rng, 60)])).collect();
    a.pipe(&reqs).await;
    let config = redis::task_file(dir.path(), &src.url(0), &dst.url(0), "two-way", "\"*\"", "");
    let log = dir.path().join("ferry.log");
    let mut run = FerryRun::start(&config, &log);
    // Not a connection dropped and retried forever: the direction stops naming the key.
    wait_log(&log, "wide:list", Duration::from_secs(60)).await;
    let l = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(l.contains("compare-and-set") && l.contains("proto-max-bulk-len (1048576)"), "{l}");
    run.terminate();
}
