//! Login throttling beyond Kuzzle's per-connection limit (docs/limits.md):
//! - per client address (so that a brute force over many HTTP requests or sockets is
//!   slowed too);
//! - per (username, address) after repeated failures, with a delay that doubles with each
//!   further failure: a guesser slows itself down, not the account's owner elsewhere, and
//!   a success resets only its own address's record;
//! - per username, a ceiling on passwords checked from addresses it never logged in from
//!   (a GCRA: `loginFailuresPerUsernamePerMinute`, with as many at once), against guesses
//!   spread over many addresses; an address the username logged in from within
//!   `loginKnownAddressTtl` is exempt, so the owner gets in while a botnet is slowed.
//!
//! In a cluster the counters are in Redis, shared by the nodes (`check` and `record_*`);
//! while Redis does not answer, each node counts alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cluster::Link;
use crate::cluster::logins::SharedLogins;
use crate::config::Limits;
use crate::rate::RateCounter;

/// Records of each kind tracked at once; past it, expired records are dropped, and new
/// ones are not tracked until there is room (the per-address limit still applies).
const MAX_TRACKED: usize = 100_000;

/// Known addresses kept per username (the most recent).
const MAX_KNOWN_PER_USERNAME: usize = 16;

/// A record is forgotten this long after its last failure once its delay is over.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

struct Failures {
    count: u32,
    last: Instant,
    /// No attempt is checked before this instant.
    blocked_until: Option<Instant>,
}

/// Who tries to log in: the username and the client's address (resolved through trusted
/// proxies); no address (an internal caller) is one address of its own.
type Attempt = (String, Option<IpAddr>);

/// An address a username logged in from, and when it last did.
type KnownAddress = (Option<IpAddr>, Instant);

/// Why an attempt is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address failed too often for this username: it waits.
    Delayed,
    /// Too many passwords were checked for this username from unknown addresses.
    Ceiling,
}

pub struct LoginThrottle {
    per_address: u32,
    before_delay: u32,
    first_delay: Duration,
    max_delay: Duration,
    ceiling: Ceiling,
    known_for: Duration,
    addresses: RateCounter,
    failures: Mutex<HashMap<Attempt, Failures>>,
    /// Per username: the addresses it logged in from, with when.
    known: Mutex<HashMap<String, Vec<KnownAddress>>>,
    /// Per username: the GCRA's theoretical arrival time of the ceiling.
    ceilings: Mutex<HashMap<String, Instant>>,
    /// The cluster's Redis, once the node joined one.
    shared: OnceLock<Arc<Link>>,
    shared_logins: SharedLogins,
}

