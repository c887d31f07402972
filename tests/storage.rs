//! The store: one suite, run against the embedded backend and against a real Redis.

mod common;

use std::time::Duration;

use common::{RedisCluster, RedisServer};
use kuzzle_rt::config::{StorageBackend, StorageSettings};
use kuzzle_rt::storage::{Kind, Store, StoreError};
use serde_json::json;

async fn suite(store: &Store) {
    // Documents.
    assert_eq!(store.get(Kind::User, "ada").await.unwrap(), None);
    store
        .put(
            Kind::User,
            "ada",
            &json!({"profileIds": ["admin"], "name": "Ada"}),
        )
        .await
        .unwrap();
    store
        .put(Kind::User, "bob", &json!({"profileIds": ["default"]}))
        .await
        .unwrap();
    store
        .put(Kind::Role, "ada", &json!({"controllers": {}}))
        .await
        .unwrap();
    assert_eq!(
        store.get(Kind::User, "ada").await.unwrap(),
        Some(json!({"profileIds": ["admin"], "name": "Ada"}))
    );
    let users = store.list(Kind::User).await.unwrap();
    assert_eq!(
        users.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["ada", "bob"],
        "sorted, kinds kept apart"
    );
    assert!(
        !store
            .insert_new(Kind::User, "ada", &json!({}))
            .await
            .unwrap(),
        "taken"
    );
    assert!(
        store
            .insert_new(Kind::Credential, "ada@example", &json!({"kuid": "ada"}))
            .await
            .unwrap()
    );
    assert!(store.delete(Kind::User, "bob").await.unwrap());
    assert!(!store.delete(Kind::User, "bob").await.unwrap());
    assert_eq!(store.list(Kind::User).await.unwrap().len(), 1);
    assert_eq!(store.list(Kind::Profile).await.unwrap(), vec![]);
    // Ids with characters that mean something to Redis patterns or redb keys.
    store
        .put(Kind::Profile, "we*ird[id]?", &json!(1))
        .await
        .unwrap();
    assert_eq!(
        store.list(Kind::Profile).await.unwrap(),
        vec![("we*ird[id]?".to_owned(), json!(1))]
    );

    // Tokens.
    store.put_token("t-forever", "ada", None).await.unwrap();
    store
        .put_token("t-short", "ada", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    store
        .put_token("t-bob", "bob", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        store.token_owner("t-short").await.unwrap().as_deref(),
        Some("ada")
    );
    assert_eq!(
        store.user_tokens("ada").await.unwrap(),
        ["t-forever", "t-short"]
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(store.token_owner("t-short").await.unwrap(), None, "expired");
    assert_eq!(store.user_tokens("ada").await.unwrap(), ["t-forever"]);
    store.delete_token("t-forever").await.unwrap();
    assert_eq!(
        store.token_owner("t-forever").await.unwrap(),
        None,
        "revoked"
    );
    assert!(store.user_tokens("ada").await.unwrap().is_empty());
    assert_eq!(store.user_tokens("bob").await.unwrap(), ["t-bob"]);
    store.delete_token("never-issued").await.unwrap();

    // The secret: the first caller's value wins, later ones read it.
    assert_eq!(
        store.secret_or_init("first").await.unwrap(),
        ("first".to_owned(), true)
    );
    assert_eq!(
        store.secret_or_init("second").await.unwrap(),
        ("first".to_owned(), false)
    );
    store.ping().await.unwrap();

    // The security version only goes up, from where a new store's setup starts it (a
    // Redis store without its counter lost its data: no cached rights may match it).
    store.init_security_version().await.unwrap();
    let start = store.security_version().await.unwrap();
    assert_ne!(start, kuzzle_rt::storage::NO_VERSION);
    assert_eq!(store.bump_security_version().await.unwrap(), start + 1);
    assert_eq!(store.bump_security_version().await.unwrap(), start + 2);
    assert_eq!(store.security_version().await.unwrap(), start + 2);
}

#[actix_rt::test]
async fn embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StorageSettings {
        path: dir.path().join("data").display().to_string(),
        ..StorageSettings::default()
    };
    let store = Store::open(&settings).await.unwrap();
    assert_eq!(store.backend(), StorageBackend::Embedded);
    suite(&store).await;
    drop(store);
    // Everything survives a reopen.
    let store = Store::open(&settings).await.unwrap();
    assert_eq!(
        store.get(Kind::User, "ada").await.unwrap().unwrap()["name"],
        "Ada"
    );
    assert_eq!(
        store.token_owner("t-bob").await.unwrap().as_deref(),
        Some("bob")
    );
    assert_eq!(store.secret_or_init("other").await.unwrap().0, "first");
}

#[actix_rt::test]
async fn embedded_store_in_an_unusable_place_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let settings = StorageSettings {
        path: file.join("data").display().to_string(),
        ..StorageSettings::default()
    };
    match Store::open(&settings).await {
        Err(StoreError::Unavailable(message)) => assert!(
            message.contains("cannot create the storage directory"),
            "{message}"
        ),
        other => panic!("expected a clear failure, got {:?}", other.err()),
    }
}

#[actix_rt::test]
async fn redis_store() {
    let redis = RedisServer::start();
    let store = Store::open(&redis.settings()).await.unwrap();
    assert_eq!(store.backend(), StorageBackend::Redis);
    suite(&store).await;
    // Another node sees the same data; a different key prefix does not.
    let same = Store::open(&redis.settings()).await.unwrap();
    assert_eq!(same.secret_or_init("x").await.unwrap().0, "first");
    let mut other_settings = redis.settings();
    other_settings.key_prefix = "other/".into();
    let other = Store::open(&other_settings).await.unwrap();
    assert_eq!(other.get(Kind::User, "ada").await.unwrap(), None);
}

#[actix_rt::test]
async fn redis_cluster_store() {
    let redis = RedisCluster::start();
    let store = Store::open(&redis.settings()).await.unwrap();
    assert_eq!(store.backend(), StorageBackend::Redis);
    suite(&store).await;
    // The keys are spread over the masters (one slot each), and the lists saw them all.
    let masters = redis.cluster.masters();
    assert_eq!(masters.len(), 3);
    let holding = masters
        .iter()
        .filter(|port| redis.cli(**port, &["DBSIZE"]).trim() != "0")
        .count();
    assert!(holding >= 2, "the keys sit on {holding} master(s)");
    let many: Vec<String> = (0..40).map(|i| format!("role-{i:02}")).collect();
    for id in &many {
        store
            .put(Kind::Role, id, &json!({"controllers": {}}))
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .list(Kind::Role)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.starts_with("role-"))
        .collect();
    assert_eq!(listed, many, "every master scanned");
}

#[actix_rt::test]
async fn redis_down_at_start_and_later() {
    let redis = RedisServer::start();
    let settings = redis.settings();
    let store = Store::open(&settings).await.unwrap();
    store.put(Kind::User, "ada", &json!({})).await.unwrap();
    drop(redis);
    match store.get(Kind::User, "ada").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    match Store::open(&settings).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("cannot reach Redis"), "{message}")
        }
        other => panic!("expected a clear failure, got {:?}", other.err()),
    }
}

#[actix_rt::test]
async fn redis_comes_back() {
    let redis = RedisServer::start();
    let settings = redis.settings();
    let store = Store::open(&settings).await.unwrap();
    let port = redis.port;
    drop(redis);
    assert!(store.ping().await.is_err());
    // A new server on the same port: the store reconnects by itself.
    let _back = RedisServer::start_on(port);
    let mut recovered = false;
    for _ in 0..100 {
        if store.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the store reconnects once Redis is back");
}
