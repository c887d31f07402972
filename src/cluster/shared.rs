//! The bus of nodes that share one Redis: membership (`membership`), the rooms' counts
//! (`rooms`), and pub/sub (`bridge`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use actix::{Actor, Addr};
use futures_util::future::LocalBoxFuture;
use serde_json::{Value, json};

use super::bridge::Bridge;
use super::inbox::{Inbound, Inbox};
use super::messages::{Hold, Release};
use super::publisher::{Publisher, Refused};
use super::revocations::RevocationLog;
use super::rooms::{Remote, RemoteRoom, RoomSync};
use super::wire::BusMessage;
use super::{Bus, ChannelHold, Link, NodeInfo, Queued, StoreState, Upstream, membership};
use crate::config::BusSettings;
use crate::config::Settings;

/// Messages from other nodes waiting for the fan-out; past it the pub/sub reader waits
/// (Redis holds what follows in the connection's output buffer).
const INBOUND_QUEUE: usize = 4096;

pub struct SharedBus {
    node_id: Arc<str>,
    pub(super) link: Arc<Link>,
    pub(super) info: OnceLock<NodeInfo>,
    minimum_nodes: usize,
    /// Live nodes at the last heartbeat, this one included.
    alive: AtomicUsize,
    leaving: AtomicBool,
    /// The pub/sub link is subscribed and answers.
    pubsub: AtomicBool,
    pub(super) rooms: Arc<RoomSync>,
    pub(super) revocations: RevocationLog,
    bridge: OnceLock<Addr<Bridge>>,
    publisher: OnceLock<Arc<Publisher>>,
    /// What the bus keeps (`cluster.bus`).
    settings: BusSettings,
    upstream: OnceLock<Weak<dyn Upstream>>,
    /// The JWT secret, written back to a Redis that came back empty.
    pub(super) secret: OnceLock<String>,
    /// The store's marker as last read (JSON), written back with the secret.
    pub(super) marker: parking_lot::Mutex<String>,
    /// The control plane's thread.
    control: actix_rt::Arbiter,
    /// Wakes `displaced`.
    twin: tokio::sync::Notify,
    /// Another process holds this node's id: leaving must not touch its registration.
    displaced: AtomicBool,
    /// The other nodes' rooms and counts as last read, and when (`realtime:list`).
    census: parking_lot::Mutex<Option<(std::time::Instant, Arc<Vec<RemoteRoom>>)>>,
    /// One census read at a time; the callers waiting meanwhile take its result.
    census_reading: tokio::sync::Mutex<()>,
    me: Weak<SharedBus>,
}

impl SharedBus {
    pub fn new(node_id: String, link: Arc<Link>, settings: &Settings) -> Arc<SharedBus> {
        Arc::new_cyclic(|me| SharedBus {
            node_id: Arc::from(node_id),
            link,
            info: OnceLock::new(),
            minimum_nodes: settings.cluster.minimum_nodes as usize,
            alive: AtomicUsize::new(1),
            leaving: AtomicBool::new(false),
            pubsub: AtomicBool::new(false),
            rooms: Arc::new(RoomSync::new()),
            revocations: RevocationLog::default(),
            bridge: OnceLock::new(),
            publisher: OnceLock::new(),
            settings: settings.cluster.bus.clone(),
            upstream: OnceLock::new(),
            secret: OnceLock::new(),
            marker: parking_lot::Mutex::new(String::new()),
            twin: tokio::sync::Notify::new(),
            control: actix_rt::Arbiter::new(),
            displaced: AtomicBool::new(false),
            census: parking_lot::Mutex::new(None),
            census_reading: tokio::sync::Mutex::new(()),
            me: me.clone(),
        })
    }

    pub(super) fn set_alive(&self, n: usize) {
        self.alive.store(n, Ordering::Release);
    }

    /// Every room of this node is to be written again, filters included (Redis came
    /// back, maybe empty).
    pub(super) fn rewrite_rooms(&self) {
        if let Some(upstream) = self.upstream.get().and_then(Weak::upgrade) {
            self.rooms.mark_all(upstream.rooms());
        }
    }

