//! `ferry check`: the task file and every endpoint, read-only. `ferry run` runs the same
//! preflight before it writes anything.

use std::path::Path;

use crate::config::{Config, Task};
use crate::connector::endpoint::mask_password;
pub use crate::engine::preflight::{Problem, TaskReport, preflight};

use super::CommandError;

/// `ferry check --config FILE`.
pub async fn check(config_path: &Path) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    for w in secret_warnings(&config) {
        eprintln!("WARNING  {w}");
    }
    let tasks: Vec<&Task> = config.tasks.iter().collect();
    let (reports, problems) = preflight(&config, &tasks).await;
    println!(
        "task file {}: valid ({} endpoint(s), {} task(s))",
        config.path.display(),
        config.endpoints.len(),
        config.tasks.len()
    );
    for r in &reports {
        println!("ok       task {}: {}", r.task, r.summary);
    }
    print_problems(&problems);
    if problems.is_empty() { Ok(0) } else { Err(CommandError::Preflight(problems.len())) }
}

/// Warnings (never refusals) about where passwords sit: a task file holding one in an
/// endpoint URL that other users can read.
pub fn secret_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let holders: Vec<&str> = config
        .endpoints
        .iter()
        .filter(|e| mask_password(e.url.secret_text()) != e.url.secret_text())
        .map(|e| e.name.as_str())
        .collect();
    let Ok(meta) = std::fs::metadata(&config.path) else { return Vec::new() };
    let mode = meta.permissions().mode() & 0o777;
    if holders.is_empty() || mode & 0o044 == 0 {
        return Vec::new();
    }
    vec![format!(
        "task file {} holds the password of endpoint(s) {} and other users can read it (mode {mode:04o}); \
         fix: chmod 600 {}, or move the password to password_env / password_file",
        config.path.display(),
        holders.join(", "),
        config.path.display()
    )]
}

/// Prints preflight problems to standard error.
pub fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("PROBLEM  {}: {}", p.subject, p.message);
    }
}
