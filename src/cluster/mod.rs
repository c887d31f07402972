//! The cluster bus (PROTOCOL.md §4.7, §9): what one node tells the others and learns from
//! them. It knows nothing above it (no hub, session, request or socket): what arrives from
//! other nodes goes up through the `Upstream` trait, which the realtime service implements
//! and `server.rs` wires.
//!
//! `Bus` is the seam, with one implementation per kind of deployment:
//! - `alone::Alone`: a node on the embedded store, or with `cluster.enabled: false`: a
//!   one-node cluster, every call answered locally;
//! - `shared::SharedBus`: nodes sharing one Redis, built from
//!   - `membership`: each node's registration (a key with a TTL refreshed every heartbeat),
//!     evictions, the activity log, `cluster:status`, the minimum number of nodes;
//!   - `rooms`: room filters and per-node counts in Redis, for cluster-wide `count`,
//!     `list` and `join`;
//!   - `bridge`: the `Bridge` actor, owner of the Redis pub/sub connection (one channel per
//!     collection with local rooms, plus the revocations channel);
//!   - `publisher`: the queue towards Redis (sequence numbers, the retain queue, the replay
//!     buffer); `inbox`: what arrives (duplicates dropped, gaps filled from the history);
//!     `history`: each collection's stream in Redis (docs/clustering.md);
//!   - `revocations`: the revocation log, read by every node from its own offset;
//!   - `wire` (the messages' format), `keys` (Redis names), `logins` (shared login
//!     counters).

pub mod alone;
pub mod bridge;
pub mod history;
pub mod inbox;
pub mod keys;
pub mod logins;
pub mod membership;
pub mod messages;
pub mod publisher;
pub mod revocations;
pub mod rooms;
pub mod shared;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::Addr;
use futures_util::future::LocalBoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;

use crate::config::{Settings, StorageBackend};
use bridge::Bridge;
use keys::Keys;
use messages::Release;

pub use publisher::Refused;
pub use rooms::{Remote, RemoteRoom};

pub use wire::BusMessage;

/// A message queued for the other nodes (`Bus::send`). Its sending starts when it `go`es
/// or is dropped, so that a caller can deliver locally first: the queue's task does not
/// compete with that fan-out for the CPU.
pub struct Queued {
    start: Option<Box<dyn FnOnce() + Send>>,
    held: Option<LocalBoxFuture<'static, ()>>,
}

impl Queued {
    /// `held` resolves once the message is held (by Redis, or the retain queue); `start`
    /// wakes the queue's task.
    pub fn new(start: Box<dyn FnOnce() + Send>, held: LocalBoxFuture<'static, ()>) -> Queued {
        Queued {
            start: Some(start),
            held: Some(held),
        }
    }

    /// Nothing to send (no other node), held at once.
    pub fn done() -> Queued {
        Queued {
            start: None,
            held: None,
        }
    }

    /// Starts the sending; resolves once the message is held.
    pub async fn go(mut self) {
        if let Some(start) = self.start.take() {
            start();
        }
        if let Some(held) = self.held.take() {
            held.await;
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            start();
        }
    }
}

/// Handles on the bus counters (each clone counts into the same series; the metrics
/// register them).
#[derive(Clone, Debug, Default)]
pub struct BusCounters {
    /// Messages Redis took from this node (history and pub/sub).
    pub published: Counter,
    /// Messages from other nodes handed to the realtime layer.
    pub received: Counter,
    /// Messages for other nodes refused (retain queue full) or dropped (waited past its age).
    pub dropped: Counter,
    /// Messages from other nodes dropped because they were delivered already.
    pub duplicate: Counter,
    /// Messages from other nodes read back from the history (missed on pub/sub).
    pub recovered: Counter,
    /// Messages from other nodes missed for good: the history no longer held them.
    pub missed: Counter,
    /// Messages this node sent again after a fault (`publisher`: replay).
    pub replayed: Counter,
    pub reconnects: Counter,
    /// Messages waiting for Redis (the retain queue).
    pub waiting: prometheus_client::metrics::gauge::Gauge,
}

/// A room of this node as the other nodes must see it.
pub struct RoomState {
    pub index: String,
    pub collection: String,
    /// The filter as subscribed, as JSON text.
    pub body: Arc<str>,
    /// Connections in the room on this node.
    pub count: usize,
    /// Some channel of the room on this node wants user notifications.
    pub wants_users: bool,
}

/// What a node knows of the shared store, which the bus writes back when Redis comes back
/// empty: the JWT secret and the store's marker (JSON).
pub struct StoreState {
    pub secret: String,
    pub marker: String,
}

