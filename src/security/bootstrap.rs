//! What a node sets up in its store at start (PROTOCOL.md §4.3, §5.5): the default roles
//! and profiles on a new store, the JWT secret, the store's marker, and the startup
//! warnings.
//!
//! A store is new when it has no marker and no data. An emptied store that a running
//! cluster used (Redis flushed, restarted without persistence, failed over to an empty
//! replica) is told apart from a new one: running nodes are still subscribed to the
//! cluster's revocations channel, and they write the marker and the secret back at their
//! next heartbeat. A node that finds such a store waits for them, recreates nothing, and
//! reports the store lost.

use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::{Value, json};

use super::model::{Role, role_allows, validate_role};
use crate::config::{Settings, StorageBackend};
use crate::protocol::now_ms;
use crate::storage::marker::StoreMarker;
use crate::storage::{Kind, Store, StoreResult};

pub struct Bootstrapped {
    /// The JWT signing secret every node of the store agrees on.
    pub secret: String,
    pub warnings: Vec<String>,
    /// The store's marker as this node found or wrote it.
    pub marker: StoreMarker,
    /// The store was emptied behind a cluster's back: nothing was recreated.
    pub lost: bool,
}

fn kuzzle_info() -> Value {
    json!({"author": "-1", "createdAt": now_ms(), "updatedAt": null, "updater": null})
}

fn with_info(mut document: Value) -> Value {
    if let Value::Object(map) = &mut document {
        map.insert("_kuzzle_info".into(), kuzzle_info());
    }
    document
}

/// Sets up a new store, or finds the one a cluster uses, and reads the secret.
pub async fn bootstrap(store: &Store, settings: &Settings) -> StoreResult<Bootstrapped> {
    let mut marker = store.marker().await?;
    let empty = marker.is_none() && is_empty(store).await?;
    if empty && cluster_is_running(store, settings).await? {
        let wait = Duration::from_millis(
            settings.cluster.heartbeat * 2 + settings.services.storage.command_timeout,
        );
        log::warn!(
            "[STORAGE] the store is empty but a cluster runs on it: waiting up to {} ms for its nodes to write back what they know",
            wait.as_millis()
        );
        let deadline = Instant::now() + wait;
        while marker.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            marker = store.marker().await?;
        }
    }
    let mut lost = match &marker {
        // A marker, but not even the protected roles: the data is gone.
        Some(_) => store.get(Kind::Role, "anonymous").await?.is_none(),
        None => false,
    };
    if lost && marker.as_ref().is_some_and(|m| !m.admin_created) {
        // Open to everyone before, open to everyone again: nothing is given away.
        reopen(store, settings).await?;
        lost = false;
    }
    let marker = match marker {
        Some(marker) => marker,
        None if empty => {
            store.init_security_version().await?;
            create_defaults(store, settings).await?;
            store.init_marker(&StoreMarker::new(false)).await?
        }
        // Data from before markers existed: mark it as it is.
        None => {
            let admin = admin_exists(store).await?;
            store.init_marker(&StoreMarker::new(admin)).await?
        }
    };
    if lost {
        log::error!(
            "[STORAGE] the store lost its data (Redis emptied, restarted without persistence, or failed over to an empty replica): users, roles and tokens are gone; restore the backup. Default roles are not recreated and security:createFirstAdmin stays refused"
        );
    }
    let (secret, generated) = match settings.security.secret() {
        Some(secret) => (secret.to_owned(), false),
        // When the store was lost, the running nodes wrote theirs back with the marker.
        None => store.secret_or_init(&generate_secret()).await?,
    };
    finish(store, secret, generated, marker, lost).await
}

fn generate_secret() -> String {
    let mut bytes = [0u8; 64];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store that lost its data, on which no administrator was ever created, is set up again
/// as it was: the default roles and profiles, and a security counter.
pub async fn reopen(store: &Store, settings: &Settings) -> StoreResult<()> {
    log::warn!(
        "[STORAGE] the store lost its data; no administrator was ever created on it: its default roles and profiles are set up again"
    );
    create_defaults(store, settings).await?;
    store.init_security_version().await
}

/// No marker nor any role, profile or user.
async fn is_empty(store: &Store) -> StoreResult<bool> {
    for kind in [Kind::Role, Kind::Profile, Kind::User] {
        if !store.list(kind).await?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Nodes of a cluster listen to its revocations channel, whatever Redis lost.
async fn cluster_is_running(store: &Store, settings: &Settings) -> StoreResult<bool> {
    if !settings.cluster.enabled || settings.services.storage.backend != StorageBackend::Redis {
        return Ok(false);
    }
    let keys = crate::cluster::keys::Keys::new(&settings.services.storage.key_prefix);
    Ok(store.subscribers(&keys.sessions_channel()).await? > 0)
}

/// The default roles and profiles of a new store (each only if absent, so that nodes
/// starting together do not overwrite each other).
async fn create_defaults(store: &Store, settings: &Settings) -> StoreResult<()> {
    let default_role = settings.security.default.role.clone();
    for role in ["admin", "default", "anonymous"] {
        store
            .insert_new(Kind::Role, role, &with_info(default_role.clone()))
            .await?;
    }
    for (profile, rate_limit) in [("admin", Some(0)), ("default", None), ("anonymous", None)] {
        let mut body = json!({"policies": [{"roleId": profile}]});
        if let Some(limit) = rate_limit {
            body["rateLimit"] = json!(limit);
        }
        store
            .insert_new(Kind::Profile, profile, &with_info(body))
            .await?;
    }
    Ok(())
}

/// The one warning of a first start (README, "The first administrator").
pub const NO_ADMINISTRATOR: &str = "no administrator yet: anyone may do anything until one exists. Create it with security:createFirstAdmin and reset (curl -X POST 'localhost:7512/_createFirstAdmin/admin?reset' -H 'Content-Type: application/json' -d '{\"credentials\":{\"local\":{\"username\":\"admin\",\"password\":\"…\"}}}'), or from the dashboard, /_dashboard";

async fn finish(
    store: &Store,
    secret: String,
    generated: bool,
    marker: StoreMarker,
    lost: bool,
) -> StoreResult<Bootstrapped> {
    let mut warnings = Vec::new();
    if generated {
        // How a store works without a configured secret, not something to act on.
        log::info!(
            "security.authToken.secret: none configured, so one was generated and kept in the store, where every node sharing it reads it"
        );
    }
    let admin = lost || marker.admin_created || admin_exists(store).await?;
    if !admin {
        warnings.push(NO_ADMINISTRATOR.to_owned());
    } else if let Some(anonymous) = store.get(Kind::Role, "anonymous").await?
        && validate_role("anonymous", &anonymous, true)
            .as_ref()
            .is_ok_and(allows_everything)
    {
        // Once an administrator exists, an open anonymous role is an operator's choice.
        warnings.push("the anonymous role allows every action (*:*) although an administrator exists: anyone may do anything; restrict it with security:updateRole (or security:restrictDefaultRights)".to_owned());
    }
    Ok(Bootstrapped {
        secret,
        warnings,
        marker,
        lost,
    })
}

fn allows_everything(role: &Role) -> bool {
    role.controllers
        .get("*")
        .is_some_and(|actions| actions.get("*") == Some(&true))
        && role_allows(role, "*", "*")
}

/// True once a user holds the `admin` profile.
pub async fn admin_exists(store: &Store) -> StoreResult<bool> {
    Ok(store.list(Kind::User).await?.iter().any(|(_, user)| {
        user.get("profileIds")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id == "admin"))
    }))
}
