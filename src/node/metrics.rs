//! `/metrics` in the Prometheus text exposition format (version 0.0.4): one sample per
//! task direction, labelled `task` and `direction`.

use std::fmt::Write as _;

use crate::control::NodeOverview;
use crate::engine::clock::SkewLevel;
use crate::engine::copy_progress::TableCopy;
use crate::engine::metrics::{DirectionState, DirectionStatus};

/// Escapes a label value (`\`, `"` and newlines).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A measured skew level; `None` (no sample) where the skew is not measured.
fn level(l: SkewLevel) -> Option<SkewLevel> {
    (l != SkewLevel::Unknown).then_some(l)
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
        value: |d| d.changes_behind.map(|n| n as f64),
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
        name: "ferry_task_clock_offset_seconds",
        kind: "gauge",
        help: "The direction's source clock (the one that stamps row versions) minus ferry's, in seconds.",
        value: |d| d.clock_offset_seconds,
    },
    Family {
        name: "ferry_task_clock_skew_seconds",
        kind: "gauge",
        help: "Two-way: the direction's source clock minus its target's, in seconds (what last-writer-wins is off by).",
        value: |d| d.clock_skew_seconds,
    },
    Family {
        name: "ferry_task_clock_skew_alarm",
        kind: "gauge",
        help: "Two-way: 1 while the two sides' clocks are further apart than clock_skew_alarm.",
        value: |d| level(d.clock_skew).map(|l| f64::from(u8::from(matches!(l, SkewLevel::Alarm | SkewLevel::Paused)))),
    },
    Family {
        name: "ferry_task_clock_skew_paused",
        kind: "gauge",
        help: "Two-way: 1 while applying is paused because the clocks are further apart than clock_skew_pause.",
        value: |d| level(d.clock_skew).map(|l| f64::from(u8::from(l == SkewLevel::Paused))),
    },
    Family {
        name: "ferry_task_source_retained_bytes",
        kind: "gauge",
        help: "Bytes of change history the source keeps for the direction (a PostgreSQL slot's retained WAL).",
        value: |d| d.retained_bytes.map(|n| n as f64),
    },
    Family {
        name: "ferry_task_retention_alarm",
        kind: "gauge",
        help: "1 while the source keeps more history for the direction than the task's retention_alarm, or is about to discard it.",
        value: |d| d.retained_bytes.map(|_| f64::from(u8::from(d.retention_alarm))),
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
    // Snapshot progress per table, while the direction takes a snapshot.
    let tables: [(&str, &str, fn(&TableCopy) -> Option<u64>); 2] = [
        ("ferry_task_snapshot_table_rows", "Rows of the table the snapshot copied.", |c| Some(c.rows_copied)),
        (
            "ferry_task_snapshot_table_rows_estimated",
            "The source's estimate of the table's rows, where it can tell.",
            |c| c.rows_estimated,
        ),
    ];
    for (name, help, value) in tables {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for t in &o.tasks {
            for d in &t.directions {
                for c in &d.snapshot_tables {
                    if let Some(v) = value(c) {
                        let _ = writeln!(
                            out,
                            "{name}{{task=\"{}\",direction=\"{}\",table=\"{}\"}} {v}",
                            label(&t.name),
                            label(&d.direction),
                            label(&c.table)
                        );
                    }
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
    use super::{label, render};
    use crate::config::Mode;
    use crate::connector::DirectionId;
    use crate::control::{NodeOverview, TaskView};
    use crate::engine::metrics::DirectionMetrics;

    #[test]
    fn an_unknown_changes_behind_is_left_out_not_zero() {
        let dir = |from: &str, to: &str, behind: Option<u64>| {
            let m = DirectionMetrics::new(DirectionId { task: "t".into(), from: from.into(), to: to.into() });
            m.set_behind(behind);
            m.status()
        };
        let overview = NodeOverview {
            version: String::new(),
            started_us: None,
            node: "n".into(),
            tasks: vec![TaskView {
                name: "t".into(),
                from: "a".into(),
                to: "b".into(),
                mode: Mode::TwoWay,
                paused: false,
                directions: vec![dir("a", "b", Some(5)), dir("b", "a", None)],
                last_verify: None,
                cutover: None,
            }],
            endpoints: Vec::new(),
            at_us: 0,
        };
        let text = render(&overview);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("ferry_task_changes_behind{")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("a->b") && lines[0].ends_with(" 5"), "{text}");
    }

    #[test]
    fn retained_history_and_its_alarm_are_served_where_known() {
        let a = DirectionMetrics::new(DirectionId { task: "t".into(), from: "a".into(), to: "b".into() });
        a.set_retained(Some(3 << 30), true);
        let b = DirectionMetrics::new(DirectionId { task: "t".into(), from: "b".into(), to: "a".into() });
        let overview = NodeOverview {
            version: String::new(),
            started_us: None,
            node: "n".into(),
            tasks: vec![TaskView {
                name: "t".into(),
                from: "a".into(),
                to: "b".into(),
                mode: Mode::TwoWay,
                paused: false,
                directions: vec![a.status(), b.status()],
                last_verify: None,
                cutover: None,
            }],
            endpoints: Vec::new(),
            at_us: 0,
        };
        let text = render(&overview);
        let of = |name: &str| -> Vec<String> {
            text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).map(str::to_string).collect()
        };
        assert_eq!(
            of("ferry_task_source_retained_bytes"),
            ["ferry_task_source_retained_bytes{task=\"t\",direction=\"a->b\"} 3221225472"]
        );
        assert_eq!(of("ferry_task_retention_alarm"), ["ferry_task_retention_alarm{task=\"t\",direction=\"a->b\"} 1"]);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
