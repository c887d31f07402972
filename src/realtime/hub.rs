//! The node's rooms, channels and subscribers (PROTOCOL.md §7.2–7.8). Matching goes
//! through the candidate index of each index/collection (`index.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::filter::Filter;
use super::index::{CollectionIndex, Placement};
use super::notify::{self, Published, UserEvent};
use crate::delivery::outbox::Outbox;
use crate::delivery::writer::Outgoing;
use crate::protocol::{Protocol, now_ms};

/// Which document notifications a channel receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    In,
    Out,
    None,
}

/// Which user notifications a channel receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Users {
    All,
    In,
    Out,
    None,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text {
            "all" => Scope::All,
            "in" => Scope::In,
            "out" => Scope::Out,
            "none" => Scope::None,
            _ => return None,
        })
    }

    fn digit(self) -> &'static str {
        match self {
            Scope::All => "1",
            Scope::In => "2",
            Scope::Out => "3",
            Scope::None => "",
        }
    }
}

impl Users {
    pub fn parse(text: &str) -> Option<Users> {
        Some(match text {
            "all" => Users::All,
            "in" => Users::In,
            "out" => Users::Out,
            "none" => Users::None,
            _ => return None,
        })
    }

    fn digit(self) -> &'static str {
        match self {
            Users::All => "1",
            Users::In => "2",
            Users::Out => "3",
            Users::None => "4",
        }
    }

    fn wants(self, entered: bool) -> bool {
        matches!(
            (self, entered),
            (Users::All, _) | (Users::In, true) | (Users::Out, false)
        )
    }
}

/// `<roomId>-<users><propagate><scope>`; propagate is always 1 for client connections.
pub fn channel_name(room_id: &str, scope: Scope, users: Users) -> String {
    format!("{room_id}-{}1{}", users.digit(), scope.digit())
}

/// A connection as the hub sees it.
#[derive(Clone)]
pub struct Member {
    pub connection_id: Arc<str>,
    pub outbox: Outbox,
    pub protocol: Protocol,
}

struct Subscriber {
    outbox: Outbox,
    volatile: Option<Value>,
    protocol: Protocol,
}

struct Channel {
    scope: Scope,
    users: Users,
    subscribers: HashMap<Arc<str>, Subscriber>,
    /// The subscribers' outboxes as one shared list, made by the first publish after a
    /// change: a publish to a stable room then costs one clone under the lock, and its
    /// first sockets are written before the others are even looked at.
    outboxes: Option<Arc<[Outbox]>>,
}

impl Channel {
    fn outboxes(&mut self) -> Arc<[Outbox]> {
        let subscribers = &self.subscribers;
        self.outboxes
            .get_or_insert_with(|| subscribers.values().map(|s| s.outbox.clone()).collect())
            .clone()
    }
}

struct Room {
    index: String,
    collection: String,
    /// The filter as subscribed, as JSON text, for the cluster (another node joining this
    /// room compiles it): far smaller than the parsed value.
    body: Arc<str>,
    channels: HashMap<String, Channel>,
    /// Distinct connections in the room, with how many of its channels each joined.
    members: HashMap<Arc<str>, usize>,
    /// Where the collection index filed each conjunction, to remove them in O(1) each.
    placements: Vec<Placement>,
    /// What the room takes of the node-wide budget of filters.
    cost: u64,
}

/// Bytes of a room besides its filter (its entry, names, channel and member maps).
const ROOM_BYTES: u64 = 1024;

#[derive(Default)]
struct State {
    rooms: HashMap<Arc<str>, Room>,
    collections: HashMap<(String, String), CollectionIndex>,
    /// Each connection's subscriptions, for unsubscribe, disconnect and its limit.
    connections: HashMap<Arc<str>, ConnectionSubscriptions>,
    /// What the rooms' filters cost in all (`Room::cost`).
    filters_cost: u64,
}

#[derive(Default)]
struct ConnectionSubscriptions {
    /// room → the channels of it the connection joined.
    rooms: HashMap<Arc<str>, Vec<String>>,
    /// (room, channel) pairs in all.
    channels: usize,
}

