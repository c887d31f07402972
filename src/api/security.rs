//! The `security` controller (PROTOCOL.md §4.4): `createFirstAdmin` so far.

use serde_json::{Map, Value, json};

use super::identity::{store_read_error, store_write_error};
use super::{ActionResult, Call, Reply};
use crate::auth::credentials;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;
use crate::security::bootstrap::admin_exists;
use crate::storage::Kind;

/// Validated local credentials: (username, password).
fn local_credentials(body: &Value) -> Result<Option<(String, String)>, ApiError> {
    let Some(local) = body.get("credentials").and_then(|c| c.get("local")) else {
        return Ok(None);
    };
    if local.get("kuid").is_some() {
        return Err(ApiError::bare(
            400,
            "kuid cannot be specified in credentials.",
        ));
    }
    let field = |name: &str, message: &str| {
        local
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bare(400, message))
    };
    Ok(Some((
        field("username", "Username required.")?,
        field("password", "Password required.")?,
    )))
}

fn new_kuid(call: &Call<'_>) -> Result<String, ApiError> {
    if let Some(id) = call.request.string_arg("_id")? {
        return Ok(id.to_owned());
    }
    Ok(match call.request.string_arg("kuid")? {
        Some("uuid") => format!("kuid-{}", uuid::Uuid::new_v4()),
        _ => crate::names::random_name("kuid"),
    })
}

pub async fn create_first_admin(call: &Call<'_>) -> ActionResult {
    let store = &call.node.store;
    if admin_exists(store).await.map_err(store_read_error)? {
        return Err(ApiError::plain(errors::ADMIN_EXISTS));
    }
    let body = call.request.body.clone().unwrap_or_else(|| json!({}));
    let mut content = match body.get("content") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::invalid_type("body.content", "object")),
    };
    if content.contains_key("profileIds") {
        return Err(ApiError::new(
            errors::FORBIDDEN_ARGUMENT,
            ["body.content.profileIds"],
        ));
    }
    let credentials = local_credentials(&body)?;
    let kuid = new_kuid(call)?;
    if kuid == "-1"
        || kuid == "anonymous"
        || store
            .get(Kind::User, &kuid)
            .await
            .map_err(store_read_error)?
            .is_some()
    {
        return Err(ApiError::new(errors::USER_ALREADY_EXISTS, [kuid.as_str()]));
    }
    content.remove("_id");
    content.remove("_kuzzle_info");
    let mut source = Map::new();
    source.insert("profileIds".into(), json!(["admin"]));
    source.extend(content);
    source.insert(
        "_kuzzle_info".into(),
        json!({"author": call.identity.kuid, "createdAt": now_ms(), "updatedAt": null, "updater": null}),
    );
    let source = Value::Object(source);
    if let Some((username, password)) = credentials {
        let hash = credentials::hash(password)
            .await
            .map_err(|e| ApiError::new(errors::PLUGIN_UNEXPECTED_ERROR, [e]))?;
        let taken = !store
            .insert_new(
                Kind::Credential,
                &username,
                &json!({"kuid": kuid, "hash": hash}),
            )
            .await
            .map_err(store_write_error)?;
        if taken {
            return Err(ApiError::bare(
                412,
                format!("Login \"{username}\" is already used."),
            ));
        }
        store
            .put(Kind::Login, &kuid, &json!({"username": username}))
            .await
            .map_err(store_write_error)?;
    }
    store
        .put(Kind::User, &kuid, &source)
        .await
        .map_err(store_write_error)?;
    if call.request.bool_arg("reset")? {
        let standard = &call.node.settings.security.standard;
        let info = json!({"author": call.identity.kuid, "createdAt": now_ms(), "updatedAt": null, "updater": null});
        for (kind, documents) in [
            (Kind::Role, &standard.roles),
            (Kind::Profile, &standard.profiles),
        ] {
            for (id, document) in documents {
                let mut document = document.clone();
                document["_kuzzle_info"] = info.clone();
                store
                    .put(kind, id, &document)
                    .await
                    .map_err(store_write_error)?;
            }
        }
        store
            .bump_security_version()
            .await
            .map_err(store_write_error)?;
    }
    Ok(Reply::Json(json!({"_id": kuid, "_source": source})))
}
