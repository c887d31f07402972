//! What a node sets up in its store at start (PROTOCOL.md §4.3, §5.5): the default roles
//! and profiles on an empty store, the JWT secret, and the startup warnings.

use rand::RngCore;
use serde_json::{Value, json};

use super::model::{Role, role_allows, validate_role};
use crate::config::Settings;
use crate::protocol::now_ms;
use crate::storage::{Kind, Store, StoreResult};

pub struct Bootstrapped {
    /// The JWT signing secret every node of the store agrees on.
    pub secret: String,
    pub warnings: Vec<String>,
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

/// Creates what is missing (each document only if absent, so that nodes starting
/// together do not overwrite each other) and reads the secret.
pub async fn bootstrap(store: &Store, settings: &Settings) -> StoreResult<Bootstrapped> {
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

    let mut warnings = Vec::new();
    let secret = match settings.security.secret() {
        Some(secret) => secret.to_owned(),
        None => {
            let mut bytes = [0u8; 64];
            rand::rng().fill_bytes(&mut bytes);
            let generated: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let (secret, created) = store.secret_or_init(&generated).await?;
            if created {
                warnings.push(
                    "no security.authToken.secret configured: generated one and stored it for every node; set one to control it"
                        .to_owned(),
                );
            }
            secret
        }
    };
    if !admin_exists(store).await? {
        warnings.push("no administrator yet: anonymous callers can do everything until security:createFirstAdmin".to_owned());
    }
    if let Some(anonymous) = store.get(Kind::Role, "anonymous").await?
        && validate_role("anonymous", &anonymous, true)
            .as_ref()
            .is_ok_and(allows_everything)
    {
        warnings.push("the anonymous role allows every action (*:*)".to_owned());
    }
    Ok(Bootstrapped { secret, warnings })
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