/// Messages to push once the lock is released.
/// One `Outgoing` per channel, shared by its subscribers (and so deflated once).
type Deliveries = Vec<(Outbox, Outgoing)>;

/// Someone entered or left a room. The hub announces nothing by itself: whoever changed
/// the room hands this to `Hub::announce` with the room's count, cluster-wide when there
/// is a cluster, so that user notifications carry the right `count` (PROTOCOL.md §7.5).
#[derive(Debug, Clone)]
pub struct Presence {
    pub room_id: Arc<str>,
    pub index: String,
    pub collection: String,
    /// The one who entered or left; never told of itself.
    pub connection_id: Arc<str>,
    pub entered: bool,
    /// `subscribe`, `join` or `unsubscribe`.
    pub action: &'static str,
    pub volatile: Option<Value>,
    pub protocol: Protocol,
    pub timestamp: u64,
    /// False when nobody is to be told (a node shutting down).
    pub notify: bool,
    /// This entry created the room on this node.
    pub room_created: bool,
    /// This departure removed the room from this node.
    pub room_removed: bool,
}

fn deliver(deliveries: Deliveries) {
    crate::delivery::outbox::deliver(deliveries.iter().map(|(outbox, message)| (outbox, message)));
}

/// Rooms a disconnecting connection leaves per hold of the lock, so that removing a
/// connection with many subscriptions never stalls the other clients' requests.
const LEAVE_CHUNK: usize = 256;

/// The hub's limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubLimits {
    /// Rooms on this node (`limits.subscriptionRooms`).
    pub rooms: u64,
    /// Subscriptions, (room, channel) pairs, per connection
    /// (`limits.subscriptionsPerConnection`).
    pub subscriptions_per_connection: u64,
    /// Estimated bytes of every room's filter together (`limits.subscriptionFiltersMemory`).
    pub filters_memory: u64,
}

pub struct Hub {
    node_id: Arc<str>,
    limits: HubLimits,
    /// Keys room ids: per deployment, so that ids cannot be computed offline.
    room_key: [u8; 32],
    state: Mutex<State>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    TooManyRooms,
    TooManySubscriptions,
    RoomNotFound,
    /// The rooms' filters already hold the node-wide budget.
    FiltersBudget,
}

/// The room a subscribe request asks for.
pub struct RoomTarget<'a> {
    pub index: &'a str,
    pub collection: &'a str,
    pub filter: Filter,
    /// The filter as the client wrote it, as JSON text.
    pub body: Arc<str>,
    /// From `Hub::room_id`.
    pub room_id: Arc<str>,
}

pub struct Subscription {
    pub room_id: Arc<str>,
    pub channel: String,
    /// Set when the connection is new in the room; to be announced.
    pub presence: Option<Presence>,
}

/// A room as the cluster stores it.
pub struct RoomSnapshot {
    pub index: String,
    pub collection: String,
    pub body: Arc<str>,
    /// Connections in the room on this node.
    pub count: usize,
    /// Some channel of the room on this node wants user notifications.
    pub wants_users: bool,
}

/// A room as `realtime:list` shows it.
pub struct RoomListing {
    pub index: String,
    pub collection: String,
    pub room_id: Arc<str>,
    pub count: usize,
}

impl Hub {
    pub fn new(node_id: Arc<str>, limits: HubLimits, room_key: [u8; 32]) -> Hub {
        Hub {
            node_id,
            limits,
            room_key,
            state: Mutex::new(State::default()),
        }
    }

    /// The id of the room of `filter` on `index`/`collection`.
    pub fn room_id(&self, filter: &Filter, index: &str, collection: &str) -> String {
        filter.room_id(&self.room_key, index, collection)
    }

    /// True when a new room could not be created on this node.
    pub fn is_full_for(&self, room_id: &str) -> bool {
        let state = self.state.lock();
        self.limits.rooms > 0
            && !state.rooms.contains_key(room_id)
            && state.rooms.len() as u64 >= self.limits.rooms
    }

