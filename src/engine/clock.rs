//! Clock skew between the two sides of a task (issue 15, item 5).
//!
//! Last-writer-wins compares the commit times the two data centers stamp their rows
//! with, each by its own clock: a side whose clock runs ahead wins conflicts it should
//! lose. So every direction's heartbeat writer also reads its source's clock (the
//! connector's [`crate::connector::Source::clock`]: the clock that stamps versions) once
//! a second, and the engine compares it with its own clock, NTP-style: offset = server
//! time − the midpoint of ferry's clock before and after the query (off by at most half
//! the round trip). A two-way task has both sides' offsets; their difference is the
//! skew last-writer-wins is off by. Above `clock_skew_alarm` the task alarms (log,
//! `/metrics`, API, console, `ferry status`); above `clock_skew_pause` its directions
//! stop applying (they keep their lease, heartbeats and measuring) and go on by
//! themselves once the skew falls back.
//!
//! Tests fake an endpoint's clock with [`FAKE_ENV`]: the path of a file of
//! `endpoint = milliseconds` lines, read at every measurement and added to what that
//! endpoint's server says. Nothing else reads it; without it nothing is faked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often a direction's heartbeat writer reads its source's clock.
pub const MEASURE_EVERY: Duration = Duration::from_secs(1);
/// A reading older than this is stale: the skew is unknown then.
const STALE: Duration = Duration::from_secs(10);
/// A reading whose round trip took longer than this is dropped (its error is half of it).
const MAX_RTT_US: i64 = 400_000;
/// Test hook: a file of `endpoint = milliseconds` lines added to those endpoints' clocks.
pub const FAKE_ENV: &str = "FERRY_TEST_CLOCK_OFFSETS";

/// A task's skew bounds (`clock_skew_alarm`, `clock_skew_pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkewBounds {
    /// Above it (absolute), a two-way task alarms.
    pub alarm: Duration,
    /// Above it, a two-way task's directions stop applying; `None`: never.
    pub pause: Option<Duration>,
}

impl Default for SkewBounds {
    fn default() -> Self {
        SkewBounds { alarm: Duration::from_millis(500), pause: Some(Duration::from_secs(2)) }
    }
}

/// How a task's skew stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkewLevel {
    /// Not measured: a one-way task, a store that cannot tell its time, or a side not
    /// read for a while.
    #[default]
    Unknown,
    /// Within `clock_skew_alarm`.
    Ok,
    /// Above `clock_skew_alarm`.
    Alarm,
    /// Above `clock_skew_pause`: applying is paused.
    Paused,
}

impl SkewLevel {
    /// `ok`, `alarm`, `paused`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkewLevel::Unknown => "unknown",
            SkewLevel::Ok => "ok",
            SkewLevel::Alarm => "alarm",
            SkewLevel::Paused => "paused",
        }
    }
}

/// One reading of an endpoint's clock.
#[derive(Debug, Clone, Copy)]
struct Reading {
    offset_us: i64,
    at: Instant,
}

/// The clocks of one task's endpoints, shared by its directions.
#[derive(Debug)]
pub struct TaskClock {
    task: String,
    two_way: bool,
    bounds: SkewBounds,
    readings: Mutex<HashMap<String, Reading>>,
    /// The level last announced in the log (so two directions say it once).
    announced: Mutex<SkewLevel>,
}

/// What a direction shows of its task's clocks.
#[derive(Debug, Clone, PartialEq)]
pub struct SkewView {
    /// The source's clock minus ferry's, µs.
    pub offset_us: Option<i64>,
    /// Two-way: the source's clock minus the target's, µs.
    pub skew_us: Option<i64>,
    /// Where it stands against the bounds.
    pub level: SkewLevel,
    /// The alarm or pause, in words, with its fix.
    pub message: Option<String>,
}

impl TaskClock {
    /// The clocks of a task; only a two-way task compares them.
    pub fn new(task: &str, two_way: bool, bounds: SkewBounds) -> Self {
        TaskClock {
            task: task.to_string(),
            two_way,
            bounds,
            readings: Mutex::new(HashMap::new()),
            announced: Mutex::new(SkewLevel::Unknown),
        }
    }

    /// The task's bounds.
    pub fn bounds(&self) -> SkewBounds {
        self.bounds
    }

    /// Records a reading of `endpoint`'s clock: `server_us` read between ferry's `t0_us`
    /// and `t1_us`. A reading with a long round trip is dropped. Returns the offset kept.
    pub fn record(&self, endpoint: &str, server_us: i64, t0_us: i64, t1_us: i64) -> Option<i64> {
        let rtt = t1_us - t0_us;
        if !(0..=MAX_RTT_US).contains(&rtt) {
            return None;
        }
        let offset_us = server_us + fake_offset_us(endpoint) - (t0_us + rtt / 2);
        if let Ok(mut r) = self.readings.lock() {
            r.insert(endpoint.to_string(), Reading { offset_us, at: Instant::now() });
        }
        Some(offset_us)
    }

    /// The latest fresh offset of an endpoint's clock from ferry's, µs.
    pub fn offset(&self, endpoint: &str) -> Option<i64> {
        let r = self.readings.lock().ok()?;
        r.get(endpoint).filter(|r| r.at.elapsed() <= STALE).map(|r| r.offset_us)
    }

    /// The skew of a direction: its source's clock minus its target's, µs (two-way, both
    /// read lately).
    pub fn skew(&self, from: &str, to: &str) -> Option<i64> {
        if !self.two_way {
            return None;
        }
        Some(self.offset(from)? - self.offset(to)?)
    }

