//! Issue 22 end to end: `ferry demo` in tmux at 80x24. The palette edits like a shell
//! (Ctrl-W, Ctrl-U, Tab completion, ↑ history), the help scrolls with an indicator, the
//! Log view (`l`) follows the task's events, searches and wraps, and `Esc` goes back
//! one level along the breadcrumbs.

use std::time::Duration;

use crate::console_e2e::{Tmux, shell_quote};
use crate::support::ferry_bin;

const WAIT: Duration = Duration::from_secs(20);

/// The footer line (the last of the screen).
fn footer(s: &str) -> String {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string()
}

#[tokio::test]
async fn demo_console_edits_lines_scrolls_and_shows_a_live_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo_dir = dir.path().join("demo");
    let command = format!(
        "env FERRY_LOG=warn {} demo --dir {} --seed 5 > /dev/null; sleep 30",
        shell_quote(&ferry_bin()),
        shell_quote(&demo_dir)
    );
    let tmux = Tmux::start_sized(&command, 80, 24);
    tmux.wait_for("the demo streaming", Duration::from_secs(60), |s| s.contains("streaming")).await;

    // Line editing: Ctrl-W deletes a word and Ctrl-U the line (no letters inserted),
    // Tab completes the command and the task name, ↑ brings the last command back.
    tmux.keys(&[":"]);
    tmux.keys(&["-l", "pause nosuch"]);
    tmux.keys(&["C-w"]);
    tmux.wait_for("Ctrl-W to delete the word", WAIT, |s| footer(s).starts_with(":pause ") && !s.contains("nosuch"))
        .await;
    tmux.keys(&["C-u"]);
    tmux.keys(&["-l", "me"]);
    tmux.keys(&["Tab"]);
    tmux.wait_for("Tab to complete the command", WAIT, |s| footer(s).starts_with(":messages ")).await;
    tmux.keys(&["C-u"]);
    tmux.keys(&["-l", "log de"]);
    tmux.keys(&["Tab"]);
    tmux.wait_for("Tab to complete the task name", WAIT, |s| footer(s).starts_with(":log demo ")).await;

    // The Log view of the task: its events and audit entries, following the newest.
    tmux.keys(&["Enter"]);
    let log = tmux.wait_for("the log view", WAIT, |s| s.contains("Log of task demo") && s.contains("(following")).await;
    assert!(log.contains("Overview › Log demo"), "breadcrumbs:\n{log}");
    tmux.wait_for("the task's events", WAIT, |s| s.contains("event") && s.contains("streaming")).await;
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "streaming"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the search to count its matches", WAIT, |s| s.contains("/streaming:") && s.contains("found")).await;
    tmux.keys(&["w"]);
    tmux.wait_for("wrap to be on", WAIT, |s| s.contains("wrapped")).await;
    tmux.keys(&["f"]);
    tmux.wait_for("follow to be off", WAIT, |s| s.contains("f: follow")).await;
    tmux.keys(&["Escape"]);
    tmux.wait_for("Esc back to the overview", WAIT, |s| s.contains("1 Overview") && !s.contains("Log of task")).await;

    // ↑ in the palette brings back the last command.
    tmux.keys(&[":"]);
    tmux.keys(&["Up"]);
    tmux.wait_for("the palette's history", WAIT, |s| footer(s).starts_with(":log demo")).await;
    tmux.keys(&["Escape"]);
    // Esc and the next key arriving together read as Alt-key: wait for the Esc to land.
    tmux.wait_for("the palette closed", WAIT, |s| !footer(s).starts_with(':')).await;

    // The help does not fit 80x24: it says where it is and PgDn reaches its end.
    tmux.keys(&["?"]);
    let help = tmux.wait_for("the help with a scroll indicator", WAIT, |s| s.contains("Keys") && s.contains("↕")).await;
    assert!(!help.contains("Palette commands"), "the end of the help is below:\n{help}");
    tmux.keys(&["PageDown"]);
    tmux.keys(&["PageDown"]);
    tmux.wait_for("PgDn to reach the end of the help", WAIT, |s| s.contains("Palette commands")).await;
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", WAIT, |s| !s.contains("┌ Keys")).await;
}
