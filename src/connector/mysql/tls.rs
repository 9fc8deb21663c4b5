//! TLS for MySQL/MariaDB sessions (rustls): `?ssl-mode=disabled|required|verify-ca|
//! verify-identity` and `?ssl-ca=/path/ca.pem` in an endpoint's URL, with the meanings
//! of the `mysql` client's options of those names. They are taken out of the URL
//! before the driver reads it; the driver's own `require_ssl`/`verify_ca`/
//! `verify_identity` parameters keep working.

use std::path::PathBuf;

use mysql_async::SslOpts;

/// How a session uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP (the default when the URL says nothing).
    Disabled,
    /// Encrypted, the server's certificate not checked (protects against listeners,
    /// not against a man in the middle).
    Required,
    /// Encrypted, the certificate signed by a trusted CA; the host name not checked.
    VerifyCa,
    /// Encrypted, the certificate signed by a trusted CA and naming the host.
    VerifyIdentity,
}

/// A URL's TLS parameters were wrong: what, and how to write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsUrlError {
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// Splits `ssl-mode` and `ssl-ca` out of a MySQL URL: the URL for the driver and the
/// driver's TLS options (`None`: plain TCP, or whatever the driver's own parameters say).
pub fn split(url: &str) -> Result<(String, Option<SslOpts>), TlsUrlError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut keep = Vec::new();
    let (mut mode, mut ca) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "ssl-mode" | "ssl_mode" => mode = Some(parse_mode(value)?),
            "ssl-ca" | "ssl_ca" => {
                if value.is_empty() {
                    return Err(TlsUrlError {
                        problem: "ssl-ca has no file".into(),
                        fix:
                            "write ?ssl-ca=/path/to/ca.pem (a PEM file of the CA that signed the server's certificate)"
                                .into(),
                    });
                }
                ca = Some(PathBuf::from(value));
            }
            _ => keep.push(pair),
        }
    }
    let url = if keep.is_empty() { base.to_string() } else { format!("{base}?{}", keep.join("&")) };
    // As the mysql client does: a CA file given without a mode means verify-ca, and
    // `required` with a CA file verifies against it.
    let mode = match (mode, &ca) {
        (None, Some(_)) | (Some(SslMode::Required), Some(_)) => SslMode::VerifyCa,
        (None, None) => return Ok((url, None)),
        (Some(m), _) => m,
    };
    if mode == SslMode::Disabled {
        if ca.is_some() {
            return Err(TlsUrlError {
                problem: "ssl-mode=disabled contradicts ssl-ca".into(),
                fix: "drop ssl-ca, or use ssl-mode=verify-ca or verify-identity".into(),
            });
        }
        return Ok((url, None));
    }
    if let Some(path) = &ca
        && let Err(e) = std::fs::metadata(path)
    {
        return Err(TlsUrlError {
            problem: format!("ssl-ca file {} cannot be read: {e}", path.display()),
            fix: "give the path of a PEM file holding the CA certificate that signed the server's certificate".into(),
        });
    }
    let mut opts = SslOpts::default();
    if let Some(path) = ca {
        // A private CA replaces the public roots: only it may vouch for the server.
        opts = opts.with_root_certs(vec![path.into()]).with_disable_built_in_roots(true);
    }
    opts = match mode {
        SslMode::Required => opts.with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true),
        SslMode::VerifyCa => opts.with_danger_skip_domain_validation(true),
        SslMode::VerifyIdentity | SslMode::Disabled => opts,
    };
    Ok((url, Some(opts)))
}

fn parse_mode(value: &str) -> Result<SslMode, TlsUrlError> {
    match value.to_ascii_lowercase().replace('_', "-").as_str() {
        "disabled" => Ok(SslMode::Disabled),
        "required" => Ok(SslMode::Required),
        "verify-ca" => Ok(SslMode::VerifyCa),
        "verify-identity" => Ok(SslMode::VerifyIdentity),
        "preferred" => Err(TlsUrlError {
            problem: "ssl-mode=preferred would fall back to plain text without a word".into(),
            fix: "choose: ssl-mode=required, verify-ca or verify-identity (encrypted), or disabled".into(),
        }),
        other => Err(TlsUrlError {
            problem: format!("ssl-mode={other} is not a TLS mode"),
            fix: "write ssl-mode=disabled, required, verify-ca or verify-identity".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferry_parameters_leave_the_url_and_others_stay() {
        let (url, tls) = split("mysql://u:p@h:3306/db?ssl-mode=required&pool_min=1").expect("valid");
        assert_eq!(url, "mysql://u:p@h:3306/db?pool_min=1");
        let tls = tls.expect("tls");
        assert!(tls.accept_invalid_certs() && tls.skip_domain_validation());
        let (url, tls) = split("mysql://u@h/db?ssl-mode=verify-identity").expect("valid");
        assert_eq!(url, "mysql://u@h/db");
        let tls = tls.expect("tls");
        assert!(!tls.accept_invalid_certs() && !tls.skip_domain_validation());
        assert_eq!(split("mysql://u@h/db").expect("valid"), ("mysql://u@h/db".to_string(), None));
        assert_eq!(split("mysql://u@h/db?ssl-mode=disabled").expect("valid").1, None);
    }

    #[test]
    fn unknown_or_silent_modes_and_missing_files_are_config_errors() {
        assert!(split("mysql://u@h?ssl-mode=preferred").expect_err("refused").problem.contains("plain text"));
        assert!(split("mysql://u@h?ssl-mode=yes").expect_err("refused").fix.contains("verify-ca"));
        assert!(
            split("mysql://u@h?ssl-ca=/nonexistent/ca.pem").expect_err("refused").problem.contains("cannot be read")
        );
        assert!(split("mysql://u@h?ssl-ca=").is_err());
    }
}
