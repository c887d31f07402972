//! Users, logins and tokens through real sockets, on both store backends.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn first_admin(reset: bool) -> Value {
    json!({"controller":"security","action":"createFirstAdmin","_id":"ada","reset":reset,
        "body":{"content":{"name":"Ada"},"credentials":{"local":{"username":"ada","password":"correct horse"}}}})
}

fn login(username: &str, password: &str, extra: Value) -> Value {
    let mut request = json!({"controller":"auth","action":"login","strategy":"local","body":{"username":username,"password":password}});
    if let (Value::Object(r), Value::Object(e)) = (&mut request, extra) {
        r.extend(e);
    }
    request
}

async fn jwt_of(ws: &mut Ws, extra: Value) -> String {
    let res = ws.request(login("ada", "correct horse", extra)).await;
    assert_eq!(res["status"], 200, "{res}");
    res["result"]["jwt"].as_str().unwrap().to_owned()
}

/// createFirstAdmin, login, checkToken, getCurrentUser, logout, then the token is dead.
async fn the_whole_flow(node: &TestNode) {
    let mut ws = Ws::connect(node.addr).await;
    let res = ws.request(first_admin(false)).await;
    assert_eq!(res["result"]["_id"], "ada", "{res}");
    assert_eq!(res["result"]["_source"]["profileIds"], json!(["admin"]));
    assert_eq!(res["result"]["_source"]["name"], "Ada");
    assert_eq!(res["result"]["_source"]["_kuzzle_info"]["author"], "-1");
    assert!(
        res["result"]["_source"].get("credentials").is_none(),
        "credentials never show"
    );

    let res = ws
        .request(login("ada", "correct horse", json!({"expiresIn": "1h"})))
        .await;
    let result = &res["result"];
    assert_eq!(result["_id"], "ada");
    assert_eq!(result["ttl"], 3_600_000);
    let jwt = result["jwt"].as_str().unwrap().to_owned();
    assert!(jwt.starts_with("kauth-"));
    assert!(result["expiresAt"].as_u64().unwrap() > 1_700_000_000_000);

    let res = ws
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": jwt}}))
        .await;
    assert_eq!(
        (
            res["result"]["valid"].as_bool(),
            res["result"]["kuid"].as_str()
        ),
        (Some(true), Some("ada"))
    );
    let res = ws
        .request(json!({"controller":"auth","action":"getCurrentUser","jwt": jwt}))
        .await;
    assert_eq!(res["result"]["_id"], "ada");
    assert_eq!(res["result"]["strategies"], json!(["local"]));
    assert_eq!(res["result"]["_source"]["name"], "Ada");

    let res = ws
        .request(json!({"controller":"auth","action":"logout","jwt": jwt}))
        .await;
    assert_eq!(res["result"], json!({"acknowledged": true}));
    let res = ws
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": jwt}}))
        .await;
    assert_eq!(
        res["result"],
        json!({"state": "Invalid token.", "valid": false})
    );
    let res = ws
        .request(json!({"controller":"server","action":"now","jwt": jwt}))
        .await;
    assert_eq!(res["error"]["id"], "security.token.invalid");
    assert_eq!(res["status"], 401);
}

#[actix_rt::test]
async fn flow_on_the_embedded_store() {
    let node = start_node(|_| {}).await;
    the_whole_flow(&node).await;
}

#[actix_rt::test]
async fn flow_on_redis_and_tokens_valid_on_another_node() {
    let redis = RedisServer::start();
    let a = start_node(|s| s.services.storage = redis.settings()).await;
    the_whole_flow(&a).await;
    let b = start_node(|s| s.services.storage = redis.settings()).await;
    let jwt = jwt_of(&mut Ws::connect(a.addr).await, json!({})).await;
    let mut on_b = Ws::connect(b.addr).await;
    let res = on_b
        .request(json!({"controller":"auth","action":"getCurrentUser","jwt": jwt}))
        .await;
    assert_eq!(
        res["result"]["_id"], "ada",
        "a token issued on one node is valid on the other"
    );
}

