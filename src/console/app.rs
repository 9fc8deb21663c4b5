//! The console's state and how keys change it. Keys become an [`Outcome`] for the
//! event loop (send a request to a node, quit); drawing (screens/) only reads the state.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui_textarea::TextArea;

use super::source::{NodeFeed, Request};
use super::theme::Theme;
use crate::config::Config;
use crate::control::TaskView;
use crate::cutover::{CutoverAction, CutoverView, Step};
use crate::engine::metrics::DirectionStatus;

/// The screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Every task on every node.
    Overview,
    /// One task: charts, counters, errors, conflicts.
    Task,
    /// Verify of the selected task.
    Verify,
    /// The audit log.
    Audit,
    /// The task file.
    Config,
    /// The cutover wizard of the selected task.
    Cutover,
}

impl Screen {
    /// Every screen, in tab order.
    pub const ALL: [Screen; 6] =
        [Screen::Overview, Screen::Task, Screen::Verify, Screen::Audit, Screen::Config, Screen::Cutover];

    /// Its tab title.
    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Task => "Task",
            Screen::Verify => "Verify",
            Screen::Audit => "Audit",
            Screen::Config => "Config",
            Screen::Cutover => "Cutover",
        }
    }

    fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// What the keyboard is typing into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Keys are commands.
    Normal,
    /// Typing the filter (`/`).
    Filter,
    /// Typing a command (`:`).
    Palette,
    /// Typing a name to confirm a dangerous action.
    Confirm(Confirm),
    /// Editing the task file.
    Edit,
}

/// A dangerous action waiting for the operator to type `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// What will happen.
    pub prompt: String,
    /// What must be typed.
    pub expected: String,
    /// Typed so far.
    pub typed: String,
    /// What happens once confirmed.
    pub then: Confirmed,
}

/// The action behind a confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Send a request to a node.
    Send(usize, Request),
}

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing beyond redrawing.
    None,
    /// Send a request to node N.
    Send(usize, Request),
    /// Leave the console.
    Quit,
    /// The task file was saved: run the in-process tasks again with it.
    Reload,
}

/// One line of the overview: a direction of a task, or a node with no tasks known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    /// Index of the node.
    pub node: usize,
    /// Index of the task in the node's overview.
    pub task: Option<usize>,
    /// Index of the direction in the task.
    pub dir: Option<usize>,
}

/// The task file shown on the Config screen.
pub struct ConfigView {
    /// The file.
    pub path: PathBuf,
    /// The editor (read-only outside Edit mode).
    pub editor: TextArea<'static>,
    /// The outcome of the last validation.
    pub message: Option<(bool, String)>,
}

impl ConfigView {
    /// Loads the file into the editor.
    pub fn open(path: PathBuf) -> ConfigView {
        let (text, message) = match std::fs::read_to_string(&path) {
            Ok(t) => (t, None),
            Err(e) => (String::new(), Some((false, format!("cannot read {}: {e}", path.display())))),
        };
        ConfigView { path, editor: TextArea::from(text.lines().map(str::to_string)), message }
    }

    fn text(&self) -> String {
        let mut t = self.editor.lines().join("\n");
        t.push('\n');
        t
    }

    /// Validates the edited text as a task file; saves it only when valid.
    fn validate_and_save(&mut self) -> bool {
        let text = self.text();
        match Config::parse(&self.path, &text) {
            Ok(_) => match std::fs::write(&self.path, &text) {
                Ok(()) => {
                    self.message = Some((true, "valid; saved. Restart the node (or this console) to apply it".into()));
                    true
                }
                Err(e) => {
                    self.message = Some((false, format!("valid, but cannot write {}: {e}", self.path.display())));
                    false
                }
            },
            Err(e) => {
                self.message = Some((false, format!("not saved: {e}")));
                false
            }
        }
    }
}

/// The console's whole state.
pub struct App {
    /// Colours.
    pub theme: Theme,
    /// Where user themes live (for `:theme NAME`).
    pub theme_dir: Option<PathBuf>,
    /// The current screen.
    pub screen: Screen,
    /// Every node's data, as of the last refresh.
    pub nodes: Vec<NodeFeed>,
    /// Now (µs), as of the last refresh: every age on screen is relative to it.
    pub now_us: i64,
    /// Selected overview row.
    pub selected: usize,
    /// Rows must contain this (case-insensitive).
    pub filter: String,
    /// Keyboard mode.
    pub mode: Mode,
    /// The palette's text.
    pub palette: String,
    /// Help overlay shown.
    pub help: bool,
    /// A message for the footer.
    pub status: Option<String>,
    /// First audit line shown.
    pub audit_scroll: usize,
    /// The task file, when the console runs one in-process.
    pub config: Option<ConfigView>,
    /// Saving the task file restarts the in-process tasks with it (`ferry console --config`).
    pub reload_on_save: bool,
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

impl App {
    /// A console with no data yet.
    pub fn new(theme: Theme) -> App {
        App {
            theme,
            theme_dir: None,
            screen: Screen::Overview,
            nodes: Vec::new(),
            now_us: 0,
            selected: 0,
            filter: String::new(),
            mode: Mode::Normal,
            palette: String::new(),
            help: false,
            status: None,
            audit_scroll: 0,
            config: None,
            reload_on_save: false,
        }
    }

