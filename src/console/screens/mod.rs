//! Drawing: the frame (tabs, footer, overlays) around the current screen. Pure: reads
//! the [`App`], writes a buffer, never changes state or does I/O.

mod audit;
mod cluster;
mod config;
mod cutover;
mod log;
mod overview;
mod task;
mod verify;
mod versions;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Clear, Paragraph, Scrollbar, ScrollbarOrientation, ScrollbarState, StatefulWidget, Widget, Wrap,
};

use super::app::{App, Mode, Screen, is_error};
use super::line_edit::LineEdit;

/// The message area shows at most this many wrapped lines; `m` shows all messages.
const MESSAGE_LINES: u16 = 3;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        buf.set_style(area, self.theme.text());
        let footer_h = footer_height(self, area.width);
        let [tabs, body, footer] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(footer_h)]).areas(area);
        render_tabs(self, tabs, buf);
        match self.screen {
            Screen::Overview => overview::render(self, body, buf),
            Screen::Task => task::render(self, body, buf),
            Screen::Verify => verify::render(self, body, buf),
            Screen::Audit => audit::render(self, body, buf),
            Screen::Config => config::render(self, body, buf),
            Screen::Cutover => cutover::render(self, body, buf),
            Screen::Log => log::render(self, body, buf),
            Screen::Versions => versions::render(self, body, buf),
            Screen::Cluster => cluster::render(self, body, buf),
        }
        render_footer(self, footer, buf);
        if self.help {
            render_help(self, area, buf);
        }
        if self.show_messages {
            render_messages(self, area, buf);
        }
        if self.mode == Mode::Discard {
            let text = vec![
                Line::from(Span::styled("The task file has unsaved edits. Discard them?", self.theme.warn())),
                Line::from(Span::styled(
                    "y discards · n or Esc edits on · Ctrl-S (in the editor) saves",
                    self.theme.accent(),
                )),
            ];
            popup(self, area, buf, "Discard edits?", text, 70, 5);
        }
        if let Mode::Confirm(c) = &self.mode {
            let mut typed = vec![Span::raw("> ")];
            typed.extend(edit_spans(self, &c.typed));
            let text = vec![
                Line::from(Span::styled(c.prompt.clone(), self.theme.warn())),
                Line::from(typed),
                Line::from(Span::styled("Enter confirms, Esc cancels", self.theme.muted())),
            ];
            // The prompt wraps inside the 58 columns of the popup: room for all of it.
            let h = 4 + (c.prompt.chars().count() / 56) as u16 + 1;
            popup(self, area, buf, "Confirm", text, 60, h);
        }
        if let Mode::Quit(warnings) = &self.mode {
            let mut text = vec![Line::from(Span::styled("Quit the console? Quitting now:", self.theme.warn()))];
            text.extend(warnings.iter().map(|w| Line::from(format!("• {w}"))));
            text.push(Line::from(Span::styled("y or q quits · Esc or n stays", self.theme.accent())));
            // Room for the wrapped lines: a warning takes two or three lines at 70 columns.
            let h = 4 + warnings.iter().map(|w| (w.chars().count() / 60) as u16 + 1).sum::<u16>();
            popup(self, area, buf, "Quit?", text, 76, h);
        }
    }
}

/// How many lines the footer takes: one for the key hints or a line being typed; the
/// status message wraps over up to [`MESSAGE_LINES`].
fn footer_height(app: &App, width: u16) -> u16 {
    match (&app.mode, &app.status) {
        (Mode::Normal | Mode::Quit(_) | Mode::Confirm(_) | Mode::Discard, Some(s)) => {
            let lines = Paragraph::new(s.as_str()).wrap(Wrap { trim: false }).line_count(width.max(1));
            (lines as u16).clamp(1, MESSAGE_LINES)
        }
        _ => 1,
    }
}

/// `n node`/`n nodes`: a count with its noun in the right number.
pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Where the operator is: the screen and, for a drill-down, the way there
/// (`Overview › Task shop › Log`); `Esc` goes back one level.
fn breadcrumbs(app: &App) -> Option<String> {
    if app.back.is_empty() {
        return None;
    }
    let task = app.selected_task().map(|(_, t)| t.name.clone()).unwrap_or_default();
    let mut parts: Vec<String> = app.back.iter().map(|s| s.title().to_string()).collect();
    parts.push(format!("{} {task}", app.screen.title()));
    Some(parts.join(" › "))
}

