//! Snapshot tests of every screen at 80x24 and 120x36 (TestBackend + insta), the theme
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
        changes_behind: Some(3),
        rows_per_sec: [rate, rate * 0.8, rate * 0.5],
        changes_total: 120_345,
        txns_total: 80_001,
        snapshot_rows_total: 5_000,
        conflicts_total: 4,
        errors_total: 0,
        last_error: None,
        clock_offset_seconds: None,
        clock_skew_seconds: None,
        clock_skew: Default::default(),
        clock_message: None,
        at_us: NOW,
        retained_bytes: None,
        retention_alarm: false,
        snapshot_tables: Vec::new(),
        failed_change: None,
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
            cutover: None,
        },
        TaskView {
            name: "crm".into(),
            from: "a".into(),
            to: "b".into(),
            mode: TaskMode::OneWay,
            paused: true,
            directions: vec![direction("crm", "a->b", DirectionState::Stopped, Some(45.0), 0.0)],
            last_verify: None,
            cutover: None,
        },
        TaskView {
            name: "billing".into(),
            from: "a".into(),
            to: "c".into(),
            mode: TaskMode::OneWay,
            paused: false,
            directions: vec![failed],
            last_verify: None,
            cutover: None,
        },
    ];
    let mut feed = NodeFeed::new("http://127.0.0.1:7400");
    feed.overview = Some(NodeOverview {
        version: "0.1.0".into(),
        started_us: Some(NOW - 3 * 3_600_000_000),
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
            incoming_ts: 0,
            local_ts: 0,
            incoming_row: None,
            local_row: None,
        })
        .collect();
    feed.verify = Some(VerifyProgress {
        id: "v8".into(),
        task: "shop".into(),
        state: "running".into(),
        tables: vec![
            TableVerify {
                table: "accounts".into(),
                chunks_done: 40,
                chunks_total: 40,
                differences: 0,
                transient: 0,
                unsettled: 0,
            },
            TableVerify {
                table: "orders".into(),
                chunks_done: 12,
                chunks_total: 50,
                differences: 2,
                transient: 0,
                unsettled: 0,
            },
        ],
        differences: 2,
        transient: 0,
        unsettled: 0,
        direction: "a->b".into(),
        report: None,
        rows: Vec::new(),
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
        secrets: Vec::new(),
    });
    app
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| f.render_widget(app, f.area())).expect("draw");
    t
}

fn snapshot_at_both_sizes(name: &str, app: &App) {
    for (w, h) in [(80, 24), (120, 36)] {
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
            cutover: None,
        });
    }
    odd.history.insert(NodeFeed::history_key("", ""), {
        let mut h = History::default();
        h.lag.push_back((i64::MIN, f64::NAN));
        h.rate.push_back((i64::MAX, f64::INFINITY));
        h
    });
    // A cluster with timestamps at the ends of time and names that do not fit.
    let mut strange = crate::cluster::ClusterView { nats: "é🚀".repeat(40), nodes: Vec::new(), owners: Vec::new() };
    strange.nodes.push(crate::cluster::members::Member {
        id: String::new(),
        site: None,
        version: "🚀".repeat(50),
        listen: String::new(),
        started_us: i64::MAX,
        last_seen_us: i64::MIN,
        tasks: vec![String::new(); 3],
        unreachable: vec!["🚀".repeat(30)],
    });
    strange.owners.push(crate::cluster::lease::LeaseRecord {
        task: "x".repeat(300),
        from: String::new(),
        to: String::new(),
        node: "gone".into(),
        site: None,
        since_us: i64::MIN,
        fencing: u64::MAX,
        paused: true,
    });
    odd.absorb_cluster(Some(strange.clone()), i64::MIN);
    strange.owners.clear();
    odd.absorb_cluster(Some(strange), i64::MAX);
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
    assert_eq!(drawn, 105);
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
    assert_eq!(a.on_key(key(KeyCode::Char('q'))), Outcome::None, "endpoint a is frozen: q asks");
    assert_eq!(a.on_key(key(KeyCode::Char('y'))), Outcome::Quit);
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
    // Esc asks before throwing the edit away: n edits on, y discards.
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.mode, Mode::Discard);
    a.on_key(key(KeyCode::Char('n')));
    assert_eq!(a.mode, Mode::Edit);
    a.on_key(key(KeyCode::Esc));
    a.on_key(key(KeyCode::Char('y')));
    assert_eq!(a.mode, Mode::Normal);
    assert_eq!(a.config.as_ref().map(|c| c.editor.lines().join("\n")), Some(good.trim_end().to_string()));
    // Esc without edits leaves at once.
    a.on_key(key(KeyCode::Char('e')));
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.mode, Mode::Normal, "nothing to discard, nothing asked");
    // Running the file in-process (`ferry console --config`): an unchanged file is not
    // saved and restarts nothing; a changed valid one is saved and applied.
    a.reload_on_save = true;
    a.on_key(key(KeyCode::Char('e')));
    let out = a.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert_eq!((out, &a.mode), (Outcome::None, &Mode::Normal), "an unchanged file restarts nothing");
    assert!(a.config.as_ref().and_then(|c| c.message.clone()).is_some_and(|m| m.1.contains("unchanged")));
    a.on_key(key(KeyCode::Char('e')));
    for c in "# note".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    a.on_key(key(KeyCode::Enter));
    let out = a.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert_eq!(out, Outcome::Reload, "a saved file restarts the in-process tasks");
    assert!(std::fs::read_to_string(&path).expect("read").contains("# note"));
}

