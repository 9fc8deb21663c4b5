//! `ferry demo`: two SQLite data centers taking writes, a two-way task between them,
//! live progress, then a row-by-row proof that both sides are identical.

pub mod workload;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::commands::CommandError;
use crate::config::Config;
use crate::connector::sqlite::compare::compare_databases;
use crate::connector::sqlite::{Access, SqliteEndpoint};
use crate::console::app::{App, ConfigView};
use crate::console::source::Feeds;
use crate::console::{choose_theme, config_dir, run_in_terminal};
use crate::control::VerifyEngine;
use crate::control::local::LocalNode;
use crate::engine::metrics::{DirectionMetrics, DirectionStatus};
use crate::model::SiteId;
use crate::store::actor;
use workload::{Writer, WriterStats};

/// Flags of `ferry demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seconds of workload.
    pub duration: u64,
    /// No console: a status line, and the workload stops after `duration`.
    pub headless: bool,
    /// Console theme.
    pub theme: Option<String>,
    /// Where the databases go (kept); a temp folder otherwise (removed).
    pub dir: Option<PathBuf>,
    /// Workload seed.
    pub seed: Option<u64>,
}

/// The demo's task file (also the smallest complete example, shown in the docs).
const TASK_FILE: &str = include_str!("../../assets/demo.toml");

fn prepare_dir(dir: Option<&Path>) -> Result<(PathBuf, bool), CommandError> {
    let (path, keep) = match dir {
        Some(d) => (d.to_path_buf(), true),
        None => {
            let stamp = crate::model::now_micros();
            (std::env::temp_dir().join(format!("ferry-demo-{}-{stamp}", std::process::id())), false)
        }
    };
    std::fs::create_dir_all(&path).map_err(|e| CommandError::Input {
        problem: format!("cannot create the demo folder {}: {e}", path.display()),
        fix: "pick a folder this user may write, with --dir".into(),
    })?;
    for f in ["a.db", "b.db", "ferry-meta.db", "ferry.toml"] {
        if path.join(f).exists() {
            return Err(CommandError::Input {
                problem: format!("{} already holds {f} from an earlier demo", path.display()),
                fix: "pass an empty or new folder with --dir (the earlier demo's files stay for inspection)".into(),
            });
        }
    }
    Ok((path, keep))
}