    /// The other nodes' rooms as read less than a heartbeat ago.
    fn fresh_census(&self) -> Option<Arc<Vec<RemoteRoom>>> {
        self.census
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.link.heartbeat)
            .map(|(_, rooms)| rooms.clone())
    }

    /// Another process holds this node's id: the node stops (see `displaced`).
    pub(super) fn give_way(&self) {
        self.displaced.store(true, Ordering::Release);
        self.twin.notify_one();
    }

    /// The bridge's word on the pub/sub link.
    pub(super) fn pubsub_up(&self, up: bool) {
        self.pubsub.store(up, Ordering::Release);
    }

    fn upstream(&self) -> Option<Arc<dyn Upstream>> {
        self.upstream.get().and_then(Weak::upgrade)
    }

    /// Reads the revocation log (at every heartbeat, and after every reconnection): what
    /// other nodes revoked since the last read ends here too; when the log no longer
    /// covers the last read, every linked token is checked instead.
    pub(super) async fn catch_up(&self) {
        match self.revocations.catch_up(&self.link, &self.node_id).await {
            Ok(caught) => {
                let Some(upstream) = self.upstream() else {
                    return;
                };
                if caught.gap {
                    log::warn!(
                        "[CLUSTER] the revocation log no longer covers what this node read last (Redis emptied, or away for long): every linked token is checked"
                    );
                    upstream.recheck_tokens();
                }
                if !caught.tokens.is_empty() {
                    upstream.receive(BusMessage::Revoke {
                        node: String::new(),
                        tokens: caught.tokens,
                    });
                }
            }
            Err(reason) => self.link.health.down(&reason),
        }
    }

    /// `catch_up` as a task of its own.
    pub(super) fn catch_up_soon(&self) {
        if let Some(me) = self.me.upgrade() {
            actix_rt::spawn(async move { me.catch_up().await });
        }
    }

    /// Redis may have lost what it held lately: this node's recent messages go again.
    pub(super) fn replay_soon(&self) {
        if let Some(publisher) = self.publisher.get() {
            publisher.replay_soon();
        }
    }

    /// Redis answers again after a fault: if it is another Redis (restarted, failed over),
    /// this node's recent messages go again.
    pub(super) fn verify_soon(&self) {
        if let Some(publisher) = self.publisher.get() {
            publisher.verify_soon();
        }
    }

    /// A message from another node (JSON) for the realtime layer; `plain` when it came
    /// without a sequence (revocations), and may then be this node's own.
    pub(super) fn deliver_json(&self, json: &[u8], plain: bool) {
        let message: BusMessage = match serde_json::from_slice(json) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("[CLUSTER] unreadable bus message dropped: {e}");
                return;
            }
        };
        if plain && message.origin() == &*self.node_id {
            return; // delivered locally already
        }
        self.link.health.counters.received.inc();
        if let Some(upstream) = self.upstream() {
            upstream.receive(message);
        }
    }
}

