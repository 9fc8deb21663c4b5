//! The REST client of one search endpoint: JSON and NDJSON requests with basic
//! authentication, and the errors they end in (a refused login is a setup problem, a
//! lost connection or a busy server a runtime one).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

use super::SearchEndpoint;
pub use crate::connector::endpoint::path_segment as segment;
pub use crate::connector::http_error::HttpError;
use crate::connector::{ConnectorError, ErrorKind};

/// A client of one endpoint.
#[derive(Clone)]
pub struct Http {
    ep: Arc<SearchEndpoint>,
    client: reqwest::Client,
}

impl Http {
    /// A client of `ep` (no request made yet).
    pub fn new(ep: &SearchEndpoint) -> Result<Self, ConnectorError> {
        crate::connector::tls_provider();
        let setup = |problem: String| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem,
            fix: "report this as a bug".into(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(format!("TLS cannot be set up: {e}")))?
            .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| setup(format!("HTTP client: {e}")))?;
        Ok(Http { ep: Arc::new(ep.clone()), client })
    }

    /// The endpoint.
    pub fn ep(&self) -> &SearchEndpoint {
        &self.ep
    }

    /// Sends a request; `Ok((status, body))` for any answer the caller may judge (2xx,
    /// 404, 409), `Err` for the rest.
    pub async fn send(&self, method: Method, path: &str, body: Option<Body>) -> Result<(StatusCode, Json), HttpError> {
        let url = format!("{}{path}", self.ep.base);
        let mut req = self.client.request(method.clone(), url);
        if let Some(user) = &self.ep.user {
            req = req.basic_auth(user, self.ep.password.as_deref());
        }
        req = match body {
            Some(Body::Json(j)) => req.header("content-type", "application/json").body(j.to_string()),
            Some(Body::Ndjson(b)) => req.header("content-type", "application/x-ndjson").body(b),
            None => req,
        };
        let resp = req.send().await.map_err(|source| HttpError::Transport {
            method: method.clone(),
            at: path.to_string(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| HttpError::Transport {
            method: method.clone(),
            at: path.to_string(),
            source,
        })?;
        let json: Result<Json, _> = if bytes.is_empty() { Ok(Json::Null) } else { serde_json::from_slice(&bytes) };
        if status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT {
            let json = json.map_err(|source| HttpError::Body { method, at: path.to_string(), source })?;
            return Ok((status, json));
        }
        let reason = match &json {
            Ok(j) => reason_of(j),
            Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        };
        Err(HttpError::Status { method, at: path.to_string(), status, detail: reason })
    }

    /// The error of a request, naming the endpoint and what ferry was doing: a refused
    /// login says how to fix the credentials; 429 and 5xx may pass.
    pub fn error(&self, what: impl Into<String>) -> impl FnOnce(HttpError) -> ConnectorError + '_ {
        let what = what.into();
        move |e| {
            match e.status() {
            Some(StatusCode::UNAUTHORIZED) | Some(StatusCode::FORBIDDEN) => ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("{} refused ferry's login while {what}: {e}", self.ep.display),
                fix: "check the user and password (the url's, or password_env / password_file) and that the user may manage and write ferry's indexes and .ferry-checkpoints".into(),
            },
            Some(s) if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS && s != StatusCode::REQUEST_TIMEOUT => {
                ConnectorError::Stream {
                    endpoint: self.ep.name.clone(),
                    what,
                    source: Box::new(e),
                    kind: ErrorKind::Setup,
                }
            }
            _ => ConnectorError::Stream {
                endpoint: self.ep.name.clone(),
                what,
                source: Box::new(e),
                kind: ErrorKind::Runtime,
            },
        }
        }
    }
}

/// A request body.
pub enum Body {
    /// One JSON document.
    Json(Json),
    /// Newline-delimited JSON (`_bulk`).
    Ndjson(Vec<u8>),
}

/// `type: reason` of an error answer (`{"error": {"type", "reason"}}`), else its text.
pub fn reason_of(j: &Json) -> String {
    let e = &j["error"];
    match (e["type"].as_str(), e["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        _ if e.is_string() => e.as_str().unwrap_or_default().to_string(),
        _ => j.to_string().chars().take(300).collect(),
    }
}
