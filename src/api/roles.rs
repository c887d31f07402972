//! The `security` controller's roles and profiles (PROTOCOL.md §4.4), the stored mappings
//! of the three security collections, and `refresh`.

use serde_json::{Map, Value, json};

use super::args::{deleted_reply, id_arg, ids_body, info_for, touch, write_limit};
use super::identity::{store_read_error, store_write_error};
use super::{ActionResult, Call, Reply};
use crate::protocol::errors::{self, ApiError, ErrorDef};
use crate::security::model::{Profile, rights, role_to_json, validate_profile, validate_role};
use crate::storage::Kind;

const PROTECTED: [&str; 3] = ["anonymous", "default", "admin"];

/// Roles or profiles: what differs between the two in the actions they share.
#[derive(Clone, Copy)]
enum Doc {
    Role,
    Profile,
}

impl Doc {
    fn kind(self) -> Kind {
        match self {
            Doc::Role => Kind::Role,
            Doc::Profile => Kind::Profile,
        }
    }

    fn not_found(self) -> &'static ErrorDef {
        match self {
            Doc::Role => errors::ROLE_NOT_FOUND,
            Doc::Profile => errors::PROFILE_NOT_FOUND,
        }
    }

    fn protected(self) -> &'static ErrorDef {
        match self {
            Doc::Role => errors::ROLE_CANNOT_DELETE,
            Doc::Profile => errors::PROFILE_CANNOT_DELETE,
        }
    }
}

async fn stored(call: &Call<'_>, doc: Doc, id: &str) -> Result<Option<Value>, ApiError> {
    call.node
        .store
        .get(doc.kind(), id)
        .await
        .map_err(store_read_error)
}

/// A stored role or profile, or `not_found`.
async fn existing(call: &Call<'_>, doc: Doc, id: &str) -> Result<Value, ApiError> {
    stored(call, doc, id)
        .await?
        .ok_or_else(|| ApiError::new(doc.not_found(), [id]))
}

fn body(call: &Call<'_>) -> Result<Value, ApiError> {
    match &call.request.body {
        Some(body @ Value::Object(_)) => Ok(body.clone()),
        Some(_) => Err(ApiError::invalid_type("body", "object")),
        None => Err(ApiError::plain(errors::BODY_REQUIRED)),
    }
}

/// How a create-like action treats an existing id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `create…`: refused when the id exists.
    Create,
    /// `createOrReplace…`: replaces.
    CreateOrReplace,
    /// `update…`: the id must exist; `body`'s top-level keys replace the stored ones.
    Update,
}

/// Where a create, replace or update starts from, or why it cannot.
async fn base(
    call: &Call<'_>,
    doc: Doc,
    id: &str,
    write: Write,
) -> Result<Option<Value>, ApiError> {
    let current = stored(call, doc, id).await?;
    match (write, &current) {
        (Write::Create, Some(_)) => Err(ApiError::plain(errors::DOCUMENT_ALREADY_EXISTS)),
        (Write::Update, None) => Err(ApiError::new(doc.not_found(), [id])),
        _ => Ok(current),
    }
}

/// `_kuzzle_info` for a written role or profile: kept and marked updated when it existed.
fn stamp(call: &Call<'_>, source: &mut Value, previous: Option<&Value>) {
    match previous.and_then(|p| p.get("_kuzzle_info")) {
        Some(info) => {
            source["_kuzzle_info"] = info.clone();
            touch(source, call);
        }
        None => source["_kuzzle_info"] = info_for(call),
    }
}

/// The validated fields over the body's others (Kuzzle keeps any field of a role or
/// profile, `tags` say, and searches find them), without `_id` and `_kuzzle_info`.
fn with_extra_fields(validated: Value, candidate: &Value) -> Value {
    let mut source = candidate.as_object().cloned().unwrap_or_default();
    source.remove("_id");
    source.remove("_kuzzle_info");
    if let Value::Object(validated) = validated {
        source.extend(validated);
    }
    Value::Object(source)
}

/// The body an update validates: the stored document with `patch`'s top-level keys.
fn merged(previous: Option<&Value>, patch: Value) -> Value {
    let mut merged = previous
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    merged.remove("_kuzzle_info");
    if let Value::Object(patch) = patch {
        merged.extend(patch);
    }
    Value::Object(merged)
}

