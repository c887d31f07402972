//! The `auth` controller (PROTOCOL.md §4.2): the actions that need no session registry
//! or cookie yet.

use std::time::Duration;

use serde_json::{Value, json};

use super::identity::{ANONYMOUS, algorithm, store_read_error, store_write_error, verify_token};
use super::security::{Revoke, revoke_tokens_of};
use super::{ActionResult, Call, Reply};
use crate::auth::{cookie, credentials, token};
use crate::config::timespan::{Lifetime, parse_lifetime};
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;
use crate::security::model::rights;
use crate::storage::Kind;

pub(super) fn strategy_arg(call: &Call<'_>) -> Result<(), ApiError> {
    match call.request.arg("strategy") {
        None | Some(Value::Null) => Err(ApiError::missing_argument("strategy")),
        Some(Value::String(s)) if s == "local" => Ok(()),
        Some(Value::String(s)) => Err(ApiError::new(errors::UNKNOWN_STRATEGY, [s.as_str()])),
        Some(_) => Err(ApiError::invalid_type("strategy", "string")),
    }
}

/// "Requires a user": anonymous callers get `unauthorized` with two props.
fn require_user(call: &Call<'_>) -> Result<(), ApiError> {
    if call.identity.is_anonymous() {
        Err(ApiError::new(
            errors::RIGHTS_UNAUTHORIZED,
            ["auth", call.request.action.as_str()],
        ))
    } else {
        Ok(())
    }
}

/// `expiresIn`: a falsy value means the configured default; `maxTTL` applies (§5.2).
fn lifetime(call: &Call<'_>) -> Result<Lifetime, ApiError> {
    let security = &call.node.settings.security;
    let raw = match call.request.arg("expiresIn") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => security.expires_in(),
        Some(Value::String(s)) if s.is_empty() => security.expires_in(),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {
            return Err(ApiError::new(
                errors::INVALID_ARGUMENT,
                [
                    "expiresIn",
                    "a number of milliseconds, or a parsable timespan string",
                ],
            ));
        }
        Some(v) => v.clone(),
    };
    let lifetime = parse_lifetime(&raw).ok_or_else(|| {
        ApiError::new(
            errors::INVALID_ARGUMENT,
            [
                "expiresIn",
                "a number of milliseconds, or a parsable timespan string",
            ],
        )
    })?;
    let max = security.max_ttl();
    let exceeds = match lifetime {
        Lifetime::Infinite => max > -1,
        Lifetime::Millis(ms) => max > -1 && ms > max as u64,
    };
    if exceeds {
        return Err(ApiError::plain(errors::TOKEN_TTL_EXCEEDED));
    }
    Ok(lifetime)
}

