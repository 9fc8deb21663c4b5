//! HTTPS for the node API (rustls): `[node] tls_cert` and `tls_key` load a PEM chain
//! and key; the listener then speaks TLS only, so a plain HTTP client gets no API (its
//! bytes fail the handshake and the connection is closed).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::NodeTls;

/// A slow or silent client gives up its handshake after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("[node] {key} {path}: {problem}")]
    File {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("[node] tls_cert and tls_key cannot serve HTTPS: {0}")]
    Config(#[source] rustls::Error),
}

/// The rustls server configuration of `[node] tls_cert`/`tls_key`.
pub fn server_config(tls: &NodeTls) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let file_error = |key: &'static str, path: &Path, problem: String| TlsSetupError::File {
        key,
        path: path.to_path_buf(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| file_error("tls_cert", &tls.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("tls_cert", &tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("tls_cert", &tls.cert, "holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| file_error("tls_key", &tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Config)?;
    Ok(Arc::new(config))
}

type Handshake = Pin<Box<dyn Future<Output = Option<(TlsStream<TcpStream>, SocketAddr)>> + Send>>;

/// A TCP listener that hands out connections once their TLS handshake is done. The
/// handshakes run side by side inside `accept`, so one slow client never holds up the
/// others; dropping the listener drops them.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    pending: FuturesUnordered<Handshake>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> TlsListener {
        TlsListener { tcp, acceptor: TlsAcceptor::from(config), pending: FuturesUnordered::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let acceptor = self.acceptor.clone();
                        self.pending.push(Box::pin(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %peer, error = %e, "tls handshake refused");
                                    None
                                }
                                Err(_) => None,
                            }
                        }));
                    }
                    // Too many open files and the like: wait a little, as axum's own
                    // TCP listener does.
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Some(conn) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
