//! Config: the task file of the in-process engine, viewed with line numbers (errors
//! cite lines) and scrolling, edited (e) with tui-textarea; Ctrl-S validates it as a task
//! file and saves only a valid, changed one; Esc asks before discarding edits.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::{block, scrolled};
use crate::console::app::{App, Mode};

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(cfg) = &app.config else {
        Paragraph::new(Span::styled(
            "This console watches nodes over their API; each node's task file is edited on its machine \
             (ferry check --config FILE validates it there).",
            app.theme.muted(),
        ))
        .wrap(Wrap { trim: false })
        .block(block(app, "Config", true))
        .render(area, buf);
        return;
    };
    // The message wraps: a parse error keeps its reason and its line at 80 columns.
    let message = match &cfg.message {
        Some((true, m)) => Span::styled(m.clone(), app.theme.ok()),
        Some((false, m)) => Span::styled(m.clone(), app.theme.error()),
        None => Span::styled("validated as a task file before it is saved", app.theme.muted()),
    };
    let width = area.width.max(1) as usize;
    let message_h = (message.content.lines().map(|l| l.chars().count().div_ceil(width).max(1)).sum::<usize>() as u16)
        .clamp(1, (area.height / 3).max(1));
    let [editor_area, message_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(message_h)]).areas(area);
    let editing = matches!(app.mode, Mode::Edit | Mode::Discard);
    let title = format!("{}{}", cfg.path.display(), if editing { " (editing)" } else { " (e to edit)" });
    if editing {
        let mut editor = cfg.editor.clone();
        editor.set_block(block(app, &title, true));
        editor.set_style(app.theme.text());
        editor.set_line_number_style(app.theme.muted());
        editor.set_cursor_line_style(app.theme.text());
        editor.set_cursor_style(app.theme.selected());
        editor.render(editor_area, buf);
    } else {
        let lines = cfg.editor.lines();
        let digits = lines.len().max(1).to_string().len();
        let numbered: Vec<Line> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Line::from(vec![Span::styled(format!("{:>digits$} ", i + 1), app.theme.muted()), Span::raw(l.clone())])
            })
            .collect();
        scrolled(app, numbered, editor_area, buf, block(app, &title, false), app.scroll, false, true);
    }
    Paragraph::new(Line::from(message)).wrap(Wrap { trim: false }).render(message_area, buf);
}
