//! Audit log: every action, newest first, from every node; the filter applies.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table, Widget};

use super::{block, clock};
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
    let skip = app.audit_scroll.min(total.saturating_sub(1));
    let rows: Vec<Row> = entries
        .into_iter()
        .skip(skip)
        .map(|(node, e)| {
            Row::new(vec![
                Cell::from(Span::styled(clock(e.at_us), app.theme.muted())),
                Cell::from(node.to_string()),
                Cell::from(e.actor.clone()),
                Cell::from(Span::styled(e.action.clone(), app.theme.accent())),
                Cell::from(e.task.clone().unwrap_or_else(|| "-".into())),
                Cell::from(e.detail.clone()),
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
    let title = format!("Audit log ({total} entries{})", if f.is_empty() { String::new() } else { format!(", /{f}") });
    Table::new(rows, widths).header(header).column_spacing(1).block(block(app, &title, true)).render(area, buf);
}
