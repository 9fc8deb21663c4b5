//! Log view (`l`): what happened to the selected task (or node), oldest first: what the
//! console saw change between polls (states, pauses, errors, the node going stale),
//! the node's audit entries and logged conflicts, and the node process's own log lines
//! (`GET /api/v1/logs`). `f` follows the newest line, `w`
//! wraps, `/` searches (matching lines highlighted, the first match brought in sight).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{block, clock, scrolled};
use crate::console::app::App;

/// One line of the log before it is drawn.
struct Entry {
    at_us: i64,
    kind: &'static str,
    text: String,
    error: bool,
}

/// The kind column of a node log line: `log` and its level.
fn level_kind(level: &str) -> &'static str {
    match level {
        "ERROR" => "log err",
        "WARN" => "log warn",
        "DEBUG" | "TRACE" => "log dbg",
        _ => "log",
    }
}

/// Whether a log line is about task `t`: it names it as a word (`direction=t:a->b`,
/// `task=t`), not inside another name.
fn names(message: &str, t: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    message.match_indices(t).any(|(i, _)| {
        let before = message[..i].chars().next_back();
        let after = message[i + t.len()..].chars().next();
        before.is_none_or(|c| !word(c)) && after.is_none_or(|c| !word(c))
    })
}

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(row) = app.selected_row() else {
        scrolled(app, vec![Line::from("nothing selected")], area, buf, block(app, "Log", true), 0, false, true);
        return;
    };
    let node = &app.nodes[row.node];
    let task = app.task_of(row).map(|t| t.name.as_str());
    let mut entries: Vec<Entry> = Vec::new();
    for e in app.events.iter().filter(|e| e.node == node.name() && (task.is_none() || e.task.as_deref() == task)) {
        entries.push(Entry { at_us: e.at_us, kind: "event", text: e.text.clone(), error: e.error });
    }
    for a in node.audit.iter().filter(|a| task.is_none() || a.task.as_deref() == task) {
        entries.push(Entry {
            at_us: a.at_us,
            kind: "audit",
            text: format!("{} by {}: {}", a.action, a.actor, a.detail.replace('\n', " ")),
            error: false,
        });
    }
    for c in node.conflicts.iter().filter(|c| task.is_none_or(|t| c.task == t)) {
        entries.push(Entry {
            at_us: c.detected_us,
            kind: "conflict",
            text: format!(
                "{} {} key {}: {} kept ({}; incoming from {}, local from {})",
                c.direction, c.table, c.key, c.winner, c.policy, c.incoming_site, c.local_site
            ),
            error: false,
        });
    }
    // The node process's own log lines: all of them on a node's row, those naming the
    // task on a task's.
    for l in node.logs.iter().filter(|l| task.is_none_or(|t| names(&l.message, t))) {
        let error = matches!(l.level.as_str(), "ERROR" | "WARN");
        entries.push(Entry { at_us: l.at_us, kind: level_kind(&l.level), text: l.message.clone(), error });
    }
    entries.sort_by_key(|e| e.at_us);
    let search = app.log_search.text().to_lowercase();
    let mut first_match = None;
    let lines: Vec<Line> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let hit = !search.is_empty() && e.text.to_lowercase().contains(&search);
            if hit && first_match.is_none() {
                first_match = Some(i);
            }
            let style = if hit {
                app.theme.selected()
            } else if e.error {
                app.theme.error()
            } else {
                app.theme.text()
            };
            Line::from(vec![
                Span::styled(format!("{} ", clock(e.at_us)), app.theme.muted()),
                Span::styled(format!("{:<8} ", e.kind), app.theme.accent()),
                Span::styled(e.text.clone(), style),
            ])
        })
        .collect();
    let what = match task {
        Some(t) => format!("task {t} on {}", node.name()),
        None => format!("node {}", node.name()),
    };
    let mut flags = vec![if app.log_follow { "following" } else { "f: follow" }];
    if app.log_wrap {
        flags.push("wrapped");
    }
    let found = if search.is_empty() {
        String::new()
    } else {
        let n = entries.iter().filter(|e| e.text.to_lowercase().contains(&search)).count();
        format!(", /{search}: {n} found")
    };
    let title = format!("Log of {what} ({}{found})", flags.join(", "));
    let lines = if lines.is_empty() { vec![Line::from(Span::styled("nothing yet", app.theme.muted()))] } else { lines };
    // Follow: the newest line in sight; a search brings its first match in sight.
    let scroll = if app.log_follow {
        usize::MAX
    } else if app.scroll == 0 {
        first_match.unwrap_or(0)
    } else {
        app.scroll
    };
    scrolled(app, lines, area, buf, block(app, &title, true), scroll, app.log_wrap, true);
}
