//! The cluster store: Redis, shared by every node — one server (`services.storage.node`) or
//! a Redis Cluster (`services.storage.nodes`, RESP3, its client routing each key to its
//! slot's master and following MOVED, ASK and failovers). Keys live under
//! `services.storage.keyPrefix`; tokens are keys whose TTL is their remaining life. Every
//! command touches one key, or keys the cluster client splits per slot (MGET); lists scan
//! every master.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
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

/// A handle on one Redis connection, to one server or to a Redis Cluster: every command
/// is written once for both (`query_async(&mut handle)`).
#[derive(Clone)]
pub enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

impl Handle {
    /// The masters, for commands Redis Cluster answers per node (a SCAN, with its cursor):
    /// their addresses as the cluster's slot map says now (one None for a single server).
    pub async fn masters(&mut self) -> redis::RedisResult<Vec<Option<(String, u16)>>> {
        match self {
            Handle::Single(_) => Ok(vec![None]),
            Handle::Cluster(c) => Ok(masters(c).await?.into_iter().map(Some).collect()),
        }
    }

    /// Runs `command` on one master named by `masters` (the server when None).
    pub async fn on_master(
        &mut self,
        master: &Option<(String, u16)>,
        command: &redis::Cmd,
    ) -> redis::RedisResult<redis::Value> {
        match (self, master) {
            (Handle::Cluster(c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                c.route_command(command.clone(), routing).await
            }
            (handle, _) => command.query_async(handle).await,
        }
    }
}

/// The masters of a Redis Cluster, from `CLUSTER SHARDS` (Redis 7).
async fn masters(connection: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let shards: redis::Value = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(connection)
        .await?;
    let mut out = Vec::new();
    for shard in as_list(&shards) {
        let Some(nodes) = field(shard, "nodes") else {
            continue;
        };
        for node in as_list(nodes) {
            let text = |name| {
                field(node, name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            let port = field(node, "port").and_then(|v| redis::from_redis_value_ref::<u16>(v).ok());
            let (Some(role), Some(health), Some(host), Some(port)) =
                (text("role"), text("health"), text("ip"), port)
            else {
                continue;
            };
            if role == "master" && health == "online" {
                out.push((host, port));
            }
        }
    }
    if out.is_empty() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "CLUSTER SHARDS named no master online",
        )));
    }
    Ok(out)
}

/// The items of an array (a RESP3 map counts as its keys and values in turn).
fn as_list(value: &redis::Value) -> Vec<&redis::Value> {
    match value {
        redis::Value::Array(items) | redis::Value::Set(items) => items.iter().collect(),
        redis::Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// The value after `name` in a flat key/value list or a RESP3 map.
fn field<'a>(value: &'a redis::Value, name: &str) -> Option<&'a redis::Value> {
    let items = as_list(value);
    items
        .chunks(2)
        .find(|pair| redis::from_redis_value_ref::<String>(pair[0]).is_ok_and(|k| k == name))
        .and_then(|pair| pair.get(1).copied())
}

/// The credentials and protocol of every connection: RESP2 to one server, RESP3 to a Redis
/// Cluster (its sharded pub/sub needs it).
fn redis_settings(settings: &StorageSettings, protocol: ProtocolVersion) -> RedisConnectionInfo {
    let mut redis = RedisConnectionInfo::default()
        .set_db(i64::from(settings.database))
        .set_protocol(protocol);
    if let Some(username) = &settings.options.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &settings.options.password {
        redis = redis.set_password(password);
    }
    redis
}

fn no_tls(settings: &StorageSettings) -> StoreResult<()> {
    if settings.options.tls {
        return Err(StoreError::Unavailable(
            "services.storage.options.tls: TLS to Redis is not supported by this build".into(),
        ));
    }
    Ok(())
}

