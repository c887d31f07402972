//! Unit tests of the realtime service: two services ("node A", "node B") over a loopback
//! bus that carries their messages and counts in memory, and one node alone.
use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{LocalBoxFuture, ready};
use parking_lot::Mutex;
use serde_json::json;

use super::*;
use crate::cluster::{NodeInfo, Queued, Refused, Remote, RemoteRoom, StoreState};
use crate::config::Settings;
use crate::protocol::Protocol;

/// Each node's id and its realtime service.
type Nodes = Vec<(Arc<str>, Weak<dyn Upstream>)>;
/// room → node → the room's state there.
type Rooms = HashMap<Arc<str>, HashMap<Arc<str>, RoomState>>;
/// (index, collection, filter as JSON text) of a room.
type Place = (String, String, Arc<str>);

/// What the loopback nodes share: who listens, and each node's rooms as last written.
#[derive(Default)]
struct Network {
    nodes: Mutex<Nodes>,
    rooms: Mutex<Rooms>,
}

struct Loopback {
    node_id: Arc<str>,
    network: Arc<Network>,
}

impl Loopback {
    fn upstream(&self) -> Option<Arc<dyn Upstream>> {
        let nodes = self.network.nodes.lock();
        nodes
            .iter()
            .find(|(id, _)| *id == self.node_id)
            .and_then(|(_, up)| up.upgrade())
    }

    fn others(&self) -> Vec<Arc<dyn Upstream>> {
        let nodes = self.network.nodes.lock();
        nodes
            .iter()
            .filter(|(id, _)| *id != self.node_id)
            .filter_map(|(_, up)| up.upgrade())
            .collect()
    }

    fn remote_of(&self, room_id: &str) -> (usize, bool, Option<Place>) {
        let rooms = self.network.rooms.lock();
        let Some(nodes) = rooms.get(room_id) else {
            return (0, false, None);
        };
        let others = nodes.iter().filter(|(n, _)| **n != self.node_id);
        let (mut count, mut wants, mut place) = (0, false, None);
        for (_, state) in others {
            count += state.count;
            wants |= state.wants_users;
            place = Some((
                state.index.clone(),
                state.collection.clone(),
                state.body.clone(),
            ));
        }
        (count, wants, place)
    }
}

impl Bus for Loopback {
    fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }
    fn start(
        &self,
        _: std::net::SocketAddr,
        upstream: Weak<dyn Upstream>,
        _: StoreState,
    ) -> LocalBoxFuture<'_, Result<(), String>> {
        self.network
            .nodes
            .lock()
            .push((self.node_id.clone(), upstream));
        Box::pin(ready(Ok(())))
    }

    fn leave(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(ready(()))
    }
    fn is_leaving(&self) -> bool {
        false
    }
    fn node_info(&self) -> Option<NodeInfo> {
        None
    }
    fn alive(&self) -> usize {
        self.network.nodes.lock().len()
    }
    fn has_enough_nodes(&self) -> bool {
        true
    }
    fn is_up(&self) -> bool {
        true
    }
    fn status(&self) -> LocalBoxFuture<'_, Result<Value, String>> {
        Box::pin(ready(Ok(Value::Null)))
    }
    fn snapshots(&self, mine: Value) -> LocalBoxFuture<'_, Result<Vec<Value>, String>> {
        Box::pin(ready(Ok(vec![mine])))
    }
    fn figures(&self) -> Value {
        Value::Null
    }
    fn hold(&self, _: &str, _: &str) -> LocalBoxFuture<'static, ChannelHold> {
        Box::pin(ready(ChannelHold::none()))
    }
    fn release(&self, _: &str, _: &str) {}
    /// Writes the rooms' states at once; the future is there to take the waiting path.
    fn changed(&self, rooms: Vec<Arc<str>>) -> Option<LocalBoxFuture<'static, ()>> {
        let upstream = self.upstream()?;
        let mut all = self.network.rooms.lock();
        for room in rooms {
            let nodes = all.entry(room.clone()).or_default();
            match upstream.room(&room) {
                Some(state) if state.count > 0 => {
                    nodes.insert(self.node_id.clone(), state);
                }
                _ => {
                    nodes.remove(&self.node_id);
                }
            }
        }
        Some(Box::pin(ready(())))
    }
    fn remote(&self, room_id: &str) -> Remote {
        let (count, wants_users, _) = self.remote_of(room_id);
        Remote { count, wants_users }
    }
    fn forget(&self, _: &str) {}
    fn send(&self, message: BusMessage) -> Result<Queued, Refused> {
        for other in self.others() {
            other.receive(message.clone());
        }
        Ok(Queued::done())
    }
    fn remote_count<'a>(&'a self, room_id: &'a str) -> LocalBoxFuture<'a, usize> {
        Box::pin(ready(self.remote_of(room_id).0))
    }
    fn remote_rooms(&self) -> LocalBoxFuture<'_, Arc<Vec<RemoteRoom>>> {
        let ids: Vec<Arc<str>> = self.network.rooms.lock().keys().cloned().collect();
        let rooms = ids
            .into_iter()
            .filter_map(|id| {
                let (count, _, place) = self.remote_of(&id);
                let (index, collection, _) = place?;
                Some(RemoteRoom {
                    room_id: id.to_string(),
                    index,
                    collection,
                    remote_count: count,
                })
            })
            .collect();
        Box::pin(ready(Arc::new(rooms)))
    }
    fn remote_room<'a>(
        &'a self,
        room_id: &'a str,
    ) -> LocalBoxFuture<'a, Option<(String, String, Value)>> {
        let found = self
            .remote_of(room_id)
            .2
            .and_then(|(index, collection, body)| {
                Some((index, collection, serde_json::from_str(&body).ok()?))
            });
        Box::pin(ready(found))
    }
}