async fn write_role(call: &Call<'_>, write: Write) -> ActionResult {
    let id = id_arg(call)?;
    let patch = body(call)?;
    let force = call.request.bool_arg("force")?;
    let previous = base(call, Doc::Role, &id, write).await?;
    let candidate = if write == Write::Update {
        merged(previous.as_ref(), patch)
    } else {
        patch
    };
    let role = validate_role(&id, &candidate, force)?;
    if force {
        log::warn!("role {id:?} stored with force: unknown controllers accepted");
    }
    let mut source = with_extra_fields(role_to_json(&role), &candidate);
    stamp(call, &mut source, previous.as_ref());
    call.node
        .store
        .put(Kind::Role, &id, &source)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": id, "_source": source})))
}

pub async fn create_or_replace_role(call: &Call<'_>) -> ActionResult {
    write_role(call, Write::CreateOrReplace).await
}

pub async fn create_role(call: &Call<'_>) -> ActionResult {
    write_role(call, Write::Create).await
}

pub async fn update_role(call: &Call<'_>) -> ActionResult {
    write_role(call, Write::Update).await
}

pub async fn get_role(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    let role = existing(call, Doc::Role, &id).await?;
    Ok(Reply::Json(json!({"_id": id, "_source": role})))
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

async fn write_profile(call: &Call<'_>, write: Write) -> ActionResult {
    let id = id_arg(call)?;
    let patch = body(call)?;
    let previous = base(call, Doc::Profile, &id, write).await?;
    let candidate = if write == Write::Update {
        merged(previous.as_ref(), patch)
    } else {
        patch
    };
    let roles: Vec<String> = call
        .node
        .store
        .list(Kind::Role)
        .await
        .map_err(store_read_error)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let profile = validate_profile(&id, &candidate, |role| roles.iter().any(|r| r == role))?;
    let mut source = with_extra_fields(
        json!({"policies": policies_to_json(&profile), "rateLimit": profile.rate_limit}),
        &candidate,
    );
    stamp(call, &mut source, previous.as_ref());
    call.node
        .store
        .put(Kind::Profile, &id, &source)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"_id": id, "_source": source})))
}

pub async fn create_or_replace_profile(call: &Call<'_>) -> ActionResult {
    write_profile(call, Write::CreateOrReplace).await
}

pub async fn create_profile(call: &Call<'_>) -> ActionResult {
    write_profile(call, Write::Create).await
}

pub async fn update_profile(call: &Call<'_>) -> ActionResult {
    write_profile(call, Write::Update).await
}

pub async fn get_profile(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    let profile = existing(call, Doc::Profile, &id).await?;
    Ok(Reply::Json(json!({"_id": id, "_source": profile})))
}

/// `mGetRoles` and `mGetProfiles`: the stored documents among `body.ids`, in that order.
async fn m_get(call: &Call<'_>, doc: Doc) -> ActionResult {
    let ids = ids_body(call, call.node.settings.limits.documents_fetch_count)?;
    let mut hits = Vec::new();
    for id in ids {
        if let Some(source) = stored(call, doc, &id).await? {
            hits.push(json!({"_id": id, "_source": source}));
        }
    }
    Ok(Reply::Json(json!({"hits": hits})))
}

pub async fn m_get_roles(call: &Call<'_>) -> ActionResult {
    m_get(call, Doc::Role).await
}

pub async fn m_get_profiles(call: &Call<'_>) -> ActionResult {
    m_get(call, Doc::Profile).await
}

/// Deletes one role or profile with the checks of `delete…`.
async fn delete_one(call: &Call<'_>, doc: Doc, id: &str) -> Result<(), ApiError> {
    if PROTECTED.contains(&id) {
        return Err(ApiError::plain(doc.protected()));
    }
    existing(call, doc, id).await?;
    let store = &call.node.store;
    match doc {
        Doc::Role => {
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
                return Err(ApiError::new(errors::ROLE_IN_USE, [id]));
            }
        }
        Doc::Profile => unassign_profile(call, id).await?,
    }
    store
        .delete(doc.kind(), id)
        .await
        .map_err(store_write_error)?;
    Ok(())
}

/// Before a profile goes: `onAssignedUsers` `fail` (the default) refuses while a user has
/// it, `remove` takes it from them (users left with none get `anonymous`).
async fn unassign_profile(call: &Call<'_>, id: &str) -> Result<(), ApiError> {
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
        return Err(ApiError::new(errors::PROFILE_IN_USE, [id]));
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
    Ok(())
}

pub async fn delete_role(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    delete_one(call, Doc::Role, &id).await?;
    Ok(Reply::Json(json!({"_id": id})))
}

