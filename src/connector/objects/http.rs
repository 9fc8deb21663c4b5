//! The HTTP client of the S3 requests: hyper over TCP connections that acknowledge
//! what they receive at once (TCP_QUICKACK after every read).
//!
//! Why: a server that answers with its response head and its body in two writes and
//! leaves Nagle's algorithm on (s3s-fs does) holds a body smaller than a segment until
//! the head is acknowledged, and Linux delays that acknowledgement by up to 40 ms on a
//! kept-alive connection (its request/response "ping-pong" mode): every small GET then
//! waited about 40 ms with nothing to do. Acknowledging at once releases the body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{HeaderMap, Method, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take, its body read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle connections kept per host: one per copy or verify lane and some.
const IDLE_PER_HOST: usize = 64;

/// A TCP connection that acknowledges every read at once.
pub struct QuickAck(TokioIo<TcpStream>);

impl Read for QuickAck {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.0).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            // Not permanent in Linux: the socket drifts back to delayed ACKs, so after
            // every read. Failing only costs the delay it would have saved.
            let _ = socket2::SockRef::from(me.0.inner()).set_tcp_quickack(true);
        }
        r
    }
}

impl Write for QuickAck {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens [`QuickAck`] connections to a URI's host and port.
#[derive(Clone, Default)]
pub struct QuickAckConnector;

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<QuickAck>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port))).await.map_err(
                |_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {host}:{port}")),
            )??;
            tcp.set_nodelay(true)?;
            Ok(QuickAck(TokioIo::new(tcp)))
        })
    }
}

/// A finished response: status, headers and the whole body.
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The S3 client's HTTP side (cheap to clone: connections are pooled and shared).
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<QuickAckConnector>, Full<Bytes>>,
}

impl Http {
    /// A client speaking HTTP/1.1, over TLS with `tls` for https URLs.
    pub fn new(tls: rustls::ClientConfig) -> Http {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(QuickAckConnector);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Http { client }
    }

    /// Sends a request and reads its whole answer; the error says why in words.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("bad request: {e}"))?;
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                format!("{e}{cause}")
            })?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
            Ok(Response { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
    }
}