/// What the bus hands up, and asks of the node's realtime layer (implemented by
/// `realtime::Realtime`).
pub trait Upstream: Send + Sync {
    /// A message from another node: a document, a presence or a revocation.
    fn receive(&self, message: BusMessage);
    /// A room of this node as the others must see it; None once it is gone.
    fn room(&self, room_id: &str) -> Option<RoomState>;
    /// Every room of this node.
    fn rooms(&self) -> Vec<Arc<str>>;
    /// Revocations may have been missed: every token a socket is linked to is checked, and
    /// those no longer valid end as if revoked.
    fn recheck_tokens(&self);
}

/// The cluster as the rest of the node sees it: membership, and the realtime traffic
/// between nodes. Every call is bounded (Redis's command timeout) and never fails a
/// request because another node or Redis is away: it answers with what this node knows.
pub trait Bus: Send + Sync {
    /// This node's id, unique among live nodes.
    fn node_id(&self) -> &Arc<str>;

    /// Registers the node (its address is known once bound), from now on handing what
    /// arrives to `upstream`.
    fn start(
        &self,
        bound: SocketAddr,
        upstream: Weak<dyn Upstream>,
        store: StoreState,
    ) -> LocalBoxFuture<'_, Result<(), String>>;

    /// The store's marker as the bus last read it (JSON), when nodes share a store.
    fn store_marker(&self) -> Option<String> {
        None
    }

    /// The node leaves (SIGTERM): its registration and its counts go at once.
    fn leave(&self) -> LocalBoxFuture<'_, ()>;

    fn is_leaving(&self) -> bool;

    /// Resolves when this node must stop: another process took its id (a twin).
    fn displaced(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(futures_util::future::pending())
    }

    /// What this node says of itself (once started).
    fn node_info(&self) -> Option<NodeInfo>;

    /// Live nodes at the last heartbeat, this one included.
    fn alive(&self) -> usize;

    /// False while fewer than `cluster.minimumNodes` nodes are alive.
    fn has_enough_nodes(&self) -> bool;

    /// Whether the bus works (true for a node alone).
    fn is_up(&self) -> bool;

    /// `cluster:status` (PROTOCOL.md §4.7).
    fn status(&self) -> LocalBoxFuture<'_, Result<Value, String>>;

    /// Every live node's figures for the dashboard: `mine` for this one, the others' as
    /// they last wrote them.
    fn snapshots(&self, mine: Value) -> LocalBoxFuture<'_, Result<Vec<Value>, String>>;

    /// From now on, this node's figures (JSON text, made by `figures`) are written every
    /// second for the others' dashboards.
    fn share_figures(&self, _figures: Box<dyn Fn() -> Option<String>>) {}

    /// The bus's own figures for `server:metrics` (`nodes`, `bus`).
    fn figures(&self) -> Value;

    /// The Redis link that shared login counters use, when nodes share one.
    fn link(&self) -> Option<&Arc<Link>> {
        None
    }

    /// Before a room may appear on `index`/`collection`: this node listens to that
    /// collection's messages, confirmed, so that any publish answered later on any node
    /// reaches the new room. Released when the hold drops, unless kept.
    fn hold(&self, index: &str, collection: &str) -> LocalBoxFuture<'static, ChannelHold>;

    /// A room left this node: its collection's hold ends.
    fn release(&self, index: &str, collection: &str);

    /// Rooms changed here (members in or out): the others learn the new counts. The
    /// future, when there is one, resolves once they are written (bounded).
    fn changed(&self, rooms: Vec<Arc<str>>) -> Option<LocalBoxFuture<'static, ()>>;

    /// The other nodes' share of a room, as of the last write.
    fn remote(&self, room_id: &str) -> Remote;

    /// The room is no longer on this node: its remote share is forgotten.
    fn forget(&self, room_id: &str);

    /// A message for the other nodes, queued at once (in order) and sent once the
    /// `Queued` goes or drops; `Queued::go` resolves once Redis holds it, or once it waits
    /// for Redis in the retain queue. `Refused` (counted) when that queue is full.
    fn send(&self, message: BusMessage) -> Result<Queued, Refused>;

    /// The other nodes' count in a room, read now (falls back on the last write).
    fn remote_count<'a>(&'a self, room_id: &'a str) -> LocalBoxFuture<'a, usize>;

    /// The rooms of the other nodes with their counts, read at most once a heartbeat: a
    /// call within a heartbeat of the last read gets what it read (`realtime:list`).
    fn remote_rooms(&self) -> LocalBoxFuture<'_, Arc<Vec<RemoteRoom>>>;

    /// A room that exists on another node: its index, collection and filter.
    fn remote_room<'a>(
        &'a self,
        room_id: &'a str,
    ) -> LocalBoxFuture<'a, Option<(String, String, Value)>>;
}