    /// Registers `member` in the room of `target` (created if needed) on the channel of
    /// (scope, users). Others in the room learn of a new member before this returns.
    pub fn subscribe(
        &self,
        member: &Member,
        target: RoomTarget<'_>,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
    ) -> Result<Subscription, SubscribeError> {
        let RoomTarget {
            index,
            collection,
            filter,
            body,
            room_id,
        } = target;
        let mut state = self.state.lock();
        self.check_connection_limit(&state, member, &room_id, scope, users)?;
        let room_created = !state.rooms.contains_key(&room_id);
        if room_created {
            if self.limits.rooms > 0 && state.rooms.len() as u64 >= self.limits.rooms {
                return Err(SubscribeError::TooManyRooms);
            }
            let cost = filter.footprint() + body.len() as u64 + ROOM_BYTES;
            if self.limits.filters_memory > 0
                && state.filters_cost + cost > self.limits.filters_memory
            {
                return Err(SubscribeError::FiltersBudget);
            }
            state.filters_cost += cost;
            let filter = Arc::new(filter);
            let placements = state
                .collections
                .entry((index.to_owned(), collection.to_owned()))
                .or_default()
                .add(&room_id, &filter);
            let room = Room {
                index: index.to_owned(),
                collection: collection.to_owned(),
                body,
                channels: HashMap::new(),
                members: HashMap::new(),
                placements,
                cost,
            };
            state.rooms.insert(room_id.clone(), room);
        }
        let presence = Self::enter(
            &mut state,
            member,
            &room_id,
            scope,
            users,
            volatile,
            "subscribe",
        )
        .map(|p| Presence { room_created, ..p });
        drop(state);
        let channel = channel_name(&room_id, scope, users);
        Ok(Subscription {
            room_id,
            channel,
            presence,
        })
    }

    /// Like `subscribe`, into an existing room.
    pub fn join(
        &self,
        member: &Member,
        room_id: &str,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
    ) -> Result<Subscription, SubscribeError> {
        let mut state = self.state.lock();
        let Some((room_id, _)) = state.rooms.get_key_value(room_id) else {
            return Err(SubscribeError::RoomNotFound);
        };
        let room_id = room_id.clone();
        self.check_connection_limit(&state, member, &room_id, scope, users)?;
        let presence = Self::enter(&mut state, member, &room_id, scope, users, volatile, "join");
        drop(state);
        let channel = channel_name(&room_id, scope, users);
        Ok(Subscription {
            room_id,
            channel,
            presence,
        })
    }

    /// A new (room, channel) pair past `subscriptionsPerConnection` is refused; one the
    /// connection already holds is not new.
    fn check_connection_limit(
        &self,
        state: &State,
        member: &Member,
        room_id: &str,
        scope: Scope,
        users: Users,
    ) -> Result<(), SubscribeError> {
        let max = self.limits.subscriptions_per_connection;
        let Some(held) = state.connections.get(&member.connection_id) else {
            return Ok(());
        };
        if max == 0 || (held.channels as u64) < max {
            return Ok(());
        }
        let channel = channel_name(room_id, scope, users);
        let already = held
            .rooms
            .get(room_id)
            .is_some_and(|channels| channels.contains(&channel));
        if already {
            Ok(())
        } else {
            Err(SubscribeError::TooManySubscriptions)
        }
    }

    /// The room's index and collection, when it exists on this node.
    pub fn room_target(&self, room_id: &str) -> Option<(String, String)> {
        self.state
            .lock()
            .rooms
            .get(room_id)
            .map(|r| (r.index.clone(), r.collection.clone()))
    }

    /// The room, for the cluster: None once it is gone from this node.
    pub fn room_snapshot(&self, room_id: &str) -> Option<RoomSnapshot> {
        self.state.lock().rooms.get(room_id).map(|r| RoomSnapshot {
            index: r.index.clone(),
            collection: r.collection.clone(),
            body: r.body.clone(),
            count: r.members.len(),
            wants_users: r.channels.values().any(|c| c.users != Users::None),
        })
    }

    /// Every room id on this node.
    pub fn room_ids(&self) -> Vec<Arc<str>> {
        self.state.lock().rooms.keys().cloned().collect()
    }

