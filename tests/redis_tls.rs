//! Redis over TLS (`rediss://…?ca=PATH`) on private servers serving TLS with the test
//! CA's certificate for 127.0.0.1: the replication stream (a full resync, then commands)
//! and the target's writes go over TLS; a CA that did not sign the server's certificate
//! is refused by `ferry check` naming the certificate.

use std::time::Duration;

use crate::redis_sync::populate_types;
use crate::support::FerryRun;
use crate::support::redis::{self, Client, Server, wait_identical};

/// A private server with a plain port (the test's own client) and a TLS port (ferry's).
fn tls_server(dir: &std::path::Path) -> (Server, u16) {
    let certs = crate::support::tls::certs();
    let tls_port = redis::free_port();
    let (port, cert, key, ca) = (
        tls_port.to_string(),
        certs.cert().display().to_string(),
        certs.key().display().to_string(),
        certs.ca().display().to_string(),
    );
    let server = Server::start(
        dir,
        &[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    );
    (server, tls_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_ca_carries_the_resync_and_the_stream_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, src_tls) = tls_server(&dir.path().join("src"));
    let (dst, dst_tls) = tls_server(&dir.path().join("dst"));
    let certs = crate::support::tls::certs();
    let ca = certs.ca().display().to_string();
    let (url_a, url_b) =
        (format!("rediss://127.0.0.1:{src_tls}/0?ca={ca}"), format!("rediss://127.0.0.1:{dst_tls}/2?ca={ca}"));
    let mut a = Client::new(&src.url(0), 0).await;
    let mut b = Client::new(&dst.url(2), 2).await;
    populate_types(&mut a, "").await;

    // A CA that did not sign the server's certificate: refused, naming the certificate.
    let other = certs.other_ca().display().to_string();
    let wrong = format!("rediss://127.0.0.1:{src_tls}/0?ca={other}");
    let config = redis::task_file(dir.path(), &wrong, &url_b, "one-way", "\"*\"", "");
    let out = crate::support::ferry_within(
        &["check", "--config", config.to_str().expect("utf-8 path")],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.to_lowercase().contains("certificate"), "{}", out.all());

    // The right CA: a full resync over TLS, then the stream, into a target over TLS.
    let config = redis::task_file(dir.path(), &url_a, &url_b, "one-way", "\"*\"", "");
    let log = dir.path().join("ferry.log");
    let mut run = FerryRun::start(&config, &log);
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after the full resync over TLS").await;
    a.run("SET after:resync streamed").await;
    a.run("LPUSH l:small z").await;
    a.run("DEL s:int").await;
    wait_identical(&mut a, &mut b, Duration::from_secs(30), "after streaming over TLS").await;
    assert_eq!(b.run("GET after:resync").await.text().as_deref(), Some("streamed"));
    assert_eq!(run.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
}
