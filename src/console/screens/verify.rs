//! Verify: start a verify of the selected task (v), follow its per-table progress and
//! differences, and apply its repair plan behind a typed confirmation (R).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget, Wrap};

use super::{block, selected_or_hint};
use crate::console::app::App;

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { 0 } else { ((done.min(total) as f64 / total as f64) * width as f64).round() as usize };
    format!("{}{}", "█".repeat(filled), "░".repeat(width.saturating_sub(filled)))
}

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((node, task)) = selected_or_hint(app, "Verify", area, buf) else {
        return;
    };
    let progress = node.verify.as_ref().filter(|p| p.task == task.name);
    let [head, table_area, report_area] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(3), Constraint::Length(6)]).areas(area);
    let last = match &task.last_verify {
        Some(v) => format!("last verify {}: {} ({} differences)", v.id, v.state, v.differences),
        None => "no verify recorded for this task".into(),
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("Verify task {} ", task.name), app.theme.title()),
            Span::raw(format!("on {}", node.name())),
        ]),
        Line::from(Span::styled(last, app.theme.muted())),
    ];
    lines.push(match progress {
        Some(p) => Line::from(vec![
            Span::raw(format!("run {}: ", p.id)),
            Span::styled(p.state.clone(), if p.differences > 0 { app.theme.error() } else { app.theme.ok() }),
            Span::raw(format!(", {} differences", p.differences)),
        ]),
        None => Line::from(Span::styled("press v to start a verify, R to repair what it found", app.theme.muted())),
    });
    Paragraph::new(lines).render(head, buf);

    let rows: Vec<Row> = progress
        .map(|p| {
            p.tables
                .iter()
                .map(|t| {
                    Row::new(vec![
                        Cell::from(t.table.clone()),
                        Cell::from(Span::styled(bar(t.chunks_done, t.chunks_total, 20), app.theme.chart_rate())),
                        Cell::from(format!("{}/{}", t.chunks_done, t.chunks_total)),
                        Cell::from(Span::styled(
                            t.differences.to_string(),
                            if t.differences > 0 { app.theme.error() } else { app.theme.ok() },
                        )),
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    let widths = [Constraint::Length(20), Constraint::Length(21), Constraint::Length(12), Constraint::Min(6)];
    Table::new(rows, widths)
        .header(Row::new(["Table", "Progress", "Chunks", "Differences"]).style(app.theme.header()))
        .block(block(app, "Tables", true))
        .render(table_area, buf);
    let report = progress.and_then(|p| p.report.clone()).unwrap_or_else(|| "no report yet".into());
    Paragraph::new(report)
        .wrap(Wrap { trim: false })
        .style(app.theme.text())
        .block(block(app, "Report", false))
        .render(report_area, buf);
}
