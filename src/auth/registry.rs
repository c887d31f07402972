//! The session registry (PROTOCOL.md §7.8): which WebSocket connections use which token.
//! One timer fires at the earliest expiry; then, or on a revocation, each linked
//! connection receives `TokenExpired`, loses its subscriptions (with "out" notifications)
//! and is unlinked. Its socket stays open.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, MessageResult, SpawnHandle};

use super::messages::{Count, Link, Move, Revoke, Unlink};
use crate::cluster::Cluster;
use crate::delivery::outbox::Outbox;
use crate::delivery::writer::Outgoing;
use crate::metrics::ReasonLabels;
use crate::protocol::now_ms;
use crate::realtime::notify::token_expired;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

struct Linked {
    expires_at: Option<u64>,
    connections: HashMap<Arc<str>, Outbox>,
}

pub struct SessionRegistry {
    node_id: Arc<str>,
    cluster: Arc<Cluster>,
    /// TokenExpired sent, by reason (`/metrics`).
    token_expired: Family<ReasonLabels, Counter>,
    tokens: HashMap<String, Linked>,
    by_connection: HashMap<Arc<str>, String>,
    /// (expiry, token) of every linked token that expires, earliest first.
    expiries: BTreeSet<(u64, String)>,
    timer: Option<(u64, SpawnHandle)>,
}

impl SessionRegistry {
    pub fn new(
        node_id: Arc<str>,
        cluster: Arc<Cluster>,
        token_expired: Family<ReasonLabels, Counter>,
    ) -> Self {
        SessionRegistry {
            node_id,
            cluster,
            token_expired,
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
    /// `reason` is "expiry" or "revocation".
    fn end(&mut self, token: &str, reason: &'static str) {
        let Some(linked) = self.forget(token) else {
            return;
        };
        let message = Outgoing::from(token_expired(&self.node_id));
        self.token_expired
            .get_or_create(&ReasonLabels { reason })
            .inc_by(linked.connections.len() as u64);
        for (connection_id, outbox) in linked.connections {
            self.by_connection.remove(&connection_id);
            outbox.push(message.clone());
            self.cluster.remove_connection(&connection_id, true);
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
                    registry.end(&token, "expiry");
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
            self.end(token, "revocation");
        }
        self.reschedule(ctx);
    }
}

impl Handler<Count> for SessionRegistry {
    type Result = MessageResult<Count>;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.tokens.len(), self.by_connection.len()))
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