/// Whether Redis answers the cluster. Each path (heartbeat, publishes, room writes, pub/sub)
/// reports how its calls went, and any success restores; the loss and the return are logged
/// once per episode, not per message nor per path flapping while Redis comes back.
pub struct BusHealth {
    down: AtomicBool,
    /// The loss was logged and its end not yet.
    announced: AtomicBool,
    /// When the loss was last logged.
    last_announced: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Messages sent to Redis, received from it, and dropped (`/metrics`, `server:metrics`).
    pub counters: BusCounters,
}

/// A loss within this long of the last one logged belongs to the same episode.
const EPISODE: Duration = Duration::from_secs(10);

impl BusHealth {
    pub fn new(counters: BusCounters) -> BusHealth {
        BusHealth {
            down: AtomicBool::new(false),
            announced: AtomicBool::new(false),
            last_announced: parking_lot::Mutex::new(None),
            counters,
        }
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    pub fn down(&self, reason: &str) {
        if self.down.swap(true, Ordering::AcqRel) || self.announced.load(Ordering::Acquire) {
            return;
        }
        let mut last = self.last_announced.lock();
        if last.is_some_and(|at| at.elapsed() < EPISODE) {
            return;
        }
        *last = Some(std::time::Instant::now());
        drop(last);
        self.announced.store(true, Ordering::Release);
        log::error!(
            "[CLUSTER] Redis does not answer ({reason}): this node keeps serving its own clients; cross-node notifications wait (cluster.bus.retain) and are sent when it answers again"
        );
    }

    /// Returns true when Redis was down until now.
    pub fn up(&self) -> bool {
        let was_down = self.down.swap(false, Ordering::AcqRel);
        if was_down && self.announced.swap(false, Ordering::AcqRel) {
            log::warn!("[CLUSTER] Redis answers again");
        }
        was_down
    }
}

/// What the cluster's parts share when there is a Redis.
pub struct Link {
    pub keys: Keys,
    /// Commands (the pub/sub connection is the bridge's own, from the same client).
    pub redis: crate::storage::redis_store::Connection,
    /// The longest wait for one Redis call (`services.storage.commandTimeout`).
    pub timeout: Duration,
    pub heartbeat: Duration,
    pub activity_depth: usize,
    pub health: BusHealth,
}

impl Link {
    /// One Redis call, bounded by the command timeout.
    pub async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => {
                self.redis.answered();
                result.map_err(|e| e.to_string())
            }
            Err(_) => {
                self.redis.unanswered().await;
                Err(format!("no answer within {} ms", self.timeout.as_millis()))
            }
        }
    }
}

impl Link {
    /// One script call, bounded by the command timeout.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut connection = self.redis.get();
        self.bounded(invocation.invoke_async(&mut connection)).await
    }
}

/// What this node says of itself in `cluster:status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    /// Milliseconds since the epoch.
    pub birthdate: u64,
    /// Random per process: two processes with the same id (twins) tell each other apart.
    #[serde(default)]
    pub incarnation: String,
}

impl NodeInfo {
    /// This process as node `id`, serving on `bound`, born now.
    pub fn new(id: &str, bound: SocketAddr) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            address: membership::advertised_address(bound),
            birthdate: crate::protocol::now_ms(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// The bus of this deployment, holding a node id unique among live nodes (a node alone:
/// any random one).
pub async fn connect(settings: &Settings, counters: BusCounters) -> Result<Arc<dyn Bus>, String> {
    let clustered =
        settings.cluster.enabled && settings.services.storage.backend == StorageBackend::Redis;
    if !clustered {
        return Ok(Arc::new(alone::Alone::new(settings)));
    }
    let storage = &settings.services.storage;
    let redis = crate::storage::redis_store::Connection::open(storage)
        .await
        .map_err(|e| e.to_string())?;
    let link = Link {
        keys: Keys::new(&storage.key_prefix),
        redis,
        timeout: Duration::from_millis(storage.command_timeout),
        heartbeat: Duration::from_millis(settings.cluster.heartbeat),
        activity_depth: settings.cluster.activity_depth as usize,
        health: BusHealth::new(counters),
    };
    let node_id = membership::claim_id(&link).await?;
    Ok(shared::SharedBus::new(node_id, Arc::new(link), settings))
}

/// A subscribe's claim on its collection's channel, released when dropped unless kept.
pub struct ChannelHold {
    release: Option<(Addr<Bridge>, String)>,
}

impl ChannelHold {
    /// A hold with nothing to release (no shared bus).
    pub fn none() -> ChannelHold {
        ChannelHold { release: None }
    }

    /// A room was created: the channel is now the room's, released when the room goes.
    pub fn keep(mut self) {
        self.release = None;
    }
}

impl Drop for ChannelHold {
    fn drop(&mut self) {
        if let Some((bridge, channel)) = self.release.take() {
            bridge.do_send(Release { channel });
        }
    }
}
