//! When to solve: pending pods are gathered into a batch that closes after `idle` without a
//! new pod, or `max` after its first pod, whichever comes first (Karpenter's batch idle and
//! max durations, 1 s and 10 s by default). Pure: callers pass the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Batcher {
    idle: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Batcher {
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            idle,
            max,
            first: None,
            last: None,
        }
    }

    /// A pod became pending (or changed) at `now`.
    pub fn observe(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the open batch closes; `None` when nothing is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.idle).min(first + self.max))
    }

    /// Closes the batch if it is due at `now`: true means solve now.
    pub fn take_if_due(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(at) if now >= at => {
                self.first = None;
                self.last = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_after_idle_or_at_the_maximum() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Batcher::new(s(1), s(10));
        assert!(!b.take_if_due(t0));
        b.observe(t0);
        assert!(!b.take_if_due(t0 + Duration::from_millis(900)));
        assert!(b.take_if_due(t0 + s(1)));
        assert_eq!(b.deadline(), None);
        // A steady trickle: closed by the maximum.
        for i in 0..20 {
            b.observe(t0 + Duration::from_millis(500 * i));
        }
        assert_eq!(b.deadline(), Some(t0 + s(10)));
        assert!(b.take_if_due(t0 + s(10)));
    }
}
