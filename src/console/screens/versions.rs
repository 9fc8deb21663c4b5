//! Versions: two versions of rows side by side. For a conflict (`c` on the Task screen)
//! the incoming change and the local row it met, with their sites and commit times and
//! which one the policy kept; for a verify difference (`d` on the Verify screen) the
//! source's and the target's values. Columns whose values differ are marked `≠` and
//! highlighted. `j`/`k` select, `PgUp`/`PgDn` scroll the rows, `Esc` goes back.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::{block, clock, plural, scrolled, selected_or_hint};
use crate::console::app::{App, VersionsOf};
use crate::control::verify::DifferingRow;
use crate::control::{ConflictEntry, RowText};

/// One column of the two versions: its name and each side's value (`None`: NULL; the
/// outer `None`: the side has no row).
type Pair = (String, Option<Option<String>>, Option<Option<String>>);

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some((_, task)) = selected_or_hint(app, "Versions", area, buf) else {
        return;
    };
    let list_h = (area.height / 3).max(4);
    let [list, detail] = Layout::vertical([Constraint::Length(list_h), Constraint::Min(4)]).areas(area);
    match app.versions_of {
        VersionsOf::Conflicts => {
            let entries = app.version_conflicts();
            let items: Vec<Line> = entries.iter().map(|c| conflict_line(app, c)).collect();
            let filter = app.conflict_table.as_deref().map(|t| format!(", table {t}")).unwrap_or_default();
            let title = format!(
                "Conflicts of {} ({}{filter}), newest first",
                task.name,
                plural(entries.len(), "entry read", "entries read")
            );
            render_list(app, items, &title, "no conflict logged for this task", list, buf);
            match entries.get(app.version_selected) {
                Some(c) => render_conflict(app, c, detail, buf),
                None => empty(app, detail, buf),
            }
        }
        VersionsOf::Differences => {
            let rows = app.version_differences();
            let items: Vec<Line> = rows
                .iter()
                .map(|d| Line::from(format!("{} {} key {}: {}", d.kind, d.table, d.key, columns_said(d))))
                .collect();
            let title = format!(
                "Differences of the last verify of {} (the first {} confirmed)",
                task.name,
                plural(rows.len(), "row", "rows")
            );
            render_list(app, items, &title, "no confirmed difference: press v on the Verify screen", list, buf);
            match rows.get(app.version_selected) {
                Some(d) => render_difference(app, d, detail, buf),
                None => empty(app, detail, buf),
            }
        }
    }
}

fn conflict_line(app: &App, c: &ConflictEntry) -> Line<'static> {
    let won = if c.winner == "incoming" { &c.incoming_site } else { &c.local_site };
    Line::from(vec![
        Span::styled(format!("{} ", clock(c.detected_us)), app.theme.muted()),
        Span::raw(format!("{} {} key {}: ", c.direction, c.table, c.key)),
        Span::styled(format!("{won} won"), app.theme.ok()),
        Span::styled(format!(" ({})", c.policy), app.theme.muted()),
    ])
}

fn columns_said(d: &DifferingRow) -> String {
    match d.kind.as_str() {
        "missing" => "only on the source".into(),
        "extra" => "only on the target".into(),
        _ => d.columns.iter().map(|c| c.column.as_str()).collect::<Vec<_>>().join(", "),
    }
}

/// The list, the selected entry highlighted and kept in sight.
fn render_list(app: &App, items: Vec<Line<'static>>, title: &str, none: &str, area: Rect, buf: &mut Buffer) {
    if items.is_empty() {
        Paragraph::new(Span::styled(none.to_string(), app.theme.muted()))
            .block(block(app, title, true))
            .render(area, buf);
        return;
    }
    let visible = area.height.saturating_sub(2) as usize;
    let selected = app.version_selected.min(items.len() - 1);
    let first = selected.saturating_sub(visible.saturating_sub(1));
    let lines: Vec<Line> = items
        .into_iter()
        .enumerate()
        .map(|(i, l)| if i == selected { l.style(app.theme.selected()) } else { l })
        .collect();
    let title = format!("{title}  j/k select");
    // Not the screen's pane: the row versions below are.
    scrolled(app, lines, area, buf, block(app, &title, true), first, false, false);
}

fn empty(app: &App, area: Rect, buf: &mut Buffer) {
    Paragraph::new("").block(block(app, "Row versions", false)).render(area, buf);
}

