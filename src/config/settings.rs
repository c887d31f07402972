//! The typed configuration tree (PROTOCOL.md §8.2). `Default` is the compiled-in
//! configuration; the top-level `kuzzlerc` file must say exactly the same (a test checks it).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use super::size::Size;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Settings {
    pub server: ServerSettings,
    pub http: HttpSettings,
    pub limits: Limits,
    pub security: SecuritySettings,
    pub services: Services,
    pub cluster: ClusterSettings,
    pub stats: StatsSettings,
}

/// `stats`: the snapshots `server:getStats`, `getLastStats` and `getAllStats` serve
/// (Kuzzle's deprecated statistics), in seconds as in Kuzzle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StatsSettings {
    pub enabled: bool,
    /// Seconds between two snapshots of a node's counters.
    pub stats_interval: u64,
    /// Seconds a snapshot is kept.
    pub ttl: u64,
}

impl Default for StatsSettings {
    fn default() -> Self {
        StatsSettings {
            enabled: true,
            stats_interval: 10,
            ttl: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServerSettings {
    /// kuzzle-rt extension: the interface to bind (Kuzzle always binds every interface).
    pub host: String,
    /// 0 (a kuzzle-rt extension) lets the system pick a free port; the listen log line names it.
    pub port: u16,
    pub max_request_size: Size,
    pub strict_sdk_version: bool,
    /// kuzzle-rt: an unknown configuration key stops the start (as `--strict-config`).
    pub strict_config: bool,
    pub shutdown_grace_period: u64,
    pub protocols: Protocols,
    /// kuzzle-rt: where `GET /metrics` is served.
    pub metrics: MetricsListener,
    /// kuzzle-rt: access log and log format.
    pub logs: LogSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct LogSettings {
    /// One `info` line per HTTP request and per WebSocket opened and closed.
    pub access: bool,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `server.metrics`: with a port, `/metrics` is served on `host:port` only, not on the
/// API's port, so that it need not be public.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricsListener {
    pub host: String,
    pub port: Option<u16>,
}

impl Default for MetricsListener {
    fn default() -> Self {
        MetricsListener {
            host: "127.0.0.1".into(),
            port: None,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "0.0.0.0".into(),
            port: 7512,
            max_request_size: Size(1 << 20),
            strict_sdk_version: true,
            strict_config: false,
            shutdown_grace_period: 20_000,
            protocols: Protocols::default(),
            metrics: MetricsListener::default(),
            logs: LogSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Protocols {
    pub http: HttpProtocol,
    pub websocket: WebsocketProtocol,
    pub mqtt: MqttProtocol,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpProtocol {
    pub enabled: bool,
    pub allow_compression: bool,
    pub max_encoding_layers: u32,
    pub max_form_file_size: Size,
    pub additional_content_types: Vec<String>,
    /// kuzzle-rt: the longest time (ms) to receive a request body once its head arrived.
    pub body_timeout: u64,
}

impl Default for HttpProtocol {
    fn default() -> Self {
        HttpProtocol {
            enabled: true,
            allow_compression: true,
            max_encoding_layers: 3,
            max_form_file_size: Size(1 << 20),
            additional_content_types: Vec::new(),
            body_timeout: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebsocketProtocol {
    pub enabled: bool,
    pub heartbeat: u64,
    pub idle_timeout: u64,
    pub send_pings_automatically: bool,
    pub reset_idle_timeout_on_send: bool,
    pub compression: bool,
    /// kuzzle-rt extension: with compression, smaller messages are sent uncompressed.
    pub compression_threshold: Size,
    pub rate_limit: u32,
    pub realtime_notifications: bool,
    /// kuzzle-rt: how long (ms) a socket the node decided to close (or whose client
    /// closed) may take to finish; past it the socket is released with a reset.
    pub close_timeout: u64,
    /// kuzzle-rt: how long (ms) a message may take to arrive once its first byte did.
    pub message_timeout: u64,
    /// kuzzle-rt: bytes of unfinished frames and messages held across all sockets.
    pub partial_messages_budget: Size,
}

impl Default for WebsocketProtocol {
    fn default() -> Self {
        WebsocketProtocol {
            enabled: true,
            heartbeat: 60_000,
            idle_timeout: 0,
            send_pings_automatically: false,
            reset_idle_timeout_on_send: false,
            compression: false,
            compression_threshold: Size(1024),
            rate_limit: 0,
            realtime_notifications: true,
            close_timeout: 5_000,
            message_timeout: 30_000,
            partial_messages_budget: Size(256 << 20),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MqttProtocol {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpSettings {
    #[serde(deserialize_with = "origin_list")]
    pub access_control_allow_origin: Vec<String>,
    #[serde(rename = "accessControlAllowOriginUseRegExp")]
    pub access_control_allow_origin_use_regexp: bool,
    pub access_control_allow_methods: String,
    pub access_control_allow_headers: String,
    pub cookie_authentication: bool,
    /// kuzzle-rt: proxies whose `X-Forwarded-For` names the client address.
    pub trusted_proxies: Vec<ProxyRange>,
    /// kuzzle-rt: `GET /metrics` (Prometheus).
    pub metrics: HttpMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpMetrics {
    pub enabled: bool,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics { enabled: true }
    }
}

/// A trusted proxy: one address (`10.0.0.5`) or a network (`10.0.0.0/8`), for proxies
/// whose address is not fixed (containers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ProxyRange(ipnet::IpNet);

impl ProxyRange {
    pub fn contains(&self, address: &std::net::IpAddr) -> bool {
        self.0.contains(address)
    }
}

impl From<ProxyRange> for String {
    fn from(range: ProxyRange) -> String {
        if range.0.prefix_len() == range.0.max_prefix_len() {
            range.0.addr().to_string()
        } else {
            range.0.to_string()
        }
    }
}

impl std::str::FromStr for ProxyRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(ProxyRange)
            .map_err(|_| format!("{text:?} is neither an IP address nor a network (a.b.c.d/n)"))
    }
}

impl<'de> Deserialize<'de> for ProxyRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            access_control_allow_origin: vec!["*".into()],
            access_control_allow_origin_use_regexp: false,
            access_control_allow_methods: "GET,POST,PUT,PATCH,DELETE,OPTIONS,HEAD".into(),
            access_control_allow_headers: "Content-Type, Access-Control-Allow-Headers, Authorization, X-Requested-With, Content-Encoding, Content-Length, X-Kuzzle-Volatile".into(),
            cookie_authentication: true,
            trusted_proxies: Vec::new(),
            metrics: HttpMetrics::default(),
        }
    }
}

/// A comma-separated string (entries trimmed) or an array of strings.
fn origin_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        List(Vec<String>),
    }
    match Raw::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected a string or an array of strings"))?
    {
        Raw::Text(t) => Ok(t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()),
        Raw::List(l) => Ok(l),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Limits {
    pub concurrent_requests: u32,
    pub requests_buffer_size: u32,
    pub requests_buffer_warning_threshold: u32,
    pub logins_per_second: u32,
    /// kuzzle-rt: `auth:login` calls per second per client address; 0 = unlimited.
    pub logins_per_second_per_address: u32,
    /// kuzzle-rt: consecutive failed logins for one username before delays start.
    pub login_failures_before_delay: u32,
    /// kuzzle-rt: the first delay (ms), doubled by each further failure.
    pub login_failure_delay: u64,
    /// kuzzle-rt: the longest delay (ms).
    pub login_failure_max_delay: u64,
    /// kuzzle-rt: per username, passwords checked per minute from addresses it did not
    /// log in from recently; 0 = no ceiling.
    pub login_failures_per_username_per_minute: u32,
    /// kuzzle-rt: how long (ms) an address a username logged in from stays exempt from
    /// that ceiling.
    pub login_known_address_ttl: u64,
    pub subscription_conditions_count: u32,
    pub subscription_rooms: u64,
    /// kuzzle-rt: most subscriptions, (room, channel) pairs, per connection; 0 = unlimited.
    pub subscriptions_per_connection: u64,
    pub documents_fetch_count: u32,
    pub documents_write_count: u32,
    pub subscription_minterms: u32,
    /// kuzzle-rt: estimated bytes every room's filter together may hold; 0 = unlimited.
    pub subscription_filters_memory: Size,
    #[serde(rename = "subscriptionDocumentTTL")]
    pub subscription_document_ttl: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrent_requests: 100,
            requests_buffer_size: 50_000,
            requests_buffer_warning_threshold: 5_000,
            logins_per_second: 1,
            logins_per_second_per_address: 10,
            login_failures_before_delay: 5,
            login_failure_delay: 1_000,
            login_failure_max_delay: 60_000,
            login_failures_per_username_per_minute: 100,
            login_known_address_ttl: 30 * 24 * 3600 * 1000,
            subscription_conditions_count: 100,
            subscription_rooms: 1_000_000,
            subscriptions_per_connection: 1_000,
            documents_fetch_count: 10_000,
            documents_write_count: 200,
            subscription_minterms: 16,
            subscription_filters_memory: Size(1 << 30),
            subscription_document_ttl: 259_200_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecuritySettings {
    pub restricted_profile_ids: Vec<String>,
    pub auth_token: TokenSettings,
    /// Deprecated alias of `authToken`, read for each key `authToken` leaves null.
    pub jwt: TokenSettings,
    pub default: DefaultSecurity,
    pub standard: StandardSecurity,
    pub api_key: ApiKeySettings,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            restricted_profile_ids: vec!["default".into()],
            auth_token: TokenSettings {
                algorithm: Some("HS256".into()),
                expires_in: Some(json!("1h")),
                grace_period: Some(1000),
                max_ttl: Some(-1),
                secret: None,
            },
            jwt: TokenSettings::default(),
            default: DefaultSecurity::default(),
            standard: StandardSecurity::default(),
            api_key: ApiKeySettings { max_ttl: -1 },
        }
    }
}

impl SecuritySettings {
    pub fn algorithm(&self) -> &str {
        self.auth_token
            .algorithm
            .as_deref()
            .or(self.jwt.algorithm.as_deref())
            .unwrap_or("HS256")
    }

    pub fn expires_in(&self) -> Value {
        self.auth_token
            .expires_in
            .clone()
            .or_else(|| self.jwt.expires_in.clone())
            .unwrap_or_else(|| json!("1h"))
    }

    pub fn grace_period(&self) -> u64 {
        self.auth_token
            .grace_period
            .or(self.jwt.grace_period)
            .unwrap_or(1000)
    }

    pub fn max_ttl(&self) -> i64 {
        self.auth_token.max_ttl.or(self.jwt.max_ttl).unwrap_or(-1)
    }

    pub fn secret(&self) -> Option<&str> {
        self.auth_token
            .secret
            .as_deref()
            .or(self.jwt.secret.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct TokenSettings {
    pub algorithm: Option<String>,
    pub expires_in: Option<Value>,
    pub grace_period: Option<u64>,
    #[serde(rename = "maxTTL")]
    pub max_ttl: Option<i64>,
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefaultSecurity {
    pub role: Value,
}

impl Default for DefaultSecurity {
    fn default() -> Self {
        DefaultSecurity {
            role: json!({"controllers": {"*": {"actions": {"*": true}}}}),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StandardSecurity {
    pub roles: Map<String, Value>,
    pub profiles: Map<String, Value>,
}

impl Default for StandardSecurity {
    fn default() -> Self {
        let roles = json!({
            "admin": {"controllers": {"*": {"actions": {"*": true}}}},
            "default": {"controllers": {
                "auth": {"actions": {"checkToken": true, "getCurrentUser": true, "getMyRights": true, "logout": true, "updateSelf": true}},
                "server": {"actions": {"publicApi": true}}
            }},
            "anonymous": {"controllers": {
                "auth": {"actions": {"checkToken": true, "getCurrentUser": true, "getMyRights": true, "login": true}},
                "server": {"actions": {"publicApi": true, "openapi": true}}
            }}
        });
        let profiles = json!({
            "admin": {"rateLimit": 0, "policies": [{"roleId": "admin"}]},
            "default": {"rateLimit": 10, "policies": [{"roleId": "default"}]},
            "anonymous": {"rateLimit": 200, "policies": [{"roleId": "anonymous"}]}
        });
        let as_map = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        StandardSecurity {
            roles: as_map(roles),
            profiles: as_map(profiles),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiKeySettings {
    #[serde(rename = "maxTTL")]
    pub max_ttl: i64,
}

impl Default for ApiKeySettings {
    fn default() -> Self {
        ApiKeySettings { max_ttl: -1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Services {
    pub storage: StorageSettings,
    /// Kuzzle's own service keys: accepted, ignored, and warned about (CN-41).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_cache: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_storage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_engine: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Embedded,
    Redis,
}

impl StorageBackend {
    pub fn name(self) -> &'static str {
        match self {
            StorageBackend::Embedded => "embedded",
            StorageBackend::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageSettings {
    pub backend: StorageBackend,
    pub path: String,
    pub node: RedisNode,
    /// Redis Cluster's seed nodes (Kuzzle's `nodes`): when set, the store is a Redis Cluster
    /// and `node` is ignored.
    pub nodes: Vec<RedisNode>,
    pub database: u32,
    pub options: RedisOptions,
    pub key_prefix: String,
    /// kuzzle-rt: the longest wait for one store call (ms); past it the call fails as if
    /// the store were unreachable.
    pub command_timeout: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: StorageBackend::Embedded,
            path: "./data".into(),
            node: RedisNode::default(),
            nodes: Vec::new(),
            database: 0,
            options: RedisOptions::default(),
            key_prefix: "krt/".into(),
            command_timeout: 1_000,
        }
    }
}

impl StorageSettings {
    /// The store is a Redis Cluster (`nodes` set, backend "redis").
    pub fn is_redis_cluster(&self) -> bool {
        self.backend == StorageBackend::Redis && !self.nodes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisNode {
    pub host: String,
    pub port: u16,
}

impl Default for RedisNode {
    fn default() -> Self {
        RedisNode {
            host: "localhost".into(),
            port: 6379,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RedisOptions {
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterSettings {
    pub enabled: bool,
    pub heartbeat: u64,
    pub minimum_nodes: u32,
    pub activity_depth: u32,
    pub join_timeout: u64,
    pub sync_timeout: u64,
    pub ports: ClusterPorts,
    pub ip: Option<String>,
    pub interface: Option<String>,
    pub ipv6: bool,
    pub bus: BusSettings,
}

/// How the bus keeps what it carries (docs/clustering.md): the history every node reads
/// its gaps from, what a node keeps while Redis is away, and what it sends again after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BusSettings {
    pub history: HistorySettings,
    pub retain: WindowSettings,
    pub replay: WindowSettings,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            history: HistorySettings::default(),
            retain: WindowSettings::default(),
            replay: WindowSettings {
                max_age: 10_000,
                ..WindowSettings::default()
            },
        }
    }
}

/// Each collection's history in Redis: entries older than `max_age` ms, or beyond the
/// newest `max_length`, go (approximately: whole blocks of entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HistorySettings {
    pub max_age: u64,
    pub max_length: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            max_age: 60_000,
            max_length: 10_000,
        }
    }
}

/// A node-wide queue of messages: at most `max_messages`, `max_size` bytes, `max_age` ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WindowSettings {
    pub max_messages: u64,
    pub max_age: u64,
    pub max_size: Size,
}

impl Default for WindowSettings {
    fn default() -> Self {
        WindowSettings {
            max_messages: 100_000,
            max_age: 60_000,
            max_size: Size(64 << 20),
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: true,
            heartbeat: 2000,
            minimum_nodes: 1,
            activity_depth: 50,
            join_timeout: 60_000,
            sync_timeout: 5_000,
            ports: ClusterPorts::default(),
            ip: Some("private".into()),
            interface: None,
            ipv6: false,
            bus: BusSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterPorts {
    pub command: u16,
    pub sync: u16,
}

impl Default for ClusterPorts {
    fn default() -> Self {
        ClusterPorts {
            command: 7510,
            sync: 7511,
        }
    }
}

/// Keys whose value is text even when it looks like a number or a boolean (CN-43):
/// the environment source leaves their values unconverted. Keys whose default is a
/// string are found from the defaults; these are the ones whose default is null.
pub const NULLABLE_STRING_KEYS: &[&str] = &[
    "security.authToken.secret",
    "security.jwt.secret",
    "security.jwt.algorithm",
    "services.storage.options.username",
    "services.storage.options.password",
    "cluster.interface",
];