/// A client for the configured Redis server (the store's and the cluster's connections).
pub fn client(settings: &StorageSettings) -> StoreResult<Client> {
    no_tls(settings)?;
    let info = ConnectionAddr::Tcp(settings.node.host.clone(), settings.node.port)
        .into_connection_info()
        .map_err(classify)?
        .set_redis_settings(redis_settings(settings, ProtocolVersion::RESP2))
        .set_tcp_settings(tcp_settings(settings));
    Client::open(info).map_err(classify)
}

/// A client for the configured Redis Cluster, from its seed nodes.
pub fn cluster_client(settings: &StorageSettings) -> StoreResult<ClusterClient> {
    cluster_builder(settings)?.build().map_err(classify)
}

/// The builder of `cluster_client`, for a client with more (a push sender).
fn cluster_builder(settings: &StorageSettings) -> StoreResult<ClusterClientBuilder> {
    no_tls(settings)?;
    let mut seeds = Vec::with_capacity(settings.nodes.len());
    for node in &settings.nodes {
        seeds.push(
            ConnectionAddr::Tcp(node.host.clone(), node.port)
                .into_connection_info()
                .map_err(classify)?
                .set_redis_settings(redis_settings(settings, ProtocolVersion::RESP3)),
        );
    }
    Ok(ClusterClientBuilder::new(seeds)
        .use_protocol(ProtocolVersion::RESP3)
        .tcp_settings(tcp_settings(settings))
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .retries(3))
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

/// What connections are made from.
#[derive(Clone)]
enum Clients {
    Single(Client),
    Cluster(Box<ClusterClient>),
}

impl Clients {
    fn of(settings: &StorageSettings) -> StoreResult<Clients> {
        Ok(match settings.is_redis_cluster() {
            true => Clients::Cluster(Box::new(cluster_client(settings)?)),
            false => Clients::Single(client(settings)?),
        })
    }

    async fn connect(&self, settings: &StorageSettings) -> StoreResult<Handle> {
        match self {
            Clients::Single(client) => connection_manager(client.clone(), settings)
                .await
                .map(Handle::Single),
            Clients::Cluster(client) => {
                let seeds = || {
                    settings
                        .nodes
                        .iter()
                        .map(|n| format!("{}:{}", n.host, n.port))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                match tokio::time::timeout(Duration::from_secs(5), client.get_async_connection())
                    .await
                {
                    Ok(Ok(connection)) => Ok(Handle::Cluster(connection)),
                    Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                        "cannot reach the Redis Cluster at {}: {e}",
                        seeds()
                    ))),
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "cannot reach the Redis Cluster at {}: no answer within 5 s",
                        seeds()
                    ))),
                }
            }
        }
    }
}

/// Calls in a row without an answer before the connection is replaced.
const UNANSWERED_BEFORE_RENEWAL: u32 = 2;

/// A connection (to one server or a Redis Cluster) that is replaced when it stops
/// answering. Both reconnect after a reset or a refusal, but a frozen or half-open link is
/// closed by nobody (a timed-out call is not a dropped connection to them): after calls in
/// a row got no answer in time, a new connection takes the place of the silent one.
pub struct Connection {
    clients: Clients,
    settings: StorageSettings,
    current: parking_lot::RwLock<Handle>,
    unanswered: std::sync::atomic::AtomicU32,
    renewing: tokio::sync::Mutex<()>,
}

impl Connection {
    pub async fn open(settings: &StorageSettings) -> StoreResult<Connection> {
        let clients = Clients::of(settings)?;
        let handle = clients.connect(settings).await?;
        Ok(Connection {
            clients,
            settings: settings.clone(),
            current: parking_lot::RwLock::new(handle),
            unanswered: Default::default(),
            renewing: tokio::sync::Mutex::new(()),
        })
    }

    /// The client of a single server, for dedicated connections (pub/sub); None on a Redis
    /// Cluster.
    pub fn client(&self) -> Option<&Client> {
        match &self.clients {
            Clients::Single(client) => Some(client),
            Clients::Cluster(_) => None,
        }
    }

