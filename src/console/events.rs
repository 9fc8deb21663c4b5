//! What the console saw change between two polls of a node (a direction's state, a
//! pause, a new error, the node going stale or answering again, the outcome of an
//! action): the event lines of the Log view (`l`), next to the audit and conflict logs.

use super::source::NodeFeed;

/// How many events the console keeps (the oldest go first).
const KEEP: usize = 2000;

/// One thing that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the console saw it (µs).
    pub at_us: i64,
    /// The node's name.
    pub node: String,
    /// The task it is about, if any.
    pub task: Option<String>,
    /// What happened.
    pub text: String,
    /// Whether it is an error.
    pub error: bool,
}

/// Appends to `events` what changed from `old` to `new` (the same nodes, in order).
pub fn observe(events: &mut Vec<Event>, old: &[NodeFeed], new: &[NodeFeed], now_us: i64) {
    for (i, n) in new.iter().enumerate() {
        let before = old.get(i);
        let node = n.name().to_string();
        let mut say = |task: Option<&str>, text: String, error: bool| {
            events.push(Event { at_us: now_us, node: node.clone(), task: task.map(str::to_string), text, error });
        };
        if n.error.is_some() && before.is_none_or(|b| b.error != n.error) {
            say(None, n.error.clone().unwrap_or_default(), true);
        } else if n.error.is_none() && before.is_some_and(|b| b.error.is_some()) && n.overview.is_some() {
            say(None, "answers again".into(), false);
        }
        if let Some(m) = &n.message
            && before.is_none_or(|b| b.message.as_ref() != Some(m))
        {
            say(None, m.clone(), m.starts_with("error"));
        }
        let Some(o) = &n.overview else { continue };
        let old_tasks = before.and_then(|b| b.overview.as_ref()).map(|o| o.tasks.as_slice()).unwrap_or(&[]);
        for t in &o.tasks {
            let was = old_tasks.iter().find(|x| x.name == t.name);
            if let Some(w) = was
                && w.paused != t.paused
            {
                say(Some(&t.name), if t.paused { "paused".into() } else { "resumed".into() }, false);
            }
            for d in &t.directions {
                let wd = was.and_then(|w| w.directions.iter().find(|x| x.direction == d.direction));
                match wd {
                    None => say(Some(&t.name), format!("{}: {}", d.direction, d.state), false),
                    Some(w) if w.state != d.state => {
                        say(Some(&t.name), format!("{}: {} -> {}", d.direction, w.state, d.state), false)
                    }
                    _ => {}
                }
                if let Some(e) = &d.last_error
                    && wd.is_none_or(|w| w.last_error.as_ref() != Some(e))
                {
                    say(Some(&t.name), format!("{}: {}", d.direction, e.replace('\n', " ")), true);
                }
            }
        }
    }
    if events.len() > KEEP {
        events.drain(..events.len() - KEEP);
    }
}
