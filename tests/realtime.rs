//! Realtime through real sockets: subscriptions, publishes, user notifications, limits.

mod common;

use std::time::Duration;

use awc::Client;
use common::*;
use serde_json::{Value, json};

fn subscribe(filter: Value, extra: Value) -> Value {
    let mut request = json!({"controller":"realtime","action":"subscribe","index":"idx","collection":"col","body":filter});
    if let (Value::Object(r), Value::Object(e)) = (&mut request, extra) {
        r.extend(e);
    }
    request
}

fn publish(body: Value) -> Value {
    json!({"controller":"realtime","action":"publish","index":"idx","collection":"col","body":body})
}

/// Subscribes and returns (roomId, channel).
async fn subscribed(ws: &mut Ws, filter: Value, extra: Value) -> (String, String) {
    let res = ws.request(subscribe(filter, extra)).await;
    assert_eq!(res["status"], 200, "{res}");
    (
        res["result"]["roomId"].as_str().unwrap().to_owned(),
        res["result"]["channel"].as_str().unwrap().to_owned(),
    )
}

/// Nothing arrives for a short while.
async fn assert_quiet(ws: &mut Ws) {
    match ws.next_frame_within(Duration::from_millis(300)).await {
        Err(()) => {}
        Ok(frame) => panic!("expected nothing, got {frame:?}"),
    }
}

#[actix_rt::test]
async fn publish_reaches_a_subscriber_with_the_documented_fields() {
    let node = start_node(|_| {}).await;
    let mut sub = Ws::connect(node.addr).await;
    let (room_id, channel) =
        subscribed(&mut sub, json!({"equals": {"kind": "greeting"}}), json!({})).await;
    assert_eq!(room_id.len(), 64);
    assert_eq!(channel, format!("{room_id}-411"));

    let mut publisher = Ws::connect(node.addr).await;
    let volatile = json!({"sdkInstanceId": "p1", "nested": {"a": [1, 2]}});
    let res = publisher
        .request(json!({"controller":"realtime","action":"publish","index":"idx","collection":"col","_id":"m1","requestId":"pub-1",
            "volatile": volatile,"body":{"kind":"greeting","text":"hi","_kuzzle_info":{"author":"forged"}}}))
        .await;
    assert_eq!(res["result"], json!({"published": true}));

    let n = sub.next_json().await;
    assert_eq!(
        keys_of(&n),
        [
            "type",
            "status",
            "action",
            "scope",
            "result",
            "node",
            "event",
            "requestId",
            "timestamp",
            "volatile",
            "index",
            "collection",
            "controller",
            "protocol",
            "room"
        ]
    );
    assert_eq!(
        (
            n["type"].as_str(),
            n["action"].as_str(),
            n["scope"].as_str(),
            n["event"].as_str()
        ),
        (
            Some("document"),
            Some("publish"),
            Some("in"),
            Some("publish")
        )
    );
    assert_eq!(n["room"], channel.as_str());
    assert_eq!(n["requestId"], "pub-1");
    assert_eq!(n["volatile"], volatile, "volatile copied unchanged");
    assert_eq!(n["node"], &*node.node.id);
    assert_eq!(n["protocol"], "websocket");
    assert_eq!(n["result"]["_id"], "m1");
    assert_eq!(n["result"]["_source"]["text"], "hi");
    assert_eq!(
        n["result"]["_source"]["_kuzzle_info"]["author"], "-1",
        "the client's _kuzzle_info is replaced"
    );
    assert!(
        n["result"]["_source"]["_kuzzle_info"]["createdAt"]
            .as_u64()
            .is_some()
    );

    // Not matching: nothing.
    publisher.request(publish(json!({"kind": "other"}))).await;
    assert_quiet(&mut sub).await;
}

#[actix_rt::test]
async fn http_publish_and_no_id() {
    let node = start_node(|_| {}).await;
    let mut sub = Ws::connect(node.addr).await;
    subscribed(&mut sub, json!({}), json!({})).await;
    let mut res = Client::default()
        .post(url(&node, "/idx/col/_publish"))
        .send_json(&json!({"a": 1}))
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["result"],
        json!({"published": true})
    );
    let n = sub.next_json().await;
    assert_eq!(n["protocol"], "http");
    assert!(
        n["result"].get("_id").is_none(),
        "_id omitted when the publisher gave none"
    );
    assert_eq!(n["result"]["_source"]["a"], 1);
}

