//! API keys (PROTOCOL.md §4.2 and §4.4, API keys; §5.6): `auth:createApiKey`,
//! `searchApiKeys`, `deleteApiKey` for the caller, the `security` ones for any user, and
//! `auth:createToken`.
//!
//! An API key is a stored document (`Kind::ApiKey`) and a token with the `kapikey-` prefix
//! held in the token store like a login's, so that it authenticates through the same path
//! (and the same per-node cache). Only deleting the key (or its user) revokes it: a
//! `logout` with `global`, `revokeTokens` or a new password leave it alone, as in Kuzzle.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::args::{id_arg, info_for, required_string};
use super::auth::{keep_token, new_session};
use super::identity::{algorithm, store_read_error, store_write_error};
use super::search::{Query, filter, page_of};
use super::{ActionResult, Call, Reply};
use crate::auth::token;
use crate::config::timespan::{Lifetime, parse_lifetime};
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;
use crate::storage::Kind;

/// The stored API keys of `kuid`, sorted by id.
pub(super) async fn of_user(call: &Call<'_>, kuid: &str) -> Result<Vec<(String, Value)>, ApiError> {
    Ok(call
        .node
        .store
        .list(Kind::ApiKey)
        .await
        .map_err(store_read_error)?
        .into_iter()
        .filter(|(_, key)| key.get("userId").and_then(Value::as_str) == Some(kuid))
        .collect())
}

/// The SHA-256 of a token, hex: how a key is found from its token (Kuzzle's
/// `fingerprint`).
fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a client sees of a stored key, and what a search may look at: never its token.
fn without_token(mut key: Value) -> Value {
    if let Value::Object(map) = &mut key {
        map.remove("token");
    }
    key
}

fn user_id_arg(call: &Call<'_>) -> Result<String, ApiError> {
    required_string(call, "userId")
}

fn bad_expires_in() -> ApiError {
    ApiError::new(
        errors::INVALID_ARGUMENT,
        [
            "expiresIn",
            "a number of milliseconds, or a parsable timespan string",
        ],
    )
}

/// `expiresIn` of an API key or of `createToken`: -1 (the default) never expires.
/// `max_ttl` (-1: none) bounds it unless `bypass`.
fn key_lifetime(call: &Call<'_>, max_ttl: i64, bypass: bool) -> Result<Lifetime, ApiError> {
    let lifetime = match call.request.arg("expiresIn") {
        None | Some(Value::Null) => Lifetime::Infinite,
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => Lifetime::Infinite,
        Some(Value::String(s)) if s.is_empty() || s == "-1" => Lifetime::Infinite,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => return Err(bad_expires_in()),
        Some(v) => parse_lifetime(v).ok_or_else(bad_expires_in)?,
    };
    let exceeds = match lifetime {
        Lifetime::Infinite => max_ttl > -1,
        Lifetime::Millis(ms) => max_ttl > -1 && ms > max_ttl as u64,
    };
    if exceeds && !bypass {
        return Err(ApiError::plain(errors::TOKEN_TTL_EXCEEDED));
    }
    Ok(lifetime)
}

/// Creates a key for `kuid`; the answer is the only time its token is shown.
async fn create(call: &Call<'_>, kuid: &str, bypass_max_ttl: bool) -> ActionResult {
    let description = match call
        .request
        .body
        .as_ref()
        .and_then(|b| b.get("description"))
    {
        None | Some(Value::Null) => return Err(ApiError::missing_argument("body.description")),
        Some(Value::String(d)) => d.clone(),
        Some(_) => return Err(ApiError::invalid_type("body.description", "string")),
    };
    let lifetime = key_lifetime(
        call,
        call.node.settings.security.api_key.max_ttl,
        bypass_max_ttl,
    )?;
    let store = &call.node.store;
    if store
        .get(Kind::User, kuid)
        .await
        .map_err(store_read_error)?
        .is_none()
    {
        return Err(ApiError::new(errors::USER_NOT_FOUND, [kuid]));
    }
    let id = match call.request.string_arg("_id")? {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let issued = token::issue_api_key(
        algorithm(call.node),
        call.node.secret.as_bytes(),
        kuid,
        lifetime,
        now_ms(),
    );
    let key = json!({
        "userId": kuid,
        "description": description,
        "expiresAt": issued.expires_at.map_or(json!(-1), Value::from),
        "ttl": issued.ttl.map_or(json!(-1), Value::from),
        "fingerprint": fingerprint(&issued.token),
        "token": issued.token,
        "_kuzzle_info": info_for(call),
    });
    if !store
        .insert_new(Kind::ApiKey, &id, &key)
        .await
        .map_err(store_write_error)?
    {
        return Err(ApiError::plain(errors::DOCUMENT_ALREADY_EXISTS));
    }
    keep_token(call, &issued).await?;
    Ok(Reply::Json(json!({"_id": id, "_source": key})))
}

/// The keys of `kuid` the body's query matches, `from`/`size` paged.
async fn search(call: &Call<'_>, kuid: &str) -> ActionResult {
    let query = call.request.body.clone().unwrap_or_else(|| json!({}));
    // Kuzzle takes the body itself as the query; `{"query": …}` is accepted too.
    let query = match query.get("query") {
        Some(inner) if query.as_object().is_some_and(|m| m.len() == 1) => inner.clone(),
        _ => query,
    };
    let query = Query::of(call, query)?;
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match call.request.arg(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ApiError::invalid_type(name, "integer")),
        }
    };
    let (from, size) = (number("from", 0)?, number("size", 10)?);
    if size > u64::from(call.node.settings.limits.documents_fetch_count) {
        return Err(ApiError::plain(errors::GET_LIMIT_EXCEEDED));
    }
    // The query sees no token: a pattern cannot fish one out.
    let keys = of_user(call, kuid)
        .await?
        .into_iter()
        .map(|(id, key)| (id, without_token(key)))
        .collect();
    let hits = filter(call, &query, keys)?;
    let (total, hits) = page_of(
        hits,
        from,
        size,
        |id, key| json!({"_id": id, "_source": key}),
    );
    Ok(Reply::Json(json!({"hits": hits, "total": total})))
}

