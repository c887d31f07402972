//! Cookie authentication (PROTOCOL.md §6) over HTTP and through the WebSocket handshake.

mod common;

use awc::Client;
use common::*;
use serde_json::{Value, json};

const CREDENTIALS: &str = r#"{"username":"ada","password":"correct horse"}"#;

async fn with_admin(node: &TestNode, reset: bool) {
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(
            json!({"controller":"security","action":"createFirstAdmin","_id":"ada","reset":reset,
            "body":{"credentials":{"local":{"username":"ada","password":"correct horse"}}}}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
}

/// POST with a JSON body; returns (status, Set-Cookie lines, body).
async fn post(
    node: &TestNode,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<String>, Value) {
    let mut request = Client::default()
        .post(url(node, path))
        .content_type("application/json");
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut res = request.send_body(body.to_owned()).await.unwrap();
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (
        res.status().as_u16(),
        cookies,
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn get(node: &TestNode, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = Client::default().get(url(node, path));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut res = request.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

fn token_of(set_cookie: &str) -> String {
    set_cookie
        .trim_start_matches("authToken=")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn login_sets_the_cookie_and_the_cookie_authenticates() {
    let node = start_node(|_| {}).await;
    with_admin(&node, true).await;
    let (status, cookies, body) = post(&node, "/_login/local?cookieAuth", CREDENTIALS, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["result"].get("jwt").is_none(),
        "jwt omitted in cookie mode"
    );
    assert_eq!(body["result"]["_id"], "ada");
    assert_eq!(cookies.len(), 1);
    let cookie = &cookies[0];
    assert!(cookie.starts_with("authToken=kauth-"), "{cookie}");
    assert!(cookie.ends_with("; HttpOnly; SameSite=Strict"), "{cookie}");
    assert!(
        cookie.contains("; Path=/; Expires=") && cookie.contains(" GMT;"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure") && !cookie.contains("Domain"),
        "{cookie}"
    );
    let token = token_of(cookie);
    let header = format!("authToken={token}");

    let (status, me) = get(&node, "/_me", &[("Cookie", &header)]).await;
    assert_eq!(
        (status, me["result"]["_id"].as_str()),
        (200, Some("ada")),
        "{me}"
    );
    // checkToken in cookie mode checks the cookie and ignores body.token.
    let (_, _, check) = post(
        &node,
        "/_checkToken?cookieAuth",
        r#"{"token":"garbage"}"#,
        &[("Cookie", &header)],
    )
    .await;
    assert_eq!(
        (
            check["result"]["valid"].as_bool(),
            check["result"]["kuid"].as_str()
        ),
        (Some(true), Some("ada"))
    );
    // A stale cookie does not block a new login.
    let (status, cookies, _) = post(
        &node,
        "/_login/local?cookieAuth",
        CREDENTIALS,
        &[("Cookie", "authToken=kauth-stale")],
    )
    .await;
    assert_eq!((status, cookies.len()), (200, 1));

    // Refresh through the cookie: a new cookie, no jwt.
    let (status, cookies, body) = post(
        &node,
        "/_refreshToken?cookieAuth",
        "",
        &[("Cookie", &header)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].get("jwt").is_none());
    let refreshed = token_of(&cookies[0]);
    assert_ne!(refreshed, token);

    // Logout clears the cookie and revokes the token.
    let fresh = format!("authToken={refreshed}");
    let (status, cookies, body) =
        post(&node, "/_logout?cookieAuth", "", &[("Cookie", &fresh)]).await;
    assert_eq!(
        (status, body["result"].clone()),
        (200, json!({"acknowledged": true}))
    );
    assert_eq!(
        cookies,
        ["authToken=null; Path=/; HttpOnly; SameSite=Strict"]
    );
    let (status, me) = get(&node, "/_me", &[("Cookie", &fresh)]).await;
    assert_eq!(
        (status, me["error"]["id"].as_str()),
        (401, Some("security.token.invalid"))
    );
    // Logout with a dead cookie, as anonymous without the right to log out: still cleared.
    let (status, cookies, _) = post(&node, "/_logout?cookieAuth", "", &[("Cookie", &fresh)]).await;
    assert_eq!((status, cookies.len()), (200, 1));
}

#[actix_rt::test]
async fn the_decision_matrix_on_the_wire() {
    let node = start_node(|_| {}).await;
    with_admin(&node, false).await;
    let (_, cookies, _) = post(&node, "/_login/local?cookieAuth", CREDENTIALS, &[]).await;
    let header = format!("authToken={}", token_of(&cookies[0]));
    let (status, body) = get(
        &node,
        "/_me",
        &[("Cookie", &header), ("Authorization", "Bearer kauth-x")],
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        body["error"]["message"],
        "Error verifying token: Both token and cookie are present, could not decide which one to use"
    );
    let (status, body) = get(&node, "/_me", &[("Cookie", "authToken=%FF%FE")]).await;
    assert_eq!(
        (status, body["error"]["id"].as_str()),
        (401, Some("security.cookie.invalid"))
    );

    let node = start_node(|s| s.http.cookie_authentication = false).await;
    let (status, body) = get(&node, "/_me?cookieAuth", &[]).await;
    assert_eq!(
        (status, body["error"]["id"].as_str()),
        (500, Some("security.cookie.unsupported"))
    );
    let (status, body) = get(&node, "/_me", &[("Cookie", "authToken=kauth-x")]).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (500, Some("Cookie authentication not supported."))
    );
    let res = Client::default()
        .get(url(&node, "/_now"))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}

#[actix_rt::test]
async fn the_websocket_handshake_cookie_authenticates_every_frame() {
    let node = start_node(|_| {}).await;
    with_admin(&node, true).await;
    let (_, cookies, _) = post(&node, "/_login/local?cookieAuth", CREDENTIALS, &[]).await;
    let header = format!("authToken={}", token_of(&cookies[0]));
    let options = WsOptions {
        headers: &[("Cookie", &header)],
        ..WsOptions::default()
    };
    let mut ws = Ws::connect_with(node.addr, options).await.unwrap();
    let check = ws
        .request(json!({"controller":"auth","action":"checkToken","cookieAuth":true}))
        .await;
    assert_eq!(
        (
            check["result"]["valid"].as_bool(),
            check["result"]["kuid"].as_str()
        ),
        (Some(true), Some("ada"))
    );
    for _ in 0..2 {
        let me = ws
            .request(json!({"controller":"auth","action":"getCurrentUser"}))
            .await;
        assert_eq!(me["result"]["_id"], "ada");
    }
    let res = ws
        .request(json!({"controller":"server","action":"metrics"}))
        .await;
    assert_eq!(res["status"], 200, "the admin's rights, not anonymous ones");
}

/// `_kuzzle_info.author` of a publish is the publisher's kuid (PROTOCOL.md §4.5), whichever
/// way it authenticated; "-1" when anonymous.
#[actix_rt::test]
async fn publish_notifications_name_the_publishing_user() {
    let node = start_node(|_| {}).await;
    with_admin(&node, false).await;
    let mut subscriber = Ws::connect(node.addr).await;
    let res = subscriber
        .request(json!({"controller":"realtime","action":"subscribe","index":"i","collection":"c","body":{}}))
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let author = |n: &Value| n["result"]["_source"]["_kuzzle_info"]["author"].clone();
    let next_document = async |ws: &mut Ws| loop {
        let n = ws.next_json().await;
        if n["type"] == "document" {
            return n;
        }
    };

    // A WebSocket with a jwt in the request.
    let (_, _, login) = post(&node, "/_login/local", CREDENTIALS, &[]).await;
    let jwt = login["result"]["jwt"].as_str().unwrap().to_owned();
    let mut publisher = Ws::connect(node.addr).await;
    let res = publisher
        .request(
            json!({"controller":"realtime","action":"publish","index":"i","collection":"c",
            "body":{"via":"websocket"},"jwt":jwt,"requestId":"p1"}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(author(&next_document(&mut subscriber).await), "ada");

    // HTTP with a bearer token.
    let bearer = format!("Bearer {jwt}");
    let (status, _, _) = post(
        &node,
        "/i/c/_publish",
        r#"{"via":"http"}"#,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(author(&next_document(&mut subscriber).await), "ada");

    // A WebSocket authenticated by the cookie of its handshake.
    let (_, cookies, _) = post(&node, "/_login/local?cookieAuth", CREDENTIALS, &[]).await;
    let header = format!("authToken={}", token_of(&cookies[0]));
    let options = WsOptions {
        headers: &[("Cookie", &header)],
        ..WsOptions::default()
    };
    let mut cookie_socket = Ws::connect_with(node.addr, options).await.unwrap();
    let res = cookie_socket
        .request(
            json!({"controller":"realtime","action":"publish","index":"i","collection":"c",
            "body":{"via":"cookie"},"requestId":"p2"}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(author(&next_document(&mut subscriber).await), "ada");

    // Anonymous.
    let (status, _, _) = post(&node, "/i/c/_publish", r#"{"via":"nobody"}"#, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(author(&next_document(&mut subscriber).await), "-1");
}

/// Issue 22 (PROTOCOL.md §6.4): credentials are never honoured for an origin allowed only
/// through `*`: no `Access-Control-Allow-Credentials`, its cookie ignored (the request runs
/// as anonymous, never row 2's error), `cookieAuth` refused; a listed origin, the node's own
/// and a request without `Origin` keep cookie authentication.
#[actix_rt::test]
async fn a_wildcard_origin_never_carries_credentials() {
    let node = start_node(|s| {
        s.http.access_control_allow_origin = vec!["*".into(), "https://app.example".into()];
    })
    .await;
    with_admin(&node, false).await;
    let (_, cookies, _) = post(&node, "/_login/local?cookieAuth", CREDENTIALS, &[]).await;
    let header = format!("authToken={}", token_of(&cookies[0]));
    let own = format!("http://{}", node.addr);
    let credentials_header = |origin: &str| {
        let (origin, header) = (origin.to_owned(), header.clone());
        let url = url(&node, "/_me");
        async move {
            let mut res = Client::default()
                .get(url)
                .insert_header(("Origin", origin.as_str()))
                .insert_header(("Cookie", header.as_str()))
                .send()
                .await
                .unwrap();
            let allowed = res
                .headers()
                .get("access-control-allow-credentials")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = res.json().await.unwrap();
            (allowed, body["result"]["_id"].as_str().map(str::to_owned))
        }
    };
    for origin in ["https://app.example", own.as_str()] {
        assert_eq!(
            credentials_header(origin).await,
            (Some("true".to_owned()), Some("ada".to_owned())),
            "{origin}"
        );
    }
    assert_eq!(
        credentials_header("https://evil.example").await,
        (None, Some("-1".to_owned())),
        "the cookie ignored: anonymous"
    );
    let (status, cookies, body) = post(
        &node,
        "/_login/local?cookieAuth",
        CREDENTIALS,
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(
        (status, body["error"]["id"].as_str(), cookies.len()),
        (500, Some("security.cookie.unsupported"), 0),
        "{body}"
    );
    // Its bearer token still works: only what the browser sends by itself is ignored.
    let (_, _, login) = post(&node, "/_login/local", CREDENTIALS, &[]).await;
    let bearer = format!("Bearer {}", login["result"]["jwt"].as_str().unwrap());
    let (status, me) = get(
        &node,
        "/_me",
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", &bearer),
        ],
    )
    .await;
    assert_eq!((status, me["result"]["_id"].as_str()), (200, Some("ada")));

    // A WebSocket opened from that origin with the cookie: not authenticated by it; from the
    // listed origin, the same handshake authenticates.
    for (origin, user) in [
        ("https://evil.example", "-1"),
        ("https://app.example", "ada"),
    ] {
        let options = WsOptions {
            headers: &[("Cookie", &header), ("Origin", origin)],
            ..WsOptions::default()
        };
        let mut ws = Ws::connect_with(node.addr, options).await.unwrap();
        let me = ws
            .request(json!({"controller":"auth","action":"getCurrentUser"}))
            .await;
        assert_eq!(me["result"]["_id"], user, "{origin}: {me}");
        let check = ws
            .request(json!({"controller":"auth","action":"checkToken","cookieAuth":true}))
            .await;
        let refused = check["error"]["id"] == "security.cookie.unsupported";
        assert_eq!(refused, user == "-1", "{origin}: {check}");
    }
    // The node serves everyone else meanwhile.
    Ws::connect(node.addr).await.assert_now_ok().await;
}
