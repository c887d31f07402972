//! The node's rooms, channels and subscribers, and the index that finds the rooms a
//! message matches (PROTOCOL.md §7.2–7.8).
//!
//! Matching is indexed by index/collection, then per conjunction: one holding a positive
//! `equals` (or an expanded `in`/`ids`) is filed under that (field, value) and evaluated
//! only for messages that carry it; else one holding a positive `range` is filed in that
//! field's range index and evaluated only for values inside its bounds; the others are
//! scanned. The cost of a publish grows with the rooms it can match, not with all rooms.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::Value;

use super::filter::{Filter, get_path, scalar_key};
use super::notify::{self, Published, UserEvent};
use crate::protocol::{Protocol, now_ms};
use crate::ws::outbox::Outbox;
use crate::ws::writer::Outgoing;

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

/// One conjunction of one room's filter. It holds the filter, so that evaluating a
/// candidate needs no lookup.
#[derive(Clone)]
struct ConjunctionRef {
    room: Arc<str>,
    filter: Arc<Filter>,
    conjunction: usize,
}

impl ConjunctionRef {
    fn matches(&self, doc: &Value) -> bool {
        self.filter
            .conjunctions
            .get(self.conjunction)
            .is_some_and(|c| c.iter().all(|l| l.eval(doc)))
    }
}

/// A conjunction's unique number in its collection index.
type EntryId = u64;

/// Where a conjunction was filed.
enum Placement {
    Equality {
        field: String,
        value: String,
        id: EntryId,
    },
    Range {
        field: String,
        lower: f64,
        id: EntryId,
    },
    Scan {
        id: EntryId,
    },
}

/// Conjunctions whose field must lie in [lower, upper], sorted by (lower, id) in blocks
/// of at most `2 × RANGE_BLOCK`, each knowing its largest upper bound: a lookup skips
/// whole blocks, and an insert or a removal touches one block.
#[derive(Default)]
struct RangeIndex {
    blocks: Vec<RangeBlock>,
}

struct RangeBlock {
    entries: Vec<RangeEntry>,
    max_upper: f64,
}

struct RangeEntry {
    lower: f64,
    upper: f64,
    id: EntryId,
    conjunction: ConjunctionRef,
}

impl RangeEntry {
    fn key_cmp(&self, lower: f64, id: EntryId) -> std::cmp::Ordering {
        self.lower.total_cmp(&lower).then(self.id.cmp(&id))
    }
}

const RANGE_BLOCK: usize = 64;

impl RangeBlock {
    fn new(entries: Vec<RangeEntry>) -> RangeBlock {
        let mut block = RangeBlock {
            entries,
            max_upper: f64::NEG_INFINITY,
        };
        block.refresh();
        block
    }

    fn refresh(&mut self) {
        self.max_upper = self
            .entries
            .iter()
            .map(|e| e.upper)
            .fold(f64::NEG_INFINITY, f64::max);
    }
}

impl RangeIndex {
    /// The block that holds, or would hold, the key (lower, id).
    fn block_for(&self, lower: f64, id: EntryId) -> usize {
        let after = self.blocks.partition_point(|b| {
            b.entries
                .last()
                .is_some_and(|e| e.key_cmp(lower, id).is_lt())
        });
        after.min(self.blocks.len().saturating_sub(1))
    }

    fn insert(&mut self, entry: RangeEntry) {
        if self.blocks.is_empty() {
            self.blocks.push(RangeBlock::new(vec![entry]));
            return;
        }
        let b = self.block_for(entry.lower, entry.id);
        let block = &mut self.blocks[b];
        let at = block
            .entries
            .partition_point(|e| e.key_cmp(entry.lower, entry.id).is_lt());
        block.max_upper = block.max_upper.max(entry.upper);
        block.entries.insert(at, entry);
        if block.entries.len() > 2 * RANGE_BLOCK {
            let upper_half = block.entries.split_off(RANGE_BLOCK);
            block.refresh();
            self.blocks.insert(b + 1, RangeBlock::new(upper_half));
        }
    }

