//! `ferry cluster status|rebalance`: the cluster (docs/cluster.md) as one node sees it,
//! through that node's API (`--node URL`, or the task file's `[node] listen`).

use std::path::PathBuf;

use super::CommandError;
use crate::cli::{ClusterCommand, Format};
use crate::client::NodeClient;
use crate::cluster::ClusterView;
use crate::config::Config;
use crate::model::now_micros;

/// The flags of `ferry cluster`.
pub struct ClusterArgs {
    /// status or rebalance.
    pub action: ClusterCommand,
    /// A node's API.
    pub node: Option<String>,
    /// A task file whose `[node] listen` is asked.
    pub config: Option<PathBuf>,
    /// Bearer token.
    pub token: Option<String>,
    /// The node's CA (HTTPS).
    pub ca: Option<PathBuf>,
    /// Output format.
    pub format: Format,
}

/// `ferry cluster …`.
pub async fn cluster(args: ClusterArgs) -> Result<u8, CommandError> {
    let base = match (&args.node, &args.config) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => {
            let config = Config::load(path)?;
            let scheme = if config.node.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", config.node.listen)
        }
        (None, None) => {
            return Err(CommandError::Input {
                problem: "ferry cluster needs a node to ask".into(),
                fix: "pass --node http://HOST:PORT (any node of the cluster) or --config with the node's task file"
                    .into(),
            });
        }
    };
    let client = NodeClient::new(&base, args.token.clone(), args.ca.as_deref())
        .map_err(|e| CommandError::Input { problem: e.to_string(), fix: "check --node and --ca".into() })?;
    match args.action {
        ClusterCommand::Status => {
            let view = client.cluster().await.map_err(|e| CommandError::Runtime(e.to_string()))?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&view).unwrap_or_default()),
                Format::Text => print!("{}", render(&view, now_micros())),
            }
        }
        ClusterCommand::Rebalance => {
            client.rebalance().await.map_err(|e| CommandError::Runtime(e.to_string()))?;
            println!("asked every node of the cluster to hand its directions to nodes at their targets' sites");
        }
    }
    Ok(0)
}

fn seconds(us: i64) -> String {
    let s = us.max(0) / 1_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The text report: nodes, then owners.
fn render(view: &ClusterView, now_us: i64) -> String {
    let mut out = format!("cluster over {}\n\n", view.nats);
    out.push_str(&format!(
        "{:<16} {:<10} {:<10} {:<9} {:<10} {}\n",
        "NODE", "SITE", "VERSION", "UPTIME", "LAST SEEN", "DIRECTIONS"
    ));
    for n in &view.nodes {
        out.push_str(&format!(
            "{:<16} {:<10} {:<10} {:<9} {:<10} {}{}\n",
            n.id,
            n.site.as_deref().unwrap_or("-"),
            n.version,
            seconds(n.last_seen_us - n.started_us),
            format!("{} ago", seconds(now_us - n.last_seen_us)),
            n.tasks.len(),
            if n.unreachable.is_empty() {
                String::new()
            } else {
                format!("  cannot reach {}", n.unreachable.join(", "))
            }
        ));
    }
    out.push('\n');
    out.push_str(&format!("{:<24} {:<16} {:<10} {:<9} {}\n", "DIRECTION", "OWNER", "SITE", "SINCE", "FENCING"));
    if view.owners.is_empty() {
        out.push_str("(no direction is owned right now)\n");
    }
    for o in &view.owners {
        out.push_str(&format!(
            "{:<24} {:<16} {:<10} {:<9} {}{}\n",
            format!("{} {}->{}", o.task, o.from, o.to),
            o.node,
            o.site.as_deref().unwrap_or("-"),
            format!("{} ago", seconds(now_us - o.since_us)),
            o.token().map_or_else(|| "-".to_string(), |t| t.to_string()),
            if o.paused { "  paused" } else { "" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lease::LeaseRecord;
    use crate::cluster::members::Member;

    #[test]
    fn the_report_lists_nodes_and_owners() {
        let mut view = ClusterView {
            nats: "nats://u:***@h:4222".into(),
            nodes: vec![Member {
                id: "n1".into(),
                site: Some("dc-b".into()),
                version: "1.0".into(),
                listen: "127.0.0.1:7400".into(),
                started_us: 0,
                last_seen_us: 90_000_000,
                tasks: vec!["t a->b".into()],
                unreachable: vec!["s".into()],
            }],
            owners: vec![LeaseRecord {
                task: "t".into(),
                from: "a".into(),
                to: "b".into(),
                node: "n1".into(),
                site: Some("dc-b".into()),
                since_us: 60_000_000,
                fencing: 7,
                paused: true,
            }],
        };
        // A record that does not carry its token yet shows none, not a guess.
        view.owners.push(LeaseRecord { task: "u".into(), fencing: 0, paused: false, ..view.owners[0].clone() });
        let text = render(&view, 92_000_000);
        assert!(text.contains("nats://u:***@h:4222"), "{text}");
        assert!(
            text.contains("n1               dc-b       1.0        1m30s     2s ago     1  cannot reach s"),
            "{text}"
        );
        assert!(text.contains("t a->b                   n1               dc-b       32s ago   7  paused"), "{text}");
        assert!(text.contains("u a->b                   n1               dc-b       32s ago   -\n"), "{text}");
    }
}
