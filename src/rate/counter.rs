//! Events per key in fixed one-second windows (logins per connection and per address,
//! requests per user).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Counts events per key in fixed one-second windows.
#[derive(Default)]
pub struct RateCounter {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateCounter {
    /// Counts one event for `key`; false when it is past `limit` in this second.
    pub fn admit(&self, key: &str, limit: u64) -> bool {
        let mut windows = self.windows.lock();
        let now = Instant::now();
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let (start, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= limit
    }
}
