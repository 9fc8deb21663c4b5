//! An endpoint of the task file as every connector receives it: its name, its site, its
//! URL (the scheme names the store) and a password read once from the environment or a
//! file. Nothing here prints a secret: URLs show `***` for a password.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::model::SiteId;

/// `[[endpoint]]`: a data store ferry reads or writes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its name in tasks.
    pub name: String,
    /// Where application writes to it happen.
    pub site: SiteId,
    /// How to reach it.
    pub url: EndpointUrl,
    /// The password from `password_env` / `password_file`, when given; it overrides
    /// one in the URL.
    pub password: Option<Secret>,
    /// `identity` and `known_hosts` of an `sftp://` endpoint.
    pub ssh: SshKeys,
}

/// How an `sftp://` endpoint logs in: its private key and the file its host key is
/// checked against (OpenSSH's defaults when not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshKeys {
    /// `identity = "~/.ssh/id_ed25519"`: the private key file.
    pub identity: Option<PathBuf>,
    /// `known_hosts = "…"`: the known-hosts file the server's key must be in.
    pub known_hosts: Option<PathBuf>,
}

/// An endpoint URL as written in the task file, with the folder of the task file for
/// stores that name local paths. Shown (Display and Debug) with its password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    text: String,
    base: PathBuf,
}

impl EndpointUrl {
    /// A URL from the task file in folder `base`.
    pub fn new(text: impl Into<String>, base: impl Into<PathBuf>) -> Self {
        EndpointUrl { text: text.into(), base: base.into() }
    }

    /// The scheme in lower case (`mysql`, `sqlite`, …); "" without one.
    pub fn scheme(&self) -> String {
        self.text.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default()
    }

    /// The URL as written, password included: for the store's own driver only.
    pub fn secret_text(&self) -> &str {
        &self.text
    }

    /// Everything after `scheme:`.
    pub fn rest(&self) -> &str {
        self.text.split_once(':').map_or("", |(_, r)| r)
    }

    /// A path of the URL made absolute against the task file's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }
}

impl fmt::Display for EndpointUrl {
    /// The URL with any password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.text))
    }
}

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointUrl({:?})", mask_password(&self.text))
    }
}

/// A password: never printed (Debug shows `***`), read only by a store's driver.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The password itself, for a driver's connect options.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A URL part (user, password, option value) with its `%XX` escapes decoded; a `%`
/// not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes text as one URL path segment (names are user text).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Every URL password in a text (a task file) masked as `***`, with the (masked,
/// original) URL pairs, so that an edit of the masked text can be saved with the
/// original secrets wherever their masked URLs were left as they were.
pub fn mask_passwords_in_text(text: &str) -> (String, Vec<(String, String)>) {
    let mut out = String::with_capacity(text.len());
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The URL starts after the last delimiter before "://" and ends at the next one.
        let delim = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`');
        let start = rest[..i].rfind(delim).map_or(0, |d| d + rest[..i][d..].chars().next().map_or(1, char::len_utf8));
        let end = rest[i..].find(delim).map_or(rest.len(), |e| i + e);
        let url = &rest[start..end];
        let masked = mask_password(url);
        out.push_str(&rest[..start]);
        out.push_str(&masked);
        if masked != url && !pairs.iter().any(|(m, o)| *m == masked && o == url) {
            pairs.push((masked, url.to_string()));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    (out, pairs)
}

/// Puts the original URLs of [`mask_passwords_in_text`] back where their masked form
/// is still in `text` unchanged.
pub fn unmask_passwords_in_text(text: &str, pairs: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (masked, original) in pairs {
        out = out.replace(masked.as_str(), original);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_secrets_never_print_the_password() {
        let u = EndpointUrl::new("mysql://ferry:s3cret@h:3306/db", "/etc/ferry");
        assert_eq!(u.to_string(), "mysql://ferry:***@h:3306/db");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(!format!("{:?}", Secret::new("s3cret")).contains("s3cret"));
        assert_eq!(u.scheme(), "mysql");
        assert_eq!(EndpointUrl::new("sqlite://a.db", "/etc/ferry").resolve("a.db"), PathBuf::from("/etc/ferry/a.db"));
    }

    #[test]
    fn text_passwords_are_masked_and_come_back_where_left_unchanged() {
        let text = "url = \"mysql://ferry:s3cret@h:3306/db\"\nurl = \"sqlite://a.db\"\n# mysql://x:y@z\n";
        let (masked, pairs) = mask_passwords_in_text(text);
        assert!(!masked.contains("s3cret") && !masked.contains("x:y@"), "{masked}");
        assert!(masked.contains("mysql://ferry:***@h:3306/db") && masked.contains("sqlite://a.db"));
        assert_eq!(unmask_passwords_in_text(&masked, &pairs), text);
        let edited = masked.replace("# mysql://x:***@z", "# gone").replace("sqlite://a.db", "sqlite://b.db");
        let saved = unmask_passwords_in_text(&edited, &pairs);
        assert!(saved.contains("mysql://ferry:s3cret@h:3306/db") && saved.contains("sqlite://b.db"), "{saved}");
    }
}
