//! Verify: start a verify of the selected task (v), follow its per-table progress and
//! differences, and apply its repair plan behind a typed confirmation (R). Confirmed and
//! transient differences are shown apart (transient ones healed while verify waited for
//! replication), and the direction checked is named: a two-way task has two.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget};

use super::{block, count_text, selected_or_hint};
use crate::config::Mode as TaskMode;
use crate::console::app::App;

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { 0 } else { ((done.min(total) as f64 / total as f64) * width as f64).round() as usize };
    format!("{}{}", "█".repeat(filled), "░".repeat(width.saturating_sub(filled)))
}

/// What "transient" means, shown wherever a transient count is.
const TRANSIENT: &str = "transient: equal on re-check after replication caught up; not a difference";

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((node, task)) = selected_or_hint(app, "Verify", area, buf) else {
        return;
    };
    let progress = node.verify.as_ref().filter(|p| p.task == task.name);
    let report_h = (area.height.saturating_sub(6) / 2).max(4);
    let [head, table_area, report_area] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(3), Constraint::Length(report_h)]).areas(area);
    let last = match &task.last_verify {
        Some(v) => format!("last verify {}: {} ({} confirmed differences)", v.id, v.state, v.differences),
        None => "no verify recorded for this task".into(),
    };
    // The run checks its task's current direction: from is the source of truth.
    let direction = progress
        .map(|p| p.direction.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| format!("{}->{}", task.from, task.to));
    let source = direction.split("->").next().unwrap_or_default().to_string();
    let two_way = if task.mode == TaskMode::TwoWay { "two-way, " } else { "" };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("Verify {} ", task.name), app.theme.title()),
            Span::raw(format!("on {}  {two_way}checks {direction} (source of truth: {source})", node.name())),
        ]),
        Line::from(Span::styled(last, app.theme.muted())),
    ];
    let finished = progress.is_some_and(|p| p.state != "running");
    lines.push(match progress {
        Some(p) if !finished => Line::from(vec![
            Span::raw(format!("run {}: ", p.id)),
            Span::styled(p.state.clone(), app.theme.accent()),
            Span::raw(format!(", {} found so far; each is re-checked once replication caught up", p.differences)),
        ]),
        Some(p) => Line::from(vec![
            Span::raw(format!("run {}: ", p.id)),
            Span::styled(
                format!("{}, {} confirmed", p.state, p.differences),
                if p.differences > 0 || p.state == "failed" { app.theme.error() } else { app.theme.ok() },
            ),
            Span::styled(
                format!(", {} transient, {} unsettled", p.transient, p.unsettled),
                if p.unsettled > 0 { app.theme.warn() } else { app.theme.muted() },
            ),
        ]),
        None => Line::from(Span::styled("press v to start a verify, R to repair what it found", app.theme.muted())),
    });
    if progress.is_some() {
        lines.push(Line::from(Span::styled(TRANSIENT, app.theme.muted())));
    }
    Paragraph::new(lines).render(head, buf);

    let rows: Vec<Row> = progress
        .map(|p| {
            p.tables
                .iter()
                .map(|t| {
                    let bad = if t.differences > 0 { app.theme.error() } else { app.theme.ok() };
                    let (transient, unsettled) = if finished {
                        (count_text(t.transient), count_text(t.unsettled))
                    } else {
                        ("-".to_string(), "-".to_string())
                    };
                    Row::new(vec![
                        Cell::from(t.table.clone()),
                        Cell::from(Span::styled(bar(t.chunks_done, t.chunks_total, 20), app.theme.chart_rate())),
                        Cell::from(format!("{}/{}", t.chunks_done, t.chunks_total)),
                        Cell::from(Span::styled(count_text(t.differences), bad)),
                        Cell::from(Span::styled(transient, app.theme.muted())),
                        Cell::from(Span::styled(unsettled, app.theme.muted())),
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    // While running, a difference is only found: the re-checks at the end confirm it.
    let first = if finished { "Confirmed" } else { "Found" };
    let widths = [
        Constraint::Min(12),
        Constraint::Length(21),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    Table::new(rows, widths)
        .header(Row::new(["Table", "Progress", "Chunks", first, "Transient", "Unsettled"]).style(app.theme.header()))
        .block(block(app, "Tables", true))
        .render(table_area, buf);

    let report = progress.and_then(|p| p.report.clone()).unwrap_or_else(|| "no report yet".into());
    let lines = wrap(&report, report_area.width.saturating_sub(2) as usize);
    let total = lines.len();
    let inner_h = report_area.height.saturating_sub(2) as usize;
    let top = app.verify_scroll.min(total.saturating_sub(inner_h));
    let title = if total > inner_h {
        format!("Report, lines {}-{} of {total} (PgUp/PgDn)", top + 1, (top + inner_h).min(total))
    } else {
        "Report".to_string()
    };
    let shown: Vec<Line> = lines.into_iter().skip(top).take(inner_h).map(Line::from).collect();
    Paragraph::new(shown).style(app.theme.text()).block(block(app, &title, false)).render(report_area, buf);
}

/// The report's lines cut to `width` characters each (continuations indented), so that
/// scrolling counts the lines on screen.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut out = Vec::new();
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        if chars.len() <= width {
            out.push(line.to_string());
            continue;
        }
        out.push(chars[..width].iter().collect());
        for part in chars[width..].chunks(width - 4) {
            out.push(format!("    {}", part.iter().collect::<String>()));
        }
    }
    out
}
