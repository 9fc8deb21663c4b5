//! `ferry store export|import FILE`: the node's metadata store to a file of JSON lines
//! and back (docs/store-export.md), so its audit log and cutover state move with its
//! tasks. Import is audited.

use std::path::Path;

use super::{CommandError, open_store};
use crate::cli::StoreCommand;
use crate::config::Config;
use crate::store::actor;
use crate::store::transfer::TransferError;

/// `ferry store export|import FILE --config TASKFILE [--force]`.
pub async fn store(action: StoreCommand, file: &Path, config_path: &Path, force: bool) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    let store = open_store(&config).await?;
    let who = actor(&config.node.id);
    let outcome = match action {
        StoreCommand::Export => store.export(file, &config.node.id).await.map(|n| {
            format!(
                "exported {n} row(s) of {} to {} (passwords masked)",
                config.node.store.path().display(),
                file.display()
            )
        }),
        StoreCommand::Import => match store.import(file, force).await {
            Ok(done) => {
                let detail = format!(
                    "imported {}: {} added, {} replaced, {} already there",
                    file.display(),
                    done.added,
                    done.replaced,
                    done.unchanged
                );
                store.audit(&who, "store.import", None, &detail).await?;
                Ok(detail)
            }
            Err(e) => Err(e),
        },
    };
    store.close().await;
    match outcome {
        Ok(line) => {
            println!("{line}");
            Ok(0)
        }
        Err(TransferError::Store(e)) => Err(CommandError::Store(e)),
        Err(e @ TransferError::Io { .. }) => Err(CommandError::Runtime(e.to_string())),
        Err(e) => {
            let text = e.to_string();
            let (problem, fix) = text.split_once("\n  fix: ").unwrap_or((&text, "see `ferry store --help`"));
            Err(CommandError::Input { problem: problem.to_string(), fix: fix.to_string() })
        }
    }
}
