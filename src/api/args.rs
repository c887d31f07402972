//! Arguments and answers the security controllers share (PROTOCOL.md §4.1): ids, id
//! lists, numbers, `_kuzzle_info`, and the answer of a multiple deletion.

use serde_json::{Value, json};

use super::{Call, Reply};
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;

pub(super) fn id_arg(call: &Call<'_>) -> Result<String, ApiError> {
    required_string(call, "_id")
}

/// A required, non-empty string argument: absent or empty is `missing_argument`.
pub(super) fn required_string(call: &Call<'_>, name: &str) -> Result<String, ApiError> {
    match call.request.arg(name) {
        None | Some(Value::Null) => Err(ApiError::missing_argument(name)),
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(Value::String(_)) => Err(ApiError::missing_argument(name)),
        Some(_) => Err(ApiError::invalid_type(name, "string")),
    }
}

/// The request's body, which the action needs (`api.assert.body_required`).
pub(super) fn required_body(call: &Call<'_>) -> Result<Value, ApiError> {
    call.request
        .body
        .clone()
        .ok_or_else(|| ApiError::plain(errors::BODY_REQUIRED))
}

pub(super) fn info_for(call: &Call<'_>) -> Value {
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

pub(super) fn strings(items: &[Value], path: &str) -> Result<Vec<String>, ApiError> {
    items
        .iter()
        .map(|i| i.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| ApiError::invalid_type(path, "string[]"))
}

/// `body.ids`: a non-empty array of strings, at most `limit` of them
/// (`services.storage.get_limit_exceeded` past it).
pub(super) fn ids_body(call: &Call<'_>, limit: u32) -> Result<Vec<String>, ApiError> {
    let Some(body) = &call.request.body else {
        return Err(ApiError::plain(errors::BODY_REQUIRED));
    };
    let ids = match body.get("ids") {
        None | Some(Value::Null) => return Err(ApiError::missing_argument("body.ids")),
        Some(Value::Array(items)) => strings(items, "body.ids")?,
        Some(_) => return Err(ApiError::invalid_type("body.ids", "array")),
    };
    if ids.is_empty() {
        return Err(ApiError::new(errors::EMPTY_ARGUMENT, ["body.ids"]));
    }
    if ids.len() > limit as usize {
        return Err(ApiError::plain(errors::GET_LIMIT_EXCEEDED));
    }
    Ok(ids)
}

/// The ids deleted, in the order given; a partial failure answers them together with
/// `services.storage.incomplete_delete` (PROTOCOL.md §4.4, multiple deletions).
pub(super) fn deleted_reply(deleted: Vec<String>, failures: Vec<ApiError>) -> Reply {
    if failures.is_empty() {
        return Reply::Json(json!(deleted));
    }
    let messages: Vec<Value> = failures
        .iter()
        .map(|e| json!({"id": e.id(), "message": e.message()}))
        .collect();
    Reply::JsonWithError(
        json!(deleted),
        ApiError::new(
            errors::INCOMPLETE_DELETE,
            [Value::String(Value::Array(messages).to_string())],
        ),
    )
}

/// `ids_body` past its bound, for a write: `write_limit_exceeded`.
pub(super) fn write_limit(error: ApiError) -> ApiError {
    if error.id() == Some(errors::GET_LIMIT_EXCEEDED.id) {
        ApiError::plain(errors::WRITE_LIMIT_EXCEEDED)
    } else {
        error
    }
}

/// A non-negative integer argument (`from`, `size`).
pub(super) fn count_arg(call: &Call<'_>, name: &str, default: u64) -> Result<u64, ApiError> {
    match call.request.arg(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ApiError::invalid_type(name, "integer")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::invalid_type(name, "integer")),
        Some(_) => Err(ApiError::invalid_type(name, "integer")),
    }
}