    fn remove(&mut self, lower: f64, id: EntryId) {
        if self.blocks.is_empty() {
            return;
        }
        let b = self.block_for(lower, id);
        let block = &mut self.blocks[b];
        if let Ok(at) = block.entries.binary_search_by(|e| e.key_cmp(lower, id)) {
            block.entries.remove(at);
            block.refresh();
            if block.entries.is_empty() {
                self.blocks.remove(b);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    fn candidates<'a>(&'a self, value: f64, out: &mut Vec<&'a ConjunctionRef>) {
        for block in &self.blocks {
            if block.entries.first().is_some_and(|e| e.lower > value) {
                break;
            }
            if block.max_upper < value {
                continue;
            }
            out.extend(
                block
                    .entries
                    .iter()
                    .filter(|e| e.lower <= value && e.upper >= value)
                    .map(|e| &e.conjunction),
            );
        }
    }
}

type Bucket = IndexMap<EntryId, ConjunctionRef>;

#[derive(Default)]
struct CollectionIndex {
    /// field → scalar key → conjunctions that need that value.
    by_equality: HashMap<String, HashMap<String, Bucket>>,
    /// field → conjunctions that need a number within bounds.
    by_range: HashMap<String, RangeIndex>,
    scan: Bucket,
    next_id: EntryId,
}

impl CollectionIndex {
    /// Files every conjunction of the room's filter; returns where each went.
    fn add(&mut self, room: &Arc<str>, filter: &Arc<Filter>) -> Vec<Placement> {
        let mut placements = Vec::with_capacity(filter.conjunctions.len());
        for (i, conjunction) in filter.conjunctions.iter().enumerate() {
            let id = self.next_id;
            self.next_id += 1;
            let entry = ConjunctionRef {
                room: room.clone(),
                filter: filter.clone(),
                conjunction: i,
            };
            let positive = || conjunction.iter().filter(|l| !l.negated);
            let equality = positive().find_map(|l| {
                l.term
                    .equality()
                    .and_then(|(f, v)| scalar_key(v).map(|k| (f.to_owned(), k)))
            });
            if let Some((field, value)) = equality {
                self.by_equality
                    .entry(field.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .insert(id, entry);
                placements.push(Placement::Equality { field, value, id });
            } else if let Some((field, lower, upper)) = positive().find_map(|l| l.term.range()) {
                self.by_range
                    .entry(field.to_owned())
                    .or_default()
                    .insert(RangeEntry {
                        lower,
                        upper,
                        id,
                        conjunction: entry,
                    });
                placements.push(Placement::Range {
                    field: field.to_owned(),
                    lower,
                    id,
                });
            } else {
                self.scan.insert(id, entry);
                placements.push(Placement::Scan { id });
            }
        }
        placements
    }

    /// Removes what `add` filed: O(1) per hashed or scanned conjunction, one block per
    /// ranged one; never a walk over the other rooms.
    fn remove(&mut self, placements: &[Placement]) {
        for placement in placements {
            match placement {
                Placement::Equality { field, value, id } => {
                    let Some(values) = self.by_equality.get_mut(field) else {
                        continue;
                    };
                    if let Some(bucket) = values.get_mut(value) {
                        bucket.swap_remove(id);
                        if bucket.is_empty() {
                            values.remove(value);
                        }
                    }
                    if values.is_empty() {
                        self.by_equality.remove(field);
                    }
                }
                Placement::Range { field, lower, id } => {
                    if let Some(index) = self.by_range.get_mut(field) {
                        index.remove(*lower, *id);
                        if index.is_empty() {
                            self.by_range.remove(field);
                        }
                    }
                }
                Placement::Scan { id } => {
                    self.scan.swap_remove(id);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.scan.is_empty() && self.by_equality.is_empty() && self.by_range.is_empty()
    }

    /// The conjunctions worth evaluating for `doc`.
    fn candidates<'a>(&'a self, doc: &Value) -> Vec<&'a ConjunctionRef> {
        let mut out: Vec<&ConjunctionRef> = self.scan.values().collect();
        for (field, values) in &self.by_equality {
            if let Some(refs) = get_path(doc, field)
                .and_then(scalar_key)
                .and_then(|key| values.get(&key))
            {
                out.extend(refs.values());
            }
        }
        for (field, index) in &self.by_range {
            if let Some(value) = get_path(doc, field).and_then(Value::as_f64) {
                index.candidates(value, &mut out);
            }
        }
        out
    }
}

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
    crate::ws::outbox::deliver(deliveries.iter().map(|(outbox, message)| (outbox, message)));
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
        crate::ws::outbox::deliver(
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
mod tests {
    use super::*;
    use crate::ws::outbox::Next;
    use serde_json::json;

    fn member(id: &str) -> Member {
        Member {
            connection_id: Arc::from(id),
            outbox: Outbox::new(),
            protocol: Protocol::Websocket,
        }
    }

    fn hub(max_rooms: u64) -> Hub {
        let limits = HubLimits {
            rooms: max_rooms,
            ..HubLimits::default()
        };
        Hub::new(Arc::from("n"), limits, [7; 32])
    }

    fn subscribe_to(
        hub: &Hub,
        member: &Member,
        filter: Filter,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
    ) -> Result<Subscription, SubscribeError> {
        let room_id = Arc::from(hub.room_id(&filter, "i", "c"));
        let target = RoomTarget {
            index: "i",
            collection: "c",
            filter,
            body: Arc::from("null"),
            room_id,
        };
        let subscription = hub.subscribe(member, target, scope, users, volatile)?;
        announce(hub, subscription.presence.iter());
        Ok(subscription)
    }

    /// What a one-node cluster does with presences: announce them with the local count.
    fn announce<'a>(hub: &Hub, presences: impl IntoIterator<Item = &'a Presence>) {
        for p in presences {
            hub.announce(p, hub.count(&p.room_id), "n");
        }
    }

    fn unsubscribe(hub: &Hub, connection: &str, room: &str) -> bool {
        hub.unsubscribe(connection, room)
            .map(|presences| announce(hub, &presences))
            .is_some()
    }

    fn remove_connection(hub: &Hub, connection: &str, notify: bool) {
        announce(hub, &hub.remove_connection(connection, notify));
    }

    fn filter(f: Value) -> Filter {
        Filter::compile(&f, 100).unwrap()
    }

    fn published<'a>(source: &'a Value, id: Option<&'a str>) -> Published<'a> {
        Published {
            node: "n",
            index: "i",
            collection: "c",
            id,
            source,
            request_id: "r",
            timestamp: 1,
            volatile: None,
            protocol: Protocol::Websocket,
        }
    }

    async fn drain(outbox: &Outbox) -> Vec<Value> {
        let mut out = Vec::new();
        while outbox.queued().0 > 0 {
            if let Next::Send(text) = outbox.next().await {
                out.push(serde_json::from_slice(text.data()).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn only_matching_rooms_and_scopes_get_publishes() {
        let hub = hub(0);
        let (a, b, c) = (member("a"), member("b"), member("c"));
        let red = subscribe_to(
            &hub,
            &a,
            filter(json!({"equals": {"color": "red"}})),
            Scope::All,
            Users::None,
            None,
        )
        .unwrap();
        subscribe_to(
            &hub,
            &b,
            filter(json!({"range": {"n": {"gt": 5}}})),
            Scope::All,
            Users::None,
            None,
        )
        .unwrap();
        subscribe_to(
            &hub,
            &c,
            filter(json!({"equals": {"color": "red"}})),
            Scope::Out,
            Users::None,
            None,
        )
        .unwrap();
        assert_eq!(
            hub.publish(&published(&json!({"color": "red", "n": 1}), None)),
            1
        );
        assert_eq!(
            hub.publish(&published(&json!({"color": "blue", "n": 9}), Some("x"))),
            1
        );
        let got = drain(&a.outbox).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["room"], red.channel.as_str());
        assert_eq!(
            drain(&b.outbox).await[0]["result"],
            json!({"_id": "x", "_source": {"color": "blue", "n": 9}})
        );
        assert!(
            drain(&c.outbox).await.is_empty(),
            "scope out never gets publishes"
        );
        assert_eq!(hub.metrics(), (2, 3));
    }

    #[tokio::test]
    async fn user_notifications_and_cleanup() {
        let hub = hub(0);
        let (a, b) = (member("a"), member("b"));
        let sub = subscribe_to(
            &hub,
            &a,
            filter(json!({})),
            Scope::All,
            Users::All,
            Some(json!({"who": "a"})),
        )
        .unwrap();
        subscribe_to(
            &hub,
            &b,
            filter(json!({})),
            Scope::All,
            Users::None,
            Some(json!({"who": "b"})),
        )
        .unwrap();
        let got = drain(&a.outbox).await;
        assert_eq!(
            (got[0]["user"].as_str(), got[0]["result"]["count"].as_u64()),
            (Some("in"), Some(2))
        );
        assert_eq!(got[0]["volatile"], json!({"who": "b"}));
        assert!(
            drain(&b.outbox).await.is_empty(),
            "the subscriber is not told of itself"
        );
        // Subscribing again with the same options changes nothing.
        let again =
            subscribe_to(&hub, &b, filter(json!({})), Scope::All, Users::None, None).unwrap();
        assert!(drain(&a.outbox).await.is_empty());
        assert_eq!(again.room_id, sub.room_id);
        remove_connection(&hub, "b", true);
        let got = drain(&a.outbox).await;
        assert_eq!(
            (
                got[0]["user"].as_str(),
                got[0]["action"].as_str(),
                got[0]["result"]["count"].as_u64()
            ),
            (Some("out"), Some("unsubscribe"), Some(1))
        );
        assert_eq!(hub.count(&sub.room_id), 1);
        assert!(unsubscribe(&hub, "a", &sub.room_id));
        assert!(!unsubscribe(&hub, "a", &sub.room_id));
        assert_eq!(hub.metrics(), (0, 0), "an empty room is gone");
        assert!(
            hub.state.lock().collections.is_empty(),
            "and so is its index"
        );
    }

    #[test]
    fn indexed_matching_equals_brute_force() {
        let hub = hub(0);
        let mut filters = Vec::new();
        let mut shapes = vec![
            json!({"range": {"n": {"gte": 5}}}),
            json!({"range": {"n": {"lt": 3}}}),
            json!({"range": {"n": {"gt": 2, "lte": 4}}}),
            json!({"not": {"range": {"n": {"gt": 2, "lt": 8}}}}),
            json!({"or": [{"range": {"n": {"gt": 7}}}, {"equals": {"k": "a"}}]}),
            json!({"and": [{"equals": {"k": "b"}}, {"range": {"n": {"gte": 1, "lt": 6}}}]}),
            json!({"exists": "n"}),
            json!({"in": {"k": ["a", "c"]}}),
            json!({}),
        ];
        for lower in 0..200 {
            shapes.push(json!({"range": {"n": {"gte": lower as f64 / 4.0, "lt": lower as f64 / 4.0 + 1.5}}}));
        }
        for (i, shape) in shapes.into_iter().enumerate() {
            let filter = filter(shape);
            let sub = subscribe_to(
                &hub,
                &member(&format!("m{i}")),
                filter.clone(),
                Scope::All,
                Users::None,
                None,
            )
            .unwrap();
            filters.push((sub.room_id, filter));
        }
        for n in 0..220 {
            for k in ["a", "b", "c", "z"] {
                let value = n as f64 / 4.0 - 0.5;
                for doc in [
                    json!({"n": value, "k": k}),
                    json!({"k": k}),
                    json!({"n": value}),
                ] {
                    let state = hub.state.lock();
                    let mut indexed: Vec<String> = matching_rooms(&state, "i", "c", &doc)
                        .iter()
                        .map(|r| r.to_string())
                        .collect();
                    let mut brute: Vec<String> = filters
                        .iter()
                        .filter(|(_, f)| f.matches(&doc))
                        .map(|(r, _)| r.to_string())
                        .collect();
                    indexed.sort();
                    brute.sort();
                    brute.dedup();
                    assert_eq!(indexed, brute, "{doc}");
                }
            }
        }
    }

    #[test]
    fn removals_keep_the_index_exact() {
        let hub = hub(0);
        let shape = |i: usize| match i % 5 {
            0 => json!({"range": {"n": {"gte": (i % 17) as f64, "lt": (i % 17) as f64 + 3.0}}}),
            1 => json!({"equals": {"k": format!("v{}", i % 7)}}),
            2 => {
                json!({"or": [{"equals": {"k": "v1"}}, {"range": {"n": {"gt": (i % 11) as f64}}}]})
            }
            3 => json!({"not": {"equals": {"k": format!("v{}", i % 3)}}}),
            _ => json!({"and": [{"range": {"n": {"lte": (i % 13) as f64}}}, {"exists": "k"}]}),
        };
        let mut live = Vec::new();
        for i in 0..600 {
            let f = filter(shape(i));
            let sub = subscribe_to(
                &hub,
                &member(&format!("m{i}")),
                f.clone(),
                Scope::All,
                Users::None,
                None,
            )
            .unwrap();
            live.push((i, sub.room_id, f));
        }
        // Leave in an order unrelated to insertion: every third, then every other.
        for (i, room, _) in &live {
            if i % 3 == 1 {
                assert!(unsubscribe(&hub, &format!("m{i}"), room));
            }
        }
        for (i, _, _) in &live {
            if i % 2 == 0 {
                remove_connection(&hub, &format!("m{i}"), true);
            }
        }
        live.retain(|(i, _, _)| i % 3 != 1 && i % 2 != 0);
        for n in 0..20 {
            for k in ["v0", "v1", "v5"] {
                let doc = json!({"n": n, "k": k});
                let state = hub.state.lock();
                let mut indexed: Vec<String> = matching_rooms(&state, "i", "c", &doc)
                    .iter()
                    .map(|r| r.to_string())
                    .collect();
                let mut brute: Vec<String> = live
                    .iter()
                    .filter(|(_, _, f)| f.matches(&doc))
                    .map(|(_, r, _)| r.to_string())
                    .collect();
                indexed.sort();
                brute.sort();
                brute.dedup();
                assert_eq!(indexed, brute, "{doc}");
            }
        }
        for (i, _, _) in &live {
            remove_connection(&hub, &format!("m{i}"), false);
        }
        assert_eq!(hub.metrics(), (0, 0));
        assert!(hub.state.lock().collections.is_empty());
    }

    #[test]
    fn one_connection_leaving_many_rooms() {
        let hub = hub(0);
        let a = member("a");
        let b = member("b");
        for i in 0..3 * LEAVE_CHUNK {
            let f = filter(json!({"range": {"n": {"gte": i, "lt": i + 1}}}));
            subscribe_to(&hub, &a, f.clone(), Scope::All, Users::None, None).unwrap();
            if i % 100 == 0 {
                subscribe_to(&hub, &b, f, Scope::All, Users::All, None).unwrap();
            }
        }
        remove_connection(&hub, "a", true);
        assert_eq!(hub.metrics(), (8, 1), "b's rooms stay");
        let outs = futures_util::FutureExt::now_or_never(drain(&b.outbox)).unwrap();
        assert_eq!(
            outs.iter().filter(|n| n["user"] == "out").count(),
            8,
            "b hears of a leaving each room it shares"
        );
        remove_connection(&hub, "b", true);
        assert!(hub.state.lock().collections.is_empty());
    }

    #[test]
    fn subscriptions_per_connection_limit() {
        let limits = HubLimits {
            subscriptions_per_connection: 2,
            ..HubLimits::default()
        };
        let hub = Hub::new(Arc::from("n"), limits, [7; 32]);
        let a = member("a");
        let f = |x: i64| filter(json!({"equals": {"x": x}}));
        subscribe_to(&hub, &a, f(1), Scope::All, Users::None, None).unwrap();
        subscribe_to(&hub, &a, f(1), Scope::In, Users::None, None).unwrap();
        let refused = subscribe_to(&hub, &a, f(2), Scope::All, Users::None, None);
        assert_eq!(refused.err(), Some(SubscribeError::TooManySubscriptions));
        let room = subscribe_to(&hub, &a, f(1), Scope::All, Users::None, None)
            .expect("a subscription it holds is not a new one");
        assert_eq!(
            hub.join(&a, &room.room_id, Scope::Out, Users::None, None)
                .err(),
            Some(SubscribeError::TooManySubscriptions)
        );
        assert!(
            subscribe_to(&hub, &member("b"), f(2), Scope::All, Users::None, None).is_ok(),
            "the limit is per connection"
        );
        assert!(unsubscribe(&hub, "a", &room.room_id));
        assert!(subscribe_to(&hub, &a, f(2), Scope::All, Users::None, None).is_ok());
    }

    #[test]
    fn the_filters_budget_is_node_wide_and_given_back() {
        let one_room = filter(json!({"equals": {"x": 0}})).footprint() + 4 + ROOM_BYTES;
        let limits = HubLimits {
            filters_memory: 2 * one_room,
            ..HubLimits::default()
        };
        let hub = Hub::new(Arc::from("n"), limits, [7; 32]);
        let f = |x: i64| filter(json!({"equals": {"x": x}}));
        let a = subscribe_to(&hub, &member("a"), f(1), Scope::All, Users::None, None).unwrap();
        subscribe_to(&hub, &member("b"), f(2), Scope::All, Users::None, None).unwrap();
        let refused = subscribe_to(&hub, &member("c"), f(3), Scope::All, Users::None, None);
        assert_eq!(
            refused.err(),
            Some(SubscribeError::FiltersBudget),
            "another connection: the budget is the node's"
        );
        assert!(
            subscribe_to(&hub, &member("c"), f(1), Scope::All, Users::None, None).is_ok(),
            "an existing room costs nothing more"
        );
        assert!(unsubscribe(&hub, "a", &a.room_id));
        assert!(unsubscribe(&hub, "c", &a.room_id));
        assert!(
            subscribe_to(&hub, &member("c"), f(3), Scope::All, Users::None, None).is_ok(),
            "a removed room gives its cost back"
        );
    }

    #[test]
    fn room_limit() {
        let hub = hub(1);
        let a = member("a");
        subscribe_to(
            &hub,
            &a,
            filter(json!({"equals": {"x": 1}})),
            Scope::All,
            Users::None,
            None,
        )
        .unwrap();
        let refused = subscribe_to(
            &hub,
            &a,
            filter(json!({"equals": {"x": 2}})),
            Scope::All,
            Users::None,
            None,
        );
        assert_eq!(refused.err(), Some(SubscribeError::TooManyRooms));
        assert!(
            subscribe_to(
                &hub,
                &a,
                filter(json!({"equals": {"x": 1}})),
                Scope::In,
                Users::None,
                None
            )
            .is_ok(),
            "existing room"
        );
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name("r", Scope::All, Users::None), "r-411");
        assert_eq!(channel_name("r", Scope::All, Users::All), "r-111");
        assert_eq!(channel_name("r", Scope::In, Users::None), "r-412");
        assert_eq!(channel_name("r", Scope::None, Users::None), "r-41");
    }
}
