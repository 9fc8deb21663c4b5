//! `ferry verify`: compares the tables of each selected task on both sides and reports
//! confirmed, transient and unsettled differences; optionally writes or applies the
//! repair. Exit 0 identical, 1 differences confirmed, 2 bad input, 3 runtime failure.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CommandError, open_store, select_tasks};
use crate::cli::{EXIT_DATA, EXIT_OK, Format};
use crate::config::Config;
use crate::store::actor;
use crate::verify::blob::{BlobOptions, is_blob_task, verify_blob_task};
use crate::verify::items::{ItemOptions, is_items_task, verify_items_task};
use crate::verify::progress::{Progress, render};
use crate::verify::report::Report;
use crate::verify::{Options, VerifyError, verify_task};

/// Flags of `ferry verify`.
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    /// The task file.
    pub config: PathBuf,
    /// Only this task.
    pub task: Option<String>,
    /// Narrow the tables.
    pub tables: Option<String>,
    /// Output format.
    pub format: Format,
    /// Count and key extent only.
    pub quick: bool,
    /// Write repair SQL here.
    pub repair_sql: Option<PathBuf>,
    /// Apply the repair.
    pub repair: bool,
    /// Rows per second at most.
    pub max_rows_per_sec: u64,
    /// Blob tasks: write an `md5sum -c` file of the source's content here.
    pub manifest: Option<PathBuf>,
}

/// The JSON document `--format json` prints.
#[derive(Debug, Serialize)]
pub struct VerifyOutput {
    /// True when no task has a confirmed difference.
    pub identical: bool,
    /// Per task.
    pub tasks: Vec<Report>,
    /// Per blob task (files, objects): every path that differs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blob_tasks: Vec<crate::verify::blob::BlobReport>,
    /// Per item task (Redis): every key that differs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub item_tasks: Vec<crate::verify::items::ItemReport>,
}

impl From<VerifyError> for CommandError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Connector(c) => CommandError::Connector(c),
            VerifyError::Store(s) => CommandError::Store(s),
            VerifyError::Input { problem, fix } => CommandError::Input { problem, fix },
            e @ VerifyError::RepairFile { .. } => {
                CommandError::Input { problem: e.to_string(), fix: "choose a writable path".into() }
            }
        }
    }
}

/// `ferry verify --config FILE [...]`.
pub async fn verify(args: VerifyArgs) -> Result<u8, CommandError> {
    let mut config = Config::load(&args.config)?;
    // After a cutover the stored direction decides which side is the source of truth.
    crate::cutover::apply_stored_directions(&mut config).await?;
    let tasks = select_tasks(&config, args.task.as_deref())?;
    if args.quick && (args.repair || args.repair_sql.is_some()) {
        return Err(CommandError::Input {
            problem: "--quick compares counts and key extents only; it finds no rows to repair".into(),
            fix: "drop --quick to repair".into(),
        });
    }
    check_repair_path(args.repair_sql.as_deref())?;
    let opts = Options {
        tables: args.tables.clone(),
        quick: args.quick,
        repair_sql: args.repair_sql.clone(),
        repair: args.repair,
        max_rows_per_sec: args.max_rows_per_sec,
        ..Options::default()
    };
    let store = open_store(&config).await?;
    let (progress, rx) = Progress::channel();
    let renderer = render(rx);
    let mut reports = Vec::new();
    let mut blob_reports = Vec::new();
    let mut failure = None;
    let (blob_tasks, tasks): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| is_blob_task(&config, t));
    let (item_tasks, tasks): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| is_items_task(&config, t));
    let mut item_reports = Vec::new();
    if args.manifest.is_some() && (!tasks.is_empty() || !item_tasks.is_empty() || blob_tasks.len() != 1) {
        return Err(CommandError::Input {
            problem: "--manifest writes the content sums of one file or object task".into(),
            fix: "pick that task with --task".into(),
        });
    }
    for t in &blob_tasks {
        let mut t = (*t).clone();
        if let Some(g) = &args.tables {
            t.tables = vec![g.clone()];
        }
        let o = BlobOptions {
            quick: args.quick,
            repair: args.repair,
            manifest: args.manifest.clone(),
            node_id: config.node.id.clone(),
        };
        match verify_blob_task(&config, &t, &o).await {
            Ok(r) => blob_reports.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for t in &item_tasks {
        if failure.is_some() {
            break;
        }
        let mut t = (*t).clone();
        if let Some(g) = &args.tables {
            t.tables = vec![g.clone()];
        }
        match verify_items_task(&config, &t, &ItemOptions { quick: args.quick, repair: args.repair }).await {
            Ok(r) => item_reports.push(r),
            Err(e) => failure = Some(e),
        }
    }
    for t in tasks.iter().filter(|_| failure.is_none()) {
        match verify_task(&config, t, &opts, &store, &progress).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(progress);
    let _ = renderer.await;
    if let Some(e) = failure {
        store.close().await;
        return Err(e.into());
    }
    let who = actor(&config.node.id);
    for r in &reports {
        crate::verify::record(&store, &who, r, "").await?;
    }
    for r in &blob_reports {
        crate::verify::record(&store, &who, &r.as_report(), "").await?;
    }
    for r in &item_reports {
        crate::verify::record(&store, &who, &r.as_report(), "").await?;
    }
    store.close().await;
    let identical = reports.iter().all(|r| r.identical)
        && blob_reports.iter().all(|r| r.identical())
        && item_reports.iter().all(|r| r.identical());
    match args.format {
        Format::Json => {
            let out = VerifyOutput { identical, tasks: reports, blob_tasks: blob_reports, item_tasks: item_reports };
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_else(|_| "{}".into()));
        }
        Format::Text => {
            for r in &blob_reports {
                print!("{}", r.text());
            }
            for r in &item_reports {
                print!("{}", r.text());
            }
            for r in &reports {
                print!("{}", r.text());
            }
        }
    }
    Ok(if identical { EXIT_OK } else { EXIT_DATA })
}

/// A repair file must go to a folder that exists (checked before any work is done).
fn check_repair_path(path: Option<&Path>) -> Result<(), CommandError> {
    let Some(p) = path else { return Ok(()) };
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.is_dir() {
        return Ok(());
    }
    Err(CommandError::Input {
        problem: format!("--repair-sql {}: folder {} does not exist", p.display(), dir.display()),
        fix: "create the folder or choose another path".into(),
    })
}