#[test]
fn config_screen_masks_passwords_and_a_save_keeps_them() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("ferry.toml");
    let text = "[node]\nid = \"n\"\n\n[[endpoint]]\nname = \"a\"\nurl = \"mysql://ferry:hunter2@127.0.0.1:3306/db\"\n";
    std::fs::write(&path, text).expect("write");
    let mut a = app("dark");
    a.config = Some(ConfigView::open(path.clone()));
    a.screen = Screen::Config;
    let shown = draw(&a, 80, 24).backend().to_string();
    assert!(!shown.contains("hunter2") && shown.contains("ferry:***@127.0.0.1"), "{shown}");
    // Edit another line and save: the masked URL was left as it was, so the password stays.
    a.on_key(key(KeyCode::Char('e')));
    for c in "# edited".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    a.on_key(key(KeyCode::Enter));
    a.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    let saved = std::fs::read_to_string(&path).expect("read");
    assert!(saved.contains("mysql://ferry:hunter2@127.0.0.1:3306/db") && saved.contains("# edited"), "{saved}");
    assert!(!saved.contains("***"), "{saved}");
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
            frozen_us: None,
            rollback_frozen_us: None,
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
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::Send(0, Request::Rollback("shop".into())), "to its end");
    // Verify needs no typed name: sent at once.
    if let Some(v) = a.nodes[0].cutover.as_mut().and_then(|v| v.state.as_mut()) {
        v.step = crate::cutover::Step::Verify;
    }
    assert_eq!(
        a.on_key(key(KeyCode::Char('n'))),
        Outcome::Send(0, Request::Cutover("shop".into(), CutoverAction::Next))
    );
}

#[test]
fn large_counters_are_shortened_never_cut() {
    assert_eq!(super::count_text(99_999), "99999");
    assert_eq!(super::count_text(400_000), "400k");
    assert_eq!(super::count_text(1_234_567), "1.2M");
    assert_eq!(super::count_text(37_900_000), "37M");
    assert_eq!(super::count_text(2_500_000_000), "2.5G");
    let mut a = app("dark");
    if let Some(d) = a.nodes[0].overview.as_mut().map(|o| &mut o.tasks[0].directions[0]) {
        d.snapshot_rows_total = 400_000;
        d.changes_total = 1_234_567;
        d.txns_total = 12_345_678_901;
    }
    a.screen = Screen::Task;
    for (w, h) in [(80, 24), (120, 36)] {
        let screen = format!("{}", draw(&a, w, h).backend());
        for shown in ["400k", "1.2M", "12G"] {
            assert!(screen.contains(shown), "{w}x{h}: {shown} missing:\n{screen}");
        }
    }
    snapshot_at_both_sizes("task_large_counters", &a);
}

