//! Issue 22, the views a remote console needs from the node API: snapshot progress per
//! table, conflicts and verify differences with both row versions side by side,
//! skipping the transaction a stopped task failed on, the node's own log lines.

use crossterm::event::KeyCode;

use super::{NOW, app, draw, find, key, snapshot_at_both_sizes, with_access};
use crate::config::Role;
use crate::console::app::{App, Mode, Outcome, Screen, VersionsOf};
use crate::console::source::Request;
use crate::control::verify::{ColumnPair, DifferingRow};
use crate::control::{LogLine, SkipRequest};
use crate::engine::copy_progress::{CopyState, TableCopy};
use crate::engine::metrics::FailedChange;

fn text_of(a: &App, w: u16, h: u16) -> String {
    format!("{}", draw(a, w, h).backend())
}

fn typed(a: &mut App, s: &str) {
    for c in s.chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
}

fn copy(table: &str, state: CopyState, copied: u64, est: Option<u64>, rate: Option<f64>) -> TableCopy {
    let eta = match (rate, est) {
        (Some(r), Some(e)) if e > copied => Some((e - copied) as f64 / r),
        _ => None,
    };
    TableCopy {
        table: table.into(),
        state,
        rows_copied: copied,
        rows_estimated: est,
        rows_per_sec: rate,
        eta_seconds: eta,
    }
}

/// The shop task copying: orders half-way, items waiting, accounts done.
fn snapshotting() -> App {
    let mut a = app("dark");
    if let Some(o) = a.nodes[0].overview.as_mut() {
        let d = &mut o.tasks[0].directions[0];
        d.state = crate::engine::metrics::DirectionState::Snapshotting("orders".into());
        d.snapshot_tables = vec![
            copy("accounts", CopyState::Done, 1_000, Some(1_000), None),
            copy("orders", CopyState::Copying, 52_000, Some(100_000), Some(1_200.0)),
            copy("items", CopyState::Pending, 0, Some(3_000), None),
        ];
    }
    a.screen = Screen::Task;
    a
}

#[test]
fn the_task_screen_shows_snapshot_progress_per_table() {
    let a = snapshotting();
    snapshot_at_both_sizes("task_snapshot_progress", &a);
    let text = text_of(&a, 120, 36);
    assert!(text.contains("Snapshot: 1 of 3 tables copied"), "{text}");
    assert!(text.contains(" 52%  52000 of ~100k  1.2k/s  ETA 40s"), "rows of the estimate, rate, ETA: {text}");
    assert!(text.contains("waiting, ~3000"), "{text}");
    assert!(text.contains("done, 1000 rows copied"), "{text}");
    // Copying comes first.
    let at = |t: &str| text.find(t).unwrap_or_else(|| panic!("{t} not on screen"));
    assert!(at("orders   a->b") < at("items    a->b") && at("items    a->b") < at("accounts a->b"), "{text}");
    // Once every table is copied the pane gives its room back to the charts.
    let mut done = a;
    if let Some(o) = done.nodes[0].overview.as_mut() {
        for t in &mut o.tasks[0].directions[0].snapshot_tables {
            t.state = CopyState::Done;
        }
    }
    assert!(!text_of(&done, 120, 36).contains("Snapshot:"));
}

/// Conflicts with their logged rows: the incoming version won on `name`.
fn with_row_versions(mut a: App) -> App {
    for (i, c) in a.nodes[0].conflicts.iter_mut().enumerate() {
        c.incoming_ts = NOW - 3_000_000;
        c.local_ts = NOW - 4_000_000;
        c.incoming_row = Some(vec![
            ("id".into(), Some(format!("{}", 10 + i))),
            ("name".into(), Some("Ada Lovelace".into())),
            ("note".into(), None),
            ("balance".into(), Some("12.50".into())),
        ]);
        c.local_row = Some(vec![
            ("id".into(), Some(format!("{}", 10 + i))),
            ("name".into(), Some("Ada King".into())),
            ("note".into(), None),
            ("balance".into(), Some("12.50".into())),
        ]);
    }
    a
}

