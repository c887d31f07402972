//! The store's marker (issue 19): one document (`store/marker`) written when a store is
//! first set up, saying which setup it is (`epoch`) and whether an administrator was ever
//! created. A store without it, though a cluster used it, was emptied (Redis flushed,
//! restarted without persistence, failed over to an empty replica): the default roles are
//! not recreated on it and `createFirstAdmin` stays refused. Running nodes write the marker
//! back (`cluster::membership`).

use serde::{Deserialize, Serialize};

use super::{Kind, Store, StoreResult};

/// The marker's id among the `Kind::Store` documents.
pub const MARKER_ID: &str = "marker";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreMarker {
    /// Random, chosen when the store was set up.
    pub epoch: String,
    /// When (ms since the epoch).
    pub born: u64,
    /// An administrator was created on this store once.
    pub admin_created: bool,
}

impl StoreMarker {
    pub fn new(admin_created: bool) -> StoreMarker {
        StoreMarker {
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            born: crate::protocol::now_ms(),
            admin_created,
        }
    }
}

impl Store {
    /// The marker, if the store has one.
    pub async fn marker(&self) -> StoreResult<Option<StoreMarker>> {
        let document = self.get(Kind::Store, MARKER_ID).await?;
        Ok(document.and_then(|d| serde_json::from_value(d).ok()))
    }

    /// Writes `marker` unless the store has one; returns the store's marker afterwards.
    pub async fn init_marker(&self, marker: &StoreMarker) -> StoreResult<StoreMarker> {
        let value = serde_json::to_value(marker).unwrap_or_default();
        if self.insert_new(Kind::Store, MARKER_ID, &value).await? {
            return Ok(marker.clone());
        }
        Ok(self.marker().await?.unwrap_or_else(|| marker.clone()))
    }

    /// Records that an administrator exists (kept even if every admin is deleted later).
    pub async fn mark_admin_created(&self) -> StoreResult<()> {
        let mut marker = self
            .marker()
            .await?
            .unwrap_or_else(|| StoreMarker::new(true));
        marker.admin_created = true;
        let value = serde_json::to_value(&marker).unwrap_or_default();
        self.put(Kind::Store, MARKER_ID, &value).await
    }
}