fn render_tabs(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans = vec![Span::styled(" ferry ", app.theme.title())];
    if let Some(trail) = breadcrumbs(app) {
        spans.push(Span::styled(trail, app.theme.selected()));
        spans.push(Span::styled(" (Esc: back)", app.theme.muted()));
    } else {
        for (i, s) in app.tabs().iter().enumerate() {
            let current = *s == app.screen;
            let style = if current { app.theme.selected() } else { app.theme.muted() };
            // Narrow terminals name only the current tab, so the clock keeps its place.
            let tab =
                if current || area.width >= 100 { format!("{} {}", i + 1, s.title()) } else { format!("{}", i + 1) };
            spans.push(Span::styled(tab, style));
            spans.push(Span::raw(" "));
        }
        if matches!(app.screen, Screen::Log | Screen::Versions) {
            spans.push(Span::styled(app.screen.title(), app.theme.selected()));
        }
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
    let stale = app.nodes.iter().filter(|n| n.stale(app.now_us)).count();
    let mut right = access_spans(app);
    right.push(Span::styled(plural(app.nodes.len(), "node", "nodes"), app.theme.muted()));
    if stale > 0 {
        right.push(Span::styled(format!(" {stale} stale"), app.theme.stale()));
    }
    let zone = if area.width >= 100 { " UTC" } else { "" };
    right.push(Span::styled(format!(" {}{zone} ", clock(app.now_us)), app.theme.muted()));
    Paragraph::new(Line::from(right)).alignment(ratatui::layout::Alignment::Right).render(area, buf);
}

/// The role the console acts with on the selected task's node (else the first node)
/// and whether that link is encrypted: `admin https`, `viewer http` (a warning colour:
/// tokens and rows cross the network in clear), `admin in-process`.
fn access_spans(app: &App) -> Vec<Span<'static>> {
    let node = app.selected_task().map_or(0, |(n, _)| n);
    let Some(access) = app.access(node) else { return Vec::new() };
    let role = crate::node::auth::role_name(access.role);
    let (link, style) = match access.tls {
        Some(true) => ("https", app.theme.ok()),
        Some(false) => ("http", app.theme.warn()),
        None => ("in-process", app.theme.muted()),
    };
    vec![Span::styled(format!("{role} "), app.theme.accent()), Span::styled(format!("{link} "), style)]
}

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let typing = |prefix: &str, edit: &LineEdit| {
        let mut spans = vec![Span::styled(prefix.to_string(), app.theme.accent())];
        spans.extend(edit_spans(app, edit));
        spans.push(Span::styled("   Tab completes · ↑/↓ history · Ctrl-U/Ctrl-W delete", app.theme.muted()));
        Line::from(spans)
    };
    let line = match &app.mode {
        Mode::Filter => typing("/", &app.filter_edit),
        Mode::Palette => typing(":", &app.palette),
        Mode::LogSearch => typing("search /", &app.log_search),
        Mode::Edit => hints(app, &[("Ctrl-S", "validate+save"), ("Esc", "leave (asks if edited)")]),
        _ => match &app.status {
            Some(s) => {
                // The message area: the whole message, wrapped; `m` lists every message.
                let style = if is_error(s) { app.theme.error() } else { app.theme.ok() };
                Paragraph::new(Span::styled(s.clone(), style)).wrap(Wrap { trim: false }).render(area, buf);
                return;
            }
            None => hints(app, screen_hints(app)),
        },
    };
    Paragraph::new(line).render(area, buf);
}

/// The text of a line being typed, the cursor drawn as a reversed cell.
pub(super) fn edit_spans(app: &App, edit: &LineEdit) -> Vec<Span<'static>> {
    let text: Vec<char> = edit.text().chars().collect();
    let at = edit.cursor().min(text.len());
    let before: String = text[..at].iter().collect();
    let under: String = text.get(at).map_or(" ".to_string(), |c| c.to_string());
    let after: String = text.get(at + 1..).map_or(String::new(), |r| r.iter().collect());
    vec![Span::raw(before), Span::styled(under, app.theme.selected()), Span::raw(after)]
}

