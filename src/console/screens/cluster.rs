//! Cluster: every node of the cluster (id, site, version, uptime, last seen, directions
//! run; a node that stopped renewing its record shows as gone), who owns each direction,
//! and the directions the console saw move between nodes. Read from whichever connected
//! node is in a cluster: each sees all of it.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget};

use super::{age_text, block, clock, plural};
use crate::console::app::App;

/// A node whose record is older than this shows as gone (the ownership loop's measure).
const GONE_AFTER_US: i64 = 15_000_000;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((feed, view)) = app.cluster() else {
        Paragraph::new(Span::styled(
            "No connected node is in a cluster ([cluster] in its task file, docs/cluster.md).",
            app.theme.muted(),
        ))
        .block(block(app, "Cluster", true))
        .render(area, buf);
        return;
    };
    let now = app.now_us;
    let nodes_h = (view.nodes.len() as u16 + 3).min(area.height / 2).max(4);
    let moves_h = (feed.moves.len() as u16 + 2).clamp(3, 8);
    let [nodes_area, owners_area, moves_area] =
        Layout::vertical([Constraint::Length(nodes_h), Constraint::Min(4), Constraint::Length(moves_h)]).areas(area);

    let gone = |last_seen_us: i64| now.saturating_sub(last_seen_us) > GONE_AFTER_US;
    let rows: Vec<Row> = view
        .nodes
        .iter()
        .map(|n| {
            let state = if gone(n.last_seen_us) {
                Span::styled("gone", app.theme.warn())
            } else {
                Span::styled("up", app.theme.ok())
            };
            Row::new(vec![
                Cell::from(n.id.clone()),
                Cell::from(n.site.clone().unwrap_or_else(|| "-".into())),
                Cell::from(n.version.clone()),
                Cell::from(age_text(n.last_seen_us, n.started_us)),
                Cell::from(format!("{} ago", age_text(now, n.last_seen_us))),
                Cell::from(n.tasks.len().to_string()),
                Cell::from(state),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(12),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(4),
    ];
    let header = Row::new(["Node", "Site", "Version", "Up", "Seen", "Dirs", ""]).style(app.theme.header());
    let title = format!("Nodes ({}) over {}, as {} sees them", view.nodes.len(), view.nats, feed.name());
    Table::new(rows, widths).header(header).column_spacing(1).block(block(app, &title, false)).render(nodes_area, buf);

    let rows: Vec<Row> = view
        .owners
        .iter()
        .map(|o| {
            let owner_gone = view.nodes.iter().find(|n| n.id == o.node).is_none_or(|n| gone(n.last_seen_us));
            let state = if o.paused {
                Span::styled("paused", app.theme.warn())
            } else if owner_gone {
                Span::styled("owner gone", app.theme.warn())
            } else {
                Span::styled("running", app.theme.ok())
            };
            Row::new(vec![
                Cell::from(format!("{} {}->{}", o.task, o.from, o.to)),
                Cell::from(o.node.clone()),
                Cell::from(o.site.clone().unwrap_or_else(|| "-".into())),
                Cell::from(format!("{} ago", age_text(now, o.since_us))),
                Cell::from(o.token().map_or_else(|| "-".to_string(), |t| t.to_string())),
                Cell::from(state),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(16),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
    ];
    let header = Row::new(["Direction", "Owner", "Site", "Since", "Fencing", "State"]).style(app.theme.header());
    let title = format!("Owners ({})", plural(view.owners.len(), "direction", "directions"));
    Table::new(rows, widths).header(header).column_spacing(1).block(block(app, &title, false)).render(owners_area, buf);

    let lines: Vec<Line> = if feed.moves.is_empty() {
        vec![Line::from(Span::styled("no direction moved since the console started", app.theme.muted()))]
    } else {
        feed.moves
            .iter()
            .rev()
            .map(|m| {
                Line::from(vec![
                    Span::styled(format!("{} ", clock(m.at_us)), app.theme.muted()),
                    Span::raw(format!("{}: ", m.direction)),
                    Span::styled(
                        format!("{} -> {}", m.from.as_deref().unwrap_or("(none)"), m.to.as_deref().unwrap_or("(none)")),
                        app.theme.accent(),
                    ),
                ])
            })
            .collect()
    };
    Paragraph::new(lines).block(block(app, "Moves", false)).render(moves_area, buf);
}
