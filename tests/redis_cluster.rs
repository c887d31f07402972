//! A node whose store is a Redis Cluster (issue 20): `services.storage.nodes`, 3 masters and
//! 3 replicas started by the test. What a client sees when a master is killed: requests that
//! need the store fail as when Redis does not answer (`security.token.verification_error`,
//! `services.cache.not_connected`) until its replica took over, then everything works again,
//! the node never restarted, and nothing it stored is lost.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn call(addr: SocketAddr, request: Value) -> Value {
    Ws::connect(addr).await.request(request).await
}

/// A node alone on `redis` (clustering off: what the store does, without the bus).
fn node_on(
    redis: &RedisCluster,
    dir: &std::path::Path,
) -> (
    std::process::Child,
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let nodes = redis.nodes_env();
    spawn_binary(
        dir,
        &[
            ("kuzzle_services__storage__backend", "redis"),
            ("kuzzle_services__storage__nodes", nodes.as_str()),
            ("kuzzle_cluster__enabled", "false"),
        ],
    )
}

/// `root` / `toor`, the first administrator.
async fn create_first_admin(addr: SocketAddr) {
    let res = call(
        addr,
        json!({"controller": "security", "action": "createFirstAdmin", "_id": "root",
            "body": {"credentials": {"local": {"username": "root", "password": "toor"}}}}),
    )
    .await;
    assert_eq!(res["status"], 200, "{res}");
}

async fn login(addr: SocketAddr) -> Value {
    call(
        addr,
        json!({"controller": "auth", "action": "login", "strategy": "local",
            "body": {"username": "root", "password": "toor"}}),
    )
    .await
}

/// Calls `request` until it is answered with 200, by `deadline`; meanwhile only the
/// documented errors of a store that does not answer (PROTOCOL §5.4, §3.5).
async fn until_served<F, Fut>(deadline: Instant, mut request: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    loop {
        let res = request().await;
        if res["status"] == 200 {
            return res;
        }
        let id = res["error"]["id"].as_str().unwrap_or_default();
        assert!(
            [
                "security.token.verification_error",
                "services.cache.not_connected"
            ]
            .contains(&id),
            "only 'the store does not answer' meanwhile: {res}"
        );
        assert!(
            Instant::now() < deadline,
            "the failover never completed: {res}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn a_node_on_a_redis_cluster_survives_a_master_failover() {
    let mut redis = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) = node_on(&redis, dir.path());
    assert!(
        log.lock()
            .unwrap()
            .contains("services.storage.node is ignored"),
        "the log says which Redis the node uses"
    );
    create_first_admin(addr).await;
    let res = login(addr).await;
    let jwt = res["result"]["jwt"].as_str().unwrap().to_owned();
    let get_root =
        json!({"controller": "security", "action": "getUser", "_id": "root", "jwt": jwt});
    assert_eq!(call(addr, get_root.clone()).await["status"], 200);

    // The master holding the administrator is killed once its replica is in sync.
    redis
        .cluster
        .wait_until_ready(Duration::from_secs(30))
        .unwrap();
    let holder = redis
        .cluster
        .servers
        .iter()
        .position(|s| {
            redis
                .cli(s.port, &["INFO", "replication"])
                .contains("role:master")
                && redis.cli(s.port, &["EXISTS", "krt/users/root"]).trim() == "1"
        })
        .expect("a master holds the user");
    let killed = redis.cluster.servers[holder].port;
    redis.cluster.servers[holder].kill();

    // Until the replica takes over, reading the user fails as when the store does not
    // answer; then it works again, and so do logins (a new token written), on the same node
    // process. (Until every master agrees on the new one, a call to a key of another shard
    // may fail the same way: each is polled.)
    let deadline = Instant::now() + WAIT * 3;
    let res = until_served(deadline, || call(addr, get_root.clone())).await;
    assert_eq!(res["result"]["_id"], "root");
    until_served(deadline, || login(addr)).await;
    let masters = redis.cluster.masters();
    assert_eq!(masters.len(), 3, "a replica took over: {masters:?}");
    assert!(!masters.contains(&killed));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the node never stopped"
    );
    // The token issued before the failover is still valid after a restart of the node.
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, addr, _) = node_on(&redis, dir.path());
    let res = call(addr, get_root).await;
    assert_eq!(res["status"], 200, "{res}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Slots moving between masters (a resharding: MOVED and ASK redirections) under a node:
/// every request keeps working, nothing stored is lost, no restart.
#[actix_rt::test]
async fn a_node_on_a_redis_cluster_follows_a_resharding() {
    let redis = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _) = node_on(&redis, dir.path());
    create_first_admin(addr).await;
    let jwt = login(addr).await["result"]["jwt"]
        .as_str()
        .unwrap()
        .to_owned();
    let get_root =
        json!({"controller": "security", "action": "getUser", "_id": "root", "jwt": jwt});
    // Every slot of the master holding the administrator moves to another master.
    let masters = redis.cluster.masters();
    let from = *masters
        .iter()
        .find(|port| redis.cli(**port, &["EXISTS", "krt/users/root"]).trim() == "1")
        .expect("a master holds the user");
    let to = *masters.iter().find(|port| **port != from).unwrap();
    let id = |port: u16| redis.cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
    let moved = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
        .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
        .args(["--cluster-slots", "16384", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(moved.status.success(), "{moved:?}");
    assert_eq!(redis.cli(to, &["EXISTS", "krt/users/root"]).trim(), "1");
    // The node's cluster client follows the redirections: the user, a new login, the token.
    let res = call(addr, get_root.clone()).await;
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(login(addr).await["status"], 200);
    let res = call(
        addr,
        json!({"controller": "auth", "action": "checkToken", "body": {"token": jwt}}),
    )
    .await;
    assert_eq!(res["result"]["valid"], true, "{res}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the node never stopped"
    );
    let _ = child.kill();
    let _ = child.wait();
}