#[test]
fn conflicts_show_both_row_versions_side_by_side_with_the_differences_marked() {
    let mut a = with_row_versions(app("dark"));
    a.on_key(key(KeyCode::Enter));
    assert_eq!(a.on_key(key(KeyCode::Char('c'))), Outcome::None);
    assert_eq!((a.screen, a.versions_of), (Screen::Versions, VersionsOf::Conflicts));
    assert_eq!(a.back, vec![Screen::Overview, Screen::Task]);
    snapshot_at_both_sizes("versions_conflict", &a);
    let t = draw(&a, 120, 36);
    let text = format!("{}", t.backend());
    assert!(text.contains("incoming dc-a 07:59:57 ✔ kept"), "{text}");
    assert!(text.contains("local dc-b 07:59:56"), "{text}");
    assert!(text.contains("Row versions: 1 of 4 columns differ"), "{text}");
    // The differing column is marked and in the warning colour; an equal one is not.
    let buf = t.backend().buffer();
    let (x, y) = find(buf, "≠ name");
    assert_eq!(buf[(x + 2, y)].fg, a.theme.colors.warn);
    let (x, y) = find(buf, "  balance");
    assert_ne!(buf[(x + 2, y)].fg, a.theme.colors.warn);
    assert!(text.contains("NULL"), "a NULL says so: {text}");
    // j selects the next conflict; Esc goes back to the Task screen.
    a.on_key(key(KeyCode::Char('j')));
    assert_eq!(a.version_selected, 1);
    assert!(text_of(&a, 120, 36).contains("a->b accounts key (11)"));
    a.on_key(key(KeyCode::Char('G')));
    assert_eq!(a.version_selected, 2, "never past the last");
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.screen, Screen::Task);
}

#[test]
fn a_conflict_logged_without_rows_says_so() {
    let mut a = app("dark");
    a.on_key(key(KeyCode::Enter));
    a.on_key(key(KeyCode::Char('c')));
    let text = text_of(&a, 120, 36);
    assert!(text.contains("holds no row versions"), "{text}");
}

fn with_differences(mut a: App) -> App {
    if let Some(v) = a.nodes[0].verify.as_mut() {
        v.state = "different".into();
        v.rows = vec![
            DifferingRow {
                table: "orders".into(),
                kind: "different".into(),
                key: "(7)".into(),
                columns: vec![
                    ColumnPair { column: "total".into(), source: "99.90".into(), target: "9.99".into() },
                    ColumnPair { column: "status".into(), source: "paid".into(), target: "open".into() },
                ],
            },
            DifferingRow { table: "orders".into(), kind: "missing".into(), key: "(8)".into(), columns: Vec::new() },
        ];
    }
    a.screen = Screen::Verify;
    a
}

#[test]
fn verify_differences_show_source_and_target_values_side_by_side() {
    let mut a = with_differences(app("dark"));
    a.on_key(key(KeyCode::Char('d')));
    assert_eq!((a.screen, a.versions_of), (Screen::Versions, VersionsOf::Differences));
    snapshot_at_both_sizes("versions_difference", &a);
    let text = text_of(&a, 120, 36);
    assert!(text.contains("source a") && text.contains("target b"), "{text}");
    assert!(text.contains("≠ total") && text.contains("99.90") && text.contains("9.99"), "{text}");
    a.on_key(key(KeyCode::Down));
    let text = text_of(&a, 80, 24);
    assert!(text.contains("on the source a only"), "{text}");
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.screen, Screen::Verify);
}

/// billing (the fourth overview row) stopped on a row its target refused.
fn failed_billing() -> App {
    let mut a = app("dark");
    if let Some(o) = a.nodes[0].overview.as_mut() {
        o.tasks[2].directions[0].failed_change = Some(FailedChange {
            position: "sqlite:812".into(),
            table: "invoices".into(),
            key: "(42)".into(),
            message: "CHECK constraint failed: amount >= 0".into(),
            skippable: true,
        });
    }
    a.selected = 3;
    a
}

#[test]
fn s_shows_the_refused_transaction_and_skips_it_after_the_task_name_is_typed() {
    let mut a = failed_billing();
    assert_eq!(a.selected_task().map(|(_, t)| t.name.clone()).as_deref(), Some("billing"));
    assert_eq!(a.on_key(key(KeyCode::Char('S'))), Outcome::None);
    assert!(matches!(a.mode, Mode::Confirm(_)));
    typed(&mut a, "bil");
    snapshot_at_both_sizes("skip_confirm", &a);
    let text = text_of(&a, 120, 36);
    assert!(text.contains("sqlite:812") && text.contains("invoices") && text.contains("(42)"), "{text}");
    assert!(text.contains("constraint failed: amount >= 0"), "the target's message: {text}");
    // A wrong name does nothing; the right one sends the skip to the task's node.
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::None);
    typed(&mut a, "ling");
    let sent = a.on_key(key(KeyCode::Enter));
    let want = SkipRequest { position: "sqlite:812".into(), direction: Some("a->c".into()) };
    assert_eq!(sent, Outcome::Send(0, Request::Skip("billing".into(), want)));
    assert_eq!(a.mode, Mode::Normal);
}

