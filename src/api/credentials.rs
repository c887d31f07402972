//! The `security` controller's credential actions (PROTOCOL.md §4.4, credentials): any
//! user's local credentials, as an administrator manages them. Only the `local` strategy
//! exists; its fields are `username` and `password`.

use serde_json::{Value, json};

use super::args::{count_arg, id_arg};
use super::auth::{credential_fields, no_credentials, strategy_arg};
use super::identity::{store_read_error, store_write_error};
use super::search::{Query, filter, page_of};
use super::security::{add_credentials, existing_user, has_local_credentials};
use super::{ActionResult, Call, Reply};
use crate::protocol::errors::{self, ApiError};
use crate::storage::Kind;

const LOCAL_FIELDS: [&str; 2] = ["password", "username"];

pub async fn create_credentials(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let kuid = id_arg(call)?;
    existing_user(call, &kuid).await?;
    let (username, password) = credential_fields(call)?;
    if has_local_credentials(call, &kuid).await? {
        return Err(ApiError::bare(
            412,
            format!("A strategy already exists for user \"{kuid}\"."),
        ));
    }
    add_credentials(call, &kuid, &username, password).await?;
    Ok(Reply::Json(json!({"username": username, "kuid": kuid})))
}

pub async fn delete_credentials(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let kuid = id_arg(call)?;
    let store = &call.node.store;
    if !has_local_credentials(call, &kuid).await? {
        return Err(no_credentials(&kuid));
    }
    store
        .remove_credentials(&kuid)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"acknowledged": true})))
}

/// `getCredentials`: `{"username", "kuid"}` of the user `_id`.
pub async fn get_credentials(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let kuid = id_arg(call)?;
    let username = call
        .node
        .store
        .username_of(&kuid)
        .await
        .map_err(store_read_error)?
        .ok_or_else(|| no_credentials(&kuid))?;
    Ok(Reply::Json(json!({"username": username, "kuid": kuid})))
}

/// `getCredentialsById`: the same, found by the strategy's own id (the username).
pub async fn get_credentials_by_id(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let username = id_arg(call)?;
    let credential = call
        .node
        .store
        .credential(&username)
        .await
        .map_err(store_read_error)?
        .ok_or_else(|| {
            ApiError::bare(
                412,
                format!("No credentials found for username \"{username}\"."),
            )
        })?;
    Ok(Reply::Json(
        json!({"username": username, "kuid": credential.kuid}),
    ))
}

pub async fn has_credentials(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let kuid = id_arg(call)?;
    let has = has_local_credentials(call, &kuid).await?;
    Ok(Reply::Json(json!(has)))
}

/// `validateCredentials`: `true` when the body could be created for the user `_id`
/// (optional): both fields present, and the username free or already that user's.
pub async fn validate_credentials(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let (username, _) = credential_fields(call)?;
    let kuid = call.request.string_arg("_id")?;
    if let Some(owner) = call
        .node
        .store
        .credential(&username)
        .await
        .map_err(store_read_error)?
        && Some(owner.kuid.as_str()) != kuid
    {
        return Err(ApiError::bare(
            412,
            format!("Login \"{username}\" is already used."),
        ));
    }
    Ok(Reply::Json(json!(true)))
}

pub async fn get_credential_fields(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    Ok(Reply::Json(json!(LOCAL_FIELDS)))
}

pub async fn get_all_credential_fields(_: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(json!({"local": LOCAL_FIELDS})))
}

/// `searchUsersByCredentials`: the `{"kuid", "username"}` pairs the body's `query`
/// matches (a search over those two fields only: never the password's hash).
pub async fn search_users_by_credentials(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let from = count_arg(call, "from", 0)?;
    let size = count_arg(call, "size", 10)?;
    if size > u64::from(call.node.settings.limits.documents_fetch_count) {
        return Err(ApiError::plain(errors::GET_LIMIT_EXCEEDED));
    }
    let query = call
        .request
        .body
        .as_ref()
        .and_then(|b| b.get("query"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let query = Query::of(call, query)?;
    let logins = call
        .node
        .store
        .list(Kind::Login)
        .await
        .map_err(store_read_error)?
        .into_iter()
        .map(|(kuid, login)| {
            let username = login.get("username").cloned().unwrap_or(Value::Null);
            (kuid.clone(), json!({"kuid": kuid, "username": username}))
        })
        .collect();
    let hits = filter(call, &query, logins)?;
    let (total, hits) = page_of(hits, from, size, |_, pair| pair);
    Ok(Reply::Json(json!({"hits": hits, "total": total})))
}
