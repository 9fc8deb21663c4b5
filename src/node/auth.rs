//! Bearer-token authentication and roles. The task file holds only SHA-256 hashes of
//! tokens ([[token]]); without any token the node serves loopback clients only, as the
//! single-box default (DESIGN.md "The task file").

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Role, Token};
use crate::control::ControlError;

/// Who is calling, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`local` for a loopback client of a node without tokens).
    pub name: String,
    /// What the caller may do.
    pub role: Role,
}

/// Failed authentications allowed from one address within [`FAILURE_WINDOW`]; the next
/// ones are refused with 429 until the window has passed.
pub const MAX_FAILURES: u32 = 10;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The node's tokens, and failed attempts per address.
#[derive(Debug)]
pub struct Auth {
    tokens: Vec<Token>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Lowercase hex SHA-256 of a token, as stored in `[[token]] sha256`.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so timing does not tell how much of a hash matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A role's place in viewer < operator < admin.
pub fn role_rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    }
}

/// The role's name as the task file spells it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

impl Auth {
    /// Authentication over these tokens.
    pub fn new(tokens: Vec<Token>) -> Auth {
        Auth { tokens, failures: Mutex::new(HashMap::new()) }
    }

    /// Counts a failed authentication from `ip`; true when that address is now refused.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let Ok(mut f) = self.failures.lock() else { return false };
        let now = Instant::now();
        // Forget windows that have passed, so the map cannot grow without bound.
        f.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
        let entry = f.entry(ip).or_insert((now, 0));
        entry.1 += 1;
        entry.1 > MAX_FAILURES
    }

    /// Seconds `ip` must still wait when it failed too often, else `None`.
    pub fn locked_out(&self, ip: IpAddr) -> Option<u64> {
        let f = self.failures.lock().ok()?;
        let (since, count) = f.get(&ip)?;
        let elapsed = since.elapsed();
        (*count > MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    /// Identifies the caller from its `Authorization` header and address.
    pub fn authenticate(&self, header: Option<&str>, peer: Option<SocketAddr>) -> Result<Caller, ControlError> {
        if self.tokens.is_empty() {
            return match peer {
                Some(p) if p.ip().is_loopback() => Ok(Caller { name: "local".into(), role: Role::Admin }),
                _ => Err(ControlError::Unauthorized {
                    message: "this node has no [[token]] in its task file, so it serves loopback clients only".into(),
                }),
            };
        }
        let Some(header) = header else {
            return Err(ControlError::Unauthorized { message: "send `Authorization: Bearer TOKEN`".into() });
        };
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Err(ControlError::Unauthorized {
                message: "the Authorization header must be `Bearer TOKEN`".into(),
            });
        };
        let hash = sha256_hex(token);
        let mut found = None;
        for t in &self.tokens {
            if same(&hash, &t.sha256) {
                found = Some(t);
            }
        }
        match found {
            Some(t) => Ok(Caller { name: t.name.clone(), role: t.role }),
            None => Err(ControlError::Unauthorized { message: "unknown token".into() }),
        }
    }
}

impl Caller {
    /// Fails with 403 unless the caller's role is at least `needed`.
    pub fn require(&self, needed: Role, action: &str) -> Result<(), ControlError> {
        if role_rank(self.role) >= role_rank(needed) {
            Ok(())
        } else {
            Err(ControlError::Forbidden {
                message: format!(
                    "{action} needs the {} role; token {:?} has {}",
                    role_name(needed),
                    self.name,
                    role_name(self.role)
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![Token { name: "v".into(), role: Role::Viewer, sha256: sha256_hex("secret-v") }])
    }

    #[test]
    fn hashes_match_sha256sum() {
        // printf %s abc | sha256sum
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_known_token_gets_its_role_and_others_are_refused() {
        let a = auth();
        let c = a.authenticate(Some("Bearer secret-v"), None).expect("known token");
        assert_eq!(c, Caller { name: "v".into(), role: Role::Viewer });
        assert!(c.require(Role::Operator, "pause").is_err());
        assert!(matches!(a.authenticate(Some("Bearer nope"), None), Err(ControlError::Unauthorized { .. })));
        assert!(matches!(a.authenticate(None, None), Err(ControlError::Unauthorized { .. })));
    }

    #[test]
    fn without_tokens_only_loopback_is_served() {
        let a = Auth::new(Vec::new());
        assert!(a.authenticate(None, Some("127.0.0.1:9".parse().expect("addr"))).is_ok());
        assert!(a.authenticate(None, Some("10.0.0.1:9".parse().expect("addr"))).is_err());
    }
}
