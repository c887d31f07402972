//! The `security` controller (PROTOCOL.md §4.4): users, roles and profiles.

use serde_json::{Map, Value, json};

use super::args::{id_arg, ids_body, info_for, required_body, strings, touch};
use super::identity::{store_read_error, store_write_error};
use super::{ActionResult, Call, Reply};
use crate::auth::credentials;
use crate::auth::token;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;
use crate::security::bootstrap::admin_exists;
use crate::security::model::{is_allowed, rights};
use crate::storage::Kind;

/// Whether `kuid` has local credentials.
pub(super) async fn has_local_credentials(call: &Call<'_>, kuid: &str) -> Result<bool, ApiError> {
    Ok(call
        .node
        .store
        .username_of(kuid)
        .await
        .map_err(store_read_error)?
        .is_some())
}

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

/// Gives `kuid` local credentials; 412 when the username is taken.
pub(super) async fn add_credentials(
    call: &Call<'_>,
    kuid: &str,
    username: &str,
    password: String,
) -> Result<(), ApiError> {
    let hash = credentials::hash(password).await?;
    let added = call
        .node
        .store
        .add_credentials(kuid, username, &hash)
        .await
        .map_err(store_write_error)?;
    if added {
        Ok(())
    } else {
        Err(ApiError::bare(
            412,
            format!("Login \"{username}\" is already used."),
        ))
    }
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

/// Whether an administrator exists, or ever did on this store: a store that lost its data
/// (Redis emptied) must not hand the cluster to the first caller.
async fn admin_was_created(call: &Call<'_>) -> Result<bool, ApiError> {
    let node = call.node;
    if node.security.admin_was_created() {
        return Ok(true);
    }
    let marked = node
        .store
        .marker()
        .await
        .map_err(store_read_error)?
        .is_some_and(|m| m.admin_created);
    Ok(marked || admin_exists(&node.store).await.map_err(store_read_error)?)
}

pub async fn create_first_admin(call: &Call<'_>) -> ActionResult {
    let store = &call.node.store;
    if admin_was_created(call).await? {
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
        add_credentials(call, &kuid, &username, password).await?;
    }
    store
        .put(Kind::User, &kuid, &source)
        .await
        .map_err(store_write_error)?;
    store
        .mark_admin_created()
        .await
        .map_err(store_write_error)?;
    call.node.security.note_admin_created();
    if call.request.bool_arg("reset")? {
        install_standard_rights(call).await?;
    }
    Ok(Reply::Json(json!({"_id": kuid, "_source": source})))
}

/// Creates or replaces every role of `security.standard.roles`, then every profile of
/// `security.standard.profiles`.
async fn install_standard_rights(call: &Call<'_>) -> Result<(), ApiError> {
    let standard = &call.node.settings.security.standard;
    let info = info_for(call);
    for (kind, documents) in [
        (Kind::Role, &standard.roles),
        (Kind::Profile, &standard.profiles),
    ] {
        for (id, document) in documents {
            let mut document = document.clone();
            document["_kuzzle_info"] = info.clone();
            call.node
                .store
                .put(kind, id, &document)
                .await
                .map_err(store_write_error)?;
        }
    }
    Ok(())
}

/// `restrictDefaultRights`: what `createFirstAdmin` with `reset` does to the roles and
/// profiles, alone.
pub async fn restrict_default_rights(call: &Call<'_>) -> ActionResult {
    install_standard_rights(call).await?;
    Ok(Reply::Json(Value::Null))
}

const RESERVED_KUIDS: [&str; 2] = ["-1", "anonymous"];

/// `profileIds`: a non-empty array of strings naming stored profiles.
async fn checked_profile_ids(
    call: &Call<'_>,
    value: Option<&Value>,
    path: &str,
) -> Result<Vec<String>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Err(ApiError::missing_argument(path));
    };
    let Some(items) = value
        .as_array()
        .filter(|items| items.iter().all(Value::is_string))
    else {
        return Err(ApiError::invalid_type("profileIds", "string[]"));
    };
    if items.is_empty() {
        return Err(ApiError::new(errors::EMPTY_ARGUMENT, ["profileIds"]));
    }
    let ids: Vec<String> = items
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    for id in &ids {
        if call
            .node
            .store
            .get(Kind::Profile, id)
            .await
            .map_err(store_read_error)?
            .is_none()
        {
            return Err(ApiError::new(errors::PROFILE_NOT_FOUND, [id.as_str()]));
        }
    }
    Ok(ids)
}

