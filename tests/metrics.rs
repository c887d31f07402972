//! `GET /metrics` (issue 12): the Prometheus exposition of a node, its counters moving with
//! what the node does, and where it is served (`http.metrics`, `server.metrics`).

mod common;

use std::time::{Duration, Instant};

use awc::Client;
use common::*;
use serde_json::json;

async fn scrape_at(addr: std::net::SocketAddr) -> (u16, String, String) {
    scrape_accepting(addr, "application/openmetrics-text; version=1.0.0").await
}

/// `GET /metrics` with this `Accept` header.
async fn scrape_accepting(addr: std::net::SocketAddr, accept: &str) -> (u16, String, String) {
    let mut res = Client::default()
        .get(format!("http://{addr}/metrics"))
        .insert_header(("Accept", accept))
        .send()
        .await
        .unwrap();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.body().await.unwrap();
    (
        res.status().as_u16(),
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes until `series` reaches `at_least` (the node counts a close after the client
/// saw it).
async fn wait_for(addr: std::net::SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, text) = scrape_at(addr).await;
        if value(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A scraper that does not ask for OpenMetrics gets the Prometheus text format 0.0.4: the
/// same series, counters' families named with `_total`, no `# EOF`.
#[actix_rt::test]
async fn the_prometheus_text_format_unless_openmetrics_is_asked_for() {
    let node = start_node(|_| {}).await;
    for accept in ["text/plain;version=0.0.4;q=1,*/*;q=0.1", "*/*"] {
        let (status, content_type, text) = scrape_accepting(node.addr, accept).await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
        assert!(
            text.contains("# TYPE kuzzle_connections_accepted_total counter\n"),
            "{text}"
        );
        assert_eq!(value(&text, "kuzzle_cluster_nodes_alive"), Some(1.0));
    }
    let (_, content_type, text) = scrape_at(node.addr).await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(
        text.contains("# TYPE kuzzle_connections_accepted counter\n"),
        "{text}"
    );
}

#[actix_rt::test]
async fn counters_follow_what_the_node_does() {
    let node = start_node(|_| {}).await;
    let (status, content_type, text) = scrape_at(node.addr).await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(value(&text, "kuzzle_cluster_nodes_alive"), Some(1.0));
    assert_eq!(value(&text, "kuzzle_bus_up"), Some(1.0));

    let mut subscriber = Ws::connect(node.addr).await;
    let res = subscriber
        .request(json!({"controller":"realtime","action":"subscribe","index":"i","collection":"c","body":{}}))
        .await;
    assert_eq!(res["status"], 200);
    let mut client = Ws::connect(node.addr).await;
    for i in 0..3 {
        let res = client
            .request(
                json!({"controller":"realtime","action":"publish","index":"i","collection":"c",
                "body":{"i": i},"requestId":format!("p{i}")}),
            )
            .await;
        assert_eq!(res["status"], 200);
    }
    // An action that does not exist is counted under "unknown", not under its name.
    let res = client
        .request(json!({"controller":"nope","action":"nothing"}))
        .await;
    assert_eq!(res["status"], 404);
    client
        .send_frame(true, CLOSE, &1000u16.to_be_bytes(), true)
        .await;
    let text = wait_for(
        node.addr,
        "kuzzle_websocket_closes_total{code=\"1000\"}",
        1.0,
    )
    .await;
    for (series, expected) in [
        (
            "kuzzle_requests_total{controller=\"realtime\",action=\"publish\",status=\"200\"}",
            3.0,
        ),
        (
            "kuzzle_requests_total{controller=\"realtime\",action=\"subscribe\",status=\"200\"}",
            1.0,
        ),
        (
            "kuzzle_requests_total{controller=\"unknown\",action=\"unknown\",status=\"404\"}",
            1.0,
        ),
        ("kuzzle_notifications_published_total", 3.0),
        ("kuzzle_deliveries_total", 3.0),
        ("kuzzle_rooms", 1.0),
        ("kuzzle_subscriptions", 1.0),
        ("kuzzle_connections_open{protocol=\"websocket\"}", 1.0),
        (
            "kuzzle_connections_accepted_total{protocol=\"websocket\"}",
            2.0,
        ),
        (
            "kuzzle_request_duration_seconds_count{controller=\"realtime\",action=\"publish\"}",
            3.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
    }
    assert!(!text.contains("nope"), "client input never becomes a label");
    // A socket that drops without a close frame counts as 1006.
    drop(subscriber);
    wait_for(
        node.addr,
        "kuzzle_websocket_closes_total{code=\"1006\"}",
        1.0,
    )
    .await;
}

#[actix_rt::test]
async fn token_expiry_and_revocation_are_told_apart() {
    let node = start_node(|_| {}).await;
    let (_admin, _) = admin_session_with(&node, false).await;
    let mut linked = Ws::connect(node.addr).await;
    let res = linked
        .request(
            json!({"controller":"auth","action":"login","strategy":"local",
            "body":{"username":"root","password":"toor"}}),
        )
        .await;
    let jwt = res["result"]["jwt"].as_str().unwrap().to_owned();
    let mut other = Ws::connect(node.addr).await;
    let res = other
        .request(json!({"controller":"auth","action":"logout","jwt": jwt}))
        .await;
    assert_eq!(res["status"], 200);
    wait_for(
        node.addr,
        "kuzzle_token_expired_total{reason=\"revocation\"}",
        1.0,
    )
    .await;
    let mut short = Ws::connect(node.addr).await;
    let res = short
        .request(
            json!({"controller":"auth","action":"login","strategy":"local","expiresIn":"1s",
            "body":{"username":"root","password":"toor"}}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(short.next_json().await["type"], "TokenExpired");
    wait_for(
        node.addr,
        "kuzzle_token_expired_total{reason=\"expiry\"}",
        1.0,
    )
    .await;
}

#[actix_rt::test]
async fn a_token_and_its_user_are_read_once_then_served_from_the_cache() {
    let node = start_node(|_| {}).await;
    let (_admin, _) = admin_session_with(&node, false).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(
            json!({"controller":"auth","action":"login","strategy":"local",
            "body":{"username":"root","password":"toor"}}),
        )
        .await;
    let jwt = res["result"]["jwt"].as_str().unwrap().to_owned();
    let series = |cache: &str, outcome: &str| {
        format!("kuzzle_cache_lookups_total{{cache=\"{cache}\",outcome=\"{outcome}\"}}")
    };
    let figures = |text: &str| {
        [
            ("tokens", "hit"),
            ("tokens", "miss"),
            ("users", "hit"),
            ("users", "miss"),
        ]
        .map(|(cache, outcome)| value(text, &series(cache, outcome)).unwrap_or(0.0))
    };
    // The metrics are scraped anonymously: the scrapes look nothing up.
    let before = figures(&scrape_at(node.addr).await.2);
    for _ in 0..3 {
        let res = ws
            .request(json!({"controller":"server","action":"now","jwt": jwt}))
            .await;
        assert_eq!(res["status"], 200, "{res}");
    }
    let after = figures(&scrape_at(node.addr).await.2);
    let moved: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        moved,
        [2.0, 1.0, 2.0, 1.0],
        "token hit, miss; user hit, miss"
    );
    // Logged out: the cache forgot the token, and the store refuses it.
    let res = ws
        .request(json!({"controller":"auth","action":"logout","jwt": jwt}))
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let res = Ws::connect(node.addr)
        .await
        .request(json!({"controller":"server","action":"now","jwt": jwt}))
        .await;
    assert_eq!(res["error"]["id"], "security.token.invalid", "{res}");
}

#[actix_rt::test]
async fn metrics_can_be_disabled_or_moved_to_their_own_listener() {
    let off = start_node(|s| s.http.metrics.enabled = false).await;
    let (status, _, text) = scrape_at(off.addr).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("network.http.url_not_found"), "{text}");

    let apart = start_node(|s| {
        s.server.metrics.host = "127.0.0.1".into();
        s.server.metrics.port = Some(0);
    })
    .await;
    let metrics_addr = apart.metrics_addr.expect("a metrics listener");
    assert_ne!(metrics_addr, apart.addr);
    let (status, _, text) = scrape_at(metrics_addr).await;
    assert_eq!(status, 200);
    assert!(text.contains("kuzzle_cluster_nodes_alive 1"), "{text}");
    let (status, _, _) = scrape_at(apart.addr).await;
    assert_eq!(status, 404, "not on the API's port");
}

#[actix_rt::test]
async fn cluster_metrics_describe_the_node_for_the_dashboard() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.assert_now_ok().await;
    let res = ws
        .request(json!({"controller":"cluster","action":"metrics"}))
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let nodes = res["result"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    let me = &nodes[0];
    assert_eq!(me["id"], res["node"]);
    assert_eq!(me["connections"]["websocket"], 1);
    assert!(me["requests"].as_u64() >= Some(1), "{me}");
    assert_eq!(me["bus"]["state"], "standalone");
    for key in [
        "address",
        "birthdate",
        "uptime",
        "rooms",
        "subscriptions",
        "deliveries",
        "closes",
        "time",
    ] {
        assert!(!me[key].is_null(), "{key} in {me}");
    }
    // The page itself.
    let mut page = Client::default()
        .get(format!("http://{}/_dashboard", node.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(
        page.headers().get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(
        html.contains(r#"request({ controller: "cluster", action: "metrics" })"#),
        "the page reads cluster:metrics"
    );
}

/// Once an administrator exists (and anonymous lost its rights), `GET /metrics` on the API
/// port needs a bearer token with the rights of `server:metrics`; the separate metrics
/// port stays open.
#[actix_rt::test]
async fn metrics_on_the_api_port_need_the_rights_of_server_metrics() {
    let node = start_node(|_| {}).await;
    assert_eq!(
        scrape_at(node.addr).await.0,
        200,
        "open before the first admin"
    );
    let (_admin, jwt) = admin_session(&node).await;
    let (status, _, text) = scrape_at(node.addr).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("security.rights.unauthorized"), "{text}");
    assert!(!text.contains("kuzzle_"), "no metrics: {text}");
    let mut res = Client::default()
        .get(format!("http://{}/metrics", node.addr))
        .insert_header(("Authorization", format!("Bearer {jwt}")))
        .send()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&res.body().await.unwrap()).into_owned();
    assert_eq!(res.status().as_u16(), 200, "{body}");
    assert!(body.contains("kuzzle_cluster_nodes_alive 1"), "{body}");

    let apart = start_node(|s| {
        s.server.metrics.host = "127.0.0.1".into();
        s.server.metrics.port = Some(0);
    })
    .await;
    let (_admin, _) = admin_session(&apart).await;
    let metrics_addr = apart.metrics_addr.expect("a metrics listener");
    assert_eq!(
        scrape_at(metrics_addr).await.0,
        200,
        "the metrics port stays open"
    );
}
