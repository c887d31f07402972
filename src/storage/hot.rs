//! What a request's hot path reads from the store, kept per node (issue 20): the owner of
//! each token verified here, the users requests run as, and the security version. Once its
//! token and user were read, a request costs no store round trip; an anonymous one none at
//! all on Redis.
//!
//! What keeps it current (docs/clustering.md, "Caches"):
//! - this node's own writes: `Store` tells the cache of every token it deletes, every user
//!   it writes and every security version it bumps;
//! - other nodes' writes: their revocations and "security changed" messages on the bus
//!   (`Node` hands them here);
//! - the safety net, which needs no message: on a shared store an entry is used for one
//!   heartbeat at most after it was read (and a token never past the life the store gave
//!   it), and the security version only while the heartbeat's read of it (`confirm`, with
//!   the store's epoch) is recent: a node whose read failed twice in a row asks the store.
//!   So a message the bus lost leaves an entry stale for one heartbeat at most.
//!
//! A value read from the store is kept only when nothing was invalidated while it was read
//! (`generation`), so that a revocation racing the read cannot be undone by it. Both caches
//! are bounded (`TOKENS`, `USERS`); past the bound the least useful entries go and their
//! next use reads the store again (`kuzzle_cache_lookups_total{outcome="miss"}`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use serde_json::Value;

/// Verified tokens kept per node (a token is about 250 bytes: about 35 MB at the bound).
pub const TOKENS: usize = 100_000;
/// Users kept per node.
pub const USERS: usize = 20_000;

/// The security version is not known yet (no real counter reaches it; `NO_VERSION` is
/// `u64::MAX`).
const UNKNOWN: u64 = u64::MAX - 1;

/// `trust` of a store that is this process's own.
const ALWAYS: u64 = u64::MAX;

/// Handles on the cache counters (registered by the metrics).
#[derive(Clone, Debug, Default)]
pub struct CacheCounters {
    pub token_hits: Counter,
    pub token_misses: Counter,
    pub user_hits: Counter,
    pub user_misses: Counter,
    /// Whole caches emptied: the security version or the store's epoch changed, a gap in
    /// the revocation log.
    pub flushes: Counter,
}

pub struct HotCache {
    /// A verified token → its owner, its expiry (ms since the epoch, None if never), and
    /// until when the entry may be used.
    tokens: Cache<String, (Arc<str>, Option<u64>, u64)>,
    /// Kuid → the user, and until when the entry may be used.
    users: Cache<String, (Arc<Value>, u64)>,
    /// How long an entry is used after it was read, in ms (`ALWAYS` on the embedded store,
    /// which only this process writes).
    max_age: AtomicU64,
    /// The security version as this node last learnt it (`UNKNOWN` before).
    version: AtomicU64,
    /// The store's epoch (its marker's) as last read.
    epoch: Mutex<Option<String>>,
    /// Bumped by every invalidation: a value read from the store is kept only if this did
    /// not change while it was read.
    generation: AtomicU64,
    /// How long after the last confirmation the cache is trusted, in ms (`ALWAYS`: the
    /// store is this process's own).
    trust: AtomicU64,
    /// When the safety net last confirmed the cache (ms since `started`).
    confirmed: AtomicU64,
    started: Instant,
    /// Registered by the metrics once the node is built (nothing is counted before).
    counters: std::sync::OnceLock<CacheCounters>,
}

