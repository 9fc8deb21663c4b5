//! `ferry console [--node URL]... [--token TOKEN] [--config FILE] [--theme NAME]`:
//! watches nodes through their API and/or hosts a task file's engine in-process.

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use super::CommandError;
use crate::client::NodeClient;
use crate::config::Config;
use crate::console::app::{App, ConfigView};
use crate::console::source::Feeds;
use crate::console::{Exit, choose_theme, config_dir, run_in_terminal};
use crate::control::VerifyEngine;
use crate::control::local::LocalNode;
use crate::engine::EngineError;
use crate::store::actor;

/// Flags of `ferry console`.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Node API URLs to watch.
    pub nodes: Vec<String>,
    /// Bearer token for them (or FERRY_TOKEN).
    pub token: Option<String>,
    /// CA of the nodes' HTTPS certificates.
    pub ca: Option<PathBuf>,
    /// A task file to run in-process.
    pub config: Option<PathBuf>,
    /// Theme name.
    pub theme: Option<String>,
}

fn input(problem: String, fix: &str) -> CommandError {
    CommandError::Input { problem, fix: fix.into() }
}

/// `ferry console`.
pub async fn console(opts: ConsoleOptions, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    if opts.nodes.is_empty() && opts.config.is_none() {
        return Err(input(
            "ferry console needs a node to watch or a task file to run".into(),
            "pass --node http://HOST:7400 (repeatable) or --config FILE",
        ));
    }
    if !std::io::stderr().is_terminal() {
        return Err(input(
            "ferry console draws on a terminal, and standard error is not one".into(),
            "run it in a terminal (over SSH: ssh -t), or use `ferry status` for scripts",
        ));
    }
    let theme = choose_theme(opts.theme.as_deref()).map_err(|e| input(e.to_string(), "pick a theme with --theme"))?;
    let mut app = App::new(theme);
    app.theme_dir = config_dir().map(|d| d.join("themes"));
    let mut feeds = remote_feeds(&opts)?;
    let mut local = None;
    if let Some(path) = &opts.config {
        local = Some(start_local(path, &mut feeds).await?);
        app.config = Some(ConfigView::open(path.clone()));
        app.reload_on_save = true;
    }
    tokio::pin!(signal);
    let shown = loop {
        let shown = run_in_terminal(&mut app, &feeds, &mut signal).await;
        let (Ok(Exit::Reload), Some(path)) = (&shown, &opts.config) else { break shown };
        // The saved file replaces the running one: stop its tasks, start the new file's.
        feeds.stop().await;
        feeds = remote_feeds(&opts)?;
        if let Some(node) = local.take() {
            stop_local(node).await?;
        }
        match start_local(path, &mut feeds).await {
            Ok(node) => local = Some(node),
            Err(e) => break Err(std::io::Error::other(format!("the saved task file could not start: {e}"))),
        }
    };
    feeds.stop().await;
    let mut errors = Vec::new();
    if let Some(node) = local {
        errors = stop_local(node).await?;
    }
    shown.map_err(|e| CommandError::Runtime(format!("the terminal failed: {e}")))?;
    match errors.into_iter().next() {
        None => Ok(0),
        Some(e) => Err(e.into()),
    }
}

/// Feeds of the `--node` URLs.
fn remote_feeds(opts: &ConsoleOptions) -> Result<Feeds, CommandError> {
    let mut feeds = Feeds::new();
    for url in &opts.nodes {
        let client = NodeClient::new(url, opts.token.clone(), opts.ca.as_deref())
            .map_err(|e| input(e.to_string(), "check the --node URL (http://HOST:PORT)"))?;
        let label = client.base().to_string();
        feeds.add(&label, Arc::new(client), String::new());
    }
    Ok(feeds)
}

/// Starts the task file's tasks in this process and adds them to the feeds.
async fn start_local(path: &std::path::Path, feeds: &mut Feeds) -> Result<Arc<LocalNode>, CommandError> {
    let config = Config::load(path)?;
    let who = actor(&config.node.id);
    let node = Arc::new(LocalNode::start(config, Box::new(VerifyEngine::default())).await?);
    node.store().audit(&who, "console.start", None, "engine in-process").await?;
    feeds.add(crate::console::source::IN_PROCESS, node.clone(), who);
    Ok(node)
}

/// Stops the in-process tasks; returns the errors they ended with.
async fn stop_local(node: Arc<LocalNode>) -> Result<Vec<EngineError>, CommandError> {
    let errors = node.shutdown().await;
    let who = actor(&node.config().node.id);
    node.store().audit(&who, "console.stop", None, &format!("{} error(s)", errors.len())).await?;
    Ok(errors)
}
