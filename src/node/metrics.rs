//! `/metrics` in the Prometheus text exposition format (version 0.0.4): one sample per
//! task direction, labelled `task` and `direction`.

use std::fmt::Write as _;

use crate::control::NodeOverview;
use crate::engine::metrics::{DirectionState, DirectionStatus};

/// Escapes a label value (`\`, `"` and newlines).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&DirectionStatus) -> Option<f64>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ferry_task_lag_seconds",
        kind: "gauge",
        help: "Seconds since the newest applied source heartbeat was written.",
        value: |d| d.lag_seconds,
    },
    Family {
        name: "ferry_task_changes_behind",
        kind: "gauge",
        help: "Source changes not applied yet.",
        value: |d| Some(d.changes_behind as f64),
    },
    Family {
        name: "ferry_task_changes_total",
        kind: "counter",
        help: "Row changes applied by the stream since the node started the direction.",
        value: |d| Some(d.changes_total as f64),
    },
    Family {
        name: "ferry_task_transactions_total",
        kind: "counter",
        help: "Source transactions applied.",
        value: |d| Some(d.txns_total as f64),
    },
    Family {
        name: "ferry_task_snapshot_rows_total",
        kind: "counter",
        help: "Rows copied by the snapshot.",
        value: |d| Some(d.snapshot_rows_total as f64),
    },
    Family {
        name: "ferry_task_conflicts_total",
        kind: "counter",
        help: "Conflicts detected (two-way).",
        value: |d| Some(d.conflicts_total as f64),
    },
    Family {
        name: "ferry_task_errors_total",
        kind: "counter",
        help: "Errors seen, retried or fatal.",
        value: |d| Some(d.errors_total as f64),
    },
    Family {
        name: "ferry_task_rows_per_second",
        kind: "gauge",
        help: "Rows applied per second over the last 10 seconds.",
        value: |d| Some(d.rows_per_sec[1]),
    },
    Family {
        name: "ferry_task_up",
        kind: "gauge",
        help: "1 while the direction streams or snapshots, 0 otherwise.",
        value: |d| {
            Some(if matches!(d.state, DirectionState::Streaming | DirectionState::Snapshotting(_)) { 1.0 } else { 0.0 })
        },
    },
];

/// The node's metrics as Prometheus text.
pub fn render(o: &NodeOverview) -> String {
    let mut out = String::new();
    for f in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for t in &o.tasks {
            for d in &t.directions {
                if let Some(v) = (f.value)(d) {
                    let _ = writeln!(
                        out,
                        "{}{{task=\"{}\",direction=\"{}\"}} {v}",
                        f.name,
                        label(&t.name),
                        label(&d.direction)
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "# HELP ferry_task_paused 1 while an operator has paused the task.");
    let _ = writeln!(out, "# TYPE ferry_task_paused gauge");
    for t in &o.tasks {
        let _ = writeln!(out, "ferry_task_paused{{task=\"{}\"}} {}", label(&t.name), u8::from(t.paused));
    }
    let _ = writeln!(out, "# HELP ferry_verify_differences Rows that differ in the task's last verify.");
    let _ = writeln!(out, "# TYPE ferry_verify_differences gauge");
    for t in &o.tasks {
        if let Some(v) = &t.last_verify {
            let _ = writeln!(out, "ferry_verify_differences{{task=\"{}\"}} {}", label(&t.name), v.differences);
        }
    }
    let _ = writeln!(out, "# HELP ferry_endpoint_frozen 1 while application writes to the endpoint are frozen.");
    let _ = writeln!(out, "# TYPE ferry_endpoint_frozen gauge");
    for e in &o.endpoints {
        let _ = writeln!(
            out,
            "ferry_endpoint_frozen{{endpoint=\"{}\"}} {}",
            label(&e.name),
            u8::from(e.frozen_since_us.is_some())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
