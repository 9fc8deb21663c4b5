//! The errors of the HTTP stores' REST calls (search engines, Doris/StarRocks Stream
//! Load), one shape for all: what was asked, and whether and how the server answered.

use reqwest::{Method, StatusCode};

/// What went wrong talking to an HTTP endpoint. `at` is the path or URL asked, never
/// with credentials in it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer (connection refused, reset, timed out).
    #[error("{method} {at}: no answer: {source}")]
    Transport {
        /// HTTP method.
        method: Method,
        /// Path or URL asked.
        at: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer with an error status.
    #[error("{method} {at}: HTTP {status}: {detail}")]
    Status {
        /// HTTP method.
        method: Method,
        /// Path or URL asked.
        at: String,
        /// The status.
        status: StatusCode,
        /// The server's reason, or the start of the answer's body.
        detail: String,
    },
    /// A redirect without a usable `Location`, or too many of them.
    #[error("{method} {at}: {problem}")]
    Redirect {
        /// HTTP method.
        method: Method,
        /// Path or URL asked.
        at: String,
        /// What was wrong.
        problem: String,
    },
    /// An answer that is not the JSON asked for.
    #[error("{method} {at}: the answer is not JSON: {source}")]
    Body {
        /// HTTP method.
        method: Method,
        /// Path or URL asked.
        at: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl HttpError {
    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