#[actix_rt::test]
async fn login_errors() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let cases = [
        (
            login("ada", "wrong", json!({})),
            "plugin.strategy.missing_user",
            "wrong username or password",
        ),
        (
            login("nobody", "correct horse", json!({})),
            "plugin.strategy.missing_user",
            "wrong username or password",
        ),
        (
            json!({"controller":"auth","action":"login","strategy":"local","body":{"username":"ada"}}),
            "plugin.strategy.missing_user",
            "Missing credentials",
        ),
        (
            login("ada", "correct horse", json!({"strategy":"oauth"})),
            "security.credentials.unknown_strategy",
            "Unknown authentication strategy \"oauth\"",
        ),
        (
            login("ada", "correct horse", json!({"expiresIn":"soon"})),
            "api.assert.invalid_argument",
            "Invalid argument \"expiresIn\". Expected: a number of milliseconds, or a parsable timespan string",
        ),
    ];
    for (request, id, message) in cases {
        // A fresh socket each time: logins are limited per connection.
        let mut ws = Ws::connect(node.addr).await;
        let res = ws.request(request.clone()).await;
        assert_eq!(
            (
                res["error"]["id"].as_str(),
                res["error"]["message"].as_str()
            ),
            (Some(id), Some(message)),
            "{request}"
        );
    }
    let node = start_node(|s| s.security.auth_token.max_ttl = Some(60_000)).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let res = ws
        .request(login("ada", "correct horse", json!({"expiresIn":"2m"})))
        .await;
    assert_eq!(res["error"]["id"], "security.token.ttl_exceeded");
}

#[actix_rt::test]
async fn expired_forged_and_alg_none_tokens() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let short = jwt_of(&mut ws, json!({"expiresIn": "1s"})).await;
    actix_rt::time::sleep(Duration::from_millis(2100)).await;
    let mut other = Ws::connect(node.addr).await;
    let res = other
        .request(json!({"controller":"server","action":"now","jwt": short}))
        .await;
    assert_eq!(
        (res["error"]["id"].as_str(), res["status"].as_u64()),
        (Some("security.token.expired"), Some(401))
    );
    let res = other
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": short}}))
        .await;
    assert_eq!(
        res["result"],
        json!({"state": "Token expired", "valid": false})
    );

    let good = jwt_of(&mut other, json!({})).await;
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload =
        base64_url(&json!({"_id": "ada", "iat": 1, "exp": 9_999_999_999u64}).to_string());
    for forged in [
        format!("{}.{}.{}", parts[0], forged_payload, parts[2]),
        format!(
            "kauth-{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            forged_payload
        ),
        "kauth-garbage".to_owned(),
        good.replace("kauth-", "kapikey-"),
    ] {
        let res = other
            .request(json!({"controller":"server","action":"now","jwt": forged}))
            .await;
        assert_eq!(res["error"]["id"], "security.token.invalid", "{forged}");
    }
    assert_serving(node.addr).await;
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[actix_rt::test]
async fn first_admin_rules_and_standard_rights() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(json!({"controller":"security","action":"createFirstAdmin","body":{"content":{"profileIds":["default"]}}}))
        .await;
    assert_eq!(
        res["error"]["message"],
        "The argument \"body.content.profileIds\" is not allowed by this API action."
    );
    let res = ws
        .request(json!({"controller":"security","action":"createFirstAdmin","body":{"credentials":{"local":{"password":"x"}}}}))
        .await;
    assert_eq!(
        res["error"],
        json!({"message": "Username required.", "status": 400})
    );
    assert_eq!(ws.request(first_admin(true)).await["status"], 200);
    // After the reset, anonymous may not even try again; the admin gets "already set".
    let res = ws.request(first_admin(false)).await;
    assert_eq!(res["error"]["id"], "security.rights.unauthorized");
    let admin = jwt_of(&mut ws, json!({})).await;
    let mut again = first_admin(false);
    again["jwt"] = json!(admin);
    let res = ws.request(again).await;
    assert_eq!(
        (res["error"]["id"].as_str(), res["status"].as_u64()),
        (Some("api.process.admin_exists"), Some(412))
    );
    let res = ws
        .request(json!({"controller":"server","action":"adminExists","jwt": admin}))
        .await;
    assert_eq!(res["result"], json!({"exists": true}));

    // The standard anonymous role: login and a few reads, nothing else.
    let res = ws
        .request(json!({"controller":"server","action":"metrics"}))
        .await;
    assert_eq!(res["error"]["id"], "security.rights.unauthorized");
    assert_eq!(
        res["error"]["message"],
        "Unauthorized: authentication required to execute the action \"server:metrics\". -1"
    );
    let res = ws
        .request(json!({"controller":"nope","action":"nothing"}))
        .await;
    assert_eq!(
        res["status"], 401,
        "rights come before the controller lookup"
    );
    let rights = ws
        .request(json!({"controller":"auth","action":"getMyRights"}))
        .await;
    assert!(rights["result"]["hits"].as_array().unwrap().contains(&json!({"action":"login","collection":"*","controller":"auth","index":"*","value":"allowed"})));
    let res = ws
        .request(json!({"controller":"server","action":"metrics","jwt": admin}))
        .await;
    assert_eq!(res["status"], 200, "the admin may");
    let res = ws
        .request(json!({"controller":"auth","action":"logout"}))
        .await;
    assert_eq!(
        res["error"]["id"], "security.rights.unauthorized",
        "anonymous may not log out under the standard rights"
    );
}