fn body_or_arg<'a>(call: &'a Call<'_>, name: &str) -> Option<&'a str> {
    call.request
        .body
        .as_ref()
        .and_then(|b| b.get(name))
        .or_else(|| call.request.arg(name))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub async fn login(call: &Call<'_>) -> ActionResult {
    strategy_arg(call)?;
    let lifetime = lifetime(call)?;
    let missing = || ApiError::new(errors::STRATEGY_MISSING_USER, ["Missing credentials"]);
    let username = body_or_arg(call, "username").ok_or_else(missing)?;
    let password = body_or_arg(call, "password").ok_or_else(missing)?;
    let throttle = &call.node.logins;
    let address = call.caller.address;
    if throttle.check(username, address).await.is_err() {
        return Err(ApiError::plain(errors::TOO_MANY_LOGINS_REQUESTS));
    }
    let store = &call.node.store;
    let credential = store.credential(username).await.map_err(store_read_error)?;
    let hash = credential
        .as_ref()
        .map(|c| c.hash.clone())
        .filter(|h| !h.is_empty());
    // The same work and the same answer for an unknown user and a wrong password.
    let verified = credentials::verify(password.to_owned(), hash)
        .await
        .map_err(|_| ApiError::plain(errors::OVERLOADED))?;
    if !verified {
        throttle.record_failure(username, address).await;
        return Err(ApiError::new(
            errors::STRATEGY_MISSING_USER,
            ["wrong username or password"],
        ));
    }
    throttle.record_success(username, address).await;
    let kuid = credential.map(|c| c.kuid).unwrap_or_default();
    // A socket already linked to a token of this user: an infinite token is returned
    // unchanged; a finite one is replaced, and the sockets linked to it move along.
    let previous = call
        .caller
        .linked
        .borrow()
        .clone()
        .filter(|linked| linked.kuid == kuid);
    if let Some(previous) = &previous
        && previous.expires_at.is_none()
        && store
            .token_owner(&previous.token)
            .await
            .map_err(store_read_error)?
            .as_deref()
            == Some(kuid.as_str())
    {
        let unchanged = token::Issued {
            token: previous.token.clone(),
            kuid: kuid.clone(),
            expires_at: None,
            ttl: None,
        };
        return Ok(token_reply(call, &kuid, &unchanged));
    }
    let issued = new_session(call, &kuid, lifetime).await?;
    if let Some(previous) = previous {
        call.node
            .realtime
            .refreshed(previous.token, issued.token.clone(), issued.expires_at);
    }
    super::link_connection(
        call.node,
        call.caller,
        &kuid,
        &issued.token,
        issued.expires_at,
    );
    Ok(token_reply(call, &kuid, &issued))
}

pub async fn logout(call: &Call<'_>) -> ActionResult {
    let cookie_mode = call.resolved.cookie_mode;
    if !cookie_mode {
        require_user(call)?;
    }
    let global = call.request.bool_arg("global")?;
    // The caller keeps its subscriptions and gets no TokenExpired; the others do.
    call.node.realtime.unlink(call.caller.connection_id.clone());
    call.caller.linked.borrow_mut().take();
    if global {
        revoke_tokens_of(call, &call.identity.kuid, Revoke::SessionsExcept(None)).await?;
    } else if let Some(token) = call.identity.token.clone()
        && !token::is_api_key(&token)
    {
        // An API key ends only when it is deleted (auth:deleteApiKey).
        call.node
            .store
            .delete_token(&token)
            .await
            .map_err(store_write_error)?;
        call.node.revoke(vec![token]);
    }
    let acknowledged = json!({"acknowledged": true});
    Ok(if cookie_mode {
        Reply::JsonWithCookie(acknowledged, cookie::clear())
    } else {
        Reply::Json(acknowledged)
    })
}

pub async fn check_token(call: &Call<'_>) -> ActionResult {
    let token = if call.resolved.cookie_mode {
        call.resolved.token.as_deref()
    } else {
        body_token(call)?
    };
    check_token_value(call, token).await
}

fn body_token<'a>(call: &'a Call<'_>) -> Result<Option<&'a str>, ApiError> {
    match call.request.body.as_ref().and_then(|b| b.get("token")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.as_str()).filter(|t| !t.is_empty())),
        Some(_) => Err(ApiError::invalid_type("body.token", "string")),
    }
}

async fn check_token_value(call: &Call<'_>, token: Option<&str>) -> ActionResult {
    let Some(token) = token else {
        return Ok(Reply::Json(
            json!({"expiresAt": null, "kuid": ANONYMOUS, "valid": true}),
        ));
    };
    match verify_token(call.node, token).await {
        Ok((kuid, expires_at)) => Ok(Reply::Json(
            json!({"expiresAt": expires_at.map_or(json!(-1), Value::from), "kuid": kuid, "valid": true}),
        )),
        Err(e) if e.status() == 401 => {
            Ok(Reply::Json(json!({"state": e.message(), "valid": false})))
        }
        Err(e) => Err(e),
    }
}

pub async fn get_current_user(call: &Call<'_>) -> ActionResult {
    let identity = call.identity;
    let Some(user) = &identity.user else {
        return Ok(Reply::Json(
            json!({"_id": ANONYMOUS, "_source": {"profileIds": ["anonymous"], "name": "Anonymous"}, "strategies": []}),
        ));
    };
    let has_login = call
        .node
        .store
        .username_of(&identity.kuid)
        .await
        .map_err(store_read_error)?
        .is_some();
    Ok(Reply::Json(
        json!({"_id": identity.kuid, "_source": user.as_ref(), "strategies": if has_login { json!(["local"]) } else { json!([]) }}),
    ))
}

pub async fn get_my_rights(call: &Call<'_>) -> ActionResult {
    let security = call
        .node
        .security
        .current(&call.node.store, &call.node.settings)
        .await
        .map_err(store_read_error)?;
    let profiles: Vec<_> = call
        .identity
        .profile_ids
        .iter()
        .filter_map(|id| security.profiles.get(id))
        .collect();
    Ok(Reply::Json(rights(&profiles, &security.roles)))
}

/// `auth:checkRights`: whether the caller may run the request in the body.
pub async fn check_rights(call: &Call<'_>) -> ActionResult {
    super::security::allowed_by(call, &call.identity.profile_ids)
}