/// Stores a new user with optional local credentials (PROTOCOL.md §4.4, user creation).
async fn create_user_with(
    call: &Call<'_>,
    kuid: String,
    profile_ids: Vec<String>,
    content: Map<String, Value>,
    body: &Value,
) -> ActionResult {
    let store = &call.node.store;
    if RESERVED_KUIDS.contains(&kuid.as_str())
        || store
            .get(Kind::User, &kuid)
            .await
            .map_err(store_read_error)?
            .is_some()
    {
        return Err(ApiError::new(errors::USER_ALREADY_EXISTS, [kuid.as_str()]));
    }
    if let Some(Value::Object(strategies)) = body.get("credentials")
        && let Some(unknown) = strategies.keys().find(|s| *s != "local")
    {
        return Err(ApiError::new(errors::UNKNOWN_STRATEGY, [unknown.as_str()]));
    }
    if has_local_credentials(call, &kuid).await? {
        return Err(ApiError::new(
            errors::DATABASE_INCONSISTENCY,
            [kuid.as_str()],
        ));
    }
    let credentials = local_credentials(body)?;
    let mut source = Map::new();
    source.insert("profileIds".into(), json!(profile_ids));
    source.extend(
        content
            .into_iter()
            .filter(|(k, _)| k != "_id" && k != "_kuzzle_info" && k != "profileIds"),
    );
    source.insert("_kuzzle_info".into(), info_for(call));
    let source = Value::Object(source);
    if let Some((username, password)) = credentials {
        add_credentials(call, &kuid, &username, password).await?;
    }
    store
        .put(Kind::User, &kuid, &source)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": kuid, "_source": source})))
}

fn content_of(body: &Value, required: bool) -> Result<Map<String, Value>, ApiError> {
    match body.get("content") {
        None | Some(Value::Null) if required => Err(ApiError::missing_argument("body.content")),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(ApiError::invalid_type("body.content", "object")),
    }
}

pub async fn create_user(call: &Call<'_>) -> ActionResult {
    let body = required_body(call)?;
    let content = content_of(&body, true)?;
    let profile_ids =
        checked_profile_ids(call, content.get("profileIds"), "body.content.profileIds").await?;
    let kuid = new_kuid(call)?;
    create_user_with(call, kuid, profile_ids, content, &body).await
}

pub async fn create_restricted_user(call: &Call<'_>) -> ActionResult {
    let body = call.request.body.clone().unwrap_or_else(|| json!({}));
    let content = content_of(&body, false)?;
    if content.contains_key("profileIds") {
        return Err(ApiError::new(
            errors::FORBIDDEN_ARGUMENT,
            ["body.content.profileIds"],
        ));
    }
    let profile_ids = call.node.settings.security.restricted_profile_ids.clone();
    let kuid = new_kuid(call)?;
    create_user_with(call, kuid, profile_ids, content, &body).await
}

/// The stored user; None for an unknown or reserved id (CN-22).
async fn stored_user(call: &Call<'_>, kuid: &str) -> Result<Option<Value>, ApiError> {
    if RESERVED_KUIDS.contains(&kuid) {
        return Ok(None);
    }
    call.node
        .store
        .get(Kind::User, kuid)
        .await
        .map_err(store_read_error)
}

/// The stored user, or `not_found` (reserved ids included, CN-22).
pub(super) async fn existing_user(call: &Call<'_>, kuid: &str) -> Result<Value, ApiError> {
    stored_user(call, kuid)
        .await?
        .ok_or_else(|| ApiError::new(errors::USER_NOT_FOUND, [kuid]))
}

pub async fn get_user(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    if kuid == "-1" {
        return Ok(Reply::Json(
            json!({"_id": "-1", "_source": {"profileIds": ["anonymous"], "name": "Anonymous"}}),
        ));
    }
    let user = existing_user(call, &kuid).await?;
    Ok(Reply::Json(json!({"_id": kuid, "_source": user})))
}

/// Objects merge recursively; arrays and scalars replace.
pub(super) fn deep_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub async fn update_user(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    let patch = match &call.request.body {
        Some(body @ Value::Object(_)) => body.clone(),
        Some(_) => return Err(ApiError::invalid_type("body", "object")),
        None => return Err(ApiError::plain(errors::BODY_REQUIRED)),
    };
    let user = existing_user(call, &kuid).await?;
    change_user(call, &kuid, user, patch, "body.profileIds").await
}

/// Deep-merges `patch` into the stored `user` (`profileIds` checked and replaced).
async fn change_user(
    call: &Call<'_>,
    kuid: &str,
    mut user: Value,
    mut patch: Value,
    profile_ids_path: &str,
) -> ActionResult {
    if let Value::Object(map) = &mut patch {
        map.remove("_id");
        map.remove("_kuzzle_info");
        if let Some(ids) = map.get("profileIds").cloned().filter(|v| !v.is_null()) {
            map.insert(
                "profileIds".into(),
                json!(checked_profile_ids(call, Some(&ids), profile_ids_path).await?),
            );
        } else {
            map.remove("profileIds");
        }
    }
    deep_merge(&mut user, &patch);
    touch(&mut user, call);
    call.node
        .store
        .put(Kind::User, kuid, &user)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": kuid, "_source": user})))
}

