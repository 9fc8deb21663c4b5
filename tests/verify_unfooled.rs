//! `ferry verify` cannot be fooled by rows whose differences pt-table-checksum's
//! `BIT_XOR(CRC32(CONCAT_WS('#', …)))` hides: a separator moved between two columns
//! (`('p#','q')` vs `('p','#q')`), two rows that swap values of the same length (CRC
//! is linear, so their XOR is equal), and two values whose row texts share a CRC32
//! (a 32-bit hash lets them pass; ferry's 64-bit one does not). On MariaDB pairs (in
//! the database) and SQLite pairs (ferry's own hashing of the row text).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::mariadb::{Cleanup, admin, database, rows, shared_a, shared_b, task_file};
use crate::support::{Outcome, create_db, ferry_within};

const LIMIT: Duration = Duration::from_secs(120);

/// CRC-32 (IEEE), as MySQL's `CRC32()` computes it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// Two different values `v1`, `v2` whose rows `1#v1` and `1#v2` (the row text of
/// `(id=1, v)` in pt-table-checksum's form) have the same CRC32 (found by a birthday
/// search over `c{hex}`; checked here).
fn crc32_twins() -> (String, String) {
    let (a, b) = ("ca6c8e".to_string(), "c610028".to_string());
    assert_eq!(crc32(format!("1#{a}").as_bytes()), crc32(format!("1#{b}").as_bytes()), "the twins share a CRC32");
    (a, b)
}

/// (table, kind, key) of every confirmed difference of a JSON report.
fn confirmed(out: &Outcome) -> BTreeSet<(String, String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is one JSON report ({e}): {}", out.all()));
    let mut found = BTreeSet::new();
    for task in v["tasks"].as_array().expect("tasks") {
        for t in task["tables"].as_array().expect("tables") {
            let table = t["table"].as_str().unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
            for d in t["confirmed"].as_array().expect("confirmed") {
                found.insert((
                    table.clone(),
                    d["kind"].as_str().unwrap_or("").into(),
                    d["key"].as_str().unwrap_or("").into(),
                ));
            }
        }
    }
    found
}

/// What verify must find on both stores.
fn expected() -> BTreeSet<(String, String, String)> {
    [("sep", "(1)"), ("swap", "(1)"), ("swap", "(2)"), ("twins", "(1)")]
        .into_iter()
        .map(|(t, k)| (t.to_string(), "different".to_string(), k.to_string()))
        .collect()
}

/// The statements creating the three tables with side `a`'s or `b`'s rows.
fn statements(side_a: bool, twins: &(String, String)) -> Vec<String> {
    let (sep, swap, twin) = if side_a {
        ("(1, 'p#', 'q')", "(1, 'xx'), (2, 'yy')", &twins.0)
    } else {
        ("(1, 'p', '#q')", "(1, 'yy'), (2, 'xx')", &twins.1)
    };
    vec![
        "CREATE TABLE sep (id INT NOT NULL PRIMARY KEY, a VARCHAR(10) NOT NULL, b VARCHAR(10) NOT NULL)".into(),
        format!("INSERT INTO sep VALUES {sep}"),
        "CREATE TABLE swap (id INT NOT NULL PRIMARY KEY, v VARCHAR(10) NOT NULL)".into(),
        format!("INSERT INTO swap VALUES {swap}"),
        "CREATE TABLE twins (id INT NOT NULL PRIMARY KEY, v VARCHAR(20) NOT NULL)".into(),
        format!("INSERT INTO twins VALUES (1, '{twin}')"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_pair_sees_moved_separators_swapped_values_and_crc32_twins() {
    let twins = crc32_twins();
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = database(&shared_a(), "vunf", &mut ca).await;
    cb.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&shared_b(), &[format!("CREATE DATABASE `{db}`")]).await;
    for (url, side_a) in [(shared_a(), true), (shared_b(), false)] {
        let mut s = vec![format!("USE `{db}`"), "SET SESSION sql_log_bin = 0".into()];
        s.extend(statements(side_a, &twins));
        // Single-byte text can hold 0xFF, ferry's separator: its length must tell.
        let sep_ff = if side_a { "(1, 'pÿ', 'q')" } else { "(1, 'p', 'ÿq')" };
        s.push("CREATE TABLE sepff (id INT NOT NULL PRIMARY KEY, a VARCHAR(10) CHARACTER SET latin1 NOT NULL, b VARCHAR(10) CHARACTER SET latin1 NOT NULL)".into());
        s.push(format!("INSERT INTO sepff VALUES {sep_ff}"));
        admin(&url, &s).await;
    }
    // The cases are real: pt-table-checksum's row checksums agree on all three tables.
    let old =
        |t: &str, cols: &str| format!("SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', {cols}))) FROM `{db}`.`{t}`");
    for (t, cols) in [("sep", "id, a, b"), ("swap", "id, v"), ("twins", "id, v")] {
        let (a, b) = (rows(&shared_a(), &old(t, cols)).await, rows(&shared_b(), &old(t, cols)).await);
        assert_eq!(a, b, "the old checksum of {t} agrees on both sides");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let (url_a, url_b) = (format!("{}/{db}", shared_a()), format!("{}/{db}", shared_b()));
    let config = task_file(dir.path(), &url_a, &url_b, "one-way", &[&format!("{db}.*")], "");
    let out = ferry_within(&["verify", "--config", config.to_str().expect("utf-8"), "--format", "json"], LIMIT).await;
    assert_eq!(out.code, Some(1), "differences exit 1: {}", out.all());
    assert!(out.stdout.contains("\"in-database\""), "compared inside the database: {}", out.stdout);
    let mut want = expected();
    want.insert(("sepff".into(), "different".into(), "(1)".into()));
    assert_eq!(confirmed(&out), want, "{}", out.all());
}

#[tokio::test]
async fn sqlite_pair_sees_moved_separators_swapped_values_and_crc32_twins() {
    let twins = crc32_twins();
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, side_a) in [("a.db", true), ("b.db", false)] {
        let sql: Vec<String> = statements(side_a, &twins).into_iter().map(|s| format!("{s};")).collect();
        create_db(&dir.path().join(file), &sql.concat()).await;
    }
    let config = crate::support::task_file(dir.path(), "one-way", "");
    let out = ferry_within(&["verify", "--config", config.to_str().expect("utf-8"), "--format", "json"], LIMIT).await;
    assert_eq!(out.code, Some(1), "differences exit 1: {}", out.all());
    assert_eq!(confirmed(&out), expected(), "{}", out.all());
}
