//! SFTP: `sftp://user@host:22/abs/dir` as a blob source and sink, reached the way rsync users
//! reach a remote tree: through the system's OpenSSH client (`ssh -s … sftp`), so the
//! key (`identity`), the known-hosts check and the user's ssh configuration all hold as
//! they do for `ssh` itself; the SFTP protocol runs over its pipes.

pub mod connector;
pub mod link;
pub mod list;
pub mod sink;
pub mod source;

pub use connector::Store;

use crate::connector::{ConnectorError, ErrorKind};

/// The parts of an `sftp://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpUrl {
    /// The login name (ssh's default when absent).
    pub user: Option<String>,
    /// The server.
    pub host: String,
    /// The port (22 when absent).
    pub port: u16,
    /// The absolute folder on the server, without a trailing `/`.
    pub root: String,
    /// `state=/path/file.db`: where a target keeps ferry's state on this machine.
    pub state: Option<String>,
}

impl SftpUrl {
    /// Parses `sftp://[user@]host[:port]/abs/dir`; the problem in words when it is not one.
    pub fn parse(text: &str) -> Result<SftpUrl, String> {
        let rest = text.strip_prefix("sftp://").ok_or_else(|| format!("{text:?} does not start with sftp://"))?;
        let (authority, path) = rest.split_once('/').ok_or("it names no folder")?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => {
                return Err("it carries a password: SFTP logs in with a key (identity = \"~/.ssh/id_ed25519\")".into());
            }
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number"))?),
            None => (hostport, 22),
        };
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let root = format!("/{}", path.trim_end_matches('/'));
        let state = query.split('&').find_map(|kv| kv.strip_prefix("state=")).map(str::to_string);
        if root == "/" {
            return Err("it names no folder (the root folder is not a sync endpoint)".into());
        }
        Ok(SftpUrl { user, host: host.to_string(), port, root, state })
    }

    /// `root/rel` on the server.
    pub fn join(&self, rel: &str) -> String {
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() { self.root.clone() } else { format!("{}/{rel}", self.root) }
    }
}

/// An SFTP error on a path of an endpoint; a missing or forbidden path needs a human,
/// a lost connection is retried.
pub fn sftp_error(endpoint: &str, what: &str, path: &str, e: russh_sftp::client::error::Error) -> ConnectorError {
    use russh_sftp::client::error::Error as E;
    use russh_sftp::protocol::StatusCode;
    // A lost link or a refused path alike: retried with backoff, the fix said once.
    let fix = match &e {
        E::Status(s) if s.status_code == StatusCode::PermissionDenied => {
            Some("give the SFTP user read access (source) or write access (target) to it")
        }
        _ => None,
    };
    ConnectorError::Blob {
        endpoint: endpoint.to_string(),
        what: what.into(),
        path: if path.is_empty() { "/".into() } else { path.to_string() },
        source: Box::new(e),
        kind: ErrorKind::Runtime,
        fix: fix.map(Into::into),
    }
}

/// Whether an SFTP error says the path does not exist.
pub fn not_found(e: &russh_sftp::client::error::Error) -> bool {
    matches!(e, russh_sftp::client::error::Error::Status(s) if s.status_code == russh_sftp::protocol::StatusCode::NoSuchFile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_user_host_port_and_folder() {
        let u = SftpUrl::parse("sftp://alice@files.example:2222/srv/uploads/").expect("url");
        assert_eq!(
            u,
            SftpUrl {
                user: Some("alice".into()),
                host: "files.example".into(),
                port: 2222,
                root: "/srv/uploads".into(),
                state: None,
            }
        );
        assert_eq!(u.join("a/b/"), "/srv/uploads/a/b");
        assert_eq!(SftpUrl::parse("sftp://h/d").expect("url").port, 22);
        for bad in ["sftp://h", "sftp://h/", "sftp://u:pw@h/d", "sftp://h:x/d", "sftp:///d"] {
            assert!(SftpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
