//! TLS (issue 15.1): a MariaDB that requires secure transport is reached with
//! `?ssl-mode=…&ssl-ca=…` and refuses plain sessions; the node serves HTTPS only with
//! `[node] tls_cert`/`tls_key`, its clients verify it against `--ca`, and a wrong CA
//! is refused with a message that says so. Certificates are made by the test.

use std::sync::Arc;
use std::time::Duration;

use ferry::client::NodeClient;
use ferry::control::{Control, ControlError};

use crate::support::mariadb::private_tls;
use crate::support::tls::certs;
use crate::support::{FerryRun, create_db, ferry_within, task_file};

const LIMIT: Duration = Duration::from_secs(60);

/// A task file whose endpoints are two databases of the TLS-only server, reached with `query`.
fn tls_task(dir: &std::path::Path, url: &str, query: &str) -> std::path::PathBuf {
    crate::support::mariadb::task_file(
        dir,
        &format!("{url}/tls_a{query}"),
        &format!("{url}/tls_b{query}"),
        "one-way",
        &["tls_a.*"],
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_requiring_tls_is_reached_with_ssl_mode_and_refuses_plain_sessions() {
    let server = private_tls().await;
    server.root_sql(
        "CREATE DATABASE IF NOT EXISTS tls_a; CREATE DATABASE IF NOT EXISTS tls_b; \
         CREATE TABLE IF NOT EXISTS tls_a.kv (k INT PRIMARY KEY, v VARCHAR(20)); \
         CREATE TABLE IF NOT EXISTS tls_b.kv (k INT PRIMARY KEY, v VARCHAR(20)); \
         REPLACE INTO tls_a.kv VALUES (1, 'one'); REPLACE INTO tls_b.kv VALUES (1, 'one');",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = server.certs.ca();
    let verify = async |query: &str| {
        let config = tls_task(dir.path(), &server.url, query);
        ferry_within(&["verify", "--config", config.to_str().expect("utf-8")], LIMIT).await
    };

    for mode in ["verify-identity", "verify-ca"] {
        let out = verify(&format!("?ssl-mode={mode}&ssl-ca={}", ca.display())).await;
        assert_eq!(out.code, Some(0), "ssl-mode={mode} with the right CA connects and verifies: {}", out.all());
    }
    let out = verify("?ssl-mode=required").await;
    assert_eq!(out.code, Some(0), "required encrypts without checking the certificate: {}", out.all());

    // Plain TCP: the server refuses the session, and ferry says why.
    let out = verify("").await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("endpoint a: connecting"), "the refusal is shown: {}", out.all());

    // A CA that did not sign the server's certificate: refused, naming the certificate.
    let out = verify(&format!("?ssl-mode=verify-ca&ssl-ca={}", server.certs.other_ca().display())).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().to_lowercase().contains("certificate"), "the certificate problem is named: {}", out.all());

    // The driver's own parameter, which panicked inside its no-TLS stub before: now TLS
    // against the public roots, which do not know this private CA: a clear refusal.
    let out = verify("?require_ssl=true").await;
    assert_ne!(out.code, Some(101), "no panic: {}", out.all());
    assert!(!out.all().contains("panicked"), "{}", out.all());
    assert!(out.all().to_lowercase().contains("certificate"), "{}", out.all());

    // A TLS option ferry does not know is a setup error with the fix, before any connection.
    let out = verify("?ssl-mode=preferred").await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("ssl-mode=required, verify-ca or verify-identity"), "{}", out.all());
}

/// A node with `[node] tls_cert`/`tls_key` on a free port; (run, https base, folder).
async fn https_node() -> (FerryRun, String, tempfile::TempDir) {
    let c = certs();
    let dir = tempfile::tempdir().expect("temp dir");
    for db in ["a.db", "b.db"] {
        create_db(&dir.path().join(db), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let path = task_file(dir.path(), "one-way", "");
    let text = std::fs::read_to_string(&path).expect("task file").replacen(
        "[node]\n",
        &format!(
            "[node]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            c.cert().display(),
            c.key().display()
        ),
        1,
    );
    std::fs::write(&path, text).expect("write task file");
    let run = FerryRun::start_command("node", &path, &dir.path().join("node.log"));
    (run, format!("https://127.0.0.1:{port}"), dir)
}

/// An HTTPS client trusting only `ca`.
fn https_client(ca: &std::path::Path) -> reqwest::Client {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    ferry::client::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(config)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_serves_https_only_and_clients_verify_it_against_the_ca() {
    let c = certs();
    let (_run, base, dir) = https_node().await;
    let http = https_client(&c.ca());
    let log = || std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let health = loop {
        match http.get(format!("{base}/health")).send().await {
            Ok(r) => break r,
            Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("no HTTPS /health within 30 s: {e}; log:\n{}", log()),
        }
    };
    assert_eq!(health.status(), 200);
    let endpoints = http.get(format!("{base}/api/v1/endpoints")).send().await.expect("endpoints over https");
    assert_eq!(endpoints.status(), 200);
    assert!(endpoints.text().await.expect("body").contains("\"a\""));

    // Plain HTTP on the same port gets no API: the handshake fails, no HTTP answer.
    let plain = crate::support::http_client(Duration::from_secs(5));
    let http_base = base.replacen("https://", "http://", 1);
    for path in ["/health", "/api/v1/endpoints"] {
        let r = plain.get(format!("{http_base}{path}")).send().await;
        assert!(r.is_err(), "plain HTTP must get no answer on {path}: {r:?}");
    }

    // ferry's client (the console's and `ferry cutover`'s) with --ca: works.
    let client = NodeClient::new(&base, None, Some(&c.ca())).expect("client");
    let overview = client.overview().await.expect("overview over https with --ca");
    assert_eq!(overview.tasks.len(), 1);
    // The wrong CA: refused, and the message says what to do.
    let wrong = NodeClient::new(&base, None, Some(&c.other_ca())).expect("client");
    match wrong.overview().await {
        Err(e @ ControlError::Untrusted { .. }) => {
            let text = e.to_string();
            assert!(text.contains("not trusted") && text.contains("--ca"), "{text}");
        }
        other => panic!("a wrong CA must be refused as untrusted, got {other:?}"),
    }
    // The CLI says the same and does not fall back to running the cutover itself.
    let config = dir.path().join("ferry.toml");
    let other = c.other_ca();
    let out = ferry_within(
        &[
            "cutover",
            "--config",
            config.to_str().expect("utf-8"),
            "--task",
            "t",
            "status",
            "--ca",
            other.to_str().expect("utf-8"),
        ],
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.all().contains("not trusted"), "{}", out.all());
    // No [[token]]: the node said loudly that it is unauthenticated, loopback only.
    assert!(log().contains("UNAUTHENTICATED"), "{}", log());
}
