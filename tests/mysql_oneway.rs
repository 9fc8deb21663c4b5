//! MySQL/MariaDB one-way against the real testbed servers: every column type through the
//! snapshot and through the binlog, SIGKILL under a sysbench write load, and a source
//! server restarted mid-stream.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::connector::mysql::{MysqlEndpoint, checksum::rows_after, schema::describe};
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use ferry::model::{Row, SiteId, TableName, same_row};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use crate::support::mariadb::{Cleanup, admin, connect, database, shared_a, shared_b, unique};
use crate::support::{FerryRun, ferry_bin};

/// A task file whose task name is unique, so tests sharing a target never share a
/// checkpoint or a lease.
pub(crate) fn task_file(
    dir: &Path,
    url_a: &str,
    url_b: &str,
    mode: &str,
    tables: &[&str],
    extra: &str,
) -> std::path::PathBuf {
    let path = crate::support::mariadb::task_file(dir, url_a, url_b, mode, tables, extra);
    let text = std::fs::read_to_string(&path).expect("task file");
    std::fs::write(&path, text.replacen("name = \"t\"", &format!("name = \"{}\"", unique("task")), 1)).expect("write");
    path
}

/// A table holding every MariaDB column type ferry carries.
pub(crate) const ALL_TYPES: &str = "CREATE TABLE {t} (
  id INT NOT NULL PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  dec65 DECIMAL(65,30), dec10 DECIMAL(10,2),
  f FLOAT, d DOUBLE,
  c CHAR(10), vc VARCHAR(100), tx TEXT, mtx MEDIUMTEXT,
  bn BINARY(4), vb VARBINARY(20), bl BLOB,
  dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR,
  bt BIT(64), en ENUM('small','medium','large'), st SET('red','green','blue'), js JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

pub(crate) fn rows_sql(t: &str, base: i64) -> Vec<String> {
    let ins = format!("INSERT INTO {t} VALUES");
    vec![
        format!(
            "{ins} ({}, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, \
             -9223372036854775808, 18446744073709551615, \
             '-99999999999999999999999999999999999.999999999999999999999999999999', -12345678.90, \
             -3.40282e38, -0.0, 'pad  ', 'emoji 😀 ünïcode', 'text with trailing space ', 'm', \
             X'00010200', X'00ff00', X'000000', '0000-00-00', '-838:59:59.000000', '0000-00-00 00:00:00.000000', \
             '1970-01-01 00:00:01.000001', 0, b'1111111111111111111111111111111111111111111111111111111111111111', \
             'large', 'red,blue', '{{\"a\": [1, 2.5, null], \"b\": \"x\"}}')",
            base
        ),
        format!(
            "{ins} ({}, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, \
             '0.000000000000000000000000000001', 0.01, 1.175494e-38, 1.7976931348623157e308, '', '', '', '', \
             X'', X'', X'', '9999-12-31', '838:59:59.999999', '9999-12-31 23:59:59.999999', \
             '2038-01-19 03:14:07.999999', 2155, b'0', 'small', '', '[]')",
            base + 1
        ),
        format!(
            "{ins} ({}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            base + 2
        ),
        format!(
            "{ins} ({}, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, '1.5', 1.5, 0.1, 0.1, 'x', 'y', 'z', 'w', X'ff', X'ff', X'ff', \
             '2024-02-29', '-00:00:00.500000', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012', 1901, \
             b'101', 'medium', 'green', '{{}}')",
            base + 3
        ),
    ]
}

/// Prepares the target and starts the config's first task in this process.
pub(crate) async fn start(config: &Config) -> Engine {
    let specs = plan_task(config, &config.tasks[0], &[]);
    prepare_target(&specs[0]).await.expect("prepare");
    Engine::start(specs, CancellationToken::new())
}

/// A one-way task dc-a -> dc-b over every table of `db`, started and caught up.
pub(crate) async fn start_one_way(db: &str) -> (tempfile::TempDir, Config, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::load(&task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], ""))
        .expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    (dir, config, engine)
}

/// [`wait_caught_up`] for a task run by a `ferry` process writing `log`: a timeout
/// shows the log's tail, which says why.
pub(crate) async fn wait_caught_up_logged(config: &Config, limit: Duration, log: &Path) {
    let config = config.clone();
    let waited = tokio::spawn(async move { wait_caught_up(&config, limit, None).await }).await;
    if let Err(e) = waited {
        let why = e.try_into_panic().ok().and_then(|p| p.downcast::<String>().ok().map(|s| *s)).unwrap_or_default();
        panic!("{why}; ferry's log:\n{}", tail(log));
    }
}

