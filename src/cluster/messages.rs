//! Messages of the `Bridge` actor.

use actix::Message;

/// A room may appear on this channel's collection: listen to it (confirmed by Redis before
/// the answer, when Redis is reachable). Every hold is matched by one `Release`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold {
    pub channel: String,
}

/// A hold ends; the last one unsubscribes the channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub channel: String,
}

/// The pub/sub connection was lost.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    /// Which connection (a newer one may exist already).
    pub generation: u64,
}

/// Redis unsubscribed a shard channel without being asked (Redis Cluster: its slot moved).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribed {
    pub generation: u64,
    pub channel: String,
}
