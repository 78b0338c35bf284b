//! Sliding-window restart budget ("at most N restarts within T").

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RestartBudget {
    max: u32,
    window: Duration,
    history: VecDeque<Instant>,
}

impl RestartBudget {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self { max, window, history: VecDeque::new() }
    }

    /// Records a restart at `now` if the budget allows it; `false` means exhausted.
    pub(crate) fn try_consume(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.history.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.history.pop_front();
            } else {
                break;
            }
        }
        if self.history.len() >= self.max as usize {
            return false;
        }
        self.history.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let mut b = RestartBudget::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.try_consume(t0));
        assert!(b.try_consume(t0 + Duration::from_secs(1)));
        assert!(!b.try_consume(t0 + Duration::from_secs(2)));
        assert!(b.try_consume(t0 + Duration::from_secs(10)));
        assert!(!b.try_consume(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn zero_budget_never_allows() {
        let mut b = RestartBudget::new(0, Duration::from_secs(10));
        assert!(!b.try_consume(Instant::now()));
    }
}
