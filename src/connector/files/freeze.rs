//! Freezing a folder for a cutover: a read-only bind mount of the folder over itself
//! (root only), proven by a probe create that must fail. What it stops: every write
//! that looks the path up after the freeze — opening a file for writing, creating,
//! renaming or deleting through the folder's path. What it cannot stop: a file opened
//! for writing before the freeze (its descriptor belongs to the mount below), a
//! process whose working folder was inside it and writes by relative path, and writers
//! reaching the same files another way (another mount of the disk, an NFS client on
//! another host). For those, the cutover's drain is the guard: it waits until no change
//! appears for a while before it goes on. ferry itself writes into a frozen folder
//! (a cutover's reverse direction) through a writable bind mount of it made first, in
//! its own data folder.

use std::path::{Path, PathBuf};

use super::{root_of, running_as_root};
use crate::connector::blob::quiesce::own_file;
use crate::connector::endpoint::Endpoint;
use crate::connector::registry::FreezeOutcome;
use crate::connector::{ConnectorError, ErrorKind};
use crate::model::now_micros;

/// The file that remembers since when a folder is frozen (outside the folder: nothing is
/// written into a source).
fn since_file(root: &Path) -> PathBuf {
    own_path(root, "since")
}

/// `<ferry's data folder>/freeze/<hash of root>.<ext>`.
fn own_path(root: &Path, ext: &str) -> PathBuf {
    own_file(root.as_os_str().as_encoded_bytes(), ext)
}

/// Where ferry itself writes into a frozen folder: a writable bind mount of it made
/// before the freeze (a cutover's reverse direction keeps the frozen side current, as
/// ferry's exempt account does on a database).
fn twin(root: &Path) -> PathBuf {
    own_path(root, "rw")
}

/// Whether a mount sits on exactly this path.
fn mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
}

/// The folder ferry writes a target through: the writable twin while the folder is
/// frozen by ferry, else the folder itself.
pub fn writable_root(root: &Path) -> PathBuf {
    let t = twin(root);
    if read_only_mount(root) && mounted(&t) { t } else { root.to_path_buf() }
}

/// Whether a read-only mount sits on exactly this folder (the newest mount there).
pub fn read_only_mount(root: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = root.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 5 && f[4] == want).then(|| f[5].split(',').any(|o| o == "ro"))
        })
        .unwrap_or(false)
}

fn run(endpoint: &str, args: &[&str]) -> Result<(), ConnectorError> {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().map_err(|e| ConnectorError::Blob {
        endpoint: endpoint.into(),
        what: format!("cannot run {}", args[0]).into(),
        path: args.last().copied().unwrap_or("").into(),
        source: Box::new(e),
        kind: ErrorKind::Setup,
        fix: Some("install util-linux (mount, umount)".into()),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ConnectorError::Setup {
        endpoint: endpoint.into(),
        problem: format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()),
        fix: "check that this host allows bind mounts (not inside a container without CAP_SYS_ADMIN)".into(),
    })
}

/// Freezes the folder and probes it as an application would.
pub fn freeze(ep: &Endpoint) -> Result<FreezeOutcome, ConnectorError> {
    let root = root_of(ep);
    if !running_as_root() {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("freezing folder {} needs root (a read-only bind mount)", root.display()),
            fix: "run the cutover as root, or stop the application's writers yourself and run the cutover with a \
                  freeze you vouch for"
                .into(),
        });
    }
    let shown = root.display().to_string();
    if !read_only_mount(&root) {
        let t = twin(&root);
        if !mounted(&t) {
            std::fs::create_dir_all(&t).map_err(|e| ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("cannot create {}: {e}", t.display()),
                fix: "let root write ferry's data folder (~/.local/share/ferry)".into(),
            })?;
            let tw = t.display().to_string();
            run(&ep.name, &["mount", "--bind", &shown, &tw])?;
            // Private, so the read-only mount made next on the folder does not
            // propagate onto its twin (a shared mount's peers get every mount).
            run(&ep.name, &["mount", "--make-private", &tw])?;
        }
        run(&ep.name, &["mount", "--bind", &shown, &shown])?;
        if let Err(e) = run(&ep.name, &["mount", "-o", "remount,bind,ro", &shown]) {
            let _ = run(&ep.name, &["umount", &shown]);
            return Err(e);
        }
        let since = since_file(&root);
        if let Some(dir) = since.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&since, now_micros().to_string());
    }
    // The probe: creating a file must fail.
    let probe_path = root.join(format!(".ferry-freeze-probe-{}", std::process::id()));
    let probe = match std::fs::File::create(&probe_path) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe_path);
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(format!("creating {} was refused: {e}", probe_path.display()))),
    };
    Ok(FreezeOutcome { count: 1, probe })
}

/// Lifts the freeze (idempotent).
pub fn unfreeze(ep: &Endpoint) -> Result<(), ConnectorError> {
    let root = root_of(ep);
    let shown = root.display().to_string();
    while read_only_mount(&root) {
        run(&ep.name, &["umount", &shown])?;
    }
    let t = twin(&root);
    while mounted(&t) {
        run(&ep.name, &["umount", &t.display().to_string()])?;
    }
    let _ = std::fs::remove_dir(&t);
    let _ = std::fs::remove_file(since_file(&root));
    Ok(())
}

/// Since when (µs) the folder is frozen, if it is.
pub fn frozen_since(ep: &Endpoint) -> Option<i64> {
    let root = root_of(ep);
    if !read_only_mount(&root) {
        return None;
    }
    Some(std::fs::read_to_string(since_file(&root)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0))
}