/// Deletes `kuid`'s key `_id`, and revokes its token on every node.
async fn delete(call: &Call<'_>, kuid: &str) -> ActionResult {
    let id = id_arg(call)?;
    let store = &call.node.store;
    let key = store
        .get(Kind::ApiKey, &id)
        .await
        .map_err(store_read_error)?
        .filter(|key| key.get("userId").and_then(Value::as_str) == Some(kuid))
        .ok_or_else(|| {
            ApiError::new(
                errors::DOCUMENT_NOT_FOUND,
                [id.as_str(), "%kuzzle", "api-keys"],
            )
        })?;
    store
        .delete(Kind::ApiKey, &id)
        .await
        .map_err(store_write_error)?;
    if let Some(token) = key.get("token").and_then(Value::as_str) {
        store.delete_token(token).await.map_err(store_write_error)?;
        call.node.revoke(vec![token.to_owned()]);
    }
    Ok(Reply::Json(json!({"_id": id})))
}

/// "Requires a user" (PROTOCOL.md §4.1).
fn caller(call: &Call<'_>) -> Result<String, ApiError> {
    if call.identity.is_anonymous() {
        return Err(ApiError::new(
            errors::RIGHTS_UNAUTHORIZED,
            ["auth", call.request.action.as_str()],
        ));
    }
    Ok(call.identity.kuid.clone())
}

pub async fn auth_create(call: &Call<'_>) -> ActionResult {
    let kuid = caller(call)?;
    create(call, &kuid, false).await
}

pub async fn auth_search(call: &Call<'_>) -> ActionResult {
    let kuid = caller(call)?;
    search(call, &kuid).await
}

pub async fn auth_delete(call: &Call<'_>) -> ActionResult {
    let kuid = caller(call)?;
    delete(call, &kuid).await
}

/// `security:createApiKey`: `security.apiKey.maxTTL` does not apply (as in Kuzzle).
pub async fn security_create(call: &Call<'_>) -> ActionResult {
    let kuid = user_id_arg(call)?;
    create(call, &kuid, true).await
}

pub async fn security_search(call: &Call<'_>) -> ActionResult {
    let kuid = user_id_arg(call)?;
    search(call, &kuid).await
}

pub async fn security_delete(call: &Call<'_>) -> ActionResult {
    let kuid = user_id_arg(call)?;
    delete(call, &kuid).await
}

/// `auth:createToken`: a token for the caller, finite (an infinite one is an API key's
/// job; the default is `security.authToken.expiresIn`), bounded by
/// `security.authToken.maxTTL`; `singleUse` is refused (not supported).
pub async fn create_token(call: &Call<'_>) -> ActionResult {
    let kuid = caller(call)?;
    if call.request.bool_arg("singleUse")? {
        return Err(ApiError::new(
            errors::INVALID_ARGUMENT,
            ["singleUse", "false (single-use tokens are not supported)"],
        ));
    }
    let configured = || {
        parse_lifetime(&call.node.settings.security.expires_in())
            .unwrap_or(Lifetime::Millis(3_600_000))
    };
    let lifetime = match call.request.arg("expiresIn") {
        None | Some(Value::Null) => configured(),
        Some(_) => key_lifetime(call, call.node.settings.security.max_ttl(), false)?,
    };
    let lifetime = match lifetime {
        Lifetime::Infinite => {
            return Err(ApiError::new(
                errors::INVALID_ARGUMENT,
                [
                    "expiresIn",
                    "a finite duration (use an API key for a token that never expires)",
                ],
            ));
        }
        finite => finite,
    };
    let issued = new_session(call, &kuid, lifetime).await?;
    Ok(Reply::Json(json!({
        "expiresAt": issued.expires_at,
        "singleUse": false,
        "token": issued.token,
        "ttl": issued.ttl,
    })))
}
