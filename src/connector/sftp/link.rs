//! One SFTP session over the system's `ssh` client: the child process is owned by the
//! link and killed with it; a refused host key or login is told with its fix.

use std::process::Stdio;
use std::time::Duration;

use russh_sftp::client::{RawSftpSession, SftpSession};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::SftpUrl;
use crate::connector::endpoint::{Endpoint, SshKeys};
use crate::connector::{ConnectorError, ErrorKind};

/// How long the ssh login and SFTP greeting may take.
const CONNECT: Duration = Duration::from_secs(20);

/// An SFTP session and the `ssh` process that carries it.
pub struct SftpLink {
    /// The session.
    pub sftp: SftpSession,
    // Killed on drop (`kill_on_drop`): the link owns the process.
    _child: Child,
}

/// The `ssh` command line for `url` with the endpoint's keys: batch mode (never a
/// prompt), the host key checked strictly.
pub fn ssh_command(url: &SftpUrl, keys: &SshKeys) -> Command {
    let mut cmd = Command::new(std::env::var_os("FERRY_SSH").unwrap_or_else(|| "ssh".into()));
    cmd.args(["-s", "-T", "-x", "-a"])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15"])
        .args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"])
        .arg("-p")
        .arg(url.port.to_string());
    if let Some(k) = &keys.known_hosts {
        cmd.arg("-o").arg(format!("UserKnownHostsFile={}", k.display()));
    }
    if let Some(id) = &keys.identity {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    if let Some(u) = &url.user {
        cmd.arg("-l").arg(u);
    }
    cmd.arg("--").arg(&url.host).arg("sftp");
    cmd
}

/// Logs in and opens the SFTP session.
pub async fn connect(ep: &Endpoint, url: &SftpUrl) -> Result<SftpLink, ConnectorError> {
    let (sftp, child) = login(ep, url, SftpSession::new).await?;
    Ok(SftpLink { sftp, _child: child })
}

/// A raw SFTP session (every request, extensions included) and the `ssh` process that
/// carries it: what a target needs (`posix-rename@openssh.com`, `fsync@openssh.com`).
pub struct RawLink {
    /// The session.
    pub raw: RawSftpSession,
    /// The server renames over an existing path atomically (`posix-rename@openssh.com`).
    pub posix_rename: bool,
    /// The server syncs a file to its disk on request (`fsync@openssh.com`).
    pub fsync: bool,
    // Killed on drop (`kill_on_drop`): the link owns the process.
    _child: Child,
}

/// Logs in and opens a raw SFTP session, noting the extensions the server offers.
pub async fn connect_raw(ep: &Endpoint, url: &SftpUrl) -> Result<RawLink, ConnectorError> {
    let ((raw, version), child) = login(ep, url, |io| async move {
        let raw = RawSftpSession::new(io);
        let version = raw.init().await?;
        Ok((raw, version))
    })
    .await?;
    raw.set_timeout(CONNECT.as_secs());
    let has = |name: &str| version.extensions.contains_key(name);
    Ok(RawLink { posix_rename: has(POSIX_RENAME), fsync: has(FSYNC), raw, _child: child })
}

/// The OpenSSH extension that renames over an existing path (POSIX `rename(2)`).
pub const POSIX_RENAME: &str = "posix-rename@openssh.com";
/// The OpenSSH extension that syncs an open file to disk.
pub const FSYNC: &str = "fsync@openssh.com";

type Pipes = tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>;

/// Starts `ssh` for the endpoint and opens a session over its pipes with `open`; a
/// refused login is told with ssh's own words and the fix.
async fn login<T, F, Fut>(ep: &Endpoint, url: &SftpUrl, open: F) -> Result<(T, Child), ConnectorError>
where
    F: FnOnce(Pipes) -> Fut,
    Fut: std::future::Future<Output = Result<T, russh_sftp::client::error::Error>>,
{
    let mut child = ssh_command(url, &ep.ssh)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("cannot start ssh for {}: {e}", where_(url)),
            fix: "install the OpenSSH client (Debian: apt-get install openssh-client)".into(),
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: "ssh started without its pipes".into(),
            fix: "report this as a bug".into(),
        });
    };
    let session = tokio::time::timeout(CONNECT, open(tokio::io::join(stdout, stdin))).await;
    match session {
        Ok(Ok(s)) => Ok((s, child)),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no SFTP greeting within {} s", CONNECT.as_secs()),
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = child.start_kill();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut stderr)).await;
            }
            Err(login_error(ep, url, stderr.trim(), &why))
        }
    }
}

/// What ssh's own words mean, with the fix.
fn login_error(ep: &Endpoint, url: &SftpUrl, said: &str, why: &str) -> ConnectorError {
    let known = ep.ssh.known_hosts.as_ref().map_or("~/.ssh/known_hosts".to_string(), |k| k.display().to_string());
    let said_line = if said.is_empty() { why.to_string() } else { said.replace('\n', " / ") };
    let host = if url.port == 22 { url.host.clone() } else { format!("[{}]:{}", url.host, url.port) };
    let (problem, fix) = if said.contains("Host key verification failed")
        || said.contains("IDENTIFICATION HAS CHANGED")
        || said.contains("host key for")
    {
        (
            format!("the host key of {} is not the one {known} holds for it (ssh: {said_line})", where_(url)),
            format!(
                "check the server's key fingerprint with its administrator, then record it: ssh-keyscan -p {} {} >> {known} (remove a stale line for {host} first); ferry never accepts an unknown host key",
                url.port, url.host
            ),
        )
    } else if said.contains("Permission denied") {
        (
            format!("{} refused the login (ssh: {said_line})", where_(url)),
            "set identity = \"path/to/private_key\" on the endpoint, to a key whose public half is in the user's ~/.ssh/authorized_keys on the server".to_string(),
        )
    } else if said.contains("subsystem request failed") {
        (
            format!("{} has no SFTP subsystem (ssh: {said_line})", where_(url)),
            "enable it in the server's sshd_config: Subsystem sftp internal-sftp".to_string(),
        )
    } else {
        return ConnectorError::Blob {
            endpoint: ep.name.clone(),
            what: "cannot reach".into(),
            path: url.root.clone(),
            source: format!("{} (ssh: {said_line})", where_(url)).into(),
            kind: ErrorKind::Runtime,
            fix: Some("check that the server is up and its port reachable from here (ssh -p PORT USER@HOST)".into()),
        };
    };
    ConnectorError::Setup { endpoint: ep.name.clone(), problem, fix }
}

fn where_(url: &SftpUrl) -> String {
    format!("{}:{}", url.host, url.port)
}
