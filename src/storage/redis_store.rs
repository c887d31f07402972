//! The cluster store: Redis, shared by every node. Keys live under
//! `services.storage.keyPrefix`; tokens are keys whose TTL is their remaining life.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncCommands, Client, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};
use serde_json::Value;

use super::{Kind, StoreError, StoreResult};
use crate::config::StorageSettings;

pub struct RedisStore {
    pub(super) connection: Connection,
    prefix: String,
}

fn classify(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Failed(e.to_string())
    }
}

/// `*`, `?`, `[`, `]` and `\` are glob characters in SCAN patterns.
fn glob_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

use super::NO_VERSION;

/// Small commands and notifications go out at once (Nagle's delay would add tens of
/// milliseconds to a cross-node notification). A peer that vanished without a reset (a
/// host gone, a link cut by a firewall) is found by TCP keepalive within about 8 s of
/// silence, and a connection whose writes go unacknowledged for longer than a few command
/// timeouts is closed by the kernel (`TCP_USER_TIMEOUT`), so that the client reconnects.
fn tcp_settings(settings: &StorageSettings) -> redis::io::tcp::TcpSettings {
    use redis::io::tcp::socket2::TcpKeepalive;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let unacknowledged = Duration::from_millis(settings.command_timeout.saturating_mul(5))
        .max(Duration::from_secs(5));
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(unacknowledged)
}

/// A client for the configured Redis (the store's and the cluster's connections).
pub fn client(settings: &StorageSettings) -> StoreResult<Client> {
    if settings.options.tls {
        return Err(StoreError::Unavailable(
            "services.storage.options.tls: TLS to Redis is not supported by this build".into(),
        ));
    }
    let mut redis = RedisConnectionInfo::default()
        .set_db(i64::from(settings.database))
        .set_protocol(ProtocolVersion::RESP2);
    if let Some(username) = &settings.options.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &settings.options.password {
        redis = redis.set_password(password);
    }
    let info = ConnectionAddr::Tcp(settings.node.host.clone(), settings.node.port)
        .into_connection_info()
        .map_err(classify)?
        .set_redis_settings(redis)
        .set_tcp_settings(tcp_settings(settings));
    Client::open(info).map_err(classify)
}

/// A multiplexed connection that reconnects by itself.
pub async fn connection_manager(
    client: Client,
    settings: &StorageSettings,
) -> StoreResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot reach Redis at {}:{}: {e}",
                settings.node.host, settings.node.port
            ))
        })
}

/// Calls in a row without an answer before the connection is replaced.
const UNANSWERED_BEFORE_RENEWAL: u32 = 2;

/// A `ConnectionManager` that is replaced when it stops answering. The manager reconnects
/// after a reset or a refusal, but a frozen or half-open link is closed by nobody (a
/// timed-out call is not a dropped connection to it): after calls in a row got no answer
/// in time, a new connection takes the place of the silent one.
pub struct Connection {
    client: Client,
    settings: StorageSettings,
    current: parking_lot::RwLock<ConnectionManager>,
    unanswered: std::sync::atomic::AtomicU32,
    renewing: tokio::sync::Mutex<()>,
}

impl Connection {
    pub async fn open(settings: &StorageSettings) -> StoreResult<Connection> {
        let client = client(settings)?;
        let manager = connection_manager(client.clone(), settings).await?;
        Ok(Connection {
            client,
            settings: settings.clone(),
            current: parking_lot::RwLock::new(manager),
            unanswered: Default::default(),
            renewing: tokio::sync::Mutex::new(()),
        })
    }

    /// The client the connection was made from (for dedicated connections: pub/sub).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A handle on the current connection (cheap: the manager is shared).
    pub fn get(&self) -> ConnectionManager {
        self.current.read().clone()
    }

    /// A call was answered.
    pub fn answered(&self) {
        self.unanswered
            .store(0, std::sync::atomic::Ordering::Release);
    }

