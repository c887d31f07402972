//! The session registry (PROTOCOL.md §7.8): which WebSocket connections use which token.
//! One timer fires at the earliest expiry; then, or on a revocation, each linked
//! connection receives `TokenExpired`, loses its subscriptions (with "out" notifications,
//! through the realtime service) and is unlinked. Its socket stays open. Only the realtime
//! service talks to it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, SpawnHandle};
use prometheus_client::metrics::counter::Counter;

use super::notify::token_expired;
use super::service::Realtime;
use crate::delivery::{Outbox, Outgoing};
use crate::protocol::now_ms;

#[derive(Clone, Copy)]
enum Reason {
    Expiry,
    Revocation,
}

struct Linked {
    expires_at: Option<u64>,
    connections: HashMap<Arc<str>, Outbox>,
}

/// `TokenExpired` sent, by reason (`/metrics`).
#[derive(Clone, Default)]
pub struct ExpiryCounters {
    pub expiry: Counter,
    pub revocation: Counter,
}

pub struct SessionRegistry {
    node_id: Arc<str>,
    realtime: Weak<Realtime>,
    counters: ExpiryCounters,
    tokens: HashMap<String, Linked>,
    by_connection: HashMap<Arc<str>, String>,
    /// (expiry, token) of every linked token that expires, earliest first.
    expiries: BTreeSet<(u64, String)>,
    timer: Option<(u64, SpawnHandle)>,
}

impl SessionRegistry {
    pub fn new(node_id: Arc<str>, realtime: Weak<Realtime>, counters: ExpiryCounters) -> Self {
        SessionRegistry {
            node_id,
            realtime,
            counters,
            tokens: HashMap::new(),
            by_connection: HashMap::new(),
            expiries: BTreeSet::new(),
            timer: None,
        }
    }

    fn unlink(&mut self, connection_id: &str) {
        let Some(token) = self.by_connection.remove(connection_id) else {
            return;
        };
        let now_empty = self.tokens.get_mut(&token).is_some_and(|linked| {
            linked.connections.remove(connection_id);
            linked.connections.is_empty()
        });
        if now_empty {
            self.forget(&token);
        }
    }

    fn forget(&mut self, token: &str) -> Option<Linked> {
        let linked = self.tokens.remove(token)?;
        if let Some(at) = linked.expires_at {
            self.expiries.remove(&(at, token.to_owned()));
        }
        Some(linked)
    }

    /// TokenExpired, subscriptions dropped, link removed: for every connection of `token`.
    fn end(&mut self, token: &str, reason: Reason) {
        let Some(linked) = self.forget(token) else {
            return;
        };
        let message = Outgoing::from(token_expired(&self.node_id));
        let counter = match reason {
            Reason::Expiry => &self.counters.expiry,
            Reason::Revocation => &self.counters.revocation,
        };
        counter.inc_by(linked.connections.len() as u64);
        let realtime = self.realtime.upgrade();
        for (connection_id, outbox) in linked.connections {
            self.by_connection.remove(&connection_id);
            outbox.push(message.clone());
            if let Some(realtime) = &realtime {
                realtime.leave_all(&connection_id, true);
            }
        }
    }

    /// Keeps one timer, set for the earliest expiry.
    fn reschedule(&mut self, ctx: &mut Context<Self>) {
        let earliest = self.expiries.first().map(|(at, _)| *at);
        if self.timer.as_ref().map(|(at, _)| *at) == earliest {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = earliest {
            let delay = Duration::from_millis(at.saturating_sub(now_ms()));
            let handle = ctx.run_later(delay, |registry, ctx| {
                registry.timer = None;
                let now = now_ms();
                let due: Vec<String> = registry
                    .expiries
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .map(|(_, t)| t.clone())
                    .collect();
                for token in due {
                    registry.end(&token, Reason::Expiry);
                }
                registry.reschedule(ctx);
            });
            self.timer = Some((at, handle));
        }
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;
}

impl Handler<Link> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, link: Link, ctx: &mut Context<Self>) {
        if self.by_connection.get(&link.connection_id) == Some(&link.token) {
            return;
        }
        self.unlink(&link.connection_id);
        let linked = self
            .tokens
            .entry(link.token.clone())
            .or_insert_with(|| Linked {
                expires_at: link.expires_at,
                connections: HashMap::new(),
            });
        linked
            .connections
            .insert(link.connection_id.clone(), link.outbox);
        if let Some(at) = link.expires_at {
            self.expiries.insert((at, link.token.clone()));
        }
        self.by_connection.insert(link.connection_id, link.token);
        self.reschedule(ctx);
    }
}

impl Handler<Unlink> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, unlink: Unlink, ctx: &mut Context<Self>) {
        self.unlink(&unlink.connection_id);
        self.reschedule(ctx);
    }
}

impl Handler<Revoke> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, revoke: Revoke, ctx: &mut Context<Self>) {
        for token in &revoke.tokens {
            self.end(token, Reason::Revocation);
        }
        self.reschedule(ctx);
    }
}

impl Handler<LinkedTokens> for SessionRegistry {
    type Result = actix::MessageResult<LinkedTokens>;

    fn handle(&mut self, _: LinkedTokens, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.tokens.keys().cloned().collect())
    }
}

impl Handler<Move> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, moved: Move, ctx: &mut Context<Self>) {
        let Some(linked) = self.forget(&moved.from) else {
            return;
        };
        for (connection_id, outbox) in linked.connections {
            self.by_connection.remove(&connection_id);
            self.handle(
                Link {
                    token: moved.to.clone(),
                    expires_at: moved.expires_at,
                    connection_id,
                    outbox,
                },
                ctx,
            );
        }
        self.reschedule(ctx);
    }
}

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

/// A token was refreshed: its connections move to the new token (and keep their
/// subscriptions).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Move {
    pub from: String,
    pub to: String,
    pub expires_at: Option<u64>,
}

/// Every token some socket of this node is linked to (to check them all after missed
/// revocations).
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct LinkedTokens;