#[actix_rt::test]
async fn scopes_and_channels() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let mut channels = Vec::new();
    for scope in ["all", "in", "out", "none"] {
        let (_, channel) = subscribed(&mut ws, json!({}), json!({"scope": scope})).await;
        channels.push(channel);
    }
    let room = channels[0].split('-').next().unwrap().to_owned();
    assert_eq!(
        channels,
        [
            format!("{room}-411"),
            format!("{room}-412"),
            format!("{room}-413"),
            format!("{room}-41")
        ]
    );
    let mut publisher = Ws::connect(node.addr).await;
    publisher.request(publish(json!({"x": 1}))).await;
    // One message per matching channel: all and in; never out or none.
    let mut rooms = vec![
        ws.next_json().await["room"].as_str().unwrap().to_owned(),
        ws.next_json().await["room"].as_str().unwrap().to_owned(),
    ];
    rooms.sort();
    let mut expected = vec![channels[0].clone(), channels[1].clone()];
    expected.sort();
    assert_eq!(rooms, expected);
    assert_quiet(&mut ws).await;
}

#[actix_rt::test]
async fn user_notifications_follow_the_users_option() {
    let node = start_node(|_| {}).await;
    let mut all = Ws::connect(node.addr).await;
    let mut ins = Ws::connect(node.addr).await;
    let mut outs = Ws::connect(node.addr).await;
    let mut none = Ws::connect(node.addr).await;
    let filter = json!({"equals": {"room": "lobby"}});
    let (room, all_channel) = subscribed(&mut all, filter.clone(), json!({"users": "all"})).await;
    subscribed(&mut ins, filter.clone(), json!({"users": "in"})).await;
    let n = all.next_json().await;
    assert_eq!(
        (
            n["type"].as_str(),
            n["user"].as_str(),
            n["result"]["count"].as_u64()
        ),
        (Some("user"), Some("in"), Some(2))
    );
    assert_eq!(n["room"], all_channel.as_str());
    subscribed(&mut outs, filter.clone(), json!({"users": "out"})).await;
    assert_eq!(all.next_json().await["result"]["count"], 3);
    assert_eq!(ins.next_json().await["result"]["count"], 3);
    // The newcomer subscribes with a volatile; others see it.
    let (room2, _) = subscribed(
        &mut none,
        filter.clone(),
        json!({"users": "none", "volatile": {"who": "none"}}),
    )
    .await;
    assert_eq!(room2, room);
    for ws in [&mut all, &mut ins] {
        let n = ws.next_json().await;
        assert_eq!(
            (
                n["user"].as_str(),
                n["result"]["count"].as_u64(),
                n["volatile"].clone()
            ),
            (Some("in"), Some(4), json!({"who": "none"}))
        );
        assert_eq!(
            (
                n["action"].as_str(),
                n["index"].as_str(),
                n["collection"].as_str()
            ),
            (Some("subscribe"), Some("idx"), Some("col"))
        );
    }
    assert_quiet(&mut outs).await;
    // The "none" socket leaves by disconnecting: "out" with its subscribe volatile.
    drop(none);
    for ws in [&mut all, &mut outs] {
        let n = ws.next_json().await;
        assert_eq!(
            (
                n["user"].as_str(),
                n["action"].as_str(),
                n["result"]["count"].as_u64()
            ),
            (Some("out"), Some("unsubscribe"), Some(3))
        );
        assert_eq!(n["volatile"], json!({"who": "none"}));
    }
    assert_quiet(&mut ins).await;
    // Unsubscribing is a leave too.
    let res = ins
        .request(json!({"controller":"realtime","action":"unsubscribe","body":{"roomId": room}}))
        .await;
    assert_eq!(res["result"], json!({"roomId": room}));
    assert_eq!(all.next_json().await["result"]["count"], 2);
    assert_eq!(outs.next_json().await["user"], "out");
}