fn address_key(address: Option<IpAddr>) -> String {
    address.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

impl LoginThrottle {
    pub fn new(limits: &Limits) -> LoginThrottle {
        LoginThrottle {
            per_address: limits.logins_per_second_per_address,
            before_delay: limits.login_failures_before_delay,
            first_delay: Duration::from_millis(limits.login_failure_delay),
            max_delay: Duration::from_millis(limits.login_failure_max_delay),
            ceiling: Ceiling::per_minute(limits.login_failures_per_username_per_minute),
            known_for: Duration::from_millis(limits.login_known_address_ttl),
            addresses: RateCounter::default(),
            failures: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            ceilings: Mutex::new(HashMap::new()),
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

    /// `admit`, cluster-wide when there is a cluster. When it admits from an unknown
    /// address, the attempt counts against the username's ceiling.
    pub async fn check(&self, username: &str, address: Option<IpAddr>) -> Result<(), Refusal> {
        if let Some(link) = self.link() {
            let shared = self
                .shared_logins
                .admit(
                    link,
                    username,
                    &address_key(address),
                    self.known_for.as_millis() as u64,
                    (!self.ceiling.is_off()).then(|| {
                        (
                            self.ceiling.interval().as_millis() as u64,
                            self.ceiling.tolerance().as_millis() as u64,
                        )
                    }),
                )
                .await;
            match shared {
                Ok(0) => return Ok(()),
                Ok(1) => return Err(Refusal::Delayed),
                Ok(_) => return Err(Refusal::Ceiling),
                Err(reason) => link.health.down(&reason),
            }
        }
        self.admit(username, address)
    }

    /// `failed`, cluster-wide when there is a cluster.
    pub async fn record_failure(&self, username: &str, address: Option<IpAddr>) {
        if let Some(link) = self.link() {
            let recorded = self
                .shared_logins
                .failed(
                    link,
                    username,
                    &address_key(address),
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
        self.failed(username, address);
    }

    /// `succeeded`, cluster-wide when there is a cluster.
    pub async fn record_success(&self, username: &str, address: Option<IpAddr>) {
        self.succeeded(username, address);
        if let Some(link) = self.link()
            && let Err(reason) = self
                .shared_logins
                .succeeded(
                    link,
                    username,
                    &address_key(address),
                    self.known_for.as_millis() as u64,
                )
                .await
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

    /// Whether the password of `username` may be checked for a client at `address`.
    pub fn admit(&self, username: &str, address: Option<IpAddr>) -> Result<(), Refusal> {
        let now = Instant::now();
        let attempt = (username.to_owned(), address);
        let delayed = self
            .failures
            .lock()
            .get(&attempt)
            .and_then(|f| f.blocked_until)
            .is_some_and(|until| now < until);
        if delayed {
            return Err(Refusal::Delayed);
        }
        if self.ceiling.is_off() || self.is_known(username, address, now) {
            return Ok(());
        }
        let mut ceilings = self.ceilings.lock();
        if !ceilings.contains_key(username) && ceilings.len() >= MAX_TRACKED {
            ceilings.retain(|_, tat| *tat > now);
        }
        let tat = ceilings.get(username).copied().unwrap_or(now).max(now);
        if tat.duration_since(now) > self.ceiling.tolerance() {
            return Err(Refusal::Ceiling);
        }
        if ceilings.len() < MAX_TRACKED || ceilings.contains_key(username) {
            ceilings.insert(username.to_owned(), tat + self.ceiling.interval());
        }
        Ok(())
    }

    fn is_known(&self, username: &str, address: Option<IpAddr>, now: Instant) -> bool {
        self.known.lock().get(username).is_some_and(|addresses| {
            addresses
                .iter()
                .any(|(known, at)| *known == address && now.duration_since(*at) < self.known_for)
        })
    }

    pub fn failed(&self, username: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let attempt = (username.to_owned(), address);
        let mut failures = self.failures.lock();
        if !failures.contains_key(&attempt) && failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| !is_forgotten(f, now));
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let record = failures.entry(attempt).or_insert_with(|| Failures {
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

    /// Resets this address's record, and remembers the address as known.
    pub fn succeeded(&self, username: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        self.failures.lock().remove(&(username.to_owned(), address));
        let mut known = self.known.lock();
        if !known.contains_key(username) && known.len() >= MAX_TRACKED {
            known.retain(|_, list| {
                list.retain(|(_, at)| now.duration_since(*at) < self.known_for);
                !list.is_empty()
            });
            if known.len() >= MAX_TRACKED {
                return;
            }
        }
        let list = known.entry(username.to_owned()).or_default();
        list.retain(|(known, _)| *known != address);
        if list.len() >= MAX_KNOWN_PER_USERNAME {
            list.remove(0);
        }
        list.push((address, now));
    }
}

fn is_forgotten(failures: &Failures, now: Instant) -> bool {
    let delay_over = failures.blocked_until.is_none_or(|until| now >= until);
    delay_over && now.duration_since(failures.last) >= FORGET_AFTER
}

/// The per-username ceiling on passwords checked from unknown addresses: a GCRA of
/// `per_minute` a minute, allowing as many at once.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    per_minute: u32,
}

impl Ceiling {
    pub fn per_minute(per_minute: u32) -> Self {
        Ceiling { per_minute }
    }

    pub fn is_off(&self) -> bool {
        self.per_minute == 0
    }

    /// Time one checked password takes of the allowance.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }

    /// How far ahead the allowance may be taken.
    pub fn tolerance(&self) -> Duration {
        Duration::from_secs(60).saturating_sub(self.interval())
    }
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
            login_failures_per_username_per_minute: 0,
            ..Limits::default()
        })
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn per_address_limit() {
        let t = throttle(2, 5, 1000, 60_000);
        assert!(t.admit_address(ip(1)));
        assert!(t.admit_address(ip(1)));
        assert!(!t.admit_address(ip(1)));
        assert!(t.admit_address(ip(2)), "per address");
        assert!(t.admit_address(None), "no address, no limit");
        let unlimited = throttle(0, 5, 1000, 60_000);
        assert!((0..100).all(|_| unlimited.admit_address(ip(1))));
    }

    #[test]
    fn delays_start_after_repeated_failures_and_double() {
        let t = throttle(0, 3, 60_000, 600_000);
        for _ in 0..2 {
            t.failed("bob", ip(1));
            assert_eq!(t.admit("bob", ip(1)), Ok(()));
        }
        t.failed("bob", ip(1));
        assert_eq!(
            t.admit("bob", ip(1)),
            Err(Refusal::Delayed),
            "third failure"
        );
        assert_eq!(t.admit("alice", ip(1)), Ok(()), "per username");
        assert_eq!(t.admit("bob", ip(2)), Ok(()), "per address: no lockout");
        let delay = |t: &LoginThrottle| {
            let f = t.failures.lock();
            let r = &f[&("bob".to_owned(), ip(1))];
            r.blocked_until.unwrap().duration_since(r.last)
        };
        assert_eq!(delay(&t), Duration::from_secs(60));
        t.failed("bob", ip(1));
        assert_eq!(delay(&t), Duration::from_secs(120));
        for _ in 0..10 {
            t.failed("bob", ip(1));
        }
        assert_eq!(delay(&t), Duration::from_secs(600), "capped");
        t.succeeded("bob", ip(2));
        assert_eq!(
            t.admit("bob", ip(1)),
            Err(Refusal::Delayed),
            "a success elsewhere resets only its own address"
        );
        t.succeeded("bob", ip(1));
        assert_eq!(t.admit("bob", ip(1)), Ok(()), "a success resets");
    }

    #[test]
    fn a_delay_ends() {
        let t = throttle(0, 1, 1, 1);
        t.failed("bob", ip(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.admit("bob", ip(1)), Ok(()));
    }

    #[test]
    fn the_ceiling_spares_known_addresses() {
        let t = LoginThrottle::new(&Limits {
            login_failures_per_username_per_minute: 10,
            ..Limits::default()
        });
        t.succeeded("bob", ip(3));
        for i in 0..10 {
            assert_eq!(t.admit("bob", ip(100 + i)), Ok(()), "attempt {i}");
        }
        assert_eq!(t.admit("bob", ip(200)), Err(Refusal::Ceiling));
        assert_eq!(t.admit("bob", ip(3)), Ok(()), "the known address is exempt");
        assert_eq!(t.admit("alice", ip(200)), Ok(()), "per username");
    }
}
