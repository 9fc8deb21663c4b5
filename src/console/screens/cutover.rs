//! Cutover wizard: the selected task's cutover steps with their checks and durations,
//! live lag and pending changes, the frozen endpoints; `n` runs the next step, `b` rolls
//! back (freeze, switch and rollback ask for the task's name). A cutover left half-way
//! shows where it stopped and `n` resumes it.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::{age_text, block, lag_text, scrolled, selected_or_hint};
use crate::console::app::{App, KeyPlan, wizard_keys};

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((node, task)) = selected_or_hint(app, "Cutover", area, buf) else {
        return;
    };
    let Some(view) = node.cutover.as_ref().filter(|v| v.task == task.name) else {
        Paragraph::new(Span::styled(format!("reading the cutover of task {} ...", task.name), app.theme.muted()))
            .block(block(app, "Cutover", true))
            .render(area, buf);
        return;
    };
    let [head, steps_area] = Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(area);
    let live = &view.live;
    // A node that stopped answering: its last live values, greyed, with their age.
    let stale = node.stale(app.now_us);
    let grey = |live: ratatui::style::Style| if stale { app.theme.stale() } else { live };
    let mut first = vec![
        Span::styled(format!("Cutover of task {} ", view.task), app.theme.title()),
        Span::styled(format!("on {}  direction {}  lag ", node.name(), live.direction), grey(Default::default())),
        Span::styled(lag_text(live.lag_seconds), grey(app.theme.lag(live.lag_seconds))),
        Span::styled(
            format!("  changes pending {}", live.changes_pending.map(|n| n.to_string()).unwrap_or_else(|| "-".into())),
            grey(Default::default()),
        ),
    ];
    if stale {
        let age = node.last_ok_us.map(|t| age_text(app.now_us, t)).unwrap_or_else(|| "?".into());
        first.insert(1, Span::styled(format!("STALE {age} "), app.theme.stale()));
    }
    let mut lines = vec![Line::from(first)];
    let frozen: Vec<String> =
        live.frozen.iter().map(|(ep, since)| format!("{ep} (for {})", age_text(app.now_us, *since))).collect();
    lines.push(Line::from(Span::styled(
        if frozen.is_empty() { "no endpoint frozen".to_string() } else { format!("frozen: {}", frozen.join(", ")) },
        if frozen.is_empty() { app.theme.muted() } else { app.theme.warn() },
    )));
    lines.push(match &view.state {
        None => Line::from(Span::styled("no cutover started", app.theme.muted())),
        Some(s) if s.step.terminal() => Line::from(Span::styled(format!("cutover {}", s.step), app.theme.ok())),
        Some(s) => match (&s.running, &s.last_error) {
            (Some(r), _) => Line::from(Span::styled(
                format!("step {} running (pid {} on {}); if that process is gone, n resumes it", r.step, r.pid, r.host),
                app.theme.warn(),
            )),
            (None, Some(e)) => Line::from(Span::styled(format!("step {} failed: {e}", s.step), app.theme.error())),
            (None, None) => Line::from(Span::raw(format!("next step: {}", s.step))),
        },
    });
    // What each key does now: the same plan the keys run.
    let (n, b) = wizard_keys(view);
    for (key, plan) in [("n", n), ("b", b)] {
        lines.push(match plan {
            KeyPlan::Run { hint, confirm, .. } => Line::from(vec![
                Span::styled(hint, app.theme.accent()),
                Span::styled(if confirm.is_some() { " [type name]" } else { "" }, app.theme.muted()),
            ]),
            KeyPlan::Refuse(why) => {
                Line::from(Span::styled(format!("{key}: nothing to run ({why})"), app.theme.muted()))
            }
        });
    }
    Paragraph::new(lines).render(head, buf);

    let mut body: Vec<Line> = Vec::new();
    for (i, step) in view.steps.iter().enumerate() {
        let style = match step.state.as_str() {
            "done" => app.theme.ok(),
            "failed" => app.theme.error(),
            "running" | "next" => app.theme.accent(),
            _ => app.theme.muted(),
        };
        let took = step.millis.map(|ms| format!("  {:.2}s", ms as f64 / 1000.0)).unwrap_or_default();
        let confirm = if step.confirm { "  (typed confirmation)" } else { "" };
        body.push(Line::from(vec![
            Span::styled(format!("{}. {:<28}", i + 1, step.title), style),
            Span::styled(format!("{:<8}", step.state), style),
            Span::styled(took, app.theme.text()),
            Span::styled(confirm, app.theme.muted()),
        ]));
        // What the step saw when it last ran, else what it will check.
        let record = view.state.as_ref().and_then(|s| s.history.iter().rev().find(|r| r.step == step.step));
        match record {
            Some(r) => {
                for c in &r.checks {
                    let mark = if c.ok { app.theme.ok() } else { app.theme.error() };
                    body.push(Line::from(vec![
                        Span::styled(if c.ok { "     ok " } else { "     !! " }, mark),
                        Span::raw(format!("{}: {}", c.name, c.seen)),
                    ]));
                }
            }
            None => {
                for c in &step.checks {
                    body.push(Line::from(Span::styled(format!("      - {c}"), app.theme.muted())));
                }
            }
        }
    }
    // At 80x24 the steps do not fit: the pane scrolls (PgUp/PgDn) and says where it is.
    scrolled(app, body, steps_area, buf, block(app, "Steps", true), app.scroll, true, true);
}
