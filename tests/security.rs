//! The security controller: users, roles and profiles, with their documented errors.

mod common;

use common::*;
use serde_json::{Value, json};

fn call(jwt: &str, action: &str, extra: Value) -> Value {
    let mut request = json!({"controller":"security","action":action,"jwt":jwt});
    if let (Value::Object(r), Value::Object(e)) = (&mut request, extra) {
        r.extend(e);
    }
    request
}

#[actix_rt::test]
async fn users_lifecycle_and_errors_embedded() {
    users_lifecycle_and_errors(&start_node(|_| {}).await).await;
}

#[actix_rt::test]
async fn users_lifecycle_and_errors_redis() {
    let redis = RedisServer::start();
    users_lifecycle_and_errors(&start_node(|s| s.services.storage = redis.settings()).await).await;
}

async fn users_lifecycle_and_errors(node: &TestNode) {
    let (mut ws, jwt) = admin_session(node).await;
    let res = ws
        .request(call(&jwt, "createUser", json!({"_id":"bob","body":{"content":{"profileIds":["default"],"name":"Bob","prefs":{"a":1,"b":2}},
            "credentials":{"local":{"username":"bob","password":"pw"}}}})))
        .await;
    assert_eq!(res["result"]["_id"], "bob", "{res}");
    assert_eq!(res["result"]["_source"]["_kuzzle_info"]["author"], "root");

    let errors = [
        (
            call(
                &jwt,
                "createUser",
                json!({"_id":"bob","body":{"content":{"profileIds":["default"]}}}),
            ),
            "User bob already exists.",
        ),
        (
            call(
                &jwt,
                "createUser",
                json!({"_id":"-1","body":{"content":{"profileIds":["default"]}}}),
            ),
            "User -1 already exists.",
        ),
        (
            call(&jwt, "createUser", json!({"body":{"content":{}}})),
            "Missing argument \"body.content.profileIds\".",
        ),
        (
            call(
                &jwt,
                "createUser",
                json!({"body":{"content":{"profileIds":[]}}}),
            ),
            "The argument \"profileIds\" is empty.",
        ),
        (
            call(
                &jwt,
                "createUser",
                json!({"body":{"content":{"profileIds":["ghost"]}}}),
            ),
            "Profile \"ghost\" not found.",
        ),
        (
            call(
                &jwt,
                "createUser",
                json!({"body":{"content":{"profileIds":["default"]},"credentials":{"oauth":{}}}}),
            ),
            "Unknown authentication strategy \"oauth\"",
        ),
        (
            call(
                &jwt,
                "createUser",
                json!({"body":{"content":{"profileIds":["default"]},"credentials":{"local":{"username":"bob","password":"x"}}}}),
            ),
            "Login \"bob\" is already used.",
        ),
        (
            call(
                &jwt,
                "createRestrictedUser",
                json!({"body":{"content":{"profileIds":["admin"]}}}),
            ),
            "The argument \"body.content.profileIds\" is not allowed by this API action.",
        ),
        (
            call(&jwt, "getUser", json!({"_id":"nobody"})),
            "User \"nobody\" not found.",
        ),
        (
            call(&jwt, "deleteUser", json!({"_id":"anonymous"})),
            "User \"anonymous\" not found.",
        ),
    ];
    for (request, message) in errors {
        let res = ws.request(request.clone()).await;
        assert_eq!(res["error"]["message"], message, "{request}");
    }

    let res = ws
        .request(call(
            &jwt,
            "createRestrictedUser",
            json!({"body":{"content":{"name":"R"}}}),
        ))
        .await;
    assert_eq!(res["result"]["_source"]["profileIds"], json!(["default"]));
    assert!(res["result"]["_id"].as_str().unwrap().starts_with("kuid-"));

    let res = ws
        .request(call(
            &jwt,
            "updateUser",
            json!({"_id":"bob","body":{"prefs":{"b":3},"tags":["x"]}}),
        ))
        .await;
    assert_eq!(
        res["result"]["_source"]["prefs"],
        json!({"a":1,"b":3}),
        "objects deep-merge"
    );
    assert_eq!(res["result"]["_source"]["_kuzzle_info"]["updater"], "root");
    let res = ws
        .request(call(
            &jwt,
            "replaceUser",
            json!({"_id":"bob","body":{"name":"Robert"}}),
        ))
        .await;
    assert_eq!(
        res["error"]["message"],
        "Missing argument \"body.profileIds\"."
    );
    let res = ws
        .request(call(
            &jwt,
            "replaceUser",
            json!({"_id":"bob","body":{"profileIds":["default"],"name":"Robert"}}),
        ))
        .await;
    assert!(res["result"]["_source"].get("prefs").is_none(), "replaced");
    assert_eq!(
        ws.request(call(&jwt, "getUser", json!({"_id":"-1"}))).await["result"]["_id"],
        "-1"
    );

    // Bob logs in; deleting him revokes his token on his socket.
    let mut bob = Ws::connect(node.addr).await;
    let login = bob
        .request(json!({"controller":"auth","action":"login","strategy":"local","body":{"username":"bob","password":"pw"}}))
        .await;
    let bob_jwt = login["result"]["jwt"].as_str().unwrap().to_owned();
    let res = ws
        .request(call(&jwt, "deleteUser", json!({"_id":"bob"})))
        .await;
    assert_eq!(res["result"], json!({"_id":"bob"}));
    let pushed = bob.next_json().await;
    assert_eq!(pushed["type"], "TokenExpired");
    let res = bob
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": bob_jwt}}))
        .await;
    assert_eq!(res["result"]["valid"], false);
    let mut fresh = Ws::connect(node.addr).await;
    let res = fresh
        .request(json!({"controller":"auth","action":"login","strategy":"local","body":{"username":"bob","password":"pw"}}))
        .await;
    assert_eq!(
        res["error"]["message"], "wrong username or password",
        "credentials are gone too"
    );
}

