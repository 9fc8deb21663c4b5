//! The cutover freeze of a folder: a read-only bind mount proven by a probe. New writes
//! through the path are refused; a file opened for writing before the freeze keeps
//! writing (the documented limit); unfreezing restores writes.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;

use ferry::connector::endpoint::{Endpoint, EndpointUrl};
use ferry::connector::registry::{self, FreezeRequest};
use ferry::model::{FreezeMethod, SiteId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_folder_refuses_new_writes_until_unfrozen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("app");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("held.log"), b"before\n").expect("write");
    let ep = Endpoint {
        name: "a".into(),
        site: SiteId::new("a"),
        url: EndpointUrl::new(format!("file://{}", dir.display()), "/"),
        password: None,
        ssh: Default::default(),
    };
    let how = FreezeRequest {
        method: FreezeMethod::ReadOnly,
        exempt_users: Vec::new(),
        reason: "test".into(),
        watch: Default::default(),
    };
    let as_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !as_root {
        let e = registry::freeze(&ep, &how).await.expect_err("needs root");
        assert!(e.to_string().contains("needs root") && e.to_string().contains("fix:"), "{e}");
        return;
    }
    // A writer that opened its file before the freeze.
    let mut held = std::fs::OpenOptions::new().append(true).open(dir.join("held.log")).expect("open");
    let out = registry::freeze(&ep, &how).await.expect("freeze");
    let probe = out.probe.expect("probe ran");
    assert!(probe.is_err(), "the probe write is refused: {probe:?}");
    assert!(registry::frozen_since(&ep).await.expect("read").is_some());
    let refused = std::fs::write(dir.join("new.txt"), b"x");
    assert!(refused.is_err(), "a new file is refused while frozen");
    assert!(std::fs::remove_file(dir.join("held.log")).is_err(), "a delete is refused while frozen");
    held.write_all(b"after\n").expect("a descriptor opened before the freeze still writes (the documented limit)");
    // Idempotent.
    assert!(registry::freeze(&ep, &how).await.expect("again").probe.expect("probe").is_err());
    registry::unfreeze(&ep).await.expect("unfreeze");
    registry::unfreeze(&ep).await.expect("unfreeze twice");
    assert!(registry::frozen_since(&ep).await.expect("read").is_none());
    std::fs::write(dir.join("new.txt"), b"x").expect("writes work again");
}
