//! The `server` controller (PROTOCOL.md §4.6).

use serde_json::{Value, json};

use super::{ActionResult, Call, Reply, openapi};
use crate::protocol::errors::{self, ApiError};
use crate::protocol::now_ms;
use crate::protocol::response::strip_secrets;
use crate::security::bootstrap::admin_exists as admin_exists_in;
use crate::system;

pub async fn now(_: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(json!({"now": now_ms()})))
}

fn internal_cache(call: &Call<'_>) -> Value {
    let backend = call.node.store.backend().name();
    json!({"backend": backend, "version": env!("CARGO_PKG_VERSION")})
}

pub async fn info(call: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(json!({"serverInfo": {
        "kuzzle": {
            "api": {"routes": openapi::public_api()},
            "application": {},
            "implementation": {"name": "kuzzle-rt", "version": env!("CARGO_PKG_VERSION")},
            "memoryUsed": system::resident_memory(),
            "plugins": {},
            "system": {"cpus": system::cpus(), "memory": system::memory()},
            "uptime": format!("{}s", call.node.started.elapsed().as_secs()),
            "version": crate::API_VERSION,
        },
        "services": {"internalCache": internal_cache(call)},
    }})))
}

pub async fn health_check(call: &Call<'_>) -> ActionResult {
    let wanted: Option<Vec<String>> = match call.request.arg("services") {
        None | Some(Value::Null) => None,
        Some(Value::String(list)) => Some(list.split(',').map(|s| s.trim().to_owned()).collect()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(_) => return Err(ApiError::invalid_type("services", "string")),
    };
    // Kuzzle's three services are one store here: they share its state.
    let names: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|name| wanted.as_ref().is_none_or(|w| w.iter().any(|s| s == name)))
        .collect();
    let mut services = serde_json::Map::new();
    let mut failure = None;
    if !names.is_empty() {
        // Red when the store does not answer, or answers without its data (emptied behind
        // the cluster's back: its security counter is gone, docs/clustering.md).
        let check = match call.node.store.ping().await {
            Ok(()) => match call.node.store.security_version().await {
                Ok(crate::storage::NO_VERSION) => Err(
                    "the store lost its data (users, roles, tokens): restore the backup".to_owned(),
                ),
                _ => Ok(()),
            },
            Err(e) => Err(e.to_string()),
        };
        for name in &names {
            services.insert(
                (*name).into(),
                (if check.is_ok() { "green" } else { "red" }).into(),
            );
        }
        failure = check.err().map(|e| format!("{} ({e})", names.join(", ")));
    }
    let status = if failure.is_none() { "green" } else { "red" };
    let result = json!({"status": status, "services": services});
    Ok(match failure {
        None => Reply::Json(result),
        Some(e) => Reply::JsonWithError(result, ApiError::new(errors::SERVICE_UNAVAILABLE, [e])),
    })
}

/// The services `healthCheck` reports: Kuzzle's names, all backed by the node's store.
const SERVICES: [&str; 3] = ["internalCache", "memoryStorage", "storageEngine"];

pub async fn admin_exists(call: &Call<'_>) -> ActionResult {
    let exists = admin_exists_in(&call.node.store)
        .await
        .map_err(|e| ApiError::new(errors::CACHE_READ_FAILED, [e.to_string()]))?;
    Ok(Reply::Json(json!({"exists": exists})))
}

pub async fn get_config(call: &Call<'_>) -> ActionResult {
    let mut config =
        serde_json::to_value(call.node.settings.as_ref()).map_err(ApiError::unexpected)?;
    if let Value::Object(map) = &mut config {
        map.remove("security");
        map.insert("version".into(), crate::API_VERSION.into());
    }
    strip_secrets(&mut config);
    Ok(Reply::Json(config))
}

pub async fn public_api(_: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(openapi::public_api()))
}

pub async fn openapi(call: &Call<'_>) -> ActionResult {
    let scope = call.request.string_arg("scope")?.unwrap_or("kuzzle");
    let with_paths = match scope {
        "kuzzle" => true,
        "app" => false,
        other => {
            return Err(ApiError::new(
                errors::UNEXPECTED_ARGUMENT,
                [json!(other), json!(["kuzzle", "app"])],
            ));
        }
    };
    let document = openapi::document(with_paths);
    match call.request.string_arg("format")?.unwrap_or("json") {
        "json" => Ok(Reply::Raw {
            content_type: "application/json",
            document,
        }),
        "yaml" => Ok(Reply::Raw {
            content_type: "application/yaml",
            document: Value::String(openapi::to_yaml(&document)),
        }),
        _ => Err(ApiError::new(
            errors::INVALID_ARGUMENT,
            ["format", "\"json\" or \"yaml\""],
        )),
    }
}

