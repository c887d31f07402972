//! The `realtime` controller (PROTOCOL.md §4.5).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::identity::rights_error;
use super::{ActionResult, Call, Reply};
use crate::cluster::ChannelHold;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::{Request, now_ms};
use crate::realtime::filter::Filter;
use crate::realtime::hub::{
    Member, RoomTarget, Scope, SubscribeError, Subscription, Users, channel_name,
};
use crate::realtime::notify::Published;

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
    let limits = &call.node.settings.limits;
    let filter = Filter::compile_with(
        body,
        limits.subscription_conditions_count as usize,
        limits.subscription_minterms as usize,
    )
    .map_err(|m| ApiError::new(errors::KONCORDE_DSL_ERROR, [m]))?;
    let hub = &call.node.hub;
    let room_id: Arc<str> = Arc::from(hub.room_id(&filter, index, collection));
    if hub.is_full_for(&room_id) {
        return Err(ApiError::plain(errors::TOO_MANY_ROOMS));
    }
    let scope = scope_arg(request)?;
    let users = users_arg(request)?;
    let Some(member) = member(call) else {
        // Over HTTP the subscription would end with the request: answer, register nothing.
        return Ok(subscription_result(
            &room_id,
            &channel_name(&room_id, scope, users),
        ));
    };
    let target = RoomTarget {
        index,
        collection,
        filter,
        body: Arc::from(body.to_string()),
        room_id,
    };
    let hold = call.node.cluster.hold_channel(index, collection).await;
    let subscription = hub
        .subscribe(&member, target, scope, users, request.volatile.clone())
        .map_err(|e| subscribe_error(call, e, None))?;
    settle(call, subscription, hold).await
}

/// After the hub took a subscription: the channel hold is kept when a room was created,
/// and the newcomer is counted and announced cluster-wide before the answer.
async fn settle(call: &Call<'_>, subscription: Subscription, hold: ChannelHold) -> ActionResult {
    let created = subscription
        .presence
        .as_ref()
        .is_some_and(|p| p.room_created);
    if created {
        hold.keep();
    } else {
        drop(hold);
    }
    if let Some(presence) = subscription.presence {
        call.node.cluster.entered(presence).await;
    }
    Ok(subscription_result(
        &subscription.room_id,
        &subscription.channel,
    ))
}

fn subscribe_error(call: &Call<'_>, error: SubscribeError, room_id: Option<&str>) -> ApiError {
    match (error, room_id) {
        (SubscribeError::TooManySubscriptions, _) => ApiError::new(
            errors::TOO_MANY_SUBSCRIPTIONS,
            [call
                .node
                .settings
                .limits
                .subscriptions_per_connection
                .to_string()],
        ),
        (SubscribeError::FiltersBudget, _) => ApiError::new(
            errors::FILTERS_BUDGET,
            [call
                .node
                .settings
                .limits
                .subscription_filters_memory
                .0
                .to_string()],
        ),
        (SubscribeError::RoomNotFound, Some(room_id)) => {
            ApiError::new(errors::ROOM_NOT_FOUND, [room_id])
        }
        (SubscribeError::RoomNotFound | SubscribeError::TooManyRooms, _) => {
            ApiError::plain(errors::TOO_MANY_ROOMS)
        }
    }
}

/// Joins an existing room by id. The caller needs the right to `realtime:subscribe` on
/// the room's index and collection, as a subscribe to that room would; without it, the
/// rights error of step 12 for `realtime:join`.
pub async fn join(call: &Call<'_>) -> ActionResult {
    let request = call.request;
    let room_id = room_id_arg(request)?;
    let hub = &call.node.hub;
    let not_found = || ApiError::new(errors::ROOM_NOT_FOUND, [room_id]);
    // A room of this node, or else one that only other nodes have.
    let (index, collection, remote_body) = match hub.room_target(room_id) {
        Some((index, collection)) => (index, collection, None),
        None => {
            let (index, collection, body) = call
                .node
                .cluster
                .remote_room(room_id)
                .await
                .ok_or_else(not_found)?;
            (index, collection, Some(body))
        }
    };
    if !call.may("realtime", "subscribe", &index, &collection) {
        return Err(rights_error(call.identity, "realtime", "join"));
    }
    let scope = scope_arg(request)?;
    let users = users_arg(request)?;
    let Some(member) = member(call) else {
        return Ok(subscription_result(
            room_id,
            &channel_name(room_id, scope, users),
        ));
    };
    let hold = call.node.cluster.hold_channel(&index, &collection).await;
    let volatile = request.volatile.clone();
    let joined = match remote_body {
        // The room exists here (or appeared meanwhile): join it.
        _ if hub.room_target(room_id).is_some() => {
            hub.join(&member, room_id, scope, users, volatile)
        }
        Some(body) => {
            // The filter was stored by the node that created the room, under the same limits.
            let limits = &call.node.settings.limits;
            let filter = Filter::compile_with(
                &body,
                limits.subscription_conditions_count as usize,
                limits.subscription_minterms as usize,
            )
            .map_err(|_| not_found())?;
            if hub.is_full_for(room_id) {
                return Err(ApiError::plain(errors::TOO_MANY_ROOMS));
            }
            let target = RoomTarget {
                index: &index,
                collection: &collection,
                filter,
                body: Arc::from(body.to_string()),
                room_id: Arc::from(room_id),
            };
            // The room is new here, but the others are told of a join.
            hub.subscribe(&member, target, scope, users, volatile)
                .map(|mut joined| {
                    if let Some(presence) = &mut joined.presence {
                        presence.action = "join";
                    }
                    joined
                })
        }
        None => hub.join(&member, room_id, scope, users, volatile),
    }
    .map_err(|e| subscribe_error(call, e, Some(room_id)))?;
    settle(call, joined, hold).await
}

pub async fn unsubscribe(call: &Call<'_>) -> ActionResult {
    let room_id = room_id_arg(call.request)?;
    let Some(left) = call
        .node
        .hub
        .unsubscribe(&call.caller.connection_id, room_id)
    else {
        return Err(ApiError::new(
            errors::NOT_SUBSCRIBED,
            [&*call.caller.connection_id, room_id],
        ));
    };
    call.node.cluster.left(left);
    Ok(Reply::Json(json!({"roomId": room_id})))
}

pub async fn count(call: &Call<'_>) -> ActionResult {
    let room_id = room_id_arg(call.request)?;
    Ok(Reply::Json(
        json!({"count": call.node.cluster.count(room_id).await}),
    ))
}

/// `{index: {collection: {roomId: count}}}`, limited to the collections where the caller
/// may `realtime:subscribe`.
pub async fn list(call: &Call<'_>) -> ActionResult {
    let mut out = Map::new();
    for (index, collection, room_id, count) in call.node.cluster.list().await {
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
    call.node.cluster.publish(&Published {
        node: &call.node.id,
        index,
        collection,
        id,
        source: &source,
        request_id: &request.request_id,
        timestamp: request.timestamp,
        volatile: request.volatile.as_ref(),
        protocol: request.protocol,
    });
    Ok(Reply::Json(json!({"published": true})))
}

pub async fn validate(call: &Call<'_>) -> ActionResult {
    let request = call.request;
    object_body(request)?;
    name_arg(request, "index")?;
    name_arg(request, "collection")?;
    Ok(Reply::Json(json!({"errorMessages": {}, "valid": true})))
}