/// A finished verify of a two-way task under live writes: nothing confirmed, six rows
/// that differed while replication was behind (transient), a report longer than its panel.
fn finished_verify_app() -> App {
    let mut a = app("dark");
    if let Some(p) = a.nodes[0].verify.as_mut() {
        p.state = "identical".into();
        p.differences = 0;
        p.transient = 6;
        p.tables[0].transient = 4;
        p.tables[1] = TableVerify {
            table: "orders".into(),
            chunks_done: 50,
            chunks_total: 50,
            differences: 0,
            transient: 2,
            unsettled: 0,
        };
        let mut report = String::from("task shop (a -> b), full verify, live: 2 re-check round(s):\n");
        report.push_str(
            "  accounts -> accounts: identical (4000 / 4000 rows, 40 chunks, 1 differing, sqlite-text, 0.40s)\n",
        );
        for k in 0..4 {
            report.push_str(&format!("    transient Different key ({k}); n: source {k} target {}\n", k + 1));
        }
        report
            .push_str("  orders -> orders: identical (5000 / 5000 rows, 50 chunks, 1 differing, sqlite-text, 0.50s)\n");
        for k in 10..12 {
            report.push_str(&format!("    transient Missing key ({k})\n"));
        }
        report
            .push_str("IDENTICAL: 0 confirmed, 6 transient, 0 unsettled difference(s); 18000 rows checked in 0.90s\n");
        p.report = Some(report);
    }
    a.screen = Screen::Verify;
    a
}

/// The first node's feed says the console acts there with `role` over HTTPS.
fn with_access(mut a: App, role: crate::config::Role) -> App {
    a.nodes[0].access = Some(crate::control::Access { name: "alice".into(), role, tls: Some(true) });
    a
}

#[test]
fn verify_screen_shows_confirmed_and_transient_apart_and_the_direction() {
    let a = finished_verify_app();
    for (w, h) in [(80, 24), (120, 36)] {
        let screen = format!("{}", draw(&a, w, h).backend());
        assert!(screen.contains("two-way, checks a->b (source of truth: a)"), "{w}x{h}:\n{screen}");
        assert!(screen.contains("identical, 0 confirmed, 6 transient"), "{w}x{h}:\n{screen}");
        assert!(screen.contains("Confirmed") && screen.contains("Transient"), "{w}x{h}:\n{screen}");
        assert!(screen.contains("transient: equal on re-check after replication caught up"), "{w}x{h}:\n{screen}");
    }
    snapshot_at_both_sizes("verify_finished", &a);
}

#[test]
fn the_verify_report_scrolls() {
    let mut a = finished_verify_app();
    let before = format!("{}", draw(&a, 80, 24).backend());
    assert!(before.contains("Report, lines 1-"), "{before}");
    assert!(!before.contains("IDENTICAL: 0 confirmed"), "the last line is below the panel:\n{before}");
    for _ in 0..4 {
        a.on_key(key(KeyCode::PageDown));
    }
    let after = format!("{}", draw(&a, 80, 24).backend());
    assert!(after.contains("IDENTICAL: 0 confirmed"), "PgDn shows the end:\n{after}");
    a.on_key(key(KeyCode::PageUp));
    snapshot_at_both_sizes("verify_report_scrolled", &a);
}

/// Task crm's cutover stands before Drain: its source a has been frozen for a minute.
fn cutover_brief(step: crate::cutover::Step) -> crate::cutover::CutoverBrief {
    crate::cutover::CutoverBrief {
        step,
        from: "a".into(),
        to: "b".into(),
        started_us: NOW - 90_000_000,
        running: false,
        last_error: None,
    }
}

#[test]
fn overview_shows_frozen_endpoints_and_the_cutover_step() {
    let mut a = app("dark");
    if let Some(o) = a.nodes[0].overview.as_mut() {
        o.tasks[1].cutover = Some(cutover_brief(crate::cutover::Step::Drain));
    }
    for (w, h) in [(80, 24), (120, 36)] {
        let screen = format!("{}", draw(&a, w, h).backend());
        assert!(screen.contains("a FROZEN for 1m"), "{w}x{h}:\n{screen}");
        assert!(screen.contains("cutover of crm (a->b): next step drain"), "{w}x{h}:\n{screen}");
    }
    snapshot_at_both_sizes("overview_cutover", &a);
}

