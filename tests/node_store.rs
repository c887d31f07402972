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

/// The node's WARN lines (`[… WARN  target] …`).
fn warn_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ")).collect()
}

/// Issue 22: a first start with no configuration warns once (no administrator yet, with how
/// to create one); once the first administrator exists (with `reset`), a restart warns about
/// nothing. The generated secret is an `info` line, said once.
#[actix_rt::test]
async fn a_first_start_warns_once_and_a_start_after_the_first_admin_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) = spawn_binary(dir.path(), &[]);
    assert!(
        dir.path().join("data/kuzzle-rt.redb").is_file(),
        "the default store is ./data"
    );
    let mut res = Client::default()
        .post(format!("http://{addr}/_createFirstAdmin/admin?reset"))
        .send_json(&json!({"credentials": {"local": {"username": "admin", "password": "first"}}}))
        .await
        .unwrap();
    let body = res.json::<Value>().await.unwrap();
    assert_eq!(body["status"], 200, "{body}");
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let first = log.lock().unwrap().clone();
    let no_admin: Vec<&str> = first
        .lines()
        .filter(|l| l.contains(kuzzle_rt::security::bootstrap::NO_ADMINISTRATOR))
        .collect();
    assert_eq!(no_admin.len(), 1, "{first}");
    assert_eq!(
        warn_lines(&first),
        no_admin,
        "one WARN line, the missing administrator:\n{first}"
    );
    assert!(
        first.contains("one was generated and kept in the store"),
        "{first}"
    );
    assert!(
        !first.contains("actix_server"),
        "actix-server's start lines are left out:\n{first}"
    );

    let (mut child, _, log) = spawn_binary(dir.path(), &[]);
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let second = log.lock().unwrap().clone();
    assert!(second.contains(" stopped"), "{second}");
    assert_eq!(warn_lines(&second), Vec::<&str>::new(), "{second}");
    assert!(!second.contains("generated"), "no new secret:\n{second}");
}

/// An administrator created without `reset` leaves anonymous callers every right: an
/// operator's choice, warned about at each start.
#[actix_rt::test]
async fn an_open_anonymous_role_beside_an_administrator_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _) = spawn_binary(dir.path(), &[]);
    let mut res = Client::default()
        .post(format!("http://{addr}/_createFirstAdmin/admin"))
        .send_json(&json!({"credentials": {"local": {"username": "admin", "password": "first"}}}))
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 200);
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let (mut child, _, log) = spawn_binary(dir.path(), &[]);
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let log = log.lock().unwrap().clone();
    let warnings = warn_lines(&log);
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(
            "the anonymous role allows every action (*:*) although an administrator exists"
        ),
        "{log}"
    );
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
