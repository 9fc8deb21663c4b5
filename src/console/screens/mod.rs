//! Drawing: the frame (tabs, footer, overlays) around the current screen. Pure: reads
//! the [`App`], writes a buffer, never changes state or does I/O.

mod audit;
mod config;
mod cutover;
mod overview;
mod task;
mod verify;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget, Wrap};

use super::app::{App, Mode, Screen};

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        buf.set_style(area, self.theme.text());
        let [tabs, body, footer] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(area);
        render_tabs(self, tabs, buf);
        match self.screen {
            Screen::Overview => overview::render(self, body, buf),
            Screen::Task => task::render(self, body, buf),
            Screen::Verify => verify::render(self, body, buf),
            Screen::Audit => audit::render(self, body, buf),
            Screen::Config => config::render(self, body, buf),
            Screen::Cutover => cutover::render(self, body, buf),
        }
        render_footer(self, footer, buf);
        if self.help {
            render_help(self, area, buf);
        }
        if let Mode::Confirm(c) = &self.mode {
            let text = vec![
                Line::from(Span::styled(c.prompt.clone(), self.theme.warn())),
                Line::from(vec![Span::raw("> "), Span::styled(c.typed.clone(), self.theme.accent())]),
                Line::from(Span::styled("Enter confirms, Esc cancels", self.theme.muted())),
            ];
            popup(self, area, buf, "Confirm", text, 60, 5);
        }
    }
}

fn render_tabs(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans = vec![Span::styled(" ferry ", app.theme.title())];
    for (i, s) in Screen::ALL.iter().enumerate() {
        let current = *s == app.screen;
        let style = if current { app.theme.selected() } else { app.theme.muted() };
        // Narrow terminals name only the current tab, so the clock keeps its place.
        let tab = if current || area.width >= 100 { format!("{} {}", i + 1, s.title()) } else { format!("{}", i + 1) };
        spans.push(Span::styled(tab, style));
        spans.push(Span::raw(" "));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
    let stale = app.nodes.iter().filter(|n| n.stale(app.now_us)).count();
    let mut right = vec![Span::styled(format!("{} nodes", app.nodes.len()), app.theme.muted())];
    if stale > 0 {
        right.push(Span::styled(format!(" {stale} stale"), app.theme.stale()));
    }
    let zone = if area.width >= 100 { " UTC" } else { "" };
    right.push(Span::styled(format!(" {}{zone} ", clock(app.now_us)), app.theme.muted()));
    Paragraph::new(Line::from(right)).alignment(ratatui::layout::Alignment::Right).render(area, buf);
}

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let line = match &app.mode {
        Mode::Filter => Line::from(vec![Span::styled("/", app.theme.accent()), Span::raw(app.filter.clone())]),
        Mode::Palette => Line::from(vec![Span::styled(":", app.theme.accent()), Span::raw(app.palette.clone())]),
        Mode::Edit => hints(app, &[("Ctrl-S", "validate+save"), ("Esc", "discard")]),
        _ => match &app.status {
            Some(s) if s.starts_with("error") || s.contains("not available") || s.starts_with("no ") => {
                Line::from(Span::styled(s.clone(), app.theme.error()))
            }
            Some(s) => Line::from(Span::styled(s.clone(), app.theme.ok())),
            None => hints(
                app,
                &[
                    ("?", "help"),
                    (":", "command"),
                    ("/", "filter"),
                    ("⏎", "open"),
                    ("p/r", "pause/resume"),
                    ("q", "quit"),
                ],
            ),
        },
    };
    Paragraph::new(line).render(area, buf);
}

fn hints(app: &App, keys: &[(&str, &str)]) -> Line<'static> {
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(format!(" {k}"), app.theme.accent()));
        spans.push(Span::styled(format!(" {what} "), app.theme.muted()));
    }
    Line::from(spans)
}

