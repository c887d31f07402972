//! The cluster (PROTOCOL.md §4.7, §9): nodes that share one Redis.
//!
//! - `membership`: each node's registration (a key with a TTL refreshed every heartbeat),
//!   evictions, the activity log, `cluster:status`, the minimum number of nodes;
//! - `rooms`: room filters and per-node counts in Redis, for cluster-wide `count`, `list`
//!   and `join`;
//! - `bridge`: the `Bridge` actor, owner of the Redis pub/sub connection: one channel per
//!   collection with local rooms, plus the revocations channel; and the bounded queue of
//!   messages towards Redis (one PUBLISH per notification).
//!
//! A node on the embedded store, or with `cluster.enabled: false`, is a one-node cluster:
//! the same calls, answered locally.

pub mod bridge;
pub mod keys;
pub mod logins;
pub mod membership;
pub mod messages;
pub mod rooms;
pub mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::{Actor, Addr};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};

use crate::auth::messages::Revoke;
use crate::auth::registry::SessionRegistry;
use crate::config::{Settings, StorageBackend};
use crate::metrics::{BusCounters, Metrics};
use crate::protocol::now_ms;
use crate::realtime::Hub;
use crate::realtime::hub::Presence;
use crate::realtime::notify::Published;
use bridge::{Bridge, Publisher};
use keys::Keys;
use messages::{Hold, Release};
use rooms::RoomSync;
use wire::BusMessage;

/// Whether Redis answers the cluster; a change is logged once, not per message.
pub struct BusHealth {
    down: AtomicBool,
    /// Messages sent to Redis, received from it, and dropped (`/metrics`, `server:metrics`).
    pub counters: BusCounters,
}

impl BusHealth {
    pub fn new(counters: BusCounters) -> BusHealth {
        BusHealth {
            down: AtomicBool::new(false),
            counters,
        }
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    pub fn down(&self, reason: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            log::error!(
                "[CLUSTER] Redis does not answer ({reason}): this node keeps serving its own clients; cross-node notifications are dropped (and counted) until it answers again"
            );
        }
    }

    /// Returns true when Redis was down until now.
    pub fn up(&self) -> bool {
        let was_down = self.down.swap(false, Ordering::AcqRel);
        if was_down {
            log::warn!("[CLUSTER] Redis answers again");
        }
        was_down
    }
}

/// What the cluster's parts share when there is a Redis.
pub struct Link {
    pub keys: Keys,
    pub client: redis::Client,
    pub redis: ConnectionManager,
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
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// What this node says of itself in `cluster:status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    /// Milliseconds since the epoch.
    pub birthdate: u64,
}

/// Connected to Redis and holding a node id, before the node is built.
pub struct Joining {
    node_id: String,
    link: Option<Arc<Link>>,
}

