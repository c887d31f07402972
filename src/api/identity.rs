//! Steps 9 to 13 of the processing order: who is asking (token, user), may they
//! (rights), and not too often (rate limits).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::cookie::AuthCookie;
use crate::auth::token::{self, Algorithm, TokenError};
use crate::node::Node;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::{Request, now_ms};
use crate::security::cache::Snapshot;
use crate::security::model::{Profile, is_allowed, user_rate_limit};
use crate::storage::StoreError;

pub const ANONYMOUS: &str = "-1";

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub kuid: String,
    pub profile_ids: Vec<String>,
    /// The stored user; None for anonymous.
    pub user: Option<Arc<Value>>,
    /// The verified token; None for anonymous.
    pub token: Option<String>,
    /// When the token expires, in ms since the epoch (second precision); None if never.
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            kuid: ANONYMOUS.into(),
            profile_ids: vec!["anonymous".into()],
            user: None,
            token: None,
            expires_at: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.token.is_none()
    }
}

pub fn store_read_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::plain(errors::CACHE_NOT_CONNECTED),
        StoreError::Failed(reason) => ApiError::new(errors::CACHE_READ_FAILED, [reason]),
    }
}

pub fn store_write_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::plain(errors::CACHE_NOT_CONNECTED),
        StoreError::Failed(reason) => ApiError::new(errors::CACHE_WRITE_FAILED, [reason]),
    }
}

pub fn algorithm(node: &Node) -> Algorithm {
    Algorithm::parse(node.settings.security.algorithm()).unwrap_or(Algorithm::Hs256)
}

/// Checks a token: signature and expiry (§5.4 steps 2–3), then the store (4–5). A token
/// this node verified before is answered from its cache (`storage::hot`).
pub async fn verify_token(node: &Node, token: &str) -> Result<(String, Option<u64>), ApiError> {
    if let Some((kuid, expires_at)) = node.store.cached_token(token) {
        return Ok((kuid.to_string(), expires_at));
    }
    let claims = token::verify(algorithm(node), node.secret.as_bytes(), token, now_ms()).map_err(
        |e| match e {
            TokenError::Invalid => ApiError::plain(errors::TOKEN_INVALID),
            TokenError::Expired => ApiError::plain(errors::TOKEN_EXPIRED),
        },
    )?;
    let expires_at = claims.exp.map(|s| s * 1000);
    let held = node
        .store
        .confirm_token(token, &claims.kuid, expires_at)
        .await
        .map_err(|e| ApiError::new(errors::TOKEN_VERIFICATION_ERROR, [e.to_string()]))?;
    if !held {
        return Err(ApiError::plain(errors::TOKEN_INVALID));
    }
    Ok((claims.kuid, expires_at))
}

/// Steps 9 and 10: no token is anonymous; a token must verify and name a stored user.
pub async fn authenticate(node: &Node, token: Option<&str>) -> Result<Identity, ApiError> {
    let Some(token) = token else {
        return Ok(Identity::anonymous());
    };
    let (kuid, expires_at) = verify_token(node, token).await?;
    let user = node
        .store
        .request_user(&kuid)
        .await
        .map_err(store_read_error)?
        .ok_or_else(|| ApiError::new(errors::USER_NOT_FOUND, [kuid.as_str()]))?;
    let profile_ids = profile_ids(&user);
    Ok(Identity {
        kuid,
        profile_ids,
        user: Some(user),
        token: Some(token.to_owned()),
        expires_at,
    })
}

pub fn profile_ids(user: &Value) -> Vec<String> {
    user.get("profileIds")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Step 12: anonymous callers get 401, users 403.
pub fn check_rights(
    identity: &Identity,
    profiles: &[&Profile],
    roles: &HashMap<String, crate::security::model::Role>,
    request: &Request,
) -> Result<(), ApiError> {
    let index = request.arg("index").and_then(Value::as_str);
    let collection = request.arg("collection").and_then(Value::as_str);
    if is_allowed(
        profiles,
        roles,
        &request.controller,
        &request.action,
        index,
        collection,
    ) {
        return Ok(());
    }
    Err(rights_error(identity, &request.controller, &request.action))
}

/// The roles and profiles now (cached; re-read when they changed).
pub async fn current_security(node: &Node) -> Result<Arc<Snapshot>, ApiError> {
    node.security
        .current(&node.store, &node.settings)
        .await
        .map_err(store_read_error)
}

impl Identity {
    /// The identity's profiles, as `security` holds them.
    pub fn profiles_in<'a>(&self, security: &'a Snapshot) -> Vec<&'a Profile> {
        self.profile_ids
            .iter()
            .filter_map(|id| security.profiles.get(id))
            .collect()
    }
}

/// Whether the bearer of `token` (anonymous without one) may call `controller:action`
/// (no index or collection): steps 9, 10 and 12 alone, for what is served outside the
/// API but guarded by an action's rights (`GET /metrics` by `server:metrics`).
pub async fn authorize(
    node: &Node,
    token: Option<&str>,
    controller: &str,
    action: &str,
) -> Result<(), ApiError> {
    let identity = authenticate(node, token).await?;
    let security = current_security(node).await?;
    let profiles = identity.profiles_in(&security);
    if is_allowed(&profiles, &security.roles, controller, action, None, None) {
        Ok(())
    } else {
        Err(rights_error(&identity, controller, action))
    }
}