impl HotCache {
    /// `trust`: how long a confirmation holds (shared stores), None for the embedded store.
    pub fn new(trust: Option<Duration>) -> HotCache {
        let trust = trust.map_or(ALWAYS, |t| t.as_millis() as u64);
        HotCache {
            tokens: Cache::new(TOKENS),
            users: Cache::new(USERS),
            max_age: AtomicU64::new(trust),
            version: AtomicU64::new(UNKNOWN),
            epoch: Mutex::new(None),
            generation: AtomicU64::new(0),
            trust: AtomicU64::new(trust),
            confirmed: AtomicU64::new(0),
            started: Instant::now(),
            counters: std::sync::OnceLock::new(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether entries may be used: always on the embedded store; on a shared one while the
    /// last confirmation is recent enough.
    pub fn trusted(&self) -> bool {
        let trust = self.trust.load(Ordering::Relaxed);
        if trust == ALWAYS {
            return true;
        }
        let confirmed = self.confirmed.load(Ordering::Acquire);
        confirmed > 0 && self.elapsed_ms() <= confirmed + trust
    }

    /// A shared store's confirmations come every `heartbeat`: one may be late by the command
    /// timeout, and one may fail, before the version stops being trusted; an entry is used
    /// for one heartbeat after it was read.
    pub fn expect_confirmations(&self, heartbeat: Duration, command_timeout: Duration) {
        if self.trust.load(Ordering::Relaxed) != ALWAYS {
            let trust = heartbeat * 2 + command_timeout;
            self.trust
                .store(trust.as_millis() as u64, Ordering::Relaxed);
            self.max_age
                .store(heartbeat.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// How long an entry is used after it was read; None on the embedded store.
    pub fn max_age(&self) -> Option<Duration> {
        let age = self.max_age.load(Ordering::Relaxed);
        (age != ALWAYS).then(|| Duration::from_millis(age))
    }

    /// Until when an entry read now may be used.
    fn fresh_until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.max_age.load(Ordering::Relaxed))
    }

    /// From now on, lookups and flushes are counted into `counters`.
    pub fn count_with(&self, counters: CacheCounters) {
        let _ = self.counters.set(counters);
    }

    fn count(&self, counter: impl FnOnce(&CacheCounters) -> &Counter) {
        if let Some(counters) = self.counters.get() {
            counter(counters).inc();
        }
    }

    /// The current generation, to pass to `keep_*` after reading the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn invalidated(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A token verified here before, still live: its owner and expiry.
    pub fn token(&self, token: &str, now_ms: u64) -> Option<(Arc<str>, Option<u64>)> {
        let owner = self
            .tokens
            .get(token)
            .filter(|(_, _, until)| *until > now_ms)
            .map(|(owner, expires_at, _)| (owner, expires_at));
        match owner {
            Some(_) => self.count(|c| &c.token_hits),
            None => self.count(|c| &c.token_misses),
        }
        owner
    }

    /// Keeps a `token` whose signature was verified and whose owner the store confirmed,
    /// read at `now_ms`, when nothing was invalidated since `generation`: it is used until
    /// it expires (`expires_at`, the token's own expiry), the store forgets it
    /// (`forgotten_at`), or for one heartbeat on a shared store, whichever comes first.
    pub fn keep_token(
        &self,
        token: &str,
        owner: Arc<str>,
        expires_at: Option<u64>,
        forgotten_at: Option<u64>,
        now_ms: u64,
        generation: u64,
    ) {
        let until = self
            .fresh_until(now_ms)
            .min(expires_at.unwrap_or(u64::MAX))
            .min(forgotten_at.unwrap_or(u64::MAX));
        if self.generation() == generation {
            self.tokens
                .insert(token.to_owned(), (owner, expires_at, until));
        }
    }

    pub fn user(&self, kuid: &str, now_ms: u64) -> Option<Arc<Value>> {
        let user = self
            .users
            .get(kuid)
            .filter(|(_, until)| *until > now_ms)
            .map(|(user, _)| user);
        match user {
            Some(_) => self.count(|c| &c.user_hits),
            None => self.count(|c| &c.user_misses),
        }
        user
    }

    pub fn keep_user(&self, kuid: &str, user: Arc<Value>, now_ms: u64, generation: u64) {
        let until = self.fresh_until(now_ms);
        if self.generation() == generation {
            self.users.insert(kuid.to_owned(), (user, until));
        }
    }

    /// Tokens revoked or written (here or on another node).
    pub fn forget_tokens<'a>(&self, tokens: impl IntoIterator<Item = &'a String>) {
        self.invalidated();
        for token in tokens {
            self.tokens.remove(token.as_str());
        }
    }

    /// A user written or deleted on this node.
    pub fn forget_user(&self, kuid: &str) {
        self.invalidated();
        self.users.remove(kuid);
    }

    /// Revocations may have been missed (a gap in the revocation log): every token is read
    /// from the store again.
    pub fn forget_all_tokens(&self) {
        self.invalidated();
        self.tokens.clear();
        self.count(|c| &c.flushes);
    }

    fn forget_everything(&self) {
        self.invalidated();
        self.tokens.clear();
        self.users.clear();
        self.version.store(UNKNOWN, Ordering::Release);
        self.count(|c| &c.flushes);
    }

    /// The security version as last learnt; None when it must be read: unknown, not
    /// confirmed lately, or the store's "no version" (it lost its data: each request reads
    /// it, so that a restored backup serves at once).
    pub fn version(&self) -> Option<u64> {
        let version = self.version.load(Ordering::Acquire);
        (version != UNKNOWN && version != super::NO_VERSION && self.trusted()).then_some(version)
    }

    /// The security version read, bumped, or announced by another node: when it changed,
    /// users are read again (and the rights snapshot reloads, `security::cache`).
    pub fn note_version(&self, version: u64) {
        let previous = self.version.swap(version, Ordering::AcqRel);
        if previous != version && previous != UNKNOWN {
            self.invalidated();
            self.users.clear();
            self.count(|c| &c.flushes);
        }
    }

    /// The heartbeat's read: the security version and the store's epoch (its marker's)
    /// answered. A new epoch (the store was replaced or restored) empties every cache.
    pub fn confirm(&self, version: u64, epoch: Option<&str>) {
        if let Some(epoch) = epoch {
            let mut known = self.epoch.lock();
            let replaced = known.as_deref().is_some_and(|known| known != epoch);
            if known.as_deref() != Some(epoch) {
                *known = Some(epoch.to_owned());
            }
            drop(known);
            if replaced {
                log::warn!(
                    "[STORAGE] the store was replaced (its epoch changed): this node's caches of tokens, users and rights are emptied"
                );
                self.forget_everything();
            }
        }
        self.note_version(version);
        self.confirmed
            .store(self.elapsed_ms().max(1), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn shared() -> HotCache {
        let cache = HotCache::new(Some(Duration::from_secs(60)));
        cache.expect_confirmations(Duration::from_secs(2), Duration::from_secs(1));
        cache
    }

    fn keep(cache: &HotCache, token: &str, forgotten_at: Option<u64>, now: u64) {
        let generation = cache.generation();
        cache.keep_token(token, Arc::from("u"), None, forgotten_at, now, generation);
    }

    fn owner(cache: &HotCache, token: &str, now: u64) -> Option<String> {
        cache.token(token, now).map(|(owner, _)| owner.to_string())
    }

    #[test]
    fn an_entry_of_a_shared_store_is_used_for_one_heartbeat_and_never_past_its_life() {
        let cache = shared();
        keep(&cache, "t", None, NOW);
        assert_eq!(owner(&cache, "t", NOW + 1_999).as_deref(), Some("u"));
        assert_eq!(cache.token("t", NOW + 2_000), None);
        keep(&cache, "short", Some(NOW + 500), NOW);
        assert!(cache.token("short", NOW + 499).is_some());
        assert_eq!(cache.token("short", NOW + 500), None);
        let embedded = HotCache::new(None);
        keep(&embedded, "t", None, NOW);
        assert!(embedded.token("t", u64::MAX - 1).is_some());
    }

    #[test]
    fn the_version_of_a_shared_store_is_trusted_only_once_confirmed() {
        let cache = shared();
        cache.note_version(3);
        assert_eq!(cache.version(), None);
        cache.confirm(3, Some("e"));
        assert_eq!(cache.version(), Some(3));
    }

    #[test]
    fn a_store_without_its_version_is_asked_each_time() {
        let cache = shared();
        cache.confirm(super::super::NO_VERSION, Some("e"));
        assert_eq!(cache.version(), None);
        cache.confirm(4, Some("e"));
        assert_eq!(cache.version(), Some(4));
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        let cache = HotCache::new(None);
        let generation = cache.generation();
        cache.forget_tokens(&["t".to_owned()]);
        cache.keep_token("t", Arc::from("u"), None, None, NOW, generation);
        assert_eq!(cache.token("t", NOW), None);
        keep(&cache, "t", None, NOW);
        assert_eq!(owner(&cache, "t", NOW).as_deref(), Some("u"));
        cache.forget_tokens(&["t".to_owned()]);
        assert_eq!(cache.token("t", NOW), None);
    }

    #[test]
    fn a_new_version_forgets_users_and_a_new_epoch_everything() {
        let cache = shared();
        cache.confirm(1, Some("e1"));
        let generation = cache.generation();
        cache.keep_user("u", Arc::new(Value::Null), NOW, generation);
        keep(&cache, "t", None, NOW);
        cache.note_version(1);
        assert!(cache.user("u", NOW).is_some());
        cache.note_version(2);
        assert!(cache.user("u", NOW).is_none());
        assert!(cache.token("t", NOW).is_some());
        cache.confirm(2, Some("e2"));
        assert!(cache.token("t", NOW).is_none());
        // The version read with the new epoch is known again.
        assert_eq!(cache.version(), Some(2));
    }

    #[test]
    fn a_confirmation_too_old_is_not_trusted() {
        let cache = HotCache::new(Some(Duration::ZERO));
        cache.confirm(1, None);
        // Poll with a deadline: the trust window is zero ms, so the next millisecond ends it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.trusted() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!cache.trusted());
        assert_eq!(cache.version(), None);
    }
}
