//! The bodies of the subcommands, and how their failures map to exit codes.

pub mod check;
pub mod cluster;
pub mod console;
pub mod cutover;
pub mod node;
pub mod run;
pub mod skip;
pub mod status;
pub mod store;
pub mod uninstall;
pub mod verify;

use crate::cli::{EXIT_DATA, EXIT_INPUT, EXIT_RUNTIME};
use crate::config::{Config, ConfigError, Task};
use crate::connector::{ConnectorError, ErrorKind};
use crate::engine::EngineError;
use crate::store::{Store, StoreError};

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The task file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad input on the command line.
    #[error("{problem}\n  fix: {fix}")]
    Input {
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// Preflight found problems (already printed).
    #[error("preflight found {0} problem(s) (listed above); nothing was changed")]
    Preflight(usize),
    /// A direction stopped.
    #[error(transparent)]
    Engine(Box<EngineError>),
    /// An endpoint failed outside a direction.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Data differs (verify, demo).
    #[error("{0}")]
    DataDiffers(String),
    /// Something failed at run time.
    #[error("{0}")]
    Runtime(String),
}

impl From<crate::control::run::StartError> for CommandError {
    fn from(e: crate::control::run::StartError) -> Self {
        use crate::control::run::StartError;
        match e {
            StartError::Preflight(n) => CommandError::Preflight(n),
            StartError::Engine(e) => CommandError::Engine(Box::new(e)),
            StartError::Connector(e) => CommandError::Connector(e),
            StartError::Store(e) => CommandError::Store(e),
            StartError::Cluster(e) => CommandError::Runtime(e.to_string()),
        }
    }
}

impl From<EngineError> for CommandError {
    fn from(e: EngineError) -> Self {
        CommandError::Engine(Box::new(e))
    }
}

impl CommandError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_) | CommandError::Input { .. } | CommandError::Preflight(_) => EXIT_INPUT,
            CommandError::Engine(e) if e.is_setup() => EXIT_INPUT,
            CommandError::Connector(e) if e.kind() == ErrorKind::Setup => EXIT_INPUT,
            // A store written by a newer release: a human must upgrade ferry.
            CommandError::Store(StoreError::NewerSchema { .. }) => EXIT_INPUT,
            CommandError::DataDiffers(_) => EXIT_DATA,
            _ => EXIT_RUNTIME,
        }
    }
}

/// Calls `on_tick` every second until it returns false or `signal` resolves (then logs
/// that in-flight batches are finishing).
pub async fn every_second_until(signal: impl std::future::Future<Output = ()>, mut on_tick: impl AsyncFnMut() -> bool) {
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = &mut signal => {
                tracing::info!("stopping: finishing in-flight batches");
                return;
            }
            _ = tick.tick() => {
                if !on_tick().await {
                    return;
                }
            }
        }
    }
}

/// The tasks a command acts on: one by name, or all.
pub fn select_tasks<'a>(config: &'a Config, name: Option<&str>) -> Result<Vec<&'a Task>, CommandError> {
    match name {
        None => {
            if config.tasks.is_empty() {
                return Err(CommandError::Input {
                    problem: format!("{} defines no [[task]]", config.path.display()),
                    fix: "add a [[task]] with name, from and to (see docs/task-file.md)".into(),
                });
            }
            Ok(config.tasks.iter().collect())
        }
        Some(n) => match config.task(n) {
            Some(t) => Ok(vec![t]),
            None => {
                let names: Vec<&str> = config.tasks.iter().map(|t| t.name.as_str()).collect();
                Err(CommandError::Input {
                    problem: format!("task {n:?} is not in {}", config.path.display()),
                    fix: format!("use one of: {}", names.join(", ")),
                })
            }
        },
    }
}

/// Opens (creating) the metadata store.
pub async fn open_store(config: &Config) -> Result<Store, CommandError> {
    Ok(Store::open(&config.node.store.path(), true).await?)
}
