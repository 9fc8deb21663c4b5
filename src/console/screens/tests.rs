//! Snapshot tests of every screen at 80x24 and 160x48 (TestBackend + insta), the theme
//! test (key cells take the chosen theme's styles), odd data that must not panic, and
//! key handling.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use tui_textarea::TextArea;

use crate::config::Mode as TaskMode;
use crate::console::app::{App, ConfigView, Mode, Outcome, Screen};
use crate::console::source::{History, NodeFeed, Request};
use crate::console::theme::Theme;
use crate::control::verify::TableVerify;
use crate::control::{ConflictEntry, EndpointView, NodeOverview, TaskView, VerifyProgress, VerifySummary};
use crate::engine::metrics::{DirectionState, DirectionStatus};
use crate::store::AuditEntry;

/// 2027-01-15 08:00:00 UTC: every age on screen is relative to it.
const NOW: i64 = 1_800_000_000_000_000;

fn direction(task: &str, dir: &str, state: DirectionState, lag: Option<f64>, rate: f64) -> DirectionStatus {
    DirectionStatus {
        task: task.into(),
        direction: dir.into(),
        state,
        position: Some("sqlite:4242".into()),
        lag_seconds: lag,
        changes_behind: 3,
        rows_per_sec: [rate, rate * 0.8, rate * 0.5],
        changes_total: 120_345,
        txns_total: 80_001,
        snapshot_rows_total: 5_000,
        conflicts_total: 4,
        errors_total: 0,
        last_error: None,
        at_us: NOW,
    }
}

fn history(base: f64) -> History {
    let mut h = History::default();
    for i in 0..600i64 {
        let t = NOW - (600 - i) * 1_000_000;
        let wave = ((i % 60) as f64 / 60.0) * base;
        h.lag.push_back((t, 0.05 + wave / 1000.0));
        h.rate.push_back((t, base + wave));
    }
    h
}

fn healthy_node() -> NodeFeed {
    let mut failed = direction("billing", "a->c", DirectionState::Failed, None, 0.0);
    failed.errors_total = 7;
    failed.last_error = Some(
        "endpoint c: table invoices has no primary key\n  fix: add a primary key or leave the table out of tables"
            .into(),
    );
    let tasks = vec![
        TaskView {
            name: "shop".into(),
            from: "a".into(),
            to: "b".into(),
            mode: TaskMode::TwoWay,
            paused: false,
            directions: vec![
                direction("shop", "a->b", DirectionState::Streaming, Some(0.12), 950.0),
                direction("shop", "b->a", DirectionState::Streaming, Some(7.5), 310.0),
            ],
            last_verify: Some(VerifySummary {
                id: "v7".into(),
                state: "identical".into(),
                differences: 0,
                finished_us: Some(NOW - 3_600_000_000),
            }),
        },
        TaskView {
            name: "crm".into(),
            from: "a".into(),
            to: "b".into(),
            mode: TaskMode::OneWay,
            paused: true,
            directions: vec![direction("crm", "a->b", DirectionState::Stopped, Some(45.0), 0.0)],
            last_verify: None,
        },
        TaskView {
            name: "billing".into(),
            from: "a".into(),
            to: "c".into(),
            mode: TaskMode::OneWay,
            paused: false,
            directions: vec![failed],
            last_verify: None,
        },
    ];
    let mut feed = NodeFeed::new("http://127.0.0.1:7400");
    feed.overview = Some(NodeOverview {
        node: "dc-a-node".into(),
        tasks,
        endpoints: vec![EndpointView {
            name: "a".into(),
            site: "dc-a".into(),
            engine: "MySQL".into(),
            url: "mysql://ferry:***@db-a:3306".into(),
            frozen_since_us: Some(NOW - 60_000_000),
        }],
        at_us: NOW,
    });
    feed.last_ok_us = Some(NOW - 400_000);
    feed.history.insert(NodeFeed::history_key("shop", "a->b"), history(900.0));
    feed.history.insert(NodeFeed::history_key("shop", "b->a"), history(300.0));
    feed.audit = vec![
        AuditEntry {
            at_us: NOW - 5_000_000,
            actor: "alice@dc-a-node".into(),
            action: "task.pause".into(),
            task: Some("crm".into()),
            detail: "paused after the in-flight batch".into(),
        },
        AuditEntry {
            at_us: NOW - 60_000_000,
            actor: "root@dc-a-node".into(),
            action: "endpoint.freeze".into(),
            task: None,
            detail: "endpoint a".into(),
        },
    ];
    feed.conflicts = (0..3)
        .map(|i| ConflictEntry {
            id: i,
            endpoint: "b".into(),
            task: "shop".into(),
            direction: "a->b".into(),
            table: if i == 2 { "orders".into() } else { "accounts".into() },
            key: format!("({})", 10 + i),
            policy: "last-writer-wins".into(),
            winner: "incoming".into(),
            incoming_site: "dc-a".into(),
            local_site: "dc-b".into(),
            detected_us: NOW - (i + 1) * 2_000_000,
        })
        .collect();
    feed.verify = Some(VerifyProgress {
        id: "v8".into(),
        task: "shop".into(),
        state: "running".into(),
        tables: vec![
            TableVerify { table: "accounts".into(), chunks_done: 40, chunks_total: 40, differences: 0 },
            TableVerify { table: "orders".into(), chunks_done: 12, chunks_total: 50, differences: 2 },
        ],
        differences: 2,
        report: None,
    });
    feed
}