pub async fn get_strategies(_: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(json!(["local"])))
}

/// Signs a session token for `kuid` and stores it: from then on every node accepts it.
pub(super) async fn new_session(
    call: &Call<'_>,
    kuid: &str,
    lifetime: Lifetime,
) -> Result<token::Issued, ApiError> {
    let issued = token::issue(
        algorithm(call.node),
        call.node.secret.as_bytes(),
        kuid,
        lifetime,
        now_ms(),
    );
    keep_token(call, &issued).await?;
    Ok(issued)
}

/// Stores an issued token (a session's or an API key's) for its lifetime.
pub(super) async fn keep_token(call: &Call<'_>, issued: &token::Issued) -> Result<(), ApiError> {
    call.node
        .store
        .put_token(
            &issued.token,
            &issued.kuid,
            issued.ttl.map(Duration::from_millis),
        )
        .await
        .map_err(|e| ApiError::new(errors::TOKEN_GENERATION_FAILED, [e.to_string()]))
}

/// The result of login and refreshToken; in cookie mode the token goes in a cookie and
/// `jwt` is omitted (the SDK detects cookie support by its absence).
fn token_reply(call: &Call<'_>, kuid: &str, issued: &token::Issued) -> Reply {
    let mut result = json!({
        "_id": kuid,
        "expiresAt": issued.expires_at.map_or(json!(-1), Value::from),
        "jwt": issued.token,
        "ttl": issued.ttl.map_or(json!(-1), Value::from),
    });
    if !call.resolved.cookie_mode {
        return Reply::Json(result);
    }
    if let Value::Object(map) = &mut result {
        map.remove("jwt");
    }
    Reply::JsonWithCookie(result, cookie::set(&issued.token, issued.expires_at))
}

/// The marker kept, for the grace period, of a token that was refreshed.
fn refreshed_marker(token: &str) -> String {
    format!("refreshed:{token}")
}

pub async fn refresh_token(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    if let Some(strategy) = call.request.string_arg("strategy")?
        && strategy != "local"
    {
        return Err(ApiError::new(errors::UNKNOWN_STRATEGY, [strategy]));
    }
    let identity = call.identity;
    let old = identity.token.clone().unwrap_or_default();
    if token::is_api_key(&old) {
        return Err(ApiError::new(errors::TOKEN_REFRESH_FORBIDDEN, ["API Key"]));
    }
    if identity.expires_at.is_none() {
        return Err(ApiError::new(
            errors::TOKEN_REFRESH_FORBIDDEN,
            ["Token with infinite TTL"],
        ));
    }
    let store = &call.node.store;
    if store
        .token_owner(&refreshed_marker(&old))
        .await
        .map_err(store_read_error)?
        .is_some()
    {
        return Err(ApiError::plain(errors::TOKEN_INVALID));
    }
    let lifetime = lifetime(call)?;
    let issued = new_session(call, &identity.kuid, lifetime).await?;
    // The old token stays valid for the grace period, and cannot be refreshed again.
    let grace = Duration::from_millis(call.node.settings.security.grace_period().max(1));
    store
        .put_token(&old, &identity.kuid, Some(grace))
        .await
        .map_err(store_write_error)?;
    store
        .put_token(&refreshed_marker(&old), &identity.kuid, Some(grace))
        .await
        .map_err(store_write_error)?;
    call.node
        .realtime
        .refreshed(old, issued.token.clone(), issued.expires_at);
    super::link_connection(
        call.node,
        call.caller,
        &identity.kuid,
        &issued.token,
        issued.expires_at,
    );
    Ok(token_reply(call, &identity.kuid, &issued))
}

/// The caller's username for the local strategy, if it has credentials.
async fn my_username(call: &Call<'_>) -> Result<Option<String>, ApiError> {
    call.node
        .store
        .username_of(&call.identity.kuid)
        .await
        .map_err(store_read_error)
}

pub(super) fn no_credentials(kuid: &str) -> ApiError {
    ApiError::bare(412, format!("No credentials found for user \"{kuid}\"."))
}

pub async fn credentials_exist(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    strategy_arg(call)?;
    Ok(Reply::Json(json!(my_username(call).await?.is_some())))
}

pub async fn get_my_credentials(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    strategy_arg(call)?;
    let username = my_username(call)
        .await?
        .ok_or_else(|| no_credentials(&call.identity.kuid))?;
    Ok(Reply::Json(
        json!({"username": username, "kuid": call.identity.kuid}),
    ))
}

