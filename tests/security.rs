//! The security controller: users, roles and profiles, with their documented errors.

mod common;

use common::*;
use serde_json::{Value, json};

/// A node with an administrator; returns the admin's socket and token.
async fn admin_session(node: &TestNode) -> (Ws, String) {
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(
            json!({"controller":"security","action":"createFirstAdmin","_id":"root","reset":true,
            "body":{"credentials":{"local":{"username":"root","password":"toor"}}}}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let res = ws
        .request(json!({"controller":"auth","action":"login","strategy":"local","body":{"username":"root","password":"toor"}}))
        .await;
    (ws, res["result"]["jwt"].as_str().unwrap().to_owned())
}

fn call(jwt: &str, action: &str, extra: Value) -> Value {
    let mut request = json!({"controller":"security","action":action,"jwt":jwt});
    if let (Value::Object(r), Value::Object(e)) = (&mut request, extra) {
        r.extend(e);
    }
    request
}

#[actix_rt::test]
async fn users_lifecycle_and_errors() {
    let node = start_node(|_| {}).await;
    let (mut ws, jwt) = admin_session(&node).await;
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
async fn roles_and_profiles_change_rights_at_once() {
    let node = start_node(|_| {}).await;
    let (mut ws, jwt) = admin_session(&node).await;
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