fn stale_node() -> NodeFeed {
    let mut feed = NodeFeed::new("http://10.0.0.9:7400");
    feed.last_ok_us = Some(NOW - 42_000_000);
    feed.error = Some("node http://10.0.0.9:7400: unreachable: connection refused".into());
    feed
}

fn app(theme: &str) -> App {
    let mut app = App::new(Theme::builtin(theme).expect("built-in theme"));
    app.refresh(vec![healthy_node(), stale_node()], NOW);
    app.config = Some(ConfigView {
        path: PathBuf::from("ferry.toml"),
        editor: TextArea::from(
            ["[node]", "id = \"dc-a-node\"", "", "[[task]]", "name = \"shop\"", "from = \"a\"", "to = \"b\""]
                .map(str::to_string),
        ),
        message: None,
    });
    app
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| f.render_widget(app, f.area())).expect("draw");
    t
}

fn snapshot_at_both_sizes(name: &str, app: &App) {
    for (w, h) in [(80, 24), (160, 48)] {
        let t = draw(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

#[test]
fn overview_screen() {
    snapshot_at_both_sizes("overview", &app("dark"));
}

#[test]
fn task_screen() {
    let mut a = app("dark");
    a.screen = Screen::Task;
    snapshot_at_both_sizes("task", &a);
}

#[test]
fn verify_screen() {
    let mut a = app("dark");
    a.screen = Screen::Verify;
    snapshot_at_both_sizes("verify", &a);
}

#[test]
fn audit_screen() {
    let mut a = app("dark");
    a.screen = Screen::Audit;
    snapshot_at_both_sizes("audit", &a);
}

#[test]
fn config_screen() {
    let mut a = app("dark");
    a.screen = Screen::Config;
    snapshot_at_both_sizes("config", &a);
}

#[test]
fn help_overlay() {
    let mut a = app("dark");
    a.help = true;
    snapshot_at_both_sizes("help", &a);
}

#[test]
fn typed_confirmation() {
    let mut a = app("dark");
    a.screen = Screen::Verify;
    a.on_key(key(KeyCode::Char('R')));
    for c in "sh".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    snapshot_at_both_sizes("confirm", &a);
}

fn find(buf: &Buffer, text: &str) -> (u16, u16) {
    let area = buf.area;
    for y in 0..area.height {
        let line: String = (0..area.width).map(|x| buf[(x, y)].symbol().to_string()).collect();
        if let Some(i) = line.find(text) {
            // Column in cells: count the characters before the byte offset.
            return (line[..i].chars().count() as u16, y);
        }
    }
    panic!("{text:?} not on screen");
}

#[test]
fn key_cells_take_the_chosen_themes_styles() {
    for name in ["dark", "light", "high-contrast"] {
        let a = app(name);
        let c = a.theme.colors;
        let t = draw(&a, 80, 24);
        let buf = t.backend().buffer();
        // The focused Tasks block's top-left corner.
        let (x, y) = find(buf, "┌ Tasks");
        assert_eq!(buf[(x, y)].fg, c.border_focused, "{name}: focused border");
        // The unfocused Nodes block.
        let (x, y) = find(buf, "┌ Nodes");
        assert_eq!(buf[(x, y)].fg, c.border, "{name}: border");
        // The selected (first) row: shop a->b.
        let (x, y) = find(buf, "shop");
        assert_eq!(buf[(x, y)].bg, c.selected_bg, "{name}: selected row background");
        assert_eq!(buf[(x, y)].fg, c.selected_fg, "{name}: selected row text");
        // b->a lags 7.5 s: a warning; crm lags 45 s: an error.
        let (x, y) = find(buf, "7.50s");
        assert_eq!(buf[(x, y)].fg, c.warn, "{name}: lag warning");
        let (x, y) = find(buf, "45.0s");
        assert_eq!(buf[(x, y)].fg, c.error, "{name}: lag error");
        // The stale node.
        let (x, y) = find(buf, "✖ http://10.0.0.9:7400 stale");
        assert_eq!(buf[(x, y)].fg, c.stale, "{name}: stale node");
    }
    assert_ne!(
        Theme::builtin("dark").map(|t| t.colors.warn),
        Theme::builtin("high-contrast").map(|t| t.colors.warn),
        "themes must differ for this test to mean anything"
    );
    assert_eq!(Theme::builtin("high-contrast").map(|t| t.colors.selected_bg), Some(Color::Yellow));
}

#[test]
fn stale_node_shows_its_last_seen_time() {
    let t = draw(&app("dark"), 160, 48);
    let screen = format!("{}", t.backend());
    assert!(screen.contains("stale, last seen 07:59:18 (42s ago); reconnecting"), "{screen}");
}

#[test]
fn odd_data_and_tiny_terminals_never_panic() {
    let mut odd = healthy_node();
    if let Some(o) = odd.overview.as_mut() {
        for t in &mut o.tasks {
            t.name = String::new();
            t.directions.push(direction(
                "",
                "",
                DirectionState::Snapshotting("é🚀".repeat(40)),
                Some(f64::NAN),
                f64::INFINITY,
            ));
            for d in &mut t.directions {
                d.lag_seconds = Some(f64::MAX);
                d.rows_per_sec = [f64::NAN, -1.0, f64::MAX];
                d.last_error = Some("\n\n".repeat(50));
            }
        }
        o.tasks.push(TaskView {
            name: "empty".into(),
            from: String::new(),
            to: String::new(),
            mode: TaskMode::OneWay,
            paused: false,
            directions: Vec::new(),
            last_verify: None,
        });
    }
    odd.history.insert(NodeFeed::history_key("", ""), {
        let mut h = History::default();
        h.lag.push_back((i64::MIN, f64::NAN));
        h.rate.push_back((i64::MAX, f64::INFINITY));
        h
    });
    let mut a = App::new(Theme::default_theme());
    a.refresh(vec![odd, NodeFeed::new("")], i64::MAX);
    let mut drawn = 0;
    for screen in Screen::ALL {
        a.screen = screen;
        for selected in [0, 3, 999] {
            a.selected = selected;
            for (w, h) in [(1, 1), (10, 3), (20, 5), (80, 24), (33, 200)] {
                let t = draw(&a, w, h);
                assert_eq!(t.backend().buffer().area.width, w);
                drawn += 1;
            }
        }
    }
    assert_eq!(drawn, 90);
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn keys_move_open_and_act() {
    let mut a = app("dark");
    assert_eq!(a.on_key(key(KeyCode::Char('j'))), Outcome::None);
    assert_eq!(a.selected, 1);
    a.on_key(key(KeyCode::Enter));
    assert_eq!(a.screen, Screen::Task);
    assert_eq!(a.selected_task().map(|(_, t)| t.name.as_str()), Some("shop"));
    assert_eq!(a.on_key(key(KeyCode::Char('p'))), Outcome::Send(0, Request::Pause("shop".into())));
    a.on_key(key(KeyCode::Char('4')));
    assert_eq!(a.screen, Screen::Audit);
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.screen, Screen::Overview);

    // Filter.
    a.on_key(key(KeyCode::Char('/')));
    for c in "crm".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    a.on_key(key(KeyCode::Enter));
    assert_eq!(a.rows().len(), 1);
    assert_eq!(a.on_key(key(KeyCode::Char('r'))), Outcome::Send(0, Request::Resume("crm".into())));
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.rows().len(), 5, "3 shop/crm/billing directions + the stale node");

    // Palette: actions by name, a freeze behind a typed confirmation, themes.
    assert_eq!(a.command("pause billing"), Outcome::Send(0, Request::Pause("billing".into())));
    assert_eq!(a.command("freeze a"), Outcome::None);
    assert!(matches!(a.mode, Mode::Confirm(_)));
    a.on_key(key(KeyCode::Char('x')));
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::None, "a wrong name does not confirm");
    a.on_key(key(KeyCode::Backspace));
    a.on_key(key(KeyCode::Char('a')));
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::Send(0, Request::Freeze("a".into())));
    a.command("theme light");
    assert_eq!(a.theme.name, "light");
    a.command("theme nope");
    assert!(a.status.as_deref().is_some_and(|s| s.contains("not found")));
    a.command("task crm");
    assert_eq!(a.screen, Screen::Task);
    assert_eq!(a.selected_task().map(|(_, t)| t.name.as_str()), Some("crm"));
    assert_eq!(a.on_key(key(KeyCode::Char('q'))), Outcome::Quit);
}

