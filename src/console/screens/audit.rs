//! Audit log: every action, newest first, from every node; the filter applies. `j`/`k`
//! select an entry; its detail shows in full below, wrapped and scrolling.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, StatefulWidget, Table, TableState};

use super::{block, clock, plural, scrolled};
use crate::console::app::App;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let f = app.filter.to_lowercase();
    let mut entries: Vec<(&str, &crate::store::AuditEntry)> = app
        .nodes
        .iter()
        .flat_map(|n| n.audit.iter().map(move |e| (n.name(), e)))
        .filter(|(node, e)| {
            f.is_empty()
                || format!("{node} {} {} {} {}", e.actor, e.action, e.task.as_deref().unwrap_or(""), e.detail)
                    .to_lowercase()
                    .contains(&f)
        })
        .collect();
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.at_us));
    let total = entries.len();
    let selected = app.audit_scroll.min(total.saturating_sub(1));
    let detail_h = (area.height / 3).max(5);
    let [list_area, detail_area] = Layout::vertical([Constraint::Min(4), Constraint::Length(detail_h)]).areas(area);
    let rows: Vec<Row> = entries
        .iter()
        .map(|(node, e)| {
            Row::new(vec![
                Cell::from(Span::styled(clock(e.at_us), app.theme.muted())),
                Cell::from(node.to_string()),
                Cell::from(e.actor.clone()),
                Cell::from(Span::styled(e.action.clone(), app.theme.accent())),
                Cell::from(e.task.clone().unwrap_or_else(|| "-".into())),
                Cell::from(e.detail.replace('\n', " ")),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(16),
        Constraint::Length(16),
        Constraint::Length(8),
        Constraint::Min(10),
    ];
    let header = Row::new(["Time", "Node", "Actor", "Action", "Task", "Detail"]).style(app.theme.header());
    let title = format!(
        "Audit log ({}{}) j/k select",
        plural(total, "entry", "entries"),
        if f.is_empty() { String::new() } else { format!(", /{f}") }
    );
    let mut state = TableState::default().with_selected(if total > 0 { Some(selected) } else { None });
    Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(app.theme.selected())
        .block(block(app, &title, false))
        .render(list_area, buf, &mut state);
    let lines: Vec<Line> = match entries.get(selected) {
        None => vec![Line::from(Span::styled("no entry", app.theme.muted()))],
        Some((node, e)) => {
            let mut l = vec![Line::from(vec![
                Span::styled(format!("{} ", clock(e.at_us)), app.theme.muted()),
                Span::styled(e.action.clone(), app.theme.accent()),
                Span::raw(format!(" by {} on {node}, task {}", e.actor, e.task.as_deref().unwrap_or("-"))),
            ])];
            // The detail in full (often JSON): pretty when it parses, else as it is.
            let detail = serde_json::from_str::<serde_json::Value>(&e.detail)
                .ok()
                .filter(|v| v.is_object() || v.is_array())
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| e.detail.clone());
            l.extend(detail.lines().map(|s| Line::from(s.to_string())));
            l
        }
    };
    scrolled(app, lines, detail_area, buf, block(app, "Detail", true), app.scroll, true, true);
}
