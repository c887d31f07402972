//! The `security` controller (PROTOCOL.md §4.4): users, roles and profiles.

use serde_json::{Map, Value, json};

use super::identity::{store_read_error, store_write_error};
use super::{ActionResult, Call, Reply};
use crate::auth::credentials;
use crate::protocol::errors::{self, ApiError, ErrorDef};
use crate::protocol::now_ms;
use crate::security::bootstrap::admin_exists;
use crate::security::model::{Profile, role_to_json, validate_profile, validate_role};
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
    }
    Ok(Reply::Json(json!({"_id": kuid, "_source": source})))
}

fn id_arg(call: &Call<'_>) -> Result<String, ApiError> {
    match call.request.arg("_id") {
        None | Some(Value::Null) => Err(ApiError::missing_argument("_id")),
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::String(_)) => Err(ApiError::missing_argument("_id")),
        Some(_) => Err(ApiError::invalid_type("_id", "string")),
    }
}

fn info_for(call: &Call<'_>) -> Value {
    json!({"author": call.identity.kuid, "createdAt": now_ms(), "updatedAt": null, "updater": null})
}

/// Marks a stored document as updated by the caller.
pub(super) fn touch(document: &mut Value, call: &Call<'_>) {
    let info = document
        .get("_kuzzle_info")
        .cloned()
        .unwrap_or_else(|| info_for(call));
    let mut info = if info.is_object() {
        info
    } else {
        info_for(call)
    };
    info["updatedAt"] = json!(now_ms());
    info["updater"] = json!(call.identity.kuid);
    document["_kuzzle_info"] = info;
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
    if store
        .username_of(&kuid)
        .await
        .map_err(store_read_error)?
        .is_some()
    {
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
    let body = call
        .request
        .body
        .clone()
        .ok_or_else(|| ApiError::plain(errors::BODY_REQUIRED))?;
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

/// The stored user, or `not_found` (reserved ids included, CN-22).
async fn existing_user(call: &Call<'_>, kuid: &str) -> Result<Value, ApiError> {
    if RESERVED_KUIDS.contains(&kuid) {
        return Err(ApiError::new(errors::USER_NOT_FOUND, [kuid]));
    }
    call.node
        .store
        .get(Kind::User, kuid)
        .await
        .map_err(store_read_error)?
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
    let mut user = existing_user(call, &kuid).await?;
    let mut patch = patch;
    if let Value::Object(map) = &mut patch {
        map.remove("_id");
        map.remove("_kuzzle_info");
        if let Some(ids) = map.get("profileIds").cloned() {
            map.insert(
                "profileIds".into(),
                json!(checked_profile_ids(call, Some(&ids), "body.profileIds").await?),
            );
        }
    }
    deep_merge(&mut user, &patch);
    touch(&mut user, call);
    call.node
        .store
        .put(Kind::User, &kuid, &user)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": kuid, "_source": user})))
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
    existing_user(call, &kuid).await?;
    let store = &call.node.store;
    store
        .remove_credentials(&kuid)
        .await
        .map_err(store_write_error)?;
    let tokens = store.user_tokens(&kuid).await.map_err(store_read_error)?;
    for token in &tokens {
        store.delete_token(token).await.map_err(store_write_error)?;
    }
    call.node.revoke(tokens);
    store
        .delete(Kind::User, &kuid)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": kuid})))
}

const PROTECTED: [&str; 3] = ["anonymous", "default", "admin"];

/// A stored role or profile, or `not_found`.
async fn get_document(call: &Call<'_>, kind: Kind, not_found: &'static ErrorDef) -> ActionResult {
    let id = id_arg(call)?;
    let document = call
        .node
        .store
        .get(kind, &id)
        .await
        .map_err(store_read_error)?;
    let document = document.ok_or_else(|| ApiError::new(not_found, [id.as_str()]))?;
    Ok(Reply::Json(json!({"_id": id, "_source": document})))
}

/// Stores a role or profile and tells every node its rights cache is stale.
async fn save_security_document(
    call: &Call<'_>,
    kind: Kind,
    id: &str,
    source: &Value,
) -> Result<(), ApiError> {
    let store = &call.node.store;
    store
        .put(kind, id, source)
        .await
        .map_err(store_write_error)?;
    Ok(())
}

/// The id of a role or profile that may be deleted: not protected, and stored.
async fn deletable_id(
    call: &Call<'_>,
    kind: Kind,
    protected: &'static ErrorDef,
    not_found: &'static ErrorDef,
) -> Result<String, ApiError> {
    let id = id_arg(call)?;
    if PROTECTED.contains(&id.as_str()) {
        return Err(ApiError::plain(protected));
    }
    if call
        .node
        .store
        .get(kind, &id)
        .await
        .map_err(store_read_error)?
        .is_none()
    {
        return Err(ApiError::new(not_found, [id.as_str()]));
    }
    Ok(id)
}

pub async fn create_or_replace_role(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    let body = call
        .request
        .body
        .clone()
        .ok_or_else(|| ApiError::plain(errors::BODY_REQUIRED))?;
    let force = call.request.bool_arg("force")?;
    let role = validate_role(&id, &body, force)?;
    if force {
        log::warn!("role {id:?} stored with force: unknown controllers accepted");
    }
    let mut source = role_to_json(&role);
    source["_kuzzle_info"] = info_for(call);
    save_security_document(call, Kind::Role, &id, &source).await?;
    Ok(Reply::Json(json!({"_id": id, "_source": source})))
}

pub async fn get_role(call: &Call<'_>) -> ActionResult {
    get_document(call, Kind::Role, errors::ROLE_NOT_FOUND).await
}

pub async fn delete_role(call: &Call<'_>) -> ActionResult {
    let id = deletable_id(
        call,
        Kind::Role,
        errors::ROLE_CANNOT_DELETE,
        errors::ROLE_NOT_FOUND,
    )
    .await?;
    let store = &call.node.store;
    let used = store
        .list(Kind::Profile)
        .await
        .map_err(store_read_error)?
        .iter()
        .any(|(_, p)| {
            p.get("policies")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p.get("roleId") == Some(&json!(id))))
        });
    if used {
        return Err(ApiError::new(errors::ROLE_IN_USE, [id.as_str()]));
    }
    store
        .delete(Kind::Role, &id)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": id})))
}

