//! Login throttling beyond Kuzzle's per-connection limit: per client address (so that a
//! brute force over many HTTP requests or sockets is slowed too), and per username after
//! repeated failures, with a delay that doubles with each further failure. In a cluster the
//! counters are in Redis, shared by the nodes (`check_*` and `record_*`); while Redis does
//! not answer, each node counts alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::identity::RateCounter;
use crate::cluster::Link;
use crate::cluster::logins::SharedLogins;
use crate::config::Limits;

/// Usernames with failures tracked at once; past it, expired records are dropped, and
/// new usernames are not tracked until there is room (the per-address limit still
/// applies to them).
const MAX_TRACKED_USERNAMES: usize = 100_000;

/// A record is forgotten this long after its last failure once its delay is over.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

struct Failures {
    count: u32,
    last: Instant,
    /// No attempt is checked before this instant.
    blocked_until: Option<Instant>,
}

pub struct LoginThrottle {
    per_address: u32,
    before_delay: u32,
    first_delay: Duration,
    max_delay: Duration,
    addresses: RateCounter,
    failures: Mutex<HashMap<String, Failures>>,
    /// The cluster's Redis, once the node joined one.
    shared: OnceLock<Arc<Link>>,
    shared_logins: SharedLogins,
}

impl LoginThrottle {
    pub fn new(limits: &Limits) -> LoginThrottle {
        LoginThrottle {
            per_address: limits.logins_per_second_per_address,
            before_delay: limits.login_failures_before_delay,
            first_delay: Duration::from_millis(limits.login_failure_delay),
            max_delay: Duration::from_millis(limits.login_failure_max_delay),
            addresses: RateCounter::default(),
            failures: Mutex::new(HashMap::new()),
            shared: OnceLock::new(),
            shared_logins: SharedLogins::default(),
        }
    }

    /// From now on the counters are the cluster's.
    pub fn share(&self, link: Arc<Link>) {
        let _ = self.shared.set(link);
    }

    /// Redis, unless there is none or it is known not to answer.
    fn link(&self) -> Option<&Arc<Link>> {
        self.shared.get().filter(|link| link.health.is_up())
    }

    /// `admit_address`, cluster-wide when there is a cluster.
    pub async fn check_address(&self, address: Option<IpAddr>) -> bool {
        if let (Some(link), Some(ip), true) = (self.link(), address, self.per_address > 0) {
            match self
                .shared_logins
                .admit_address(link, &ip.to_string(), self.per_address)
                .await
            {
                Ok(admitted) => return admitted,
                Err(reason) => link.health.down(&reason),
            }
        }
        self.admit_address(address)
    }

    /// `admit_username`, cluster-wide when there is a cluster.
    pub async fn check_username(&self, username: &str) -> bool {
        if let Some(link) = self.link() {
            match self.shared_logins.admit_username(link, username).await {
                Ok(admitted) => return admitted && self.admit_username(username),
                Err(reason) => link.health.down(&reason),
            }
        }
        self.admit_username(username)
    }

    /// `failed`, cluster-wide when there is a cluster.
    pub async fn record_failure(&self, username: &str) {
        if let Some(link) = self.link() {
            let recorded = self
                .shared_logins
                .failed(
                    link,
                    username,
                    self.before_delay,
                    self.first_delay.as_millis() as u64,
                    self.max_delay.as_millis() as u64,
                    FORGET_AFTER.as_millis() as u64,
                )
                .await;
            match recorded {
                Ok(()) => return,
                Err(reason) => link.health.down(&reason),
            }
        }
        self.failed(username);
    }

    /// `succeeded`, cluster-wide when there is a cluster.
    pub async fn record_success(&self, username: &str) {
        self.succeeded(username);
        if let Some(link) = self.link()
            && let Err(reason) = self.shared_logins.succeeded(link, username).await
        {
            link.health.down(&reason);
        }
    }

    /// Counts one login attempt from `address`; false past the per-address limit.
    pub fn admit_address(&self, address: Option<IpAddr>) -> bool {
        match address {
            Some(address) if self.per_address > 0 => self
                .addresses
                .admit(&address.to_string(), self.per_address.into()),
            _ => true,
        }
    }

    /// False while `username` waits after repeated failures.
    pub fn admit_username(&self, username: &str) -> bool {
        let failures = self.failures.lock();
        failures
            .get(username)
            .and_then(|f| f.blocked_until)
            .is_none_or(|until| Instant::now() >= until)
    }

    pub fn failed(&self, username: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if !failures.contains_key(username) && failures.len() >= MAX_TRACKED_USERNAMES {
            failures.retain(|_, f| !is_forgotten(f, now));
            if failures.len() >= MAX_TRACKED_USERNAMES {
                return;
            }
        }
        let record = failures
            .entry(username.to_owned())
            .or_insert_with(|| Failures {
                count: 0,
                last: now,
                blocked_until: None,
            });
        if is_forgotten(record, now) {
            record.count = 0;
        }
        record.count = record.count.saturating_add(1);
        record.last = now;
        if record.count >= self.before_delay {
            let doublings = (record.count - self.before_delay).min(31);
            let delay = self
                .first_delay
                .saturating_mul(1 << doublings)
                .min(self.max_delay);
            record.blocked_until = Some(now + delay);
        }
    }

    pub fn succeeded(&self, username: &str) {
        self.failures.lock().remove(username);
    }
}

fn is_forgotten(failures: &Failures, now: Instant) -> bool {
    let delay_over = failures.blocked_until.is_none_or(|until| now >= until);
    delay_over && now.duration_since(failures.last) >= FORGET_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_address: u32, before_delay: u32, first_ms: u64, max_ms: u64) -> LoginThrottle {
        LoginThrottle::new(&Limits {
            logins_per_second_per_address: per_address,
            login_failures_before_delay: before_delay,
            login_failure_delay: first_ms,
            login_failure_max_delay: max_ms,
            ..Limits::default()
        })
    }

    #[test]
    fn per_address_limit() {
        let t = throttle(2, 5, 1000, 60_000);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(t.admit_address(Some(a)));
        assert!(t.admit_address(Some(a)));
        assert!(!t.admit_address(Some(a)));
        assert!(t.admit_address(Some(b)), "per address");
        assert!(t.admit_address(None), "no address, no limit");
        let unlimited = throttle(0, 5, 1000, 60_000);
        assert!((0..100).all(|_| unlimited.admit_address(Some(a))));
    }

    #[test]
    fn delays_start_after_repeated_failures_and_double() {
        let t = throttle(0, 3, 60_000, 600_000);
        for _ in 0..2 {
            t.failed("bob");
            assert!(t.admit_username("bob"));
        }
        t.failed("bob");
        assert!(!t.admit_username("bob"), "third failure: wait");
        assert!(t.admit_username("alice"), "per username");
        let delay = |t: &LoginThrottle| {
            let f = t.failures.lock();
            let r = &f["bob"];
            r.blocked_until.unwrap().duration_since(r.last)
        };
        assert_eq!(delay(&t), Duration::from_secs(60));
        t.failed("bob");
        assert_eq!(delay(&t), Duration::from_secs(120));
        for _ in 0..10 {
            t.failed("bob");
        }
        assert_eq!(delay(&t), Duration::from_secs(600), "capped");
        t.succeeded("bob");
        assert!(t.admit_username("bob"), "a success resets");
    }

    #[test]
    fn a_delay_ends() {
        let t = throttle(0, 1, 1, 1);
        t.failed("bob");
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.admit_username("bob"));
    }
}
