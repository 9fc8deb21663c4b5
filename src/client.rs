//! [`NodeClient`]: the node API over HTTP (reqwest), implementing [`Control`] so the
//! console works the same against a remote node as in-process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use serde::de::DeserializeOwned;

use crate::connector::endpoint::path_segment as segment;
use crate::control::{
    Access, ConflictEntry, Control, ControlError, EndpointView, LogLine, NodeOverview, SkipRequest, Skipped, TaskView,
    VerifyProgress,
};
use crate::cutover::{CutoverRequest, CutoverView};
use crate::store::AuditEntry;

/// How long one cutover step may take over HTTP (Drain waits up to 10 minutes, a full
/// verify of a large task longer).
const STEP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Makes ring rustls's process-wide crypto provider (once; later calls do nothing).
/// reqwest refuses to build any client, even a plain-HTTP one, before one is set.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client of one node's API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl NodeClient {
    /// A client of the node at `base` (`http://host:port`, `https://host:port`; a bare
    /// `host:port` is HTTP, or HTTPS when `ca` is given), with an optional bearer token.
    /// Over HTTPS the node's certificate must be signed by the CA in the PEM file `ca`
    /// (only it is trusted), or without `ca` by a public CA.
    pub fn new(base: &str, token: Option<String>, ca: Option<&Path>) -> Result<NodeClient, ControlError> {
        let base = match (base.contains("://"), ca) {
            (true, _) => base.to_string(),
            (false, Some(_)) => format!("https://{base}"),
            (false, None) => format!("http://{base}"),
        };
        install_crypto_provider();
        let untrusted = |message: String| ControlError::Untrusted { node: base.clone(), message };
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| untrusted(format!("--ca {}: {e}", path.display())))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(untrusted(format!(
                        "--ca {} holds no usable PEM certificate; give the CA that signed the node's tls_cert",
                        path.display()
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| untrusted(format!("TLS cannot be set up: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|source| ControlError::Unreachable { node: base.clone(), source })?;
        Ok(NodeClient { base: base.trim_end_matches('/').to_string(), token, http })
    }

    /// Whether the node is reached over HTTPS.
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// A failed request's error: a certificate the client does not trust says so and
    /// how to fix it, instead of a generic "unreachable".
    fn failed(&self, source: reqwest::Error) -> ControlError {
        let mut cause: Option<&dyn std::error::Error> = Some(&source);
        while let Some(e) = cause {
            let text = e.to_string();
            if text.contains("invalid peer certificate")
                || text.contains("certificate") && text.contains("UnknownIssuer")
            {
                return ControlError::Untrusted {
                    node: self.base.clone(),
                    message: format!(
                        "the node's TLS certificate is not trusted ({text}); pass --ca with the PEM file of the CA that signed the node's tls_cert"
                    ),
                };
            }
            cause = e.source();
        }
        ControlError::Unreachable { node: self.base.clone(), source }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(&self, method: reqwest::Method, path: &str) -> Result<T, ControlError> {
        let body = (method == reqwest::Method::POST).then(|| "{}".to_string());
        self.send_body(method, path, body, None).await
    }

    async fn send_body<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<T, ControlError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|source| self.failed(source))?;
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            let message = body.get("error").and_then(|m| m.as_str()).unwrap_or("no message").to_string();
            return Err(ControlError::Remote {
                node: self.base.clone(),
                endpoint: path.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        resp.json().await.map_err(|source| ControlError::Unreachable { node: self.base.clone(), source })
    }

    /// `GET /api/v1/cluster`: every node of the cluster and every direction's owner.
    pub async fn cluster(&self) -> Result<crate::cluster::ClusterView, ControlError> {
        self.get("/api/v1/cluster").await
    }

    /// `POST /api/v1/cluster/rebalance`.
    pub async fn rebalance(&self) -> Result<serde_json::Value, ControlError> {
        self.post("/api/v1/cluster/rebalance").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ControlError> {
        self.send(reqwest::Method::GET, path).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ControlError> {
        self.send(reqwest::Method::POST, path).await
    }
}

impl Control for NodeClient {
    async fn overview(&self) -> Result<NodeOverview, ControlError> {
        self.get("/api/v1/node").await
    }

    async fn cluster(&self) -> Result<Option<crate::cluster::ClusterView>, ControlError> {
        match NodeClient::cluster(self).await {
            Ok(view) => Ok(Some(view)),
            // A node without [cluster] (or older than the route).
            Err(ControlError::Remote { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn access(&self) -> Result<Access, ControlError> {
        self.get("/api/v1/whoami").await
    }

    async fn pause(&self, _actor: &str, task: &str) -> Result<TaskView, ControlError> {
        self.post(&format!("/api/v1/tasks/{}/pause", segment(task))).await
    }

    async fn resume(&self, _actor: &str, task: &str) -> Result<TaskView, ControlError> {
        self.post(&format!("/api/v1/tasks/{}/resume", segment(task))).await
    }

    async fn verify_start(&self, _actor: &str, task: &str, repair: bool) -> Result<VerifyProgress, ControlError> {
        let action = if repair { "repair" } else { "verify" };
        self.post(&format!("/api/v1/tasks/{}/{action}", segment(task))).await
    }

    async fn verify_progress(&self, id: &str) -> Result<VerifyProgress, ControlError> {
        self.get(&format!("/api/v1/verify/{}", segment(id))).await
    }

    async fn conflicts(&self, task: Option<&str>, limit: usize) -> Result<Vec<ConflictEntry>, ControlError> {
        let filter = task.map(|t| format!("&task={}", segment(t))).unwrap_or_default();
        self.get(&format!("/api/v1/conflicts?limit={limit}{filter}")).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, ControlError> {
        self.get(&format!("/api/v1/audit?limit={limit}")).await
    }

    async fn freeze(&self, _actor: &str, endpoint: &str) -> Result<EndpointView, ControlError> {
        self.post(&format!("/api/v1/endpoints/{}/freeze", segment(endpoint))).await
    }

    async fn unfreeze(&self, _actor: &str, endpoint: &str) -> Result<EndpointView, ControlError> {
        self.post(&format!("/api/v1/endpoints/{}/unfreeze", segment(endpoint))).await
    }

    async fn skip(&self, _actor: &str, task: &str, req: SkipRequest) -> Result<Skipped, ControlError> {
        let body = serde_json::to_string(&req).unwrap_or_default();
        let path = format!("/api/v1/tasks/{}/skip", segment(task));
        self.send_body(reqwest::Method::POST, &path, Some(body), None).await
    }

    async fn logs(&self, after: u64, limit: usize) -> Result<Vec<LogLine>, ControlError> {
        self.get(&format!("/api/v1/logs?after={after}&limit={limit}")).await
    }

    async fn cutover_status(&self, task: &str) -> Result<CutoverView, ControlError> {
        self.get(&format!("/api/v1/tasks/{}/cutover", segment(task))).await
    }

    async fn cutover(&self, _actor: &str, task: &str, req: CutoverRequest) -> Result<CutoverView, ControlError> {
        let body = serde_json::to_string(&req).unwrap_or_default();
        // A step may wait for a drain or a full verify: far longer than a read.
        let path = format!("/api/v1/tasks/{}/cutover", segment(task));
        self.send_body(reqwest::Method::POST, &path, Some(body), Some(STEP_TIMEOUT)).await
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("shop"), "shop");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
