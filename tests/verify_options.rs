//! `ferry verify`'s options on SQLite pairs: `--quick` compares counts and key extents,
//! `--tables` narrows the task's tables, `[[task.map]]` renames are followed, and
//! `--max-rows-per-sec` holds the read rate.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Outcome, create_db, ferry_within, task_file};

const LIMIT: Duration = Duration::from_secs(60);

async fn verify(config: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["verify", "--config", config.to_str().expect("utf-8"), "--format", "json"];
    args.extend_from_slice(extra);
    ferry_within(&args, LIMIT).await
}

fn json(out: &Outcome) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is one JSON report ({e}): {}", out.all()))
}

fn rows(n: i64) -> String {
    format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<{n}) INSERT INTO kv SELECT x, 'v'||x FROM c;"
    )
}

#[tokio::test]
async fn quick_compares_counts_and_key_extents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);";
    create_db(&dir.path().join("a.db"), &format!("{schema}{}", rows(1000))).await;
    // Same count and extent, one value different: quick cannot see it, a full verify can.
    create_db(&dir.path().join("b.db"), &format!("{schema}{} UPDATE kv SET v = 'x' WHERE k = 500;", rows(1000))).await;
    let config = task_file(dir.path(), "one-way", "");
    let out = verify(&config, &["--quick"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v = json(&out);
    let t = &v["tasks"][0]["tables"][0];
    assert_eq!(t["method"], "quick");
    assert_eq!(t["quick"][0]["rows"], 1000);
    assert_eq!(t["quick"][1]["max_key"], "(1000)");
    let out = verify(&config, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());

    create_db(&dir.path().join("b.db"), "DELETE FROM kv WHERE k = 1000;").await;
    let out = verify(&config, &["--quick"]).await;
    assert_eq!(out.code, Some(1), "a count or extent mismatch exits 1: {}", out.all());
    let v = json(&out);
    assert_eq!(v["tasks"][0]["tables"][0]["quick"][1]["max_key"], "(999)");
    assert!(v["tasks"][0]["tables"][0]["problems"][0].as_str().is_some_and(|p| p.contains("differs")), "{v}");
}

#[tokio::test]
async fn tables_narrow_and_maps_rename() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); CREATE TABLE other(id INTEGER PRIMARY KEY);";
    create_db(&dir.path().join("a.db"), &format!("{schema}{} INSERT INTO other VALUES (1);", rows(100))).await;
    create_db(
        &dir.path().join("b.db"),
        &format!(
            "CREATE TABLE kv2(k INTEGER PRIMARY KEY, value TEXT); CREATE TABLE other(id INTEGER PRIMARY KEY); {} \
             INSERT INTO kv2 SELECT * FROM kv; DROP TABLE kv;",
            "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);".to_string() + &rows(100)
        ),
    )
    .await;
    let config =
        task_file(dir.path(), "one-way", "[[task.map]]\nfrom = \"kv\"\nto = \"kv2\"\ncolumns = { v = \"value\" }");
    let out = verify(&config, &[]).await;
    assert_eq!(out.code, Some(1), "table other differs (row 1 missing): {}", out.all());
    let v = json(&out);
    let tables: Vec<(String, String)> = v["tasks"][0]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| (t["table"].as_str().unwrap_or("").into(), t["target_table"].as_str().unwrap_or("").into()))
        .collect();
    assert_eq!(tables, vec![("kv".into(), "kv2".into()), ("other".into(), "other".into())]);
    let out = verify(&config, &["--tables", "k*"]).await;
    assert_eq!(out.code, Some(0), "the renamed table is identical: {}", out.all());
    assert_eq!(json(&out)["tasks"][0]["tables"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn max_rows_per_sec_holds_the_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);";
    create_db(&dir.path().join("a.db"), &format!("{schema}{}", rows(20_000))).await;
    create_db(&dir.path().join("b.db"), &format!("{schema}{}", rows(20_000))).await;
    let config = task_file(dir.path(), "one-way", "");
    let start = Instant::now();
    let out = verify(&config, &["--max-rows-per-sec", "10000"]).await;
    let took = start.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(took >= Duration::from_millis(1900), "20,000 rows at 10,000 rows/s take 2 s, took {took:?}");
}

#[tokio::test]
async fn mariadb_text_keys_with_different_collations_are_compared_in_byte_order() {
    use crate::support::mariadb::{Cleanup, admin, database, shared_a, shared_b};
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = database(&shared_a(), "vcoll", &mut ca).await;
    cb.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&shared_b(), &[format!("CREATE DATABASE `{db}`")]).await;
    // 'a' < 'B' < 'c' case-insensitively, 'B' < 'a' < 'c' by bytes: chunk ranges of one
    // side's order would hold other keys on the other side.
    let values: Vec<String> = (0..60_000).map(|i| format!("('{}{i:06}', {i})", ["a", "B", "c", "D"][i % 4])).collect();
    for (url, coll) in [(shared_a(), "utf8mb4_general_ci"), (shared_b(), "utf8mb4_bin")] {
        admin(
            &url,
            &[
                format!("CREATE TABLE `{db}`.t (code VARCHAR(16) COLLATE {coll} NOT NULL PRIMARY KEY, n INT NOT NULL)"),
                format!("INSERT INTO `{db}`.t VALUES {}", values.join(", ")),
            ],
        )
        .await;
    }
    admin(&shared_b(), &[format!("DELETE FROM `{db}`.t WHERE code = 'c012346'")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        crate::support::mariadb::task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], "");
    let out = verify(&path, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let v = json(&out);
    let found: Vec<String> = v["tasks"][0]["tables"][0]["confirmed"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| format!("{} {}", d["kind"].as_str().unwrap_or(""), d["key"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(found, vec!["missing (\"c012346\")"], "only the deleted key: {}", out.all());
}