#[test]
fn the_switch_dialog_names_the_new_direction() {
    let mut a = cutover_app();
    a.on_key(key(KeyCode::Char('n')));
    let Mode::Confirm(c) = &a.mode else { panic!("a confirmation") };
    assert!(c.prompt.contains("the direction becomes b->a"), "{}", c.prompt);
    snapshot_at_both_sizes("cutover_switch_dialog", &a);
}

/// The cutover of shop rolled back half-way: the target frozen, the reverse drain next.
fn rolling_back_app() -> App {
    use crate::cutover::{ROLLBACK, Step, StepView};
    let mut a = cutover_app();
    if let Some(v) = a.nodes[0].cutover.as_mut() {
        if let Some(s) = v.state.as_mut() {
            s.step = Step::RollbackDrain;
        }
        v.steps = ROLLBACK
            .iter()
            .map(|s| {
                let (title, checks) = s.describe("a", "b");
                let state = match s {
                    Step::RollbackFreezeTarget => "done",
                    Step::RollbackDrain => "next",
                    _ => "pending",
                };
                StepView {
                    step: *s,
                    title: title.into(),
                    checks,
                    state: state.into(),
                    millis: None,
                    confirm: s.needs_typed_confirmation(),
                }
            })
            .collect();
        v.live.frozen.push(("b".into(), NOW - 5_000_000));
    }
    a
}

#[test]
fn the_wizard_says_what_n_and_b_do_and_b_rolls_back_to_the_end() {
    let mut a = rolling_back_app();
    for (w, h) in [(80, 24), (120, 36)] {
        let screen = format!("{}", draw(&a, w, h).backend());
        assert!(screen.contains("n: run only \"Rollback: drain\""), "{w}x{h}:\n{screen}");
        assert!(screen.contains("b: run the rest of the rollback to its end"), "{w}x{h}:\n{screen}");
        assert!(!screen.contains("next: rollback-drain (n runs it"), "{w}x{h}:\n{screen}");
    }
    snapshot_at_both_sizes("cutover_rolling_back", &a);
    a.on_key(key(KeyCode::Char('b')));
    for c in "shop".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::Send(0, Request::Rollback("shop".into())));
}

#[test]
fn keys_typed_before_the_cutover_screen_loaded_run_nothing() {
    let mut a = app("dark");
    a.screen = Screen::Cutover;
    assert!(a.loading().is_some());
    // The operator types the confirmation before the data (and so the dialog) arrived.
    for c in "nshop".chars() {
        assert_eq!(a.on_key(key(KeyCode::Char(c))), Outcome::None, "{c} must not act");
    }
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::None);
    assert_eq!(a.mode, Mode::Normal);
    assert!(a.status.as_deref().is_some_and(|s| s.contains("still reading the cutover of shop")), "{:?}", a.status);
    // Once it shows, the same keys work.
    a.nodes[0].cutover = Some(half_way_cutover());
    assert!(a.loading().is_none());
    assert_eq!(a.on_key(key(KeyCode::Char('p'))), Outcome::Send(0, Request::Pause("shop".into())));
}

#[test]
fn quitting_asks_while_endpoints_are_frozen_or_a_cutover_is_half_way() {
    let mut a = app("dark");
    if let Some(o) = a.nodes[0].overview.as_mut() {
        o.tasks[1].cutover = Some(cutover_brief(crate::cutover::Step::Drain));
    }
    assert_eq!(a.on_key(key(KeyCode::Char('q'))), Outcome::None, "q asks first");
    let Mode::Quit(w) = &a.mode else { panic!("the quit question") };
    assert!(w.iter().any(|l| l.contains("endpoint a stays FROZEN")), "{w:?}");
    assert!(w.iter().any(|l| l.contains("the cutover of crm stays at next step drain")), "{w:?}");
    snapshot_at_both_sizes("quit_question", &a);
    assert_eq!(a.on_key(key(KeyCode::Char('x'))), Outcome::None, "not an answer");
    assert_eq!(a.on_key(key(KeyCode::Esc)), Outcome::None);
    assert_eq!(a.mode, Mode::Normal, "Esc stays");
    a.on_key(key(KeyCode::Char('q')));
    assert_eq!(a.on_key(key(KeyCode::Char('q'))), Outcome::Quit, "q again quits");
    a.mode = Mode::Normal;
    assert_eq!(a.command("q"), Outcome::None, ":q asks too");
    a.mode = Mode::Normal;
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(a.on_key(ctrl_c), Outcome::None);
    assert_eq!(a.on_key(ctrl_c), Outcome::Quit, "a second Ctrl-C quits");
    // `ferry demo`: q ends the workload at once.
    a.mode = Mode::Normal;
    a.quit_asks = false;
    assert_eq!(a.on_key(key(KeyCode::Char('q'))), Outcome::Quit);
}