    fn enter(
        state: &mut State,
        member: &Member,
        room_id: &Arc<str>,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
        action: &'static str,
    ) -> Option<Presence> {
        let channel = channel_name(room_id, scope, users);
        let room = state.rooms.get_mut(room_id)?;
        let entry = room
            .channels
            .entry(channel.clone())
            .or_insert_with(|| Channel {
                scope,
                users,
                subscribers: HashMap::new(),
                outboxes: None,
            });
        if entry.subscribers.contains_key(&member.connection_id) {
            return None;
        }
        entry.outboxes = None;
        entry.subscribers.insert(
            member.connection_id.clone(),
            Subscriber {
                outbox: member.outbox.clone(),
                volatile: volatile.clone(),
                protocol: member.protocol,
            },
        );
        let joined = room
            .members
            .entry(member.connection_id.clone())
            .or_insert(0);
        *joined += 1;
        let is_new_member = *joined == 1;
        let held = state
            .connections
            .entry(member.connection_id.clone())
            .or_default();
        held.rooms.entry(room_id.clone()).or_default().push(channel);
        held.channels += 1;
        if !is_new_member {
            return None;
        }
        let room = state.rooms.get(room_id)?;
        Some(Presence {
            room_id: room_id.clone(),
            index: room.index.clone(),
            collection: room.collection.clone(),
            connection_id: member.connection_id.clone(),
            entered: true,
            action,
            volatile,
            protocol: member.protocol,
            timestamp: now_ms(),
            notify: true,
            room_created: false,
            room_removed: false,
        })
    }

    /// Sends the user notifications of `presence` to this node's subscribers of its room
    /// whose channel wants them, the subject excepted. `count` is the room's count after
    /// the change; `node` the node where it happened.
    pub fn announce(&self, presence: &Presence, count: usize, node: &str) {
        if !presence.notify {
            return;
        }
        let state = self.state.lock();
        let Some(room) = state.rooms.get(&presence.room_id) else {
            return;
        };
        let event = UserEvent {
            node,
            entered: presence.entered,
            action: presence.action,
            count,
            timestamp: presence.timestamp,
            volatile: presence.volatile.as_ref(),
            index: &presence.index,
            collection: &presence.collection,
            protocol: presence.protocol,
        };
        let deliveries = user_deliveries(room, &event, &presence.connection_id);
        drop(state);
        deliver(deliveries);
    }

    /// The node id this hub writes in its notifications.
    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    /// Removes the connection from every channel of the room; None when it was in none.
    pub fn unsubscribe(&self, connection_id: &str, room_id: &str) -> Option<Vec<Presence>> {
        let mut state = self.state.lock();
        let held = state.connections.get_mut(connection_id)?;
        let channels = held.rooms.remove(room_id)?;
        held.channels -= channels.len();
        if held.rooms.is_empty() {
            state.connections.remove(connection_id);
        }
        Some(
            Self::leave(&mut state, connection_id, room_id, true)
                .into_iter()
                .collect(),
        )
    }

    /// Drops every subscription of a connection (disconnect, token expiry). With
    /// `notify`, the others get "out" notifications; a node shutting down sends none.
    /// The rooms are left `LEAVE_CHUNK` at a time, the lock released between chunks.
    pub fn remove_connection(&self, connection_id: &str, notify: bool) -> Vec<Presence> {
        let Some(held) = self.state.lock().connections.remove(connection_id) else {
            return Vec::new();
        };
        let rooms: Vec<Arc<str>> = held.rooms.into_keys().collect();
        let mut presences = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(LEAVE_CHUNK) {
            let mut state = self.state.lock();
            for room in chunk {
                presences.extend(Self::leave(&mut state, connection_id, room, notify));
            }
        }
        presences
    }

    fn leave(
        state: &mut State,
        connection_id: &str,
        room_id: &str,
        notify: bool,
    ) -> Option<Presence> {
        let room = state.rooms.get_mut(room_id)?;
        let mut leaver = None;
        room.channels.retain(|_, channel| {
            if let Some(subscriber) = channel.subscribers.remove(connection_id) {
                channel.outboxes = None;
                leaver.get_or_insert(subscriber);
            }
            !channel.subscribers.is_empty()
        });
        let (connection_id, _) = room.members.remove_entry(connection_id)?;
        let leaver = leaver?;
        let presence = Presence {
            room_id: Arc::from(room_id),
            index: room.index.clone(),
            collection: room.collection.clone(),
            connection_id,
            entered: false,
            action: "unsubscribe",
            volatile: leaver.volatile,
            protocol: leaver.protocol,
            timestamp: now_ms(),
            notify,
            room_created: false,
            room_removed: room.members.is_empty(),
        };
        if presence.room_removed
            && let Some(room) = state.rooms.remove(room_id)
        {
            state.filters_cost -= room.cost;
            let key = (room.index, room.collection);
            if let Some(index) = state.collections.get_mut(&key) {
                index.remove(&room.placements);
                if index.is_empty() {
                    state.collections.remove(&key);
                }
            }
        }
        Some(presence)
    }

