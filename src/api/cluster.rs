//! The `cluster` controller (PROTOCOL.md §4.7).

use super::{ActionResult, Call, Reply};
use crate::protocol::errors::{self, ApiError};

pub async fn status(call: &Call<'_>) -> ActionResult {
    call.node
        .cluster
        .status()
        .await
        .map(Reply::Json)
        .map_err(|reason| {
            log::warn!("[CLUSTER] cluster:status: {reason}");
            ApiError::plain(errors::CACHE_NOT_CONNECTED)
        })
}