const HELP: &[(&str, &str)] = &[
    ("1-6, Tab", "Overview, Task, Verify, Audit, Config, Cutover"),
    ("j/k, ↑/↓", "move; g/G first/last"),
    ("Enter", "open the selected task"),
    ("Esc", "back, clear the filter"),
    ("/", "filter rows (node, task, direction, state)"),
    (":", "command: pause/resume/verify-start [TASK], freeze/unfreeze EP, theme NAME, task NAME, q"),
    ("p / r", "pause / resume the selected task"),
    ("v", "start a verify of the selected task"),
    ("R", "repair (Verify screen; typed confirmation)"),
    ("e", "edit the task file (Config screen); Ctrl-S validates and saves"),
    ("n / b", "Cutover screen: next step / roll back (freeze, switch, rollback: type the task name)"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
];

fn render_help(app: &App, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![Span::styled(format!("{k:>10}  "), app.theme.accent()), Span::raw(what.to_string())])
        })
        .collect();
    let h = lines.len() as u16 + 2;
    popup(app, area, buf, "Keys", lines, 90, h);
}

/// A bordered popup centred in `area`, at most `w`x`h`.
fn popup(app: &App, area: Rect, buf: &mut Buffer, title: &str, lines: Vec<Line>, w: u16, h: u16) {
    let w = w.min(area.width);
    let h = h.min(area.height);
    let rect = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    Clear.render(rect, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .style(app.theme.text())
        .block(block(app, title, true))
        .render(rect, buf);
}

/// A bordered block with a title, in the theme.
pub(super) fn block<'a>(app: &App, title: &str, focused: bool) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(focused))
        .title(Span::styled(format!(" {title} "), app.theme.title()))
}

/// The selected task and its node, or a hint to pick one drawn in `area`.
pub(super) fn selected_or_hint<'a>(
    app: &'a App,
    title: &str,
    area: Rect,
    buf: &mut Buffer,
) -> Option<(&'a super::source::NodeFeed, &'a crate::control::TaskView)> {
    match app.selected_task() {
        Some((node, task)) => Some((&app.nodes[node], task)),
        None => {
            Paragraph::new(Span::styled(
                "No task selected: pick one on the Overview and press Enter.",
                app.theme.muted(),
            ))
            .block(block(app, title, true))
            .render(area, buf);
            None
        }
    }
}

/// `HH:MM:SS` (UTC) of a µs timestamp.
pub(super) fn clock(us: i64) -> String {
    let s = us.div_euclid(1_000_000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// A lag for people: `0.12s`, `12.3s`, `4m05s`, `-` when unknown.
pub(super) fn lag_text(lag: Option<f64>) -> String {
    match lag {
        None => "-".into(),
        Some(l) if !l.is_finite() || l < 0.0 => "?".into(),
        Some(l) if l < 10.0 => format!("{l:.2}s"),
        Some(l) if l < 60.0 => format!("{l:.1}s"),
        Some(l) if l < 360_000.0 => format!("{}m{:02}s", (l / 60.0) as u64, (l % 60.0) as u64),
        Some(l) => format!("{}h", (l / 3600.0) as u64),
    }
}

/// A rate for people: `950`, `12.5k`, `3.1M`.
pub(super) fn rate_text(r: f64) -> String {
    if !r.is_finite() || r < 0.0 {
        "?".into()
    } else if r < 1000.0 {
        format!("{r:.0}")
    } else if r < 1_000_000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{:.1}M", r / 1_000_000.0)
    }
}

/// The last `width` values as a text sparkline.
pub(super) fn sparkline(values: impl DoubleEndedIterator<Item = f64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut v: Vec<f64> = values.rev().take(width).map(|x| if x.is_finite() { x.max(0.0) } else { 0.0 }).collect();
    v.reverse();
    let max = v.iter().copied().fold(0.0, f64::max);
    v.iter()
        .map(|x| if max <= 0.0 { BARS[0] } else { BARS[((x / max) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

/// An age for people: `3s`, `5m`, `2h`.
pub(super) fn age_text(now_us: i64, then_us: i64) -> String {
    let s = now_us.saturating_sub(then_us).max(0) / 1_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

#[cfg(test)]
mod tests;
