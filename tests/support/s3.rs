//! S3 for tests: the testbed's moto_server (FERRY_TEST_S3, as `scripts/testbed env`
//! prints it), a bucket per test, and the `ferry` binary run with test credentials.
//! A server that is not there fails the test with how to start it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The S3 endpoint URL of the testbed.
pub fn endpoint() -> String {
    std::env::var("FERRY_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:5011".into())
}

/// An `s3://` URL of a bucket and prefix on the testbed, with its state file in `dir`.
pub fn url(bucket: &str, prefix: &str, state_dir: &Path) -> String {
    format!(
        "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&state={}",
        endpoint(),
        state_dir.join(format!("{bucket}-state.db")).display()
    )
}

/// A new bucket with a unique name.
pub async fn bucket(tag: &str) -> String {
    ferry::client::install_crypto_provider();
    let name = format!("ferry-{tag}-{}", fastrand::u32(..));
    let http = crate::support::http_client(Duration::from_secs(10));
    let r = http.put(format!("{}/{name}", endpoint())).send().await;
    match r {
        Ok(r) if r.status().is_success() => name,
        Ok(r) => panic!("creating bucket {name} on {}: HTTP {}", endpoint(), r.status()),
        Err(e) => panic!(
            "no S3 server at {} ({e}): start the testbed with `scripts/testbed start` and `eval \"$(scripts/testbed env)\"`",
            endpoint()
        ),
    }
}

/// `ferry ARGS` with the test credentials, waited for (at most 5 minutes).
pub fn ferry(args: &[&str], config: &Path) -> Output {
    super::output_within(&mut command(args, config), Duration::from_secs(300))
}

/// `ferry ARGS --config CONFIG` with the test credentials, info logging, not started.
pub fn command(args: &[&str], config: &Path) -> Command {
    let mut c = Command::new(super::ferry_bin());
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("FERRY_LOG", "info");
    c
}