#[actix_rt::test]
async fn logins_per_second_per_connection() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let mut flood = Ws::connect(node.addr).await;
    // Four logins sent at once, before any answer: however long a login takes, they are
    // admitted within the same second or two, so at most two pass.
    for i in 0..4 {
        flood
            .send_json(&login(
                "ada",
                "wrong",
                json!({"requestId": format!("l{i}")}),
            ))
            .await;
    }
    let mut refused = 0;
    let mut answered = 0;
    while answered < 4 {
        let res = flood.next_json().await;
        if !res["requestId"]
            .as_str()
            .is_some_and(|id| id.starts_with('l'))
        {
            continue;
        }
        answered += 1;
        if res["error"]["id"] == "api.process.too_many_logins_requests" {
            assert_eq!(res["status"], 429);
            refused += 1;
        }
    }
    assert!(
        refused >= 2,
        "one login per second per connection: {refused} refused"
    );
    // Another connection is not affected.
    assert_eq!(
        ws.request(login("ada", "correct horse", json!({}))).await["status"],
        200
    );
}

#[actix_rt::test]
async fn logout_global_revokes_every_token() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let a = jwt_of(&mut Ws::connect(node.addr).await, json!({})).await;
    let b = jwt_of(&mut Ws::connect(node.addr).await, json!({})).await;
    let res = ws
        .request(json!({"controller":"auth","action":"logout","global":true,"jwt": a}))
        .await;
    assert_eq!(res["status"], 200);
    for token in [a, b] {
        let res = ws
            .request(json!({"controller":"auth","action":"checkToken","body":{"token": token}}))
            .await;
        assert_eq!(res["result"]["valid"], false);
    }
}

#[actix_rt::test]
async fn profile_rate_limit_applies_per_user() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(true)).await;
    // The standard anonymous profile allows 200 requests per second.
    for i in 0..260 {
        ws.send_json(
            &json!({"controller":"auth","action":"getCurrentUser","requestId": format!("r{i}")}),
        )
        .await;
    }
    let mut limited = 0;
    for _ in 0..260 {
        let res = ws.next_json().await;
        if res["error"]["id"] == "api.process.too_many_requests" {
            limited += 1;
        }
    }
    assert!(limited >= 60, "past 200 in one second: {limited} limited");
    // The admin profile (rateLimit 0) is unlimited.
    let jwt = jwt_of(&mut ws, json!({})).await;
    for i in 0..260 {
        ws.send_json(&json!({"controller":"auth","action":"getStrategies","jwt": jwt,"requestId": format!("a{i}")})).await;
    }
    for _ in 0..260 {
        assert_eq!(ws.next_json().await["status"], 200);
    }
}

const TOKEN_EXPIRED: &str = r#"{"status":200,"info":"This is an automated server notification","message":"Authentication Token Expired","type":"TokenExpired","node":"NODE","room":"kuzzle:notification:server"}"#;