pub(crate) use crate::support::caught_up::wait_caught_up;

pub(crate) async fn all_rows(url: &str, table: &TableName) -> Vec<Row> {
    let ep = MysqlEndpoint::new("t", SiteId::new("t"), url).expect("url");
    let mut conn = ep.connect().await.expect("connect");
    let schema = describe(&ep, &mut conn, table).await.expect("describe").expect("table exists");
    let rows = rows_after(&ep, &mut conn, &schema, None, 1_000_000).await.expect("rows");
    conn.disconnect().await.ok();
    rows
}

async fn checksum(url: &str, table: &str) -> Option<u64> {
    let mut c = connect(url).await;
    let row: Option<(String, Option<u64>)> =
        c.query_first(format!("CHECKSUM TABLE {table} EXTENDED")).await.expect("checksum");
    c.disconnect().await.ok();
    row.and_then(|(_, v)| v)
}

pub(crate) async fn assert_same_table(db: &str, table: &str) {
    let name = TableName { schema: Some(db.into()), name: table.into() };
    let full = format!("`{db}`.`{table}`");
    // Rows first: a difference names the row.
    let (ra, rb) = (all_rows(&shared_a(), &name).await, all_rows(&shared_b(), &name).await);
    assert_eq!(ra.len(), rb.len(), "{full}: row counts differ");
    for (x, y) in ra.iter().zip(&rb) {
        assert!(same_row(Some(x), Some(y)), "{full}: rows differ:\n  dc-a {x:?}\n  dc-b {y:?}");
    }
    let (ca, cb) = (checksum(&shared_a(), &full).await, checksum(&shared_b(), &full).await);
    assert!(ca.is_some(), "no checksum for {full} on dc-a");
    assert_eq!(ca, cb, "CHECKSUM TABLE {full} differs between dc-a and dc-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_type_round_trips_through_snapshot_and_binlog() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "fid", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let t = format!("`{db}`.`all_types`");
    let mut a = connect(&shared_a()).await;
    a.query_drop(ALL_TYPES.replace("{t}", &t)).await.expect("create table");
    for sql in rows_sql(&t, 1) {
        a.query_drop(sql).await.expect("insert snapshot rows");
    }

    let (_dir, config, engine) = start_one_way(&db).await;
    assert_same_table(&db, "all_types").await;

    // Through the binlog: inserts, updates of every column, deletes, a key change.
    for sql in rows_sql(&t, 100) {
        a.query_drop(sql).await.expect("insert stream rows");
    }
    a.query_drop(format!(
        "UPDATE {t} SET ti = ti DIV 2, biu = 18446744073709551614, dec65 = '-0.000000000000000000000000000001', \
         f = 1.5, d = -0.0, vc = CONCAT(vc, ' ✓'), bl = X'00', tm = '-12:00:00.000001', yr = 0, \
         en = 'small', st = 'red,green,blue', js = '{{\"k\": 1}}' WHERE id IN (1, 100, 103)"
    ))
    .await
    .expect("update");
    a.query_drop(format!("UPDATE {t} SET id = id + 1000 WHERE id = 101")).await.expect("key change");
    a.query_drop(format!("DELETE FROM {t} WHERE id IN (2, 102)")).await.expect("delete");
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_same_table(&db, "all_types").await;
    a.disconnect().await.ok();
}

/// `LOAD DATA` statements the shared target has run so far (other tests' too: a lower
/// bound on this test's).
async fn loads_on_b() -> u64 {
    let r = crate::support::mariadb::rows(&shared_b(), "SHOW GLOBAL STATUS LIKE 'Com_load'").await;
    r[0][1].parse::<u64>().expect("Com_load")
}

/// Snapshot chunks travel as `LOAD DATA LOCAL INFILE` text: every type (BIT aside, which
/// takes the INSERT path), tabs, newlines, backslashes, a literal `\N`, NUL bytes and
/// NULL versus empty arrive exactly; the target server counts the loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_chunks_loaded_as_text_keep_every_value_exactly() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "load", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let t = format!("`{db}`.`all_types`");
    let mut a = connect(&shared_a()).await;
    a.query_drop(ALL_TYPES.replace("{t}", &t)).await.expect("create table");
    for base in (1..400).step_by(4) {
        for sql in rows_sql(&t, base) {
            a.query_drop(sql).await.expect("insert snapshot rows");
        }
    }
    a.query_drop(format!("ALTER TABLE {t} DROP COLUMN bt")).await.expect("drop the BIT column");
    a.query_drop(format!(
        "UPDATE {t} SET vc = 'tab\\there\\nnew\\\\back \\\\N', tx = '\\\\N', mtx = '\\r\\n', \
         bl = X'5C4E00090A0D005C', vb = X'5C' WHERE id % 3 = 0"
    ))
    .await
    .expect("tricky text");
    let before = loads_on_b().await;
    let (_dir, _config, engine) = start_one_way(&db).await;
    assert_same_table(&db, "all_types").await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert!(loads_on_b().await > before, "the snapshot chunk did not go as LOAD DATA");
    a.disconnect().await.ok();
}