pub async fn delete_profile(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    delete_one(call, Doc::Profile, &id).await?;
    Ok(Reply::Json(json!({"_id": id})))
}

async fn m_delete(call: &Call<'_>, doc: Doc) -> ActionResult {
    let ids =
        ids_body(call, call.node.settings.limits.documents_write_count).map_err(write_limit)?;
    let (mut deleted, mut failures) = (Vec::new(), Vec::new());
    for id in ids {
        match delete_one(call, doc, &id).await {
            Ok(()) => deleted.push(id),
            Err(e) => failures.push(e),
        }
    }
    Ok(deleted_reply(deleted, failures))
}

pub async fn m_delete_roles(call: &Call<'_>) -> ActionResult {
    m_delete(call, Doc::Role).await
}

pub async fn m_delete_profiles(call: &Call<'_>) -> ActionResult {
    m_delete(call, Doc::Profile).await
}

pub async fn get_profile_rights(call: &Call<'_>) -> ActionResult {
    let id = id_arg(call)?;
    existing(call, Doc::Profile, &id).await?;
    let Some(profile) = call.security.profiles.get(&id) else {
        // Written since this request's rights snapshot: read it as stored.
        return Err(ApiError::new(errors::PROFILE_NOT_FOUND, [id.as_str()]));
    };
    Ok(Reply::Json(rights(&[profile], &call.security.roles)))
}

/// The three collections whose mapping can be read and updated.
fn mapping_collection(call: &Call<'_>) -> &'static str {
    match call.request.action.as_str() {
        "getUserMapping" | "updateUserMapping" => "users",
        "getProfileMapping" | "updateProfileMapping" => "profiles",
        _ => "roles",
    }
}

/// Kuzzle's default mapping of each security collection (what the admin console builds
/// its forms from); an update is merged over it.
fn default_mapping(collection: &str) -> Value {
    match collection {
        "users" => json!({"profileIds": {"type": "keyword"}}),
        "profiles" => json!({
            "policies": {"properties": {
                "roleId": {"type": "keyword"},
                "restrictedTo": {"type": "nested", "properties": {
                    "index": {"type": "keyword"},
                    "collections": {"type": "keyword"}
                }}
            }},
            "rateLimit": {"type": "integer"}
        }),
        _ => json!({"controllers": {"dynamic": "false", "type": "object"}}),
    }
}

async fn mapping(call: &Call<'_>, collection: &str) -> Result<Value, ApiError> {
    Ok(call
        .node
        .store
        .get(Kind::Mapping, collection)
        .await
        .map_err(store_read_error)?
        .unwrap_or_else(|| default_mapping(collection)))
}

/// `get{User,Profile,Role}Mapping`: `{"mapping": {<field>: <type>…}}`.
pub async fn get_mapping(call: &Call<'_>) -> ActionResult {
    let collection = mapping_collection(call);
    Ok(Reply::Json(
        json!({"mapping": mapping(call, collection).await?}),
    ))
}

/// `update{User,Profile,Role}Mapping`: body `{"properties": {…}}` merged into the stored
/// mapping. Searches do not use field types (PROTOCOL.md §4.4): the mapping is kept for
/// the clients that read it.
pub async fn update_mapping(call: &Call<'_>) -> ActionResult {
    let collection = mapping_collection(call);
    let body = body(call)?;
    let properties = match body.get("properties") {
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(ApiError::invalid_type("body.properties", "object")),
        None => Map::new(),
    };
    let mut current = mapping(call, collection).await?;
    if let Value::Object(map) = &mut current {
        map.extend(properties);
    }
    call.node
        .store
        .put(Kind::Mapping, collection, &current)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(json!({"properties": current})))
}

/// `security:refresh`: writes are visible at once, so there is nothing to wait for; the
/// collection must still be one of the three.
pub async fn refresh(call: &Call<'_>) -> ActionResult {
    let collection = match call.request.arg("collection") {
        None | Some(Value::Null) => return Err(ApiError::missing_argument("collection")),
        Some(Value::String(c)) => c.clone(),
        Some(_) => return Err(ApiError::invalid_type("collection", "string")),
    };
    if !["users", "profiles", "roles"].contains(&collection.as_str()) {
        return Err(ApiError::new(
            errors::UNEXPECTED_ARGUMENT,
            [collection.as_str(), "users, profiles, roles"],
        ));
    }
    Ok(Reply::Json(Value::Null))
}
