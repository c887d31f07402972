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

use parking_lot::Mutex;
use serde_json::{Map, Value};

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
}

struct Room {
    index: String,
    collection: String,
    channels: HashMap<String, Channel>,
    /// Distinct connections in the room, with how many of its channels each joined.
    members: HashMap<Arc<str>, usize>,
}

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

/// Conjunctions whose field must lie in [lower, upper], sorted by lower bound, with the
/// largest upper bound of each block of `RANGE_BLOCK`: a lookup skips whole blocks.
#[derive(Default)]
struct RangeIndex {
    entries: Vec<(f64, f64, ConjunctionRef)>,
    block_max_upper: Vec<f64>,
}

const RANGE_BLOCK: usize = 64;

impl RangeIndex {
    fn insert(&mut self, lower: f64, upper: f64, entry: ConjunctionRef) {
        let at = self.entries.partition_point(|(l, _, _)| *l <= lower);
        self.entries.insert(at, (lower, upper, entry));
        self.reblock();
    }

    fn remove(&mut self, room: &str) {
        self.entries.retain(|(_, _, c)| &*c.room != room);
        self.reblock();
    }

    fn reblock(&mut self) {
        self.block_max_upper = self
            .entries
            .chunks(RANGE_BLOCK)
            .map(|block| {
                block
                    .iter()
                    .map(|(_, u, _)| *u)
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
    }

    fn candidates<'a>(&'a self, value: f64, out: &mut Vec<&'a ConjunctionRef>) {
        let end = self.entries.partition_point(|(l, _, _)| *l <= value);
        for (block, max_upper) in self.block_max_upper.iter().enumerate() {
            let start = block * RANGE_BLOCK;
            if start >= end {
                break;
            }
            if *max_upper < value {
                continue;
            }
            let stop = (start + RANGE_BLOCK).min(end);
            out.extend(
                self.entries[start..stop]
                    .iter()
                    .filter(|(_, u, _)| *u >= value)
                    .map(|(_, _, c)| c),
            );
        }
    }
}

#[derive(Default)]
struct CollectionIndex {
    /// field → scalar key → conjunctions that need that value.
    by_equality: HashMap<String, HashMap<String, Vec<ConjunctionRef>>>,
    /// field → conjunctions that need a number within bounds.
    by_range: HashMap<String, RangeIndex>,
    scan: Vec<ConjunctionRef>,
}

impl CollectionIndex {
    fn add(&mut self, room: &Arc<str>, filter: &Arc<Filter>) {
        for (i, conjunction) in filter.conjunctions.iter().enumerate() {
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
                    .entry(field)
                    .or_default()
                    .entry(value)
                    .or_default()
                    .push(entry);
            } else if let Some((field, lower, upper)) = positive().find_map(|l| l.term.range()) {
                self.by_range
                    .entry(field.to_owned())
                    .or_default()
                    .insert(lower, upper, entry);
            } else {
                self.scan.push(entry);
            }
        }
    }

    fn remove(&mut self, room: &str) {
        self.scan.retain(|c| &*c.room != room);
        self.by_equality.retain(|_, values| {
            values.retain(|_, refs| {
                refs.retain(|c| &*c.room != room);
                !refs.is_empty()
            });
            !values.is_empty()
        });
        self.by_range.retain(|_, index| {
            index.remove(room);
            !index.entries.is_empty()
        });
    }

    fn is_empty(&self) -> bool {
        self.scan.is_empty() && self.by_equality.is_empty() && self.by_range.is_empty()
    }

