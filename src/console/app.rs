//! The console's state and how keys change it. Keys become an [`Outcome`] for the
//! event loop (send a request to a node, quit); drawing (screens/) only reads the state.

use std::cell::Cell;
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui_textarea::TextArea;

use crate::connector::endpoint::{mask_passwords_in_text, unmask_passwords_in_text};
use crate::control::Access;
use crate::node::auth::{role_name, role_rank};

use super::line_edit::{Edited, LineEdit};
use super::source::{IN_PROCESS, NodeFeed, Request};
use super::theme::Theme;
use crate::config::Config;
use crate::control::TaskView;
use crate::cutover::{CutoverAction, CutoverView, Step};
use crate::engine::metrics::{DirectionState, DirectionStatus};

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
    /// The events of the selected task (or node), newest last (`l`).
    Log,
    /// Two versions of rows side by side: a conflict's (`c` on Task) or a verify
    /// difference's (`d` on Verify).
    Versions,
    /// The cluster: every node, every direction's owner, directions moving (tab 7,
    /// shown when a node is in a cluster).
    Cluster,
}

/// What the Versions screen lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionsOf {
    /// The selected task's logged conflicts: the incoming and the local version.
    #[default]
    Conflicts,
    /// The confirmed differences of the selected task's last verify: source and target.
    Differences,
}

impl Screen {
    /// Every screen with a tab, in tab order (Cluster only when a node is in a cluster:
    /// [`App::tabs`]).
    pub const ALL: [Screen; 7] = [
        Screen::Overview,
        Screen::Task,
        Screen::Verify,
        Screen::Audit,
        Screen::Config,
        Screen::Cutover,
        Screen::Cluster,
    ];

    /// Its tab title.
    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Task => "Task",
            Screen::Verify => "Verify",
            Screen::Audit => "Audit",
            Screen::Config => "Config",
            Screen::Cutover => "Cutover",
            Screen::Log => "Log",
            Screen::Versions => "Versions",
            Screen::Cluster => "Cluster",
        }
    }

    /// Its place in the tab order (the Log view, reached with `l`, sits after Task).
    fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(1)
    }
}

/// How the Overview's rows are ordered (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// As the nodes list them.
    #[default]
    Node,
    /// Largest lag first.
    Lag,
    /// Highest rows/s first.
    Rate,
    /// Failed, retrying, ... first; streaming last.
    State,
    /// By task name.
    Name,
}

impl SortBy {
    /// The next order (`s`).
    pub fn next(self) -> SortBy {
        match self {
            SortBy::Node => SortBy::Lag,
            SortBy::Lag => SortBy::Rate,
            SortBy::Rate => SortBy::State,
            SortBy::State => SortBy::Name,
            SortBy::Name => SortBy::Node,
        }
    }

    /// The column it sorts by, as its header reads.
    pub fn column(self) -> &'static str {
        match self {
            SortBy::Node => "Node",
            SortBy::Lag => "Lag",
            SortBy::Rate => "Rows/s",
            SortBy::State => "State",
            SortBy::Name => "Task",
        }
    }
}

/// One line of the message history (`m`): every status message, with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// When it was said (µs).
    pub at_us: i64,
    /// What.
    pub text: String,
}

/// Whether a status message reports something wrong (drawn in the error colour).
pub fn is_error(text: &str) -> bool {
    text.starts_with("error")
        || text.contains("not available")
        || text.starts_with("no ")
        || text.starts_with("not saved")
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
    /// Asking before quitting: what stays frozen, what stops.
    Quit(Vec<String>),
    /// Asking before throwing away unsaved edits of the task file.
    Discard,
    /// Typing a search in the Log view.
    LogSearch,
}

/// A dangerous action waiting for the operator to type `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// What will happen.
    pub prompt: String,
    /// What must be typed.
    pub expected: String,
    /// Typed so far.
    pub typed: LineEdit,
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
    /// (masked, original) URLs: the editor shows passwords as `***`, and a save puts
    /// the original back wherever the masked URL was left as it was.
    pub secrets: Vec<(String, String)>,
}

/// What saving the task file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saved {
    /// Valid and written.
    Written,
    /// The same text as the file: nothing written, nothing to apply.
    Unchanged,
    /// Invalid, or not writable: the message says why.
    Refused,
}

impl ConfigView {
    /// Loads the file into the editor.
    pub fn open(path: PathBuf) -> ConfigView {
        let (text, message) = match std::fs::read_to_string(&path) {
            Ok(t) => (t, None),
            Err(e) => (String::new(), Some((false, format!("cannot read {}: {e}", path.display())))),
        };
        let (shown, secrets) = mask_passwords_in_text(&text);
        ConfigView { path, editor: TextArea::from(shown.lines().map(str::to_string)), message, secrets }
    }

    /// Whether the editor holds something else than the file on disk.
    pub fn modified(&self) -> bool {
        std::fs::read_to_string(&self.path).map_or(true, |on_disk| on_disk.trim_end() != self.text().trim_end())
    }

    /// The text to save: the editor's, with the masked passwords restored.
    fn text(&self) -> String {
        let mut t = self.editor.lines().join("\n");
        t.push('\n');
        unmask_passwords_in_text(&t, &self.secrets)
    }