fn policies_to_json(profile: &Profile) -> Value {
    Value::Array(
        profile
            .policies
            .iter()
            .map(|p| {
                let mut policy = json!({"roleId": p.role_id});
                if let Some(restrictions) = &p.restricted_to {
                    policy["restrictedTo"] = Value::Array(
                        restrictions
                            .iter()
                            .map(|r| match &r.collections {
                                Some(c) => json!({"index": r.index, "collections": c}),
                                None => json!({"index": r.index}),
                            })
                            .collect(),
                    );
                }
                policy
            })
            .collect(),
    )
}

pub async fn create_or_replace_profile(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    let body = call
        .request
        .body
        .clone()
        .ok_or_else(|| ApiError::plain(errors::BODY_REQUIRED))?;
    let store = &call.node.store;
    let roles: Vec<String> = store
        .list(Kind::Role)
        .await
        .map_err(store_read_error)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let profile = validate_profile(&id, &body, |role| roles.iter().any(|r| r == role))?;
    let source = json!({"policies": policies_to_json(&profile), "rateLimit": profile.rate_limit, "_kuzzle_info": info_for(call)});
    save_security_document(call, Kind::Profile, &id, &source).await?;
    Ok(Reply::Json(json!({"_id": id, "_source": source})))
}

pub async fn get_profile(call: &Call<'_>) -> ActionResult {
    get_document(call, Kind::Profile, errors::PROFILE_NOT_FOUND).await
}

pub async fn delete_profile(call: &Call<'_>) -> ActionResult {
    let id = deletable_id(
        call,
        Kind::Profile,
        errors::PROFILE_CANNOT_DELETE,
        errors::PROFILE_NOT_FOUND,
    )
    .await?;
    let store = &call.node.store;
    let remove = match call.request.string_arg("onAssignedUsers")? {
        None | Some("fail") => false,
        Some("remove") => true,
        Some(_) => {
            return Err(ApiError::new(
                errors::INVALID_ARGUMENT,
                ["onAssignedUsers", "\"fail\" or \"remove\""],
            ));
        }
    };
    let assigned: Vec<(String, Value)> = store
        .list(Kind::User)
        .await
        .map_err(store_read_error)?
        .into_iter()
        .filter(|(_, u)| {
            u.get("profileIds")
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.contains(&json!(id)))
        })
        .collect();
    if !assigned.is_empty() && !remove {
        return Err(ApiError::new(errors::PROFILE_IN_USE, [id.as_str()]));
    }
    for (kuid, mut user) in assigned {
        let mut ids: Vec<Value> = user["profileIds"].as_array().cloned().unwrap_or_default();
        ids.retain(|p| p != &json!(id));
        if ids.is_empty() {
            ids.push(json!("anonymous"));
        }
        user["profileIds"] = Value::Array(ids);
        touch(&mut user, call);
        store
            .put(Kind::User, &kuid, &user)
            .await
            .map_err(store_write_error)?;
    }
    store
        .delete(Kind::Profile, &id)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": id})))
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