#[actix_rt::test]
async fn roles_and_profiles_change_rights_at_once_embedded() {
    roles_and_profiles_change_rights_at_once(&start_node(|_| {}).await).await;
}

#[actix_rt::test]
async fn roles_and_profiles_change_rights_at_once_redis() {
    let redis = RedisServer::start();
    roles_and_profiles_change_rights_at_once(
        &start_node(|s| s.services.storage = redis.settings()).await,
    )
    .await;
}

async fn roles_and_profiles_change_rights_at_once(node: &TestNode) {
    let (mut ws, jwt) = admin_session(node).await;
    let role = json!({"controllers":{"realtime":{"actions":{"publish":true}},"auth":{"actions":{"login":true,"checkToken":true}}}});
    let res = ws
        .request(call(
            &jwt,
            "createOrReplaceRole",
            json!({"_id":"publisher","body":role}),
        ))
        .await;
    assert_eq!(
        res["result"]["_source"]["controllers"]["realtime"],
        json!({"actions":{"publish":true}})
    );
    let res = ws
        .request(call(
            &jwt,
            "createOrReplaceRole",
            json!({"_id":"bad","body":{"controllers":{"auth":{"actions":{"fly":true}}}}}),
        ))
        .await;
    assert_eq!(res["error"]["id"], "security.role.unknown_action");
    let res = ws
        .request(call(&jwt, "createOrReplaceProfile", json!({"_id":"pub","body":{"policies":[{"roleId":"publisher","restrictedTo":[{"index":"news"}]}],"rateLimit":5}})))
        .await;
    assert_eq!(
        res["result"]["_source"]["policies"],
        json!([{"roleId":"publisher","restrictedTo":[{"index":"news"}]}])
    );
    assert_eq!(res["result"]["_source"]["rateLimit"], 5);
    let res = ws
        .request(call(
            &jwt,
            "createOrReplaceProfile",
            json!({"_id":"x","body":{"policies":[{"roleId":"ghost"}]}}),
        ))
        .await;
    assert_eq!(res["error"]["message"], "Role \"ghost\" not found.");

    ws.request(call(&jwt, "createUser", json!({"_id":"pat","body":{"content":{"profileIds":["pub"]},"credentials":{"local":{"username":"pat","password":"pw"}}}})))
        .await;
    let mut pat = Ws::connect(node.addr).await;
    let login = pat.request(json!({"controller":"auth","action":"login","strategy":"local","body":{"username":"pat","password":"pw"}})).await;
    let pat_jwt = login["result"]["jwt"].as_str().unwrap().to_owned();
    let publish = |index: &str| json!({"controller":"realtime","action":"publish","index":index,"collection":"c","body":{},"jwt":pat_jwt});
    assert_eq!(pat.request(publish("news")).await["status"], 200);
    let res = pat.request(publish("other")).await;
    assert_eq!(
        res["error"]["message"],
        "Insufficient permissions to execute the action \"realtime:publish\" (User \"pat\")."
    );
    assert_eq!(res["status"], 403);

    // A role change applies to the next request.
    let narrower = json!({"controllers":{"auth":{"actions":{"login":true}}}});
    ws.request(call(
        &jwt,
        "createOrReplaceRole",
        json!({"_id":"publisher","body":narrower}),
    ))
    .await;
    assert_eq!(pat.request(publish("news")).await["status"], 403);

    assert_eq!(
        ws.request(call(&jwt, "deleteRole", json!({"_id":"publisher"})))
            .await["error"]["id"],
        "security.role.in_use"
    );
    assert_eq!(
        ws.request(call(&jwt, "deleteRole", json!({"_id":"admin"})))
            .await["error"]["id"],
        "security.role.cannot_delete"
    );
    assert_eq!(
        ws.request(call(&jwt, "deleteProfile", json!({"_id":"pub"})))
            .await["error"]["message"],
        "The profile \"pub\" is still used and cannot be deleted."
    );
    let res = ws
        .request(call(
            &jwt,
            "deleteProfile",
            json!({"_id":"pub","onAssignedUsers":"remove"}),
        ))
        .await;
    assert_eq!(res["result"], json!({"_id":"pub"}));
    assert_eq!(
        ws.request(call(&jwt, "getUser", json!({"_id":"pat"})))
            .await["result"]["_source"]["profileIds"],
        json!(["anonymous"])
    );
    assert_eq!(
        ws.request(call(&jwt, "deleteRole", json!({"_id":"publisher"})))
            .await["result"],
        json!({"_id":"publisher"})
    );
    assert_eq!(
        ws.request(call(&jwt, "getRole", json!({"_id":"publisher"})))
            .await["error"]["id"],
        "security.role.not_found"
    );
    assert_eq!(
        ws.request(call(&jwt, "getProfile", json!({"_id":"pub"})))
            .await["error"]["id"],
        "security.profile.not_found"
    );
}