    /// Validates the edited text as a task file; saves it only when valid, and not at
    /// all when it is the file's text already (so nothing restarts for nothing).
    fn validate_and_save(&mut self) -> Saved {
        let text = self.text();
        if let Err(e) = Config::parse(&self.path, &text) {
            self.message = Some((false, format!("not saved: {e}")));
            return Saved::Refused;
        }
        if !self.modified() {
            self.message = Some((true, "valid and unchanged: nothing saved, nothing restarted".into()));
            return Saved::Unchanged;
        }
        match std::fs::write(&self.path, &text) {
            Ok(()) => {
                self.message = Some((true, "valid; saved. Restart the node (or this console) to apply it".into()));
                Saved::Written
            }
            Err(e) => {
                self.message = Some((false, format!("valid, but cannot write {}: {e}", self.path.display())));
                Saved::Refused
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
    /// The filter being typed (`/`), with its history.
    pub filter_edit: LineEdit,
    /// Keyboard mode.
    pub mode: Mode,
    /// The palette's line, with its history.
    pub palette: LineEdit,
    /// Help overlay shown.
    pub help: bool,
    /// Message history overlay shown (`m`).
    pub show_messages: bool,
    /// First line of the help or message overlay shown.
    pub overlay_scroll: usize,
    /// A message for the footer's message area (wraps over up to three lines).
    pub status: Option<String>,
    /// Every message said, oldest first (the last 200).
    pub messages: Vec<Message>,
    /// Selected audit entry (its detail shows in full below the list).
    pub audit_scroll: usize,
    /// First line shown of the current screen's scrolling pane (Cutover steps, Config,
    /// Audit detail, the Task screen's errors and conflicts, the Log view).
    pub scroll: usize,
    /// (last first line, lines per page) of the scrolling pane as last drawn: drawing
    /// writes it so that `PgDn` stops at the end and pages by what is visible.
    pub scroll_limit: Cell<(usize, usize)>,
    /// The Overview's order (`s`).
    pub sort: SortBy,
    /// Screens to go back to with `Esc` (drill-down: Overview > Task > Log).
    pub back: Vec<Screen>,
    /// The Log view keeps its newest line in sight (`f` toggles).
    pub log_follow: bool,
    /// The Log view wraps long lines (`w` toggles).
    pub log_wrap: bool,
    /// The Log view's search (`/` there), with its history.
    pub log_search: LineEdit,
    /// The Task screen's conflicts show only this table (`:conflicts TABLE`).
    pub conflict_table: Option<String>,
    /// What the Versions screen lists.
    pub versions_of: VersionsOf,
    /// The entry selected on the Versions screen.
    pub version_selected: usize,
    /// What the console saw change between polls (state changes, errors, pauses),
    /// per node, for the Log view.
    pub events: Vec<super::events::Event>,
    /// First line of the Verify screen's report shown.
    pub verify_scroll: usize,
    /// The task file, when the console runs one in-process.
    pub config: Option<ConfigView>,
    /// Saving the task file restarts the in-process tasks with it (`ferry console --config`).
    pub reload_on_save: bool,
    /// `q` asks first when quitting would leave endpoints frozen, a cutover half-way or
    /// stop in-process tasks. `ferry demo` turns it off: there `q` ends the workload.
    pub quit_asks: bool,
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
            filter_edit: LineEdit::default(),
            mode: Mode::Normal,
            palette: LineEdit::default(),
            help: false,
            show_messages: false,
            overlay_scroll: 0,
            status: None,
            messages: Vec::new(),
            audit_scroll: 0,
            scroll: 0,
            scroll_limit: Cell::new((usize::MAX, 10)),
            sort: SortBy::Node,
            back: Vec::new(),
            log_follow: true,
            log_wrap: false,
            log_search: LineEdit::default(),
            conflict_table: None,
            versions_of: VersionsOf::Conflicts,
            version_selected: 0,
            events: Vec::new(),
            verify_scroll: 0,
            config: None,
            reload_on_save: false,
            quit_asks: true,
        }
    }

    /// The screens with a tab: the Cluster tab only when a node is in a cluster.
    pub fn tabs(&self) -> &'static [Screen] {
        if self.cluster().is_some() { &Screen::ALL } else { &Screen::ALL[..Screen::ALL.len() - 1] }
    }

    /// The cluster as the first node in one sees it (every node of a cluster sees all
    /// of it), with that node's feed.
    pub fn cluster(&self) -> Option<(&NodeFeed, &crate::cluster::ClusterView)> {
        self.nodes.iter().find_map(|n| n.cluster.as_ref().map(|c| (n, c)))
    }

    /// Takes in new data; keeps the selection in range.
    pub fn refresh(&mut self, nodes: Vec<NodeFeed>, now_us: i64) {
        for (i, n) in nodes.iter().enumerate() {
            let old = self.nodes.get(i).and_then(|o| o.message.as_ref());
            if n.message.is_some() && n.message.as_ref() != old {
                self.status = n.message.clone();
            }
        }
        super::events::observe(&mut self.events, &self.nodes, &nodes, now_us);
        self.nodes = nodes;
        self.now_us = now_us;
        self.note_status();
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
        self.sort_rows(&mut rows);
        rows
    }

