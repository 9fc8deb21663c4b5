//! Overview: every direction of every task on every node, with lag, throughput trend,
//! last verify and conflicts; below, each node's reachability.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget};

use super::{age_text, block, clock, count_text, lag_text, rate_text, sparkline};
use crate::console::app::App;
use crate::console::source::NodeFeed;
use crate::engine::clock::SkewLevel;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let node_lines = (app.nodes.len() as u16).clamp(1, 4) + 2;
    let alerts = alerts(app);
    let alert_lines = (alerts.len() as u16).min(3);
    let [alert_area, table_area, nodes_area] =
        Layout::vertical([Constraint::Length(alert_lines), Constraint::Min(4), Constraint::Length(node_lines)])
            .areas(area);
    Paragraph::new(alerts).render(alert_area, buf);
    render_table(app, table_area, buf);
    render_nodes(app, nodes_area, buf);
}

/// What an operator must not miss, above everything else: frozen endpoints (application
/// writes are refused there), two-way tasks whose sides' clocks are too far apart
/// (alarm, or applying paused), and cutovers under way or stopped on a failure.
fn alerts(app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for n in &app.nodes {
        let Some(o) = &n.overview else { continue };
        let mut parts = Vec::new();
        for e in &o.endpoints {
            if let Some(since) = e.frozen_since_us {
                parts.push(format!("{} FROZEN for {}", e.name, age_text(app.now_us, since)));
            }
        }
        for t in &o.tasks {
            // The two directions of a two-way task show the same skew, signs reversed.
            let skew = t
                .directions
                .iter()
                .filter(|d| matches!(d.clock_skew, SkewLevel::Alarm | SkewLevel::Paused))
                .max_by_key(|d| d.clock_skew == SkewLevel::Paused);
            if let Some(d) = skew {
                let size = d.clock_skew_seconds.map(|s| format!("{:.2} s", s.abs())).unwrap_or_else(|| "?".into());
                parts.push(match d.clock_skew {
                    SkewLevel::Paused => format!("{} PAUSED: clock skew {size} (clock_skew_pause)", t.name),
                    _ => format!("{}: clock skew {size} (clock_skew_alarm)", t.name),
                });
            }
            if let Some(c) = t.cutover.as_ref().filter(|c| c.in_progress() || c.last_error.is_some()) {
                parts.push(format!("cutover of {} ({}->{}): {}", t.name, c.from, c.to, c.describe()));
            }
        }
        if parts.is_empty() {
            continue;
        }
        let style = if n.stale(app.now_us) { app.theme.stale() } else { app.theme.warn() };
        lines.push(Line::from(vec![
            Span::styled(format!("⚠ {}: {}", n.name(), parts.join("; ")), style),
            Span::styled("  (6)", app.theme.muted()),
        ]));
    }
    lines
}

