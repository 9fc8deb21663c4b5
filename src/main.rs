//! The `ferry` binary: parse the command line, install error reporting, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ferry::cli::{Cli, Command, EXIT_RUNTIME};
use ferry::commands::console::ConsoleOptions;
use ferry::commands::{self, CommandError};
use ferry::demo::{self, DemoOptions};

/// ferry moves millions of small rows through memory; mimalloc makes that allocation
/// churn cheap (it was a quarter of the CPU of a SQLite stream with the system allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // color-eyre's panic hook: a bug shows a report, not a bare panic.
    let _ = color_eyre::install();
    ferry::client::install_crypto_provider();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } | Command::Node { .. } => "info",
        _ => "warn",
    };
    // rskafka logs every fetch past a partition's end (how ferry finds it) as an error;
    // ferry reports each failing Kafka call itself, with its context.
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ferry={default_level},rskafka=off,warn")));
    // The console draws on standard error: log lines there would tear the screen.
    let draws = matches!(cli.command, Command::Console { .. } | Command::Demo { headless: false, .. })
        && std::io::stderr().is_terminal();
    let writer = if draws {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::sink)
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    };
    // Every line also goes to the in-memory tail the node API serves (`GET /api/v1/logs`)
    // and the console's Log view shows, even where the screen gets none.
    use tracing_subscriber::prelude::*;
    let screen = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false);
    let tail = tracing_subscriber::fmt::layer()
        .with_writer(ferry::control::logs::LogTail::global())
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false);
    tracing_subscriber::registry().with(filter).with(screen).with(tail).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(command: Command) -> Result<u8, CommandError> {
    match command {
        Command::Demo { duration, headless, theme, dir, seed } => {
            demo::demo(DemoOptions { duration, headless, theme, dir, seed }, shutdown_signal()).await
        }
        Command::Run { config, task, once } => {
            commands::run::run(&config, task.as_deref(), once, shutdown_signal()).await
        }
        Command::Node { config } => commands::node::node(&config, shutdown_signal()).await,
        Command::Console { nodes, token, ca, config, theme } => {
            commands::console::console(ConsoleOptions { nodes, token, ca, config, theme }, shutdown_signal()).await
        }
        Command::Check { config } => commands::check::check(&config).await,
        Command::Cluster { action, node, config, token, ca, format } => {
            let args = commands::cluster::ClusterArgs { action, node, config, token, ca, format };
            commands::cluster::cluster(args).await
        }
        Command::Status { config, format } => commands::status::status(&config, format).await,
        Command::Verify { config, task, tables, format, quick, repair_sql, repair, max_rows_per_sec, manifest } => {
            commands::verify::verify(commands::verify::VerifyArgs {
                config,
                task,
                tables,
                format,
                quick,
                repair_sql,
                repair,
                max_rows_per_sec,
                manifest,
            })
            .await
        }
        Command::Cutover { config, task, action, yes, dry_run, quick_only, token, ca } => {
            let args = commands::cutover::CutoverArgs { config, task, action, yes, dry_run, quick_only, token, ca };
            commands::cutover::cutover(args, shutdown_signal()).await
        }
        Command::Uninstall { config, task, endpoint, yes } => {
            commands::uninstall::uninstall(&config, &commands::uninstall::UninstallArgs { task, endpoint, yes }).await
        }
        Command::Store { action, file, config, force } => commands::store::store(action, &file, &config, force).await,
        Command::Skip { config, task, position, direction } => {
            commands::skip::skip(&config, &task, &position, direction.as_deref()).await
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