    /// Orders rows by [`App::sort`]; equal rows keep the nodes' order.
    fn sort_rows(&self, rows: &mut [RowRef]) {
        let lag = |r: &RowRef| self.direction_of(*r).and_then(|d| d.lag_seconds).unwrap_or(-1.0);
        let rate = |r: &RowRef| self.direction_of(*r).map_or(-1.0, |d| d.rows_per_sec[0]);
        let state = |r: &RowRef| {
            self.direction_of(*r).map_or(9, |d| match d.state {
                DirectionState::Failed => 0,
                DirectionState::Retrying | DirectionState::ClockSkew | DirectionState::TransportFull => 1,
                DirectionState::WaitingForLease => 2,
                DirectionState::Stopped => 3,
                DirectionState::Starting => 4,
                DirectionState::Snapshotting(_) => 5,
                DirectionState::Streaming => 6,
            })
        };
        match self.sort {
            SortBy::Node => {}
            SortBy::Lag => rows.sort_by(|a, b| lag(b).total_cmp(&lag(a))),
            SortBy::Rate => rows.sort_by(|a, b| rate(b).total_cmp(&rate(a))),
            SortBy::State => rows.sort_by_key(state),
            SortBy::Name => rows.sort_by(|a, b| {
                let name = |r: &RowRef| self.task_of(*r).map(|t| t.name.clone()).unwrap_or_default();
                name(a).cmp(&name(b))
            }),
        }
    }

    /// Keeps the status message in the history (`m`), once.
    pub fn note_status(&mut self) {
        let Some(text) = &self.status else { return };
        if self.messages.last().is_some_and(|m| &m.text == text) {
            return;
        }
        self.messages.push(Message { at_us: self.now_us, text: text.clone() });
        if self.messages.len() > 200 {
            self.messages.remove(0);
        }
    }

    /// Switches screens; `drill` keeps the way back for `Esc` (Overview > Task > Log),
    /// otherwise (1-6, Tab) the way back is forgotten.
    pub fn go(&mut self, to: Screen, drill: bool) {
        if drill {
            if self.screen != to {
                self.back.push(self.screen);
            }
        } else {
            self.back.clear();
        }
        if to != self.screen {
            self.scroll = 0;
        }
        if to == Screen::Log {
            self.log_follow = true;
        }
        self.screen = to;
    }

    /// Scrolls the current screen's scrolling pane by `delta` lines, never past its end.
    fn scroll_by(&mut self, delta: isize) {
        let (last, _) = self.scroll_limit.get();
        if self.screen == Screen::Log {
            // Scrolling up leaves follow mode; reaching the end takes it up again.
            let from = if self.log_follow { last } else { self.scroll.min(last) };
            self.scroll = from.saturating_add_signed(delta).min(last);
            self.log_follow = self.scroll >= last;
            return;
        }
        self.scroll = self.scroll.min(last).saturating_add_signed(delta).min(last);
    }

    /// Lines per page of the scrolling pane as last drawn.
    fn page(&self) -> isize {
        self.scroll_limit.get().1.max(1) as isize
    }

    /// Candidates for Tab in the palette: commands, then task, endpoint, theme or
    /// table names as the command takes.
    pub fn completions(&self, before: &[&str]) -> Vec<String> {
        let tasks = || {
            self.nodes
                .iter()
                .flat_map(|n| n.overview.iter().flat_map(|o| o.tasks.iter().map(|t| t.name.clone())))
                .collect::<Vec<_>>()
        };
        match before.first().copied() {
            None => COMMANDS.iter().map(|c| c.to_string()).collect(),
            Some(_) if before.len() > 1 => Vec::new(),
            Some(
                "task" | "t" | "verify" | "v" | "cutover" | "cut" | "pause" | "resume" | "verify-start" | "log"
                | "skip",
            ) => tasks(),
            Some("freeze" | "unfreeze") => self
                .nodes
                .iter()
                .flat_map(|n| n.overview.iter().flat_map(|o| o.endpoints.iter().map(|e| e.name.clone())))
                .collect(),
            Some("theme") => super::theme::BUILTIN.iter().map(|(n, _)| n.to_string()).collect(),
            Some("sort") => ["node", "lag", "rate", "state", "task"].map(String::from).to_vec(),
            Some("conflicts") => match self.selected_task() {
                Some((node, t)) => {
                    self.nodes[node].conflicts.iter().filter(|c| c.task == t.name).map(|c| c.table.clone()).collect()
                }
                None => Vec::new(),
            },
            Some(_) => Vec::new(),
        }
    }

