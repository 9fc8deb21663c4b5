//! Test certificates made with the openssl command-line tool (no OpenSSL in the build):
//! a CA, a server certificate it signed for 127.0.0.1 and localhost, and a second CA
//! that signed nothing (the "wrong CA").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The files of [`certs`].
pub struct Certs {
    /// Holds ca.pem, server.pem, server.key, other-ca.pem.
    pub dir: PathBuf,
}

impl Certs {
    /// The CA that signed server.pem.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
    /// The server certificate (127.0.0.1, localhost).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// Its key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("the openssl tool is needed to make test certificates (apt-get install openssl): {e}")
    });
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The certificates, made once per test process in a folder that lives as long.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("ferry-tls-").tempdir().expect("temp dir").keep();
        // Statics are never dropped: a watchdog removes the folder once this process ends.
        use std::os::unix::process::CommandExt;
        let _ = Command::new("sh")
            .args(["-c", r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; rm -rf "$2""#, "ferry-tls-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("ca", "ferry test CA"), ("other-ca", "ferry other CA")] {
            let (key, pem, subj) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={cn}"));
            let mut args = vec!["req", "-x509"];
            args.extend_from_slice(&ec);
            args.extend_from_slice(&["-keyout", &key, "-out", &pem, "-days", "3", "-subj", &subj]);
            openssl(&dir, &args);
        }
        let mut args = vec!["req"];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        openssl(&dir, &args);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "3",
                "-extfile",
                "ext.cnf",
            ],
        );
        Certs { dir }
    })
}
