//! HTTP behaviour against a real node: routes, envelopes, headers, body pipeline, errors.

mod common;

use std::io::{Read, Write};

use awc::Client;
use awc::http::{Method, StatusCode};
use bytes::Bytes;
use common::*;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures_util::stream;
use kuzzle_rt::config::Size;
use serde_json::{Value, json};

async fn get(
    node: &kuzzle_rt::server::RunningNode,
    path: &str,
) -> (StatusCode, awc::http::header::HeaderMap, Value) {
    let mut res = Client::default().get(url(node, path)).send().await.unwrap();
    let body = res.body().limit(1 << 22).await.unwrap();
    (
        res.status(),
        res.headers().clone(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[actix_rt::test]
async fn route_answers_with_envelope_and_headers() {
    let node = start_node(|_| {}).await;
    let (status, headers, body) = get(&node, "/_now").await;
    assert_eq!(status, 200);
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h("x-kuzzle-node").as_deref(), Some(&*node.node.id));
    assert_eq!(
        h("x-kuzzle-request-id").unwrap(),
        body["requestId"].as_str().unwrap()
    );
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    assert_eq!(h("content-encoding").as_deref(), Some("identity"));
    assert_eq!(
        h("accept-encoding").as_deref(),
        Some("gzip,deflate,identity")
    );
    assert_eq!(
        h("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        h("access-control-allow-methods").as_deref(),
        Some("GET,POST,PUT,PATCH,DELETE,OPTIONS,HEAD")
    );
    assert!(
        h("access-control-allow-headers")
            .unwrap()
            .contains("X-Kuzzle-Volatile")
    );
    assert!(
        h("access-control-allow-origin").is_none(),
        "no Origin, nothing reflected"
    );
    assert_eq!(
        keys_of(&body),
        [
            "action",
            "controller",
            "error",
            "headers",
            "node",
            "requestId",
            "result",
            "status",
            "volatile"
        ]
    );
    assert_eq!(
        (body["controller"].as_str(), body["action"].as_str()),
        (Some("server"), Some("now"))
    );
}

#[actix_rt::test]
async fn request_id_volatile_and_pretty() {
    let node = start_node(|_| {}).await;
    let mut res = Client::default()
        .get(url(&node, "/_now?pretty&requestId=ignored"))
        .insert_header(("X-Kuzzle-Request-Id", "my-id"))
        .insert_header(("X-Kuzzle-Volatile", r#"{"a":1}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-kuzzle-request-id").unwrap(), "my-id");
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(text.starts_with("{\n  \"action\": \"now\""), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["requestId"], "my-id");
    assert_eq!(body["volatile"], json!({"a":1}));

    let mut res = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("X-Kuzzle-Volatile", "{bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["id"], "network.http.volatile_parse_failed");
    assert_eq!(
        body["requestId"],
        res.headers()
            .get("x-kuzzle-request-id")
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[actix_rt::test]
async fn query_endpoint_takes_a_whole_envelope() {
    let node = start_node(|_| {}).await;
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .send_json(&json!({"controller":"server","action":"now","requestId":"ignored","volatile":{"v":true}}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_ne!(body["requestId"], "ignored");
    assert_eq!(body["volatile"], json!({"v":true}));
    assert!(body.get("room").is_none());

    // No body, or a body that is not an object.
    for payload in ["", "[1]"] {
        let mut res = Client::default()
            .post(url(&node, "/_query"))
            .content_type("application/json")
            .send_body(payload)
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["id"], "api.assert.body_required", "{payload}");
    }
    // URL-encoded and multipart bodies are fields of strings.
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .content_type("application/x-www-form-urlencoded")
        .send_body("controller=server&action=now")
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 200);
    let multipart = "--b0\r\nContent-Disposition: form-data; name=\"controller\"\r\n\r\nserver\r\n--b0\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\nnow\r\n--b0--\r\n";
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .content_type("multipart/form-data; boundary=b0")
        .send_body(multipart)
        .await
        .unwrap();
    assert!(res.json::<Value>().await.unwrap()["result"]["now"].is_u64());
}

#[actix_rt::test]
async fn query_booleans_are_lenient_but_typed() {
    let node = start_node(|_| {}).await;
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .send_json(&json!({"controller":"server","action":"openapi","scope":"nope"}))
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["id"], "api.assert.unexpected_argument");
    assert_eq!(
        body["error"]["message"],
        "Unexpected argument \"nope\" (accepted arguments: [ 'kuzzle', 'app' ])"
    );
}

#[actix_rt::test]
async fn unknown_url_and_verb() {
    let node = start_node(|_| {}).await;
    let (status, _, body) = get(&node, "/nowhere/at/all/?x=1").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["id"], "network.http.url_not_found");
    assert_eq!(
        body["error"]["message"],
        "API URL not found: /nowhere/at/all."
    );
    assert_eq!(body["action"], Value::Null);
    // Trailing slashes and empty segments are ignored; paths are case-sensitive.
    assert_eq!(get(&node, "//_now//").await.0, 200);
    assert_eq!(get(&node, "/_NOW").await.0, 404);
    // A one-node cluster lists itself.
    let (status, _, body) = get(&node, "/cluster/_status").await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["activeNodes"], 1);
    assert_eq!(body["result"]["nodes"][0]["id"], body["node"]);
    assert_eq!(body["result"]["activity"][0]["event"], "joined");
    let mut res = Client::default()
        .request(
            Method::from_bytes(b"PROPFIND").unwrap(),
            url(&node, "/_now"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Unsupported HTTP verb \"PROPFIND\"."
    );
    let mut res = Client::default()
        .delete(url(&node, "/_now"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["id"],
        "network.http.url_not_found"
    );
}

#[actix_rt::test]
async fn content_type_and_charset_are_checked_before_anything() {
    let node = start_node(|s| {
        s.server.protocols.http.additional_content_types = vec!["application/x-kuzzle".into()]
    })
    .await;
    let post = |ct: &str| {
        Client::default()
            .post(url(&node, "/_query"))
            .content_type(ct.to_owned())
    };
    let mut res = post("text/plain").send_body("{}").await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code":50397192,"id":"network.http.unsupported_content","message":"Invalid request content-type. Expected \"application/json\", got: \"text/plain\".","props":["text/plain"],"status":400}),
        "a bare error object"
    );
    assert!(
        res.headers().get("x-kuzzle-node").is_some(),
        "bare errors carry X-Kuzzle-* too (CN-10)"
    );
    let mut res = post("application/json; charset=ISO-8859-1")
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Unsupported request charset. Expected \"utf-8\", got: \"iso-8859-1\"."
    );
    let mut res = post("application/json; charset=UTF-8")
        .send_body(r#"{"controller":"server","action":"now"}"#)
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 200);
    let mut res = post("application/x-kuzzle")
        .send_body(r#"{"controller":"server","action":"now"}"#)
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 200);
}

#[actix_rt::test]
async fn bad_json_body_is_a_bare_error_quoting_50_characters() {
    let node = start_node(|_| {}).await;
    let payload = format!("{{oops {}", "z".repeat(80));
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .content_type("application/json")
        .send_body(payload.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], "network.http.body_parse_failed");
    assert_eq!(
        body["props"],
        json!([payload.chars().take(50).collect::<String>()])
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn oversized_bodies_get_413() {
    let node = start_node(|s| s.server.max_request_size = Size(1000)).await;
    // Declared too large: refused before the body is read.
    let answer = raw_http(
        node.addr,
        b"POST /_query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{}",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"id\":\"network.http.request_too_large\""),
        "{answer}"
    );
    // No length announced (chunked): the bytes are counted.
    let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 100])));
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .content_type("application/json")
        .send_stream(stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Maximum HTTP request size exceeded."
    );
    // Small compressed, large once inflated (CN-5).
    let bomb = gzip(&vec![b' '; 100_000]);
    assert!(bomb.len() < 1000);
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .content_type("application/json")
        .insert_header(("Content-Encoding", "gzip"))
        .send_body(bomb)
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.json::<Value>().await.unwrap()["id"],
        "network.http.request_too_large"
    );
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn content_encodings() {
    let node = start_node(|_| {}).await;
    let envelope = br#"{"controller":"server","action":"now"}"#;
    let post = |encoding: &str, body: Vec<u8>| {
        Client::default()
            .post(url(&node, "/_query"))
            .content_type("application/json")
            .insert_header(("Content-Encoding", encoding.to_owned()))
            .send_body(body)
    };
    let twice = gzip(&gzip(envelope));
    assert_eq!(
        post("gzip, gzip", twice)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["status"],
        200
    );
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(envelope).unwrap();
    assert_eq!(
        post("deflate", zlib.finish().unwrap())
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["status"],
        200
    );
    assert_eq!(
        post("identity", envelope.to_vec())
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["status"],
        200
    );

    let mut res = post("br", envelope.to_vec()).await.unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Unsupported compression algorithm \"br\"."
    );
    let mut res = post("identity, identity, identity, identity", envelope.to_vec())
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["id"],
        "network.http.too_many_encodings"
    );
    let mut res = post("gzip", b"not gzip at all".to_vec()).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], "network.http.unexpected_error");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Caught an unexpected HTTP error: ")
    );

    let node = start_node(|s| s.server.protocols.http.allow_compression = false).await;
    let mut res = Client::default()
        .post(url(&node, "/_query"))
        .content_type("application/json")
        .insert_header(("Content-Encoding", "gzip"))
        .send_body(gzip(envelope))
        .await
        .unwrap();
    assert_eq!(res.headers().get("accept-encoding").unwrap(), "identity");
    assert_eq!(
        res.json::<Value>().await.unwrap()["id"],
        "network.http.compression_disabled"
    );
}