    /// Candidates for Tab in the filter: node, task and direction names.
    fn filter_completions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(n.name().to_string());
            for t in n.overview.iter().flat_map(|o| o.tasks.iter()) {
                out.push(t.name.clone());
                out.extend(t.directions.iter().map(|d| d.direction.clone()));
            }
        }
        out
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
            // A second Ctrl-C in the question quits: the way out stays one key away.
            if matches!(self.mode, Mode::Quit(_)) {
                return Outcome::Quit;
            }
            return self.quit();
        }
        let was_confirming = matches!(self.mode, Mode::Confirm(_));
        let outcome = match self.mode.clone() {
            Mode::Quit(_) => self.on_quit_key(key),
            Mode::Filter => self.on_filter_key(key),
            Mode::Palette => self.on_palette_key(key),
            Mode::Confirm(c) => self.on_confirm_key(key, c),
            Mode::Edit => self.on_edit_key(key),
            Mode::Discard => self.on_discard_key(key),
            Mode::LogSearch => self.on_log_search_key(key),
            Mode::Normal => self.on_normal_key(key),
        };
        let outcome = self.within_role(outcome, was_confirming);
        self.note_status();
        outcome
    }

    /// The caller's access to node `node`, once it told.
    pub fn access(&self, node: usize) -> Option<&Access> {
        self.nodes.get(node)?.access.as_ref()
    }

    /// Offers nothing the role cannot do: a request the node would refuse (403), or a
    /// confirmation dialog leading to one, is dropped before the operator types
    /// anything, with the role it needs in the status line.
    fn within_role(&mut self, outcome: Outcome, was_confirming: bool) -> Outcome {
        let asked = match (&outcome, &self.mode) {
            (Outcome::Send(node, r), _) if !was_confirming => Some((*node, r.clone())),
            (_, Mode::Confirm(Confirm { then: Confirmed::Send(node, r), .. })) if !was_confirming => {
                Some((*node, r.clone()))
            }
            _ => None,
        };
        let Some((node, request)) = asked else { return outcome };
        let Some(access) = self.access(node).cloned() else { return outcome };
        let needed = request.role();
        if role_rank(access.role) >= role_rank(needed) {
            return outcome;
        }
        self.mode = Mode::Normal;
        self.status = Some(format!(
            "not available: {} needs the {} role; token {:?} has {}",
            request.what(),
            role_name(needed),
            access.name,
            role_name(access.role)
        ));
        Outcome::None
    }

    /// `q`: quits at once when nothing is at stake, else asks what [`App::quit_warnings`]
    /// lists.
    pub fn quit(&mut self) -> Outcome {
        let warnings = if self.quit_asks { self.quit_warnings() } else { Vec::new() };
        if warnings.is_empty() {
            return Outcome::Quit;
        }
        self.mode = Mode::Quit(warnings);
        Outcome::None
    }

    /// What quitting now would leave behind: frozen endpoints (application writes stay
    /// refused), cutovers half-way (and a step running in this process that stops), and
    /// the in-process tasks that stop with the console.
    pub fn quit_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            for what in &n.acting {
                // A node runs each step in a task of its own: it finishes the step under
                // way; only this console's going on to the next steps stops.
                let ends = if n.label == IN_PROCESS {
                    "quitting stops it half-way"
                } else {
                    "quitting ends it after the step under way, which the node finishes"
                };
                out.push(format!(
                    "{what}, asked from this console, is still running on {}: {ends} (n on screen 6 resumes it)",
                    n.name()
                ));
            }
            let Some(o) = &n.overview else { continue };
            let here = n.label == IN_PROCESS;
            for e in &o.endpoints {
                if let Some(since) = e.frozen_since_us {
                    let age = self.now_us.saturating_sub(since).max(0) / 1_000_000;
                    out.push(format!(
                        "endpoint {} stays FROZEN (for {age}s): application writes stay refused until a cutover step or :unfreeze {} lifts it",
                        e.name, e.name
                    ));
                }
            }
            for t in &o.tasks {
                let Some(c) = t.cutover.as_ref().filter(|c| c.in_progress()) else { continue };
                let stops = if here && c.running { "; its running step stops half-way and" } else { ";" };
                out.push(format!(
                    "the cutover of {} stays at {}{stops} resumes with n on screen 6 or ferry cutover next",
                    t.name,
                    c.describe()
                ));
            }
            if here {
                let running: Vec<&str> = o
                    .tasks
                    .iter()
                    .filter(|t| {
                        !t.paused
                            && t.directions
                                .iter()
                                .any(|d| !matches!(d.state, DirectionState::Stopped | DirectionState::Failed))
                    })
                    .map(|t| t.name.as_str())
                    .collect();
                if !running.is_empty() {
                    out.push(format!("in-process task(s) {} stop: they run inside this console", running.join(", ")));
                }
            }
        }
        out
    }

    fn on_quit_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Char('y') | KeyCode::Char('q') => Outcome::Quit,
            KeyCode::Esc | KeyCode::Char('n') => {
                self.mode = Mode::Normal;
                self.status = Some("still here".into());
                Outcome::None
            }
            // Anything else is not an answer: the question stays.
            _ => Outcome::None,
        }
    }

    fn say_candidates(&mut self, edited: &Edited) {
        if let Edited::Candidates(c) = edited {
            self.status = Some(format!("Tab: {}", c.join("  ")));
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent) -> Outcome {
        let candidates = self.filter_completions();
        let edited = self.filter_edit.on_key(key, |_, _| candidates.clone());
        match edited {
            Edited::Submit => {
                self.filter_edit.submit();
                self.mode = Mode::Normal;
            }
            Edited::Cancel => {
                self.filter_edit.clear();
                self.filter.clear();
                self.mode = Mode::Normal;
            }
            other => {
                self.filter = self.filter_edit.text().to_string();
                self.say_candidates(&other);
            }
        }
        self.selected = 0;
        Outcome::None
    }

    fn on_palette_key(&mut self, key: KeyEvent) -> Outcome {
        let mut palette = std::mem::take(&mut self.palette);
        let edited = palette.on_key(key, |before, _| self.completions(before));
        self.palette = palette;
        match edited {
            Edited::Submit => {
                self.mode = Mode::Normal;
                let line = self.palette.submit();
                self.command(&line)
            }
            Edited::Cancel => {
                self.palette.clear();
                self.mode = Mode::Normal;
                Outcome::None
            }
            other => {
                self.say_candidates(&other);
                Outcome::None
            }
        }
    }

    fn on_confirm_key(&mut self, key: KeyEvent, mut c: Confirm) -> Outcome {
        match c.typed.on_key(key, |_, _| Vec::new()) {
            Edited::Cancel => {
                self.mode = Mode::Normal;
                self.status = Some("cancelled".into());
                Outcome::None
            }
            Edited::Submit if c.typed.text() == c.expected => {
                self.mode = Mode::Normal;
                match c.then {
                    Confirmed::Send(node, request) => Outcome::Send(node, request),
                }
            }
            Edited::Submit => {
                self.status = Some(format!("type {:?} exactly, or Esc to cancel", c.expected));
                Outcome::None
            }
            _ => {
                self.mode = Mode::Confirm(c);
                Outcome::None
            }
        }
    }

    fn on_log_search_key(&mut self, key: KeyEvent) -> Outcome {
        match self.log_search.on_key(key, |_, _| Vec::new()) {
            Edited::Submit => {
                let keep = self.log_search.submit();
                self.log_search.set_text(&keep);
                self.mode = Mode::Normal;
            }
            Edited::Cancel => {
                self.log_search.clear();
                self.mode = Mode::Normal;
            }
            _ => {}
        }
        Outcome::None
    }

    /// The answer to "discard your edits?": `y` discards, `n`/`Esc` edits on.
    fn on_discard_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Char('y') => {
                if let Some(cfg) = self.config.as_mut() {
                    let path = cfg.path.clone();
                    *cfg = ConfigView::open(path);
                    cfg.message = Some((true, "edit discarded".into()));
                }
                self.mode = Mode::Normal;
            }
            KeyCode::Char('n') | KeyCode::Esc => self.mode = Mode::Edit,
            _ => {}
        }
        Outcome::None
    }

    fn on_edit_key(&mut self, key: KeyEvent) -> Outcome {
        let Some(cfg) = self.config.as_mut() else {
            self.mode = Mode::Normal;
            return Outcome::None;
        };
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('s') {
            let saved = cfg.validate_and_save();
            if saved != Saved::Refused {
                self.mode = Mode::Normal;
            }
            if saved == Saved::Written && self.reload_on_save {
                cfg.message = Some((true, "valid; saved; running the tasks again with it".into()));
                return Outcome::Reload;
            }
            return Outcome::None;
        }
        if key.code == KeyCode::Esc {
            // Edits are not thrown away on one key: asked first when there are any.
            self.mode = if cfg.modified() { Mode::Discard } else { Mode::Normal };
            return Outcome::None;
        }
        cfg.editor.input(key);
        Outcome::None
    }

    /// Keys while the help or the message history is open: they scroll it or close it.
    fn on_overlay_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc | KeyCode::Char('?' | 'q' | 'm') => {
                self.help = false;
                self.show_messages = false;
            }
            KeyCode::Char('j') | KeyCode::Down => self.overlay_scroll = self.overlay_scroll.saturating_add(1),
            KeyCode::Char('k') | KeyCode::Up => self.overlay_scroll = self.overlay_scroll.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.overlay_scroll = self.overlay_scroll.saturating_add(10),
            KeyCode::PageUp => self.overlay_scroll = self.overlay_scroll.saturating_sub(10),
            KeyCode::Char('g') | KeyCode::Home => self.overlay_scroll = 0,
            KeyCode::Char('G') | KeyCode::End => self.overlay_scroll = usize::MAX / 2,
            _ => {}
        }
    }

    fn on_normal_key(&mut self, key: KeyEvent) -> Outcome {
        if self.help || self.show_messages {
            self.on_overlay_key(key);
            return Outcome::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Scrolling the current screen's pane, where it has one.
        let pane = !matches!(self.screen, Screen::Overview | Screen::Verify);
        match key.code {
            KeyCode::PageDown if pane => return self.scrolled(self.page()),
            KeyCode::PageUp if pane => return self.scrolled(-self.page()),
            KeyCode::Char('d') if ctrl && pane => return self.scrolled(self.page() / 2),
            KeyCode::Char('u') if ctrl && pane => return self.scrolled(-self.page() / 2),
            KeyCode::Char('j') | KeyCode::Down if matches!(self.screen, Screen::Config | Screen::Log) => {
                return self.scrolled(1);
            }
            KeyCode::Char('k') | KeyCode::Up if matches!(self.screen, Screen::Config | Screen::Log) => {
                return self.scrolled(-1);
            }
            _ => {}
        }
        if self.screen == Screen::Versions {
            let select = |a: &mut App, to: usize| {
                a.version_selected = to.min(a.version_count().saturating_sub(1));
                a.scroll = 0;
            };
            match key.code {
                KeyCode::Char('j') | KeyCode::Down => {
                    select(self, self.version_selected.saturating_add(1));
                    return Outcome::None;
                }
                KeyCode::Char('k') | KeyCode::Up => {
                    select(self, self.version_selected.saturating_sub(1));
                    return Outcome::None;
                }
                KeyCode::Char('g') | KeyCode::Home => {
                    select(self, 0);
                    return Outcome::None;
                }
                KeyCode::Char('G') | KeyCode::End => {
                    select(self, usize::MAX);
                    return Outcome::None;
                }
                _ => {}
            }
        }
        if self.screen == Screen::Log {
            match key.code {
                KeyCode::Char('f') => {
                    self.log_follow = !self.log_follow;
                    if !self.log_follow {
                        self.scroll = self.scroll_limit.get().0;
                    }
                    return Outcome::None;
                }
                KeyCode::Char('w') => {
                    self.log_wrap = !self.log_wrap;
                    return Outcome::None;
                }
                KeyCode::Char('/') => {
                    self.mode = Mode::LogSearch;
                    return Outcome::None;
                }
                KeyCode::Char('g') | KeyCode::Home => {
                    self.log_follow = false;
                    self.scroll = 0;
                    return Outcome::None;
                }
                KeyCode::Char('G') | KeyCode::End => {
                    self.log_follow = true;
                    return Outcome::None;
                }
                _ => {}
            }
        }
        if let Some(what) = self.loading()
            && matches!(key.code, KeyCode::Char('p' | 'r' | 'v' | 'R' | 'n' | 'b' | 'e' | 'j' | 'k' | 'g' | 'G'))
        {
            // Keys typed before the screen's data arrived (often the first letters of a
            // confirmation) must not run as shortcuts.
            self.status = Some(format!("{what}: key ignored until it shows"));
            return Outcome::None;
        }
        match key.code {
            KeyCode::Char('q') => return self.quit(),
            KeyCode::Char('?') => {
                self.help = true;
                self.overlay_scroll = 0;
            }
            KeyCode::Char('m') => {
                self.show_messages = true;
                // Newest at the bottom, in sight.
                self.overlay_scroll = usize::MAX / 2;
            }
            KeyCode::Char('/') => {
                self.filter_edit.set_text(&self.filter.clone());
                self.mode = Mode::Filter;
            }
            KeyCode::Char(':') => {
                self.palette.clear();
                self.mode = Mode::Palette;
            }
            KeyCode::Char('l') => {
                if self.selected_row().is_some() {
                    self.go(Screen::Log, true);
                } else {
                    self.status = Some("no task or node to show the log of".into());
                }
            }
            KeyCode::Char('c') if self.screen == Screen::Task => self.open_versions(VersionsOf::Conflicts),
            KeyCode::Char('d') if self.screen == Screen::Verify => self.open_versions(VersionsOf::Differences),
            KeyCode::Char('S') if matches!(self.screen, Screen::Overview | Screen::Task) => return self.skip_key(None),
            KeyCode::Char('s') if self.screen == Screen::Overview => {
                self.sort = self.sort.next();
                self.status = Some(format!("sorted by {} (s: next column)", self.sort.column()));
            }
            KeyCode::Char('j') | KeyCode::Down => match self.screen {
                Screen::Audit => {
                    self.audit_scroll = self.audit_scroll.saturating_add(1);
                    self.scroll = 0;
                }
                _ => self.move_selection(1),
            },
            KeyCode::Char('k') | KeyCode::Up => match self.screen {
                Screen::Audit => {
                    self.audit_scroll = self.audit_scroll.saturating_sub(1);
                    self.scroll = 0;
                }
                _ => self.move_selection(-1),
            },
            KeyCode::PageDown if self.screen == Screen::Verify => {
                // Never past the report's last line, so that PgUp answers at once.
                let lines = self.selected_verify_report().map_or(0, |r| r.lines().count());
                self.verify_scroll = self.verify_scroll.saturating_add(5).min(lines.saturating_sub(1));
            }
            KeyCode::PageUp if self.screen == Screen::Verify => {
                self.verify_scroll = self.verify_scroll.saturating_sub(5);
            }
            KeyCode::Char('g') | KeyCode::Home => {
                self.selected = 0;
                self.audit_scroll = 0;
            }
            KeyCode::Char('G') | KeyCode::End => self.move_selection(isize::MAX / 2),
            KeyCode::Enter if self.screen == Screen::Overview && self.selected_task().is_some() => {
                self.go(Screen::Task, true);
            }
            KeyCode::Esc => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                } else {
                    // One level back along the drill-down, else to the Overview.
                    let to = self.back.pop().unwrap_or(Screen::Overview);
                    let back = std::mem::take(&mut self.back);
                    self.go(to, false);
                    self.back = back;
                }
            }
            KeyCode::Tab => {
                let tabs = self.tabs();
                self.go(tabs[(self.screen.index() + 1) % tabs.len()], false)
            }
            KeyCode::BackTab => {
                let tabs = self.tabs();
                self.go(tabs[(self.screen.index() + tabs.len() - 1) % tabs.len()], false)
            }
            KeyCode::Char(c @ '1'..='7') => {
                if let Some(s) = self.tabs().get((c as usize) - ('1' as usize)) {
                    self.go(*s, false);
                }
            }
            KeyCode::Char('p') => return self.task_request(Request::Pause, None),
            KeyCode::Char('r') => return self.task_request(Request::Resume, None),
            KeyCode::Char('v') => {
                self.verify_scroll = 0;
                return self.task_request(Request::Verify, None);
            }
            KeyCode::Char('R') if self.screen == Screen::Verify => {
                if let Some((node, t)) = self.selected_task() {
                    let name = t.name.clone();
                    self.mode = Mode::Confirm(Confirm {
                        prompt: format!("Verify task {name} and repair its target: type the task name"),
                        expected: name.clone(),
                        typed: LineEdit::default(),
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

    /// Opens the Versions screen (a drill-down: `Esc` comes back).
    fn open_versions(&mut self, of: VersionsOf) {
        if self.selected_task().is_none() {
            self.status = Some("select a task first".into());
            return;
        }
        self.versions_of = of;
        self.version_selected = 0;
        self.go(Screen::Versions, true);
    }

    /// The conflicts of the selected task the Versions screen lists (the Task screen's
    /// table filter applies), newest first.
    pub fn version_conflicts(&self) -> Vec<&crate::control::ConflictEntry> {
        let Some((node, task)) = self.selected_task() else { return Vec::new() };
        let table = self.conflict_table.as_deref();
        self.nodes[node]
            .conflicts
            .iter()
            .filter(|c| c.task == task.name && table.is_none_or(|t| c.table == t))
            .collect()
    }

    /// The differences of the selected task's last verify the Versions screen lists.
    pub fn version_differences(&self) -> &[crate::control::verify::DifferingRow] {
        let Some((node, task)) = self.selected_task() else { return &[] };
        match self.nodes[node].verify.as_ref().filter(|v| v.task == task.name) {
            Some(v) => &v.rows,
            None => &[],
        }
    }

    /// How many entries the Versions screen lists.
    pub fn version_count(&self) -> usize {
        match self.versions_of {
            VersionsOf::Conflicts => self.version_conflicts().len(),
            VersionsOf::Differences => self.version_differences().len(),
        }
    }

    /// `S` (or `:skip TASK`): shows the transaction the selected task's target refused
    /// and asks for the task name before skipping it.
    fn skip_key(&mut self, name: Option<&str>) -> Outcome {
        let target = match name {
            Some(n) => self.find_task(n),
            None => self.selected_task().map(|(node, t)| (node, t.name.clone())),
        };
        let Some((node, task)) = target else {
            self.status = Some(name.map_or("select a task first".into(), |n| format!("no task {n:?}")));
            return Outcome::None;
        };
        let failed =
            self.nodes[node].overview.as_ref().and_then(|o| o.tasks.iter().find(|t| t.name == task)).and_then(|t| {
                t.directions.iter().find_map(|d| {
                    d.failed_change
                        .clone()
                        .filter(|_| d.state == DirectionState::Failed)
                        .map(|f| (d.direction.clone(), f))
                })
            });
        let Some((direction, f)) = failed else {
            self.status = Some(format!(
                "no refused transaction to skip: task {task} is not stopped on a change its target refused"
            ));
            return Outcome::None;
        };
        if !f.skippable {
            self.status = Some(format!(
                "task {task} {direction}: the refused change is inside a source transaction applied in parts, which cannot be skipped by position: correct the row or the target, then r retries"
            ));
            return Outcome::None;
        }
        let to = direction.split("->").nth(1).unwrap_or("the target").to_string();
        self.mode = Mode::Confirm(Confirm {
            prompt: format!(
                "Skip the transaction task {task} {direction} stopped on: source position {}, table {}, key {}: {}. Its changes will never reach {to} (verify shows the difference); recorded in the audit log, then the task runs again. Type the task name",
                f.position,
                f.table,
                f.key,
                f.message.lines().next().unwrap_or_default()
            ),
            expected: task.clone(),
            typed: LineEdit::default(),
            then: Confirmed::Send(
                node,
                Request::Skip(task, crate::control::SkipRequest { position: f.position, direction: Some(direction) }),
            ),
        });
        Outcome::None
    }

    fn scrolled(&mut self, delta: isize) -> Outcome {
        self.scroll_by(delta);
        Outcome::None
    }

    /// The report of the verify run followed for the selected task, once it ended.
    fn selected_verify_report(&self) -> Option<&str> {
        let (node, task) = self.selected_task()?;
        let v = self.nodes.get(node)?.verify.as_ref().filter(|v| v.task == task.name)?;
        v.report.as_deref()
    }

    /// What the current screen is still waiting for, if its data has not arrived: its
    /// action keys are ignored meanwhile.
    pub fn loading(&self) -> Option<String> {
        if self.screen != Screen::Cutover {
            return None;
        }
        let (_, task) = self.selected_task()?;
        match self.selected_cutover() {
            Some(_) => None,
            None => Some(format!("still reading the cutover of {}", task.name)),
        }
    }

    /// The selected task's cutover as its node last reported it.
    pub fn selected_cutover(&self) -> Option<(usize, &CutoverView)> {
        let (node, task) = self.selected_task()?;
        let view = self.nodes.get(node)?.cutover.as_ref().filter(|v| v.task == task.name)?;
        Some((node, view))
    }

    /// `n` (next step) and `b` (rollback) on the Cutover screen, as [`wizard_keys`] plans
    /// them for the cutover as it stands: the wizard shows the same plan.
    fn cutover_key(&mut self, rollback: bool) -> Outcome {
        let Some((node, view)) = self.selected_cutover() else {
            self.status = Some("no cutover data for the selected task yet; select a task and wait a second".into());
            return Outcome::None;
        };
        let task = view.task.clone();
        let (n, b) = wizard_keys(view);
        match if rollback { b } else { n } {
            KeyPlan::Refuse(why) => {
                self.status = Some(why);
                Outcome::None
            }
            KeyPlan::Run { request, confirm: Some(prompt), .. } => {
                self.mode = Mode::Confirm(Confirm {
                    prompt,
                    expected: task,
                    typed: LineEdit::default(),
                    then: Confirmed::Send(node, request),
                });
                Outcome::None
            }
            KeyPlan::Run { request, confirm: None, .. } => Outcome::Send(node, request),
        }
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
            "cluster" | "nodes" => Some(Screen::Cluster),
            _ => None,
        };
        if let Some(s) = screen {
            if let Some(name) = arg
                && !self.select_task(name)
            {
                self.status = Some(format!("no task {name:?}"));
            }
            self.go(s, false);
            return Outcome::None;
        }
        match cmd {
            "q" | "quit" => self.quit(),
            "help" => {
                self.help = true;
                self.overlay_scroll = 0;
                Outcome::None
            }
            "messages" | "m" => {
                self.show_messages = true;
                self.overlay_scroll = usize::MAX / 2;
                Outcome::None
            }
            "log" | "l" => {
                if let Some(name) = arg
                    && !self.select_task(name)
                {
                    self.status = Some(format!("no task {name:?}"));
                    return Outcome::None;
                }
                self.go(Screen::Log, true);
                Outcome::None
            }
            "sort" => {
                self.sort = match arg {
                    Some("lag") => SortBy::Lag,
                    Some("rate") => SortBy::Rate,
                    Some("state") => SortBy::State,
                    Some("task") | Some("name") => SortBy::Name,
                    _ => SortBy::Node,
                };
                self.status = Some(format!("sorted by {}", self.sort.column()));
                Outcome::None
            }
            "conflicts" => {
                self.conflict_table = arg.map(str::to_string);
                self.scroll = 0;
                self.go(Screen::Task, false);
                Outcome::None
            }
            "skip" => self.skip_key(arg),
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
                    typed: LineEdit::default(),
                    then: Confirmed::Send(node, Request::Freeze(ep.to_string())),
                });
                Outcome::None
            }
            "theme" => {
                match arg.map(|n| Theme::load(n, self.theme_dir.as_deref())) {
                    Some(Ok(t)) => self.theme = t.for_depth(super::color_depth::ColorDepth::detect()),
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

/// The palette's commands, for Tab completion.
pub const COMMANDS: &[&str] = &[
    "overview",
    "task",
    "verify",
    "audit",
    "config",
    "cutover",
    "log",
    "messages",
    "conflicts",
    "sort",
    "pause",
    "resume",
    "verify-start",
    "skip",
    "freeze",
    "unfreeze",
    "theme",
    "help",
    "quit",
];

/// What a key of the cutover wizard does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlan {
    /// Nothing to run; says why.
    Refuse(String),
    /// Sends `request`, after `confirm` (a prompt for the typed task name) when set.
    Run {
        /// The request sent.
        request: Request,
        /// What it will do, for the wizard's hint line.
        hint: String,
        /// The confirmation prompt, when the task name must be typed first.
        confirm: Option<String>,
    },
}

/// What a forward step changes, in the operator's words (`from`/`to`: the task file's).
fn effect(step: Step, from: &str, to: &str) -> String {
    match step {
        Step::Preflight => "checks only, changes nothing".into(),
        Step::Freeze => format!("application writes on {from} are refused from now on"),
        Step::Drain => format!("waits until {to} applied everything {from} wrote"),
        Step::Verify => "compares both sides".into(),
        Step::Switch => format!("{from}->{to} stops, the direction becomes {to}->{from}"),
        Step::OpenTarget => format!("applications may write on {to}"),
        _ => String::new(),
    }
}

/// `n` and `b` for a cutover as it stands: `n` runs the next step (Preflight when none
/// is under way); `b` runs a rollback, or the rest of one, to its end on one typed
/// confirmation.
pub fn wizard_keys(view: &CutoverView) -> (KeyPlan, KeyPlan) {
    let task = view.task.as_str();
    let (from, to) = match &view.state {
        Some(s) => (s.from.clone(), s.to.clone()),
        None => {
            let mut d = view.live.direction.split("->");
            (d.next().unwrap_or_default().to_string(), d.next().unwrap_or_default().to_string())
        }
    };
    let cutover = |action| Request::Cutover(task.to_string(), action);
    let rest_of_rollback = |from_step: Step| {
        let steps: Vec<&str> = crate::cutover::ROLLBACK
            .iter()
            .skip_while(|s| **s != from_step)
            .map(|s| match s {
                Step::RollbackFreezeTarget => "freeze",
                Step::RollbackDrain => "drain",
                Step::RollbackReopenSource => "reopen",
                _ => "restore",
            })
            .collect();
        steps.join(", ")
    };
    let Some(state) = &view.state else {
        let n = KeyPlan::Run {
            request: cutover(CutoverAction::Start),
            hint: "n: start with Preflight (checks only, changes nothing)".into(),
            confirm: None,
        };
        return (n, KeyPlan::Refuse(format!("no cutover of {task} to roll back")));
    };
    let step = state.step;
    let (title, _) = step.describe(&from, &to);
    let n = match step {
        Step::RolledBack => KeyPlan::Run {
            request: cutover(CutoverAction::Start),
            hint: "n: start a new cutover with Preflight (checks only)".into(),
            confirm: None,
        },
        Step::Done => KeyPlan::Refuse(format!("the cutover of {task} is done; b rolls it back")),
        s if s.rolling_back() => KeyPlan::Run {
            request: cutover(CutoverAction::Next),
            hint: format!("n: run only \"{title}\""),
            confirm: s
                .needs_typed_confirmation()
                .then(|| format!("Run \"{title}\": application writes on {to} are refused. Type the task name {task}")),
        },
        s => {
            let what = effect(s, &from, &to);
            KeyPlan::Run {
                request: cutover(CutoverAction::Next),
                hint: format!("n: run \"{title}\" ({what})"),
                confirm: s
                    .needs_typed_confirmation()
                    .then(|| format!("Run step \"{title}\" of the cutover of {task}: {what}. Type the task name")),
            }
        }
    };
    let b = match step {
        Step::RolledBack => KeyPlan::Refuse(format!("the cutover of {task} was rolled back; nothing to undo")),
        s if s.rolling_back() => {
            let rest = rest_of_rollback(s);
            KeyPlan::Run {
                request: Request::Rollback(task.to_string()),
                hint: format!("b: run the rest of the rollback to its end ({rest})"),
                confirm: Some(format!(
                    "Run the rest of the rollback of {task} to its end ({rest}); {from}->{to} runs again. Type the task name"
                )),
            }
        }
        _ => {
            let rest = rest_of_rollback(Step::RollbackFreezeTarget);
            KeyPlan::Run {
                request: Request::Rollback(task.to_string()),
                hint: format!("b: roll back to {from}->{to}, every step to the end"),
                confirm: Some(format!(
                    "Roll back the cutover of {task} to its end ({rest}): writes on {to} are refused, {from} takes them again, {from}->{to} runs again. Type the task name"
                )),
            }
        }
    };
    (n, b)
}