#[test]
fn quitting_asks_while_in_process_tasks_run_and_not_when_nothing_is_at_stake() {
    let mut here = healthy_node();
    here.label = crate::console::source::IN_PROCESS.into();
    if let Some(o) = here.overview.as_mut() {
        o.endpoints.clear();
    }
    let mut a = App::new(Theme::default_theme());
    a.refresh(vec![here.clone()], NOW);
    a.on_key(key(KeyCode::Char('q')));
    let Mode::Quit(w) = &a.mode else { panic!("the quit question") };
    assert!(w.iter().any(|l| l.contains("in-process task(s) shop stop")), "{w:?}");
    // A rollback this console asked a node for, still running: quitting stops it.
    let mut asked = App::new(Theme::default_theme());
    let mut busy = here.clone();
    busy.label = "http://127.0.0.1:7400".into();
    busy.acting = vec!["the rollback of shop".into()];
    asked.refresh(vec![busy], NOW);
    asked.on_key(key(KeyCode::Char('q')));
    let Mode::Quit(w) = &asked.mode else { panic!("the quit question") };
    assert!(w.iter().any(|l| l.contains("the rollback of shop, asked from this console, is still running")), "{w:?}");
    // Watching a node whose tasks run, nothing frozen: quitting changes nothing there.
    here.label = "http://127.0.0.1:7400".into();
    let mut b = App::new(Theme::default_theme());
    b.refresh(vec![here], NOW);
    assert_eq!(b.on_key(key(KeyCode::Char('q'))), Outcome::Quit);
}

/// A node that died 27 s ago after streaming, and one that refuses the console's token.
fn dead_nodes_app() -> App {
    let mut died = healthy_node();
    died.last_ok_us = Some(NOW - 27_000_000);
    died.error = Some("node http://127.0.0.1:7400: unreachable: connection refused".into());
    let mut refused = NodeFeed::new("http://10.0.0.7:7400");
    refused.error = Some("node http://10.0.0.7:7400: /api/v1/overview: HTTP 401: unauthorized: bad token".into());
    refused.token_rejected = true;
    let mut a = App::new(Theme::builtin("dark").expect("built-in theme"));
    a.refresh(vec![died, refused], NOW);
    a
}

#[test]
fn stale_values_are_greyed_with_their_age_and_a_rejected_token_is_said() {
    let mut a = dead_nodes_app();
    let stale = a.theme.colors.stale;
    for (w, h) in [(80, 24), (120, 36)] {
        let t = draw(&a, w, h);
        let screen = format!("{}", t.backend());
        assert!(screen.contains("stale 27s"), "{w}x{h}:\n{screen}");
        assert!(!screen.contains("streaming  "), "no live-looking state:\n{screen}");
        assert!(screen.contains("token rejected; not retrying"), "{w}x{h}:\n{screen}");
        let buf = t.backend().buffer();
        let (x, y) = find(buf, "7.50s");
        assert_eq!(buf[(x, y)].fg, stale, "{w}x{h}: a stale lag is grey");
    }
    snapshot_at_both_sizes("overview_stale", &a);
    a.screen = Screen::Task;
    let screen = format!("{}", draw(&a, 120, 36).backend());
    assert!(screen.contains("STALE: values 27s old"), "{screen}");
    snapshot_at_both_sizes("task_stale", &a);
}

#[test]
fn a_stale_nodes_cutover_says_how_old_its_values_are() {
    let mut a = cutover_app();
    a.nodes[0].last_ok_us = Some(NOW - 27_000_000);
    a.nodes[0].error = Some("node http://127.0.0.1:7400: unreachable: connection refused".into());
    let screen = format!("{}", draw(&a, 80, 24).backend());
    assert!(screen.contains("Cutover of task shop STALE 27s"), "{screen}");
}

