//! Roles and profiles as this node last read them. Every request asks the store for its
//! security version (free on the embedded store, one GET on Redis) and reloads when it
//! changed, so a change applies on every node to requests that start after it.
//! The bootstrap reads a first snapshot before the node serves. While the store is down,
//! the last snapshot serves without asking it, but for a probe now and then.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::model::{Profile, Role, validate_profile, validate_role};
use crate::storage::{Kind, Store, StoreResult};

pub struct Snapshot {
    version: u64,
    pub roles: HashMap<String, Role>,
    pub profiles: HashMap<String, Profile>,
}

#[derive(Default)]
pub struct SecurityCache {
    current: RwLock<Option<Arc<Snapshot>>>,
}

impl SecurityCache {
    /// The roles and profiles to check a request against. While the store cannot be
    /// reached, the last snapshot is used, so that the node keeps serving what needs no
    /// store; a node that never read one has nothing to check with and fails.
    pub async fn current(&self, store: &Store) -> StoreResult<Arc<Snapshot>> {
        if store.skip_while_down()
            && let Some(snapshot) = self.current.read().as_ref()
        {
            return Ok(snapshot.clone());
        }
        let version = match store.security_version().await {
            Ok(version) => version,
            Err(e) => {
                return match self.current.read().as_ref() {
                    Some(snapshot) => Ok(snapshot.clone()),
                    None => Err(e),
                };
            }
        };
        if let Some(snapshot) = self
            .current
            .read()
            .as_ref()
            .filter(|s| s.version == version)
        {
            return Ok(snapshot.clone());
        }
        let snapshot = Arc::new(load(store, version).await?);
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
        roles,
        profiles,
    })
}