#[test]
fn skipping_needs_a_refused_transaction_and_the_admin_role() {
    let mut a = app("dark");
    a.on_key(key(KeyCode::Char('S')));
    assert_eq!(a.mode, Mode::Normal, "shop is not stopped on a refused change");
    assert!(a.status.as_deref().is_some_and(|s| s.starts_with("no refused transaction")), "{:?}", a.status);
    let mut a = with_access(failed_billing(), Role::Operator);
    a.on_key(key(KeyCode::Char('S')));
    assert_eq!(a.mode, Mode::Normal, "no dialog the node would refuse");
    assert!(a.status.as_deref().is_some_and(|s| s.contains("needs the admin role")), "{:?}", a.status);
    let mut a = failed_billing();
    if let Some(f) = a.nodes[0].overview.as_mut().and_then(|o| o.tasks[2].directions[0].failed_change.as_mut()) {
        f.skippable = false;
    }
    a.on_key(key(KeyCode::Char('S')));
    assert!(a.status.as_deref().is_some_and(|s| s.contains("applied in parts")), "{:?}", a.status);
    // The palette reaches it too, by task name.
    let mut a = failed_billing();
    a.selected = 0;
    a.command("skip billing");
    assert!(matches!(a.mode, Mode::Confirm(_)));
}

#[test]
fn the_log_view_shows_the_nodes_own_log_lines() {
    let mut a = app("dark");
    let line = |seq: u64, level: &str, message: &str| LogLine {
        seq,
        at_us: NOW - 10_000_000 + seq as i64 * 1_000_000,
        level: level.into(),
        message: message.into(),
    };
    a.nodes[0].logs = [
        line(1, "INFO", "started direction=shop a->b position=sqlite:4200"),
        line(2, "INFO", "started direction=crm a->b position=sqlite:17"),
        line(3, "WARN", "endpoint failed; retrying direction=shop b->a error=endpoint a: database is locked"),
        line(4, "INFO", "snapshot of shopping done"),
    ]
    .into();
    a.on_key(key(KeyCode::Char('l')));
    assert_eq!(a.screen, Screen::Log);
    snapshot_at_both_sizes("log_node_lines", &a);
    let text = text_of(&a, 120, 36);
    assert!(text.contains("log      started direction=shop a->b"), "{text}");
    assert!(text.contains("log warn endpoint failed; retrying direction=shop b->a"), "{text}");
    assert!(!text.contains("crm a->b position"), "another task's line: {text}");
    assert!(!text.contains("shopping"), "a name inside another word: {text}");
    // On the node's own row (the stale node has no tasks) every line of that node shows.
    a.on_key(key(KeyCode::Esc));
    a.nodes[1].logs = [line(1, "ERROR", "the node API on 0.0.0.0:7400 stopped")].into();
    a.selected = 4;
    a.on_key(key(KeyCode::Char('l')));
    assert!(text_of(&a, 120, 36).contains("log err  the node API on 0.0.0.0:7400 stopped"));
}

#[test]
fn the_new_views_never_panic_in_tiny_terminals() {
    let mut versions = with_row_versions(app("dark"));
    versions.on_key(key(KeyCode::Enter));
    versions.on_key(key(KeyCode::Char('c')));
    let mut differences = with_differences(app("dark"));
    differences.on_key(key(KeyCode::Char('d')));
    let mut skip = failed_billing();
    skip.on_key(key(KeyCode::Char('S')));
    for a in [&snapshotting(), &versions, &differences, &skip] {
        for (w, h) in [(1, 1), (20, 5), (40, 10), (300, 80)] {
            let text = text_of(a, w, h);
            assert_eq!(text.lines().count(), h as usize, "{w}x{h} drew every line:\n{text}");
        }
    }
}
