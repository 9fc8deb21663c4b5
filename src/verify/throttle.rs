//! `--max-rows-per-sec`: verification sleeps so that it never reads rows faster than
//! the limit, averaged from the start (short bursts are fine, the mean is not exceeded).

use std::time::{Duration, Instant};

/// A rows-per-second limit (0 = none).
#[derive(Debug)]
pub struct Throttle {
    limit: u64,
    start: Instant,
    rows: u64,
}

impl Throttle {
    /// A limit of `limit` rows per second; 0 disables it.
    pub fn new(limit: u64) -> Self {
        Throttle { limit, start: Instant::now(), rows: 0 }
    }

    /// Accounts for `rows` just read and sleeps until the mean rate is within the limit.
    pub async fn admit(&mut self, rows: u64) {
        self.rows += rows;
        if self.limit == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.rows as f64 / self.limit as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_mean_rate() {
        let mut t = Throttle::new(1_000);
        let start = Instant::now();
        for _ in 0..4 {
            t.admit(50).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(190), "{:?}", start.elapsed());
        let mut free = Throttle::new(0);
        let start = Instant::now();
        free.admit(1_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