    /// A call got no answer in time; after a few in a row, the connection is replaced
    /// (one caller does it, bounded by the connection timeout; the others go on).
    pub async fn unanswered(&self) {
        use std::sync::atomic::Ordering;
        if self.unanswered.fetch_add(1, Ordering::AcqRel) + 1 < UNANSWERED_BEFORE_RENEWAL {
            return;
        }
        let Ok(_renewing) = self.renewing.try_lock() else {
            return;
        };
        match connection_manager(self.client.clone(), &self.settings).await {
            Ok(manager) => {
                *self.current.write() = manager;
                self.unanswered.store(0, Ordering::Release);
                log::warn!(
                    "[STORAGE] a Redis connection stopped answering (frozen or half-open link): replaced by a new one"
                );
            }
            Err(e) => log::warn!("[STORAGE] could not replace a silent Redis connection: {e}"),
        }
    }
}

impl RedisStore {
    pub async fn open(settings: &StorageSettings) -> StoreResult<RedisStore> {
        let connection = Connection::open(settings).await?;
        Ok(RedisStore {
            connection,
            prefix: settings.key_prefix.clone(),
        })
    }

    fn key(&self, kind: Kind, id: &str) -> String {
        format!("{}{}/{id}", self.prefix, kind.name())
    }

    fn token_key(&self, token: &str) -> String {
        format!("{}tokens/{token}", self.prefix)
    }

    fn user_tokens_key(&self, kuid: &str) -> String {
        format!("{}user-tokens/{kuid}", self.prefix)
    }

