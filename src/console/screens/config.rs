//! Config: the task file of the in-process engine, viewed and edited (e) with
//! tui-textarea; Ctrl-S validates it as a task file and saves only a valid one.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::block;
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
    let [editor_area, message_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let editing = app.mode == Mode::Edit;
    let title = format!("{}{}", cfg.path.display(), if editing { " (editing)" } else { " (e to edit)" });
    let mut editor = cfg.editor.clone();
    editor.set_block(block(app, &title, editing));
    editor.set_style(app.theme.text());
    editor.set_cursor_line_style(app.theme.text());
    editor.set_cursor_style(if editing { app.theme.selected() } else { app.theme.text() });
    editor.render(editor_area, buf);
    let message = match &cfg.message {
        Some((true, m)) => Span::styled(m.clone(), app.theme.ok()),
        Some((false, m)) => Span::styled(m.clone(), app.theme.error()),
        None => Span::styled("validated as a task file before it is saved", app.theme.muted()),
    };
    Paragraph::new(message).render(message_area, buf);
}