/// `{username, password}` for create and validate: both required, no `kuid`.
pub(super) fn credential_fields(call: &Call<'_>) -> Result<(String, String), ApiError> {
    let body = call.request.body.clone().unwrap_or_else(|| json!({}));
    if body.get("kuid").is_some() {
        return Err(ApiError::bare(
            400,
            "kuid cannot be specified in credentials.",
        ));
    }
    let field = |name: &str, message: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bare(400, message))
    };
    Ok((
        field("username", "Username required.")?,
        field("password", "Password required.")?,
    ))
}

pub async fn create_my_credentials(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    strategy_arg(call)?;
    let (username, password) = credential_fields(call)?;
    let kuid = &call.identity.kuid;
    if my_username(call).await?.is_some() {
        return Err(ApiError::bare(
            412,
            format!("A strategy already exists for user \"{kuid}\"."),
        ));
    }
    super::security::add_credentials(call, kuid, &username, password).await?;
    Ok(Reply::Json(json!({"username": username, "kuid": kuid})))
}

pub async fn validate_my_credentials(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    strategy_arg(call)?;
    credential_fields(call)?;
    Ok(Reply::Json(json!(true)))
}

pub async fn delete_my_credentials(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    strategy_arg(call)?;
    let kuid = &call.identity.kuid;
    if my_username(call).await?.is_none() {
        return Err(no_credentials(kuid));
    }
    call.node
        .store
        .remove_credentials(kuid)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"acknowledged": true})))
}

/// Changes the username and/or password of `kuid`. A new password revokes every other
/// token of the user (CN-21); `keep` is the calling token.
pub(super) async fn change_credentials(
    call: &Call<'_>,
    kuid: &str,
    keep: Option<&str>,
) -> ActionResult {
    let body = call.request.body.clone().unwrap_or_else(|| json!({}));
    if body.get("kuid").is_some() {
        return Err(ApiError::bare(
            400,
            "The request must not contain a kuid attribute.",
        ));
    }
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (new_username, new_password) = (text("username"), text("password"));
    if new_username.is_none() && new_password.is_none() {
        return Err(ApiError::bare(400, "Missing username or password."));
    }
    let store = &call.node.store;
    let username = store
        .username_of(kuid)
        .await
        .map_err(store_read_error)?
        .ok_or_else(|| no_credentials(kuid))?;
    let hash = match &new_password {
        Some(password) => credentials::hash(password.clone()).await?,
        None => store
            .credential(&username)
            .await
            .map_err(store_read_error)?
            .map(|c| c.hash)
            .unwrap_or_default(),
    };
    let final_username = new_username.unwrap_or_else(|| username.clone());
    let replaced = store
        .replace_credentials(kuid, &username, &final_username, &hash)
        .await
        .map_err(store_write_error)?;
    if !replaced {
        return Err(ApiError::bare(
            412,
            format!("Login \"{final_username}\" is already used."),
        ));
    }
    if new_password.is_some() {
        revoke_tokens_of(call, kuid, Revoke::SessionsExcept(keep)).await?;
    }
    Ok(Reply::Json(
        json!({"username": final_username, "kuid": kuid}),
    ))
}

pub async fn update_my_credentials(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    strategy_arg(call)?;
    change_credentials(call, &call.identity.kuid, call.identity.token.as_deref()).await
}

pub async fn update_self(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    let Some(Value::Object(patch)) = &call.request.body else {
        return Err(ApiError::plain(errors::BODY_REQUIRED));
    };
    for field in ["_id", "profileIds"] {
        if patch.get(field).is_some_and(|v| {
            !v.is_null() && v != &json!(false) && v != &json!("") && v != &json!(0)
        }) {
            return Err(ApiError::new(
                errors::FORBIDDEN_ARGUMENT,
                [format!("body.{field}")],
            ));
        }
    }
    let kuid = &call.identity.kuid;
    let store = &call.node.store;
    let mut user = store
        .get(Kind::User, kuid)
        .await
        .map_err(store_read_error)?
        .ok_or_else(|| ApiError::new(errors::USER_NOT_FOUND, [kuid.as_str()]))?;
    let mut patch = Value::Object(patch.clone());
    if let Value::Object(map) = &mut patch {
        map.remove("_id");
        map.remove("profileIds");
        map.remove("_kuzzle_info");
    }
    super::security::deep_merge(&mut user, &patch);
    super::args::touch(&mut user, call);
    store
        .put(Kind::User, kuid, &user)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": kuid, "_source": user})))
}