    /// A new connection to the Redis Cluster that hands what Redis pushes (sharded
    /// pub/sub messages, subscription changes, disconnections) to `push`: the bus's
    /// pub/sub link. None on a single server (its pub/sub link comes from `client`).
    pub async fn shard_pubsub(
        &self,
        push: impl redis::aio::AsyncPushSender,
    ) -> Option<StoreResult<ClusterConnection>> {
        if !self.is_cluster() {
            return None;
        }
        let connect = async {
            let client = cluster_builder(&self.settings)?
                .push_sender(push)
                .build()
                .map_err(classify)?;
            match tokio::time::timeout(Duration::from_secs(5), client.get_async_connection()).await
            {
                Ok(Ok(connection)) => Ok(connection),
                Ok(Err(e)) => Err(classify(e)),
                Err(_) => Err(StoreError::Unavailable(
                    "the Redis Cluster did not answer within 5 s".into(),
                )),
            }
        };
        Some(connect.await)
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.clients, Clients::Cluster(_))
    }

    /// A handle on the current connection (cheap: the connection is shared).
    pub fn get(&self) -> Handle {
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
        match self.clients.connect(&self.settings).await {
            Ok(handle) => {
                *self.current.write() = handle;
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

    pub async fn put_expiring(
        &self,
        kind: Kind,
        id: &str,
        value: &Value,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.connection
            .get()
            .pset_ex::<_, _, ()>(
                self.key(kind, id),
                value.to_string(),
                ttl.as_millis().max(1) as u64,
            )
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
        // A Redis Cluster answers a SCAN with the keys of the node asked: every master is.
        for master in connection.masters().await.map_err(classify)? {
            let mut cursor: u64 = 0;
            loop {
                let answer = connection
                    .on_master(
                        &master,
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await
                    .map_err(classify)?;
                let (next, batch): (u64, Vec<String>) = redis::from_redis_value(answer)
                    .map_err(|e| StoreError::Failed(e.to_string()))?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
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

    /// The user's index first, then the token: a failure in between leaves an index entry
    /// without its token (which `user_tokens` drops), never a token its user's revocations
    /// cannot find. (Two keys of two slots on a Redis Cluster: no transaction spans them.)
    pub async fn put_token(
        &self,
        token: &str,
        kuid: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let mut connection = self.connection.get();
        connection
            .sadd::<_, _, ()>(self.user_tokens_key(kuid), token)
            .await
            .map_err(classify)?;
        match ttl {
            Some(ttl) => {
                connection
                    .pset_ex::<_, _, ()>(self.token_key(token), kuid, ttl.as_millis().max(1) as u64)
                    .await
            }
            None => {
                connection
                    .set::<_, _, ()>(self.token_key(token), kuid)
                    .await
            }
        }
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

    /// The token first, then its entry in its user's index (an entry left behind is
    /// dropped by `user_tokens`).
    pub async fn delete_token(&self, token: &str) -> StoreResult<()> {
        let mut connection = self.connection.get();
        let owner: Option<String> = connection
            .get(self.token_key(token))
            .await
            .map_err(classify)?;
        connection
            .del::<_, ()>(self.token_key(token))
            .await
            .map_err(classify)?;
        if let Some(owner) = owner {
            connection
                .srem::<_, _, ()>(self.user_tokens_key(&owner), token)
                .await
                .map_err(classify)?;
        }
        Ok(())
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

    /// Subscribers of a channel: of its shard channel on a Redis Cluster (asked of the
    /// master that owns its slot), of the channel on one server.
    pub async fn subscribers(&self, channel: &str) -> StoreResult<usize> {
        let mut command = redis::cmd("PUBSUB");
        let answer = match self.connection.get() {
            Handle::Cluster(mut c) => {
                command.arg("SHARDNUMSUB").arg(channel);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    redis::cluster_routing::Route::with_key(
                        channel,
                        redis::cluster_routing::SlotAddr::Master,
                    ),
                ));
                c.route_command(command, routing).await
            }
            mut single => {
                command.arg("NUMSUB").arg(channel);
                command.query_async(&mut single).await
            }
        };
        let counts: Vec<(String, usize)> = redis::from_redis_value(answer.map_err(classify)?)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
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
