//! What must persist: users, roles, profiles, credentials, tokens and the JWT secret.
//! Two backends behind one type: `embedded` (an on-disk redb file, one node, nothing to
//! install) and `redis` (shared by the nodes of a cluster). Both pass the same test suite.

mod credentials;
mod embedded;
pub mod hot;
pub mod marker;
pub mod redis_store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{StorageBackend, StorageSettings};

pub use credentials::LocalCredential;
pub use embedded::EmbeddedStore;
use hot::HotCache;
pub use redis_store::RedisStore;

/// The security version of a Redis store without its counter (a store set up by this server
/// always has one: its data was lost): one no real counter reaches.
pub const NO_VERSION: u64 = u64::MAX;

/// The kinds of JSON documents the store keeps, each by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Role,
    Profile,
    /// Local credentials by username: `{"kuid", "hash"}`.
    Credential,
    /// The username of each user's local credentials, by kuid: `{"username"}`.
    Login,
    /// The store's own records: its marker (`marker.rs`).
    Store,
    /// API keys by id: `{"userId", "description", "expiresAt", "ttl", "fingerprint",
    /// "token"}` (the token is never returned after its creation).
    ApiKey,
    /// A search's scroll cursor by scroll id, with its `expiresAt` (`put_expiring`).
    Scroll,
    /// A node's statistics snapshot (`server:getStats`), by `<timestamp>-<node id>`, with
    /// its `expiresAt` (`put_expiring`).
    Stats,
    /// The mappings `security:update*Mapping` stored, by collection (`users`, `profiles`,
    /// `roles`).
    Mapping,
}