/// The key hints of the current screen, most used first (the footer cuts the rest at
/// 80 columns; `?` lists them all).
fn screen_hints(app: &App) -> &'static [(&'static str, &'static str)] {
    match app.screen {
        Screen::Overview => &[
            ("?", "help"),
            ("⏎", "open"),
            ("l", "log"),
            ("/", "filter"),
            ("s", "sort"),
            ("p/r", "pause/resume"),
            (":", "command"),
            ("m", "messages"),
            ("q", "quit"),
        ],
        Screen::Task => &[
            ("?", "help"),
            ("Esc", "back"),
            ("l", "log"),
            ("c", "conflicts"),
            ("p/r", "pause/resume"),
            ("S", "skip"),
            ("v", "verify"),
            ("PgUp/PgDn", "scroll"),
            (":", "command"),
            ("q", "quit"),
        ],
        Screen::Verify => &[
            ("?", "help"),
            ("v", "verify"),
            ("d", "diffs"),
            ("R", "repair"),
            ("PgUp/PgDn", "report"),
            ("Esc", "back"),
            ("q", "quit"),
        ],
        Screen::Versions => {
            &[("?", "help"), ("j/k", "select"), ("PgUp/PgDn", "scroll rows"), ("Esc", "back"), ("q", "quit")]
        }
        Screen::Audit => &[
            ("?", "help"),
            ("j/k", "select"),
            ("PgUp/PgDn", "detail"),
            ("/", "filter"),
            ("Esc", "back"),
            ("q", "quit"),
        ],
        Screen::Config => {
            &[("?", "help"), ("e", "edit"), ("j/k", "scroll"), ("PgUp/PgDn", "page"), ("Esc", "back"), ("q", "quit")]
        }
        Screen::Cutover => &[
            ("?", "help"),
            ("n", "next step"),
            ("b", "roll back"),
            ("v", "verify"),
            ("PgUp/PgDn", "scroll"),
            ("Esc", "back"),
            ("q", "quit"),
        ],
        Screen::Log => &[
            ("?", "help"),
            ("f", "follow"),
            ("w", "wrap"),
            ("/", "search"),
            ("j/k", "scroll"),
            ("Esc", "back"),
            ("q", "quit"),
        ],
        Screen::Cluster => &[("?", "help"), ("Tab", "next"), ("Esc", "back"), ("q", "quit")],
    }
}

fn hints(app: &App, keys: &[(&str, &str)]) -> Line<'static> {
    let mut spans = Vec::new();
    // Keys the role cannot use are not offered (a viewer sees no pause/resume).
    let node = app.selected_task().map_or(0, |(n, _)| n);
    let viewer = app.access(node).is_some_and(|a| a.role == crate::config::Role::Viewer);
    let acts = |k: &str| matches!(k, "p/r" | "v" | "R" | "n" | "b" | "e" | "S");
    for (k, what) in keys.iter().filter(|(k, _)| !(viewer && acts(k))) {
        spans.push(Span::styled(format!(" {k}"), app.theme.accent()));
        spans.push(Span::styled(format!(" {what} "), app.theme.muted()));
    }
    Line::from(spans)
}

/// Every key, by screen (`?`). Descriptions fit 64 columns so that the list reads at 80.
const HELP: &[(&str, &str)] = &[
    ("#", "Everywhere"),
    ("1-6", "Overview, Task, Verify, Audit, Config, Cutover"),
    ("Tab/S-Tab", "next / previous screen"),
    ("j/k ↑/↓", "move the selection (Audit: the entry; Config, Log: scroll)"),
    ("g/G", "first / last"),
    ("Enter", "open the selected task (drill-down)"),
    ("Esc", "back one level (breadcrumbs on top); clear the filter"),
    ("l", "log: events, audit, conflicts, node log of the selection"),
    ("PgUp/PgDn", "scroll the screen's pane (Ctrl-U/Ctrl-D: half a page)"),
    ("/", "filter rows (node, task, direction, state)"),
    (":", "command palette (Tab completes, ↑/↓ history)"),
    ("m", "message history"),
    ("p / r", "pause / resume the selected task"),
    ("S", "skip the transaction a stopped task failed on (typed name)"),
    ("v", "start a verify of the selected task"),
    ("?", "this help (j/k, PgUp/PgDn scroll it)"),
    ("q, Ctrl-C", "quit; asks first while something is frozen or runs here"),
    ("#", "Overview"),
    ("s", "sort by the next column: lag, rows/s, state, task, node"),
    ("#", "Task"),
    ("c", "conflicts with both row versions side by side"),
    ("#", "Verify"),
    ("R", "repair, after typing the task name"),
    ("d", "differences with source and target values side by side"),
    ("#", "Versions (c on Task, d on Verify)"),
    ("j/k", "select an entry; PgUp/PgDn scroll its row versions"),
    ("#", "Config"),
    ("e", "edit the task file; Ctrl-S validates and saves"),
    ("Esc", "leave the editor (asks before discarding edits)"),
    ("#", "Cutover"),
    ("n / b", "next step / roll back to the end (some: typed name)"),
    ("#", "Log"),
    ("f / w", "follow the newest line / wrap long lines"),
    ("/", "search (matches highlighted; Esc clears)"),
    ("#", "Typing (filter, palette, confirmation)"),
    ("←/→", "move; Home/End, Ctrl-A/Ctrl-E: start/end"),
    ("Ctrl-U/K/W", "delete to start / to end / the word before"),
    ("#", "Palette commands"),
    ("", "overview task verify audit config cutover log [TASK]"),
    ("", "pause resume verify-start skip [TASK]  freeze unfreeze ENDPOINT"),
    ("", "conflicts [TABLE]  sort COLUMN  theme NAME  messages  help  q"),
];

