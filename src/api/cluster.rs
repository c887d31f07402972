//! The `cluster` controller (PROTOCOL.md §4.7).

use super::{ActionResult, Call, Reply};
use crate::protocol::errors::{self, ApiError};

/// kuzzle-rt: every live node's figures, for the dashboard (`GET /_dashboard`).
pub async fn metrics(call: &Call<'_>) -> ActionResult {
    let node = call.node;
    let nodes = node
        .bus
        .snapshots(node.metrics.snapshot(&node.figures()))
        .await
        .map_err(|reason| {
            log::warn!("[CLUSTER] cluster:metrics: {reason}");
            ApiError::plain(errors::CACHE_NOT_CONNECTED)
        })?;
    Ok(Reply::Json(serde_json::json!({"nodes": nodes})))
}

pub async fn status(call: &Call<'_>) -> ActionResult {
    call.node
        .bus
        .status()
        .await
        .map(Reply::Json)
        .map_err(|reason| {
            log::warn!("[CLUSTER] cluster:status: {reason}");
            ApiError::plain(errors::CACHE_NOT_CONNECTED)
        })
}