    pub async fn get(&self, kind: Kind, id: &str) -> StoreResult<Option<Value>> {
        let text: Option<String> = self
            .connection
            .get()
            .get(self.key(kind, id))
            .await
            .map_err(classify)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Failed(e.to_string())))
            .transpose()
    }

    pub async fn put(&self, kind: Kind, id: &str, value: &Value) -> StoreResult<()> {
        self.connection
            .get()
            .set::<_, _, ()>(self.key(kind, id), value.to_string())
            .await
            .map_err(classify)
    }

    pub async fn insert_new(&self, kind: Kind, id: &str, value: &Value) -> StoreResult<bool> {
        self.connection
            .get()
            .set_nx(self.key(kind, id), value.to_string())
            .await
            .map_err(classify)
    }

    pub async fn delete(&self, kind: Kind, id: &str) -> StoreResult<bool> {
        let removed: u64 = self
            .connection
            .get()
            .del(self.key(kind, id))
            .await
            .map_err(classify)?;
        Ok(removed > 0)
    }

    pub async fn list(&self, kind: Kind) -> StoreResult<Vec<(String, Value)>> {
        let prefix = self.key(kind, "");
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut connection = self.connection.get();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(classify)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<String>> = connection.mget(chunk).await.map_err(classify)?;
            for (key, text) in chunk.iter().zip(values) {
                let Some(text) = text else { continue };
                let value =
                    serde_json::from_str(&text).map_err(|e| StoreError::Failed(e.to_string()))?;
                out.push((key[prefix.len()..].to_owned(), value));
            }
        }
        Ok(out)
    }

    pub async fn put_token(
        &self,
        token: &str,
        kuid: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match ttl {
            Some(ttl) => pipe
                .pset_ex(self.token_key(token), kuid, ttl.as_millis().max(1) as u64)
                .ignore(),
            None => pipe.set(self.token_key(token), kuid).ignore(),
        };
        pipe.sadd(self.user_tokens_key(kuid), token).ignore();
        pipe.query_async::<()>(&mut self.connection.get())
            .await
            .map_err(classify)
    }

    pub async fn token_owner(&self, token: &str) -> StoreResult<Option<String>> {
        self.connection
            .get()
            .get(self.token_key(token))
            .await
            .map_err(classify)
    }

    /// The owner of a live token and when Redis forgets it (ms since the epoch; None if
    /// never): one round trip (GET and PTTL pipelined).
    pub async fn token_life(&self, token: &str) -> StoreResult<Option<(String, Option<u64>)>> {
        let key = self.token_key(token);
        let (owner, ttl): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut self.connection.get())
            .await
            .map_err(classify)?;
        Ok(match (owner, ttl) {
            (Some(owner), -1) => Some((owner, None)),
            (Some(owner), ttl) if ttl >= 0 => {
                Some((owner, Some(crate::protocol::now_ms() + ttl as u64)))
            }
            // Gone between the two reads (-2): expired or revoked just now.
            _ => None,
        })
    }

    pub async fn delete_token(&self, token: &str) -> StoreResult<()> {
        let mut connection = self.connection.get();
        let owner: Option<String> = connection
            .get(self.token_key(token))
            .await
            .map_err(classify)?;
        let mut pipe = redis::pipe();
        pipe.atomic().del(self.token_key(token)).ignore();
        if let Some(owner) = owner {
            pipe.srem(self.user_tokens_key(&owner), token).ignore();
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(classify)
    }

    /// Live tokens of a user; the index forgets tokens that expired on their own.
    pub async fn user_tokens(&self, kuid: &str) -> StoreResult<Vec<String>> {
        let mut connection = self.connection.get();
        let index = self.user_tokens_key(kuid);
        let tokens: Vec<String> = connection.smembers(&index).await.map_err(classify)?;
        if tokens.is_empty() {
            return Ok(tokens);
        }
        let keys: Vec<String> = tokens.iter().map(|t| self.token_key(t)).collect();
        let owners: Vec<Option<String>> = connection.mget(&keys).await.map_err(classify)?;
        let (live, gone): (Vec<_>, Vec<_>) = tokens
            .into_iter()
            .zip(owners)
            .partition(|(_, owner)| owner.is_some());
        if !gone.is_empty() {
            let gone: Vec<String> = gone.into_iter().map(|(t, _)| t).collect();
            connection
                .srem::<_, _, ()>(&index, gone)
                .await
                .map_err(classify)?;
        }
        Ok(live.into_iter().map(|(t, _)| t).collect())
    }

    pub async fn secret_or_init(&self, generated: &str) -> StoreResult<(String, bool)> {
        let mut connection = self.connection.get();
        let key = format!("{}secret", self.prefix);
        let created: bool = connection.set_nx(&key, generated).await.map_err(classify)?;
        let secret: Option<String> = connection.get(&key).await.map_err(classify)?;
        let secret =
            secret.ok_or_else(|| StoreError::Failed("the stored secret vanished".into()))?;
        Ok((secret, created))
    }

    pub async fn security_version(&self) -> StoreResult<u64> {
        let version: Option<u64> = self
            .connection
            .get()
            .get(format!("{}security-version", self.prefix))
            .await
            .map_err(classify)?;
        // A store set up by this server always has the counter: without it the data was
        // lost (or never versioned), and no cached rights may match.
        Ok(version.unwrap_or(NO_VERSION))
    }

    /// Starts the counter of a new store.
    pub async fn init_security_version(&self) -> StoreResult<()> {
        let _: bool = self
            .connection
            .get()
            .set_nx(format!("{}security-version", self.prefix), 0u64)
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn bump_security_version(&self) -> StoreResult<u64> {
        self.connection
            .get()
            .incr(format!("{}security-version", self.prefix), 1u64)
            .await
            .map_err(classify)
    }

    pub async fn subscribers(&self, channel: &str) -> StoreResult<usize> {
        let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut self.connection.get())
            .await
            .map_err(classify)?;
        Ok(counts.first().map_or(0, |(_, n)| *n))
    }

    pub async fn ping(&self) -> StoreResult<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection.get())
            .await
            .map(|_| ())
            .map_err(classify)
    }
}
