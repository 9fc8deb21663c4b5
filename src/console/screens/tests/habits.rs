//! Issue 22: a wrapping message area and its history, every pane scrolling with an
//! indicator, line editing with completion and history, the footer per screen, the
//! Log view, sorting, drill-down with breadcrumbs, the config editor asking first.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{app, cutover_app, draw, key, snapshot_at_both_sizes};
use crate::console::app::{Mode, Outcome, Screen, SortBy};
use crate::console::source::Request;
use crate::store::AuditEntry;

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn typed(a: &mut crate::console::app::App, s: &str) {
    for c in s.chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
}

fn screen_text(a: &crate::console::app::App, w: u16, h: u16) -> String {
    let t = draw(a, w, h);
    let buf = t.backend().buffer().clone();
    (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n").collect()
}

const PARSE_ERROR: &str = "not saved: task file ferry.toml: TOML parse error at line 12, column 7: invalid \
    string, expected `\"`; fix: quote the value (url = \"mysql://…\") and save again with Ctrl-S";

#[test]
fn long_messages_wrap_in_the_message_area_and_m_lists_them_all() {
    let mut a = app("dark");
    a.status = Some(PARSE_ERROR.into());
    a.note_status();
    snapshot_at_both_sizes("message_area", &a);
    let text = screen_text(&a, 80, 24);
    assert!(text.contains("with Ctrl-S"), "the end of the message is on screen:\n{text}");
    a.status = None;
    a.on_key(key(KeyCode::Char('p')));
    a.on_key(key(KeyCode::Char('m')));
    assert!(a.show_messages);
    snapshot_at_both_sizes("message_history", &a);
    assert_eq!(a.messages.len(), 1, "p sent a request: no message of its own yet");
    a.on_key(key(KeyCode::Esc));
    assert!(!a.show_messages);
}

#[test]
fn the_cutover_steps_scroll_at_80x24_with_an_indicator() {
    let mut a = cutover_app();
    a.status = Some(PARSE_ERROR.into());
    let text = screen_text(&a, 80, 24);
    assert!(text.contains("↕"), "the steps say they scroll:\n{text}");
    assert!(!text.contains("freeze on b lifted"), "the last line is below:\n{text}");
    a.on_key(key(KeyCode::PageDown));
    a.on_key(key(KeyCode::PageDown));
    let text = screen_text(&a, 80, 24);
    assert!(text.contains("freeze on b lifted"), "PgDn reaches the last line:\n{text}");
    snapshot_at_both_sizes("cutover_scrolled", &a);
    a.on_key(key(KeyCode::PageUp));
    a.on_key(key(KeyCode::PageUp));
    assert_eq!(a.scroll, 0, "PgUp answers at once, never past the end");
}

#[test]
fn the_config_view_has_line_numbers_and_scrolls() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("ferry.toml");
    let mut text = String::from("[node]\nid = \"n\"\n");
    for i in 0..30 {
        text.push_str(&format!("\n[[endpoint]]\nname = \"e{i}\"\nurl = \"sqlite:///tmp/e{i}.db\"\n"));
    }
    std::fs::write(&path, &text).expect("write");
    let mut a = app("dark");
    a.config = Some(crate::console::app::ConfigView::open(path));
    // A stable title for the snapshots (the file lives in a temporary folder).
    if let Some(c) = a.config.as_mut() {
        c.path = "ferry.toml".into();
    }
    a.on_key(key(KeyCode::Char('5')));
    draw(&a, 80, 24);
    for _ in 0..3 {
        a.on_key(key(KeyCode::PageDown));
    }
    a.on_key(key(KeyCode::Char('j')));
    snapshot_at_both_sizes("config_scrolled", &a);
    a.on_key(key(KeyCode::Char('e')));
    snapshot_at_both_sizes("config_editing", &a);
}

#[test]
fn the_audit_detail_shows_in_full_and_scrolls() {
    let mut a = app("dark");
    let detail = serde_json::json!({
        "run": "v9", "task": "shop", "tables": (0..20).map(|i| format!("table_{i}")).collect::<Vec<_>>(),
        "note": "a long detail that the list cuts but the detail pane shows in full, wrapped"
    })
    .to_string();
    a.nodes[0].audit.insert(
        0,
        AuditEntry {
            at_us: super::NOW - 1_000_000,
            actor: "alice@dc-a-node".into(),
            action: "verify.start".into(),
            task: Some("shop".into()),
            detail,
        },
    );
    a.on_key(key(KeyCode::Char('4')));
    draw(&a, 80, 24);
    a.on_key(key(KeyCode::PageDown));
    snapshot_at_both_sizes("audit_detail", &a);
    a.on_key(key(KeyCode::Char('j')));
    assert_eq!((a.audit_scroll, a.scroll), (1, 0), "j selects the next entry, its detail from the top");
}

#[test]
fn the_conflict_list_scrolls_and_filters_by_table() {
    let mut a = app("dark");
    a.on_key(key(KeyCode::Char(':')));
    typed(&mut a, "conflicts ord");
    a.on_key(key(KeyCode::Tab));
    assert_eq!(a.palette.text(), "conflicts orders ");
    a.on_key(key(KeyCode::Enter));
    assert_eq!((a.screen, a.conflict_table.as_deref()), (Screen::Task, Some("orders")));
    snapshot_at_both_sizes("task_conflicts_of_a_table", &a);
}

