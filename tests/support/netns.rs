//! Network namespaces for partition tests: a namespace of the test's own, joined to the
//! test's namespace by veth pairs whose two ends hold the only addresses the test adds (a
//! /30 each, in 10.200.0.0/13, picked per run among ranges no interface uses). Everything
//! is removed when the [`Netns`] is dropped, also when the test fails.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Fails the test, saying why, unless `ip` runs and the test runs as root.
pub fn require_root_and_ip() {
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.as_ref().is_ok_and(|o| o.status.success()),
        "the network-partition test needs the `ip` command (Debian package iproute2): {ip:?}"
    );
    // /proc/self belongs to the process's effective user.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"));
    assert_eq!(uid, 0, "the network-partition test creates network namespaces and veth pairs: run it as root");
}

/// Runs `ip args`, failing the test with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// One veth pair between the test's namespace and the namespace.
pub struct Link {
    /// The end in the test's namespace.
    pub host_end: String,
    /// Its address.
    pub host_ip: Ipv4Addr,
    /// The other end's address, inside the namespace.
    pub ns_ip: Ipv4Addr,
}

/// A network namespace with its veth pairs, removed on drop.
pub struct Netns {
    /// Its name (`ip netns exec NAME …`).
    pub name: String,
    host_ends: Vec<String>,
}

impl Netns {
    /// Creates a namespace joined by `links` veth pairs, each up with a /30 of its own.
    pub fn create(links: usize) -> (Netns, Vec<Link>) {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{:x}", (std::process::id() << 4) | (N.fetch_add(1, Ordering::Relaxed) & 0xf));
        let mut ns = Netns { name: format!("ferry-{tag}"), host_ends: Vec::new() };
        let (b, c) = free_range(&tag);
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let mut out = Vec::new();
        for i in 0..links {
            let (host_end, ns_end) = (format!("fh{tag}{i}"), format!("fn{tag}{i}"));
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end, "netns", &ns.name]);
            ns.host_ends.push(host_end.clone());
            let base = u8::try_from(i * 4).expect("at most 64 links");
            let (host_ip, ns_ip) = (Ipv4Addr::new(10, b, c, base + 1), Ipv4Addr::new(10, b, c, base + 2));
            ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_end]);
            ip(&["link", "set", &host_end, "up"]);
            ip(&["-n", &ns.name, "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_end]);
            ip(&["-n", &ns.name, "link", "set", &ns_end, "up"]);
            out.push(Link { host_end, host_ip, ns_ip });
        }
        (ns, out)
    }

    /// Takes the link down (a partition) or up again (healed).
    pub fn set_link(&self, link: &Link, up: bool) {
        ip(&["link", "set", &link.host_end, if up { "up" } else { "down" }]);
    }
}

/// The second and third octets of a 10.x.y.0/24 no interface has an address in, from
/// 10.200–207.*, starting at one drawn from the run's tag.
fn free_range(tag: &str) -> (u8, u8) {
    let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr show");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = u32::from_str_radix(tag, 16).unwrap_or(0) % 2048;
    (0..2048)
        .map(|k| (start + k) % 2048)
        .map(|k| (200 + u8::try_from(k / 256).unwrap_or(0), u8::try_from(k % 256).unwrap_or(0)))
        .find(|(b, c)| !used.contains(&format!(" 10.{b}.{c}.")))
        .expect("a free 10.200.0.0/13 range")
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Removing the namespace removes the ends inside it, and with them their pairs;
        // a host end left by a half-made pair goes by name.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        for end in &self.host_ends {
            let _ = Command::new("ip").args(["link", "del", end]).output();
        }
    }
}