#[actix_rt::test]
async fn same_subscription_twice_and_two_sockets_in_a_room() {
    let node = start_node(|_| {}).await;
    let mut a = Ws::connect(node.addr).await;
    let mut b = Ws::connect(node.addr).await;
    let first = subscribed(
        &mut a,
        json!({"range": {"n": {"gt": 1}}}),
        json!({"users": "all"}),
    )
    .await;
    let again = subscribed(
        &mut a,
        json!({"range": {"n": {"gt": 1.0}}}),
        json!({"users": "all"}),
    )
    .await;
    assert_eq!(first, again);
    assert_quiet(&mut a).await;
    subscribed(&mut b, json!({"range": {"n": {"gt": 1}}}), json!({})).await;
    assert_eq!(a.next_json().await["user"], "in");
    let count = a
        .request(json!({"controller":"realtime","action":"count","body":{"roomId": first.0}}))
        .await;
    assert_eq!(count["result"], json!({"count": 2}));
    let mut publisher = Ws::connect(node.addr).await;
    publisher.request(publish(json!({"n": 5}))).await;
    assert_eq!(a.next_json().await["result"]["_source"]["n"], 5);
    assert_eq!(b.next_json().await["result"]["_source"]["n"], 5);
    assert_quiet(&mut a).await;
}

#[actix_rt::test]
async fn unsubscribe_stops_delivery_and_errors() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let (room, _) = subscribed(&mut ws, json!({}), json!({})).await;
    let res = ws
        .request(json!({"controller":"realtime","action":"unsubscribe","body":{"roomId": room}}))
        .await;
    assert_eq!(res["status"], 200);
    let mut publisher = Ws::connect(node.addr).await;
    publisher.request(publish(json!({"x": 1}))).await;
    assert_quiet(&mut ws).await;
    let res = ws
        .request(json!({"controller":"realtime","action":"unsubscribe","body":{"roomId": room}}))
        .await;
    assert_eq!(res["error"]["id"], "core.realtime.not_subscribed");
    assert_eq!(res["status"], 412);
    assert_eq!(res["error"]["props"][1], room.as_str());
    assert_eq!(
        res["error"]["props"][0].as_str().unwrap().len(),
        36,
        "the connection id"
    );
    let res = ws
        .request(json!({"controller":"realtime","action":"unsubscribe","body":{}}))
        .await;
    assert_eq!(res["error"]["message"], "Missing argument \"body.roomId\".");
}

#[actix_rt::test]
async fn join_count_and_list() {
    let node = start_node(|_| {}).await;
    let mut a = Ws::connect(node.addr).await;
    let (room, _) = subscribed(&mut a, json!({"equals": {"t": 1}}), json!({"users": "all"})).await;
    let mut b = Ws::connect(node.addr).await;
    let res = b
        .request(
            json!({"controller":"realtime","action":"join","body":{"roomId": room},"scope":"in"}),
        )
        .await;
    assert_eq!(
        res["result"],
        json!({"channel": format!("{room}-412"), "roomId": room})
    );
    let n = a.next_json().await;
    assert_eq!(
        (
            n["user"].as_str(),
            n["action"].as_str(),
            n["index"].as_str()
        ),
        (Some("in"), Some("join"), Some("idx"))
    );
    let res = b
        .request(json!({"controller":"realtime","action":"join","body":{"roomId": "nope"}}))
        .await;
    assert_eq!(res["error"]["message"], "The room \"nope\" doesn't exist");
    let res = b
        .request(json!({"controller":"realtime","action":"count","body":{"roomId": "nope"}}))
        .await;
    assert_eq!(res["result"], json!({"count": 0}));
    let res = b
        .request(json!({"controller":"realtime","action":"list"}))
        .await;
    assert_eq!(res["result"], json!({"idx": {"col": {room.clone(): 2}}}));
    let res = b
        .request(json!({"controller":"server","action":"metrics"}))
        .await;
    assert_eq!(
        res["result"]["realtime"],
        json!({"rooms": 1, "subscriptions": 2})
    );
}

