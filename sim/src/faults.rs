//! Fault injection: make chosen requests fail (500, 429, 503, ...) or stall, and cut open
//! watches, so clients' retry, backoff and relist paths can be tested against the API server.
//!
//! ```
//! # use berth_sim::faults::{Fault, Faults};
//! # use std::time::Duration;
//! let faults = Faults::default();
//! // The next two pod lists answer 500.
//! faults.add(Fault::status(500).method("GET").path("/api/v1/pods").times(2));
//! // Every NodeClaim write stalls for a second.
//! faults.add(Fault::delay(Duration::from_secs(1)).path("/nodeclaims"));
//! faults.cut_watches();
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a matching request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// An error `Status` with this HTTP code (429 carries `Retry-After: 1`).
    Status(u16),
    /// The request waits this long, then is served (a long one is a timeout for the client).
    Delay(Duration),
}

/// One rule: requests whose method and path match get `effect`, `times` times (or always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub effect: Effect,
    /// `GET`, `POST`, ...; any when `None`.
    pub method: Option<String>,
    /// A substring of the request path; any when empty.
    pub path: String,
    /// How many requests it hits before it is used up; `None`: every one.
    pub times: Option<usize>,
}

impl Fault {
    pub fn status(code: u16) -> Self {
        Self {
            effect: Effect::Status(code),
            method: None,
            path: String::new(),
            times: None,
        }
    }

    pub fn delay(by: Duration) -> Self {
        Self {
            effect: Effect::Delay(by),
            ..Self::status(0)
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub fn path(mut self, contains: &str) -> Self {
        contains.clone_into(&mut self.path);
        self
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }
}

/// The server's fault rules and watch cutter; clones share them.
#[derive(Debug, Clone)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Fault>>>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Arc::default(),
            cuts: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Faults {
    pub fn add(&self, fault: Fault) {
        self.lock().push(fault);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Ends every open watch abruptly (the connection drops mid-stream); clients must
    /// re-watch from their last resourceVersion.
    pub fn cut_watches(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    pub(crate) fn cuts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    /// The effect for this request, using up one hit of the first matching rule.
    pub(crate) fn take(&self, method: &str, path: &str) -> Option<Effect> {
        let mut rules = self.lock();
        let i = rules.iter().position(|f| {
            f.method.as_deref().is_none_or(|m| m == method)
                && (f.path.is_empty() || path.contains(&f.path))
        })?;
        let effect = rules[i].effect.clone();
        if let Some(n) = rules[i].times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rules.remove(i);
            }
        }
        Some(effect)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_rule_is_used_up_and_the_first_match_wins() {
        let f = Faults::default();
        f.add(Fault::status(500).method("get").path("/pods").times(1));
        f.add(Fault::status(429));
        assert_eq!(f.take("GET", "/api/v1/pods"), Some(Effect::Status(500)));
        assert_eq!(f.take("GET", "/api/v1/pods"), Some(Effect::Status(429)));
        f.clear();
        assert_eq!(f.take("GET", "/api/v1/pods"), None);
    }
}