    /// The conjunctions worth evaluating for `doc`.
    fn candidates<'a>(&'a self, doc: &Value) -> Vec<&'a ConjunctionRef> {
        let mut out: Vec<&ConjunctionRef> = self.scan.iter().collect();
        for (field, values) in &self.by_equality {
            if let Some(refs) = get_path(doc, field)
                .and_then(scalar_key)
                .and_then(|key| values.get(&key))
            {
                out.extend(refs);
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
    /// Each connection's (room, channel) pairs, for unsubscribe and disconnect.
    connections: HashMap<Arc<str>, Vec<(Arc<str>, String)>>,
}

/// Messages to push once the lock is released.
/// One `Outgoing` per channel, shared by its subscribers (and so deflated once).
type Deliveries = Vec<(Outbox, Outgoing)>;

fn deliver(deliveries: Deliveries) {
    for (outbox, message) in deliveries {
        outbox.push(message);
    }
}

pub struct Hub {
    node_id: Arc<str>,
    /// Most rooms on this node; 0 = unlimited.
    max_rooms: u64,
    state: Mutex<State>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    TooManyRooms,
    RoomNotFound,
}

pub struct Subscription {
    pub room_id: Arc<str>,
    pub channel: String,
}

impl Hub {
    pub fn new(node_id: Arc<str>, max_rooms: u64) -> Hub {
        Hub {
            node_id,
            max_rooms,
            state: Mutex::new(State::default()),
        }
    }

    /// True when a new room could not be created on this node.
    pub fn is_full_for(&self, room_id: &str) -> bool {
        let state = self.state.lock();
        self.max_rooms > 0
            && !state.rooms.contains_key(room_id)
            && state.rooms.len() as u64 >= self.max_rooms
    }

    /// Registers `member` in the room of `filter` (created if needed) on the channel of
    /// (scope, users). Others in the room learn of a new member before this returns.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        member: &Member,
        index: &str,
        collection: &str,
        filter: Filter,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
    ) -> Result<Subscription, SubscribeError> {
        let room_id: Arc<str> = Arc::from(filter.room_id(index, collection));
        let mut state = self.state.lock();
        if !state.rooms.contains_key(&room_id) {
            if self.max_rooms > 0 && state.rooms.len() as u64 >= self.max_rooms {
                return Err(SubscribeError::TooManyRooms);
            }
            let filter = Arc::new(filter);
            state
                .collections
                .entry((index.to_owned(), collection.to_owned()))
                .or_default()
                .add(&room_id, &filter);
            let room = Room {
                index: index.to_owned(),
                collection: collection.to_owned(),
                channels: HashMap::new(),
                members: HashMap::new(),
            };
            state.rooms.insert(room_id.clone(), room);
        }
        let deliveries = self.enter(
            &mut state,
            member,
            &room_id,
            scope,
            users,
            volatile,
            "subscribe",
        );
        drop(state);
        let channel = channel_name(&room_id, scope, users);
        deliver(deliveries);
        Ok(Subscription { room_id, channel })
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
        let deliveries = self.enter(&mut state, member, &room_id, scope, users, volatile, "join");
        drop(state);
        let channel = channel_name(&room_id, scope, users);
        deliver(deliveries);
        Ok(Subscription { room_id, channel })
    }

    /// Whether `room_id` exists on this node.
    pub fn room_exists(&self, room_id: &str) -> bool {
        self.state.lock().rooms.contains_key(room_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn enter(
        &self,
        state: &mut State,
        member: &Member,
        room_id: &Arc<str>,
        scope: Scope,
        users: Users,
        volatile: Option<Value>,
        action: &str,
    ) -> Deliveries {
        let channel = channel_name(room_id, scope, users);
        let Some(room) = state.rooms.get_mut(room_id) else {
            return Vec::new();
        };
        let entry = room
            .channels
            .entry(channel.clone())
            .or_insert_with(|| Channel {
                scope,
                users,
                subscribers: HashMap::new(),
            });
        if entry.subscribers.contains_key(&member.connection_id) {
            return Vec::new();
        }
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
        state
            .connections
            .entry(member.connection_id.clone())
            .or_default()
            .push((room_id.clone(), channel));
        if !is_new_member {
            return Vec::new();
        }
        let Some(room) = state.rooms.get(room_id) else {
            return Vec::new();
        };
        let event = UserEvent {
            node: &self.node_id,
            entered: true,
            action,
            count: room.members.len(),
            timestamp: now_ms(),
            volatile: volatile.as_ref(),
            index: &room.index,
            collection: &room.collection,
            protocol: member.protocol,
        };
        user_deliveries(room, &event, &member.connection_id)
    }

    /// Removes the connection from every channel of the room; false when it was in none.
    pub fn unsubscribe(&self, connection_id: &str, room_id: &str) -> bool {
        let mut state = self.state.lock();
        let Some(list) = state.connections.get_mut(connection_id) else {
            return false;
        };
        let before = list.len();
        list.retain(|(room, _)| &**room != room_id);
        if list.len() == before {
            return false;
        }
        if list.is_empty() {
            state.connections.remove(connection_id);
        }
        let deliveries = self.leave(&mut state, connection_id, room_id, true);
        drop(state);
        deliver(deliveries);
        true
    }

    /// Drops every subscription of a connection (disconnect, token expiry). With
    /// `notify`, the others get "out" notifications; a node shutting down sends none.
    pub fn remove_connection(&self, connection_id: &str, notify: bool) {
        let mut state = self.state.lock();
        let Some(list) = state.connections.remove(connection_id) else {
            return;
        };
        let rooms: HashSet<Arc<str>> = list.into_iter().map(|(room, _)| room).collect();
        let mut deliveries = Vec::new();
        for room in rooms {
            deliveries.extend(self.leave(&mut state, connection_id, &room, notify));
        }
        drop(state);
        deliver(deliveries);
    }

    fn leave(
        &self,
        state: &mut State,
        connection_id: &str,
        room_id: &str,
        notify: bool,
    ) -> Deliveries {
        let Some(room) = state.rooms.get_mut(room_id) else {
            return Vec::new();
        };
        let mut leaver = None;
        room.channels.retain(|_, channel| {
            if let Some(subscriber) = channel.subscribers.remove(connection_id) {
                leaver.get_or_insert(subscriber);
            }
            !channel.subscribers.is_empty()
        });
        room.members.remove(connection_id);
        let mut deliveries = Vec::new();
        if let Some(leaver) = leaver.filter(|_| notify && !room.members.is_empty()) {
            let event = UserEvent {
                node: &self.node_id,
                entered: false,
                action: "unsubscribe",
                count: room.members.len(),
                timestamp: now_ms(),
                volatile: leaver.volatile.as_ref(),
                index: &room.index,
                collection: &room.collection,
                protocol: leaver.protocol,
            };
            deliveries = user_deliveries(room, &event, connection_id);
        }
        if room.members.is_empty() {
            let key = (room.index.clone(), room.collection.clone());
            state.rooms.remove(room_id);
            if let Some(index) = state.collections.get_mut(&key) {
                index.remove(room_id);
                if index.is_empty() {
                    state.collections.remove(&key);
                }
            }
        }
        deliveries
    }

    /// Delivers a published message to every matching channel whose scope takes `in`.
    /// Returns how many messages were queued.
    pub fn publish(&self, message: &Published<'_>) -> usize {
        let mut doc = message.source.clone();
        if let (Some(id), Value::Object(map)) = (message.id, &mut doc) {
            map.insert("_id".into(), id.into());
        }
        let state = self.state.lock();
        let rooms = matching_rooms(&state, message.index, message.collection, &doc);
        if rooms.is_empty() {
            return 0;
        }
        let prefix = notify::document(message);
        let mut deliveries = Vec::new();
        for room_id in rooms {
            let Some(room) = state.rooms.get(&room_id) else {
                continue;
            };
            for (name, channel) in &room.channels {
                if !matches!(channel.scope, Scope::All | Scope::In) {
                    continue;
                }
                let text = Outgoing::from(prefix.for_room(name));
                deliveries.extend(
                    channel
                        .subscribers
                        .values()
                        .map(|s| (s.outbox.clone(), text.clone())),
                );
            }
        }
        drop(state);
        let count = deliveries.len();
        deliver(deliveries);
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

    /// `{index: {collection: {roomId: count}}}`.
    pub fn list(&self) -> Value {
        let state = self.state.lock();
        let mut out = Map::new();
        for (id, room) in &state.rooms {
            let collections = out
                .entry(room.index.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(collections) = collections {
                let rooms = collections
                    .entry(room.collection.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(rooms) = rooms {
                    rooms.insert(id.to_string(), room.members.len().into());
                }
            }
        }
        Value::Object(out)
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
        let hub = Hub::new(Arc::from("n"), 0);
        let (a, b, c) = (member("a"), member("b"), member("c"));
        let red = hub
            .subscribe(
                &a,
                "i",
                "c",
                filter(json!({"equals": {"color": "red"}})),
                Scope::All,
                Users::None,
                None,
            )
            .unwrap();
        hub.subscribe(
            &b,
            "i",
            "c",
            filter(json!({"range": {"n": {"gt": 5}}})),
            Scope::All,
            Users::None,
            None,
        )
        .unwrap();
        hub.subscribe(
            &c,
            "i",
            "c",
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
        let hub = Hub::new(Arc::from("n"), 0);
        let (a, b) = (member("a"), member("b"));
        let sub = hub
            .subscribe(
                &a,
                "i",
                "c",
                filter(json!({})),
                Scope::All,
                Users::All,
                Some(json!({"who": "a"})),
            )
            .unwrap();
        hub.subscribe(
            &b,
            "i",
            "c",
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
        let again = hub
            .subscribe(
                &b,
                "i",
                "c",
                filter(json!({})),
                Scope::All,
                Users::None,
                None,
            )
            .unwrap();
        assert!(drain(&a.outbox).await.is_empty());
        assert_eq!(again.room_id, sub.room_id);
        hub.remove_connection("b", true);
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
        assert!(hub.unsubscribe("a", &sub.room_id));
        assert!(!hub.unsubscribe("a", &sub.room_id));
        assert_eq!(hub.metrics(), (0, 0), "an empty room is gone");
        assert!(
            hub.state.lock().collections.is_empty(),
            "and so is its index"
        );
    }

    #[test]
    fn indexed_matching_equals_brute_force() {
        let hub = Hub::new(Arc::from("n"), 0);
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
            let sub = hub
                .subscribe(
                    &member(&format!("m{i}")),
                    "i",
                    "c",
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
    fn room_limit() {
        let hub = Hub::new(Arc::from("n"), 1);
        let a = member("a");
        hub.subscribe(
            &a,
            "i",
            "c",
            filter(json!({"equals": {"x": 1}})),
            Scope::All,
            Users::None,
            None,
        )
        .unwrap();
        let refused = hub.subscribe(
            &a,
            "i",
            "c",
            filter(json!({"equals": {"x": 2}})),
            Scope::All,
            Users::None,
            None,
        );
        assert_eq!(refused.err(), Some(SubscribeError::TooManyRooms));
        assert!(
            hub.subscribe(
                &a,
                "i",
                "c",
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
