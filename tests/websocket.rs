//! WebSocket behaviour against a real node: envelopes, liveness, limits, bad input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[actix_rt::test]
async fn request_gets_envelope_with_room() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(json!({"controller":"server","action":"now","requestId":"abc","volatile":{"sdkName":"js@7.17.1","x":[1]}}))
        .await;
    assert_eq!(
        keys_of(&res),
        [
            "action",
            "controller",
            "error",
            "headers",
            "node",
            "requestId",
            "result",
            "status",
            "volatile",
            "room"
        ]
    );
    assert_eq!(res["room"], "abc");
    assert_eq!(res["status"], 200);
    assert_eq!(res["node"], &*node.node.id);
    assert_eq!(res["volatile"], json!({"sdkName":"js@7.17.1","x":[1]}));
    assert!(res["result"]["now"].as_u64().unwrap() > 1_600_000_000_000);
}

#[actix_rt::test]
async fn upgrade_on_any_path_and_first_subprotocol() {
    let node = start_node(|_| {}).await;
    let options = WsOptions {
        path: "/some/where?x=1",
        headers: &[("Sec-WebSocket-Protocol", "alpha, beta")],
        ..WsOptions::default()
    };
    let mut ws = Ws::connect_with(node.addr, options).await.unwrap();
    assert!(
        ws.handshake
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol: alpha"),
        "{}",
        ws.handshake
    );
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn app_ping_gets_exactly_p2() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_text(r#"{"p":1}"#).await;
    assert_eq!(
        ws.next_frame().await,
        Some(Frame::Text(r#"{"p":2}"#.into()))
    );
    // Anything else is an ordinary request.
    let res = ws
        .request(json!({"p":1,"controller":"server","requestId":"r"}))
        .await;
    assert_eq!(res["error"]["id"], "api.assert.missing_argument");
    assert_eq!(res["error"]["props"], json!(["action"]));
    assert_eq!(res["room"], "r");
}

#[actix_rt::test]
async fn rfc_ping_gets_pong_with_payload() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_frame(true, PING, b"hello", true).await;
    assert_eq!(ws.next_frame().await, Some(Frame::Pong(b"hello".to_vec())));
}

#[actix_rt::test]
async fn bad_json_gets_unexpected_error_without_room() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_text("{not json").await;
    let res = ws.next_json().await;
    assert_eq!(res["error"]["id"], "network.websocket.unexpected_error");
    assert_eq!(res["error"]["code"], 50528257);
    assert_eq!(res["status"], 400);
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Caught an unexpected WebSocket error: key must be a string")
    );
    assert!(res.get("room").is_none());
    assert_eq!(res["requestId"].as_str().unwrap().len(), 36);
    assert_eq!(
        (
            res["controller"].clone(),
            res["action"].clone(),
            res["volatile"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    // The socket stays usable.
    ws.assert_now_ok().await;
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn json_that_is_not_an_object() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    for text in ["[1,2]", "42", "null", "\"x\""] {
        ws.send_text(text).await;
        let res = ws.next_json().await;
        assert_eq!(
            res["error"],
            json!({"message":"Input request data must be a non-null object","status":500}),
            "{text}"
        );
        assert_eq!(res["status"], 500);
    }
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn wrong_envelope_types_are_id_less_errors_with_room() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let cases = [
        (
            json!({"requestId":"a","controller":"server","action":"now","jwt":12}),
            "Attribute jwt must be of type \"string\"",
        ),
        (
            json!({"requestId":"b","controller":"server","action":"now","volatile":"v"}),
            "Attribute volatile must be of type \"object\"",
        ),
        (
            json!({"requestId":"c","controller":"server","action":"now","body":3}),
            "Attribute body must be of type \"object\" or \"array\"",
        ),
        (
            json!({"requestId":"d","controller":["server"],"action":"now"}),
            "Attribute controller must be of type \"string\"",
        ),
        (
            json!({"requestId":"e","controller":"server","action":true}),
            "Attribute action must be of type \"string\"",
        ),
    ];
    for (request, message) in cases {
        let res = ws.request(request.clone()).await;
        assert_eq!(
            res["error"],
            json!({"message": message, "status": 400}),
            "{request}"
        );
        assert_eq!(res["room"], request["requestId"]);
        assert_eq!(res["controller"], Value::Null);
    }
    // A requestId of the wrong type: the error has no room.
    ws.send_json(&json!({"requestId":5,"controller":"server","action":"now"}))
        .await;
    let res = ws.next_json().await;
    assert_eq!(
        res["error"]["message"],
        "Attribute requestId must be of type \"string\""
    );
    assert!(res.get("room").is_none());
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn missing_and_unknown_controller_or_action() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws.request(json!({"action":"now"})).await;
    assert_eq!(
        (res["error"]["id"].as_str(), res["error"]["props"].clone()),
        (Some("api.assert.missing_argument"), json!(["controller"]))
    );
    assert_eq!(res["controller"], Value::Null);
    let res = ws.request(json!({"controller":"server","action":""})).await;
    assert_eq!(res["error"]["message"], "Missing argument \"action\".");
    let res = ws
        .request(json!({"controller":"document","action":"create"}))
        .await;
    assert_eq!(res["error"]["id"], "api.process.controller_not_found");
    assert_eq!(
        res["error"]["message"],
        "API controller \"document\" not found."
    );
    assert_eq!(res["status"], 404);
    let res = ws
        .request(json!({"controller":"server","action":"getStatz"}))
        .await;
    assert_eq!(res["error"]["id"], "api.process.action_not_found");
    assert_eq!(
        res["error"]["message"],
        "API action \"server\":\"getStatz\" not found"
    );
    let res = ws
        .request(json!({"controller":"server","action":"now","index":"i","targets":[]}))
        .await;
    assert_eq!(
        res["error"]["message"],
        "Arguments \"index, collection\" and \"targets\" are mutually exclusive"
    );
}

#[actix_rt::test]
async fn oversized_frame_closes_with_1009() {
    let node = start_node(|s| s.server.max_request_size = kuzzle_rt::config::Size(1024)).await;
    let mut ws = Ws::connect(node.addr).await;
    let big = format!(
        r#"{{"controller":"server","action":"now","x":"{}"}}"#,
        "a".repeat(2000)
    );
    ws.send_text(&big).await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1009), "message too big".into())
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn oversized_fragmented_message_closes_with_1009() {
    let node = start_node(|s| s.server.max_request_size = kuzzle_rt::config::Size(1024)).await;
    let mut ws = Ws::connect(node.addr).await;
    let chunk = vec![b'a'; 600];
    ws.send_frame(false, TEXT, &chunk, true).await;
    ws.send_frame(false, CONTINUATION, &chunk, true).await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1009), "message too big".into())
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn fragmented_message_is_reassembled() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let text = r#"{"controller":"server","action":"now","requestId":"frag"}"#;
    let (a, b) = text.split_at(20);
    ws.send_frame(false, TEXT, a.as_bytes(), true).await;
    ws.send_frame(true, CONTINUATION, b.as_bytes(), true).await;
    let res = ws.next_json().await;
    assert_eq!(
        (res["room"].as_str(), res["status"].as_u64()),
        (Some("frag"), Some(200))
    );
}

