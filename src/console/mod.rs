//! `ferry console`: a ratatui + crossterm application over the [`crate::control::Control`]
//! trait. It watches nodes through their API or hosts the engine in-process; every
//! screen works both ways. See docs/console.md.

pub mod app;
pub mod color_depth;
pub mod events;
pub mod line_edit;
pub mod screens;
pub mod source;
pub mod theme;

use std::future::Future;
use std::io::{self, Stderr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use serde::Deserialize;

use crate::model::now_micros;
use app::{App, Outcome};
use source::Feeds;
use theme::{Theme, ThemeError};

/// How often the screen takes in new data (the feeds poll once a second).
const REFRESH: Duration = Duration::from_millis(1000);
/// How long the loop sleeps between looks at the keyboard.
const INPUT_POLL: Duration = Duration::from_millis(50);

/// The user's console settings (`console.toml` in the platform's config folder).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Theme name (built-in, or a file in the folder's `themes/`).
    pub theme: Option<String>,
}

/// The platform's config folder for ferry (`~/.config/ferry` on Linux).
pub fn config_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "ferry").map(|d| d.config_dir().to_path_buf())
}

/// Reads `console.toml`; missing or unreadable means defaults (the console still starts).
pub fn settings() -> Settings {
    config_dir()
        .and_then(|d| std::fs::read_to_string(d.join("console.toml")).ok())
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default()
}

/// The theme chosen by flag, else by `console.toml`, else dark.
pub fn choose_theme(flag: Option<&str>) -> Result<Theme, ThemeError> {
    let name = flag.map(str::to_string).or_else(|| settings().theme).unwrap_or_else(|| "dark".into());
    Theme::load(&name, config_dir().map(|d| d.join("themes")).as_deref())
        .map(|t| t.for_depth(color_depth::ColorDepth::detect()))
}

/// Draws and handles keys until the user quits or `signal` resolves. Generic over the
/// backend so that tests can draw into a `TestBackend`.
pub async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    feeds: &Feeds,
    signal: impl Future<Output = ()>,
) -> io::Result<Exit> {
    tokio::pin!(signal);
    let mut last_refresh: Option<Instant> = None;
    loop {
        let mut dirty = false;
        if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH) {
            app.refresh(feeds.snapshot(), now_micros());
            last_refresh = Some(Instant::now());
            dirty = true;
        }
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    app.status = None;
                    match app.on_key(key) {
                        Outcome::Quit => return Ok(Exit::Quit),
                        Outcome::Reload => {
                            terminal.draw(|f| f.render_widget(&*app, f.area()))?;
                            return Ok(Exit::Reload);
                        }
                        Outcome::Send(node, request) => {
                            if !feeds.send(node, request) {
                                app.status = Some("error: the node is busy; try again".into());
                            }
                        }
                        Outcome::None => {}
                    }
                    dirty = true;
                }
                Event::Resize(_, _) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
        }
        // The Cutover screen follows its task's cutover on that task's node; elsewhere
        // nothing is followed (reading a cutover's live values opens both endpoints).
        match app.selected_task() {
            Some((node, task)) if app.screen == app::Screen::Cutover => feeds.follow_cutover(Some((node, &task.name))),
            _ => feeds.follow_cutover(None),
        }
        if dirty {
            terminal.draw(|f| f.render_widget(&*app, f.area()))?;
        }
        tokio::select! {
            biased;
            _ = &mut signal => return Ok(Exit::Quit),
            _ = tokio::time::sleep(INPUT_POLL) => {}
        }
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(io::stderr(), LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Why the console's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The operator quit, or the process was told to stop.
    Quit,
    /// The task file was saved: the caller runs its tasks again and reopens the console.
    Reload,
}

/// Takes over the terminal (on standard error, so standard output stays free for
/// reports), runs the console until the operator quits, `signal` fires, or a saved task
/// file asks for the in-process tasks to start again, and gives the terminal back, also
/// on a panic.
pub async fn run_in_terminal(app: &mut App, feeds: &Feeds, signal: impl Future<Output = ()>) -> io::Result<Exit> {
    let previous = std::sync::Arc::new(std::panic::take_hook());
    let chained = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        chained(info);
    }));
    enable_raw_mode()?;
    let mut stderr: Stderr = io::stderr();
    crossterm::execute!(stderr, EnterAlternateScreen, crossterm::cursor::Hide)?;
    let result = match Terminal::new(CrosstermBackend::new(io::stderr())) {
        Ok(mut terminal) => {
            let r = event_loop(&mut terminal, app, feeds, signal).await;
            let _ = terminal.show_cursor();
            r
        }
        Err(e) => Err(e),
    };
    restore_terminal();
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    result
}
