//! Benchmark: one-way sync of a backlog of row changes between two SQLite files,
//! against the ceiling of writing the same number of rows with plain batched INSERTs
//! in one transaction.
//!
//! ```text
//! cargo run --release --example sqlite_oneway -- [--changes N] [--dir DIR] [--batch N] [--profile]
//! ```
//!
//! Steps: create a.db (source) and b.db (target) with the same table; install ferry's
//! capture on a.db; write N changes as an application would (80% inserts, 15% updates,
//! 5% deletes, 1,000 changes per transaction; not part of ferry's time); run the a->b
//! direction with the engine from changelog position 0 until the target's checkpoint
//! reaches the changelog head (timed); check that b holds exactly a's rows; then write N
//! rows into a fresh c.db with multi-row INSERTs in one transaction (the ceiling, timed)
//! and print both rates and their ratio. `--profile` then replays the same backlog into
//! d.db and e.db through the connector traits directly, timing reading and applying separately.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use ferry::config::{Endpoint, EndpointUrl};
use ferry::connector::sqlite::apply::SqliteSink;
use ferry::connector::sqlite::capture::SqliteSource;
use ferry::connector::sqlite::compare::compare_table;
use ferry::connector::sqlite::schema::describe;
use ferry::connector::sqlite::{Access, SqliteEndpoint, position};
use ferry::connector::{ApplyBatch, Checkpoint, DirectionId, ReadRequest, Sink, Source, TableProgress};
use ferry::engine::Engine;
use ferry::engine::clock::{SkewBounds, TaskClock};
use ferry::engine::task::{DirectionSpec, Tuning, prepare_target};
use ferry::model::SiteId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;

/// The same allocator as the ferry binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TABLE_SQL: &str = "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                         qty INTEGER NOT NULL, price REAL, note TEXT)";
/// Changes per application transaction.
const APP_TXN: usize = 1_000;
/// Rows per statement of the plain INSERT ceiling (5 columns: 2,500 bound values).
const CEILING_ROWS_PER_STATEMENT: usize = 500;
/// Goals from the issue.
const GOAL_RATE: f64 = 100_000.0;
const GOAL_RATIO: f64 = 0.3;
/// Give up on the sync after this long.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3_600);
const TASK: &str = "bench";