pub async fn metrics(call: &Call<'_>) -> ActionResult {
    let node = call.node;
    let mut connections = serde_json::Map::new();
    let websocket = node.connections.len();
    let http = node
        .http_in_flight
        .load(std::sync::atomic::Ordering::Relaxed);
    if websocket > 0 {
        connections.insert("websocket".into(), websocket.into());
    }
    if http > 0 {
        connections.insert("http".into(), http.into());
    }
    let (rooms, subscriptions) = node.realtime.metrics();
    Ok(Reply::Json(json!({
        "api": {"concurrentRequests": node.limiter.running(), "pendingRequests": node.limiter.pending()},
        "network": {"connections": connections},
        "realtime": {"rooms": rooms, "subscriptions": subscriptions},
        "cluster": node.bus.figures(),
    })))
}

pub async fn capabilities(call: &Call<'_>) -> ActionResult {
    Ok(Reply::Json(json!({
        "limits": serde_json::to_value(&call.node.settings.limits).map_err(ApiError::unexpected)?,
        "plugins": {},
        "routes": openapi::public_api(),
        "services": {"internalCache": internal_cache(call)},
        "version": crate::API_VERSION,
    })))
}

/// The stored statistics snapshots of every node, oldest first, each without its
/// `expiresAt`; `services.statistics.not_available` with `stats.enabled` false.
async fn snapshots(call: &Call<'_>) -> Result<Vec<Value>, ApiError> {
    if !call.node.settings.stats.enabled {
        return Err(ApiError::plain(errors::STATISTICS_NOT_AVAILABLE));
    }
    let mut all: Vec<Value> = call
        .node
        .store
        .list_live(crate::storage::Kind::Stats)
        .await
        .map_err(super::identity::store_read_error)?
        .into_iter()
        .map(|(_, mut snapshot)| {
            if let Value::Object(map) = &mut snapshot {
                map.remove("expiresAt");
            }
            snapshot
        })
        .collect();
    all.sort_by_key(|s| s.get("timestamp").and_then(Value::as_u64).unwrap_or(0));
    Ok(all)
}

/// `startTime`/`stopTime`: milliseconds since the epoch (a number or digits) or an RFC 3339
/// date.
fn time_arg(call: &Call<'_>, name: &str) -> Result<Option<u64>, ApiError> {
    let bad = || {
        ApiError::new(
            errors::INVALID_ARGUMENT,
            [name, "a timestamp in milliseconds or an RFC 3339 date"],
        )
    };
    match call.request.arg(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(ms) => Ok(Some(ms)),
            Err(_) => s
                .parse::<jiff::Timestamp>()
                .map(|t| Some(t.as_millisecond().max(0) as u64))
                .map_err(|_| bad()),
        },
        Some(_) => Err(bad()),
    }
}

/// `getStats`: the snapshots taken between `startTime` and `stopTime` (both optional).
pub async fn get_stats(call: &Call<'_>) -> ActionResult {
    let start = time_arg(call, "startTime")?;
    let stop = time_arg(call, "stopTime")?;
    let hits: Vec<Value> = snapshots(call)
        .await?
        .into_iter()
        .filter(|s| {
            let at = s.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
            start.is_none_or(|start| at >= start) && stop.is_none_or(|stop| at <= stop)
        })
        .collect();
    Ok(Reply::Json(json!({"hits": hits, "total": hits.len()})))
}

/// `getLastStats`: the newest snapshot of any node; before the first one, this node's
/// counts so far.
pub async fn get_last_stats(call: &Call<'_>) -> ActionResult {
    let last = snapshots(call).await?.pop();
    Ok(Reply::Json(last.unwrap_or_else(|| {
        call.node.statistics(crate::protocol::now_ms(), false)
    })))
}

pub async fn get_all_stats(call: &Call<'_>) -> ActionResult {
    let hits = snapshots(call).await?;
    Ok(Reply::Json(json!({"hits": hits, "total": hits.len()})))
}