fn limits() -> Limits {
    Settings::default().limits
}

async fn node(network: &Arc<Network>, id: &str) -> Arc<Realtime> {
    let bus: Arc<dyn Bus> = Arc::new(Loopback {
        node_id: Arc::from(id),
        network: network.clone(),
    });
    let realtime = Realtime::new(
        bus.clone(),
        &limits(),
        room_key("secret"),
        RealtimeCounters::default(),
    );
    let upstream: Arc<dyn Upstream> = realtime.clone();
    let address = "127.0.0.1:7512".parse().unwrap();
    let store = StoreState {
        secret: "secret".into(),
        marker: "{}".into(),
    };
    bus.start(address, Arc::downgrade(&upstream), store)
        .await
        .unwrap();
    realtime
}

fn member(id: &str) -> Member {
    Member {
        connection_id: Arc::from(id),
        outbox: Outbox::new(),
        protocol: Protocol::Websocket,
    }
}

async fn subscribe(
    realtime: &Realtime,
    member: &Member,
    filter: Value,
    users: Users,
) -> Result<Subscribed, ApiError> {
    let prepared = realtime.prepare("i", "c", &filter)?;
    realtime
        .subscribe(member, prepared, Scope::All, users, None)
        .await
}

async fn publish(realtime: &Realtime, node: &str, source: &Value) {
    let published = Published {
        node,
        index: "i",
        collection: "c",
        id: Some("d"),
        source,
        request_id: "r",
        timestamp: 1,
        volatile: None,
        protocol: Protocol::Websocket,
    };
    assert!(realtime.publish(&published).await.is_ok());
}

/// Every message queued for `member`, as JSON.
async fn received(member: &Member) -> Vec<Value> {
    member.outbox.drain_json().await
}

/// Lets spawned tasks and actors run until `done` holds (a deadline, not a duration).
async fn settle_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
}

#[actix_rt::test]
async fn a_publish_on_one_node_reaches_a_subscriber_of_the_other() {
    let network = Arc::new(Network::default());
    let (a, b) = (node(&network, "A").await, node(&network, "B").await);
    let alice = member("alice");
    let red = json!({"equals": {"color": "red"}});
    let subscribed = subscribe(&a, &alice, red, Users::None).await.unwrap();
    publish(&b, "B", &json!({"color": "blue"})).await;
    publish(&b, "B", &json!({"color": "red", "n": 1})).await;
    let got = received(&alice).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["room"], subscribed.channel.as_str());
    assert_eq!(got[0]["result"]["_source"]["n"], 1);
    assert_eq!(got[0]["node"], "B");
    assert_eq!(b.count(&subscribed.room_id).await, 1);
    assert_eq!(a.count(&subscribed.room_id).await, 1);
}

#[actix_rt::test]
async fn counts_and_user_notifications_span_the_nodes() {
    let network = Arc::new(Network::default());
    let (a, b) = (node(&network, "A").await, node(&network, "B").await);
    let (alice, bob) = (member("alice"), member("bob"));
    let filter = json!({"exists": "x"});
    let room = subscribe(&a, &alice, filter.clone(), Users::All)
        .await
        .unwrap()
        .room_id;
    let same = subscribe(&b, &bob, filter, Users::None).await.unwrap();
    assert_eq!(
        same.room_id, room,
        "the same filter names the same room everywhere"
    );
    assert_eq!(a.count(&room).await, 2);
    let got = received(&alice).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "user");
    assert_eq!(got[0]["user"], "in");
    assert_eq!(got[0]["result"]["count"], 2);
    // Bob's socket goes: alice hears it, with the new count.
    b.disconnect(&bob.connection_id, true);
    settle_until(|| alice.outbox.queued().0 > 0).await;
    let got = received(&alice).await;
    assert_eq!(got[0]["user"], "out");
    assert_eq!(got[0]["result"]["count"], 1);
    assert_eq!(b.count(&room).await, 1);
    assert_eq!(b.metrics(), (0, 0), "nothing of bob stays on B");
}