/// A chunk goes as several `LOAD DATA` pieces under one savepoint: a stale target row in
/// a later piece (a duplicate key, which LOCAL only warns about) rolls back the pieces
/// already loaded and the chunk is written with upserts, so the stale row is overwritten
/// and nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_row_in_a_later_load_piece_is_overwritten_with_the_whole_chunk() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "pieces", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let create = format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL, n BIGINT)");
    // 20,000 rows: the first chunk holds an eighth of 50,000, the second the other 13,750
    // in two pieces; row 15,000 is in the second piece.
    admin(
        &shared_a(),
        &[
            create.clone(),
            format!(
                "INSERT INTO `{db}`.t SELECT seq, CONCAT('row ', seq, '\\t\\\\'), IF(seq % 7 = 0, NULL, seq * 3) FROM `{db}`.seq_1_to_20000"
            ),
        ],
    )
    .await;
    admin(
        &shared_b(),
        &[format!("CREATE DATABASE `{db}`"), create, format!("INSERT INTO `{db}`.t VALUES (15000, 'stale', -1)")],
    )
    .await;
    let before = loads_on_b().await;
    let (_dir, _config, engine) = start_one_way(&db).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_same_table(&db, "t").await;
    // The first chunk's one piece, and the second chunk's two (the second refused).
    assert!(loads_on_b().await >= before + 3, "the chunks did not go as LOAD DATA pieces");
}