/// `upsertUser`: updates the user like `updateUser` with `body.content`, or creates it
/// from `body.default` overridden by `body.content`.
pub async fn upsert_user(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    let body = required_body(call)?;
    let content = content_of(&body, true)?;
    match content.get("profileIds") {
        None | Some(Value::Null) => {
            return Err(ApiError::missing_argument("body.content.profileIds"));
        }
        Some(Value::Array(_)) => {}
        Some(_) => return Err(ApiError::invalid_type("body.content.profileIds", "array")),
    }
    let defaults = match body.get("default") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::invalid_type("body.default", "object")),
    };
    if let Some(user) = stored_user(call, &kuid).await? {
        return change_user(
            call,
            &kuid,
            user,
            Value::Object(content),
            "body.content.profileIds",
        )
        .await;
    }
    let profile_ids =
        checked_profile_ids(call, content.get("profileIds"), "body.content.profileIds").await?;
    let mut creating = defaults;
    creating.extend(content);
    create_user_with(call, kuid, profile_ids, creating, &body).await
}

/// `mGetUsers`: the stored users among `body.ids` (or the `ids` argument, an array or a
/// comma-separated string), in that order.
pub async fn m_get_users(call: &Call<'_>) -> ActionResult {
    let limit = call.node.settings.limits.documents_fetch_count;
    let ids = match call.request.body.as_ref().and_then(|b| b.get("ids")) {
        Some(_) => ids_body(call, limit)?,
        None => match call.request.arg("ids") {
            None | Some(Value::Null) => return Err(ApiError::missing_argument("ids")),
            Some(Value::String(list)) => list
                .split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(items)) => strings(items, "ids")?,
            Some(_) => return Err(ApiError::invalid_type("ids", "array")),
        },
    };
    if ids.len() > limit as usize {
        return Err(ApiError::plain(errors::GET_LIMIT_EXCEEDED));
    }
    let mut hits = Vec::new();
    for kuid in ids {
        if let Some(user) = stored_user(call, &kuid).await? {
            hits.push(json!({"_id": kuid, "_source": user}));
        }
    }
    Ok(Reply::Json(json!({"hits": hits})))
}

pub async fn replace_user(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    let Some(Value::Object(body)) = &call.request.body else {
        return Err(ApiError::plain(errors::BODY_REQUIRED));
    };
    let previous = existing_user(call, &kuid).await?;
    let profile_ids = checked_profile_ids(call, body.get("profileIds"), "body.profileIds").await?;
    let mut source = Map::new();
    source.insert("profileIds".into(), json!(profile_ids));
    source.extend(
        body.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "_id" | "_kuzzle_info" | "profileIds"))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let mut source = Value::Object(source);
    source["_kuzzle_info"] = previous
        .get("_kuzzle_info")
        .cloned()
        .unwrap_or_else(|| info_for(call));
    touch(&mut source, call);
    call.node
        .store
        .put(Kind::User, &kuid, &source)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": kuid, "_source": source})))
}

pub async fn delete_user(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    delete_user_by_id(call, &kuid).await?;
    Ok(Reply::Json(json!({"_id": kuid})))
}

/// Deletes a user: its credentials, its API keys, every token (revoked on every node),
/// then the user.
async fn delete_user_by_id(call: &Call<'_>, kuid: &str) -> Result<(), ApiError> {
    existing_user(call, kuid).await?;
    let store = &call.node.store;
    store
        .remove_credentials(kuid)
        .await
        .map_err(store_write_error)?;
    for (id, _) in super::api_keys::of_user(call, kuid).await? {
        store
            .delete(Kind::ApiKey, &id)
            .await
            .map_err(store_write_error)?;
    }
    revoke_tokens_of(call, kuid, Revoke::All).await?;
    store
        .delete(Kind::User, kuid)
        .await
        .map_err(store_write_error)?;
    Ok(())
}

pub async fn m_delete_users(call: &Call<'_>) -> ActionResult {
    let ids = ids_body(call, call.node.settings.limits.documents_write_count)
        .map_err(super::args::write_limit)?;
    let (mut deleted, mut failures) = (Vec::new(), Vec::new());
    for kuid in ids {
        match delete_user_by_id(call, &kuid).await {
            Ok(()) => deleted.push(kuid),
            Err(e) => failures.push(e),
        }
    }
    Ok(super::args::deleted_reply(deleted, failures))
}