    /// Takes in new data; keeps the selection in range.
    pub fn refresh(&mut self, nodes: Vec<NodeFeed>, now_us: i64) {
        for (i, n) in nodes.iter().enumerate() {
            let old = self.nodes.get(i).and_then(|o| o.message.as_ref());
            if n.message.is_some() && n.message.as_ref() != old {
                self.status = n.message.clone();
            }
        }
        self.nodes = nodes;
        self.now_us = now_us;
        let n = self.rows().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    /// The overview's rows, filtered.
    pub fn rows(&self) -> Vec<RowRef> {
        let f = lower(&self.filter);
        let mut rows = Vec::new();
        for (ni, node) in self.nodes.iter().enumerate() {
            let tasks = node.overview.as_ref().map(|o| o.tasks.as_slice()).unwrap_or(&[]);
            if tasks.is_empty() {
                if f.is_empty() || lower(node.name()).contains(&f) {
                    rows.push(RowRef { node: ni, task: None, dir: None });
                }
                continue;
            }
            for (ti, t) in tasks.iter().enumerate() {
                let dirs = t.directions.len().max(1);
                for di in 0..dirs {
                    let d = t.directions.get(di);
                    let text = format!(
                        "{} {} {} {}",
                        node.name(),
                        t.name,
                        d.map(|d| d.direction.as_str()).unwrap_or(""),
                        d.map(|d| d.state.to_string()).unwrap_or_default()
                    );
                    if f.is_empty() || lower(&text).contains(&f) {
                        rows.push(RowRef { node: ni, task: Some(ti), dir: d.map(|_| di) });
                    }
                }
            }
        }
        rows
    }

    /// The task of a row.
    pub fn task_of(&self, row: RowRef) -> Option<&TaskView> {
        self.nodes.get(row.node)?.overview.as_ref()?.tasks.get(row.task?)
    }

    /// The direction of a row.
    pub fn direction_of(&self, row: RowRef) -> Option<&DirectionStatus> {
        self.task_of(row)?.directions.get(row.dir?)
    }

    /// The selected row.
    pub fn selected_row(&self) -> Option<RowRef> {
        self.rows().get(self.selected).copied()
    }

    /// The selected task and its node's index.
    pub fn selected_task(&self) -> Option<(usize, &TaskView)> {
        let row = self.selected_row()?;
        Some((row.node, self.task_of(row)?))
    }

    fn task_request(&mut self, make: fn(String) -> Request, name: Option<&str>) -> Outcome {
        let target = match name {
            Some(n) => self.find_task(n),
            None => self.selected_task().map(|(node, t)| (node, t.name.clone())),
        };
        match target {
            Some((node, task)) => Outcome::Send(node, make(task)),
            None => {
                self.status = Some(match name {
                    Some(n) => format!("no task {n:?}"),
                    None => "select a task first".into(),
                });
                Outcome::None
            }
        }
    }

    fn find_task(&self, name: &str) -> Option<(usize, String)> {
        self.nodes
            .iter()
            .enumerate()
            .find_map(|(i, n)| n.overview.as_ref()?.tasks.iter().find(|t| t.name == name).map(|t| (i, t.name.clone())))
    }

    fn find_endpoint(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.overview.as_ref().is_some_and(|o| o.endpoints.iter().any(|e| e.name == name)))
    }