impl Kind {
    /// Users, roles and profiles: what a request's rights are made of. Every write of one
    /// bumps the security version.
    pub fn is_security(self) -> bool {
        matches!(self, Kind::User | Kind::Role | Kind::Profile)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Role => "roles",
            Kind::Profile => "profiles",
            Kind::Credential => "credentials",
            Kind::Login => "logins",
            Kind::Store => "store",
            Kind::ApiKey => "api-keys",
            Kind::Scroll => "scrolls",
            Kind::Mapping => "mappings",
            Kind::Stats => "stats",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached (Redis down): requests get 503-class errors.
    Unavailable(String),
    /// The store answered with an error, or its data is unreadable.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(reason) => write!(f, "store unavailable: {reason}"),
            StoreError::Failed(reason) => write!(f, "store failure: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Whether a document of `put_expiring` is past its `expiresAt`.
fn expired(value: &Value, now_ms: u64) -> bool {
    value
        .get("expiresAt")
        .and_then(Value::as_u64)
        .is_some_and(|at| at <= now_ms)
}

pub type StoreResult<T> = Result<T, StoreError>;

enum Backend {
    Embedded(EmbeddedStore),
    Redis(Box<RedisStore>),
}

/// One store, whichever the backend. Every call is bounded by
/// `services.storage.commandTimeout`: a store that does not answer in time is treated as
/// unreachable, so that a frozen Redis cannot freeze the requests that use it.
pub struct Store {
    backend: Backend,
    timeout: Duration,
    health: Health,
    /// The store answered without its security counter at the last read: it lost its
    /// data (emptied behind the cluster's back), until a backup is restored.
    lost: AtomicBool,
    /// What a request's hot path reads, kept per node (`hot.rs`).
    hot: HotCache,
    /// Told of every security version this node bumps (the bus tells the other nodes).
    on_security_change: OnceLock<SecurityHook>,
}

/// What `Store::on_security_change` calls with the new version.
pub type SecurityHook = Box<dyn Fn(u64) + Send + Sync>;

/// Whether the store answered its last call; a change is logged once, not per call.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    /// When a call may next try a store that is down (ms since `started`).
    next_probe: AtomicU64,
    started: OnceLock<Instant>,
}

/// While the store is down, callers that can do without it try it at most this often.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

impl Health {
    fn elapsed_ms(&self) -> u64 {
        self.started.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn record<T>(&self, result: &StoreResult<T>) {
        match result {
            Err(StoreError::Unavailable(reason)) => {
                if !self.down.swap(true, Ordering::AcqRel) {
                    log::error!(
                        "[STORAGE] the store is unreachable ({reason}): requests that need it get services.cache.not_connected until it answers again"
                    );
                }
                self.next_probe.store(
                    self.elapsed_ms() + PROBE_INTERVAL.as_millis() as u64,
                    Ordering::Release,
                );
            }
            Ok(_) | Err(StoreError::Failed(_)) => {
                if self.down.swap(false, Ordering::AcqRel) {
                    log::warn!("[STORAGE] the store answers again");
                }
            }
        }
    }
}

macro_rules! each_backend {
    ($self:ident, $store:ident => $body:expr) => {
        $self
            .bounded(async {
                match &$self.backend {
                    Backend::Embedded($store) => $body,
                    Backend::Redis($store) => $body,
                }
            })
            .await
    };
}

impl Store {
    /// Opens the configured backend; an error here stops the node's start.
    pub async fn open(settings: &StorageSettings) -> StoreResult<Store> {
        let timeout = Duration::from_millis(settings.command_timeout);
        let (backend, hot) = match settings.backend {
            StorageBackend::Embedded => (
                Backend::Embedded(EmbeddedStore::open(&settings.path).await?),
                HotCache::new(None),
            ),
            StorageBackend::Redis => (
                Backend::Redis(Box::new(RedisStore::open(settings).await?)),
                // Trusted once the heartbeat confirms it (`confirm`); the cluster's default
                // heartbeat until told otherwise (`expect_confirmations`).
                HotCache::new(Some(Duration::from_secs(4) + timeout)),
            ),
        };
        Ok(Store {
            backend,
            timeout,
            health: Health::default(),
            lost: AtomicBool::new(false),
            hot,
            on_security_change: OnceLock::new(),
        })
    }

    /// Runs one store call within the timeout, and records how it went.
    async fn bounded<T>(&self, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => {
                if let Backend::Redis(redis) = &self.backend {
                    redis.connection.answered();
                }
                result
            }
            Err(_) => {
                if let Backend::Redis(redis) = &self.backend {
                    redis.connection.unanswered().await;
                }
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        };
        self.health.record(&result);
        result
    }

    /// True while the last call found the store unreachable, except once per probe
    /// interval: a caller with a fallback (cached rights) skips the store then, and the
    /// probe finds out when it is back.
    pub fn skip_while_down(&self) -> bool {
        if !self.health.down.load(Ordering::Acquire) {
            return false;
        }
        let now = self.health.elapsed_ms();
        let next = self.health.next_probe.load(Ordering::Acquire);
        if now < next {
            return true;
        }
        // One caller wins the probe; the others keep skipping.
        self.health
            .next_probe
            .compare_exchange(
                next,
                now + PROBE_INTERVAL.as_millis() as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
    }

    pub fn backend(&self) -> StorageBackend {
        match self.backend {
            Backend::Embedded(_) => StorageBackend::Embedded,
            Backend::Redis(_) => StorageBackend::Redis,
        }
    }

    pub async fn get(&self, kind: Kind, id: &str) -> StoreResult<Option<Value>> {
        each_backend!(self, s => s.get(kind, id).await)
    }

    pub async fn put(&self, kind: Kind, id: &str, value: &Value) -> StoreResult<()> {
        each_backend!(self, s => s.put(kind, id, value).await)?;
        self.changed(kind, id, true).await
    }

    /// Stores only when `id` is free; false when it was taken.
    pub async fn insert_new(&self, kind: Kind, id: &str, value: &Value) -> StoreResult<bool> {
        let inserted = each_backend!(self, s => s.insert_new(kind, id, value).await)?;
        self.changed(kind, id, inserted).await?;
        Ok(inserted)
    }

    /// False when there was nothing to delete.
    pub async fn delete(&self, kind: Kind, id: &str) -> StoreResult<bool> {
        let deleted = each_backend!(self, s => s.delete(kind, id).await)?;
        self.changed(kind, id, deleted).await?;
        Ok(deleted)
    }

    /// After a write: a user, role or profile written bumps the security version, so that
    /// every node's caches learn of it (this node's at once).
    async fn changed(&self, kind: Kind, id: &str, written: bool) -> StoreResult<()> {
        if !written || !kind.is_security() {
            return Ok(());
        }
        if kind == Kind::User {
            self.hot.forget_user(id);
        }
        self.bump_security_version().await.map(|_| ())
    }

    /// Stores a document that lives `ttl`: Redis expires it; the embedded store keeps
    /// `expiresAt` in it, and `get_live` and this call drop those past it.
    pub async fn put_expiring(
        &self,
        kind: Kind,
        id: &str,
        value: &Value,
        ttl: Duration,
    ) -> StoreResult<()> {
        let now = crate::protocol::now_ms();
        let mut value = value.clone();
        value["expiresAt"] = Value::from(now + ttl.as_millis() as u64);
        if let Backend::Embedded(_) = self.backend {
            for (stale, _) in self
                .list(kind)
                .await?
                .into_iter()
                .filter(|(_, v)| expired(v, now))
            {
                self.delete(kind, &stale).await?;
            }
        }
        each_backend!(self, s => s.put_expiring(kind, id, &value, ttl).await)
    }

    /// The documents of a kind stored by `put_expiring` that have not expired, sorted by id.
    pub async fn list_live(&self, kind: Kind) -> StoreResult<Vec<(String, Value)>> {
        let now = crate::protocol::now_ms();
        let mut live = self.list(kind).await?;
        live.retain(|(_, value)| !expired(value, now));
        Ok(live)
    }

    /// A document stored by `put_expiring`, unless it expired.
    pub async fn get_live(&self, kind: Kind, id: &str) -> StoreResult<Option<Value>> {
        let now = crate::protocol::now_ms();
        match self.get(kind, id).await? {
            Some(value) if expired(&value, now) => {
                self.delete(kind, id).await?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Every document of a kind, sorted by id.
    pub async fn list(&self, kind: Kind) -> StoreResult<Vec<(String, Value)>> {
        let mut all = each_backend!(self, s => s.list(kind).await)?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Records an issued token for `kuid`; it disappears after `ttl` (never when None).
    pub async fn put_token(
        &self,
        token: &str,
        kuid: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        each_backend!(self, s => s.put_token(token, kuid, ttl).await)?;
        // A token written again has a new life (a refreshed token's grace period).
        self.hot.forget_tokens([&token.to_owned()]);
        Ok(())
    }

    /// The user of a live token; None when revoked, expired or unknown.
    pub async fn token_owner(&self, token: &str) -> StoreResult<Option<String>> {
        each_backend!(self, s => s.token_owner(token).await)
    }

    /// A token this node verified, while its cache may vouch for it (`hot.rs`): its owner
    /// and expiry (ms since the epoch, None if never). No store round trip.
    pub fn cached_token(&self, token: &str) -> Option<(Arc<str>, Option<u64>)> {
        self.hot.token(token, crate::protocol::now_ms())
    }

    /// Whether the store holds `token` as `kuid`'s, for a request that verified its
    /// signature and expiry (`expires_at`): kept when it does, so that the token's next
    /// requests cost no round trip (`cached_token`).
    pub async fn confirm_token(
        &self,
        token: &str,
        kuid: &str,
        expires_at: Option<u64>,
    ) -> StoreResult<bool> {
        let now = crate::protocol::now_ms();
        let generation = self.hot.generation();
        let Some((owner, forgotten_at)) = each_backend!(self, s => s.token_life(token).await)?
        else {
            return Ok(false);
        };
        if owner != kuid {
            return Ok(false);
        }
        self.hot.keep_token(
            token,
            Arc::from(owner),
            expires_at,
            forgotten_at,
            now,
            generation,
        );
        Ok(true)
    }

    /// A user for a request: from this node's cache when it holds it, read and kept
    /// otherwise.
    pub async fn request_user(&self, kuid: &str) -> StoreResult<Option<Arc<Value>>> {
        let now = crate::protocol::now_ms();
        if let Some(user) = self.hot.user(kuid, now) {
            return Ok(Some(user));
        }
        let generation = self.hot.generation();
        let user = self.get(Kind::User, kuid).await?.map(Arc::new);
        if let Some(user) = &user {
            self.hot.keep_user(kuid, user.clone(), now, generation);
        }
        Ok(user)
    }

    pub async fn delete_token(&self, token: &str) -> StoreResult<()> {
        each_backend!(self, s => s.delete_token(token).await)?;
        self.hot.forget_tokens([&token.to_owned()]);
        Ok(())
    }

    /// Tokens another node revoked: this node's cache forgets them.
    pub fn forget_tokens(&self, tokens: &[String]) {
        self.hot.forget_tokens(tokens);
    }

    /// Revocations may have been missed: every token is read from the store again.
    pub fn forget_all_tokens(&self) {
        self.hot.forget_all_tokens();
    }

    /// Another node changed users, roles or profiles (its "security changed" message).
    pub fn note_security_version(&self, version: u64) {
        self.hot.note_version(version);
    }

    /// The heartbeat's safety net: reads the security version (and with it whether the
    /// store lost its data), compares it and the store's `epoch` with what the caches were
    /// filled from, and keeps them trusted for a while longer.
    pub async fn confirm(&self, epoch: Option<&str>) -> StoreResult<u64> {
        let version = self.security_version().await?;
        self.hot.confirm(version, epoch);
        Ok(version)
    }

    /// How long what a node read of a shared store is used before it is read again (one
    /// heartbeat); None on the embedded store.
    pub fn cache_max_age(&self) -> Option<Duration> {
        self.hot.max_age()
    }

    /// A shared store's caches are confirmed every `heartbeat` (`confirm`).
    pub fn expect_confirmations(&self, heartbeat: Duration) {
        self.hot.expect_confirmations(heartbeat, self.timeout);
    }

    /// Counts cache lookups and flushes into `counters` (`kuzzle_cache_*`).
    pub fn count_with(&self, counters: hot::CacheCounters) {
        self.hot.count_with(counters);
    }

    /// Called with every security version this node bumps.
    pub fn on_security_change(&self, hook: SecurityHook) {
        let _ = self.on_security_change.set(hook);
    }

    /// The live tokens of a user.
    pub async fn user_tokens(&self, kuid: &str) -> StoreResult<Vec<String>> {
        let mut tokens = each_backend!(self, s => s.user_tokens(kuid).await)?;
        tokens.sort();
        Ok(tokens)
    }

    /// The stored JWT secret, storing `generated` first when there is none. The flag
    /// says whether `generated` was stored (the first node to start generates it).
    pub async fn secret_or_init(&self, generated: &str) -> StoreResult<(String, bool)> {
        each_backend!(self, s => s.secret_or_init(generated).await)
    }

    /// A counter bumped by every change of roles, profiles or users, so that each node
    /// knows when its cached copies are stale.
    pub async fn security_version(&self) -> StoreResult<u64> {
        let version = each_backend!(self, s => s.security_version().await);
        if let Ok(version) = &version {
            self.lost.store(*version == NO_VERSION, Ordering::Release);
        }
        version
    }

    /// The security version for a request: on a shared store, the one this node last
    /// learnt (bumped here, announced by another node, or read by the heartbeat) while the
    /// cache is trusted; read otherwise. Free on the embedded store.
    pub async fn request_security_version(&self) -> StoreResult<u64> {
        if let Backend::Redis(_) = self.backend
            && let Some(version) = self.hot.version()
        {
            return Ok(version);
        }
        let version = self.security_version().await?;
        if let Backend::Redis(_) = self.backend {
            self.hot.note_version(version);
        }
        Ok(version)
    }

    /// Whether the store lost its data, as of the last read of its security counter
    /// (`kuzzle_store_lost`, `server:healthCheck`).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Records a change of roles, profiles or users; returns the new version.
    /// Starts the security version of a new store (the embedded store's always exists).
    pub async fn init_security_version(&self) -> StoreResult<()> {
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            Backend::Redis(redis) => self.bounded(redis.init_security_version()).await,
        }
    }

    pub async fn bump_security_version(&self) -> StoreResult<u64> {
        let version = each_backend!(self, s => s.bump_security_version().await)?;
        self.hot.note_version(version);
        if let Some(hook) = self.on_security_change.get() {
            hook(version);
        }
        Ok(version)
    }

    /// A round trip to the store (healthCheck).
    pub async fn ping(&self) -> StoreResult<()> {
        each_backend!(self, s => s.ping().await)
    }

    /// Connections listening to a pub/sub channel of the store's Redis (0 on the embedded
    /// store): whether a cluster runs on it.
    pub async fn subscribers(&self, channel: &str) -> StoreResult<usize> {
        match &self.backend {
            Backend::Embedded(_) => Ok(0),
            Backend::Redis(redis) => self.bounded(redis.subscribers(channel)).await,
        }
    }
}