#[test]
fn header_shows_the_role_and_tls_state() {
    let a = with_access(app("dark"), crate::config::Role::Viewer);
    for (w, h) in [(80, 24), (120, 36)] {
        let t = draw(&a, w, h);
        let top: String = (0..w).map(|x| t.backend().buffer()[(x, 0)].symbol().to_string()).collect();
        assert!(top.contains("viewer https"), "{w}x{h}: {top}");
        let bottom: String = (0..w).map(|x| t.backend().buffer()[(x, h - 1)].symbol().to_string()).collect();
        assert!(!bottom.contains("pause"), "a viewer is not offered pause/resume: {bottom}");
        insta::assert_snapshot!(format!("role_header_{w}x{h}"), t.backend());
    }
}

#[test]
fn a_viewer_is_not_offered_actions_and_an_operator_not_admin_ones() {
    use crate::config::Role;
    let mut a = with_access(app("dark"), Role::Viewer);
    assert_eq!(a.on_key(key(KeyCode::Char('p'))), Outcome::None, "a viewer cannot pause");
    assert!(a.status.as_deref().is_some_and(|s| s.contains("needs the operator role")), "{:?}", a.status);
    a.screen = Screen::Verify;
    a.on_key(key(KeyCode::Char('R')));
    assert_eq!(a.mode, Mode::Normal, "no confirmation dialog for a repair the role cannot do");
    assert!(a.status.as_deref().is_some_and(|s| s.contains("needs the admin role")), "{:?}", a.status);

    let mut a = with_access(app("dark"), Role::Operator);
    assert!(matches!(a.on_key(key(KeyCode::Char('p'))), Outcome::Send(0, Request::Pause(_))), "an operator pauses");
    a.screen = Screen::Verify;
    a.on_key(key(KeyCode::Char('R')));
    assert_eq!(a.mode, Mode::Normal, "repair needs admin");
    for c in ":freeze a".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    a.on_key(key(KeyCode::Enter));
    assert_eq!(a.mode, Mode::Normal, "freeze needs admin: {:?}", a.status);

    let mut a = with_access(app("dark"), Role::Admin);
    a.screen = Screen::Verify;
    a.on_key(key(KeyCode::Char('R')));
    assert!(matches!(a.mode, Mode::Confirm(_)), "an admin is asked to confirm the repair");
}

/// A two-way task whose sides' clocks are too far apart: the Overview's alert line and
/// State column, the Task screen's head and its message with the fix.
#[test]
fn clock_skew_alarm_and_pause_are_shown_on_overview_and_task() {
    use crate::engine::clock::SkewLevel;
    let skewed = |a: &mut App, level: SkewLevel, state: DirectionState| {
        if let Some(t) = a.nodes[0].overview.as_mut().map(|o| &mut o.tasks[0]) {
            for (i, d) in t.directions.iter_mut().enumerate() {
                d.state = state.clone();
                d.clock_offset_seconds = Some(if i == 0 { 0.0 } else { 3.1 });
                d.clock_skew_seconds = Some(if i == 0 { -3.1 } else { 3.1 });
                d.clock_skew = level;
                d.clock_message = Some(
                    "task shop: the clocks of b and a are 3.10 s apart (b ahead); last-writer-wins compares them\n  fix: synchronise both servers' clocks"
                        .into(),
                );
            }
        }
    };
    let mut a = app("dark");
    skewed(&mut a, SkewLevel::Alarm, DirectionState::Streaming);
    let screen = format!("{}", draw(&a, 120, 36).backend());
    assert!(screen.contains("shop: clock skew 3.10 s (clock_skew_alarm)"), "{screen}");
    skewed(&mut a, SkewLevel::Paused, DirectionState::ClockSkew);
    let screen = format!("{}", draw(&a, 120, 36).backend());
    assert!(screen.contains("shop PAUSED: clock skew 3.10 s"), "{screen}");
    assert!(screen.contains("a->b       clock skew"), "the State column: {screen}");
    a.screen = Screen::Task;
    let screen = format!("{}", draw(&a, 160, 40).backend());
    assert!(screen.contains("clock skew -3.10s") && screen.contains("clock skew +3.10s"), "{screen}");
    assert_eq!(screen.matches("the clocks of b and a").count(), 1, "said once for the task: {screen}");
    assert!(screen.contains("fix: synchronise both servers' clocks"), "{screen}");
}

