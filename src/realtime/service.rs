//! The realtime front door (PROTOCOL.md §4.5, §7): every change to who listens to what,
//! and every message to listeners, goes through `Realtime`. It owns the hub (this node's
//! rooms), the session registry (which sockets use which token) and a handle on the
//! cluster bus, and keeps the ordering rules between them:
//!
//! - before a subscribe may create a room, the node listens to the room's collection on
//!   the bus, confirmed (`Bus::hold`), so that a publish answered later anywhere reaches it;
//! - a subscriber is counted on every node before its subscribe is answered
//!   (`Bus::changed`), and user notifications carry the cluster-wide count;
//! - a departure (unsubscribe, disconnect, token end) releases the rooms it emptied and
//!   announces itself once the new counts are written.
//!
//! The bus hands what other nodes send to `Upstream::receive`.

use std::sync::{Arc, OnceLock, Weak};

use actix::{Actor, Addr};
use futures_util::future::LocalBoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;

use super::filter::Filter;
use super::hub::{
    Hub, HubLimits, Member, Presence, RoomTarget, Scope, SubscribeError, Subscription, Users,
    channel_name,
};
use super::notify::Published;
use super::sessions::{ExpiryCounters, Link, LinkedTokens, Move, Revoke, SessionRegistry, Unlink};
use crate::cluster::{Bus, BusMessage, ChannelHold, RoomState, Upstream, wire};
use crate::config::Limits;
use crate::delivery::Outbox;
use crate::protocol::errors::{self, ApiError};

/// What the service counts (`/metrics`).
#[derive(Clone, Default)]
pub struct RealtimeCounters {
    /// `realtime:publish` calls answered by this node.
    pub publishes: Counter,
    /// Notifications of documents queued for this node's sockets.
    pub deliveries: Counter,
    /// `TokenExpired` sent.
    pub expired: ExpiryCounters,
}

/// Given tokens, answers those that are no longer valid (revoked, or gone with their user).
pub type TokenCheck =
    Box<dyn Fn(Vec<String>) -> LocalBoxFuture<'static, Vec<String>> + Send + Sync>;

/// The filters' limits (`limits.subscription*`).
#[derive(Debug, Clone, Copy)]
struct FilterLimits {
    conditions: usize,
    minterms: usize,
}

pub struct Realtime {
    hub: Hub,
    bus: Arc<dyn Bus>,
    sessions: Addr<SessionRegistry>,
    hub_limits: HubLimits,
    filters: FilterLimits,
    counters: RealtimeCounters,
    /// How `recheck_tokens` tells valid tokens from revoked ones (set by `server.rs`).
    token_check: OnceLock<TokenCheck>,
    me: Weak<Realtime>,
}

/// A subscribe's room, compiled and checked, before the subscriber is registered.
pub struct Prepared<'a> {
    target: RoomTarget<'a>,
}

impl Prepared<'_> {
    pub fn room_id(&self) -> &str {
        &self.target.room_id
    }
}

/// A room that `join` can enter: on this node, or only on others (with its filter).
pub struct Located {
    pub index: String,
    pub collection: String,
    remote_body: Option<Value>,
}

/// An answered subscribe or join.
pub struct Subscribed {
    pub room_id: Arc<str>,
    pub channel: String,
}

impl Realtime {
    /// Starts the session registry: call from within an actix system.
    pub fn new(
        bus: Arc<dyn Bus>,
        limits: &Limits,
        room_key: [u8; 32],
        counters: RealtimeCounters,
    ) -> Arc<Realtime> {
        let node_id = bus.node_id().clone();
        let hub_limits = HubLimits {
            rooms: limits.subscription_rooms,
            subscriptions_per_connection: limits.subscriptions_per_connection,
            filters_memory: limits.subscription_filters_memory.0,
        };
        Arc::new_cyclic(|me| Realtime {
            hub: Hub::new(node_id.clone(), hub_limits, room_key),
            sessions: SessionRegistry::new(node_id, me.clone(), counters.expired.clone()).start(),
            bus,
            hub_limits,
            filters: FilterLimits {
                conditions: limits.subscription_conditions_count as usize,
                minterms: limits.subscription_minterms as usize,
            },
            counters,
            token_check: OnceLock::new(),
            me: me.clone(),
        })
    }

    fn compile(&self, body: &Value) -> Result<Filter, String> {
        Filter::compile_with(body, self.filters.conditions, self.filters.minterms)
    }