/// Which of a user's tokens `revoke_tokens_of` ends.
#[derive(Clone, Copy)]
pub(super) enum Revoke<'a> {
    /// Every token, API keys' included (the user is deleted).
    All,
    /// Session tokens (`logout` with `global`, `revokeTokens`, a new password), except
    /// `keep`; API keys live until they are deleted.
    SessionsExcept(Option<&'a str>),
}

/// Deletes a user's tokens and tells every node: their sockets get `TokenExpired`.
pub(super) async fn revoke_tokens_of(
    call: &Call<'_>,
    kuid: &str,
    which: Revoke<'_>,
) -> Result<(), ApiError> {
    let store = &call.node.store;
    let mut tokens = store.user_tokens(kuid).await.map_err(store_read_error)?;
    if let Revoke::SessionsExcept(keep) = which {
        tokens.retain(|t| !token::is_api_key(t) && Some(t.as_str()) != keep);
    }
    for token in &tokens {
        store.delete_token(token).await.map_err(store_write_error)?;
    }
    call.node.revoke(tokens);
    Ok(())
}

/// `revokeTokens`: every session token of the user, on every node (API keys stay).
pub async fn revoke_tokens(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    existing_user(call, &kuid).await?;
    revoke_tokens_of(call, &kuid, Revoke::SessionsExcept(None)).await?;
    Ok(Reply::Json(Value::Null))
}

/// The profiles a user has, as the request's snapshot knows them (`-1` is anonymous).
async fn user_profiles(call: &Call<'_>, kuid: &str) -> Result<Vec<String>, ApiError> {
    if kuid == "-1" {
        return Ok(vec!["anonymous".to_owned()]);
    }
    let user = existing_user(call, kuid).await?;
    Ok(super::identity::profile_ids(&user))
}

pub async fn get_user_rights(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    let ids = user_profiles(call, &kuid).await?;
    let profiles: Vec<_> = ids
        .iter()
        .filter_map(|id| call.security.profiles.get(id))
        .collect();
    Ok(Reply::Json(rights(&profiles, &call.security.roles)))
}

pub async fn get_user_strategies(call: &Call<'_>) -> ActionResult {
    let kuid = id_arg(call)?;
    user_profiles(call, &kuid).await?;
    let has_local = kuid != "-1" && has_local_credentials(call, &kuid).await?;
    let strategies: Vec<&str> = if has_local { vec!["local"] } else { vec![] };
    Ok(Reply::Json(
        json!({"strategies": strategies, "total": strategies.len()}),
    ))
}

/// Whether the user with `profile_ids` may run the request described by the body
/// (`controller`, `action`, and optionally `index` and `collection`).
pub(super) fn allowed_by(call: &Call<'_>, profile_ids: &[String]) -> ActionResult {
    let body = match &call.request.body {
        Some(body @ Value::Object(_)) => body,
        Some(_) => return Err(ApiError::invalid_type("body", "object")),
        None => return Err(ApiError::plain(errors::BODY_REQUIRED)),
    };
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::invalid_type(&format!("body.{name}"), "string")),
        }
    };
    let controller =
        text("controller")?.ok_or_else(|| ApiError::missing_argument("body.controller"))?;
    let action = text("action")?.ok_or_else(|| ApiError::missing_argument("body.action"))?;
    let profiles: Vec<_> = profile_ids
        .iter()
        .filter_map(|id| call.security.profiles.get(id))
        .collect();
    let allowed = is_allowed(
        &profiles,
        &call.security.roles,
        controller,
        action,
        text("index")?,
        text("collection")?,
    );
    Ok(Reply::Json(json!({"allowed": allowed})))
}

/// `security:checkRights`: whether the user `userId` may run the request in the body.
pub async fn check_rights(call: &Call<'_>) -> ActionResult {
    let kuid = match call.request.arg("userId") {
        None | Some(Value::Null) => return Err(ApiError::missing_argument("userId")),
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(ApiError::invalid_type("userId", "string")),
    };
    let ids = user_profiles(call, &kuid).await?;
    allowed_by(call, &ids)
}

pub async fn update_credentials(call: &Call<'_>) -> ActionResult {
    match call.request.arg("strategy").and_then(Value::as_str) {
        Some("local") => {}
        Some(other) => return Err(ApiError::new(errors::UNKNOWN_STRATEGY, [other])),
        None => return Err(ApiError::missing_argument("strategy")),
    }
    let kuid = id_arg(call)?;
    existing_user(call, &kuid).await?;
    super::auth::change_credentials(call, &kuid, call.identity.token.as_deref()).await
}