/// A target with `local_infile = OFF` refuses `LOAD DATA LOCAL` (MariaDB's error 4166):
/// `ferry check` warns, and the snapshot goes as INSERTs instead, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_with_local_infile_off_gets_the_snapshot_by_insert() {
    let (pair, _globals) = crate::support::mariadb::private_globals().await;
    let mut restore = Cleanup::new(&pair.root_b());
    restore.push("SET GLOBAL local_infile = ON");
    admin(&pair.root_b(), &["SET GLOBAL local_infile = OFF".into()]).await;
    let mut cleanup_a = Cleanup::new(&pair.root_a());
    let db = database(&pair.root_a(), "noinfile", &mut cleanup_a).await;
    restore.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(
        &pair.root_a(),
        &[
            format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(20))"),
            format!("INSERT INTO `{db}`.t SELECT seq, CONCAT('v', seq) FROM `{db}`.seq_1_to_500"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = task_file(dir.path(), &pair.url_a(), &pair.url_b(), "one-way", &[&format!("{db}.*")], "");
    // `ferry check` says so, as a warning: exit 0, nothing refused.
    let out = crate::support::mariadb::check(&file).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("local_infile is OFF") && out.all().contains("SET GLOBAL local_infile = ON"),
        "{}",
        out.all()
    );
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_eq!(
        crate::support::mariadb::rows(&pair.root_b(), &format!("SELECT COUNT(*), SUM(id) FROM `{db}`.t")).await,
        vec![vec!["500".to_string(), "125250".into()]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn globs_span_databases_and_maps_rename_databases_tables_and_columns() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let stem = unique("ren");
    let (shop, crm) = (format!("{stem}_shop"), format!("{stem}_crm"));
    let (shop2, crm2) = (format!("{stem}_shop2"), format!("{stem}_crm2"));
    for db in [&shop, &crm] {
        cleanup_a.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    }
    for db in [&shop2, &crm2, &crm] {
        cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    }
    admin(
        &shared_a(),
        &[
            format!("CREATE DATABASE `{shop}`"),
            format!("CREATE DATABASE `{crm}`"),
            format!("CREATE TABLE `{shop}`.customers (id INT PRIMARY KEY, name VARCHAR(40))"),
            format!("CREATE TABLE `{shop}`.orders (id INT PRIMARY KEY, customer INT, total DECIMAL(10,2))"),
            format!("CREATE TABLE `{crm}`.leads (id BIGINT UNSIGNED PRIMARY KEY, note TEXT)"),
        ],
    )
    .await;
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!("INSERT INTO `{shop}`.customers VALUES (1, 'Ada'), (2, 'Grace')")).await.expect("insert");
    a.query_drop(format!("INSERT INTO `{crm}`.leads VALUES (18446744073709551615, 'max')")).await.expect("insert");
    let maps = format!(
        "[[task.map]]\nfrom = \"{shop}.customers\"\nto = \"{shop2}.clients\"\ncolumns = {{ name = \"full_name\" }}\n\n\
         [[task.map]]\nfrom = \"{shop}.*\"\nto = \"{shop2}.*\"\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{stem}_*.*")], &maps);
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    a.query_drop(format!("INSERT INTO `{shop}`.customers VALUES (3, 'Edsger')")).await.expect("insert");
    a.query_drop(format!("INSERT INTO `{shop}`.orders VALUES (10, 3, 12.50)")).await.expect("insert");
    a.query_drop(format!("UPDATE `{crm}`.leads SET note = 'still max'")).await.expect("update");
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty());

    let b = crate::support::mariadb::rows;
    assert_eq!(
        b(&shared_b(), &format!("SELECT id, full_name FROM `{shop2}`.clients ORDER BY id")).await,
        vec![vec!["1".to_string(), "Ada".into()], vec!["2".into(), "Grace".into()], vec!["3".into(), "Edsger".into()]]
    );
    assert_eq!(
        b(&shared_b(), &format!("SELECT id, customer, total FROM `{shop2}`.orders")).await,
        vec![vec!["10".to_string(), "3".into(), "12.50".into()]]
    );
    assert_eq!(
        b(&shared_b(), &format!("SELECT id, note FROM `{crm}`.leads")).await,
        vec![vec!["18446744073709551615".to_string(), "still max".into()]]
    );
    a.disconnect().await.ok();
}

fn sysbench(url_port: u16, db: &str, action: &str, extra: &[&str]) -> Command {
    sysbench_sized(url_port, db, 110_000, action, extra)
}