/// Runs the demo; exit code 0 only when both sides end identical.
pub async fn demo(opts: DemoOptions, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    let (dir, keep) = prepare_dir(opts.dir.as_deref())?;
    let result = run_demo(&opts, &dir, signal).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_demo(opts: &DemoOptions, dir: &Path, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    let seed = opts.seed.unwrap_or_else(|| crate::model::now_micros() as u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let a = SqliteEndpoint { name: "a".into(), site: SiteId::new("dc-a"), path: dir.join("a.db") };
    let b = SqliteEndpoint { name: "b".into(), site: SiteId::new("dc-b"), path: dir.join("b.db") };
    let mut conns = Vec::new();
    for (side, ep) in [&a, &b].into_iter().enumerate() {
        let mut conn = ep.connect(Access::Create).await?;
        workload::seed(&mut conn, side as i64, &mut rng)
            .await
            .map_err(|e| CommandError::Runtime(format!("seeding {}: {e}", ep.path.display())))?;
        conns.push(conn);
    }
    let task_file = dir.join("ferry.toml");
    std::fs::write(&task_file, TASK_FILE)
        .map_err(|e| CommandError::Runtime(format!("writing {}: {e}", task_file.display())))?;
    let config = Config::load(&task_file)?;
    let with_console = !opts.headless && std::io::stderr().is_terminal();
    let theme = if with_console {
        Some(
            choose_theme(opts.theme.as_deref())
                .map_err(|e| CommandError::Input { problem: e.to_string(), fix: "pick a theme with --theme".into() })?,
        )
    } else {
        None
    };
    let who = actor(&config.node.id);
    let node = Arc::new(LocalNode::start(config, Box::new(VerifyEngine::default())).await?);
    let store = node.store().clone();
    store.audit(&who, "demo.start", Some("demo"), &format!("folder {}, seed {seed}", dir.display())).await?;

    eprintln!("ferry demo: two data centers in {}", dir.display());
    eprintln!("  dc-a: a.db (500 accounts)   dc-b: b.db (200 orders)   two-way, last-writer-wins, seed {seed}");

    // The application: one writer per data center.
    let stop_writers = CancellationToken::new();
    let mut writers = Vec::new();
    let mut stats = Vec::new();
    for (side, conn) in conns.into_iter().enumerate() {
        let s = Arc::new(WriterStats::default());
        stats.push(s.clone());
        let w = Writer {
            side: side as i64,
            conn,
            rng: fastrand::Rng::with_seed(seed.wrapping_add(side as u64 + 1)),
            stats: s,
        };
        writers.push(tokio::spawn(w.run(stop_writers.clone())));
    }

    let started = Instant::now();
    let interrupted = match theme {
        Some(theme) => {
            let mut app = App::new(theme);
            app.theme_dir = config_dir().map(|d| d.join("themes"));
            app.config = Some(ConfigView::open(task_file.clone()));
            // The demo's documented q: end the workload and print the summary, no question.
            app.quit_asks = false;
            let mut feeds = Feeds::new();
            feeds.add(crate::console::source::IN_PROCESS, node.clone(), who.clone());
            let shown = run_in_terminal(&mut app, &feeds, signal).await;
            feeds.stop().await;
            if let Err(e) = shown {
                eprintln!("the console failed ({e}); finishing the demo");
            }
            false
        }
        None => status_loop(opts.duration, &node, &stats, signal).await,
    };
    stop_writers.cancel();
    for w in writers {
        let _ = w.await;
    }
    if interrupted {
        eprintln!("interrupted: stopping the workload and finishing the sync");
    }

    // Wait until each direction has applied everything its source holds now.
    eprintln!("workload stopped; waiting for both directions to catch up…");
    let caught_up = wait_caught_up(&node, &a, &b, Duration::from_secs(120)).await;
    let metrics = node.directions().await;
    let errors = node.shutdown().await;
    let finals: Vec<DirectionStatus> = metrics.iter().map(|m| m.status()).collect();
    if let Some(e) = errors.into_iter().next() {
        return Err(e.into());
    }
    caught_up?;

    let comparison = compare_databases(&a, &b).await?;
    let conflicts = count_conflicts(&a).await + count_conflicts(&b).await;
    println!();
    println!("ferry demo summary ({}s of writes on both sides)", started.elapsed().as_secs());
    for (site, s) in ["dc-a", "dc-b"].iter().zip(&stats) {
        println!(
            "  application on {site}: {} transactions, {} row changes",
            s.txns.load(Ordering::Relaxed),
            s.rows.load(Ordering::Relaxed)
        );
    }
    for s in &finals {
        println!(
            "  synced {}: {} changes in {} transactions, {} snapshot rows, {} conflicts resolved",
            s.direction, s.changes_total, s.txns_total, s.snapshot_rows_total, s.conflicts_total
        );
    }
    println!("  conflict log: {conflicts} entries (ferry_conflict in a.db and b.db), each with both versions");
    let mut identical = true;
    for t in &comparison {
        if t.identical() {
            println!("  verify {}: identical, {} rows on each side", t.table, t.rows_a);
        } else {
            identical = false;
            println!(
                "  verify {}: DIFFERENT: {} only on a, {} only on b, {} differ",
                t.table, t.only_in_a, t.only_in_b, t.different
            );
            for s in t.samples.iter().take(5) {
                println!("    {s}");
            }
        }
    }
    let verdict = if identical { "both data centers hold identical rows" } else { "the data centers differ" };
    println!("  result: {verdict}");
    store.audit(&who, "demo.end", Some("demo"), verdict).await?;
    store.close().await;
    if dir.exists() && opts.dir.is_some() {
        println!("  databases kept in {} (ferry status --config {})", dir.display(), dir.join("ferry.toml").display());
    }
    if identical { Ok(0) } else { Err(CommandError::DataDiffers(verdict.to_string())) }
}

/// The headless demo: a status line a second until `duration` or the signal; true when interrupted.
async fn status_loop(
    duration: u64,
    node: &LocalNode,
    stats: &[Arc<WriterStats>],
    signal: impl Future<Output = ()>,
) -> bool {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut interrupted = false;
    while started.elapsed() < Duration::from_secs(duration) {
        tokio::select! {
            biased;
            _ = &mut signal => { interrupted = true; break; }
            _ = tick.tick() => {
                let line = status_line(started.elapsed(), &node.directions().await, stats);
                if tty { eprint!("\r\x1b[2K{line}"); } else { eprintln!("{line}"); }
                let _ = std::io::stderr().flush();
                node.save_statuses().await;
                if node.finished().await { break; }
            }
        }
    }
    if tty {
        eprintln!();
    }
    interrupted
}

fn status_line(elapsed: Duration, directions: &[Arc<DirectionMetrics>], stats: &[Arc<WriterStats>]) -> String {
    let mut parts = vec![format!("[{:>3}s]", elapsed.as_secs())];
    for m in directions {
        let s = m.status();
        let lag = s.lag_seconds.map(|l| format!("{l:.2}s")).unwrap_or_else(|| "-".into());
        parts.push(format!(
            "{} {} lag {lag} {:>6.0} rows/s conflicts {}",
            s.direction, s.state, s.rows_per_sec[0], s.conflicts_total
        ));
    }
    let writes: u64 = stats.iter().map(|s| s.rows.load(Ordering::Relaxed)).sum();
    parts.push(format!("app writes {writes}"));
    parts.join(" | ")
}

async fn head(ep: &SqliteEndpoint) -> Result<i64, CommandError> {
    let mut conn = ep.connect(Access::ReadOnly).await?;
    let h: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM ferry_changelog")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| CommandError::Runtime(format!("reading the changelog head of {}: {e}", ep.path.display())))?;
    crate::connector::sqlite::close(conn).await;
    Ok(h.unwrap_or(0))
}

async fn wait_caught_up(
    node: &LocalNode,
    a: &SqliteEndpoint,
    b: &SqliteEndpoint,
    limit: Duration,
) -> Result<(), CommandError> {
    let targets =
        [(format!("{}->{}", a.name, b.name), head(a).await?), (format!("{}->{}", b.name, a.name), head(b).await?)];
    let start = Instant::now();
    loop {
        let directions = node.directions().await;
        let done = targets.iter().all(|(dir, h)| {
            directions.iter().any(|m| {
                // Streaming: the copy is over (the position also moves during the copy).
                m.id.direction() == *dir
                    && m.state() == crate::engine::metrics::DirectionState::Streaming
                    && m.position()
                        .and_then(|p| crate::connector::sqlite::position::seq(&p))
                        .is_some_and(|seq| seq >= *h)
            })
        });
        if done {
            return Ok(());
        }
        if node.finished().await {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(CommandError::Runtime(format!(
                "the task did not catch up within {}s; see `ferry status --config` on the demo folder",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count_conflicts(ep: &SqliteEndpoint) -> i64 {
    let Ok(mut conn) = ep.connect(Access::ReadOnly).await else {
        return 0;
    };
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry_conflict").fetch_one(&mut conn).await.unwrap_or(0);
    crate::connector::sqlite::close(conn).await;
    n
}
