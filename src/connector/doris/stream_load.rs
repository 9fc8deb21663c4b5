//! The Stream Load client: `PUT /api/{db}/{table}/_stream_load` with basic
//! authentication, a label and JSON lines. The FE answers with a 307 to a BE; reqwest
//! drops `Authorization` when a redirect changes the port, so ferry follows the
//! redirect itself (reqwest's own redirects are off) and sends the same request, login
//! included, to the `Location` it was given.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use serde_json::Value as Json;

use super::DorisEndpoint;
pub use crate::connector::http_error::HttpError;
use crate::connector::{ConnectorError, ErrorKind};

/// Redirects followed for one request at most (FE to BE is one).
const MAX_REDIRECTS: usize = 3;

/// An HTTP client of one Doris endpoint.
#[derive(Clone)]
pub struct Http {
    ep: Arc<DorisEndpoint>,
    client: reqwest::Client,
}

impl Http {
    /// A client of `ep` (no request made yet); with TLS, the URL's CA or the web's roots.
    pub fn new(ep: &DorisEndpoint) -> Result<Self, ConnectorError> {
        crate::connector::tls_provider();
        let setup = |problem: String, fix: &str| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem,
            fix: fix.to_string(),
        };
        let mut roots = rustls::RootCertStore::empty();
        match &ep.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    setup(format!("cannot read the CA file {}: {e}", path.display()), "point ?ca= at a PEM file")
                })?;
                let certs: Vec<_> =
                    rustls_pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
                if certs.is_empty() {
                    return Err(setup(
                        format!("the CA file {} holds no PEM certificate", path.display()),
                        "point ?ca= at the PEM file of the CA that signed the server's certificate",
                    ));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| setup(format!("the CA file {}: {e}", path.display()), "use a valid PEM CA"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(format!("TLS cannot be set up: {e}"), "report this as a bug"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| setup(format!("HTTP client: {e}"), "report this as a bug"))?;
        Ok(Http { ep: Arc::new(ep.clone()), client })
    }

    /// The endpoint.
    pub fn ep(&self) -> &DorisEndpoint {
        &self.ep
    }

    /// Sends a request to `path` on the FE, following redirects with the login kept;
    /// the final answer's status and JSON body (`Null` when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<bytes::Bytes>,
    ) -> Result<(StatusCode, Json), HttpError> {
        let mut url = format!("{}{path}", self.ep.base);
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.client.request(method.clone(), &url).basic_auth(&self.ep.user, Some(&self.ep.password));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let resp = req.send().await.map_err(|source| HttpError::Transport {
                method: method.clone(),
                at: url.clone(),
                source,
            })?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
                url = match location {
                    Some(l) if l.starts_with("http://") || l.starts_with("https://") => l.to_string(),
                    Some(l) if l.starts_with('/') => format!("{}{l}", self.ep.base),
                    _ => {
                        return Err(HttpError::Redirect {
                            method,
                            at: url,
                            problem: format!("HTTP {status} without a usable Location"),
                        });
                    }
                };
                continue;
            }
            let bytes = resp.bytes().await.map_err(|source| HttpError::Transport {
                method: method.clone(),
                at: url.clone(),
                source,
            })?;
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
                return Err(HttpError::Status { method, at: url, status, detail: body });
            }
            let json = if bytes.is_empty() {
                Json::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|source| HttpError::Body {
                    method: method.clone(),
                    at: url,
                    source,
                })?
            };
            return Ok((status, json));
        }
        Err(HttpError::Redirect { method, at: url, problem: format!("more than {MAX_REDIRECTS} redirects") })
    }

    /// The error of a request, naming the endpoint and what ferry was doing: a refused
    /// login says how to fix the credentials (the URL's password masked); other
    /// answers may pass.
    pub fn error(&self, what: impl Into<String>) -> impl FnOnce(HttpError) -> ConnectorError + '_ {
        let what = what.into();
        move |e| {
            match e.status() {
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => ConnectorError::Setup {
                endpoint: self.ep.name.clone(),
                problem: format!("{} refused ferry's login as user {:?} while {what}: {e}", self.ep.display, self.ep.user),
                fix: "check the user and password (the url's, or password_env / password_file) and that the user has LOAD privilege on the database".into(),
            },
            Some(StatusCode::NOT_FOUND) => ConnectorError::Stream {
                endpoint: self.ep.name.clone(),
                what,
                source: Box::new(e),
                kind: ErrorKind::Setup,
            },
            _ => ConnectorError::Stream { endpoint: self.ep.name.clone(), what, source: Box::new(e), kind: ErrorKind::Runtime },
        }
        }
    }
}

/// Whether an error may pass when the request is sent again (no answer, 5xx).
pub fn transient(e: &HttpError) -> bool {
    match e {
        HttpError::Transport { .. } => true,
        HttpError::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
        _ => false,
    }
}