/// Tests of issue 22 (messages, scrolling, line editing, logs, sorting).
mod habits;
/// Tests of issue 22 (snapshot progress, row versions, skip, the node's log lines).
mod operator_views;

/// The healthy node in a cluster of three: one node gone, a paused direction, one whose
/// owner is gone, and two moves seen.
fn cluster_app() -> App {
    use crate::cluster::ClusterView;
    use crate::cluster::lease::LeaseRecord;
    use crate::cluster::members::Member;
    let member = |id: &str, site: &str, seen_ago_s: i64, tasks: &[&str]| Member {
        id: id.into(),
        site: Some(site.into()),
        version: "0.1.0".into(),
        listen: "10.0.2.11:7400".into(),
        started_us: NOW - 3 * 3_600_000_000,
        last_seen_us: NOW - seen_ago_s * 1_000_000,
        tasks: tasks.iter().map(|t| t.to_string()).collect(),
        unreachable: Vec::new(),
    };
    let owner = |task: &str, node: &str, since_s: i64, fencing: u64, paused: bool| LeaseRecord {
        task: task.into(),
        from: "a".into(),
        to: "b".into(),
        node: node.into(),
        site: Some("dc-b".into()),
        since_us: NOW - since_s * 1_000_000,
        fencing,
        paused,
    };
    let view = ClusterView {
        nats: "nats://ferry:***@nats-1:4222".into(),
        nodes: vec![
            member("dc-b-1", "dc-b", 1, &["shop a->b", "crm a->b"]),
            member("dc-b-2", "dc-b", 2, &["billing a->b"]),
            member("dc-a-1", "dc-a", 40, &["audit a->b"]),
        ],
        owners: vec![
            owner("shop", "dc-b-1", 30, 812, false),
            owner("crm", "dc-b-1", 600, 95, true),
            owner("billing", "dc-b-2", 8, 1_204, false),
            owner("audit", "dc-a-1", 7200, 12, false),
        ],
    };
    let mut feed = healthy_node();
    let mut before = view.clone();
    before.owners[0].node = "dc-a-1".into();
    before.owners.remove(2);
    feed.absorb_cluster(Some(before), NOW - 30_000_000);
    feed.absorb_cluster(Some(view), NOW - 29_000_000);
    let mut a = App::new(Theme::builtin("dark").expect("built-in theme"));
    a.refresh(vec![feed, stale_node()], NOW);
    a
}

#[test]
fn cluster_screen() {
    let mut a = cluster_app();
    a.screen = Screen::Cluster;
    snapshot_at_both_sizes("cluster", &a);
}

#[test]
fn the_cluster_tab_shows_only_in_a_cluster_and_moves_are_noted() {
    let mut plain = app("dark");
    assert_eq!(plain.tabs().len(), 6);
    plain.on_key(key(KeyCode::Char('7')));
    assert_eq!(plain.screen, Screen::Overview, "no Cluster tab outside a cluster");

    let mut a = cluster_app();
    assert_eq!(a.tabs().last(), Some(&Screen::Cluster));
    a.on_key(key(KeyCode::Char('7')));
    assert_eq!(a.screen, Screen::Cluster);
    a.on_key(key(KeyCode::Tab));
    assert_eq!(a.screen, Screen::Overview, "Tab wraps from Cluster to Overview");
    a.command("cluster");
    assert_eq!(a.screen, Screen::Cluster);
    let moves: Vec<(String, Option<String>, Option<String>)> =
        a.nodes[0].moves.iter().map(|m| (m.direction.clone(), m.from.clone(), m.to.clone())).collect();
    assert_eq!(
        moves,
        vec![
            ("billing a->b".to_string(), None, Some("dc-b-2".to_string())),
            ("shop a->b".to_string(), Some("dc-a-1".to_string()), Some("dc-b-1".to_string())),
        ]
    );
    let text = format!("{}", draw(&a, 120, 36).backend());
    assert!(text.contains("gone") && text.contains("paused") && text.contains("owner gone"), "{text}");
}
