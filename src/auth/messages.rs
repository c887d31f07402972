//! Messages of the session registry.

use std::sync::Arc;

use actix::Message;

use crate::delivery::outbox::Outbox;

/// A WebSocket used a token: link them (a connection has at most one linked token).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Link {
    pub token: String,
    /// Milliseconds since the epoch; None for an infinite token.
    pub expires_at: Option<u64>,
    pub connection_id: Arc<str>,
    pub outbox: Outbox,
}

/// The connection closed, or logs out: forget its link, with no notification.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unlink {
    pub connection_id: Arc<str>,
}

/// These tokens were revoked: every connection still linked to one of them gets
/// `TokenExpired` and loses its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoke {
    pub tokens: Vec<String>,
}

/// How many tokens and connections are linked (tests and metrics).
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct Count;

/// A token was refreshed: its connections move to the new token (and keep their
/// subscriptions).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Move {
    pub from: String,
    pub to: String,
    pub expires_at: Option<u64>,
}
