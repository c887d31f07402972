//! Names of the cluster's Redis keys and channels. Every name starts with
//! `services.storage.keyPrefix`, so that several clusters can share one Redis.
//!
//! Designed for Redis Cluster's slots (issue 20): what one script or one read touches
//! together shares a hash tag (the part between braces, which alone decides the slot).
//! Membership — registrations, the roster, the activity log, each node's room set and
//! figures — and the revocation log and channel share `{<keyPrefix>cluster}`; a room's two
//! hashes share `{r:<room id>}`; a collection's channel and its history share
//! `{c:<index>/<collection>}`, so that one script still keeps the history and publishes.
//! CRC16 over the names spreads collections well over the masters (docs/clustering.md).
//! Braces in an id are replaced in its tag (they would end it early).

#[derive(Clone)]
pub struct Keys {
    root: String,
    prefix: String,
    /// `<keyPrefix>{<keyPrefix>cluster}/`: membership and revocations, one slot.
    group: String,
}

/// An id as part of a hash tag: without the braces that would end the tag.
fn tag(id: &str) -> String {
    id.replace(['{', '}'], "_")
}

impl Keys {
    pub fn new(key_prefix: &str) -> Keys {
        Keys {
            root: key_prefix.to_owned(),
            prefix: format!("{key_prefix}cluster/"),
            group: format!("{key_prefix}{{{}cluster}}/", tag(key_prefix)),
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
        format!("{}node/{id}", self.group)
    }

    /// Set while another node evicts this one (its counts are being removed): the node's
    /// registration waits for it to go (`rooms::EVICT_SCRIPT`).
    pub fn evicting(&self, id: &str) -> String {
        format!("{}evicting/{id}", self.group)
    }

    /// A node's latest figures for the dashboard (JSON, refreshed every second).
    pub fn node_metrics(&self, id: &str) -> String {
        format!("{}metrics/{id}", self.group)
    }

    /// Hash: node id → its description, for every node that joined and was not yet
    /// removed; a member whose registration expired is evicted by the first to notice.
    pub fn roster(&self) -> String {
        format!("{}roster", self.group)
    }

    /// List of the latest `joined` / `evicted` events, newest first.
    pub fn activity(&self) -> String {
        format!("{}activity", self.group)
    }

    /// Hash of a room: `index`, `collection`, `filter` (as subscribed).
    pub fn room(&self, room_id: &str) -> String {
        format!("{}{{r:{}}}/room", self.prefix, tag(room_id))
    }

    /// Hash of a room's counts: node id → connections in the room on that node.
    pub fn room_counts(&self, room_id: &str) -> String {
        format!("{}{{r:{}}}/counts", self.prefix, tag(room_id))
    }

    /// Set of the rooms a node has counts in.
    pub fn node_rooms(&self, node_id: &str) -> String {
        format!("{}node-rooms/{node_id}", self.group)
    }

    /// The channel of the notifications of one collection.
    pub fn collection_channel(&self, index: &str, collection: &str) -> String {
        format!(
            "{}{{c:{}/{}}}/notify",
            self.prefix,
            tag(index),
            tag(collection)
        )
    }

    /// The history of a collection's channel (a stream of `wire::entry`, `history.rs`), in
    /// the channel's slot.
    pub fn history_of(&self, channel: &str) -> String {
        let collection = channel.strip_suffix("/notify").unwrap_or(channel);
        format!("{collection}/history")
    }

    /// Login attempts from one client address during one second (a counter).
    pub fn login_address(&self, address: &str, second: u64) -> String {
        format!("{}logins/address/{address}/{second}", self.prefix)
    }

    /// One username's login failures from one address (a hash: `count`, `blockedUntil`).
    /// A username's three keys share its hash tag (one script reads them together).
    pub fn login_failures(&self, address: &str, username: &str) -> String {
        format!(
            "{}logins/{{u:{}}}/failures/{address}",
            self.prefix,
            tag(username)
        )
    }

    /// The addresses a username logged in from (a hash: address → last success, ms).
    pub fn login_known(&self, username: &str) -> String {
        format!("{}logins/{{u:{}}}/known", self.prefix, tag(username))
    }

    /// A username's ceiling on passwords checked from unknown addresses (the
    /// theoretical arrival time of a GCRA, ms).
    pub fn login_ceiling(&self, username: &str) -> String {
        format!("{}logins/{{u:{}}}/ceiling", self.prefix, tag(username))
    }

    /// The revocation log: a stream of `{node, tokens}` entries that every node reads from
    /// its own offset (`revocations.rs`).
    pub fn revocations(&self) -> String {
        format!("{}revocations", self.group)
    }

    /// The channel of token revocations.
    pub fn sessions_channel(&self) -> String {
        format!("{}sessions", self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                rest.find('}')
                    .filter(|close| *close > 0)
                    .map(|close| &rest[..close])
            })
            .unwrap_or(key)
    }

    #[test]
    fn what_is_used_together_shares_a_hash_tag() {
        let keys = Keys::new("krt/");
        let group = [
            keys.node("n1"),
            keys.node("n2"),
            keys.roster(),
            keys.activity(),
            keys.node_rooms("n1"),
            keys.evicting("n1"),
            keys.node_metrics("n2"),
            keys.revocations(),
            keys.sessions_channel(),
        ];
        assert!(
            group.iter().all(|k| hash_tag(k) == "krt/cluster"),
            "{group:?}"
        );
        assert_eq!(
            hash_tag(&keys.room("ab12")),
            hash_tag(&keys.room_counts("ab12"))
        );
        assert_ne!(hash_tag(&keys.room("ab12")), hash_tag(&keys.room("cd34")));
        let login = [
            keys.login_failures("10.0.0.1", "a{b}/c"),
            keys.login_known("a{b}/c"),
            keys.login_ceiling("a{b}/c"),
        ];
        assert!(login.iter().all(|k| hash_tag(k) == "u:a_b_/c"), "{login:?}");
        let channel = keys.collection_channel("i", "c{x}");
        assert_eq!(channel, "krt/cluster/{c:i/c_x_}/notify");
        assert_eq!(keys.history_of(&channel), "krt/cluster/{c:i/c_x_}/history");
        assert!(
            group
                .iter()
                .chain([&channel])
                .all(|k| k.starts_with("krt/"))
        );
        // Two clusters sharing a Redis keep their membership apart.
        assert_eq!(hash_tag(&Keys::new("other/").roster()), "other/cluster");
    }
}
