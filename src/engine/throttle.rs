//! A ceiling on a run's rate — rows a second for a table direction, bytes a second for a
//! blob one — kept over the whole run, and shared by the tasks that do its work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Keeps a run to `rate` units a second since it began (0: no limit).
pub struct Throttle {
    rate: u64,
    start: Instant,
    done: AtomicU64,
}

impl Throttle {
    /// A ceiling of `rate` units a second (0: none), counted from now.
    pub fn new(rate: u64) -> Throttle {
        Throttle { rate, start: Instant::now(), done: AtomicU64::new(0) }
    }

    /// Counts `n` units done and waits until the run is back under the ceiling (or `stop`).
    pub async fn wait(&self, n: u64, stop: &CancellationToken) {
        if self.rate == 0 {
            return;
        }
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let due = Duration::from_secs_f64(done as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(due - elapsed) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_is_held_to_its_rate_across_calls_and_a_stop_or_no_limit_does_not_wait() {
        let (t, stop) = (Throttle::new(1_000), CancellationToken::new());
        let began = Instant::now();
        t.wait(100, &stop).await;
        t.wait(100, &stop).await;
        assert!(began.elapsed() >= Duration::from_millis(200), "200 units at 1,000 a second take 0.2 s");
        stop.cancel();
        let at = Instant::now();
        t.wait(1_000_000, &stop).await;
        assert!(at.elapsed() < Duration::from_millis(100), "a stop ends the wait at once");
        let (free, go) = (Throttle::new(0), CancellationToken::new());
        let at = Instant::now();
        free.wait(u64::MAX / 2, &go).await;
        assert!(at.elapsed() < Duration::from_millis(100), "no limit, no wait");
    }
}
