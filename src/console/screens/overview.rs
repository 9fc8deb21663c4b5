//! Overview: every direction of every task on every node, with lag, throughput trend,
//! last verify and conflicts; below, each node's reachability.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget};

use super::{age_text, block, clock, lag_text, rate_text, sparkline};
use crate::console::app::App;
use crate::console::source::NodeFeed;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let node_lines = (app.nodes.len() as u16).clamp(1, 4) + 2;
    let [table_area, nodes_area] = Layout::vertical([Constraint::Min(4), Constraint::Length(node_lines)]).areas(area);
    render_table(app, table_area, buf);
    render_nodes(app, nodes_area, buf);
}

fn render_table(app: &App, area: Rect, buf: &mut Buffer) {
    let wide = area.width >= 110;
    let trend_w: u16 = if wide { 24 } else { 8 };
    let widths = [
        Constraint::Length(if wide { 16 } else { 11 }),
        Constraint::Length(if wide { 16 } else { 9 }),
        Constraint::Length(if wide { 10 } else { 5 }),
        Constraint::Length(if wide { 18 } else { 10 }),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(trend_w),
        Constraint::Length(if wide { 12 } else { 9 }),
        Constraint::Min(4),
    ];
    let header = Row::new(["Node", "Task", "Dir", "State", "Lag", "Rows/s", "Trend", "Verify", "Confl"])
        .style(app.theme.header());
    let rows: Vec<Row> = app
        .rows()
        .into_iter()
        .map(|r| {
            let node = &app.nodes[r.node];
            let stale = node.stale(app.now_us);
            let (mark, node_style) = if stale { ("✖ ", app.theme.stale()) } else { ("● ", app.theme.ok()) };
            let node_cell = Cell::from(Span::styled(format!("{mark}{}", node.name()), node_style));
            let (Some(t), d) = (app.task_of(r), app.direction_of(r)) else {
                let what = if stale { "stale" } else { "no tasks" };
                return Row::new(vec![node_cell, Cell::from(Span::styled(what, app.theme.muted()))]);
            };
            let state = match d {
                Some(_) if t.paused => "paused".to_string(),
                Some(d) => d.state.to_string(),
                None => "no directions".into(),
            };
            let state_style = d.map(|d| app.theme.state(&d.state, t.paused)).unwrap_or(app.theme.muted());
            let lag = d.and_then(|d| d.lag_seconds);
            let trend = d
                .and_then(|d| node.history.get(&NodeFeed::history_key(&t.name, &d.direction)))
                .map(|h| sparkline(h.rate.iter().map(|(_, v)| *v), trend_w as usize))
                .unwrap_or_default();
            let verify = t.last_verify.as_ref().map(|v| v.state.clone()).unwrap_or_else(|| "-".into());
            let conflicts = d.map(|d| d.conflicts_total).unwrap_or(0);
            Row::new(vec![
                node_cell,
                Cell::from(t.name.clone()),
                Cell::from(d.map(|d| d.direction.clone()).unwrap_or_default()),
                Cell::from(Span::styled(state, if stale { app.theme.stale() } else { state_style })),
                Cell::from(Span::styled(lag_text(lag), app.theme.lag(lag))),
                Cell::from(rate_text(d.map(|d| d.rows_per_sec[0]).unwrap_or(0.0))),
                Cell::from(Span::styled(trend, app.theme.chart_rate())),
                Cell::from(verify),
                Cell::from(Span::styled(
                    conflicts.to_string(),
                    if conflicts > 0 { app.theme.warn() } else { app.theme.muted() },
                )),
            ])
        })
        .collect();
    let title = if app.filter.is_empty() { "Tasks".to_string() } else { format!("Tasks /{}", app.filter) };
    let empty = rows.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(app.theme.selected())
        .block(block(app, &title, true));
    let mut state = TableState::default().with_selected(Some(app.selected));
    StatefulWidget::render(table, area, buf, &mut state);
    if empty {
        let msg = if app.nodes.is_empty() { "connecting…" } else { "no task matches the filter" };
        let inner = Rect { x: area.x + 2, y: area.y + 2, width: area.width.saturating_sub(4), height: 1 };
        if area.height > 3 {
            Paragraph::new(Span::styled(msg, app.theme.muted())).render(inner, buf);
        }
    }
}

fn render_nodes(app: &App, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = app
        .nodes
        .iter()
        .map(|n| {
            if n.stale(app.now_us) {
                let seen = match n.last_ok_us {
                    Some(t) => format!("last seen {} ({} ago)", clock(t), age_text(app.now_us, t)),
                    None => "never reached".into(),
                };
                let why = n.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                Line::from(vec![
                    Span::styled(format!("✖ {} stale, {seen}; reconnecting", n.name()), app.theme.stale()),
                    Span::styled(why, app.theme.muted()),
                ])
            } else {
                let tasks = n.overview.as_ref().map(|o| o.tasks.len()).unwrap_or(0);
                let frozen: Vec<String> = n
                    .overview
                    .iter()
                    .flat_map(|o| &o.endpoints)
                    .filter(|e| e.frozen_since_us.is_some())
                    .map(|e| e.name.clone())
                    .collect();
                let mut spans = vec![
                    Span::styled(format!("● {}", n.name()), app.theme.ok()),
                    Span::styled(format!("  {}  {tasks} task(s)", n.label), app.theme.muted()),
                ];
                if !frozen.is_empty() {
                    spans.push(Span::styled(format!("  frozen: {}", frozen.join(", ")), app.theme.warn()));
                }
                Line::from(spans)
            }
        })
        .collect();
    Paragraph::new(lines).block(block(app, "Nodes", false)).render(area, buf);
}