#[actix_rt::test]
async fn responses_follow_accept_encoding() {
    let node = start_node(|_| {}).await;
    let mut res = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("Accept-Encoding", "deflate;q=0.5, gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("content-encoding").unwrap(), "gzip");
    let raw = res.body().await.unwrap();
    let mut text = String::new();
    GzDecoder::new(&raw[..]).read_to_string(&mut text).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["status"], 200);

    let node = start_node(|s| s.server.protocols.http.allow_compression = false).await;
    let res = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("Accept-Encoding", "gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("content-encoding").unwrap(), "identity");
}

#[actix_rt::test]
async fn cors_preflight_head_and_special_endpoints() {
    let node = start_node(|_| {}).await;
    let mut res = Client::default()
        .request(Method::OPTIONS, url(&node, "/any/path/at/all"))
        .insert_header(("Origin", "http://app.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "http://app.example"
    );
    assert_eq!(res.headers().get("vary").unwrap(), "Origin");
    assert_eq!(res.json::<Value>().await.unwrap()["result"], json!({}));

    let mut res = Client::default()
        .head(url(&node, "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-kuzzle-node").is_some());
    assert!(res.body().await.unwrap().is_empty());

    for path in ["/_healthcheck", "/_ready"] {
        let (status, _, body) = get(&node, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["result"], Value::Null);
    }
}

#[actix_rt::test]
async fn disallowed_origin_is_401_with_the_origin_reflected() {
    let node =
        start_node(|s| s.http.access_control_allow_origin = vec!["http://good.example".into()])
            .await;
    let mut res = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("Origin", "http://evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "http://evil.example"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["id"],
        "api.process.unauthorized_origin"
    );
    let res = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("Origin", "http://good.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let node = start_node(|s| {
        s.http.access_control_allow_origin = vec![r"^https://[a-z]+\.example$".into()];
        s.http.access_control_allow_origin_use_regexp = true;
    })
    .await;
    let ok = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("Origin", "https://app.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = Client::default()
        .get(url(&node, "/_now"))
        .insert_header(("Origin", "https://app.example.evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[actix_rt::test]
async fn server_controller_actions() {
    let node = start_node(|s| s.services.storage.options.password = Some("hunter2".into())).await;
    let (_, _, info) = get(&node, "/_serverInfo").await;
    let kuzzle = &info["result"]["serverInfo"]["kuzzle"];
    assert_eq!(kuzzle["version"], "2.56.0");
    assert_eq!(kuzzle["implementation"]["name"], "kuzzle-rt");
    assert!(kuzzle["memoryUsed"].as_u64().unwrap() > 0);
    assert!(kuzzle["uptime"].as_str().unwrap().ends_with('s'));
    assert_eq!(
        kuzzle["api"]["routes"]["server"]["now"]["http"],
        json!([{"path":"/_now","url":"/_now","verb":"GET"}])
    );
    assert_eq!(
        info["result"]["serverInfo"]["services"]["internalCache"]["backend"],
        "embedded"
    );
    let (_, _, root) = get(&node, "/").await;
    assert_eq!(root["action"], "info", "GET / is server:info too");
    assert_eq!(root["result"]["serverInfo"]["kuzzle"]["api"], kuzzle["api"]);

    let (_, _, health) = get(&node, "/_healthCheck").await;
    assert_eq!(
        health["result"],
        json!({"status":"green","services":{"internalCache":"green","memoryStorage":"green","storageEngine":"green"}})
    );
    let (_, _, health) = get(&node, "/_healthCheck?services=other").await;
    assert_eq!(health["result"], json!({"status":"green","services":{}}));
    let (_, _, health) = get(&node, "/_healthCheck?services=storageEngine,other").await;
    assert_eq!(
        health["result"],
        json!({"status":"green","services":{"storageEngine":"green"}})
    );

    let (_, _, config) = get(&node, "/_getConfig").await;
    let config = &config["result"];
    assert_eq!(config["version"], "2.56.0");
    assert!(config.get("security").is_none());
    assert!(
        config["services"]["storage"]["options"]
            .get("password")
            .is_none()
    );
    assert_eq!(
        config["server"]["protocols"]["websocket"]["heartbeat"],
        60000
    );

    let (_, _, api) = get(&node, "/_publicApi").await;
    assert_eq!(
        api["result"]["server"]["info"]["http"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api["result"]["cluster"]["status"]["http"][0]["path"],
        "/cluster/_status"
    );
    assert!(api["result"]["auth"]["login"]["http"].is_array());

    let mut res = Client::default()
        .get(url(&node, "/_openapi"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let doc: Value = res.json().limit(1 << 20).await.unwrap();
    assert_eq!(doc["openapi"], "3.0.1");
    assert_eq!(doc["paths"]["/_now"]["get"]["summary"], "Action: now.");
    assert_eq!(
        doc["paths"]["/users/{_id}"]["get"]["parameters"],
        json!([{"in": "path", "name": "_id", "required": true, "schema": {"type": "string"}}])
    );
    let mut res = Client::default()
        .get(url(&node, "/_openapi?format=yaml&scope=app"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/yaml"
    );
    let yaml = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        yaml.contains("\"openapi\": \"3.0.1\"") && yaml.contains("\"paths\": {}"),
        "{yaml}"
    );
    let (status, _, bad) = get(&node, "/_openapi?format=xml").await;
    assert_eq!(status, 400);
    assert_eq!(
        bad["error"]["message"],
        "Invalid argument \"format\". Expected: \"json\" or \"yaml\""
    );

    let (_, _, metrics) = get(&node, "/_metrics").await;
    assert_eq!(
        metrics["result"]["network"]["connections"],
        json!({"http": 1})
    );
    let (_, _, caps) = get(&node, "/_capabilities").await;
    assert_eq!(caps["result"]["limits"]["concurrentRequests"], 100);
    assert_eq!(caps["result"]["version"], "2.56.0");
}

#[actix_rt::test]
async fn disabled_http_serves_only_liveness_and_upgrades() {
    let node = start_node(|s| s.server.protocols.http.enabled = false).await;
    let (status, _, body) = get(&node, "/_now").await;
    assert_eq!(status, 404);
    assert_eq!(body["id"], "network.http.url_not_found", "bare error");
    assert_eq!(get(&node, "/_healthcheck").await.0, 200);
    assert_eq!(get(&node, "/_ready").await.0, 200);
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn draining_node_refuses_new_work() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    node.node.start_draining();
    let res = ws
        .request(json!({"controller":"server","action":"now"}))
        .await;
    assert_eq!(res["error"]["id"], "api.process.shutting_down");
    assert_eq!(res["status"], 503);
    let mut res = Client::default()
        .get(url(&node, "/_now"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers().get("connection").unwrap(), "close");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["message"],
        "Rejected: this node is shutting down."
    );
    assert_eq!(get(&node, "/_ready").await.0, 503);
    assert_eq!(get(&node, "/_healthcheck").await.0, 200);
    let refused = Ws::connect_with(node.addr, WsOptions::default())
        .await
        .err()
        .unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("\"id\":\"api.process.shutting_down\""),
        "{refused}"
    );
}

/// `server:getStats`, `getLastStats`, `getAllStats`: snapshots of the node's request
/// counters every `stats.statsInterval` seconds, per protocol.
#[actix_rt::test]
async fn statistics_snapshots() {
    let node = start_node(|s| s.stats.stats_interval = 1).await;
    let before = kuzzle_rt::protocol::now_ms();
    // Before any snapshot: this node's counts so far.
    let (_, _, last) = get(&node, "/_getLastStats").await;
    assert!(
        last["result"]["completedRequests"]["http"].is_u64(),
        "{last}"
    );
    let mut ws = Ws::connect(node.addr).await;
    for _ in 0..3 {
        let res = ws
            .request(json!({"controller":"server","action":"now"}))
            .await;
        assert_eq!(res["status"], 200);
    }
    let res = ws
        .request(json!({"controller":"server","action":"nope"}))
        .await;
    assert_eq!(res["status"], 404);
    // Polled until a snapshot holds the WebSocket requests above.
    let mut found = Value::Null;
    for _ in 0..100 {
        let (_, _, all) = get(&node, "/_getAllStats").await;
        let hits = all["result"]["hits"].as_array().unwrap().clone();
        assert_eq!(all["result"]["total"], hits.len());
        let websocket: u64 = hits
            .iter()
            .map(|h| h["completedRequests"]["websocket"].as_u64().unwrap())
            .sum();
        if websocket >= 3 {
            found = all["result"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let hits = found["hits"].as_array().expect("a snapshot within 20 s");
    let sum = |path: [&str; 2]| -> u64 {
        hits.iter()
            .map(|h| h[path[0]][path[1]].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum(["completedRequests", "websocket"]), 3, "{found}");
    assert_eq!(sum(["failedRequests", "websocket"]), 1, "{found}");
    let last_hit = hits.last().unwrap();
    assert!(last_hit["timestamp"].as_u64().unwrap() >= before);
    assert!(last_hit.get("expiresAt").is_none());
    for key in ["connections", "ongoingRequests"] {
        assert!(last_hit[key].is_object(), "{last_hit}");
    }

    let (_, _, range) = get(&node, &format!("/_getStats?startTime={before}")).await;
    assert!(range["result"]["total"].as_u64().unwrap() >= 1, "{range}");
    let (_, _, future) = get(&node, "/_getStats?startTime=2999-01-01T00:00:00Z").await;
    assert_eq!(future["result"]["total"], 0, "{future}");
    let (_, _, past) = get(&node, &format!("/_getStats?stopTime={}", before - 1)).await;
    assert_eq!(past["result"]["total"], 0, "{past}");
    let (status, _, bad) = get(&node, "/_getStats?startTime=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["id"], "api.assert.invalid_argument");
    let (_, _, last) = get(&node, "/_getLastStats").await;
    assert!(
        last["result"]["timestamp"].as_u64().unwrap() >= before,
        "{last}"
    );

    let disabled = start_node(|s| s.stats.enabled = false).await;
    let (status, _, res) = get(&disabled, "/_getAllStats").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res["error"]["id"], "services.statistics.not_available");
    assert_eq!(
        res["error"]["message"],
        "Statistics module is not available."
    );
}