    /// Delivers a published message to every matching channel whose scope takes `in`.
    /// Returns how many messages were queued.
    pub fn publish(&self, message: &Published<'_>) -> usize {
        let mut doc = message.source.clone();
        if let (Some(id), Value::Object(map)) = (message.id, &mut doc) {
            map.insert("_id".into(), id.into());
        }
        let mut state = self.state.lock();
        let rooms = matching_rooms(&state, message.index, message.collection, &doc);
        if rooms.is_empty() {
            return 0;
        }
        let prefix = notify::document(message);
        let mut deliveries: Vec<(Arc<[Outbox]>, Outgoing)> = Vec::new();
        for room_id in rooms {
            let Some(room) = state.rooms.get_mut(&room_id) else {
                continue;
            };
            for (name, channel) in &mut room.channels {
                if !matches!(channel.scope, Scope::All | Scope::In) {
                    continue;
                }
                let text = Outgoing::from(prefix.for_room(name));
                deliveries.push((channel.outboxes(), text));
            }
        }
        drop(state);
        let count = deliveries.iter().map(|(outboxes, _)| outboxes.len()).sum();
        crate::delivery::outbox::deliver(
            deliveries
                .iter()
                .flat_map(|(outboxes, text)| outboxes.iter().map(move |outbox| (outbox, text))),
        );
        count
    }

    /// Connections in the room on this node; 0 for an unknown room.
    pub fn count(&self, room_id: &str) -> usize {
        self.state
            .lock()
            .rooms
            .get(room_id)
            .map_or(0, |r| r.members.len())
    }

    /// Every room on this node with its index, collection and member count.
    pub fn list(&self) -> Vec<RoomListing> {
        let state = self.state.lock();
        state
            .rooms
            .iter()
            .map(|(id, room)| RoomListing {
                index: room.index.clone(),
                collection: room.collection.clone(),
                room_id: id.clone(),
                count: room.members.len(),
            })
            .collect()
    }

    /// (rooms with a local subscriber, local connections with at least one subscription).
    pub fn metrics(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.rooms.len(), state.connections.len())
    }
}

fn user_deliveries(room: &Room, event: &UserEvent<'_>, except: &str) -> Deliveries {
    let prefix = notify::user(event);
    let mut deliveries = Vec::new();
    for (name, channel) in &room.channels {
        if !channel.users.wants(event.entered) {
            continue;
        }
        let mut text = None;
        for (connection, subscriber) in &channel.subscribers {
            if &**connection == except {
                continue;
            }
            let text = text.get_or_insert_with(|| Outgoing::from(prefix.for_room(name)));
            deliveries.push((subscriber.outbox.clone(), text.clone()));
        }
    }
    deliveries
}

fn matching_rooms(state: &State, index: &str, collection: &str, doc: &Value) -> Vec<Arc<str>> {
    let Some(collection_index) = state
        .collections
        .get(&(index.to_owned(), collection.to_owned()))
    else {
        return Vec::new();
    };
    let mut matched: Vec<Arc<str>> = Vec::new();
    // A room whose filter has several conjunctions can match through more than one.
    let mut seen: HashSet<*const Filter> = HashSet::new();
    for candidate in collection_index.candidates(doc) {
        let several = candidate.filter.conjunctions.len() > 1;
        if several && seen.contains(&Arc::as_ptr(&candidate.filter)) {
            continue;
        }
        if candidate.matches(doc) {
            if several {
                seen.insert(Arc::as_ptr(&candidate.filter));
            }
            matched.push(candidate.room.clone());
        }
    }
    matched
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
