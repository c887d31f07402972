//! A node and its store: bootstrap, shared secret, health, start failures.

mod common;

use awc::Client;
use common::*;
use kuzzle_rt::storage::Kind;
use serde_json::{Value, json};

#[actix_rt::test]
async fn a_new_store_gets_the_default_roles_and_profiles() {
    let node = start_node(|_| {}).await;
    let store = &node.node.store;
    for role in ["admin", "default", "anonymous"] {
        let stored = store.get(Kind::Role, role).await.unwrap().unwrap();
        assert_eq!(
            stored["controllers"],
            json!({"*": {"actions": {"*": true}}}),
            "{role}"
        );
        assert_eq!(stored["_kuzzle_info"]["author"], "-1");
    }
    assert_eq!(
        store.get(Kind::Profile, "admin").await.unwrap().unwrap()["policies"],
        json!([{"roleId": "admin"}])
    );
    assert_eq!(
        store.get(Kind::Profile, "admin").await.unwrap().unwrap()["rateLimit"],
        0
    );
    assert_eq!(
        store
            .get(Kind::Profile, "anonymous")
            .await
            .unwrap()
            .unwrap()["policies"],
        json!([{"roleId": "anonymous"}])
    );
    assert_eq!(node.node.secret.len(), 128, "64 random bytes, hex");
}

#[actix_rt::test]
async fn nodes_sharing_a_redis_agree_on_the_secret_and_keep_existing_roles() {
    let redis = RedisServer::start();
    let first = start_node(|s| s.services.storage = redis.settings()).await;
    first
        .node
        .store
        .put(
            Kind::Role,
            "default",
            &json!({"controllers": {"auth": {"actions": {"login": true}}}}),
        )
        .await
        .unwrap();
    let second = start_node(|s| s.services.storage = redis.settings()).await;
    assert_eq!(first.node.secret, second.node.secret);
    let role = second
        .node
        .store
        .get(Kind::Role, "default")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        role["controllers"],
        json!({"auth": {"actions": {"login": true}}}),
        "bootstrap never overwrites"
    );
    let configured = start_node(|s| {
        s.services.storage = redis.settings();
        s.security.auth_token.secret = Some("configured".into());
    })
    .await;
    assert_eq!(configured.node.secret, "configured");
}

#[actix_rt::test]
async fn health_check_turns_red_when_redis_goes_and_the_node_keeps_serving() {
    let redis = RedisServer::start();
    let node = start_node(|s| s.services.storage = redis.settings()).await;
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(json!({"controller":"server","action":"healthCheck"}))
        .await;
    assert_eq!(
        res["result"],
        json!({"status": "green", "services": {"internalCache": "green", "memoryStorage": "green", "storageEngine": "green"}})
    );
    drop(redis);
    let res = ws
        .request(json!({"controller":"server","action":"healthCheck"}))
        .await;
    assert_eq!(
        res["result"],
        json!({"status": "red", "services": {"internalCache": "red", "memoryStorage": "red", "storageEngine": "red"}}),
        "the result and the error"
    );
    assert_eq!(res["error"]["id"], "core.fatal.service_unavailable");
    assert_eq!(res["status"], 500);
    let mut http = Client::default()
        .get(url(&node, "/_healthCheck"))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 500);
    assert_eq!(
        http.json::<Value>().await.unwrap()["result"]["status"],
        "red"
    );
    ws.assert_now_ok().await;
}

#[actix_rt::test]
async fn admin_exists_follows_the_users() {
    let node = start_node(|_| {}).await;
    let mut ws = Ws::connect(node.addr).await;
    assert_eq!(
        ws.request(json!({"controller":"server","action":"adminExists"}))
            .await["result"],
        json!({"exists": false})
    );
    node.node
        .store
        .put(Kind::User, "bob", &json!({"profileIds": ["default"]}))
        .await
        .unwrap();
    assert_eq!(
        ws.request(json!({"controller":"server","action":"adminExists"}))
            .await["result"],
        json!({"exists": false})
    );
    node.node
        .store
        .put(
            Kind::User,
            "ada",
            &json!({"profileIds": ["default", "admin"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        ws.request(json!({"controller":"server","action":"adminExists"}))
            .await["result"],
        json!({"exists": true})
    );
    let mut res = Client::default()
        .get(url(&node, "/_adminExists"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["result"],
        json!({"exists": true})
    );
}

#[test]
fn the_binary_warns_at_start_and_keeps_its_data_in_dot_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _, log) = spawn_binary(dir.path(), &[]);
    assert!(
        dir.path().join("data/kuzzle-rt.redb").is_file(),
        "the default store is ./data"
    );
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let log = log.lock().unwrap().clone();
    for warning in [
        "no security.authToken.secret configured: generated one",
        "no administrator yet",
        "the anonymous role allows every action",
        "cookie authentication is on while http.accessControlAllowOrigin allows \"*\"",
    ] {
        assert!(
            log.contains(warning),
            "missing warning {warning:?} in:\n{log}"
        );
    }
    // A second start on the same store generates no new secret.
    let (mut child, _, log) = spawn_binary(dir.path(), &[]);
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    assert!(!log.lock().unwrap().contains("generated one"));
}

#[test]
fn the_binary_refuses_to_start_without_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kuzzle-rt"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("kuzzle_server__host", "127.0.0.1")
        .env("kuzzle_server__port", "0")
        .env("kuzzle_services__storage__backend", "redis")
        .env("kuzzle_services__storage__node__host", "127.0.0.1")
        .env(
            "kuzzle_services__storage__node__port",
            closed_port.to_string(),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[STORAGE] store unavailable: cannot reach Redis at 127.0.0.1:"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("not-a-dir"), "x").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kuzzle-rt"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("kuzzle_server__host", "127.0.0.1")
        .env("kuzzle_server__port", "0")
        .env("kuzzle_services__storage__path", "not-a-dir/data")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "[STORAGE] store unavailable: cannot create the storage directory not-a-dir/data"
        ),
        "{stderr}"
    );
}
