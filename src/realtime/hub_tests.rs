//! Unit tests of `hub.rs` (a sibling file, so that the hub reads on its own).
use super::*;
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
    outbox.drain_json().await
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
    let again = subscribe_to(&hub, &b, filter(json!({})), Scope::All, Users::None, None).unwrap();
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
        shapes.push(
            json!({"range": {"n": {"gte": lower as f64 / 4.0, "lt": lower as f64 / 4.0 + 1.5}}}),
        );
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
