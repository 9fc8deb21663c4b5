//! A TCP relay in the test process: a node's way to a server through an address the test
//! controls. Closing it refuses new connections and cuts the open ones, as a lost route
//! to the server would for that node alone (other nodes reach the server directly).
//! Holding it stops the traffic of the open ones and keeps their server side open: the
//! server notices nothing (no data, no close) until its own timeouts, as with a cut
//! cable or a dead host.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Relays connections to `listen` to `upstream` until closed (or dropped).
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    stop: CancellationToken,
    /// Cancelled by [`Relay::hold`].
    held: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying `listen` (port 0: any free port) to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Relay {
        let listener =
            tokio::net::TcpListener::bind(listen).await.unwrap_or_else(|e| panic!("relay: bind {listen}: {e}"));
        let addr = listener.local_addr().expect("relay address");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let held = CancellationToken::new();
        let hold = held.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = token.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let (token, hold) = (token.clone(), hold.clone());
                conns.spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let held = tokio::select! {
                        biased;
                        _ = token.cancelled() => false,
                        _ = hold.cancelled() => true,
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                    };
                    if held {
                        // Nothing passes and the server's side stays open until closed.
                        drop(inbound);
                        token.cancelled().await;
                        drop(outbound);
                    }
                });
            }
            // Dropping the listener and every relayed pair closes them all.
            drop(listener);
            conns.shutdown().await;
        });
        Relay { addr, upstream, stop, held, task: Some(task) }
    }

    /// `127.0.0.1:port` of a URL's server (`scheme://user:password@127.0.0.1:port/...`).
    pub fn upstream_of(url: &str) -> SocketAddr {
        let rest = url.split("://").nth(1).unwrap_or(url);
        let host_port = rest.rsplit('@').next().unwrap_or(rest).split('/').next().unwrap_or_default();
        host_port.parse().unwrap_or_else(|e| panic!("relay: {url}: not host:port ({e})"))
    }

    /// Stops the traffic of every relayed connection, keeping their server side open
    /// (until [`Relay::close`] or drop): the server sees neither data nor a close.
    pub fn hold(&self) {
        self.held.cancel();
    }

    /// Stops listening and cuts every relayed connection; returns once all are closed.
    pub async fn close(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("relay task");
        }
    }

    /// Listens again on the same address (after [`Relay::close`]).
    pub async fn reopen(&mut self) {
        self.close().await;
        *self = Relay::start(self.addr, self.upstream).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