/// A logged row with every column of both rows, in the first row's column order.
fn pairs(left: Option<&RowText>, right: Option<&RowText>) -> Vec<Pair> {
    let mut names: Vec<String> = Vec::new();
    for row in [left, right].into_iter().flatten() {
        for (c, _) in row {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    let value =
        |row: Option<&RowText>, c: &str| row.map(|r| r.iter().find(|(n, _)| n == c).and_then(|(_, v)| v.clone()));
    names.into_iter().map(|c| (c.clone(), value(left, &c), value(right, &c))).collect()
}

fn render_conflict(app: &App, c: &ConflictEntry, area: Rect, buf: &mut Buffer) {
    let incoming_won = c.winner == "incoming";
    let side = |site: &str, what: &str, ts: i64, won: bool| {
        let at = if ts > 0 { format!(" {}", clock(ts)) } else { String::new() };
        format!("{what} {site}{at}{}", if won { " ✔ kept" } else { "" })
    };
    let heads = [
        side(&c.incoming_site, "incoming", c.incoming_ts, incoming_won),
        side(&c.local_site, "local", c.local_ts, !incoming_won),
    ];
    let mut intro = vec![Line::from(vec![
        Span::raw(format!("{} {} key {}: ", c.direction, c.table, c.key)),
        Span::styled(format!("{} kept", c.winner), app.theme.ok()),
        Span::styled(format!(" by {} (target {})", c.policy, c.endpoint), app.theme.muted()),
    ])];
    let rows = pairs(c.incoming_row.as_ref(), c.local_row.as_ref());
    if rows.is_empty() {
        intro.push(Line::from(Span::styled(
            "the conflict log holds no row versions for this entry (a delete against a missing row, or a log written by an older release)",
            app.theme.muted(),
        )));
    }
    let absent = ["a delete: no row", "no row here"];
    render_pairs(app, intro, heads, absent, &rows, area, buf);
}

fn render_difference(app: &App, d: &DifferingRow, area: Rect, buf: &mut Buffer) {
    let (from, to) = app
        .selected_task()
        .and_then(|(node, t)| app.nodes[node].verify.as_ref().filter(|v| v.task == t.name))
        .and_then(|v| v.direction.split_once("->").map(|(a, b)| (a.to_string(), b.to_string())))
        .unwrap_or_default();
    let heads = [format!("source {from}"), format!("target {to}")];
    let mut intro = vec![Line::from(format!("{} key {}: {}", d.table, d.key, d.kind))];
    let rows: Vec<Pair> = match d.kind.as_str() {
        "missing" => {
            intro.push(Line::from(Span::styled(
                format!("on the source {from} only: the target {to} has no row with this key"),
                app.theme.warn(),
            )));
            Vec::new()
        }
        "extra" => {
            intro.push(Line::from(Span::styled(
                format!("on the target {to} only: the source {from} has no row with this key"),
                app.theme.warn(),
            )));
            Vec::new()
        }
        _ => {
            intro.push(Line::from(Span::styled(
                "the columns that differ (the report keeps only those)",
                app.theme.muted(),
            )));
            d.columns
                .iter()
                .map(|c| (c.column.clone(), Some(Some(c.source.clone())), Some(Some(c.target.clone()))))
                .collect()
        }
    };
    render_pairs(app, intro, heads, ["no row", "no row"], &rows, area, buf);
}

/// `intro`, then a table of the two versions: column, left value, right value, each
/// side as wide as the space allows; differing columns marked and highlighted.
#[allow(clippy::too_many_arguments)]
fn render_pairs(
    app: &App,
    mut lines: Vec<Line<'static>>,
    heads: [String; 2],
    absent: [&str; 2],
    rows: &[Pair],
    area: Rect,
    buf: &mut Buffer,
) {
    let inner = area.width.saturating_sub(3) as usize;
    let name_w = rows.iter().map(|(c, _, _)| c.chars().count()).max().unwrap_or(6).clamp(6, 24);
    let side_w = (inner.saturating_sub(name_w + 4) / 2).max(8);
    let cut = |s: &str| -> String {
        if s.chars().count() <= side_w {
            format!("{s:<side_w$}")
        } else {
            let mut t: String = s.chars().take(side_w.saturating_sub(1)).collect();
            t.push('…');
            t
        }
    };
    if !rows.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("  {:<name_w$} {} {}", "column", cut(&heads[0]), cut(&heads[1])),
            app.theme.header(),
        )));
    }
    let text = |v: &Option<Option<String>>, absent: &str| match v {
        None => format!("({absent})"),
        Some(None) => "NULL".to_string(),
        Some(Some(t)) => t.replace('\n', "⏎"),
    };
    let differing = rows.iter().filter(|(_, a, b)| a != b).count();
    for (c, a, b) in rows {
        let differs = a != b;
        let style = if differs { app.theme.warn() } else { Style::default() };
        lines.push(Line::from(vec![
            Span::styled(if differs { "≠ " } else { "  " }, app.theme.warn()),
            Span::styled(format!("{:<name_w$} ", cut_name(c, name_w)), style),
            Span::styled(format!("{} ", cut(&text(a, absent[0]))), style),
            Span::styled(cut(&text(b, absent[1])), style),
        ]));
    }
    let title = if rows.is_empty() {
        "Row versions".to_string()
    } else {
        format!("Row versions: {} of {} differ (≠)", differing, plural(rows.len(), "column", "columns"))
    };
    scrolled(app, lines, area, buf, block(app, &title, false), app.scroll, false, true);
}

fn cut_name(c: &str, w: usize) -> String {
    c.chars().take(w).collect()
}