fn render_help(app: &App, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| match *k {
            "#" => Line::from(Span::styled(what.to_string(), app.theme.header())),
            _ => Line::from(vec![Span::styled(format!("{k:>11} "), app.theme.accent()), Span::raw(what.to_string())]),
        })
        .collect();
    overlay(app, area, buf, "Keys (Esc closes)", lines);
}

fn render_messages(app: &App, area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line> = app
        .messages
        .iter()
        .map(|m| {
            let style = if is_error(&m.text) { app.theme.error() } else { app.theme.text() };
            Line::from(vec![
                Span::styled(format!("{} ", clock(m.at_us)), app.theme.muted()),
                Span::styled(m.text.clone(), style),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("no messages yet", app.theme.muted())));
    }
    overlay(app, area, buf, "Messages (Esc closes)", lines);
}

/// A large popup whose lines scroll with [`App::overlay_scroll`].
fn overlay(app: &App, area: Rect, buf: &mut Buffer, title: &str, lines: Vec<Line>) {
    let w = 90.min(area.width);
    let wrapped = Paragraph::new(lines.clone()).wrap(Wrap { trim: false }).line_count(w.saturating_sub(2).max(1));
    let h = (wrapped as u16).saturating_add(2).min(area.height.saturating_sub(2)).max(3);
    let rect =
        Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height.saturating_sub(h)) / 2, width: w, height: h };
    Clear.render(rect, buf);
    scrolled(app, lines, rect, buf, block(app, title, true), app.overlay_scroll, true, false);
}

/// Draws `lines` in `block`, from line `scroll` on (clamped so the last page stays
/// full), with a scrollbar and `[first-last/total]` in the title when they do not fit.
/// `pane` marks the screen's scrolling pane: its limits go to [`App::scroll_limit`].
#[allow(clippy::too_many_arguments)]
pub(super) fn scrolled(
    app: &App,
    lines: Vec<Line>,
    area: Rect,
    buf: &mut Buffer,
    block: Block,
    scroll: usize,
    wrap: bool,
    pane: bool,
) {
    let inner_w = area.width.saturating_sub(2).max(1);
    let visible = area.height.saturating_sub(2) as usize;
    let mut p = Paragraph::new(lines);
    if wrap {
        p = p.wrap(Wrap { trim: false });
    }
    // Lines as wrapped (words move whole to the next line), so the last one is reachable.
    let total = p.line_count(inner_w);
    let last = total.saturating_sub(visible);
    if pane {
        app.scroll_limit.set((last, visible.max(1)));
    }
    let first = scroll.min(last);
    let block = if total > visible {
        block.title_bottom(
            Line::from(Span::styled(
                format!(" {}-{}/{} ↕ PgUp/PgDn ", first + 1, (first + visible).min(total), total),
                app.theme.muted(),
            ))
            .right_aligned(),
        )
    } else {
        block
    };
    p.block(block).scroll((first.min(u16::MAX as usize) as u16, 0)).render(area, buf);
    if total > visible {
        let mut state = ScrollbarState::new(last + 1).position(first).viewport_content_length(visible);
        let bar = Rect { y: area.y + 1, height: area.height.saturating_sub(2), ..area };
        Scrollbar::new(ScrollbarOrientation::VerticalRight)
            .begin_symbol(None)
            .end_symbol(None)
            .thumb_style(app.theme.accent())
            .track_style(app.theme.muted())
            .render(bar, buf, &mut state);
    }
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

/// A counter for people, never cut: exact below 100,000, then `400k`, `1.2M`, `37M`,
/// `2.5G`: at most five characters, rounded down so it never overstates.
pub(super) fn count_text(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1_000_000_000_000, "T"), (1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    if n < 100_000 {
        return n.to_string();
    }
    for (size, unit) in UNITS {
        if n >= size {
            let whole = n / size;
            return if whole < 10 {
                format!("{whole}.{}{unit}", (n % size) * 10 / size)
            } else {
                format!("{whole}{unit}")
            };
        }
    }
    n.to_string()
}

/// The last `width` values as a text sparkline, on the scale `0..=max` (shared by every
/// row, so that 14 rows/s does not look as full as 14,000); `None`: its own maximum.
pub(super) fn sparkline(values: impl DoubleEndedIterator<Item = f64>, width: usize, max: Option<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut v: Vec<f64> = values.rev().take(width).map(|x| if x.is_finite() { x.max(0.0) } else { 0.0 }).collect();
    v.reverse();
    let max = max.unwrap_or_else(|| v.iter().copied().fold(0.0, f64::max));
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