#[test]
fn config_edits_are_validated_before_they_are_saved() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("ferry.toml");
    let good = "[node]\nid = \"n\"\n";
    std::fs::write(&path, good).expect("write");
    let mut a = app("dark");
    a.config = Some(ConfigView::open(path.clone()));
    a.screen = Screen::Config;
    a.on_key(key(KeyCode::Char('e')));
    assert_eq!(a.mode, Mode::Edit);
    for c in "bogus = 1".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    a.on_key(key(KeyCode::Enter));
    a.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert_eq!(a.mode, Mode::Edit, "an invalid file keeps the editor open");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), good, "an invalid file is not saved");
    let msg = a.config.as_ref().and_then(|c| c.message.clone()).expect("a message");
    assert!(!msg.0 && msg.1.contains("bogus"), "{msg:?}");
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.mode, Mode::Normal);
    a.on_key(key(KeyCode::Char('e')));
    a.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert_eq!(a.mode, Mode::Normal, "a valid file is saved and the editor closes");
    assert!(a.config.as_ref().and_then(|c| c.message.clone()).is_some_and(|m| m.0));
    // Running the file in-process (`ferry console --config`): saving applies it.
    a.reload_on_save = true;
    a.on_key(key(KeyCode::Char('e')));
    let out = a.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert_eq!(out, Outcome::Reload, "a saved file restarts the in-process tasks");
}