/// Step 12's refusal: 401 for anonymous callers, 403 for others.
pub fn rights_error(identity: &Identity, controller: &str, action: &str) -> ApiError {
    if identity.is_anonymous() {
        ApiError::new(errors::RIGHTS_UNAUTHORIZED, [controller, action, ANONYMOUS])
    } else {
        ApiError::new(
            errors::RIGHTS_FORBIDDEN,
            [controller, action, identity.kuid.as_str()],
        )
    }
}

/// Step 13 for everything but `auth:login`: the user's profiles' rate limit, per node.
pub fn check_user_rate(
    node: &Node,
    identity: &Identity,
    profiles: &[&Profile],
    request: &Request,
) -> Result<(), ApiError> {
    if request.controller == "auth"
        && (request.action == "login" || (request.action == "logout" && !identity.is_anonymous()))
    {
        return Ok(());
    }
    match user_rate_limit(profiles) {
        Some(limit) if !node.user_rates.admit(&identity.kuid, limit) => {
            Err(ApiError::plain(errors::TOO_MANY_REQUESTS))
        }
        _ => Ok(()),
    }
}

/// The token a request authenticates with, after step 8 (PROTOCOL.md §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub token: Option<String>,
    /// The token is the `authToken` cookie and the request asked for cookie mode.
    pub cookie_mode_token: bool,
    /// `http.cookieAuthentication` and the request's `cookieAuth` are both true.
    pub cookie_mode: bool,
}

/// Step 8, the decision matrix of §6.2.
pub fn resolve_token(
    cookie_enabled: bool,
    asked: bool,
    cookie: &AuthCookie,
    jwt: Option<&str>,
) -> Result<Resolved, ApiError> {
    // An origin that may not carry credentials (§6.4) sees cookie authentication as off,
    // and its cookie as absent.
    let cookie_enabled = cookie_enabled && *cookie != AuthCookie::Withheld;
    if !cookie_enabled && asked {
        return Err(ApiError::plain(errors::COOKIE_UNSUPPORTED));
    }
    let cookie = match cookie {
        AuthCookie::Invalid => return Err(ApiError::plain(errors::COOKIE_INVALID)),
        AuthCookie::Usable(value) => Some(value.as_str()),
        AuthCookie::Unusable | AuthCookie::Withheld => None,
    };
    let cookie_mode = cookie_enabled && asked;
    match (cookie, jwt) {
        (Some(_), _) if !cookie_enabled => Err(ApiError::plain(errors::COOKIE_UNSUPPORTED)),
        (Some(_), Some(_)) => Err(ApiError::new(
            errors::TOKEN_VERIFICATION_ERROR,
            ["Both token and cookie are present, could not decide which one to use"],
        )),
        (Some(cookie), None) => Ok(Resolved {
            token: Some(cookie.to_owned()),
            cookie_mode_token: cookie_mode,
            cookie_mode,
        }),
        (None, jwt) => Ok(Resolved {
            token: jwt.map(str::to_owned),
            cookie_mode_token: false,
            cookie_mode,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable() -> AuthCookie {
        AuthCookie::Usable("k".into())
    }

    fn id(r: Result<Resolved, ApiError>) -> Option<&'static str> {
        r.err().and_then(|e| e.id())
    }

    #[test]
    fn the_decision_matrix_row_by_row() {
        // 1: cookies off, cookieAuth asked.
        assert_eq!(
            id(resolve_token(false, true, &AuthCookie::Unusable, None)),
            Some("security.cookie.unsupported")
        );
        // 2: cookies off, a usable cookie anyway.
        assert_eq!(
            id(resolve_token(false, false, &usable(), Some("j"))),
            Some("security.cookie.unsupported")
        );
        // 3: a cookie and a jwt.
        let both = resolve_token(true, false, &usable(), Some("j")).unwrap_err();
        assert_eq!(
            both.message(),
            "Error verifying token: Both token and cookie are present, could not decide which one to use"
        );
        // 4: cookie mode with a cookie.
        assert_eq!(
            resolve_token(true, true, &usable(), None).unwrap(),
            Resolved {
                token: Some("k".into()),
                cookie_mode_token: true,
                cookie_mode: true
            }
        );
        // 5: a cookie without cookieAuth: still the token.
        assert_eq!(
            resolve_token(true, false, &usable(), None).unwrap(),
            Resolved {
                token: Some("k".into()),
                cookie_mode_token: false,
                cookie_mode: false
            }
        );
        // 6 and 7: no cookie: the jwt or anonymous.
        assert_eq!(
            resolve_token(false, false, &AuthCookie::Unusable, Some("j"))
                .unwrap()
                .token
                .as_deref(),
            Some("j")
        );
        assert_eq!(
            resolve_token(true, true, &AuthCookie::Unusable, None).unwrap(),
            Resolved {
                token: None,
                cookie_mode_token: false,
                cookie_mode: true
            }
        );
        // An origin that may not carry credentials: cookie mode refused, the cookie
        // ignored (never row 2's error), the jwt or anonymous.
        assert_eq!(
            id(resolve_token(true, true, &AuthCookie::Withheld, None)),
            Some("security.cookie.unsupported")
        );
        assert_eq!(
            resolve_token(true, false, &AuthCookie::Withheld, Some("j")).unwrap(),
            Resolved {
                token: Some("j".into()),
                cookie_mode_token: false,
                cookie_mode: false
            }
        );
        // An invalid cookie is refused before rows 2 to 5.
        assert_eq!(
            id(resolve_token(false, false, &AuthCookie::Invalid, None)),
            Some("security.cookie.invalid")
        );
    }
}