    /// Compiles a subscribe's filter and names its room; refused when the filter is
    /// invalid or the room could not be created here.
    pub fn prepare<'a>(
        &self,
        index: &'a str,
        collection: &'a str,
        body: &Value,
    ) -> Result<Prepared<'a>, ApiError> {
        let filter = self
            .compile(body)
            .map_err(|m| ApiError::new(errors::KONCORDE_DSL_ERROR, [m]))?;
        let room_id: Arc<str> = Arc::from(self.hub.room_id(&filter, index, collection));
        if self.hub.is_full_for(&room_id) {
            return Err(ApiError::plain(errors::TOO_MANY_ROOMS));
        }
        Ok(Prepared {
            target: RoomTarget {
                index,
                collection,
                filter,
                body: Arc::from(body.to_string()),
                room_id,
            },
        })
    }

    /// Registers `member` in the prepared room, on the channel of (scope, users); answered
    /// once every node counts it.
    pub async fn subscribe(
        &self,
        member: &Member,
        prepared: Prepared<'_>,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
    ) -> Result<Subscribed, ApiError> {
        let target = prepared.target;
        let hold = self.bus.hold(target.index, target.collection).await;
        let subscription = self
            .hub
            .subscribe(member, target, scope, users, volatile)
            .map_err(|e| self.error(e, None))?;
        Ok(self.settle(subscription, hold).await)
    }

    /// The room `room_id` names, on this node or else on another.
    pub async fn locate(&self, room_id: &str) -> Result<Located, ApiError> {
        if let Some((index, collection)) = self.hub.room_target(room_id) {
            return Ok(Located {
                index,
                collection,
                remote_body: None,
            });
        }
        let (index, collection, body) = self
            .bus
            .remote_room(room_id)
            .await
            .ok_or_else(|| ApiError::new(errors::ROOM_NOT_FOUND, [room_id]))?;
        Ok(Located {
            index,
            collection,
            remote_body: Some(body),
        })
    }

    /// Enters a located room, made on this node from its stored filter when only other
    /// nodes have it (the others are told of a join either way).
    pub async fn join(
        &self,
        member: &Member,
        room_id: &str,
        located: Located,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
    ) -> Result<Subscribed, ApiError> {
        let not_found = || ApiError::new(errors::ROOM_NOT_FOUND, [room_id]);
        let hold = self.bus.hold(&located.index, &located.collection).await;
        let joined = match located.remote_body {
            // The room exists here (or appeared meanwhile): join it.
            _ if self.hub.room_target(room_id).is_some() => {
                self.hub.join(member, room_id, scope, users, volatile)
            }
            Some(body) => {
                // The filter was stored by the node that made the room, under the same limits.
                let filter = self.compile(&body).map_err(|_| not_found())?;
                if self.hub.is_full_for(room_id) {
                    return Err(ApiError::plain(errors::TOO_MANY_ROOMS));
                }
                let target = RoomTarget {
                    index: &located.index,
                    collection: &located.collection,
                    filter,
                    body: Arc::from(body.to_string()),
                    room_id: Arc::from(room_id),
                };
                self.hub
                    .subscribe(member, target, scope, users, volatile)
                    .map(|mut joined| {
                        if let Some(presence) = &mut joined.presence {
                            presence.action = "join";
                        }
                        joined
                    })
            }
            None => self.hub.join(member, room_id, scope, users, volatile),
        }
        .map_err(|e| self.error(e, Some(room_id)))?;
        Ok(self.settle(joined, hold).await)
    }

    /// After the hub took a subscription: the channel hold is kept when a room was made,
    /// and the newcomer is counted and announced cluster-wide before the answer.
    async fn settle(&self, subscription: Subscription, hold: ChannelHold) -> Subscribed {
        let created = subscription
            .presence
            .as_ref()
            .is_some_and(|p| p.room_created);
        if created {
            hold.keep();
        } else {
            drop(hold);
        }
        if let Some(presence) = subscription.presence {
            if let Some(written) = self.bus.changed(vec![presence.room_id.clone()]) {
                written.await;
            }
            self.announce_everywhere(&presence);
        }
        Subscribed {
            room_id: subscription.room_id,
            channel: subscription.channel,
        }
    }

    fn error(&self, error: SubscribeError, room_id: Option<&str>) -> ApiError {
        match (error, room_id) {
            (SubscribeError::TooManySubscriptions, _) => ApiError::new(
                errors::TOO_MANY_SUBSCRIPTIONS,
                [self.hub_limits.subscriptions_per_connection.to_string()],
            ),
            (SubscribeError::FiltersBudget, _) => ApiError::new(
                errors::FILTERS_BUDGET,
                [self.hub_limits.filters_memory.to_string()],
            ),
            (SubscribeError::RoomNotFound, Some(room_id)) => {
                ApiError::new(errors::ROOM_NOT_FOUND, [room_id])
            }
            (SubscribeError::RoomNotFound | SubscribeError::TooManyRooms, _) => {
                ApiError::plain(errors::TOO_MANY_ROOMS)
            }
        }
    }

    /// Leaves every channel of the room; `not_subscribed` when the connection is in none.
    pub fn unsubscribe(&self, connection_id: &str, room_id: &str) -> Result<(), ApiError> {
        let left = self
            .hub
            .unsubscribe(connection_id, room_id)
            .ok_or_else(|| ApiError::new(errors::NOT_SUBSCRIBED, [connection_id, room_id]))?;
        self.left(left);
        Ok(())
    }

    /// A document published here: queued for the other nodes, delivered to this node's
    /// listeners, then sent; resolves once the bus holds it (docs/clustering.md). Refused,
    /// and delivered nowhere, while the bus cannot take more (`api.process.overloaded`).
    pub async fn publish(&self, published: &Published<'_>) -> Result<(), ApiError> {
        let sending = self.bus.send(BusMessage::Document {
            node: published.node.to_owned(),
            index: published.index.to_owned(),
            collection: published.collection.to_owned(),
            id: published.id.map(str::to_owned),
            source: published.source.clone(),
            request_id: published.request_id.to_owned(),
            timestamp: published.timestamp,
            volatile: published.volatile.cloned(),
            protocol: published.protocol.into(),
        });
        let Ok(queued) = sending else {
            return Err(ApiError::new(errors::OVERLOADED, [] as [&str; 0]));
        };
        self.counters.publishes.inc();
        let delivered = self.hub.publish(published);
        self.counters.deliveries.inc_by(delivered as u64);
        queued.go().await;
        Ok(())
    }

    /// Connections in the room across the cluster.
    pub async fn count(&self, room_id: &str) -> usize {
        self.hub.count(room_id) + self.bus.remote_count(room_id).await
    }

    /// Every room of the cluster: (index, collection, room id, count). This node's rooms
    /// as they are; the other nodes' as read at most a heartbeat ago (`Bus::remote_rooms`).
    pub async fn list(&self) -> Vec<(String, String, String, usize)> {
        let local = self.hub.list();
        let remote = self.bus.remote_rooms().await;
        let mut out: std::collections::HashMap<String, (String, String, usize)> = local
            .into_iter()
            .map(|r| (r.room_id.to_string(), (r.index, r.collection, r.count)))
            .collect();
        for r in remote.iter() {
            if r.remote_count == 0 || r.index.is_empty() {
                continue;
            }
            out.entry(r.room_id.clone())
                .or_insert_with(|| (r.index.clone(), r.collection.clone(), 0))
                .2 += r.remote_count;
        }
        out.into_iter()
            .map(|(id, (index, collection, count))| (index, collection, id, count))
            .collect()
    }

    /// A WebSocket used a token: when the token ends, the socket gets `TokenExpired`.
    pub fn link(
        &self,
        token: String,
        expires_at: Option<u64>,
        connection_id: Arc<str>,
        outbox: Outbox,
    ) {
        self.sessions.do_send(Link {
            token,
            expires_at,
            connection_id,
            outbox,
        });
    }

    /// The connection logged out: it no longer hears of its token.
    pub fn unlink(&self, connection_id: Arc<str>) {
        self.sessions.do_send(Unlink { connection_id });
    }

    /// A token was refreshed: its sockets move to the new one, keeping their subscriptions.
    pub fn refreshed(&self, from: String, to: String, expires_at: Option<u64>) {
        self.sessions.do_send(Move {
            from,
            to,
            expires_at,
        });
    }

    /// A socket closed: its subscriptions go (with "out" notifications when `notify`;
    /// a node shutting down sends none) and its token link too.
    pub fn disconnect(&self, connection_id: &Arc<str>, notify: bool) {
        self.leave_all(connection_id, notify);
        self.unlink(connection_id.clone());
    }

    /// Tokens were revoked here: every socket linked to one of them, on this node and on
    /// the others, gets `TokenExpired` and loses its subscriptions.
    pub fn revoke(&self, tokens: Vec<String>) {
        if tokens.is_empty() {
            return;
        }
        // Refused (counted) only when the retain queue is full; the revocation log has it.
        let _ = self.bus.send(BusMessage::Revoke {
            node: self.bus.node_id().to_string(),
            tokens: tokens.clone(),
        });
        self.sessions.do_send(Revoke { tokens });
    }

    /// A request on a linked socket was refused for its token (revoked, expired, its user
    /// gone): every socket of this node linked to it gets `TokenExpired` and loses its
    /// subscriptions, as after a revocation (the other nodes find out by themselves).
    pub fn end_token_here(&self, token: String) {
        self.sessions.do_send(Revoke {
            tokens: vec![token],
        });
    }

    /// How linked tokens are checked after revocations may have been missed.
    pub fn set_token_check(&self, check: TokenCheck) {
        let _ = self.token_check.set(check);
    }

    /// (rooms with a local subscriber, local connections with at least one subscription).
    pub fn metrics(&self) -> (usize, usize) {
        self.hub.metrics()
    }

    /// Drops every subscription of a connection (see `Hub::remove_connection`).
    pub(super) fn leave_all(&self, connection_id: &str, notify: bool) {
        self.left(self.hub.remove_connection(connection_id, notify));
    }

    /// After departures: rooms left empty release their channel; the others are told,
    /// with the cluster-wide count once the bus has the new one.
    fn left(&self, presences: Vec<Presence>) {
        if presences.is_empty() {
            return;
        }
        for p in presences.iter().filter(|p| p.room_removed) {
            self.bus.release(&p.index, &p.collection);
        }
        let rooms = presences.iter().map(|p| p.room_id.clone()).collect();
        let Some(written) = self.bus.changed(rooms) else {
            for p in &presences {
                self.announce_everywhere(p);
            }
            return;
        };
        let me = self.me.clone();
        actix_rt::spawn(async move {
            written.await;
            let Some(realtime) = me.upgrade() else {
                return;
            };
            for p in &presences {
                realtime.announce_everywhere(p);
                if p.room_removed && realtime.hub.count(&p.room_id) == 0 {
                    realtime.bus.forget(&p.room_id);
                }
            }
        });
    }

    /// User notifications here, with the cluster-wide count; and to the other nodes when
    /// one of them has a channel that wants them (learnt with the count's write).
    fn announce_everywhere(&self, presence: &Presence) {
        if !presence.notify || self.bus.is_leaving() {
            return;
        }
        let node = self.bus.node_id();
        let remote = self.bus.remote(&presence.room_id);
        let count = self.hub.count(&presence.room_id) + remote.count;
        self.hub.announce(presence, count, node);
        if remote.wants_users {
            // Refused only when the retain queue is full (counted).
            let _ = self.bus.send(BusMessage::Presence {
                node: node.to_string(),
                room: presence.room_id.to_string(),
                index: presence.index.clone(),
                collection: presence.collection.clone(),
                entered: presence.entered,
                action: presence.action.to_owned(),
                count,
                timestamp: presence.timestamp,
                volatile: presence.volatile.clone(),
                protocol: presence.protocol.into(),
            });
        }
    }
}

