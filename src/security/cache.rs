//! Roles and profiles as this node last read them. Every request asks the store for its
//! security version (free on the embedded store; on Redis the one this node last learnt,
//! `storage::hot`) and reloads when it changed, so a change applies on this node to requests
//! that start after it, and on the others once they learn it (their bus message, or their
//! next heartbeat). On a shared store a snapshot is also read again one heartbeat after it
//! was read, whatever the version.
//! The bootstrap reads a first snapshot before the node serves. While the store is down,
//! the last snapshot serves without asking it, but for a probe now and then.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::model::{Profile, Role, validate_profile, validate_role};
use crate::config::Settings;
use crate::storage::marker::StoreMarker;
use crate::storage::{Kind, NO_VERSION, Store, StoreResult};

pub struct Snapshot {
    version: u64,
    /// When it was read: on a shared store it is read again after one heartbeat even if
    /// the version did not move (a backup restored with a counter the node saw before).
    loaded_at: std::time::Instant,
    pub roles: HashMap<String, Role>,
    pub profiles: HashMap<String, Profile>,
}

#[derive(Default)]
pub struct SecurityCache {
    current: RwLock<Option<Arc<Snapshot>>>,
    /// An administrator was created on this store once (the store's marker said so, or
    /// this node created it): remembered even if the store loses it.
    admin_created: std::sync::atomic::AtomicBool,
    /// The store's marker as the cluster last read it (JSON), when nodes share a store.
    marker_source: std::sync::OnceLock<MarkerSource>,
}

/// Where the cache finds the store's marker as the cluster last read it.
pub type MarkerSource = Box<dyn Fn() -> Option<String> + Send + Sync>;

impl SecurityCache {
    pub fn note_admin_created(&self) {
        self.admin_created
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn set_marker_source(&self, source: MarkerSource) {
        let _ = self.marker_source.set(source);
    }

    /// Whether this node knows that an administrator was once created on the store: it
    /// created one, the marker said so at start, or the cluster read so since.
    pub fn admin_was_created(&self) -> bool {
        self.admin_created
            .load(std::sync::atomic::Ordering::Acquire)
            || self
                .marker_source
                .get()
                .and_then(|source| source())
                .and_then(|text| serde_json::from_str::<StoreMarker>(&text).ok())
                .is_some_and(|marker| marker.admin_created)
    }

    /// The roles and profiles to check a request against. While the store cannot be
    /// reached, the last snapshot is used, so that the node keeps serving what needs no
    /// store; a node that never read one has nothing to check with and fails.
    pub async fn current(&self, store: &Store, settings: &Settings) -> StoreResult<Arc<Snapshot>> {
        if store.skip_while_down()
            && let Some(snapshot) = self.current.read().as_ref()
        {
            return Ok(snapshot.clone());
        }
        let mut version = store.request_security_version().await;
        if version.as_ref().is_ok_and(|v| *v == NO_VERSION)
            && !self.admin_was_created()
            && store.marker().await?.is_some_and(|m| !m.admin_created)
        {
            // The store lost its data, but no administrator was ever created on it (this
            // node knows of none, and the marker written back says so): it was open to
            // everyone, and its default roles are set up again as they were.
            super::bootstrap::reopen(store, settings).await?;
            version = store.security_version().await;
        }
        let version = match version {
            Ok(version) => version,
            Err(e) => {
                return match self.current.read().as_ref() {
                    Some(snapshot) => Ok(snapshot.clone()),
                    None => Err(e),
                };
            }
        };
        let max_age = store.cache_max_age();
        if let Some(snapshot) = self.current.read().as_ref().filter(|s| {
            s.version == version && max_age.is_none_or(|age| s.loaded_at.elapsed() < age)
        }) {
            return Ok(snapshot.clone());
        }
        let snapshot = match load(store, version).await {
            Ok(snapshot) => Arc::new(snapshot),
            // Read again for its age, but the store does not answer: the last one serves.
            Err(e) => {
                return match self.current.read().as_ref() {
                    Some(snapshot) if snapshot.version == version => Ok(snapshot.clone()),
                    _ => Err(e),
                };
            }
        };
        *self.current.write() = Some(snapshot.clone());
        Ok(snapshot)
    }
}

async fn load(store: &Store, version: u64) -> StoreResult<Snapshot> {
    let mut roles = HashMap::new();
    for (id, body) in store.list(Kind::Role).await? {
        match validate_role(&id, &body, true) {
            Ok(role) => {
                roles.insert(id, role);
            }
            Err(e) => log::error!("stored role {id:?} is unusable and ignored: {e}"),
        }
    }
    let mut profiles = HashMap::new();
    for (id, body) in store.list(Kind::Profile).await? {
        match validate_profile(&id, &body, |_| true) {
            Ok(profile) => {
                profiles.insert(id, profile);
            }
            Err(e) => log::error!("stored profile {id:?} is unusable and ignored: {e}"),
        }
    }
    Ok(Snapshot {
        version,
        loaded_at: std::time::Instant::now(),
        roles,
        profiles,
    })
}