#[actix_rt::test]
async fn a_room_only_another_node_has_can_be_joined() {
    let network = Arc::new(Network::default());
    let (a, b) = (node(&network, "A").await, node(&network, "B").await);
    let (alice, bob) = (member("alice"), member("bob"));
    let room = subscribe(&a, &alice, json!({"equals": {"k": 1}}), Users::None)
        .await
        .unwrap()
        .room_id;
    let located = b.locate(&room).await.unwrap();
    assert_eq!(
        (located.index.as_str(), located.collection.as_str()),
        ("i", "c")
    );
    let joined = b
        .join(&bob, &room, located, Scope::All, Users::None, None)
        .await
        .unwrap();
    assert_eq!(joined.room_id, room);
    publish(&a, "A", &json!({"k": 1})).await;
    assert_eq!(received(&bob).await.len(), 1);
    assert_eq!(a.list().await.len(), 1);
    assert_eq!(a.list().await[0].3, 2, "one member on each node");
    let unknown = b.locate("no-such-room").await.err().unwrap();
    assert_eq!(unknown.id(), Some("core.realtime.room_not_found"));
}

#[actix_rt::test]
async fn a_revocation_on_one_node_ends_the_token_on_the_other() {
    let network = Arc::new(Network::default());
    let (a, b) = (node(&network, "A").await, node(&network, "B").await);
    let (alice, carol) = (member("alice"), member("carol"));
    let filter = json!({"exists": "x"});
    let room = subscribe(&a, &alice, filter.clone(), Users::None)
        .await
        .unwrap()
        .room_id;
    subscribe(&a, &carol, filter, Users::None).await.unwrap();
    a.link(
        "t1".into(),
        None,
        alice.connection_id.clone(),
        alice.outbox.clone(),
    );
    a.link(
        "t2".into(),
        None,
        carol.connection_id.clone(),
        carol.outbox.clone(),
    );
    b.revoke(vec!["t1".into()]);
    settle_until(|| alice.outbox.queued().0 > 0).await;
    let got = received(&alice).await;
    assert_eq!(got[0]["message"], "Authentication Token Expired");
    assert_eq!(
        a.count(&room).await,
        1,
        "alice lost her subscription, carol kept hers"
    );
    publish(&b, "B", &json!({"x": 1})).await;
    assert!(received(&alice).await.is_empty());
    assert_eq!(received(&carol).await.len(), 1);
}

#[actix_rt::test]
async fn bad_requests_get_their_documented_errors() {
    let network = Arc::new(Network::default());
    let a = node(&network, "A").await;
    let alice = member("alice");
    let invalid = a.prepare("i", "c", &json!({"nope": {}})).err().unwrap();
    assert_eq!(invalid.id(), Some("api.assert.koncorde_dsl_error"));
    let not_subscribed = a.unsubscribe(&alice.connection_id, "room").unwrap_err();
    assert_eq!(not_subscribed.id(), Some("core.realtime.not_subscribed"));
    subscribe(&a, &alice, json!({}), Users::None).await.unwrap();
    assert_eq!(a.metrics(), (1, 1));
}

#[actix_rt::test]
async fn a_node_alone_delivers_and_counts_locally() {
    let settings = Settings::default();
    let bus: Arc<dyn Bus> = Arc::new(crate::cluster::alone::Alone::new(&settings));
    let realtime = Realtime::new(
        bus,
        &settings.limits,
        room_key("s"),
        RealtimeCounters::default(),
    );
    let (alice, bob) = (member("alice"), member("bob"));
    let room = subscribe(&realtime, &alice, json!({}), Users::All)
        .await
        .unwrap()
        .room_id;
    subscribe(&realtime, &bob, json!({}), Users::None)
        .await
        .unwrap();
    assert_eq!(realtime.count(&room).await, 2);
    assert_eq!(received(&alice).await[0]["result"]["count"], 2);
    realtime.unsubscribe(&bob.connection_id, &room).unwrap();
    // A node alone announces at once.
    assert_eq!(received(&alice).await[0]["user"], "out");
    publish(&realtime, "n", &json!({"a": 1})).await;
    assert_eq!(received(&alice).await.len(), 1);
    assert!(received(&bob).await.is_empty());
}