#[actix_rt::test]
async fn subscribe_errors_in_order_and_leave_nothing_behind() {
    let node = start_node(|s| s.limits.subscription_conditions_count = 3).await;
    let mut ws = Ws::connect(node.addr).await;
    let base = json!({"controller":"realtime","action":"subscribe"});
    let with = |extra: Value| {
        let mut r = base.clone();
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    let cases = [
        (
            with(json!({"collection":"c","body":{}})),
            "api.assert.missing_argument",
            "Missing argument \"index\".",
        ),
        (
            with(json!({"index":"i","body":{}})),
            "api.assert.missing_argument",
            "Missing argument \"collection\".",
        ),
        (
            with(json!({"index":"a/b","collection":"c","body":{}})),
            "api.assert.invalid_argument",
            "Invalid argument \"index\". Expected: a string without \"/\"",
        ),
        (
            with(json!({"index":5,"collection":"c","body":{}})),
            "api.assert.invalid_type",
            "Wrong type for argument \"index\" (expected: string)",
        ),
        (
            with(json!({"index":"i","collection":"c"})),
            "api.assert.body_required",
            "The request must specify a body.",
        ),
        (
            with(json!({"index":"i","collection":"c","body":[1]})),
            "api.assert.invalid_type",
            "Wrong type for argument \"body\" (expected: object)",
        ),
        (
            with(json!({"index":"i","collection":"c","body":{"nope":1}})),
            "api.assert.koncorde_dsl_error",
            "\"nope\": unknown keyword",
        ),
        (
            with(json!({"index":"i","collection":"c","body":{"in":{"a":["1","2","3","4"]}}})),
            "api.assert.koncorde_dsl_error",
            "Filter too complex: exceeds the configured maximum number of conditions (conditions: 4, max: 3)",
        ),
        (
            with(json!({"index":"i","collection":"c","body":{},"scope":"sideways"})),
            "core.realtime.invalid_scope",
            "Invalid value for the \"scope\" parameter (allowed: \"all\", \"in\", \"out\", \"none\").",
        ),
        (
            with(json!({"index":"i","collection":"c","body":{},"users":null})),
            "core.realtime.invalid_users",
            "Invalid value for the \"users\" parameter (allowed: \"all\", \"in\", \"out\", \"none\").",
        ),
    ];
    for (request, id, message) in cases {
        let res = ws.request(request.clone()).await;
        assert_eq!(
            (
                res["error"]["id"].as_str(),
                res["error"]["message"].as_str()
            ),
            (Some(id), Some(message)),
            "{request}"
        );
        assert_eq!(res["status"], res["error"]["status"]);
        assert_eq!(res["room"], res["requestId"]);
    }
    let res = ws
        .request(json!({"controller":"realtime","action":"list"}))
        .await;
    assert_eq!(
        res["result"],
        json!({}),
        "failed subscribes leave no room behind"
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn room_limit_is_per_node() {
    let node = start_node(|s| s.limits.subscription_rooms = 1).await;
    let mut ws = Ws::connect(node.addr).await;
    subscribed(&mut ws, json!({"equals": {"a": 1}}), json!({})).await;
    let res = ws
        .request(subscribe(json!({"equals": {"a": 2}}), json!({})))
        .await;
    assert_eq!(res["error"]["id"], "core.realtime.too_many_rooms");
    assert_eq!(res["status"], 413);
    // Joining the existing room is still fine.
    let res = ws
        .request(subscribe(
            json!({"equals": {"a": 1}}),
            json!({"scope": "in"}),
        ))
        .await;
    assert_eq!(res["status"], 200);
}

#[actix_rt::test]
async fn publish_and_validate_errors() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(json!({"controller":"realtime","action":"publish"}))
        .await;
    assert_eq!(
        res["error"]["id"], "api.assert.body_required",
        "body is checked before index"
    );
    let res = ws
        .request(json!({"controller":"realtime","action":"publish","body":{"a":1},"index":"i"}))
        .await;
    assert_eq!(res["error"]["message"], "Missing argument \"collection\".");
    let res = ws.request(json!({"controller":"realtime","action":"publish","body":{"a":1},"index":"i","collection":"c","_id":3})).await;
    assert_eq!(
        res["error"]["message"],
        "Wrong type for argument \"_id\" (expected: string)"
    );
    let res = ws.request(json!({"controller":"realtime","action":"validate","body":{"a":1},"index":"i","collection":"c"})).await;
    assert_eq!(res["result"], json!({"errorMessages": {}, "valid": true}));
}

#[actix_rt::test]
async fn http_subscribe_answers_but_registers_nothing() {
    let node = start_node(|_| {}).await;
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .send_json(&json!({"controller":"realtime","action":"subscribe","index":"idx","collection":"col","body":{}}))
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"]["roomId"].as_str().unwrap().len(), 64);
    let mut ws = Ws::connect(node.addr).await;
    assert_eq!(
        ws.request(json!({"controller":"realtime","action":"list"}))
            .await["result"],
        json!({})
    );
    // The same filter gives the same room id over WebSocket.
    let (room, _) = subscribed(&mut ws, json!({}), json!({})).await;
    assert_eq!(body["result"]["roomId"], room.as_str());
}

#[actix_rt::test]
async fn a_slow_subscriber_is_closed_while_a_fast_one_gets_everything() {
    let node = start_node(|_| {}).await;
    let options = WsOptions {
        recv_buffer: Some(4096),
        ..WsOptions::default()
    };
    let mut slow = Ws::connect_with(node.addr, options).await.unwrap();
    subscribed(&mut slow, json!({}), json!({})).await;
    let mut fast = Ws::connect(node.addr).await;
    subscribed(&mut fast, json!({}), json!({})).await;
    let mut publisher = Ws::connect(node.addr).await;
    let padding = "x".repeat(40_000);
    let total = 300;
    let mut received = 0;
    for i in 0..total {
        publisher
            .send_json(&publish(json!({"i": i, "pad": padding})))
            .await;
        // The fast subscriber reads as it goes; the slow one never does.
        let n = fast.next_json().await;
        assert_eq!(n["result"]["_source"]["i"], i);
        received += 1;
    }
    assert_eq!(received, total);
    let (slow_got, close) = slow.count_until_close().await;
    assert_eq!(
        close,
        (
            Some(1011),
            "too much backpressure: client is too slow".into()
        )
    );
    assert!(slow_got < total);
    assert_serving(node.addr).await;
}

/// A subscriber that never sends anything while notifications keep arriving.
async fn quiet_subscriber_survives(reset_on_send: bool) -> bool {
    let node = start_node(|s| {
        s.server.protocols.websocket.heartbeat = 0;
        s.server.protocols.websocket.idle_timeout = 1000;
        s.server.protocols.websocket.reset_idle_timeout_on_send = reset_on_send;
    })
    .await;
    let mut quiet = Ws::connect(node.addr).await;
    subscribed(&mut quiet, json!({}), json!({})).await;
    let mut publisher = Ws::connect(node.addr).await;
    for _ in 0..8 {
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        // The publisher is active, so only the quiet socket can go idle.
        publisher.request(publish(json!({"tick": true}))).await;
        match quiet.next_frame().await {
            Some(Frame::Text(_)) => {}
            Some(Frame::Close(code, reason)) => {
                assert_eq!((code, reason.as_str()), (Some(1001), "idle timeout"));
                return false;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    true
}

#[actix_rt::test]
async fn reset_idle_timeout_on_send_keeps_a_receiving_socket_open() {
    assert!(
        quiet_subscriber_survives(true).await,
        "server sends reset the idle clock"
    );
    assert!(
        !quiet_subscriber_survives(false).await,
        "without the option only inbound frames count"
    );
}

/// A subscribe's answer comes before any notification of the room it opens, even while
/// another socket publishes without pause into that room (the SDK listens to a room's
/// channel only once it has the answer: a notification before it would be lost to it).
#[actix_rt::test]
async fn a_subscribe_answer_precedes_its_rooms_notifications() {
    let node = start_node(|_| {}).await;
    let mut publisher = Ws::connect(node.addr).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                // Pipelined: answers are read by nobody until the end (a few at a time).
                publisher
                    .send_json(
                        &json!({"controller":"realtime","action":"publish","index":"idx",
                        "collection":"col","requestId": format!("p{n}"),"body":{"n": n}}),
                    )
                    .await;
                n += 1;
                if n.is_multiple_of(8) {
                    for _ in 0..8 {
                        publisher.next_json().await;
                    }
                }
            }
        }
    };
    let subscribing = async {
        let mut sub = Ws::connect(node.addr).await;
        for i in 0..60 {
            let id = format!("s{i}");
            sub.send_json(
                &json!({"controller":"realtime","action":"subscribe","index":"idx",
                "collection":"col","requestId": id,"body":{"range":{"n":{"gte": -i}}}}),
            )
            .await;
            let mut early = Vec::new();
            let answer = loop {
                let message = sub.next_json().await;
                if message["requestId"] == id.as_str() {
                    break message;
                }
                early.push(message["room"].as_str().unwrap_or_default().to_owned());
            };
            assert_eq!(answer["status"], 200, "{answer}");
            let channel = answer["result"]["channel"].as_str().unwrap();
            assert!(
                !early.iter().any(|room| room == channel),
                "subscribe {i}: a notification of its room came before its answer"
            );
            // One room at a time, so that this reader keeps up with the flood.
            let room_id = answer["result"]["roomId"].clone();
            let res = sub
                .request(json!({"controller":"realtime","action":"unsubscribe",
                    "body":{"roomId": room_id}}))
                .await;
            assert_eq!(res["status"], 200, "{res}");
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
    };
    futures_util::join!(flooding, subscribing);
}