    /// Where a skew stands against the bounds.
    pub fn level_of(&self, skew_us: Option<i64>) -> SkewLevel {
        let Some(s) = skew_us else { return SkewLevel::Unknown };
        let s = s.unsigned_abs();
        if self.bounds.pause.is_some_and(|p| s > p.as_micros() as u64) {
            SkewLevel::Paused
        } else if s > self.bounds.alarm.as_micros() as u64 {
            SkewLevel::Alarm
        } else {
            SkewLevel::Ok
        }
    }

    /// What a direction `from -> to` shows.
    pub fn view(&self, from: &str, to: &str) -> SkewView {
        let skew_us = self.skew(from, to);
        let level = self.level_of(skew_us);
        SkewView { offset_us: self.offset(from), skew_us, level, message: self.message(from, to, skew_us, level) }
    }

    /// The alarm or pause in words, with its fix.
    fn message(&self, from: &str, to: &str, skew_us: Option<i64>, level: SkewLevel) -> Option<String> {
        let s = skew_us?;
        let (ahead, behind) = if s >= 0 { (from, to) } else { (to, from) };
        let size = seconds(s.unsigned_abs());
        let head = format!(
            "task {}: the clocks of {ahead} and {behind} are {size} apart ({ahead} ahead); last-writer-wins compares them",
            self.task
        );
        let fix = "fix: synchronise both servers' clocks (NTP: chrony or systemd-timesyncd) and check them with `chronyc tracking`";
        match level {
            SkewLevel::Alarm => Some(format!(
                "{head}, so a conflict between writes less than {size} apart may go to the wrong side (clock_skew_alarm {})\n  {fix}",
                seconds(self.bounds.alarm.as_micros() as u64)
            )),
            SkewLevel::Paused => Some(format!(
                "{head}: above clock_skew_pause {}, applying is paused rather than picking wrong winners; it goes on by itself once the skew is back under it\n  {fix}",
                seconds(self.bounds.pause.map_or(0, |p| p.as_micros() as u64))
            )),
            SkewLevel::Ok | SkewLevel::Unknown => None,
        }
    }

    /// Records that `level` was reached; returns the level before it the first time (so
    /// the log says it once for the task, not once per direction). A missed reading
    /// (`Unknown`) changes nothing: an alarm followed by a dropped reading and then a
    /// good one is still announced as back within the bound.
    pub fn announce(&self, level: SkewLevel) -> Option<SkewLevel> {
        let mut a = self.announced.lock().ok()?;
        if *a == level || level == SkewLevel::Unknown {
            return None;
        }
        let was = *a;
        *a = level;
        Some(was)
    }
}

/// `0.80 s`, `12 ms`.
pub fn seconds(us: u64) -> String {
    if us < 10_000 { format!("{} ms", us / 1000) } else { format!("{:.2} s", us as f64 / 1e6) }
}

/// The faked offset of an endpoint's clock (tests only: see [`FAKE_ENV`]), µs.
fn fake_offset_us(endpoint: &str) -> i64 {
    let Some(path) = std::env::var_os(FAKE_ENV) else { return 0 };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(name, _)| name.trim().trim_matches('"') == endpoint)
        .and_then(|(_, ms)| ms.trim().parse::<f64>().ok())
        .map_or(0, |ms| (ms * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_taken_at_the_midpoint_and_skew_is_judged_against_the_bounds() {
        let c = TaskClock::new("t", true, SkewBounds::default());
        assert_eq!(c.record("a", 1_000_050, 1_000_000, 1_000_100), Some(0));
        assert_eq!(c.record("b", 1_000_850, 1_000_000, 1_000_100), Some(800));
        assert_eq!(c.record("b", 0, 0, 900_000), None, "a slow round trip says little");
        assert_eq!(c.skew("a", "b"), Some(-800));
        assert_eq!(c.level_of(Some(400_000)), SkewLevel::Ok);
        assert_eq!(c.level_of(Some(-600_000)), SkewLevel::Alarm);
        assert_eq!(c.level_of(Some(2_000_001)), SkewLevel::Paused);
        assert_eq!(c.level_of(None), SkewLevel::Unknown);
        let never = TaskClock::new("t", true, SkewBounds { pause: None, ..SkewBounds::default() });
        assert_eq!(never.level_of(Some(60_000_000)), SkewLevel::Alarm, "clock_skew_pause = \"off\"");
        let one_way = TaskClock::new("t", false, SkewBounds::default());
        one_way.record("a", 5, 0, 0);
        one_way.record("b", 0, 0, 0);
        assert_eq!(one_way.skew("a", "b"), None, "a one-way task compares nothing");
    }

    #[test]
    fn the_message_names_the_side_ahead_and_the_fix() {
        let c = TaskClock::new("t", true, SkewBounds::default());
        c.record("a", 0, 0, 0);
        c.record("b", 3_000_000, 0, 0);
        let v = c.view("a", "b");
        assert_eq!(v.level, SkewLevel::Paused);
        let m = v.message.expect("message");
        assert!(m.contains("b and a are 3.00 s apart (b ahead)") && m.contains("paused") && m.contains("fix:"), "{m}");
        assert_eq!(c.announce(SkewLevel::Paused), Some(SkewLevel::Unknown));
        assert_eq!(c.announce(SkewLevel::Paused), None, "said once");
        assert_eq!(c.announce(SkewLevel::Unknown), None, "a missed reading is not news");
        assert_eq!(c.announce(SkewLevel::Ok), Some(SkewLevel::Paused), "back within, after the miss");
    }
}