/// Version, uptime, the console's role on the node and the link's TLS state:
/// `v0.1.0 up 3h admin https`.
fn node_facts(app: &App, n: &NodeFeed) -> Vec<Span<'static>> {
    let mut facts = Vec::new();
    if let Some(o) = n.overview.as_ref().filter(|o| !o.version.is_empty()) {
        facts.push(format!("v{}", o.version));
    }
    if let Some(since) = n.overview.as_ref().and_then(|o| o.started_us) {
        facts.push(format!("up {}", age_text(app.now_us, since)));
    }
    if let Some(a) = &n.access {
        let link = match a.tls {
            Some(true) => "https",
            Some(false) => "http",
            None => "in-process",
        };
        facts.push(format!("{} {link}", crate::node::auth::role_name(a.role)));
    }
    if facts.is_empty() {
        return Vec::new();
    }
    vec![Span::styled(format!("  {}", facts.join("  ")), app.theme.muted())]
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
    // The sorted column is marked (`s` cycles).
    let header = Row::new(["Node", "Task", "Dir", "State", "Lag", "Rows/s", "Trend", "Verify", "Confl"].map(|h| {
        if h == app.sort.column() && app.sort != crate::console::app::SortBy::Node {
            format!("{h}▼")
        } else {
            h.to_string()
        }
    }))
    .style(app.theme.header());
    // Every trend on one scale: the highest rate any row shows.
    let trend_max = app
        .nodes
        .iter()
        .flat_map(|n| n.history.values())
        .flat_map(|h| h.rate.iter().rev().take(trend_w as usize).map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let rows: Vec<Row> = app
        .rows()
        .into_iter()
        .map(|r| {
            let node = &app.nodes[r.node];
            let stale = node.stale(app.now_us);
            let (mark, node_style) = if stale { ("✖ ", app.theme.stale()) } else { ("● ", app.theme.ok()) };
            let node_cell = Cell::from(Span::styled(format!("{mark}{}", node.name()), node_style));
            let (Some(t), d) = (app.task_of(r), app.direction_of(r)) else {
                let what = match (stale, node.token_rejected) {
                    (_, true) if wide => "token rejected",
                    (_, true) => "rejected",
                    (true, false) => "stale",
                    (false, false) => "no tasks",
                };
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
                .map(|h| sparkline(h.rate.iter().map(|(_, v)| *v), trend_w as usize, Some(trend_max)))
                .unwrap_or_default();
            let verify = t.last_verify.as_ref().map(|v| v.state.clone()).unwrap_or_else(|| "-".into());
            let conflicts = d.map(|d| d.conflicts_total).unwrap_or(0);
            // A node that stopped answering keeps its last values, greyed, its state
            // replaced by how old they are: nothing of it may look live.
            let grey = |live: Style| if stale { app.theme.stale() } else { live };
            let state = if stale { stale_state(app, node) } else { state };
            Row::new(vec![
                node_cell,
                Cell::from(Span::styled(t.name.clone(), grey(Style::default()))),
                Cell::from(Span::styled(d.map(|d| d.direction.clone()).unwrap_or_default(), grey(Style::default()))),
                Cell::from(Span::styled(state, grey(state_style))),
                Cell::from(Span::styled(lag_text(lag), grey(app.theme.lag(lag)))),
                Cell::from(Span::styled(
                    rate_text(d.map(|d| d.rows_per_sec[0]).unwrap_or(0.0)),
                    grey(Style::default()),
                )),
                Cell::from(Span::styled(trend, grey(app.theme.chart_rate()))),
                Cell::from(Span::styled(verify, grey(Style::default()))),
                Cell::from(Span::styled(
                    count_text(conflicts),
                    grey(if conflicts > 0 { app.theme.warn() } else { app.theme.muted() }),
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

/// The State cell of a node that stopped answering: `stale 27s`, or `token rejected`.
fn stale_state(app: &App, node: &NodeFeed) -> String {
    if node.token_rejected {
        return "token rejected".into();
    }
    let age = node.last_ok_us.map(|t| age_text(app.now_us, t)).unwrap_or_else(|| "?".into());
    format!("stale {age}")
}

fn render_nodes(app: &App, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = app
        .nodes
        .iter()
        .map(|n| {
            if n.token_rejected {
                Line::from(vec![
                    Span::styled(format!("✖ {} token rejected; not retrying", n.name()), app.theme.stale()),
                    Span::styled(
                        ": pass a valid --token (or FERRY_TOKEN) and start the console again",
                        app.theme.muted(),
                    ),
                ])
            } else if n.stale(app.now_us) {
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
                    .filter_map(|e| Some(format!("{} (for {})", e.name, age_text(app.now_us, e.frozen_since_us?))))
                    .collect();
                let mut spans = vec![
                    Span::styled(format!("● {}", n.name()), app.theme.ok()),
                    Span::styled(
                        format!("  {}  {}", n.label, super::plural(tasks, "task", "tasks")),
                        app.theme.muted(),
                    ),
                ];
                if !frozen.is_empty() {
                    spans.push(Span::styled(format!("  frozen: {}", frozen.join(", ")), app.theme.warn()));
                }
                spans.extend(node_facts(app, n));
                Line::from(spans)
            }
        })
        .collect();
    Paragraph::new(lines).block(block(app, "Nodes", false)).render(area, buf);
}