/// Task shop's cutover stopped before Switch: four steps done, their checks recorded.
fn half_way_cutover() -> crate::cutover::CutoverView {
    use crate::cutover::{Check, CutoverState, CutoverView, FORWARD, LiveValues, Step, StepRecord, StepView};
    let done = [Step::Preflight, Step::Freeze, Step::Drain, Step::Verify];
    let history: Vec<StepRecord> = done
        .iter()
        .enumerate()
        .map(|(i, s)| StepRecord {
            step: *s,
            actor: "alice@dc-a-node".into(),
            started_us: NOW - 60_000_000 + i as i64 * 1_000_000,
            millis: 250 * (i as u64 + 1),
            ok: true,
            checks: vec![Check { name: format!("{s} check"), seen: "as expected".into(), ok: true }],
            message: "ok".into(),
        })
        .collect();
    let steps = FORWARD
        .iter()
        .map(|s| {
            let (title, checks) = s.describe("a", "b");
            let finished = done.contains(s);
            StepView {
                step: *s,
                title: title.into(),
                checks,
                state: if finished {
                    "done"
                } else if *s == Step::Switch {
                    "next"
                } else {
                    "pending"
                }
                .into(),
                millis: history.iter().find(|r| r.step == *s).map(|r| r.millis),
                confirm: s.needs_typed_confirmation(),
            }
        })
        .collect();
    CutoverView {
        task: "shop".into(),
        state: Some(CutoverState {
            task: "shop".into(),
            from: "a".into(),
            to: "b".into(),
            step: Step::Switch,
            quick_only: false,
            started_us: NOW - 60_000_000,
            source_head: Some("sqlite:100".into()),
            target_head: Some("sqlite:7".into()),
            reversed: None,
            rollback_target_head: None,
            restore_head: None,
            history,
            running: None,
            last_error: None,
        }),
        steps,
        live: LiveValues {
            direction: "a->b".into(),
            lag_seconds: Some(0.21),
            changes_pending: Some(0),
            frozen: vec![("a".into(), NOW - 40_000_000)],
        },
        outcome: None,
    }
}

fn cutover_app() -> App {
    let mut a = app("dark");
    a.nodes[0].cutover = Some(half_way_cutover());
    a.screen = Screen::Cutover;
    a
}

#[test]
fn cutover_wizard_screen() {
    snapshot_at_both_sizes("cutover", &cutover_app());
}

#[test]
fn cutover_switch_and_rollback_need_the_task_name_typed() {
    use crate::cutover::CutoverAction;
    let mut a = cutover_app();
    assert_eq!(a.on_key(key(KeyCode::Char('n'))), Outcome::None, "switch waits for the typed name");
    assert!(matches!(&a.mode, Mode::Confirm(c) if c.expected == "shop"));
    a.on_key(key(KeyCode::Char('x')));
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::None, "a wrong name does not confirm");
    a.on_key(key(KeyCode::Backspace));
    for c in "shop".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::Send(0, Request::Cutover("shop".into(), CutoverAction::Next)));
    assert_eq!(a.on_key(key(KeyCode::Char('b'))), Outcome::None);
    for c in "shop".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(
        a.on_key(key(KeyCode::Enter)),
        Outcome::Send(0, Request::Cutover("shop".into(), CutoverAction::Rollback))
    );
    // Verify needs no typed name: sent at once.
    if let Some(v) = a.nodes[0].cutover.as_mut().and_then(|v| v.state.as_mut()) {
        v.step = crate::cutover::Step::Verify;
    }
    assert_eq!(
        a.on_key(key(KeyCode::Char('n'))),
        Outcome::Send(0, Request::Cutover("shop".into(), CutoverAction::Next))
    );
}
