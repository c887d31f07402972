//! The `realtime` controller (PROTOCOL.md §4.5): reads the arguments, checks the rights
//! and calls the realtime service.

use serde_json::{Map, Value, json};

use super::identity::rights_error;
use super::{ActionResult, Call, Reply};
use crate::protocol::errors::{self, ApiError};
use crate::protocol::{Request, now_ms};
use crate::realtime::notify::Published;
use crate::realtime::{Member, Scope, Users, channel_of};

/// `index` or `collection`: a non-empty string without `/` (CN-18).
fn name_arg<'a>(request: &'a Request, name: &str) -> Result<&'a str, ApiError> {
    match request.arg(name) {
        None | Some(Value::Null) => Err(ApiError::missing_argument(name)),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::missing_argument(name)),
        Some(Value::String(s)) if s.contains('/') => Err(ApiError::new(
            errors::INVALID_ARGUMENT,
            [name, "a string without \"/\""],
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid_type(name, "string")),
    }
}

/// The body as an object: `body_required` when absent, `invalid_type` otherwise (CN-46).
fn object_body(request: &Request) -> Result<&Value, ApiError> {
    match &request.body {
        None => Err(ApiError::plain(errors::BODY_REQUIRED)),
        Some(body @ Value::Object(_)) => Ok(body),
        Some(_) => Err(ApiError::invalid_type("body", "object")),
    }
}

fn room_id_arg(request: &Request) -> Result<&str, ApiError> {
    match request.body.as_ref().and_then(|b| b.get("roomId")) {
        None | Some(Value::Null) => Err(ApiError::missing_argument("body.roomId")),
        Some(Value::String(id)) => Ok(id),
        Some(_) => Err(ApiError::invalid_type("body.roomId", "string")),
    }
}

fn scope_arg(request: &Request) -> Result<Scope, ApiError> {
    match request.arg("scope") {
        None => Ok(Scope::All),
        Some(Value::String(s)) => {
            Scope::parse(s).ok_or_else(|| ApiError::plain(errors::INVALID_SCOPE))
        }
        Some(_) => Err(ApiError::plain(errors::INVALID_SCOPE)),
    }
}

fn users_arg(request: &Request) -> Result<Users, ApiError> {
    match request.arg("users") {
        None => Ok(Users::None),
        Some(Value::String(s)) => {
            Users::parse(s).ok_or_else(|| ApiError::plain(errors::INVALID_USERS))
        }
        Some(_) => Err(ApiError::plain(errors::INVALID_USERS)),
    }
}

/// The caller as a room member; HTTP callers have no socket to deliver to.
fn member(call: &Call<'_>) -> Option<Member> {
    let outbox = call.caller.outbox.clone()?;
    Some(Member {
        connection_id: call.caller.connection_id.clone(),
        outbox,
        protocol: call.caller.protocol,
    })
}

fn subscription_result(room_id: &str, channel: &str) -> Reply {
    Reply::Json(json!({"channel": channel, "roomId": room_id}))
}

pub async fn subscribe(call: &Call<'_>) -> ActionResult {
    let request = call.request;
    let index = name_arg(request, "index")?;
    let collection = name_arg(request, "collection")?;
    let body = object_body(request)?;
    let realtime = &call.node.realtime;
    let prepared = realtime.prepare(index, collection, body)?;
    let scope = scope_arg(request)?;
    let users = users_arg(request)?;
    let Some(member) = member(call) else {
        // Over HTTP the subscription would end with the request: answer, register nothing.
        let room_id = prepared.room_id();
        return Ok(subscription_result(
            room_id,
            &channel_of(room_id, scope, users),
        ));
    };
    let subscribed = realtime
        .subscribe(&member, prepared, scope, users, request.volatile.clone())
        .await?;
    Ok(subscription_result(
        &subscribed.room_id,
        &subscribed.channel,
    ))
}

/// Joins an existing room by id. The caller needs the right to `realtime:subscribe` on
/// the room's index and collection, as a subscribe to that room would; without it, the
/// rights error of step 12 for `realtime:join`.
pub async fn join(call: &Call<'_>) -> ActionResult {
    let request = call.request;
    let room_id = room_id_arg(request)?;
    let realtime = &call.node.realtime;
    let located = realtime.locate(room_id).await?;
    if !call.may("realtime", "subscribe", &located.index, &located.collection) {
        return Err(rights_error(call.identity, "realtime", "join"));
    }
    let scope = scope_arg(request)?;
    let users = users_arg(request)?;
    let Some(member) = member(call) else {
        return Ok(subscription_result(
            room_id,
            &channel_of(room_id, scope, users),
        ));
    };
    let joined = realtime
        .join(
            &member,
            room_id,
            located,
            scope,
            users,
            request.volatile.clone(),
        )
        .await?;
    Ok(subscription_result(&joined.room_id, &joined.channel))
}

pub async fn unsubscribe(call: &Call<'_>) -> ActionResult {
    let room_id = room_id_arg(call.request)?;
    call.node
        .realtime
        .unsubscribe(&call.caller.connection_id, room_id)?;
    Ok(Reply::Json(json!({"roomId": room_id})))
}

pub async fn count(call: &Call<'_>) -> ActionResult {
    let room_id = room_id_arg(call.request)?;
    Ok(Reply::Json(
        json!({"count": call.node.realtime.count(room_id).await}),
    ))
}

/// `{index: {collection: {roomId: count}}}`, limited to the collections where the caller
/// may `realtime:subscribe`.
pub async fn list(call: &Call<'_>) -> ActionResult {
    let mut out = Map::new();
    for (index, collection, room_id, count) in call.node.realtime.list().await {
        if !call.may("realtime", "subscribe", &index, &collection) {
            continue;
        }
        let collections = out
            .entry(index)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(collections) = collections {
            let rooms = collections
                .entry(collection)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(rooms) = rooms {
                rooms.insert(room_id, count.into());
            }
        }
    }
    Ok(Reply::Json(Value::Object(out)))
}

pub async fn publish(call: &Call<'_>) -> ActionResult {
    let request = call.request;
    let body = object_body(request)?;
    let index = name_arg(request, "index")?;
    let collection = name_arg(request, "collection")?;
    let id = request.string_arg("_id")?;
    let mut source = body.clone();
    if let Value::Object(map) = &mut source {
        // The server's own record of who published (the caller's kuid, "-1" when
        // anonymous) and when; a client value is replaced.
        map.insert(
            "_kuzzle_info".into(),
            json!({"author": call.identity.kuid, "createdAt": now_ms()}),
        );
    }
    call.node
        .realtime
        .publish(&Published {
            node: &call.node.id,
            index,
            collection,
            id,
            source: &source,
            request_id: &request.request_id,
            timestamp: request.timestamp,
            volatile: request.volatile.as_ref(),
            protocol: request.protocol,
        })
        .await?;
    Ok(Reply::Json(json!({"published": true})))
}

pub async fn validate(call: &Call<'_>) -> ActionResult {
    let request = call.request;
    object_body(request)?;
    name_arg(request, "index")?;
    name_arg(request, "collection")?;
    Ok(Reply::Json(json!({"errorMessages": {}, "valid": true})))
}
