//! permessage-deflate on a real node: negotiation, compressed requests and notifications,
//! and every bad input (bombs, RSV1 misuse, corrupt data) closing only the guilty socket.

mod common;

use common::*;
use flate2::{Compress, Compression};
use kuzzle_rt::config::{Settings, Size};
use kuzzle_rt::protocol::deflate::compress_with;
use serde_json::{Value, json};

const OFFER: (&str, &str) = ("Sec-WebSocket-Extensions", "permessage-deflate");

fn compressing(settings: &mut Settings) {
    settings.server.protocols.websocket.compression = true;
}

async fn connect_offering(addr: std::net::SocketAddr, offer: &str) -> Ws {
    let headers = [("Sec-WebSocket-Extensions", offer)];
    Ws::connect_with(
        addr,
        WsOptions {
            headers: &headers,
            ..Default::default()
        },
    )
    .await
    .expect("upgrade accepted")
}

fn agreed_extension(ws: &Ws) -> Option<String> {
    ws.handshake.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    })
}

/// Raw deflate of `data` as one permessage-deflate message (the 4-byte tail removed).
fn deflate(data: &[u8], level: Compression) -> Vec<u8> {
    compress_with(&mut Compress::new(level, false), data)
        .expect("compressed")
        .to_vec()
}

#[actix_rt::test]
async fn negotiation_follows_the_offer_and_the_setting() {
    let node = start_node(compressing).await;
    let cases = [
        (
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        (
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
            ),
        ),
        // The first offer cannot be honoured, the second can.
        (
            "permessage-deflate; server_max_window_bits=20, permessage-deflate",
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        ("permessage-deflate; mystery_parameter", None),
        ("x-webkit-deflate-frame", None),
    ];
    for (offer, answer) in cases {
        let mut ws = connect_offering(node.addr, offer).await;
        assert_eq!(agreed_extension(&ws).as_deref(), answer, "{offer}");
        ws.assert_now_ok().await;
    }
    // No offer: served plainly.
    let mut ws = Ws::connect(node.addr).await;
    assert_eq!(agreed_extension(&ws), None);
    ws.assert_now_ok().await;

    // Compression off: an offer is ignored.
    let plain = start_node(|_| {}).await;
    let mut ws = connect_offering(plain.addr, OFFER.1).await;
    assert_eq!(agreed_extension(&ws), None);
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn compressed_requests_and_notifications() {
    let node = start_node(compressing).await;
    let mut subscriber = connect_offering(node.addr, OFFER.1).await;
    let reply = subscriber
        .request(json!({"controller": "realtime", "action": "subscribe",
            "index": "i", "collection": "c", "body": {}}))
        .await;
    assert_eq!(reply["status"], 200, "{reply}");
    let (_, compressed_before) = subscriber.received_stats();
    assert_eq!(compressed_before, 0, "small responses go uncompressed");

    // A large publish, itself sent compressed (twice, so that the second message relies
    // on the context the first one left).
    let mut publisher = connect_offering(node.addr, OFFER.1).await;
    let rows: Vec<Value> = (0..200)
        .map(|i| json!({"sensor": format!("sensor-{i}"), "temperature": 20 + i % 7, "unit": "celsius"}))
        .collect();
    for seq in 0..2 {
        let publish = json!({"controller": "realtime", "action": "publish", "index": "i",
            "collection": "c", "requestId": format!("pub-{seq}"), "body": {"seq": seq, "rows": rows}});
        publisher.send_compressed(&publish.to_string()).await;
        let reply = publisher.next_json().await;
        assert_eq!(
            (reply["requestId"].as_str(), reply["status"].as_u64()),
            (Some(format!("pub-{seq}").as_str()), Some(200)),
            "{reply}"
        );
    }
    let mut notification_bytes = 0;
    for seq in 0..2 {
        let notification = subscriber.next_json().await;
        assert_eq!(notification["result"]["_source"]["seq"], seq);
        assert_eq!(notification["result"]["_source"]["rows"], json!(rows));
        notification_bytes += notification.to_string().len() as u64;
    }
    let (wire, compressed) = subscriber.received_stats();
    assert_eq!(compressed, 2, "both notifications came compressed");
    assert!(
        wire * 5 < notification_bytes,
        "{wire} bytes on the wire for {notification_bytes} bytes of JSON"
    );
}

#[actix_rt::test]
async fn a_zip_bomb_closes_with_1009_without_harming_others() {
    let node = start_node(|s| {
        compressing(s);
        s.server.max_request_size = Size(64 * 1024);
    })
    .await;
    let mut bystander = connect_offering(node.addr, OFFER.1).await;
    let mut attacker = connect_offering(node.addr, OFFER.1).await;
    // 10 MiB of spaces inside a JSON string: about 10 KB once compressed.
    let mut bomb = b"{\"controller\":\"server\",\"action\":\"now\",\"pad\":\"".to_vec();
    bomb.resize(10 * 1024 * 1024, b' ');
    bomb.extend_from_slice(b"\"}");
    let wire = deflate(&bomb, Compression::best());
    assert!(wire.len() < 64 * 1024, "{}", wire.len());
    attacker.send_raw_frame(0x80 | 0x40 | TEXT, &wire).await;
    assert_eq!(
        attacker.expect_close().await,
        (Some(1009), "message too big".into())
    );
    bystander.assert_now_ok().await;
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn rsv1_misuse_is_a_protocol_error() {
    let node = start_node(compressing).await;
    let mut bystander = connect_offering(node.addr, OFFER.1).await;
    let request = br#"{"controller":"server","action":"now"}"#;
    let compressed = deflate(request, Compression::default());

    // Without negotiation.
    let mut ws = Ws::connect(node.addr).await;
    ws.send_raw_frame(0x80 | 0x40 | TEXT, &compressed).await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1002), "RSV1 set without permessage-deflate".into())
    );
    // On a continuation frame.
    let mut ws = connect_offering(node.addr, OFFER.1).await;
    let (first, rest) = compressed.split_at(compressed.len() / 2);
    ws.send_raw_frame(0x40 | TEXT, first).await;
    ws.send_raw_frame(0x80 | 0x40, rest).await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1002), "RSV1 set on a continuation frame".into())
    );
    // On a control frame.
    let mut ws = connect_offering(node.addr, OFFER.1).await;
    ws.send_raw_frame(0x80 | 0x40 | PING, b"").await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1002), "RSV1 set on a control frame".into())
    );
    // RSV2 and RSV3 are never allowed.
    let mut ws = connect_offering(node.addr, OFFER.1).await;
    ws.send_raw_frame(0x80 | 0x20 | TEXT, request).await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1002), "reserved bits set".into())
    );
    // A compressed message split over frames, RSV1 on the first only, is fine.
    let mut ws = connect_offering(node.addr, OFFER.1).await;
    ws.send_raw_frame(0x40 | TEXT, first).await;
    ws.send_raw_frame(0x80, rest).await;
    let reply = ws.next_json().await;
    assert_eq!(reply["status"], 200, "{reply}");

    bystander.assert_now_ok().await;
}

#[actix_rt::test]
async fn corrupt_compressed_data_closes_with_1007() {
    let node = start_node(compressing).await;
    let mut bystander = connect_offering(node.addr, OFFER.1).await;
    let mut ws = connect_offering(node.addr, OFFER.1).await;
    // A deflate block of the reserved type 3.
    ws.send_raw_frame(0x80 | 0x40 | TEXT, &[0xFF, 0xFF, 0xFF, 0xFF])
        .await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1007), "invalid compressed data".into())
    );
    // Valid deflate data that inflates to invalid UTF-8 in a text message.
    let mut ws = connect_offering(node.addr, OFFER.1).await;
    ws.send_raw_frame(
        0x80 | 0x40 | TEXT,
        &deflate(b"{\"a\":\"\xFF\"}", Compression::default()),
    )
    .await;
    assert_eq!(
        ws.expect_close().await,
        (Some(1007), "invalid UTF-8".into())
    );
    bystander.assert_now_ok().await;
    assert_serving(node.addr).await;
}