struct Args {
    changes: usize,
    dir: Option<PathBuf>,
    batch: usize,
    profile: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { changes: 1_000_000, dir: None, batch: Tuning::default().batch_changes, profile: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| eyre!("{name} needs a value"));
        match a.as_str() {
            "--changes" => {
                args.changes = value("--changes")?.replace('_', "").parse().wrap_err("--changes takes a number")?;
            }
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            "--batch" => {
                args.batch = value("--batch")?.parse().wrap_err("--batch takes a number")?;
            }
            "--profile" => args.profile = true,
            "-h" | "--help" => {
                println!(
                    "usage: sqlite_oneway [--changes N (1000000)] [--dir DIR (a temp folder)] [--batch N (engine batch_changes)] [--profile]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.changes < APP_TXN {
        bail!("--changes must be at least {APP_TXN}");
    }
    Ok(args)
}

/// One row of `items`.
#[derive(Debug, Clone)]
struct Item {
    id: i64,
    name: String,
    qty: i64,
    price: Option<f64>,
    note: Option<String>,
}

fn make_item(rng: &mut fastrand::Rng, id: i64, version: u32) -> Item {
    let price = if rng.u8(0..10) == 0 { None } else { Some(f64::from(rng.u32(0..10_000_000)) / 100.0) };
    let note = match rng.u8(0..4) {
        0 => None,
        1 => Some(format!("it's item #{id}, v{version} — “quoted”, ünïcode")),
        _ => Some(format!("note {id}/{version}")),
    };
    Item { id, name: format!("item-{id:08}"), qty: rng.i64(-1_000..1_000_000), price, note }
}

async fn open(path: &Path, create: bool, sync: SqliteSynchronous) -> Result<SqliteConnection> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .busy_timeout(Duration::from_secs(30))
        .synchronous(sync)
        .disable_statement_logging();
    opts.connect().await.wrap_err_with(|| format!("opening {}", path.display()))
}

/// An application connection: SQLite's defaults (synchronous FULL), WAL as ferry set it.
async fn open_app(path: &Path) -> Result<SqliteConnection> {
    let opts =
        SqliteConnectOptions::new().filename(path).busy_timeout(Duration::from_secs(30)).disable_statement_logging();
    opts.connect().await.wrap_err_with(|| format!("opening {}", path.display()))
}

async fn create_db(path: &Path) -> Result<()> {
    let mut conn = open(path, true, SqliteSynchronous::Full).await?;
    sqlx::query(TABLE_SQL).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

fn endpoint(name: &str, site: &str, path: &Path) -> SqliteEndpoint {
    SqliteEndpoint { name: name.into(), site: SiteId::new(site), path: path.to_path_buf() }
}

/// What the application wrote.
struct Generated {
    inserts: u64,
    updates: u64,
    deletes: u64,
    live_rows: u64,
    seconds: f64,
}

/// Writes `n` changes as an application: per 20 changes 16 inserts, 3 updates, 1 delete,
/// in transactions of `APP_TXN` changes.
async fn generate(path: &Path, n: usize) -> Result<Generated> {
    let mut conn = open_app(path).await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("a.db is in journal mode {mode}, expected WAL (set by ferry's capture install)");
    }
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut live: Vec<i64> = Vec::with_capacity(n);
    let mut next_id: i64 = 1;
    let mut g = Generated { inserts: 0, updates: 0, deletes: 0, live_rows: 0, seconds: 0.0 };
    let start = Instant::now();
    let mut done = 0usize;
    while done < n {
        let mut tx = conn.begin().await?;
        let this = APP_TXN.min(n - done);
        for i in 0..this {
            match (done + i) % 20 {
                0..=15 => {
                    let it = make_item(&mut rng, next_id, 0);
                    next_id += 1;
                    sqlx::query("INSERT INTO items(id, name, qty, price, note) VALUES (?1, ?2, ?3, ?4, ?5)")
                        .bind(it.id)
                        .bind(it.name)
                        .bind(it.qty)
                        .bind(it.price)
                        .bind(it.note)
                        .execute(&mut *tx)
                        .await?;
                    live.push(it.id);
                    g.inserts += 1;
                }
                16..=18 => {
                    let id = live[rng.usize(0..live.len())];
                    let version = rng.u32(1..1_000);
                    let it = make_item(&mut rng, id, version);
                    sqlx::query("UPDATE items SET qty = ?2, price = ?3, note = ?4 WHERE id = ?1")
                        .bind(id)
                        .bind(it.qty)
                        .bind(it.price)
                        .bind(it.note)
                        .execute(&mut *tx)
                        .await?;
                    g.updates += 1;
                }
                _ => {
                    let id = live.swap_remove(rng.usize(0..live.len()));
                    sqlx::query("DELETE FROM items WHERE id = ?1").bind(id).execute(&mut *tx).await?;
                    g.deletes += 1;
                }
            }
        }
        tx.commit().await?;
        done += this;
    }
    g.seconds = start.elapsed().as_secs_f64();
    g.live_rows = live.len() as u64;
    conn.close().await?;
    Ok(g)
}

async fn scalar_i64(path: &Path, sql: &'static str) -> Result<i64> {
    let mut conn = open(path, false, SqliteSynchronous::Normal).await?;
    let v: Option<i64> = sqlx::query_scalar(sql).fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(v.unwrap_or(0))
}

fn spec(a: &Path, b: &Path, batch: usize) -> DirectionSpec {
    DirectionSpec {
        id: DirectionId { task: TASK.into(), from: "a".into(), to: "b".into() },
        source: Endpoint {
            name: "a".into(),
            site: SiteId::new("dc-a"),
            url: EndpointUrl::new(format!("sqlite://{}", a.display()), "/"),
            password: None,
            ssh: Default::default(),
        },
        target: Endpoint {
            name: "b".into(),
            site: SiteId::new("dc-b"),
            url: EndpointUrl::new(format!("sqlite://{}", b.display()), "/"),
            password: None,
            ssh: Default::default(),
        },
        tables: vec!["*".into()],
        snapshot: false,
        conflicts: None,
        keep_transactions: true,
        topic: ferry::config::DEFAULT_TOPIC.into(),
        index: ferry::config::DEFAULT_INDEX.into(),
        workers: 1,
        max_rows_per_sec: 0,
        retention_alarm: u64::MAX,
        maps: vec![],
        node_id: "bench".into(),
        lease_floor: 0,
        skips: vec![],
        tuning: Tuning { batch_changes: batch, ..Tuning::default() },
        clock: std::sync::Arc::new(TaskClock::new(TASK, false, SkewBounds::default())),
        once: false,
        transport: None,
        relay: None,
        rescan: std::time::Duration::from_secs(300),
        max_bytes_per_sec: 0,
        quiet_seconds: 5,
    }
}

/// Runs a->b with the engine from changelog position 0 until it has applied `head`.
async fn sync_with_engine(a: &Path, b: &Path, head: i64, batch: usize) -> Result<f64> {
    let spec = spec(a, b, batch);
    prepare_target(&spec).await?;
    // With snapshot = false a direction's first start streams from the changelog head;
    // a checkpoint at position 0 makes it take the whole backlog instead.
    let mut cb = open(b, false, SqliteSynchronous::Normal).await?;
    sqlx::query(
        "INSERT INTO ferry_checkpoint(task, direction, slot, position, progress, updated_us) \
         VALUES (?1, ?2, 'stream:0', ?3, NULL, 0)",
    )
    .bind(TASK)
    .bind(spec.id.direction())
    .bind(position::at(0).to_string())
    .execute(&mut cb)
    .await?;
    cb.close().await?;

    let start = Instant::now();
    let engine = Engine::start(vec![spec], CancellationToken::new());
    let metrics = engine.metrics()[0].clone();
    let mut reached = false;
    // When the applied position moved, to show how the backlog was batched.
    let mut steps: Vec<(f64, i64)> = Vec::new();
    while start.elapsed() < SYNC_TIMEOUT {
        if let Some(seq) = metrics.position().and_then(|p| position::seq(&p)) {
            if steps.last().map(|s| s.1) != Some(seq) {
                steps.push((start.elapsed().as_secs_f64(), seq));
            }
            if seq >= head {
                reached = true;
                break;
            }
        }
        if engine.finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let status = metrics.status();
    engine.stop();
    let errors = engine.join().await;
    if !errors.is_empty() {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("the direction failed:\n{}", all.join("\n"));
    }
    if !reached {
        bail!(
            "the direction did not reach changelog position {head} (state {}, position {:?}, last error {:?})",
            status.state,
            status.position,
            status.last_error
        );
    }
    println!(
        "  engine counters: {} changes in {} source transactions applied",
        status.changes_total, status.txns_total
    );
    let shown: Vec<String> = steps.iter().take(12).map(|(t, seq)| format!("{t:.2}s:{seq}")).collect();
    println!(
        "  applied position over time ({} target commits seen{}): {}",
        steps.len(),
        if steps.len() > 12 { ", first 12" } else { "" },
        shown.join(" ")
    );
    Ok(seconds)
}

/// Fails unless b holds exactly a's rows.
async fn verify_copy(a: &Path, b: &Path, expected_rows: u64) -> Result<()> {
    let ea = endpoint("a", "dc-a", a);
    let eb = endpoint("b", "dc-b", b);
    let mut ca = ea.connect(Access::ReadOnly).await?;
    let mut cb = eb.connect(Access::ReadOnly).await?;
    let t = describe(&ea, &mut ca, "items").await?.ok_or_else(|| eyre!("items is missing on a"))?;
    let start = Instant::now();
    let cmp = compare_table(&ea, &mut ca, &eb, &mut cb, &t).await?;
    ferry::connector::sqlite::close(ca).await;
    ferry::connector::sqlite::close(cb).await;
    if !cmp.identical() || cmp.rows_a != expected_rows || cmp.rows_b != expected_rows {
        bail!(
            "THE COPY IS WRONG: a has {} rows, b has {}, expected {expected_rows}; only on a {}, only on b {}, different {}; e.g. {:?}",
            cmp.rows_a,
            cmp.rows_b,
            cmp.only_in_a,
            cmp.only_in_b,
            cmp.different,
            cmp.samples
        );
    }
    println!(
        "  verified: a and b both hold the same {} rows, compared row by row ({:.1} s)",
        cmp.rows_b,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Plain multi-row INSERTs of `n` rows in one transaction into a fresh c.db (WAL,
/// synchronous NORMAL like ferry's connections). Returns seconds and CPU seconds.
async fn ceiling(c: &Path, n: usize) -> Result<(f64, f64)> {
    create_db(c).await?;
    let opts = SqliteConnectOptions::new()
        .filename(c)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .disable_statement_logging();
    let mut conn = opts.connect().await?;
    let mut rng = fastrand::Rng::with_seed(0xc0de);
    let rows: Vec<Item> = (1..=n as i64).map(|id| make_item(&mut rng, id, 0)).collect();
    let full_sql = insert_sql(CEILING_ROWS_PER_STATEMENT);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut tx = conn.begin().await?;
    for chunk in rows.chunks(CEILING_ROWS_PER_STATEMENT) {
        let sql = if chunk.len() == CEILING_ROWS_PER_STATEMENT { full_sql.clone() } else { insert_sql(chunk.len()) };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for it in chunk {
            q = q.bind(it.id).bind(it.name.clone()).bind(it.qty).bind(it.price).bind(it.note.clone());
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&mut conn).await?;
    conn.close().await?;
    if count != n as i64 {
        bail!("the ceiling run wrote {count} rows instead of {n}");
    }
    Ok((seconds, cpu))
}

fn insert_sql(rows: usize) -> String {
    let marks = vec!["(?,?,?,?,?)"; rows].join(",");
    format!("INSERT INTO items(id, name, qty, price, note) VALUES {marks}")
}

/// Replays the backlog (from a copy of a.db) into fresh d.db and e.db through the connector traits, timing
/// `read_changes` and `apply` separately, plus a bare fetch of the changelog rows.
async fn profile(a: &Path, dir: &Path, head: i64, batch: usize) -> Result<()> {
    println!("profile: the same backlog into fresh files through the connector traits");
    let mut source = SqliteSource::open(endpoint("a", "dc-a", a), Access::ReadWrite).await?;
    let tables = source.tables(&["*".into()]).await?;
    for (keep, file) in [(true, "d.db"), (false, "e.db")] {
        let d = dir.join(file);
        create_db(&d).await?;
        let mut sink = SqliteSink::open(endpoint("d", "dc-d", &d), Access::ReadWrite).await?;
        sink.prepare().await?;
        sink.ensure_tables(&tables).await?;
        let id = DirectionId { task: TASK.into(), from: "a".into(), to: "d".into() };
        let mut pos = position::at(0);
        let (mut t_read, mut t_apply) = (Duration::ZERO, Duration::ZERO);
        let (mut batches, mut changes, mut biggest) = (0u64, 0u64, 0usize);
        let wall = Instant::now();
        loop {
            let Some(seq) = position::seq(&pos) else {
                bail!("profile: the SQLite source returned position {pos}");
            };
            if seq >= head {
                break;
            }
            let req = ReadRequest {
                after: pos.clone(),
                until: Some(position::at(head)),
                max_changes: batch,
                exclude_origin: SiteId::new("dc-d"),
                keep_transactions: keep,
                before_images: false,
            };
            let t0 = Instant::now();
            let rb = source.read_changes(&req).await?;
            t_read += t0.elapsed();
            if rb.position == pos {
                bail!("profile: no progress at {pos}");
            }
            let n: usize = rb.txns.iter().map(|t| t.changes.len()).sum();
            changes += n as u64;
            biggest = biggest.max(n);
            batches += 1;
            pos = rb.position.clone();
            let ab = ApplyBatch {
                txns: rb.txns,
                snapshot: None,
                checkpoint: Checkpoint {
                    position: Some(pos.clone()),
                    tables: BTreeMap::from([("items".to_string(), TableProgress::Done)]),
                },
                conflicts: None,
                one_by_one: false,
                commit: !rb.continues,
                fence: None,
                flush: true,
            };
            let t1 = Instant::now();
            sink.apply(&id, &ab).await?;
            t_apply += t1.elapsed();
        }
        let wall = wall.elapsed().as_secs_f64();
        println!(
            "  keep_transactions={keep}: {changes} changes in {batches} batches (largest {biggest}); \
             read_changes {:.2} s, apply {:.2} s, total {wall:.2} s = {:.0} changes/s",
            t_read.as_secs_f64(),
            t_apply.as_secs_f64(),
            changes as f64 / wall
        );
    }

    // The bare cost of fetching the changelog rows through sqlx, without parsing, with
    // sqlx's default row buffer (50 rows) and with a larger one.
    for channel in [None, Some(4_096)] {
        bare_fetch(a, head, batch, channel).await?;
    }
    Ok(())
}

async fn bare_fetch(a: &Path, head: i64, batch: usize, channel: Option<usize>) -> Result<()> {
    let mut opts =
        SqliteConnectOptions::new().filename(a).synchronous(SqliteSynchronous::Normal).disable_statement_logging();
    if let Some(n) = channel {
        opts = opts.row_buffer_size(n);
    }
    let mut conn = opts.connect().await?;
    let t0 = Instant::now();
    let mut fetched = 0usize;
    let mut after = 0i64;
    while after < head {
        let rows = sqlx::query(
            "SELECT seq, epoch, tbl, op, origin, ts, before, after FROM ferry_changelog \
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(after)
        .bind(head)
        .bind(i64::try_from(batch).unwrap_or(i64::MAX))
        .fetch_all(&mut conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = sqlx::Row::get(last, 0);
        fetched += rows.len();
    }
    println!(
        "  bare sqlx fetch of the {fetched} changelog rows in batches of {batch} (no parsing), row buffer {}: {:.2} s",
        channel.map_or("50 (default)".to_string(), |n| n.to_string()),
        t0.elapsed().as_secs_f64()
    );
    conn.close().await?;
    Ok(())
}

/// CPU time (user + system) this process has used, in seconds (Linux; 0 elsewhere).
/// Less skewed than wall time when other work shares the machine's cores.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The 1-minute load average: other work on the machine skews the figures.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn rate(n: f64, s: f64) -> f64 {
    if s > 0.0 { n / s } else { f64::INFINITY }
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[tokio::main]
async fn main() -> Result<()> {
    color_eyre::install()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let _temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let t = tempfile::tempdir()?;
            let p = t.path().to_path_buf();
            _temp = t;
            p
        }
    };
    let [a, b, c, d, e, snap] = ["a.db", "b.db", "c.db", "d.db", "e.db", "a-profile.db"].map(|f| dir.join(f));
    for p in [&a, &b, &c, &d, &e, &snap] {
        for suffix in ["", "-wal", "-shm"] {
            let f = PathBuf::from(format!("{}{suffix}", p.display()));
            if f.exists() {
                std::fs::remove_file(&f).wrap_err_with(|| format!("removing {}", f.display()))?;
            }
        }
    }
    let n = args.changes;
    println!("sqlite_oneway: {n} changes, folder {}, engine batch {}", dir.display(), args.batch);

    // a. Both files with the same table.
    create_db(&a).await?;
    create_db(&b).await?;

    // b. Capture on a.db before the application writes.
    let mut src = SqliteSource::open(endpoint("a", "dc-a", &a), Access::ReadWrite).await?;
    let tables = src.tables(&["*".into()]).await?;
    src.install_capture(&tables).await?;
    drop(src);

    // c. The application's writes (not part of ferry's time).
    let g = generate(&a, n).await?;
    let head = scalar_i64(&a, "SELECT max(seq) FROM ferry_changelog").await?;
    let captured = scalar_i64(&a, "SELECT count(*) FROM ferry_changelog WHERE tbl = 'items'").await?;
    println!(
        "application: {} inserts, {} updates, {} deletes in {} transactions of {APP_TXN} in {:.1} s ({:.0} changes/s, synchronous=FULL); {} rows remain",
        g.inserts,
        g.updates,
        g.deletes,
        n.div_ceil(APP_TXN),
        g.seconds,
        rate(n as f64, g.seconds),
        g.live_rows
    );
    if captured != n as i64 {
        bail!("the changelog holds {captured} changes of items, expected {n}");
    }

    if args.profile {
        // The engine prunes changelog rows it has applied once they are 10 minutes old;
        // the profile replays the backlog from a copy taken now.
        let mut conn = open(&a, false, SqliteSynchronous::Normal).await?;
        sqlx::query("VACUUM INTO ?1").bind(snap.display().to_string()).execute(&mut conn).await?;
        conn.close().await?;
    }

    // d. ferry: a -> b from position 0 to the head.
    println!("ferry: syncing a -> b up to changelog position {head} (load average {})", load());
    let cpu0 = cpu_seconds();
    let ferry_s = sync_with_engine(&a, &b, head, args.batch).await?;
    let ferry_cpu = cpu_seconds() - cpu0;
    verify_copy(&a, &b, g.live_rows).await?;
    let ferry_rate = rate(n as f64, ferry_s);

    // e. The ceiling.
    println!("ceiling: plain INSERTs into c.db (load average {})", load());
    let (ceiling_s, ceiling_cpu) = ceiling(&c, n).await?;
    let ceiling_rate = rate(n as f64, ceiling_s);
    let ratio = ferry_rate / ceiling_rate;

    // f. Figures.
    println!();
    println!("ferry one-way a->b : {n} changes in {ferry_s:.2} s = {ferry_rate:.0} changes/s (CPU {ferry_cpu:.1} s)");
    println!(
        "plain INSERT ceiling: {n} rows in {ceiling_s:.2} s = {ceiling_rate:.0} rows/s (CPU {ceiling_cpu:.1} s; {CEILING_ROWS_PER_STATEMENT} rows per statement, one transaction)"
    );
    println!("ratio ferry/ceiling: {ratio:.3}");
    println!(
        "goal >= {GOAL_RATE:.0} changes/s: {}; goal ratio >= {GOAL_RATIO}: {}",
        mark(ferry_rate >= GOAL_RATE),
        mark(ratio >= GOAL_RATIO)
    );

    if args.profile {
        println!();
        profile(&snap, &dir, head, args.batch).await?;
    }
    Ok(())
}
