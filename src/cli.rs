//! Subcommands and their flags. Names, flags and exit codes are contracts: scripts,
//! docs and other parts of ferry call them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a check found a problem in the data (verify found differences).
pub const EXIT_DATA: u8 = 1;
/// Exit code: bad input or configuration.
pub const EXIT_INPUT: u8 = 2;
/// Exit code: a runtime failure (an endpoint went away).
pub const EXIT_RUNTIME: u8 = 3;

/// ferry keeps two data centers' data in step.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// What `ferry cutover` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CutoverCommand {
    /// Print the steps and their checks, with live values; changes nothing.
    Plan,
    /// Begin a cutover (Preflight); with --yes run every step to Done.
    Start,
    /// The cutover's state: steps done, their checks and durations, live values.
    Status,
    /// Run the next step.
    Next,
    /// Roll back: freeze the target, drain the reverse direction, reopen the source, restore the direction.
    Rollback,
}

/// What `ferry cluster` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterCommand {
    /// Every node (id, site, version, uptime, directions, last seen) and each direction's owner.
    Status,
    /// Move directions to live nodes at their targets' sites (only on this request).
    Rebalance,
}

/// What `ferry store` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreCommand {
    /// Write the metadata store (audit, cutover state, directions, skips, statuses) to FILE.
    Export,
    /// Merge FILE, written by `ferry store export`, into the metadata store.
    Import,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Two SQLite data centers taking writes, kept in step both ways, proven identical.
    Demo {
        /// How long the workload writes, in seconds (headless; the console runs until q).
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// No console: print a status line instead, and stop after --duration.
        #[arg(long)]
        headless: bool,
        /// Console theme (see `ferry console --theme`).
        #[arg(long)]
        theme: Option<String>,
        /// Folder for a.db, b.db and ferry-meta.db (kept afterwards); default: a new temp folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Seed of the workload's random choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run the task file's tasks until SIGINT/SIGTERM.
    Run {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
        /// Run only this task.
        #[arg(long)]
        task: Option<String>,
        /// Catch up to each source's head (blob tasks: one full pass), then exit 0.
        #[arg(long)]
        once: bool,
    },
    /// Run the task file's tasks and serve the node API on [node].listen until SIGINT/SIGTERM.
    Node {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The cluster of nodes (docs/cluster.md), asked through one node's API.
    Cluster {
        /// status or rebalance.
        #[arg(value_enum)]
        action: ClusterCommand,
        /// A node's API, e.g. http://127.0.0.1:7400 (default: [node] listen of --config).
        #[arg(long, value_name = "URL")]
        node: Option<String>,
        /// The task file whose [node] listen is asked when --node is not given.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Bearer token for the node.
        #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of the CA that signed the node's HTTPS certificate (only it is trusted).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Output format (status).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// The operations console: watch nodes (--node) and/or run a task file in-process (--config).
    Console {
        /// A node API to watch, e.g. http://127.0.0.1:7400 (repeatable).
        #[arg(long = "node", value_name = "URL")]
        nodes: Vec<String>,
        /// Bearer token for the nodes.
        #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of the CA that signed the nodes' HTTPS certificates (only it is trusted).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// A task file whose tasks the console runs in-process.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Colour theme: dark, light, high-contrast, or a file in the config folder's themes/.
        #[arg(long)]
        theme: Option<String>,
    },
    /// Validate the task file and preflight every endpoint (never writes).
    Check {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Each task's state, position, lag and totals.
    Status {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Skip one source transaction that cannot be applied, on purpose (audited).
    Skip {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
        /// The task.
        #[arg(long)]
        task: String,
        /// The position of the transaction, as the error message printed it.
        #[arg(long)]
        position: String,
        /// The direction (`a->b`), when the task is two-way and the status does not tell.
        #[arg(long)]
        direction: Option<String>,
    },
    /// Move a node's metadata store (audit, cutover state, history) to a file and back (docs/store-export.md).
    Store {
        /// export or import.
        #[arg(value_enum)]
        action: StoreCommand,
        /// The file written (export) or read (import): JSON lines.
        file: PathBuf,
        /// The task file whose [node] store is exported or imported into.
        #[arg(long, short)]
        config: PathBuf,
        /// import: the file's rows replace other state the store holds under the same keys.
        #[arg(long)]
        force: bool,
    },
    /// Remove everything ferry added to the stores (triggers, ferry's tables or database), audited.
    Uninstall {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only the endpoints of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Do not ask for the typed confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Move a task's writes to its target, step by step, with a rollback path (docs/cutover.md).
    Cutover {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
        /// The task to cut over.
        #[arg(long)]
        task: String,
        /// plan, start, status, next or rollback.
        #[arg(value_enum)]
        action: CutoverCommand,
        /// Run the steps without asking for confirmation (start: every step to Done).
        #[arg(long)]
        yes: bool,
        /// Print what would run, with its checks; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The Verify step runs `verify --quick` only (no full checksum verify).
        #[arg(long)]
        quick_only: bool,
        /// Bearer token for the node at [node].listen.
        #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of the CA that signed the node's HTTPS certificate (only it is trusted).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Prove both sides of a task hold the same rows; find and optionally repair differences.
    Verify {
        /// The task file.
        #[arg(long, short)]
        config: PathBuf,
        /// Verify only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only tables matching this glob (`db.table` for MySQL, `table` for SQLite).
        #[arg(long)]
        tables: Option<String>,
        /// Output format (json: only the report on standard output).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Row count and lowest/highest key per table only (for the cutover window).
        #[arg(long)]
        quick: bool,
        /// Write SQL that makes the target equal to the source into this file.
        #[arg(long)]
        repair_sql: Option<PathBuf>,
        /// Apply that SQL to the target (every repaired row goes to the audit log).
        #[arg(long)]
        repair: bool,
        /// Read at most this many rows per second (0 = unthrottled).
        #[arg(long, default_value_t = 0)]
        max_rows_per_sec: u64,
        /// File and object tasks: write the source's MD5 sums here, as `md5sum -c` reads them.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
}
