//! Task detail: lag and throughput over the last 10 minutes, counters per direction
//! and conflicts per table, recent errors with their fix hints, the newest conflicts.

use std::collections::BTreeMap;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, LegendPosition, Paragraph, Row, Table, Widget};

use super::{block, clock, count_text, lag_text, plural, rate_text, scrolled, selected_or_hint};
use crate::config::Mode as TaskMode;
use crate::console::app::App;
use crate::console::source::{HISTORY_SECONDS, NodeFeed};
use crate::control::TaskView;
use crate::engine::clock::SkewLevel;
use crate::engine::copy_progress::{CopyState, TableCopy};
use crate::engine::metrics::size_text;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((node, task)) = selected_or_hint(app, "Task", area, buf) else {
        return;
    };
    let head_h = (task.directions.len().min(20) as u16).saturating_add(1);
    let copies = copy_rows(task);
    // The snapshot pane while a table is still to copy: a line per table, up to a third
    // of the screen (the rest say how many more).
    let copy_h = if copies.iter().any(|(_, c)| c.state != CopyState::Done) {
        (copies.len() as u16).min(area.height / 3).max(1) + 2
    } else {
        0
    };
    let rest = area.height.saturating_sub(head_h + copy_h);
    let chart_h = (rest / 2).max(5);
    let [head, copy, charts, bottom] = Layout::vertical([
        Constraint::Length(head_h),
        Constraint::Length(copy_h),
        Constraint::Length(chart_h),
        Constraint::Min(3),
    ])
    .areas(area);
    render_head(app, node, task, head, buf);
    if copy_h > 0 {
        render_copy(app, task, &copies, copy, buf);
    }
    let [lag_area, rate_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    render_chart(app, node, task, lag_area, buf, true);
    render_chart(app, node, task, rate_area, buf, false);
    let [left, right] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    render_counters(app, task, left, buf);
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
    let stale = node.stale(app.now_us);
    if stale {
        let age = node.last_ok_us.map(|t| super::age_text(app.now_us, t)).unwrap_or_else(|| "?".into());
        title.push(Span::styled(format!("  STALE: values {age} old, greyed"), app.theme.stale()));
    }
    let grey = |live: Style| if stale { app.theme.stale() } else { live };
    let mut lines = vec![Line::from(title)];
    for d in &task.directions {
        // Two-way: the skew last-writer-wins is off by (else the source's offset from
        // ferry's clock), once measured.
        let clock = match (d.clock_skew_seconds, d.clock_offset_seconds) {
            (Some(s), _) => Some(format!("  clock skew {s:+.2}s")),
            (None, Some(o)) => Some(format!("  clock {o:+.2}s")),
            (None, None) => None,
        };
        let clock_style = match d.clock_skew {
            SkewLevel::Paused => app.theme.error(),
            SkewLevel::Alarm => app.theme.warn(),
            _ => app.theme.muted(),
        };
        let clock = clock.map(|c| Span::styled(c, grey(clock_style)));
        let kept = d.retained_bytes.map(|b| {
            let style = if d.retention_alarm { app.theme.warn() } else { Style::default() };
            let alarm = if d.retention_alarm { " ALARM" } else { "" };
            Span::styled(format!("  source keeps {}{alarm}", size_text(b)), grey(style))
        });
        lines.push(Line::from_iter(
            [
                Span::styled(format!("  {:<8} ", d.direction), grey(Style::default())),
                Span::styled(format!("{:<16}", d.state.to_string()), grey(app.theme.state(&d.state, task.paused))),
                Span::styled(" lag ", grey(Style::default())),
                Span::styled(format!("{:<8}", lag_text(d.lag_seconds)), grey(app.theme.lag(d.lag_seconds))),
                Span::styled(
                    format!(
                        " {} rows/s (10s {}, 60s {})  {} changes behind  at {}",
                        rate_text(d.rows_per_sec[0]),
                        rate_text(d.rows_per_sec[1]),
                        rate_text(d.rows_per_sec[2]),
                        d.changes_behind.map_or("-".to_string(), count_text),
                        d.position.as_deref().unwrap_or("-")
                    ),
                    grey(Style::default()),
                ),
            ]
            .into_iter()
            .chain(clock)
            .chain(kept),
        ));
    }
    Paragraph::new(lines).render(area, buf);
}

