//! The `auth` controller (PROTOCOL.md §4.2): the actions that need no session registry
//! or cookie yet.

use std::time::Duration;

use serde_json::{Value, json};

use super::identity::{ANONYMOUS, algorithm, store_read_error, store_write_error, verify_token};
use super::{ActionResult, Call, Reply};
use crate::auth::messages::{Revoke, Unlink};
use crate::auth::{credentials, token};
use crate::config::timespan::{Lifetime, parse_lifetime};
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;
use crate::security::model::rights;
use crate::storage::Kind;

fn strategy_arg(call: &Call<'_>) -> Result<(), ApiError> {
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
    let store = &call.node.store;
    let credential = store
        .get(Kind::Credential, username)
        .await
        .map_err(store_read_error)?;
    let hash = credential
        .as_ref()
        .and_then(|c| c.get("hash"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The same work and the same answer for an unknown user and a wrong password.
    if !credentials::verify(password.to_owned(), hash).await {
        return Err(ApiError::new(
            errors::STRATEGY_MISSING_USER,
            ["wrong username or password"],
        ));
    }
    let kuid = credential
        .as_ref()
        .and_then(|c| c.get("kuid"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let issued = token::issue(
        algorithm(call.node),
        call.node.secret.as_bytes(),
        &kuid,
        lifetime,
        now_ms(),
    );
    store
        .put_token(&issued.token, &kuid, issued.ttl.map(Duration::from_millis))
        .await
        .map_err(|e| ApiError::new(errors::TOKEN_GENERATION_FAILED, [e.to_string()]))?;
    super::link_connection(call.node, call.caller, &issued.token, issued.expires_at);
    Ok(Reply::Json(json!({
        "_id": kuid,
        "expiresAt": issued.expires_at.map_or(json!(-1), Value::from),
        "jwt": issued.token,
        "ttl": issued.ttl.map_or(json!(-1), Value::from),
    })))
}

pub async fn logout(call: &Call<'_>) -> ActionResult {
    require_user(call)?;
    let store = &call.node.store;
    let tokens = if call.request.bool_arg("global")? {
        store
            .user_tokens(&call.identity.kuid)
            .await
            .map_err(store_read_error)?
    } else {
        call.identity.token.iter().cloned().collect()
    };
    // The caller keeps its subscriptions and gets no TokenExpired; the others do.
    call.node.sessions.do_send(Unlink {
        connection_id: call.caller.connection_id.clone(),
    });
    for token in &tokens {
        store.delete_token(token).await.map_err(store_write_error)?;
    }
    call.node.sessions.do_send(Revoke { tokens });
    Ok(Reply::Json(json!({"acknowledged": true})))
}

pub async fn check_token(call: &Call<'_>) -> ActionResult {
    let token = match call.request.body.as_ref().and_then(|b| b.get("token")) {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()).filter(|t| !t.is_empty()),
        Some(_) => return Err(ApiError::invalid_type("body.token", "string")),
    };
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
        .get(Kind::Login, &identity.kuid)
        .await
        .map_err(store_read_error)?
        .is_some();
    Ok(Reply::Json(
        json!({"_id": identity.kuid, "_source": user, "strategies": if has_login { json!(["local"]) } else { json!([]) }}),
    ))
}

pub async fn get_my_rights(call: &Call<'_>) -> ActionResult {
    let security = call
        .node
        .security
        .current(&call.node.store)
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

pub async fn get_strategies(_: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(json!(["local"])))
}
