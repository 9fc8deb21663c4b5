//! TLS for PostgreSQL sessions, queries (sqlx) and the change stream
//! (`pgwire-replication`) alike, both over rustls: `?sslmode=disable|prefer|require|
//! verify-ca|verify-full` and `?sslrootcert=/path/ca.pem` in an endpoint's URL, with
//! libpq's meanings: `prefer` (the default, as libpq's) uses TLS when the server offers
//! it and plain TCP otherwise; `require` encrypts without checking the certificate, or
//! checks it against `sslrootcert` when one is given (as libpq does); `verify-ca` checks
//! that a trusted CA signed it; `verify-full` also that it names the URL's host (a DNS
//! name or an IP address). Without `sslrootcert` the public web roots are trusted.

use std::path::{Path, PathBuf};

use sqlx::postgres::PgSslMode;

/// How sessions use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain TCP (libpq's default).
    #[default]
    Prefer,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, the certificate signed by a trusted CA and naming the host.
    VerifyFull,
}

/// An endpoint's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// The mode.
    pub mode: SslMode,
    /// The CA certificates (PEM) to trust instead of the public roots.
    pub root_cert: Option<PathBuf>,
}

/// A URL's TLS parameters were wrong: what, and how to write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsUrlError {
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

const MODES: &str = "sslmode=disable, prefer, require, verify-ca or verify-full";

/// Reads `sslmode` and `sslrootcert` from a PostgreSQL URL's query; a relative
/// `sslrootcert` is resolved with `resolve` (against the task file's folder), and must
/// be readable.
pub fn parse(url: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<PgTls, TlsUrlError> {
    let mut tls = PgTls::default();
    let Some((_, query)) = url.split_once('?') else { return Ok(tls) };
    let mut mode = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = super::percent_decode(value);
        match key {
            "sslmode" => {
                mode = Some(match value.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "allow" => {
                        return Err(TlsUrlError {
                            problem: "sslmode=allow (plain TCP first, TLS only if the server insists) is not supported"
                                .into(),
                            fix: format!("write {MODES}"),
                        });
                    }
                    other => {
                        return Err(TlsUrlError {
                            problem: format!("sslmode={other:?} is not a TLS mode"),
                            fix: format!("write {MODES}"),
                        });
                    }
                })
            }
            "sslrootcert" => {
                if value.is_empty() {
                    return Err(TlsUrlError {
                        problem: "sslrootcert has no file".into(),
                        fix: "write ?sslrootcert=/path/to/ca.pem (a PEM file of the CA that signed the server's certificate)".into(),
                    });
                }
                let path = resolve(&value);
                if let Err(e) = std::fs::metadata(&path) {
                    return Err(TlsUrlError {
                        problem: format!("sslrootcert file {} cannot be read: {e}", path.display()),
                        fix: "give the path of a PEM file holding the CA certificate that signed the server's certificate".into(),
                    });
                }
                tls.root_cert = Some(path);
            }
            _ => {}
        }
    }
    tls.mode = match (mode, &tls.root_cert) {
        // libpq: with a root certificate, require verifies against it (as verify-ca).
        (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
        (Some(SslMode::Disable), Some(_)) => {
            return Err(TlsUrlError {
                problem: "sslmode=disable contradicts sslrootcert".into(),
                fix: "drop sslrootcert, or use sslmode=verify-ca or verify-full".into(),
            });
        }
        (Some(m), _) => m,
        (None, _) => SslMode::Prefer,
    };
    Ok(tls)
}

impl PgTls {
    /// sqlx's mode.
    pub fn sqlx_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }

    /// The change stream's TLS settings for a server at `host`.
    pub fn replication(&self, host: &str) -> pgwire_replication::TlsConfig {
        use pgwire_replication::SslMode as M;
        let mode = match self.mode {
            SslMode::Disable => M::Disable,
            SslMode::Prefer => M::Prefer,
            SslMode::Require => M::Require,
            SslMode::VerifyCa => M::VerifyCa,
            SslMode::VerifyFull => M::VerifyFull,
        };
        pgwire_replication::TlsConfig {
            mode,
            ca_pem_path: self.root_cert.clone(),
            // The transport refuses verify-full for an IP address host unless the name
            // to verify is given: it is that address (a certificate's IP SAN), as libpq
            // checks it.
            sni_hostname: (self.mode == SslMode::VerifyFull && host.parse::<std::net::IpAddr>().is_ok())
                .then(|| host.to_string()),
            client_cert_pem_path: None,
            client_key_pem_path: None,
        }
    }
}

/// The URL without ferry's TLS parameters, for sqlx to read the rest of it.
pub fn strip(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let keep: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !matches!(p.split_once('=').map_or(*p, |(k, _)| k), "sslmode" | "sslrootcert"))
        .collect();
    if keep.is_empty() { base.to_string() } else { format!("{base}?{}", keep.join("&")) }
}

/// Resolves nothing: paths as written (for callers without a task file's folder).
pub fn as_written(p: &str) -> PathBuf {
    Path::new(p).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_libpq_reads_them() {
        let none = parse("postgres://u@h/db", as_written).expect("valid");
        assert_eq!(none, PgTls { mode: SslMode::Prefer, root_cert: None }, "libpq's default");
        assert_eq!(
            parse("postgres://u@h/db?sslmode=verify-full", as_written).expect("valid").mode,
            SslMode::VerifyFull
        );
        assert_eq!(parse("postgres://u@h/db?sslmode=disable", as_written).expect("valid").mode, SslMode::Disable);
        let ca = std::env::temp_dir();
        let url = format!("postgres://u@h/db?sslmode=require&sslrootcert={}", ca.display());
        assert_eq!(parse(&url, as_written).expect("valid").mode, SslMode::VerifyCa, "require with a CA verifies");
        assert_eq!(
            strip("postgres://u@h/db?sslmode=require&application_name=x"),
            "postgres://u@h/db?application_name=x"
        );
        assert_eq!(strip("postgres://u@h/db?sslmode=require"), "postgres://u@h/db");
    }

    #[test]
    fn unknown_modes_and_missing_files_are_config_errors() {
        let e = parse("postgres://u@h/db?sslmode=yes", as_written).expect_err("refused");
        assert!(e.problem.contains("\"yes\"") && e.fix.contains("verify-full"), "{e:?}");
        assert!(parse("postgres://u@h/db?sslmode=allow", as_written).is_err());
        let e = parse("postgres://u@h/db?sslrootcert=/nonexistent/ca.pem", as_written).expect_err("refused");
        assert!(e.problem.contains("cannot be read"), "{e:?}");
        assert!(parse("postgres://u@h/db?sslrootcert=", as_written).is_err());
    }

    #[test]
    fn verify_full_of_an_ip_address_names_it_to_the_stream() {
        let tls = PgTls { mode: SslMode::VerifyFull, root_cert: None };
        assert_eq!(tls.replication("127.0.0.1").sni_hostname.as_deref(), Some("127.0.0.1"));
        assert_eq!(tls.replication("db.example").sni_hostname, None);
    }
}