impl Joining {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// Claims a node id unique among live nodes (standalone: any random one).
pub async fn connect(settings: &Settings, counters: BusCounters) -> Result<Joining, String> {
    let clustered =
        settings.cluster.enabled && settings.services.storage.backend == StorageBackend::Redis;
    if !clustered {
        return Ok(Joining {
            node_id: crate::names::random_name("knode"),
            link: None,
        });
    }
    let storage = &settings.services.storage;
    let client = crate::storage::redis_store::client(storage).map_err(|e| e.to_string())?;
    let redis = crate::storage::redis_store::connection_manager(client.clone(), storage)
        .await
        .map_err(|e| e.to_string())?;
    let link = Link {
        keys: Keys::new(&storage.key_prefix),
        client,
        redis,
        timeout: Duration::from_millis(storage.command_timeout),
        heartbeat: Duration::from_millis(settings.cluster.heartbeat),
        activity_depth: settings.cluster.activity_depth as usize,
        health: BusHealth::new(counters),
    };
    let node_id = membership::claim_id(&link).await?;
    Ok(Joining {
        node_id,
        link: Some(Arc::new(link)),
    })
}

pub struct Cluster {
    node_id: Arc<str>,
    hub: Arc<Hub>,
    link: Option<Arc<Link>>,
    info: OnceLock<NodeInfo>,
    minimum_nodes: usize,
    /// Live nodes at the last heartbeat, this one included.
    alive: AtomicUsize,
    leaving: AtomicBool,
    rooms: Arc<RoomSync>,
    bridge: OnceLock<Addr<Bridge>>,
    publisher: OnceLock<Publisher>,
    sessions: OnceLock<Addr<SessionRegistry>>,
    /// The activity of a one-node cluster (with Redis, the log is in Redis).
    local_activity: Mutex<VecDeque<Value>>,
    activity_depth: usize,
    /// The JWT secret, written back to a Redis that came back empty.
    secret: OnceLock<String>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    pub fn new(
        joining: Joining,
        hub: Arc<Hub>,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            node_id: hub.node_id().clone(),
            hub,
            link: joining.link,
            info: OnceLock::new(),
            minimum_nodes: settings.cluster.minimum_nodes as usize,
            alive: AtomicUsize::new(1),
            leaving: AtomicBool::new(false),
            rooms: Arc::new(RoomSync::new()),
            bridge: OnceLock::new(),
            publisher: OnceLock::new(),
            sessions: OnceLock::new(),
            local_activity: Mutex::new(VecDeque::new()),
            activity_depth: settings.cluster.activity_depth as usize,
            secret: OnceLock::new(),
            metrics,
        })
    }

    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    /// The Redis link, when nodes share one.
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.link.as_ref()
    }

    /// Registers the node (its address is known once bound) and starts the heartbeat, the
    /// room writer and the bridge.
    pub async fn start(
        self: &Arc<Self>,
        bound: SocketAddr,
        sessions: Addr<SessionRegistry>,
        secret: &str,
    ) -> Result<(), String> {
        let _ = self.secret.set(secret.to_owned());
        let info = NodeInfo {
            id: self.node_id.to_string(),
            address: membership::advertised_address(bound),
            birthdate: now_ms(),
        };
        let _ = self.sessions.set(sessions);
        let _ = self.info.set(info.clone());
        let Some(link) = &self.link else {
            self.push_local_activity(membership::event(&info, "joined", None));
            return Ok(());
        };
        membership::register(link, &info).await?;
        let bridge = Bridge::new(self.clone(), link.clone()).start();
        let _ = self.bridge.set(bridge);
        let _ = self.publisher.set(Publisher::start(link.clone()));
        actix_rt::spawn(self.rooms.clone().run(link.clone(), self.hub.clone()));
        actix_rt::spawn(membership::heartbeat(self.clone(), link.clone()));
        membership::refresh_alive(self, link).await;
        log::info!(
            "[CLUSTER] node {} joined the cluster ({} node(s) alive)",
            self.node_id,
            self.alive()
        );
        Ok(())
    }

    fn push_local_activity(&self, event: Value) {
        let mut log = self.local_activity.lock();
        log.push_front(event);
        log.truncate(self.activity_depth);
    }

    /// What this node says of itself (once started).
    pub fn node_info(&self) -> Option<&NodeInfo> {
        self.info.get()
    }

    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }

    fn set_alive(&self, n: usize) {
        self.alive.store(n, Ordering::Release);
    }

    /// False while fewer than `cluster.minimumNodes` nodes are alive.
    pub fn has_enough_nodes(&self) -> bool {
        self.alive() >= self.minimum_nodes
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Before a subscribe or join may create a room on `index`/`collection`: the node is
    /// listening to that collection's channel, confirmed by Redis, so that any publish
    /// answered later on any node reaches the new room. The hold is released when dropped,
    /// unless `keep` says a room now needs the channel.
    pub async fn hold_channel(&self, index: &str, collection: &str) -> ChannelHold {
        let (Some(link), Some(bridge)) = (&self.link, self.bridge.get()) else {
            return ChannelHold { release: None };
        };
        let channel = link.keys.collection_channel(index, collection);
        // An actor that stopped (node shutting down) means there is nothing to wait for.
        let _ = bridge
            .send(Hold {
                channel: channel.clone(),
            })
            .await;
        ChannelHold {
            release: Some((bridge.clone(), channel)),
        }
    }

    fn release_channel(&self, index: &str, collection: &str) {
        if let (Some(link), Some(bridge)) = (&self.link, self.bridge.get()) {
            bridge.do_send(Release {
                channel: link.keys.collection_channel(index, collection),
            });
        }
    }

    /// After a subscribe or join: the room is written to Redis and the others are told, so
    /// that the new subscriber is counted everywhere once it is answered.
    pub async fn entered(&self, presence: Presence) {
        let Some(link) = &self.link else {
            self.hub
                .announce(&presence, self.hub.count(&presence.room_id), &self.node_id);
            return;
        };
        let ticket = self.rooms.mark([presence.room_id.clone()]);
        if link.health.is_up() {
            self.rooms.wait(ticket, link.timeout).await;
        }
        self.announce_everywhere(&presence);
    }

    /// After departures (unsubscribe, disconnect, token expiry, revocation): rooms left
    /// empty release their channel; the others are told, with the cluster-wide count once
    /// Redis has the new one.
    pub fn left(self: &Arc<Self>, presences: Vec<Presence>) {
        if presences.is_empty() {
            return;
        }
        for p in presences.iter().filter(|p| p.room_removed) {
            self.release_channel(&p.index, &p.collection);
        }
        let Some(link) = self.link.clone() else {
            for p in &presences {
                self.hub
                    .announce(p, self.hub.count(&p.room_id), &self.node_id);
            }
            return;
        };
        let ticket = self.rooms.mark(presences.iter().map(|p| p.room_id.clone()));
        let cluster = self.clone();
        actix_rt::spawn(async move {
            if link.health.is_up() {
                cluster.rooms.wait(ticket, link.timeout).await;
            }
            for p in &presences {
                cluster.announce_everywhere(p);
                if p.room_removed {
                    cluster.rooms.forget(&p.room_id, &cluster.hub);
                }
            }
        });
    }

    /// Drops every subscription of a connection (see `Hub::remove_connection`).
    pub fn remove_connection(self: &Arc<Self>, connection_id: &str, notify: bool) {
        self.left(self.hub.remove_connection(connection_id, notify));
    }

    fn announce_everywhere(&self, presence: &Presence) {
        if !presence.notify || self.is_leaving() {
            return;
        }
        let remote = self.rooms.remote(&presence.room_id);
        let count = self.hub.count(&presence.room_id) + remote.count;
        self.hub.announce(presence, count, &self.node_id);
        // Only nodes with a channel that wants user notifications need the message; that
        // was learnt with the write that preceded this announcement.
        if let (Some(link), true) = (&self.link, remote.wants_users) {
            let message = BusMessage::Presence {
                node: self.node_id.to_string(),
                room: presence.room_id.to_string(),
                index: presence.index.clone(),
                collection: presence.collection.clone(),
                entered: presence.entered,
                action: presence.action.to_owned(),
                count,
                timestamp: presence.timestamp,
                volatile: presence.volatile.clone(),
                protocol: presence.protocol.into(),
            };
            self.send(
                link.keys
                    .collection_channel(&presence.index, &presence.collection),
                &message,
            );
        }
    }

    /// A publish: delivered here, and sent once to the other nodes.
    pub fn publish(&self, published: &Published<'_>) {
        self.metrics.publishes.inc();
        let delivered = self.hub.publish(published);
        self.metrics.deliveries.inc_by(delivered as u64);
        if let Some(link) = &self.link {
            let message = BusMessage::Document {
                node: self.node_id.to_string(),
                index: published.index.to_owned(),
                collection: published.collection.to_owned(),
                id: published.id.map(str::to_owned),
                source: published.source.clone(),
                request_id: published.request_id.to_owned(),
                timestamp: published.timestamp,
                volatile: published.volatile.cloned(),
                protocol: published.protocol.into(),
            };
            self.send(
                link.keys
                    .collection_channel(published.index, published.collection),
                &message,
            );
        }
    }

    /// Tokens were revoked here: the other nodes end their connections linked to them
    /// (this node's registry is told by the caller).
    pub fn revoke(&self, tokens: &[String]) {
        if let (Some(link), false) = (&self.link, tokens.is_empty()) {
            let message = BusMessage::Revoke {
                node: self.node_id.to_string(),
                tokens: tokens.to_vec(),
            };
            self.send(link.keys.sessions_channel(), &message);
        }
    }

    fn send(&self, channel: String, message: &BusMessage) {
        let Some(publisher) = self.publisher.get() else {
            return;
        };
        match serde_json::to_string(message) {
            Ok(payload) => publisher.send(channel, payload),
            Err(e) => log::error!("[CLUSTER] cannot serialise a bus message: {e}"),
        }
    }

    /// A message from another node.
    pub fn receive(&self, payload: &[u8]) {
        let message: BusMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("[CLUSTER] unreadable bus message dropped: {e}");
                return;
            }
        };
        if message.origin() == &*self.node_id {
            return; // delivered locally already
        }
        if let Some(link) = &self.link {
            link.health.counters.received.inc();
        }
        match message {
            BusMessage::Document {
                node,
                index,
                collection,
                id,
                source,
                request_id,
                timestamp,
                volatile,
                protocol,
            } => {
                let delivered = self.hub.publish(&Published {
                    node: &node,
                    index: &index,
                    collection: &collection,
                    id: id.as_deref(),
                    source: &source,
                    request_id: &request_id,
                    timestamp,
                    volatile: volatile.as_ref(),
                    protocol: protocol.into(),
                });
                self.metrics.deliveries.inc_by(delivered as u64);
            }
            BusMessage::Presence {
                node,
                room,
                index,
                collection,
                entered,
                action,
                count,
                timestamp,
                volatile,
                protocol,
            } => {
                let Some(action) = wire::presence_action(&action) else {
                    return;
                };
                let presence = Presence {
                    room_id: Arc::from(room),
                    index,
                    collection,
                    connection_id: Arc::from(""),
                    entered,
                    action,
                    volatile,
                    protocol: protocol.into(),
                    timestamp,
                    notify: true,
                    room_created: false,
                    room_removed: false,
                };
                self.hub.announce(&presence, count, &node);
            }
            BusMessage::Revoke { tokens, .. } => {
                if let Some(sessions) = self.sessions.get() {
                    sessions.do_send(Revoke { tokens });
                }
            }
        }
    }

    /// Connections in the room across the cluster.
    pub async fn count(&self, room_id: &str) -> usize {
        let local = self.hub.count(room_id);
        let Some(link) = &self.link else {
            return local;
        };
        match self
            .rooms
            .read(link, &self.node_id, &[room_id.to_owned()])
            .await
        {
            Ok(rooms) => local + rooms.first().map_or(0, |r| r.remote_count),
            Err(reason) => {
                link.health.down(&reason);
                local + self.rooms.remote(room_id).count
            }
        }
    }

    /// Every room of the cluster: (index, collection, room id, count).
    pub async fn list(&self) -> Vec<(String, String, String, usize)> {
        let local = self.hub.list();
        let Some(link) = &self.link else {
            return local
                .into_iter()
                .map(|r| (r.index, r.collection, r.room_id.to_string(), r.count))
                .collect();
        };
        let mut ids: std::collections::BTreeSet<String> =
            local.iter().map(|r| r.room_id.to_string()).collect();
        match membership::rooms_of_other_nodes(link, &self.node_id).await {
            Ok(remote) => ids.extend(remote),
            Err(reason) => link.health.down(&reason),
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let remote = match self.rooms.read(link, &self.node_id, &ids).await {
            Ok(rooms) => rooms,
            Err(reason) => {
                link.health.down(&reason);
                Vec::new()
            }
        };
        let mut out: std::collections::HashMap<String, (String, String, usize)> = local
            .into_iter()
            .map(|r| (r.room_id.to_string(), (r.index, r.collection, r.count)))
            .collect();
        for r in remote {
            if r.remote_count == 0 || r.index.is_empty() {
                continue;
            }
            out.entry(r.room_id).or_insert((r.index, r.collection, 0)).2 += r.remote_count;
        }
        out.into_iter()
            .map(|(id, (index, collection, count))| (index, collection, id, count))
            .collect()
    }

    /// A room that exists on another node: its index, collection and filter.
    pub async fn remote_room(&self, room_id: &str) -> Option<(String, String, Value)> {
        let link = self.link.as_ref()?;
        membership::room(link, room_id).await
    }

    /// Every live node's figures for the dashboard: this node's fresh, the others' as they
    /// last wrote them (at most a second old).
    pub async fn snapshots(&self, node: &crate::node::Node) -> Result<Vec<Value>, String> {
        let mine = node.metrics.snapshot(&node.figures());
        let Some(link) = &self.link else {
            return Ok(vec![mine]);
        };
        let mut all: Vec<Value> = membership::snapshots(link)
            .await?
            .into_iter()
            .filter(|s| s["id"] != mine["id"])
            .collect();
        all.push(mine);
        all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(all)
    }

    /// `cluster:status` (PROTOCOL.md §4.7).
    pub async fn status(&self) -> Result<Value, String> {
        let Some(link) = &self.link else {
            let nodes: Vec<&NodeInfo> = self.info.get().into_iter().collect();
            return Ok(json!({
                "activeNodes": nodes.len(),
                "activity": self.local_activity.lock().iter().cloned().collect::<Vec<_>>(),
                "nodes": nodes.iter().map(|n| membership::describe(n)).collect::<Vec<_>>(),
            }));
        };
        membership::status(link).await
    }

    /// The bus's figures for `server:metrics`.
    pub fn metrics(&self) -> Value {
        let Some(link) = &self.link else {
            return json!({"nodes": 1, "bus": {"state": "standalone"}});
        };
        let c = &link.health.counters;
        json!({
            "nodes": self.alive(),
            "bus": {
                "state": if self.bus_up() { "up" } else { "down" },
                "published": c.published.get(),
                "received": c.received.get(),
                "dropped": c.dropped.get(),
            }
        })
    }

    /// Whether Redis answers the cluster (true for a one-node cluster without one).
    pub fn bus_up(&self) -> bool {
        match &self.link {
            None => true,
            Some(link) => link.health.is_up() && self.bridge.get().is_some(),
        }
    }

    /// The node leaves (SIGTERM): its registration and its counts go at once.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let (Some(link), Some(info)) = (&self.link, self.info.get()) else {
            return;
        };
        self.rooms.stop(link.timeout).await;
        if let Err(reason) = membership::leave(link, &self.rooms, info).await {
            log::warn!("[CLUSTER] could not leave the cluster cleanly: {reason}");
        }
    }
}

/// A subscribe's claim on its collection's channel, released when dropped unless kept.
pub struct ChannelHold {
    release: Option<(Addr<Bridge>, String)>,
}

impl ChannelHold {
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
