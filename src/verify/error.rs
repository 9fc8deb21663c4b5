//! Why a verify run could not finish: one error for the whole verify folder.

use std::path::PathBuf;

use crate::connector::ConnectorError;
use crate::store::StoreError;

/// Why a verify run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// An endpoint failed or is set up wrong (names the endpoint).
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The tables cannot be compared as asked.
    #[error("{problem}\n  fix: {fix}")]
    Input {
        /// What is wrong, naming the table.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The repair file could not be written.
    #[error("cannot write the repair file {path}: {source}\n  fix: check the path given to --repair-sql")]
    RepairFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit log could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}