/// The key of room ids, derived from the deployment's JWT secret: the same on every node
/// that shares the store and across restarts, unknown to anyone without the secret, so
/// that nobody can compute the id of a room to `join` it without subscribing.
pub fn room_key(secret: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return [0; 32];
    };
    mac.update(b"kuzzle-rt room id key");
    mac.finalize().into_bytes().into()
}

/// The channel name a subscription would get, for callers that cannot be registered
/// (HTTP: the subscription would end with the request).
pub fn channel_of(room_id: &str, scope: Scope, users: Users) -> String {
    channel_name(room_id, scope, users)
}

impl Upstream for Realtime {
    fn receive(&self, message: BusMessage) {
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
                self.counters.deliveries.inc_by(delivered as u64);
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
            BusMessage::Revoke { tokens, .. } => self.sessions.do_send(Revoke { tokens }),
            // The store's caches' business (`Node` hands it to them).
            BusMessage::Security { .. } => {}
        }
    }

    fn room(&self, room_id: &str) -> Option<RoomState> {
        self.hub.room_snapshot(room_id).map(|r| RoomState {
            index: r.index,
            collection: r.collection,
            body: r.body,
            count: r.count,
            wants_users: r.wants_users,
        })
    }

    fn rooms(&self) -> Vec<Arc<str>> {
        self.hub.room_ids()
    }

    fn recheck_tokens(&self) {
        let me = self.me.clone();
        let sessions = self.sessions.clone();
        actix_rt::spawn(async move {
            let Ok(tokens) = sessions.send(LinkedTokens).await else {
                return;
            };
            let Some(realtime) = me.upgrade() else {
                return;
            };
            let Some(check) = realtime.token_check.get() else {
                return;
            };
            let invalid = check(tokens).await;
            if !invalid.is_empty() {
                log::warn!(
                    "[CLUSTER] {} linked token(s) found revoked by the check: their sockets get TokenExpired",
                    invalid.len()
                );
                sessions.do_send(Revoke { tokens: invalid });
            }
        });
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