/// sysbench's oltp_write_only on two tables of `rows` rows each in `db`.
pub(crate) fn sysbench_sized(url_port: u16, db: &str, rows: u32, action: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("sysbench");
    c.args([
        "oltp_write_only",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={url_port}"),
        "--mysql-user=ferry",
        "--mysql-password=ferry",
        &format!("--mysql-db={db}"),
        "--tables=2",
        &format!("--table-size={rows}"),
    ])
    .args(extra)
    .arg(action)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

pub(crate) fn require_sysbench() {
    let ok = Command::new("sysbench").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "sysbench is missing: install it with `apt-get install -y sysbench` (scripts/test does it)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_sigkill_during_snapshot_and_stream_under_sysbench() {
    require_sysbench();
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "crash", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    // The shared dc-a's port, as the testbed's overrides set it (not a fixed 3307).
    let port_a = mysql_async::Opts::from_url(&shared_a()).expect("url of dc-a").tcp_port();
    let out = sysbench(port_a, &db, "prepare", &[]).output().expect("sysbench prepare");
    assert!(out.status.success(), "sysbench prepare: {}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], "");
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");
    let mut load =
        sysbench(port_a, &db, "run", &["--threads=2", "--time=25", "--rate=200"]).spawn().expect("sysbench run");

    let mut rng = fastrand::Rng::with_seed(3);
    let mut mid_snapshot = 0;
    for round in 0..6 {
        let mut ferry = FerryRun::start(&file, &log);
        let ms = if round < 3 { rng.u64(400..1200) } else { rng.u64(800..3000) };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ferry.kill();
        let progress = crate::support::mariadb::rows_once_created(
            &shared_b(),
            &format!(
                "SELECT COALESCE(GROUP_CONCAT(progress), '') FROM ferry.ferry_checkpoint WHERE task = '{}'",
                config.tasks[0].name
            ),
        )
        .await;
        if progress.concat().concat().contains("copying") || progress.concat().concat().contains("pending") {
            mid_snapshot += 1;
        }
    }
    assert!(mid_snapshot > 0, "no kill landed during the snapshot; the test did not exercise snapshot resume");
    let mut ferry = FerryRun::start(&file, &log);
    let status = tokio::task::spawn_blocking(move || load.wait()).await.expect("join").expect("sysbench");
    assert!(status.success(), "sysbench run failed");
    wait_caught_up_logged(&config, Duration::from_secs(120), &log).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    for t in ["sbtest1", "sbtest2"] {
        let full = format!("`{db}`.`{t}`");
        let (ca, cb) = (checksum(&shared_a(), &full).await, checksum(&shared_b(), &full).await);
        assert_eq!(ca, cb, "CHECKSUM TABLE {full} differs after crashes; log:\n{}", tail(&log));
    }
}

/// The last 30 lines of a log file.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A private source instance (it gets restarted), stopped and removed on drop.
struct PrivateSource {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateSource {
    fn env(&self) -> [(&'static str, String); 3] {
        [
            ("FERRY_TESTBED_DIR", self.dir.path().display().to_string()),
            ("FERRY_TESTBED_PORT_A", self.port.to_string()),
            ("FERRY_TESTBED_PORT_B", (self.port + 1).to_string()),
        ]
    }

    fn testbed(&self, action: &str) {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed"))
            .arg(action)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .expect("scripts/testbed runs");
        assert!(
            out.status.success() || action == "stop",
            "scripts/testbed {action} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("mysql://ferry:ferry@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateSource {
    fn drop(&mut self) {
        self.testbed("stop");
    }
}

/// Two free consecutive ports below the kernel's ephemeral range (from 32768), where no
/// other test's outgoing connection can take the second before the testbed binds it.
fn free_port_pair() -> u16 {
    let seed = std::process::id() as u64 ^ std::time::UNIX_EPOCH.elapsed().map(|d| d.as_nanos() as u64).unwrap_or(0);
    (0..2_000u64)
        .map(|i| 20_000 + ((seed.wrapping_add(i * 7_919)) % 12_000) as u16)
        .find(|&p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        })
        .expect("two free consecutive ports between 20000 and 32000")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnects_after_the_source_restarts_and_loses_nothing() {
    let src = PrivateSource { dir: tempfile::tempdir().expect("tempdir"), port: free_port_pair() };
    src.testbed("start");
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = ferry::connector::mysql::ident(&format!("restart_{}_{}", std::process::id(), fastrand::u32(..)));
    let db_name = db.trim_matches('`').to_string();
    cleanup_b.push(format!("DROP DATABASE IF EXISTS {db}"));
    admin(
        &src.url(),
        &[format!("CREATE DATABASE {db}"), format!("CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(50))")],
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = task_file(dir.path(), &src.url(), &shared_b(), "one-way", &[&format!("{db_name}.*")], "");
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&file, &log);

    let write = |from: i64, to: i64| {
        let url = src.url();
        let db = db.clone();
        async move {
            let mut c = connect(&url).await;
            for i in from..to {
                c.query_drop(format!("INSERT INTO {db}.t VALUES ({i}, 'row {i}')")).await.expect("insert");
            }
            c.disconnect().await.ok();
        }
    };
    write(0, 200).await;
    wait_caught_up(&config, Duration::from_secs(60), None).await;

    // Restart the source mid-stream; ferry must notice, say so, and resume.
    src.testbed("stop");
    let status_during = {
        let start = Instant::now();
        loop {
            let out = Command::new(ferry_bin()).args(["status", "--config"]).arg(&file).output().expect("status");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("retrying") || start.elapsed() > Duration::from_secs(30) {
                break text;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert!(status_during.contains("retrying"), "ferry status did not show the reconnect: {status_during}");
    src.testbed("start");
    write(200, 400).await;
    wait_caught_up(&config, Duration::from_secs(90), None).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));

    let full = format!("{db}.t");
    let (ca, cb) = (checksum(&src.url(), &full).await, checksum(&shared_b(), &full).await);
    assert_eq!(ca, cb, "rows differ after the restart; log:\n{}", tail(&log));
    let mut b = connect(&shared_b()).await;
    let n: Option<i64> = b.query_first(format!("SELECT COUNT(*) FROM {full}")).await.expect("count");
    assert_eq!(n, Some(400));
}