impl Bus for SharedBus {
    fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    fn start(
        &self,
        bound: SocketAddr,
        upstream: Weak<dyn Upstream>,
        store: StoreState,
    ) -> LocalBoxFuture<'_, Result<(), String>> {
        let _ = self.secret.set(store.secret);
        *self.marker.lock() = store.marker;
        let _ = self.upstream.set(upstream.clone());
        let info = NodeInfo::new(&self.node_id, bound);
        let _ = self.info.set(info.clone());
        Box::pin(async move {
            let link = &self.link;
            let me = self.me.upgrade().ok_or("the bus is gone")?;
            // A node restarted under the id of one being evicted waits for the eviction.
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_millis(super::rooms::eviction_mark_ms(link));
            while !membership::register(link, &info).await? {
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "node id {}: another node's eviction of it did not end",
                        info.id
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            self.revocations.start(link, &self.node_id).await?;
            // The control plane (heartbeat, pub/sub reader, publish queue, room writer)
            // runs on a thread of its own, so that no fan-out, local or inbound, delays a
            // heartbeat past the node's TTL. What arrives is fanned out on this thread.
            let control = self.control.handle();
            let (inbound, arrivals) = tokio::sync::mpsc::channel::<Inbound>(INBOUND_QUEUE);
            let windows = [
                self.settings.history.max_age,
                self.settings.retain.max_age,
                self.settings.replay.max_age,
            ];
            let forget_after = std::time::Duration::from_millis(2 * windows.iter().sum::<u64>());
            actix_rt::spawn(Inbox::new(me.clone(), &info.incarnation, forget_after).run(arrivals));
            let bridge_bus = me.clone();
            let bridge_link = link.clone();
            let bridge = Bridge::start_in_arbiter(&control, move |_| {
                Bridge::new(bridge_bus, bridge_link, inbound)
            });
            let _ = self.bridge.set(bridge);
            // The node serves once it listens (bounded: a Redis that does not answer is the
            // bridge's to wait for, not the start's).
            let listening = tokio::time::Instant::now() + link.timeout * 2;
            while !self.pubsub.load(Ordering::Acquire) && tokio::time::Instant::now() < listening {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let publisher = Arc::new(Publisher::new(
                link.clone(),
                &info.incarnation,
                &self.settings,
            ));
            control.spawn(publisher.clone().run());
            let _ = self.publisher.set(publisher);
            control.spawn(
                self.rooms
                    .clone()
                    .run(link.clone(), self.node_id.clone(), upstream),
            );
            control.spawn(membership::heartbeat(me, link.clone()));
            membership::refresh_alive(self, link).await;
            log::info!(
                "[CLUSTER] node {} joined the cluster ({} node(s) alive)",
                self.node_id,
                self.alive()
            );
            Ok(())
        })
    }

    fn displaced(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(self.twin.notified())
    }

    fn store_marker(&self) -> Option<String> {
        Some(self.marker.lock().clone()).filter(|m| !m.is_empty())
    }

    fn leave(&self) -> LocalBoxFuture<'_, ()> {
        self.leaving.store(true, Ordering::Release);
        Box::pin(async move {
            let Some(info) = self.info.get() else {
                return;
            };
            if self.displaced.load(Ordering::Acquire) {
                // The registration, the roster entry and the counts are the twin's now.
                return;
            }
            self.rooms.stop(self.link.timeout).await;
            if let Err(reason) = membership::leave(&self.link, &self.rooms, info).await {
                log::warn!("[CLUSTER] could not leave the cluster cleanly: {reason}");
            }
            self.control.stop();
        })
    }

    fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    fn node_info(&self) -> Option<NodeInfo> {
        self.info.get().cloned()
    }

    fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }

    fn has_enough_nodes(&self) -> bool {
        self.alive() >= self.minimum_nodes
    }

    fn is_up(&self) -> bool {
        self.link.health.is_up() && self.pubsub.load(Ordering::Acquire)
    }

    fn status(&self) -> LocalBoxFuture<'_, Result<Value, String>> {
        Box::pin(membership::status(&self.link))
    }

    fn snapshots(&self, mine: Value) -> LocalBoxFuture<'_, Result<Vec<Value>, String>> {
        Box::pin(async move {
            let mut all: Vec<Value> = membership::snapshots(&self.link)
                .await?
                .into_iter()
                .filter(|s| s["id"] != mine["id"])
                .collect();
            all.push(mine);
            all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            Ok(all)
        })
    }

    fn share_figures(&self, figures: Box<dyn Fn() -> Option<String>>) {
        if let Some(me) = self.me.upgrade() {
            actix_rt::spawn(membership::share_figures(me, figures));
        }
    }

    fn figures(&self) -> Value {
        let c = &self.link.health.counters;
        json!({
            "nodes": self.alive(),
            "bus": {
                "state": if self.is_up() { "up" } else { "down" },
                "published": c.published.get(),
                "received": c.received.get(),
                "dropped": c.dropped.get(),
                "duplicate": c.duplicate.get(),
                "recovered": c.recovered.get(),
                "missed": c.missed.get(),
                "replayed": c.replayed.get(),
                "waiting": c.waiting.get(),
            }
        })
    }

    fn link(&self) -> Option<&Arc<Link>> {
        Some(&self.link)
    }

    fn hold(&self, index: &str, collection: &str) -> LocalBoxFuture<'static, ChannelHold> {
        let Some(bridge) = self.bridge.get().cloned() else {
            return Box::pin(async { ChannelHold::none() });
        };
        let channel = self.link.keys.collection_channel(index, collection);
        Box::pin(async move {
            // An actor that stopped (node shutting down) means there is nothing to wait for.
            let _ = bridge
                .send(Hold {
                    channel: channel.clone(),
                })
                .await;
            ChannelHold {
                release: Some((bridge, channel)),
            }
        })
    }

    fn release(&self, index: &str, collection: &str) {
        if let Some(bridge) = self.bridge.get() {
            bridge.do_send(Release {
                channel: self.link.keys.collection_channel(index, collection),
            });
        }
    }

    fn changed(&self, rooms: Vec<Arc<str>>) -> Option<LocalBoxFuture<'static, ()>> {
        let ticket = self.rooms.mark(rooms);
        let (sync, link) = (self.rooms.clone(), self.link.clone());
        Some(Box::pin(async move {
            if link.health.is_up() {
                sync.wait(ticket, link.timeout).await;
            }
        }))
    }

    fn remote(&self, room_id: &str) -> Remote {
        self.rooms.remote(room_id)
    }

    fn forget(&self, room_id: &str) {
        self.rooms.forget(room_id);
    }

    fn send(&self, message: BusMessage) -> Result<Queued, Refused> {
        let Some(publisher) = self.publisher.get() else {
            return Ok(Queued::done());
        };
        let (channel, history) = match &message {
            BusMessage::Document {
                index, collection, ..
            }
            | BusMessage::Presence {
                index, collection, ..
            } => {
                let channel = self.link.keys.collection_channel(index, collection);
                let history = self.link.keys.history_of(&channel);
                (channel, Some(history))
            }
            BusMessage::Revoke { .. } | BusMessage::Security { .. } => {
                (self.link.keys.sessions_channel(), None)
            }
        };
        let json = match serde_json::to_string(&message) {
            Ok(json) => json,
            Err(e) => {
                log::error!("[CLUSTER] cannot serialise a bus message: {e}");
                return Ok(Queued::done());
            }
        };
        // A revocation is also written to the log, which every node reads: one cut off
        // from pub/sub now learns of it when it reaches Redis again.
        if let (BusMessage::Revoke { tokens, .. }, Some(me)) = (message, self.me.upgrade()) {
            actix_rt::spawn(async move {
                let dropped = me.revocations.append(&me.link, &me.node_id, tokens).await;
                if dropped > 0 {
                    me.link.health.counters.dropped.inc_by(dropped as u64);
                    log::error!(
                        "[CLUSTER] {dropped} revocation(s) could not be kept while Redis was away: every node will check all its linked tokens instead"
                    );
                }
            });
        }
        let held = publisher.send(channel, history, json)?;
        let waker = publisher.clone();
        Ok(Queued::new(
            Box::new(move || waker.wake()),
            Box::pin(async move {
                if let Some(held) = held {
                    let _ = held.await;
                }
            }),
        ))
    }

    fn remote_count<'a>(&'a self, room_id: &'a str) -> LocalBoxFuture<'a, usize> {
        Box::pin(async move {
            let link = &self.link;
            match self
                .rooms
                .read(link, &self.node_id, &[room_id.to_owned()])
                .await
            {
                Ok(rooms) => rooms.first().map_or(0, |r| r.remote_count),
                Err(reason) => {
                    link.health.down(&reason);
                    self.rooms.remote(room_id).count
                }
            }
        })
    }

    fn remote_rooms(&self) -> LocalBoxFuture<'_, Arc<Vec<RemoteRoom>>> {
        Box::pin(async move {
            if let Some(rooms) = self.fresh_census() {
                return rooms;
            }
            let _reading = self.census_reading.lock().await;
            // Read by the caller this one waited for.
            if let Some(rooms) = self.fresh_census() {
                return rooms;
            }
            let link = &self.link;
            let read = async {
                let ids = membership::rooms_of_other_nodes(link, &self.node_id).await?;
                let mut ids: Vec<String> = ids.into_iter().collect();
                ids.sort_unstable();
                ids.dedup();
                self.rooms.read(link, &self.node_id, &ids).await
            };
            match read.await {
                Ok(rooms) => {
                    let rooms = Arc::new(rooms);
                    *self.census.lock() = Some((std::time::Instant::now(), rooms.clone()));
                    rooms
                }
                Err(reason) => {
                    link.health.down(&reason);
                    // What was read last, however old, rather than nothing.
                    self.census
                        .lock()
                        .as_ref()
                        .map_or_else(Default::default, |(_, rooms)| rooms.clone())
                }
            }
        })
    }

    fn remote_room<'a>(
        &'a self,
        room_id: &'a str,
    ) -> LocalBoxFuture<'a, Option<(String, String, Value)>> {
        Box::pin(membership::room(&self.link, room_id))
    }
}