    fn select_task(&mut self, name: &str) -> bool {
        let rows = self.rows();
        match rows.iter().position(|r| self.task_of(*r).is_some_and(|t| t.name == name)) {
            Some(i) => {
                self.selected = i;
                true
            }
            None => false,
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let n = self.rows().len();
        if n == 0 {
            self.selected = 0;
            return;
        }
        let cur = self.selected.min(n - 1) as isize;
        self.selected = (cur + delta).clamp(0, n as isize - 1) as usize;
    }

    /// Handles one key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Outcome::Quit;
        }
        match self.mode.clone() {
            Mode::Filter => self.on_filter_key(key),
            Mode::Palette => self.on_palette_key(key),
            Mode::Confirm(c) => self.on_confirm_key(key, c),
            Mode::Edit => self.on_edit_key(key),
            Mode::Normal => self.on_normal_key(key),
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Enter => self.mode = Mode::Normal,
            KeyCode::Esc => {
                self.filter.clear();
                self.mode = Mode::Normal;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.selected = 0;
        Outcome::None
    }

    fn on_palette_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                let line = std::mem::take(&mut self.palette);
                self.command(&line)
            }
            KeyCode::Esc => {
                self.palette.clear();
                self.mode = Mode::Normal;
                Outcome::None
            }
            KeyCode::Backspace => {
                self.palette.pop();
                Outcome::None
            }
            KeyCode::Char(c) => {
                self.palette.push(c);
                Outcome::None
            }
            _ => Outcome::None,
        }
    }

    fn on_confirm_key(&mut self, key: KeyEvent, mut c: Confirm) -> Outcome {
        match key.code {
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                self.status = Some("cancelled".into());
                Outcome::None
            }
            KeyCode::Enter if c.typed == c.expected => {
                self.mode = Mode::Normal;
                match c.then {
                    Confirmed::Send(node, request) => Outcome::Send(node, request),
                }
            }
            KeyCode::Enter => {
                self.status = Some(format!("type {:?} exactly, or Esc to cancel", c.expected));
                Outcome::None
            }
            KeyCode::Backspace => {
                c.typed.pop();
                self.mode = Mode::Confirm(c);
                Outcome::None
            }
            KeyCode::Char(ch) => {
                c.typed.push(ch);
                self.mode = Mode::Confirm(c);
                Outcome::None
            }
            _ => Outcome::None,
        }
    }

    fn on_edit_key(&mut self, key: KeyEvent) -> Outcome {
        let Some(cfg) = self.config.as_mut() else {
            self.mode = Mode::Normal;
            return Outcome::None;
        };
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('s') {
            if cfg.validate_and_save() {
                self.mode = Mode::Normal;
                if self.reload_on_save {
                    cfg.message = Some((true, "valid; saved; running the tasks again with it".into()));
                    return Outcome::Reload;
                }
            }
            return Outcome::None;
        }
        if key.code == KeyCode::Esc {
            let path = cfg.path.clone();
            *cfg = ConfigView::open(path);
            cfg.message = Some((true, "edit discarded".into()));
            self.mode = Mode::Normal;
            return Outcome::None;
        }
        cfg.editor.input(key);
        Outcome::None
    }

    fn on_normal_key(&mut self, key: KeyEvent) -> Outcome {
        if self.help {
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')) {
                self.help = false;
            }
            return Outcome::None;
        }
        match key.code {
            KeyCode::Char('q') => return Outcome::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char(':') => {
                self.palette.clear();
                self.mode = Mode::Palette;
            }
            KeyCode::Char('j') | KeyCode::Down => match self.screen {
                Screen::Audit => self.audit_scroll = self.audit_scroll.saturating_add(1),
                _ => self.move_selection(1),
            },
            KeyCode::Char('k') | KeyCode::Up => match self.screen {
                Screen::Audit => self.audit_scroll = self.audit_scroll.saturating_sub(1),
                _ => self.move_selection(-1),
            },
            KeyCode::Char('g') | KeyCode::Home => {
                self.selected = 0;
                self.audit_scroll = 0;
            }
            KeyCode::Char('G') | KeyCode::End => self.move_selection(isize::MAX / 2),
            KeyCode::Enter if self.screen == Screen::Overview && self.selected_task().is_some() => {
                self.screen = Screen::Task;
            }
            KeyCode::Esc => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                } else {
                    self.screen = Screen::Overview;
                }
            }
            KeyCode::Tab => self.screen = Screen::ALL[(self.screen.index() + 1) % Screen::ALL.len()],
            KeyCode::BackTab => {
                self.screen = Screen::ALL[(self.screen.index() + Screen::ALL.len() - 1) % Screen::ALL.len()]
            }
            KeyCode::Char(c @ '1'..='6') => {
                self.screen = Screen::ALL[(c as usize) - ('1' as usize)];
            }
            KeyCode::Char('p') => return self.task_request(Request::Pause, None),
            KeyCode::Char('r') => return self.task_request(Request::Resume, None),
            KeyCode::Char('v') => return self.task_request(Request::Verify, None),
            KeyCode::Char('R') if self.screen == Screen::Verify => {
                if let Some((node, t)) = self.selected_task() {
                    let name = t.name.clone();
                    self.mode = Mode::Confirm(Confirm {
                        prompt: format!("Verify task {name} and repair its target: type the task name"),
                        expected: name.clone(),
                        typed: String::new(),
                        then: Confirmed::Send(node, Request::Repair(name)),
                    });
                }
            }
            KeyCode::Char('n') if self.screen == Screen::Cutover => return self.cutover_key(false),
            KeyCode::Char('b') if self.screen == Screen::Cutover => return self.cutover_key(true),
            KeyCode::Char('e') if self.screen == Screen::Config => {
                if self.config.is_some() {
                    self.mode = Mode::Edit;
                } else {
                    self.status = Some("the task file lives on the node; edit it there".into());
                }
            }
            _ => {}
        }
        Outcome::None
    }

    /// The selected task's cutover as its node last reported it.
    pub fn selected_cutover(&self) -> Option<(usize, &CutoverView)> {
        let (node, task) = self.selected_task()?;
        let view = self.nodes.get(node)?.cutover.as_ref().filter(|v| v.task == task.name)?;
        Some((node, view))
    }

    /// `n` (next step) and `b` (rollback) on the Cutover screen: freeze, switch and
    /// rollback wait for the task's name to be typed.
    fn cutover_key(&mut self, rollback: bool) -> Outcome {
        let Some((node, view)) = self.selected_cutover() else {
            self.status = Some("no cutover data for the selected task yet; select a task and wait a second".into());
            return Outcome::None;
        };
        let task = view.task.clone();
        let step = view.state.as_ref().map(|s| s.step);
        let (action, step, prompt) = if rollback {
            if step.is_none_or(|s| s == Step::RolledBack) {
                self.status = Some(format!("no cutover of {task} to roll back"));
                return Outcome::None;
            }
            let p = format!(
                "Roll back the cutover of {task}: freeze the target, drain, reopen the source. Type the task name"
            );
            (CutoverAction::Rollback, Step::RollbackFreezeTarget, p)
        } else {
            let (action, next) = match step {
                None | Some(Step::RolledBack) => (CutoverAction::Start, Step::Preflight),
                Some(Step::Done) => {
                    self.status = Some(format!("the cutover of {task} is done; b rolls it back"));
                    return Outcome::None;
                }
                Some(s) => (CutoverAction::Next, s),
            };
            let (title, _) = next.describe("", "");
            (action, next, format!("Run step \"{title}\" of the cutover of {task}. Type the task name"))
        };
        let request = Request::Cutover(task.clone(), action);
        if rollback || step.needs_typed_confirmation() {
            self.mode = Mode::Confirm(Confirm {
                prompt,
                expected: task,
                typed: String::new(),
                then: Confirmed::Send(node, request),
            });
            return Outcome::None;
        }
        Outcome::Send(node, request)
    }

    /// Runs a palette command (`:pause shop`, `:theme light`, ...).
    pub fn command(&mut self, line: &str) -> Outcome {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else {
            return Outcome::None;
        };
        let arg = words.next();
        let screen = match cmd {
            "overview" | "o" | "tasks" => Some(Screen::Overview),
            "task" | "t" => Some(Screen::Task),
            "verify" | "v" => Some(Screen::Verify),
            "audit" | "a" => Some(Screen::Audit),
            "config" | "c" => Some(Screen::Config),
            "cutover" | "cut" => Some(Screen::Cutover),
            _ => None,
        };
        if let Some(s) = screen {
            if let Some(name) = arg
                && !self.select_task(name)
            {
                self.status = Some(format!("no task {name:?}"));
            }
            self.screen = s;
            return Outcome::None;
        }
        match cmd {
            "q" | "quit" => Outcome::Quit,
            "help" => {
                self.help = true;
                Outcome::None
            }
            "pause" => self.task_request(Request::Pause, arg),
            "resume" => self.task_request(Request::Resume, arg),
            "verify-start" => self.task_request(Request::Verify, arg),
            "freeze" | "unfreeze" => {
                let Some(ep) = arg else {
                    self.status = Some(format!("usage: :{cmd} ENDPOINT"));
                    return Outcome::None;
                };
                let Some(node) = self.find_endpoint(ep) else {
                    self.status = Some(format!("no endpoint {ep:?}"));
                    return Outcome::None;
                };
                if cmd == "unfreeze" {
                    return Outcome::Send(node, Request::Unfreeze(ep.to_string()));
                }
                self.mode = Mode::Confirm(Confirm {
                    prompt: format!("Freeze endpoint {ep}: application writes will be refused. Type its name"),
                    expected: ep.to_string(),
                    typed: String::new(),
                    then: Confirmed::Send(node, Request::Freeze(ep.to_string())),
                });
                Outcome::None
            }
            "theme" => {
                match arg.map(|n| Theme::load(n, self.theme_dir.as_deref())) {
                    Some(Ok(t)) => self.theme = t,
                    Some(Err(e)) => self.status = Some(e.to_string()),
                    None => self.status = Some("usage: :theme NAME (dark, light, high-contrast)".into()),
                }
                Outcome::None
            }
            other => {
                self.status = Some(format!("unknown command {other:?}; press ? for help"));
                Outcome::None
            }
        }
    }
}