#[actix_rt::test]
async fn invalid_utf8_text_closes_with_1007() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_frame(true, TEXT, b"{\"a\":\"\xff\xfe\"}", true)
        .await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1007), "invalid UTF-8".into())
    );
    // The same in a fragmented text message.
    let mut ws = Ws::connect(node.addr).await;
    ws.send_frame(false, TEXT, b"{\"a\":\"\xe2\x82", true).await;
    ws.send_frame(true, CONTINUATION, b"\"}", true).await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1007), "invalid UTF-8".into())
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn binary_frames_are_json_too() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_frame(
        true,
        BINARY,
        br#"{"controller":"server","action":"now","requestId":"bin"}"#,
        true,
    )
    .await;
    let res = ws.next_json().await;
    assert_eq!(
        (res["room"].as_str(), res["status"].as_u64()),
        (Some("bin"), Some(200))
    );
    // Invalid UTF-8 in a binary frame is bad JSON, not a close.
    ws.send_frame(true, BINARY, b"{\"a\":\"\xff\"}", true).await;
    let res = ws.next_json().await;
    assert_eq!(res["error"]["id"], "network.websocket.unexpected_error");
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn unmasked_client_frame_closes_with_1002() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_frame(true, TEXT, br#"{"p":1}"#, false).await;
    let (code, _) = ws.expect_close().await;
    assert_eq!(code, Some(1002));
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn client_close_is_echoed() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.send_frame(true, CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'], true)
        .await;
    assert_eq!(ws.expect_close().await, (Some(1000), "bye".into()));
    assert_eq!(
        ws.next_frame().await,
        None,
        "then the server closes the TCP connection"
    );
}

#[actix_rt::test]
async fn rate_limit_rejects_extra_frames_and_keeps_the_socket() {
    let node = start_node(|s| s.server.protocols.websocket.rate_limit = 3).await;
    let mut ws = Ws::connect(node.addr).await;
    // Empty frames are ignored and not counted.
    for _ in 0..5 {
        ws.send_frame(true, TEXT, b"", true).await;
    }
    for i in 0..6 {
        ws.send_json(&json!({"controller":"server","action":"now","requestId":format!("r{i}")}))
            .await;
    }
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..6 {
        let res = ws.next_json().await;
        if res["status"] == 200 {
            ok += 1;
        } else {
            assert_eq!(res["error"]["id"], "network.websocket.ratelimit_exceeded");
            assert_eq!(res["error"]["code"], 50528258);
            assert_eq!(res["status"], 429);
            assert_eq!(res["room"], res["requestId"]);
            limited.push(res["room"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(limited, ["r3", "r4", "r5"]);
    // App pings count too; once the window has passed the socket is served again.
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    ws.assert_now_ok().await;
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn silent_client_gets_heartbeat_timeout() {
    let node = start_node(|s| s.server.protocols.websocket.heartbeat = 1000).await;
    let mut ws = Ws::connect(node.addr).await;
    let started = Instant::now();
    // Never answer: read PINGs and ignore them.
    let mut pings = 0;
    let close = loop {
        match ws.next_frame().await {
            Some(Frame::Ping(_)) => pings += 1,
            Some(Frame::Close(code, reason)) => break (code, reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close, (Some(1001), "heartbeat timeout".into()));
    assert!(pings >= 1);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed after a full silent interval"
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn client_answering_pings_survives_heartbeats() {
    let node = start_node(|s| s.server.protocols.websocket.heartbeat = 1000).await;
    let mut ws = Ws::connect(node.addr).await;
    let pings = ws.answer_pings_for(Duration::from_millis(3500)).await;
    assert!(pings >= 3, "pings: {pings}");
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn idle_client_is_closed() {
    let node = start_node(|s| {
        s.server.protocols.websocket.heartbeat = 0;
        s.server.protocols.websocket.idle_timeout = 1000;
    })
    .await;
    let mut ws = Ws::connect(node.addr).await;
    let started = Instant::now();
    assert_eq!(ws.expect_close().await, (Some(1001), "idle timeout".into()));
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn activity_keeps_an_idle_socket_open() {
    let node = start_node(|s| {
        s.server.protocols.websocket.heartbeat = 0;
        s.server.protocols.websocket.idle_timeout = 1000;
    })
    .await;
    let mut ws = Ws::connect(node.addr).await;
    for _ in 0..5 {
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        ws.send_text(r#"{"p":1}"#).await;
        assert_eq!(
            ws.next_frame().await,
            Some(Frame::Text(r#"{"p":2}"#.into()))
        );
    }
}

#[actix_rt::test]
async fn automatic_pings_keep_a_live_client() {
    let node = start_node(|s| {
        s.server.protocols.websocket.heartbeat = 0;
        s.server.protocols.websocket.idle_timeout = 1000;
        s.server.protocols.websocket.send_pings_automatically = true;
    })
    .await;
    let mut ws = Ws::connect(node.addr).await;
    let pings = ws.answer_pings_for(Duration::from_millis(3000)).await;
    assert!(pings >= 4, "a ping every half idle period, got {pings}");
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn client_that_stops_reading_is_closed_with_1011() {
    let node = start_node(|_| {}).await;
    let options = WsOptions {
        recv_buffer: Some(4096),
        ..WsOptions::default()
    };
    let mut slow = Ws::connect_with(node.addr, options).await.unwrap();
    // Each response echoes a 40 KB volatile: 400 of them are far past what the socket
    // buffers and the 4 MiB outbox can hold while the client does not read.
    let padding = "x".repeat(40_000);
    let sent = 400;
    for i in 0..sent {
        slow.send_json(&json!({"controller":"server","action":"now","requestId":format!("s{i}"),"volatile":{"pad":padding}}))
            .await;
    }
    // The node keeps serving others meanwhile.
    assert_serving(node.addr).await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let (received, close) = slow.count_until_close().await;
    assert_eq!(
        close,
        (
            Some(1011),
            "too much backpressure: client is too slow".into()
        )
    );
    assert!(
        received < sent,
        "responses past the bound were dropped: {received}"
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn disabled_websocket_serves_upgrades_as_http() {
    let node = start_node(|s| s.server.protocols.websocket.enabled = false).await;
    let answer = Ws::connect_with(
        node.addr,
        WsOptions {
            path: "/_now",
            ..WsOptions::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"now\":"), "{answer}");
}

#[actix_rt::test]
async fn handshake_origin_applies_to_every_request() {
    let node =
        start_node(|s| s.http.access_control_allow_origin = vec!["http://good.example".into()])
            .await;
    let options = WsOptions {
        headers: &[("Origin", "http://evil.example")],
        ..WsOptions::default()
    };
    let mut ws = Ws::connect_with(node.addr, options).await.unwrap();
    let res = ws
        .request(json!({"controller":"server","action":"now"}))
        .await;
    assert_eq!(res["error"]["id"], "api.process.unauthorized_origin");
    assert_eq!(
        res["error"]["message"],
        "The origin \"http://evil.example\" is not authorized."
    );
    assert_eq!(res["status"], 401);
    let options = WsOptions {
        headers: &[("Origin", "http://good.example")],
        ..WsOptions::default()
    };
    let mut ws = Ws::connect_with(node.addr, options).await.unwrap();
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn old_sdk_is_refused_when_strict() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(json!({"controller":"server","action":"now","volatile":{"sdkName":"js@6.1.0"}}))
        .await;
    assert_eq!(res["error"]["id"], "api.process.incompatible_sdk_version");
    assert_eq!(res["volatile"], json!({"sdkName":"js@6.1.0"}));
    let node = start_node(|s| s.server.strict_sdk_version = false).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(json!({"controller":"server","action":"now","volatile":{"sdkName":"js@6.1.0"}}))
        .await;
    assert_eq!(res["status"], 200);
}

#[actix_rt::test]
async fn requests_on_one_socket_run_concurrently_and_reused_ids_are_served() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    for _ in 0..3 {
        ws.send_json(&json!({"controller":"server","action":"now","requestId":"same"}))
            .await;
    }
    for _ in 0..3 {
        let res = ws.next_json().await;
        assert_eq!(
            (res["room"].as_str(), res["status"].as_u64()),
            (Some("same"), Some(200))
        );
    }
}

#[actix_rt::test]
async fn metrics_count_websocket_connections() {
    let node = start_node(|_| {}).await;
    let mut a = Ws::connect(node.addr).await;
    let _b = Ws::connect(node.addr).await;
    // The client's handshake completes before the node registers the socket: wait for
    // the node's own count rather than for the handshake.
    let deadline = std::time::Instant::now() + WAIT;
    let res = loop {
        let res = a
            .request(json!({"controller":"server","action":"metrics"}))
            .await;
        if res["result"]["network"]["connections"]["websocket"] == 2 {
            break res;
        }
        assert!(std::time::Instant::now() < deadline, "{res}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        res["result"]["network"]["connections"],
        json!({"websocket": 2})
    );
    assert_eq!(
        res["result"]["api"]["concurrentRequests"], 1,
        "this request is running"
    );
    assert_eq!(
        res["result"]["realtime"],
        json!({"rooms": 0, "subscriptions": 0})
    );
}

#[actix_rt::test]
async fn a_ping_flood_from_a_client_that_does_not_read_harms_no_one() {
    let node = start_node(|_| {}).await;
    let options = WsOptions {
        recv_buffer: Some(4096),
        ..WsOptions::default()
    };
    let mut flooder = Ws::connect_with(node.addr, options).await.unwrap();
    let payload = vec![b'p'; 125];
    for _ in 0..20_000 {
        flooder.send_frame(true, PING, &payload, true).await;
    }
    assert_serving(node.addr).await;
    // Once it reads again, the flooder is still served: PONGs, then its requests.
    let mut pongs = 0;
    loop {
        match flooder.next_frame_within(Duration::from_millis(500)).await {
            Ok(Some(Frame::Pong(p))) => {
                assert_eq!(p, payload);
                pongs += 1;
            }
            Err(()) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pongs > 0);
    flooder.assert_now_ok().await;
}