/// Every table of the task's snapshots with its direction: being copied first, then
/// those waiting, then those done.
fn copy_rows(task: &TaskView) -> Vec<(&str, &TableCopy)> {
    let mut rows: Vec<(&str, &TableCopy)> =
        task.directions.iter().flat_map(|d| d.snapshot_tables.iter().map(move |t| (d.direction.as_str(), t))).collect();
    let order = |c: &TableCopy| match c.state {
        CopyState::Copying => 0,
        CopyState::Pending => 1,
        CopyState::Done => 2,
    };
    rows.sort_by_key(|(_, c)| order(c));
    rows
}

/// A duration left for people: `45s`, `12m30s`, `3h05m`.
fn eta_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

/// Snapshot progress per table: a gauge of rows copied of the source's estimate, the
/// rate and the time left.
fn render_copy(app: &App, task: &TaskView, copies: &[(&str, &TableCopy)], area: Rect, buf: &mut Buffer) {
    let done = copies.iter().filter(|(_, c)| c.state == CopyState::Done).count();
    let two = task.directions.len() > 1;
    let name_w = copies.iter().map(|(_, c)| c.table.chars().count()).max().unwrap_or(0).min(24);
    let bar_w = (area.width as usize).saturating_sub(name_w + if two { 9 } else { 0 } + 50).clamp(6, 30);
    let visible = area.height.saturating_sub(2) as usize;
    let mut lines: Vec<Line> = Vec::new();
    for (i, (dir, c)) in copies.iter().enumerate() {
        if i + 1 == visible && copies.len() > visible {
            lines.push(Line::from(Span::styled(format!("  … {} more tables", copies.len() - i), app.theme.muted())));
            break;
        }
        let name: String = c.table.chars().take(name_w).collect();
        let mut spans = vec![Span::raw(format!("  {name:<name_w$} "))];
        if two {
            spans.push(Span::styled(format!("{dir:<8} "), app.theme.muted()));
        }
        let est = c.rows_estimated.map(|e| format!(" of ~{}", count_text(e))).unwrap_or_default();
        match c.state {
            CopyState::Pending => {
                spans.push(Span::styled(format!("waiting{}", est.replace(" of ", ", ")), app.theme.muted()));
            }
            CopyState::Done => {
                spans.push(Span::styled(format!("done, {} rows copied", count_text(c.rows_copied)), app.theme.ok()));
            }
            CopyState::Copying => {
                // Past the estimate (it is a guess) the gauge stays full, and says so.
                let share = c.rows_estimated.filter(|e| *e > 0).map(|e| (c.rows_copied as f64 / e as f64).min(1.0));
                let filled = share.map_or(0, |s| (s * bar_w as f64).round() as usize);
                spans.push(Span::styled("█".repeat(filled), app.theme.chart_rate()));
                spans.push(Span::styled("░".repeat(bar_w - filled), app.theme.muted()));
                let pct = share.map_or("  ?".to_string(), |s| format!("{:>3.0}%", s * 100.0));
                let rate = c.rows_per_sec.map_or(String::new(), |r| format!("  {}/s", rate_text(r)));
                let eta = c.eta_seconds.map_or(String::new(), |e| format!("  ETA {}", eta_text(e)));
                spans.push(Span::raw(format!(" {pct}  {}{est}{rate}{eta}", count_text(c.rows_copied))));
            }
        }
        lines.push(Line::from(spans));
    }
    let title = format!(
        "Snapshot: {done} of {} copied (rows of the source's estimate)",
        plural(copies.len(), "table", "tables")
    );
    Paragraph::new(lines).block(block(app, &title, false)).render(area, buf);
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
    // The legend sits top left: the newest points are on the right, at "now".
    let chart = Chart::new(datasets)
        .legend_position(Some(LegendPosition::TopLeft))
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

fn render_counters(app: &App, task: &TaskView, area: Rect, buf: &mut Buffer) {
    const HEADER: [&str; 6] = ["Dir", "Changes", "Txns", "Snapshot", "Conflicts", "Errors"];
    let header = Row::new(HEADER).style(app.theme.header());
    let cells: Vec<Vec<String>> = task
        .directions
        .iter()
        .map(|d| {
            vec![
                d.direction.clone(),
                count_text(d.changes_total),
                count_text(d.txns_total),
                count_text(d.snapshot_rows_total),
                count_text(d.conflicts_total),
                count_text(d.errors_total),
            ]
        })
        .collect();
    // Each number column as wide as its widest value: digits are never cut.
    let width =
        |i: usize| cells.iter().map(|c| c[i].chars().count()).chain([HEADER[i].len()]).max().unwrap_or(0) as u16;
    let widths = [
        Constraint::Min(6),
        Constraint::Length(width(1)),
        Constraint::Length(width(2)),
        Constraint::Length(width(3)),
        Constraint::Length(width(4)),
        Constraint::Length(width(5)),
    ];
    let rows: Vec<Row> = cells.into_iter().map(Row::new).collect();
    Table::new(rows, widths).header(header).block(block(app, "Totals since the task started", false)).render(area, buf);
}

fn render_errors_and_conflicts(app: &App, node: &NodeFeed, task: &TaskView, area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line> = Vec::new();
    let mut shown: Vec<&str> = Vec::new();
    for d in &task.directions {
        // Both directions of a task carry the same skew message: say it once.
        if let Some(m) = d.clock_message.as_deref().filter(|m| !shown.contains(m)) {
            shown.push(m);
            for (i, l) in m.lines().enumerate() {
                let style =
                    if d.clock_skew == SkewLevel::Paused && i == 0 { app.theme.error() } else { app.theme.warn() };
                let text = if i == 0 { format!("{}: {l}", d.direction) } else { l.to_string() };
                lines.push(Line::from(Span::styled(text, style)));
            }
        }
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
    // Per-table figures the node serves: conflicts in the targets' logs, by table. They
    // count the newest entries read, not every conflict: the label says so.
    let mut by_table: BTreeMap<&str, u64> = BTreeMap::new();
    for c in node.conflicts.iter().filter(|c| c.task == task.name) {
        *by_table.entry(c.table.as_str()).or_default() += 1;
    }
    if !by_table.is_empty() {
        let per: Vec<String> = by_table.iter().map(|(t, n)| format!("{t} {}", count_text(*n))).collect();
        lines.push(Line::from(vec![
            Span::styled("Logged conflicts by table: ", app.theme.header()),
            Span::raw(per.join(", ")),
        ]));
    }
    // Every conflict read, newest first, scrolling; `:conflicts TABLE` keeps one table.
    let table = app.conflict_table.as_deref();
    let conflicts: Vec<_> =
        node.conflicts.iter().filter(|c| c.task == task.name && table.is_none_or(|t| c.table == t)).collect();
    lines.push(Line::from(Span::styled(
        format!(
            "Conflicts, newest first ({}{})",
            plural(conflicts.len(), "entry read", "entries read"),
            table.map(|t| format!(", table {t}; :conflicts shows all")).unwrap_or_default()
        ),
        app.theme.header(),
    )));
    if conflicts.is_empty() {
        lines.push(Line::from(Span::styled("none", app.theme.muted())));
    }
    for c in conflicts {
        // Both sides: where each version was written, and which one the policy kept.
        let (won, lost) = if c.winner == "incoming" {
            (c.incoming_site.as_str(), c.local_site.as_str())
        } else {
            (c.local_site.as_str(), c.incoming_site.as_str())
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", clock(c.detected_us)), app.theme.muted()),
            Span::raw(format!("{} {} key {}: ", c.direction, c.table, c.key)),
            Span::styled(format!("{won} won"), app.theme.ok()),
            Span::styled(format!(" over {lost}"), app.theme.warn()),
            Span::styled(format!(" ({}, {} kept)", c.policy, c.winner), app.theme.muted()),
        ]));
    }
    scrolled(app, lines, area, buf, block(app, "Errors and conflicts", true), app.scroll, true, true);
}
