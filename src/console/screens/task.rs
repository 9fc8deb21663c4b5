//! Task detail: lag and throughput over the last 10 minutes, counters per direction
//! and conflicts per table, recent errors with their fix hints, the newest conflicts.

use std::collections::BTreeMap;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph, Row, Table, Widget, Wrap};

use super::{block, clock, lag_text, rate_text, selected_or_hint};
use crate::config::Mode as TaskMode;
use crate::console::app::App;
use crate::console::source::{HISTORY_SECONDS, NodeFeed};
use crate::control::TaskView;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((node, task)) = selected_or_hint(app, "Task", area, buf) else {
        return;
    };
    let head_h = (task.directions.len().min(20) as u16).saturating_add(1);
    let rest = area.height.saturating_sub(head_h);
    let chart_h = (rest / 2).max(5);
    let [head, charts, bottom] =
        Layout::vertical([Constraint::Length(head_h), Constraint::Length(chart_h), Constraint::Min(3)]).areas(area);
    render_head(app, node, task, head, buf);
    let [lag_area, rate_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    render_chart(app, node, task, lag_area, buf, true);
    render_chart(app, node, task, rate_area, buf, false);
    let [left, right] = Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(bottom);
    render_counters(app, node, task, left, buf);
    render_errors_and_conflicts(app, node, task, right, buf);
}

fn render_head(app: &App, node: &NodeFeed, task: &TaskView, area: Rect, buf: &mut Buffer) {
    let arrow = if task.mode == TaskMode::TwoWay { "⇄" } else { "→" };
    let mut title = vec![
        Span::styled(format!("Task {} ", task.name), app.theme.title()),
        Span::raw(format!("{}{arrow}{}  on {}", task.from, task.to, node.name())),
    ];
    if task.paused {
        title.push(Span::styled("  PAUSED", app.theme.warn()));
    }
    if node.stale(app.now_us) {
        title.push(Span::styled("  stale", app.theme.stale()));
    }
    let mut lines = vec![Line::from(title)];
    for d in &task.directions {
        lines.push(Line::from(vec![
            Span::raw(format!("  {:<8} ", d.direction)),
            Span::styled(format!("{:<16}", d.state.to_string()), app.theme.state(&d.state, task.paused)),
            Span::raw(" lag "),
            Span::styled(format!("{:<8}", lag_text(d.lag_seconds)), app.theme.lag(d.lag_seconds)),
            Span::raw(format!(
                " {} rows/s (10s {}, 60s {})  behind {}  at {}",
                rate_text(d.rows_per_sec[0]),
                rate_text(d.rows_per_sec[1]),
                rate_text(d.rows_per_sec[2]),
                d.changes_behind,
                d.position.as_deref().unwrap_or("-")
            )),
        ]));
    }
    Paragraph::new(lines).render(area, buf);
}

fn render_chart(app: &App, node: &NodeFeed, task: &TaskView, area: Rect, buf: &mut Buffer, lag: bool) {
    let styles = [if lag { app.theme.chart_lag() } else { app.theme.chart_rate() }, app.theme.accent()];
    let series: Vec<(String, Vec<(f64, f64)>)> = task
        .directions
        .iter()
        .map(|d| {
            let points = node
                .history
                .get(&NodeFeed::history_key(&task.name, &d.direction))
                .map(|h| {
                    let src = if lag { &h.lag } else { &h.rate };
                    src.iter()
                        .map(|(t, v)| {
                            ((t.saturating_sub(app.now_us) as f64 / 1e6).max(-(HISTORY_SECONDS as f64)), finite(*v))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (d.direction.clone(), points)
        })
        .collect();
    let max = series.iter().flat_map(|(_, p)| p.iter().map(|(_, v)| *v)).fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let datasets: Vec<Dataset> = series
        .iter()
        .enumerate()
        .map(|(i, (name, points))| {
            Dataset::default()
                .name(name.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(styles.get(i).copied().unwrap_or(Style::new()))
                .data(points)
        })
        .collect();
    let (title, label) =
        if lag { ("Lag, last 10 min", lag_text(Some(top))) } else { ("Rows/s, last 10 min", rate_text(top)) };
    let chart = Chart::new(datasets)
        .block(block(app, title, false))
        .x_axis(
            Axis::default()
                .bounds([-(HISTORY_SECONDS as f64), 0.0])
                .labels([Span::styled("-10m", app.theme.muted()), Span::styled("now", app.theme.muted())])
                .style(app.theme.muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels([Span::styled("0", app.theme.muted()), Span::styled(label, app.theme.muted())])
                .style(app.theme.muted()),
        );
    chart.render(area, buf);
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v.max(0.0) } else { 0.0 }
}

fn render_counters(app: &App, node: &NodeFeed, task: &TaskView, area: Rect, buf: &mut Buffer) {
    let header = Row::new(["Dir", "Changes", "Txns", "Snap", "Confl", "Errors"]).style(app.theme.header());
    let mut rows: Vec<Row> = task
        .directions
        .iter()
        .map(|d| {
            Row::new(vec![
                d.direction.clone(),
                d.changes_total.to_string(),
                d.txns_total.to_string(),
                d.snapshot_rows_total.to_string(),
                d.conflicts_total.to_string(),
                d.errors_total.to_string(),
            ])
        })
        .collect();
    let mut by_table: BTreeMap<&str, u64> = BTreeMap::new();
    for c in node.conflicts.iter().filter(|c| c.task == task.name) {
        *by_table.entry(c.table.as_str()).or_default() += 1;
    }
    // Per-table figures the node serves: conflicts in the targets' logs, by table.
    for (table, n) in by_table {
        rows.push(
            Row::new(vec![format!("⚑ {table}"), String::new(), String::new(), String::new(), n.to_string()])
                .style(app.theme.muted()),
        );
    }
    let widths = [
        Constraint::Min(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(6),
    ];
    Table::new(rows, widths).header(header).block(block(app, "Counters", false)).render(area, buf);
}

fn render_errors_and_conflicts(app: &App, node: &NodeFeed, task: &TaskView, area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line> = Vec::new();
    for d in &task.directions {
        if let Some(e) = &d.last_error {
            for (i, l) in e.lines().enumerate() {
                let style = if i == 0 { app.theme.error() } else { app.theme.warn() };
                let text = if i == 0 { format!("{}: {l}", d.direction) } else { l.to_string() };
                lines.push(Line::from(Span::styled(text, style)));
            }
        }
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("no errors", app.theme.ok())));
    }
    let logged = node.conflicts.iter().filter(|c| c.task == task.name).count();
    let conflicts: Vec<_> = node.conflicts.iter().filter(|c| c.task == task.name).take(8).collect();
    lines.push(Line::from(Span::styled(format!("Newest conflicts ({logged} read)"), app.theme.header())));
    if conflicts.is_empty() {
        lines.push(Line::from(Span::styled("none", app.theme.muted())));
    }
    for c in conflicts {
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", clock(c.detected_us)), app.theme.muted()),
            Span::raw(format!("{} {} key {} won: {} ({})", c.direction, c.table, c.key, c.winner, c.policy)),
        ]));
    }
    Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(app, "Errors and conflicts", false)).render(area, buf);
}