#[test]
fn the_palette_edits_like_a_shell_completes_and_remembers() {
    let mut a = app("dark");
    a.on_key(key(KeyCode::Char(':')));
    typed(&mut a, "pause crm");
    a.on_key(ctrl('w'));
    assert_eq!(a.palette.text(), "pause ", "Ctrl-W deletes the word, inserts nothing");
    typed(&mut a, "sh");
    a.on_key(key(KeyCode::Tab));
    assert_eq!(a.palette.text(), "pause shop ");
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::Send(0, Request::Pause("shop".into())));
    a.on_key(key(KeyCode::Char(':')));
    typed(&mut a, "x");
    a.on_key(ctrl('u'));
    assert_eq!(a.palette.text(), "");
    a.on_key(key(KeyCode::Up));
    assert_eq!(a.palette.text(), "pause shop ", "↑ brings back the last command");
    a.on_key(key(KeyCode::Home));
    a.on_key(key(KeyCode::Right));
    a.on_key(key(KeyCode::Right));
    snapshot_at_both_sizes("palette_editing", &a);
    a.on_key(key(KeyCode::Esc));
    // Several candidates: the common prefix, and the list in the message area.
    a.on_key(key(KeyCode::Char(':')));
    typed(&mut a, "ver");
    a.on_key(key(KeyCode::Tab));
    assert_eq!(a.palette.text(), "verify");
    assert!(a.status.as_deref().is_some_and(|s| s.contains("verify-start")), "{:?}", a.status);
    a.on_key(key(KeyCode::Esc));
    // The filter edits the same way, and completes task names.
    a.on_key(key(KeyCode::Char('/')));
    typed(&mut a, "bil");
    a.on_key(key(KeyCode::Tab));
    assert_eq!(a.filter, "billing ");
    a.on_key(ctrl('w'));
    typed(&mut a, "cr");
    assert_eq!(a.filter, "cr");
    a.on_key(key(KeyCode::Enter));
    assert_eq!(a.rows().len(), 1);
}

#[test]
fn typed_confirmations_edit_too() {
    let mut a = app("dark");
    a.screen = Screen::Verify;
    a.on_key(key(KeyCode::Char('R')));
    typed(&mut a, "shopx");
    a.on_key(key(KeyCode::Backspace));
    a.on_key(ctrl('w'));
    typed(&mut a, "shop");
    assert_eq!(a.on_key(key(KeyCode::Enter)), Outcome::Send(0, Request::Repair("shop".into())));
}

#[test]
fn the_log_view_follows_searches_wraps_and_esc_goes_back_one_level() {
    let mut a = app("dark");
    // The console saw the task fail and be paused between two polls.
    let mut next = a.nodes.clone();
    if let Some(o) = next[0].overview.as_mut() {
        o.tasks[0].paused = true;
        o.tasks[0].directions[0].state = crate::engine::metrics::DirectionState::Retrying;
        o.tasks[0].directions[0].last_error = Some("endpoint b: connection refused\n  fix: start b".into());
    }
    a.refresh(next, super::NOW + 1_000_000);
    a.on_key(key(KeyCode::Enter));
    a.on_key(key(KeyCode::Char('l')));
    assert_eq!((a.screen, a.back.clone()), (Screen::Log, vec![Screen::Overview, Screen::Task]));
    snapshot_at_both_sizes("log", &a);
    let text = screen_text(&a, 80, 24);
    assert!(text.contains("Overview › Task › Log shop"), "breadcrumbs:\n{text}");
    assert!(text.contains("a->b: streaming -> retrying"), "{text}");
    a.on_key(key(KeyCode::Char('w')));
    a.on_key(key(KeyCode::Char('/')));
    typed(&mut a, "refused");
    a.on_key(key(KeyCode::Enter));
    assert_eq!((a.mode.clone(), a.log_search.text()), (Mode::Normal, "refused"));
    a.on_key(key(KeyCode::Char('f')));
    assert!(!a.log_follow);
    snapshot_at_both_sizes("log_search_wrapped", &a);
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.screen, Screen::Task, "Esc goes back one level");
    a.on_key(key(KeyCode::Esc));
    assert_eq!(a.screen, Screen::Overview);
}

#[test]
fn s_sorts_the_overview_by_the_next_column() {
    let mut a = app("dark");
    a.on_key(key(KeyCode::Char('s')));
    assert_eq!(a.sort, SortBy::Lag);
    let lag_first = a.rows().first().and_then(|r| a.task_of(*r)).map(|t| t.name.clone());
    assert_eq!(lag_first.as_deref(), Some("crm"), "45 s of lag first");
    a.status = None;
    snapshot_at_both_sizes("overview_sorted_by_lag", &a);
    a.on_key(key(KeyCode::Char('s')));
    a.on_key(key(KeyCode::Char('s')));
    assert_eq!(a.sort, SortBy::State);
    let first = a.rows().first().and_then(|r| a.direction_of(*r)).map(|d| d.state.to_string());
    assert_eq!(first.as_deref(), Some("failed"));
}

#[test]
fn the_footer_follows_the_screen() {
    let mut a = app("dark");
    for (k, wants) in [('6', "n next step"), ('3', "R repair"), ('5', "e edit"), ('4', "j/k select")] {
        a.on_key(key(KeyCode::Char(k)));
        let text = screen_text(&a, 120, 36);
        assert!(text.lines().last().is_some_and(|l| l.contains(wants)), "{k}: {wants}\n{text}");
    }
}

#[test]
fn trends_share_one_scale_and_counts_say_one_node() {
    assert_eq!(super::super::sparkline([14.0, 14.0].into_iter(), 2, Some(14_000.0)), "▁▁");
    assert_eq!(super::super::sparkline([14.0, 14.0].into_iter(), 2, None), "██");
    assert_eq!(super::super::plural(1, "node", "nodes"), "1 node");
    let mut a = app("dark");
    a.nodes.truncate(1);
    assert!(screen_text(&a, 120, 36).contains("1 node "));
}