async fn subscribe_with(ws: &mut Ws, jwt: Option<&str>, users: &str) -> String {
    let mut request = json!({"controller":"realtime","action":"subscribe","index":"i","collection":"c","body":{},"users":users});
    if let Some(jwt) = jwt {
        request["jwt"] = json!(jwt);
    }
    let res = ws.request(request).await;
    assert_eq!(res["status"], 200, "{res}");
    res["result"]["roomId"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn an_expiring_token_pushes_token_expired_and_drops_subscriptions() {
    let node = start_node(|_| {}).await;
    let mut setup = Ws::connect(node.addr).await;
    setup.request(first_admin(false)).await;
    let mut user = Ws::connect(node.addr).await;
    let jwt = jwt_of(&mut user, json!({"expiresIn": "2s"})).await;
    let room = subscribe_with(&mut user, Some(&jwt), "none").await;
    let mut watcher = Ws::connect(node.addr).await;
    subscribe_with(&mut watcher, None, "all").await;

    let pushed = user.next_frame().await;
    assert_eq!(
        pushed,
        Some(Frame::Text(TOKEN_EXPIRED.replace("NODE", &node.node.id)))
    );
    let out = watcher.next_json().await;
    assert_eq!(
        (out["user"].as_str(), out["result"]["count"].as_u64()),
        (Some("out"), Some(1))
    );
    let count = watcher
        .request(json!({"controller":"realtime","action":"count","body":{"roomId": room}}))
        .await;
    assert_eq!(
        count["result"]["count"], 1,
        "the expired user's subscription is gone"
    );
    user.assert_now_ok().await;
}

#[actix_rt::test]
async fn logout_revokes_other_sockets_of_the_token_but_not_the_caller() {
    let node = start_node(|_| {}).await;
    let mut setup = Ws::connect(node.addr).await;
    setup.request(first_admin(false)).await;
    let mut caller = Ws::connect(node.addr).await;
    let jwt = jwt_of(&mut caller, json!({})).await;
    let caller_room = subscribe_with(&mut caller, Some(&jwt), "none").await;
    let mut other = Ws::connect(node.addr).await;
    subscribe_with(&mut other, Some(&jwt), "none").await;

    let res = caller
        .request(json!({"controller":"auth","action":"logout","jwt": jwt}))
        .await;
    assert_eq!(res["status"], 200);
    assert_eq!(
        other.next_frame().await,
        Some(Frame::Text(TOKEN_EXPIRED.replace("NODE", &node.node.id)))
    );
    // The caller got its response only, and keeps its subscription.
    match caller.next_frame_within(Duration::from_millis(300)).await {
        Err(()) => {}
        Ok(frame) => panic!("the caller got {frame:?}"),
    }
    let count = setup
        .request(json!({"controller":"realtime","action":"count","body":{"roomId": caller_room}}))
        .await;
    assert_eq!(
        count["result"]["count"], 1,
        "only the caller remains in the room"
    );
}

#[actix_rt::test]
async fn without_realtime_notifications_nothing_is_pushed() {
    let node = start_node(|s| s.server.protocols.websocket.realtime_notifications = false).await;
    let mut setup = Ws::connect(node.addr).await;
    setup.request(first_admin(false)).await;
    let mut user = Ws::connect(node.addr).await;
    let jwt = jwt_of(&mut user, json!({"expiresIn": "1s"})).await;
    let room = subscribe_with(&mut user, Some(&jwt), "none").await;
    match user.next_frame_within(Duration::from_millis(1800)).await {
        Err(()) => {}
        Ok(frame) => panic!("nothing should arrive, got {frame:?}"),
    }
    let count = setup
        .request(json!({"controller":"realtime","action":"count","body":{"roomId": room}}))
        .await;
    assert_eq!(count["result"]["count"], 1, "subscriptions survive expiry");
    let res = user
        .request(json!({"controller":"server","action":"now","jwt": jwt}))
        .await;
    assert_eq!(
        res["error"]["id"], "security.token.expired",
        "but the token is still checked"
    );
}

#[actix_rt::test]
async fn refresh_token_moves_sockets_and_keeps_the_old_one_for_the_grace_period() {
    let node = start_node(|s| s.security.auth_token.grace_period = Some(1000)).await;
    let mut setup = Ws::connect(node.addr).await;
    setup.request(first_admin(false)).await;
    let mut ws = Ws::connect(node.addr).await;
    let old = jwt_of(&mut ws, json!({"expiresIn": "2s"})).await;
    let room = subscribe_with(&mut ws, Some(&old), "none").await;
    let res = ws
        .request(json!({"controller":"auth","action":"refreshToken","expiresIn":"1h","jwt": old}))
        .await;
    let new = res["result"]["jwt"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(res["result"]["ttl"], 3_600_000);
    // Another socket: a request carrying the old token would link this socket back to it.
    let mut elsewhere = Ws::connect(node.addr).await;
    let again = elsewhere
        .request(json!({"controller":"auth","action":"refreshToken","jwt": old}))
        .await;
    assert_eq!(
        again["error"]["id"], "security.token.invalid",
        "a refreshed token cannot be refreshed again"
    );
    let check = ws
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": old}}))
        .await;
    assert_eq!(
        check["result"]["valid"], true,
        "still valid during the grace period"
    );
    // Past the old token's expiry the socket, moved to the new token, gets nothing.
    match ws.next_frame_within(Duration::from_millis(2500)).await {
        Err(()) => {}
        Ok(frame) => panic!("the moved socket got {frame:?}"),
    }
    let check = ws
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": old}}))
        .await;
    assert_eq!(
        check["result"]["valid"], false,
        "gone after the grace period"
    );
    let count = ws
        .request(json!({"controller":"realtime","action":"count","body":{"roomId": room}}))
        .await;
    assert_eq!(
        count["result"]["count"], 1,
        "subscriptions survive the refresh"
    );
    let infinite = jwt_of(&mut Ws::connect(node.addr).await, json!({"expiresIn": -1})).await;
    let res = ws
        .request(json!({"controller":"auth","action":"refreshToken","jwt": infinite}))
        .await;
    assert_eq!(
        res["error"]["message"],
        "Token with infinite TTL cannot be refreshed."
    );
}

#[actix_rt::test]
async fn my_credentials_and_password_changes() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let jwt = jwt_of(&mut ws, json!({})).await;
    let other_socket_token = jwt_of(&mut Ws::connect(node.addr).await, json!({})).await;
    let auth = |action: &str, extra: Value| {
        let mut r = json!({"controller":"auth","action":action,"strategy":"local","jwt":jwt});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    assert_eq!(
        ws.request(auth("credentialsExist", json!({}))).await["result"],
        true
    );
    assert_eq!(
        ws.request(auth("getMyCredentials", json!({}))).await["result"],
        json!({"username":"ada","kuid":"ada"})
    );
    let res = ws
        .request(auth(
            "createMyCredentials",
            json!({"body":{"username":"x","password":"y"}}),
        ))
        .await;
    assert_eq!(
        res["error"],
        json!({"message":"A strategy already exists for user \"ada\".","status":412})
    );
    assert_eq!(
        ws.request(auth(
            "validateMyCredentials",
            json!({"body":{"username":"x"}})
        ))
        .await["error"]["message"],
        "Password required."
    );
    assert_eq!(
        ws.request(auth("updateMyCredentials", json!({"body":{}})))
            .await["error"]["message"],
        "Missing username or password."
    );
    let res = ws
        .request(auth(
            "updateMyCredentials",
            json!({"body":{"password":"new secret"}}),
        ))
        .await;
    assert_eq!(res["result"], json!({"username":"ada","kuid":"ada"}));
    // Every other token of the user is revoked; the calling one is kept.
    let check = ws
        .request(
            json!({"controller":"auth","action":"checkToken","body":{"token": other_socket_token}}),
        )
        .await;
    assert_eq!(check["result"]["valid"], false);
    let check = ws
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": jwt}}))
        .await;
    assert_eq!(check["result"]["valid"], true);
    let mut fresh = Ws::connect(node.addr).await;
    assert_eq!(
        fresh.request(login("ada", "new secret", json!({}))).await["status"],
        200
    );

    let res = ws.request(json!({"controller":"auth","action":"updateSelf","jwt":jwt,"body":{"profileIds":["default"]}})).await;
    assert_eq!(
        res["error"]["message"],
        "The argument \"body.profileIds\" is not allowed by this API action."
    );
    let res = ws
        .request(
            json!({"controller":"auth","action":"updateSelf","jwt":jwt,"body":{"nick":"ada99"}}),
        )
        .await;
    assert_eq!(res["result"]["_source"]["nick"], "ada99");
    assert_eq!(res["result"]["_source"]["profileIds"], json!(["admin"]));
    assert_eq!(
        ws.request(auth("deleteMyCredentials", json!({}))).await["result"],
        json!({"acknowledged": true})
    );
    assert_eq!(
        ws.request(auth("credentialsExist", json!({}))).await["result"],
        false
    );
    let res = ws
        .request(json!({"controller":"auth","action":"getMyCredentials","strategy":"local"}))
        .await;
    assert_eq!(
        res["error"]["message"],
        "Unauthorized: authentication required to execute the action \"auth:getMyCredentials\".",
        "requires a user"
    );
}

#[actix_rt::test]
async fn logging_in_again_on_a_linked_socket() {
    let node = start_node(|s| s.limits.logins_per_second = 10).await;
    let mut ws = Ws::connect(node.addr).await;
    ws.request(first_admin(false)).await;
    let infinite = jwt_of(&mut ws, json!({"expiresIn": -1})).await;
    let again = jwt_of(&mut ws, json!({"expiresIn": "1h"})).await;
    assert_eq!(
        again, infinite,
        "an infinite token linked to this socket is returned unchanged"
    );
    let mut other = Ws::connect(node.addr).await;
    let finite = jwt_of(&mut other, json!({"expiresIn": "1s"})).await;
    let renewed = jwt_of(&mut other, json!({"expiresIn": "1h"})).await;
    assert_ne!(renewed, finite, "a finite token is replaced");
    // The socket moved to the new token: the old one's expiry does not reach it.
    match other.next_frame_within(Duration::from_millis(2200)).await {
        Err(()) => {}
        Ok(frame) => panic!("the moved socket got {frame:?}"),
    }
}
