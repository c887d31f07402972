//! Names of the cluster's Redis keys and channels. Every name starts with
//! `services.storage.keyPrefix`, so that several clusters can share one Redis.

#[derive(Clone)]
pub struct Keys {
    root: String,
    prefix: String,
}

impl Keys {
    pub fn new(key_prefix: &str) -> Keys {
        Keys {
            root: key_prefix.to_owned(),
            prefix: format!("{key_prefix}cluster/"),
        }
    }

    /// The JWT secret, as the store keeps it.
    pub fn secret(&self) -> String {
        format!("{}secret", self.root)
    }

    /// The store's marker (a document of the store: `storage::marker`).
    pub fn store_marker(&self) -> String {
        format!("{}store/marker", self.root)
    }

    /// A live node's registration; its TTL is 3 × heartbeat, refreshed every heartbeat.
    pub fn node(&self, id: &str) -> String {
        format!("{}node/{id}", self.prefix)
    }

    /// A node's latest figures for the dashboard (JSON, refreshed every second).
    pub fn node_metrics(&self, id: &str) -> String {
        format!("{}metrics/{id}", self.prefix)
    }

    /// Hash: node id → its description, for every node that joined and was not yet
    /// removed; a member whose registration expired is evicted by the first to notice.
    pub fn roster(&self) -> String {
        format!("{}roster", self.prefix)
    }

    /// List of the latest `joined` / `evicted` events, newest first.
    pub fn activity(&self) -> String {
        format!("{}activity", self.prefix)
    }

    /// Hash of a room: `index`, `collection`, `filter` (as subscribed).
    pub fn room(&self, room_id: &str) -> String {
        format!("{}room/{room_id}", self.prefix)
    }

    /// Hash of a room's counts: node id → connections in the room on that node.
    pub fn room_counts(&self, room_id: &str) -> String {
        format!("{}room-counts/{room_id}", self.prefix)
    }

    /// Set of the rooms a node has counts in.
    pub fn node_rooms(&self, node_id: &str) -> String {
        format!("{}node-rooms/{node_id}", self.prefix)
    }

    /// The channel of the notifications of one collection.
    pub fn collection_channel(&self, index: &str, collection: &str) -> String {
        format!("{}notify/{index}/{collection}", self.prefix)
    }

    /// The history of a collection's channel (a stream of `wire::entry`, `history.rs`).
    pub fn history_of(&self, channel: &str) -> String {
        let notify = format!("{}notify/", self.prefix);
        let collection = channel.strip_prefix(&notify).unwrap_or(channel);
        format!("{}history/{collection}", self.prefix)
    }

    /// Login attempts from one client address during one second (a counter).
    pub fn login_address(&self, address: &str, second: u64) -> String {
        format!("{}logins/address/{address}/{second}", self.prefix)
    }

    /// One username's login failures from one address (a hash: `count`, `blockedUntil`).
    /// The address comes first: it holds no `/`, a username may.
    pub fn login_failures(&self, address: &str, username: &str) -> String {
        format!("{}logins/failures/{address}/{username}", self.prefix)
    }

    /// The addresses a username logged in from (a hash: address → last success, ms).
    pub fn login_known(&self, username: &str) -> String {
        format!("{}logins/known/{username}", self.prefix)
    }

    /// A username's ceiling on passwords checked from unknown addresses (the
    /// theoretical arrival time of a GCRA, ms).
    pub fn login_ceiling(&self, username: &str) -> String {
        format!("{}logins/ceiling/{username}", self.prefix)
    }

    /// The revocation log: a stream of `{node, tokens}` entries that every node reads from
    /// its own offset (`revocations.rs`).
    pub fn revocations(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// The channel of token revocations.
    pub fn sessions_channel(&self) -> String {
        format!("{}sessions", self.prefix)
    }
}