#[actix_rt::test]
async fn search_users() {
    let node = start_node(|s| s.limits.documents_fetch_count = 50).await;
    let (mut ws, jwt) = admin_session(&node).await;
    for (id, team, tags) in [
        ("u1", "red", json!(["a", "b"])),
        ("u2", "blue", json!(["b"])),
        ("u3", "red", json!([])),
    ] {
        let res = ws
            .request(call(&jwt, "createUser", json!({"_id": id, "body": {"content": {"profileIds": ["default"], "team": team, "tags": tags}}})))
            .await;
        assert_eq!(res["status"], 200, "{res}");
    }
    let ids = |res: &Value| -> Vec<String> {
        res["result"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let search = |query: Value, extra: Value| {
        let mut r = call(&jwt, "searchUsers", json!({"body": {"query": query}}));
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    let all = ws.request(search(json!({}), json!({}))).await;
    assert_eq!(ids(&all), ["root", "u1", "u2", "u3"], "sorted by _id");
    assert_eq!(all["result"]["total"], 4);
    assert_eq!(
        ids(&ws
            .request(search(json!({"term": {"team": "red"}}), json!({})))
            .await),
        ["u1", "u3"]
    );
    assert_eq!(
        ids(&ws
            .request(search(json!({"term": {"tags": "b"}}), json!({})))
            .await),
        ["u1", "u2"],
        "array fields"
    );
    assert_eq!(
        ids(&ws
            .request(search(
                json!({"terms": {"team": ["blue", "green"]}}),
                json!({})
            ))
            .await),
        ["u2"]
    );
    assert_eq!(
        ids(&ws
            .request(search(
                json!({"ids": {"values": ["u3", "nobody"]}}),
                json!({})
            ))
            .await),
        ["u3"]
    );
    let bool_query = json!({"bool": {"must": [{"term": {"team": "red"}}], "must_not": [{"term": {"tags": "a"}}]}});
    assert_eq!(
        ids(&ws.request(search(bool_query, json!({}))).await),
        ["u3"]
    );
    let page = ws
        .request(search(
            json!({"match_all": {}}),
            json!({"from": 1, "size": 2}),
        ))
        .await;
    assert_eq!(
        (ids(&page), page["result"]["total"].as_u64()),
        (vec!["u1".to_owned(), "u2".to_owned()], Some(4))
    );
    let koncorde = ws
        .request(search(
            json!({"and": [{"equals": {"team": "red"}}, {"exists": "tags[\"a\"]"}]}),
            json!({"lang": "koncorde"}),
        ))
        .await;
    assert_eq!(ids(&koncorde), ["u1"]);
    let res = ws
        .request(search(json!({"wildcard": {"team": "r*"}}), json!({})))
        .await;
    assert_eq!(
        res["error"]["message"],
        "Invalid argument \"body.query\". Expected: match_all, match, term, terms, ids or bool"
    );
    let res = ws.request(search(json!({}), json!({"lang": "sql"}))).await;
    assert_eq!(res["error"]["id"], "api.assert.invalid_argument");
    let res = ws.request(search(json!({}), json!({"size": 51}))).await;
    assert_eq!(res["error"]["id"], "services.storage.get_limit_exceeded");
}

/// `(request, expected error id ("" for an id-less error), expected message)` run on one
/// socket.
async fn assert_errors(ws: &mut Ws, cases: Vec<(Value, &str, &str)>) {
    for (request, id, message) in cases {
        let res = ws.request(request.clone()).await;
        let expected_id = if id.is_empty() {
            Value::Null
        } else {
            json!(id)
        };
        assert_eq!(res["error"]["id"], expected_id, "{request} → {res}");
        assert_eq!(res["error"]["message"], message, "{request} → {res}");
    }
}

#[actix_rt::test]
async fn administration_errors_embedded() {
    administration_errors(&start_node(|s| s.security.api_key.max_ttl = 3_600_000).await).await;
}

#[actix_rt::test]
async fn administration_errors_redis() {
    let redis = RedisServer::start();
    administration_errors(
        &start_node(|s| {
            s.services.storage = redis.settings();
            s.security.api_key.max_ttl = 3_600_000;
        })
        .await,
    )
    .await;
}

/// Issue 21's actions refuse bad input with Kuzzle's documented errors.
async fn administration_errors(node: &TestNode) {
    let (mut ws, jwt) = admin_session(node).await;
    let res = ws
        .request(call(
            &jwt,
            "createUser",
            json!({"_id":"u1","body":{"content":{"profileIds":["default"]},
            "credentials":{"local":{"username":"u1","password":"p1"}}}}),
        ))
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let auth = |jwt: &str, action: &str, extra: Value| {
        let mut request = json!({"controller":"auth","action":action,"jwt":jwt});
        if let (Value::Object(r), Value::Object(e)) = (&mut request, extra) {
            r.extend(e);
        }
        request
    };
    let too_many: Vec<String> = (0..201).map(|i| format!("id{i}")).collect();
    assert_errors(
        &mut ws,
        vec![
            (call(&jwt, "createRole", json!({"_id":"r"})), "api.assert.body_required", "The request must specify a body."),
            (call(&jwt, "mGetRoles", json!({"body":{}})), "api.assert.missing_argument", "Missing argument \"body.ids\"."),
            (call(&jwt, "mGetProfiles", json!({"body":{"ids":[]}})), "api.assert.empty_argument", "The argument \"body.ids\" is empty."),
            (call(&jwt, "mGetRoles", json!({"body":{"ids":"admin"}})), "api.assert.invalid_type", "Wrong type for argument \"body.ids\" (expected: array)"),
            (call(&jwt, "mDeleteUsers", json!({"body":{"ids":too_many}})), "services.storage.write_limit_exceeded", "The number of documents edited by this request exceeds the configured server limit."),
            (call(&jwt, "checkRights", json!({"body":{"controller":"server","action":"now"}})), "api.assert.missing_argument", "Missing argument \"userId\"."),
            (call(&jwt, "checkRights", json!({"userId":"u1","body":{"controller":"server"}})), "api.assert.missing_argument", "Missing argument \"body.action\"."),
            (call(&jwt, "updateUserMapping", json!({"body":{"properties":[]}})), "api.assert.invalid_type", "Wrong type for argument \"body.properties\" (expected: object)"),
            (call(&jwt, "refresh", json!({})), "api.assert.missing_argument", "Missing argument \"collection\"."),
            (call(&jwt, "searchUsers", json!({"scroll":"2m","body":{}})), "services.storage.scroll_duration_too_great", "Scroll duration \"2m\" is too great."),
            (call(&jwt, "scrollUsers", json!({"scrollId":"nope"})), "services.storage.unknown_scroll_id", "Non-existing or expired scroll identifier."),
            (call(&jwt, "scrollUsers", json!({})), "api.assert.missing_argument", "Missing argument \"scrollId\"."),
            (call(&jwt, "upsertUser", json!({"_id":"u9","body":{"content":{"profileIds":["ghost"]}}})), "security.profile.not_found", "Profile \"ghost\" not found."),
            (call(&jwt, "createCredentials", json!({"strategy":"local","_id":"u1","body":{"username":"x"}})), "", "Password required."),
            (call(&jwt, "getCredentials", json!({"strategy":"oauth","_id":"u1"})), "security.credentials.unknown_strategy", "Unknown authentication strategy \"oauth\""),
            (call(&jwt, "createApiKey", json!({"userId":"u1","body":{}})), "api.assert.missing_argument", "Missing argument \"body.description\"."),
            (call(&jwt, "createApiKey", json!({"body":{"description":"d"}})), "api.assert.missing_argument", "Missing argument \"userId\"."),
            (call(&jwt, "deleteApiKey", json!({"userId":"u1","_id":"nope"})), "services.storage.not_found", "Document \"nope\" not found in \"%kuzzle\":\"api-keys\"."),
            (auth(&jwt, "createApiKey", json!({"body":{"description":"d"}})), "security.token.ttl_exceeded", "expiresIn value exceeds maximum allowed value"),
            (auth(&jwt, "createApiKey", json!({"expiresIn":"2h","body":{"description":"d"}})), "security.token.ttl_exceeded", "expiresIn value exceeds maximum allowed value"),
            (auth(&jwt, "createToken", json!({"singleUse":true})), "api.assert.invalid_argument", "Invalid argument \"singleUse\". Expected: false (single-use tokens are not supported)"),
            // Refused at step 12 (the standard anonymous role), with its surplus prop.
            (auth("", "createToken", json!({})), "security.rights.unauthorized", "Unauthorized: authentication required to execute the action \"auth:createToken\". -1"),
            (auth(&jwt, "checkRights", json!({"body":{"action":"now"}})), "api.assert.missing_argument", "Missing argument \"body.controller\"."),
        ],
    )
    .await;
    serves(node, &jwt).await;

    // Within security.apiKey.maxTTL for auth:createApiKey; security:createApiKey bypasses it.
    let res = ws
        .request(auth(
            &jwt,
            "createApiKey",
            json!({"expiresIn":"30m","body":{"description":"d"}}),
        ))
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let res = ws
        .request(call(
            &jwt,
            "createApiKey",
            json!({"userId":"u1","expiresIn":-1,"body":{"description":"d"}}),
        ))
        .await;
    assert_eq!(res["result"]["_source"]["expiresAt"], -1, "{res}");
    // A search cannot see a key's token (it is shown once, at creation).
    let found = ws
        .request(call(
            &jwt,
            "searchApiKeys",
            json!({"userId":"u1","lang":"koncorde","body":{"exists":"token"}}),
        ))
        .await;
    assert_eq!(found["result"]["total"], 0, "{found}");
    let found = ws
        .request(call(
            &jwt,
            "searchApiKeys",
            json!({"userId":"u1","lang":"koncorde","body":{"exists":"fingerprint"}}),
        ))
        .await;
    assert_eq!(found["result"]["total"], 1, "{found}");
    // Another user's key is not the caller's to delete.
    let key = res["result"]["_id"].as_str().unwrap().to_owned();
    let res = ws
        .request(auth(&jwt, "deleteApiKey", json!({"_id": key})))
        .await;
    assert_eq!(res["error"]["id"], "services.storage.not_found", "{res}");

    // A scroll of users is not one of profiles, and a cursor expires.
    let res = ws
        .request(call(
            &jwt,
            "searchUsers",
            json!({"scroll":"300ms","size":1,"body":{}}),
        ))
        .await;
    let scroll_id = res["result"]["scrollId"].as_str().unwrap().to_owned();
    let res = ws
        .request(call(&jwt, "scrollProfiles", json!({"scrollId": scroll_id})))
        .await;
    assert_eq!(
        res["error"]["id"], "services.storage.unknown_scroll_id",
        "{res}"
    );
    let mut expired = false;
    for _ in 0..100 {
        let res = ws
            .request(call(
                &jwt,
                "scrollUsers",
                json!({"scrollId": scroll_id, "scroll": "300ms"}),
            ))
            .await;
        if res["error"]["id"] == "services.storage.unknown_scroll_id" {
            expired = true;
            break;
        }
        assert_eq!(res["status"], 200, "{res}");
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    assert!(expired, "the cursor expires once unused for its duration");
    serves(node, &jwt).await;
}

/// The node still answers a fresh socket (the standard rights refuse `server:now` to
/// anonymous callers: the administrator asks).
async fn serves(node: &TestNode, jwt: &str) {
    let mut other = Ws::connect(node.addr).await;
    let res = other
        .request(json!({"controller":"server","action":"now","jwt":jwt}))
        .await;
    assert!(res["result"]["now"].as_u64().is_some(), "{res}");
}
