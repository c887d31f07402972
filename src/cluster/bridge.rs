//! The `Bridge` actor owns the Redis pub/sub connection: it listens to the revocations
//! channel and to one channel per collection that has local rooms, hands what arrives to
//! the cluster, and reconnects and re-subscribes everything when Redis comes back. It pings
//! the connection every heartbeat: a link that no longer answers within the command timeout
//! (frozen, half-open) is replaced like a lost one.
//! What arrives, and what the bridge did to the subscriptions, goes to the inbox (`inbox`)
//! in order.
//!
//! On a Redis Cluster the link is a cluster connection of its own with sharded pub/sub
//! (SSUBSCRIBE: each channel is heard on the master that owns its slot, so a shard's
//! traffic stays on it). What Redis pushes comes through a push sender; a disconnection
//! from any master, a shard channel Redis unsubscribed by itself (its slot moved, or its
//! master failed over), a full inbound queue, or a PING some master does not answer makes
//! the bridge drop the whole connection and subscribe everything on a new one, as after a
//! lost link on one server: the inbox then reads every history for what the gap skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, WrapFuture};
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind, RedisResult};
use tokio::sync::mpsc;

use super::inbox::Inbound;
use super::messages::{Disconnected, Hold, Release, Unsubscribed};
use super::shared::SharedBus;
use super::{Bus, Link};

/// Between two connection attempts while Redis is away.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The subscribing half of the pub/sub link: a connection's sink on one server, the
/// cluster connection on a Redis Cluster.
enum Sink {
    Single(PubSubSink),
    Shards(ClusterConnection),
}

impl Sink {
    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Sink::Single(sink) => sink.subscribe(channels).await,
            // One SSUBSCRIBE per channel (one slot each), issued together.
            Sink::Shards(connection) => {
                futures_util::future::try_join_all(channels.iter().map(|channel| {
                    let mut connection = connection.clone();
                    async move { connection.ssubscribe(channel).await }
                }))
                .await?;
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Sink::Single(sink) => sink.unsubscribe(channel).await,
            Sink::Shards(connection) => connection.sunsubscribe(channel).await,
        }
    }

    /// Every connection of the link answers (on a Redis Cluster, every master's).
    async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Sink::Single(sink) => sink.ping::<redis::Value>().await.map(|_| ()),
            Sink::Shards(connection) => {
                let every_master = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                connection
                    .route_command(redis::cmd("PING"), every_master)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// What Redis pushes on a Redis Cluster link, handed over without waiting (the cluster
/// connection's push sender must not block): a message to the inbox, the rest to the
/// bridge. Pushes of an older connection than the bridge's current one are ignored.
fn shard_pushes(
    inbound: mpsc::Sender<Inbound>,
    bridge: actix::Addr<Bridge>,
    current: Arc<AtomicU64>,
    generation: u64,
) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
    move |push: PushInfo| {
        if current.load(Ordering::Acquire) != generation {
            return Err(());
        }
        let mut data = push.data.into_iter();
        match push.kind {
            PushKind::SMessage => {
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    return Ok(());
                };
                let arrival = Inbound::Message {
                    channel: redis::from_redis_value(channel).unwrap_or_default(),
                    payload: redis::from_redis_value(payload).unwrap_or_default(),
                };
                if inbound.try_send(arrival).is_err() {
                    // Full: this message is skipped, so the link is replaced and every
                    // history read (as for any gap).
                    bridge.do_send(Disconnected { generation });
                }
            }
            PushKind::SUnsubscribe => {
                if let Some(channel) = data.next().and_then(|c| redis::from_redis_value(c).ok()) {
                    bridge.do_send(Unsubscribed {
                        generation,
                        channel,
                    });
                }
            }
            PushKind::Disconnection => bridge.do_send(Disconnected { generation }),
            _ => {}
        }
        Ok(())
    }
}

pub struct Bridge {
    cluster: Arc<SharedBus>,
    link: Arc<Link>,
    /// What arrives goes to the fan-out, on another thread.
    inbound: mpsc::Sender<Inbound>,
    /// None while disconnected, or while an operation has it.
    sink: Option<Sink>,
    /// Channel → holds (rooms, and subscribes in progress, on its collection).
    holds: HashMap<String, usize>,
    /// Channels Redis confirmed on the current connection.
    subscribed: HashSet<String>,
    /// Whether the loss of the connection was logged.
    lost_logged: bool,
    /// The task reading the current connection, and which connection it is.
    reader: Option<actix_rt::task::JoinHandle<()>>,
    generation: u64,
    /// The generation whose pushes count (a Redis Cluster link).
    current: Arc<AtomicU64>,
}

impl Bridge {
    pub fn new(cluster: Arc<SharedBus>, link: Arc<Link>, inbound: mpsc::Sender<Inbound>) -> Bridge {
        Bridge {
            cluster,
            link,
            inbound,
            sink: None,
            holds: HashMap::new(),
            subscribed: HashSet::new(),
            lost_logged: false,
            reader: None,
            generation: 0,
            current: Arc::new(AtomicU64::new(0)),
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.link.redis.is_cluster() {
            return self.connect_shards(ctx);
        }
        let client = self.link.redis.client().cloned();
        let limit = self.link.timeout;
        let attempt = async move {
            let Some(client) = client else {
                return Err("no Redis client".to_owned());
            };
            match tokio::time::timeout(limit, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => Ok(pubsub),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer".into()),
            }
        };
        ctx.wait(attempt.into_actor(self).map(|result, bridge, ctx| {
            let pubsub = match result {
                Ok(pubsub) => pubsub,
                Err(reason) => {
                    bridge.log_loss(&reason);
                    bridge.reconnect_later(ctx);
                    return;
                }
            };
            let (sink, mut stream) = pubsub.split();
            let inbound = bridge.inbound.clone();
            let me = ctx.address();
            bridge.generation += 1;
            let generation = bridge.generation;
            bridge.reader = Some(actix_rt::spawn(async move {
                while let Some(message) = stream.next().await {
                    let arrival = Inbound::Message {
                        channel: message.get_channel_name().to_owned(),
                        payload: message.get_payload_bytes().to_vec(),
                    };
                    if inbound.send(arrival).await.is_err() {
                        return; // the node is going
                    }
                }
                me.do_send(Disconnected { generation });
            }));
            bridge.sink = Some(Sink::Single(sink));
            bridge.subscribe_all(ctx);
        }));
    }

    /// The Redis Cluster link: a cluster connection of its own whose pushes go to the
    /// inbox and to this actor (`shard_pushes`).
    fn connect_shards(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        self.current.store(generation, Ordering::Release);
        let pushes = shard_pushes(
            self.inbound.clone(),
            ctx.address(),
            self.current.clone(),
            generation,
        );
        let link = self.link.clone();
        let attempt = async move {
            match link.redis.shard_pubsub(pushes).await {
                Some(Ok(connection)) => Ok(connection),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("not a Redis Cluster".to_owned()),
            }
        };
        ctx.wait(attempt.into_actor(self).map(move |result, bridge, ctx| {
            if bridge.generation != generation {
                return;
            }
            match result {
                Ok(connection) => {
                    bridge.sink = Some(Sink::Shards(connection));
                    bridge.subscribe_all(ctx);
                }
                Err(reason) => {
                    bridge.log_loss(&reason);
                    bridge.reconnect_later(ctx);
                }
            }
        }));
    }

    /// On a new connection: every held channel and the revocations channel.
    fn subscribe_all(&mut self, ctx: &mut Context<Self>) {
        let mut channels: Vec<String> = self.holds.keys().cloned().collect();
        channels.push(self.link.keys.sessions_channel());
        self.subscribe(ctx, channels);
    }

    /// Subscribes the channels, blocking the actor's other messages until Redis answers.
    fn subscribe(&mut self, ctx: &mut Context<Self>, channels: Vec<String>) {
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        let limit = self.link.timeout;
        let operation = async move {
            let result = tokio::time::timeout(limit, sink.subscribe(&channels)).await;
            (sink, channels, result)
        };
        ctx.wait(operation.into_actor(self).map(
            |(sink, channels, result), bridge, ctx| match result {
                Ok(Ok(())) => {
                    bridge.sink = Some(sink);
                    bridge.cluster.pubsub_up(true);
                    if bridge.lost_logged {
                        bridge.lost_logged = false;
                        bridge.link.health.counters.reconnects.inc();
                        log::warn!(
                            "[CLUSTER] pub/sub connection back: {} channel(s) subscribed again",
                            channels.len()
                        );
                    }
                    bridge.subscribed.extend(channels);
                    // What the channels carried meanwhile is read from their histories.
                    bridge.tell(Inbound::Resubscribed);
                    // What was revoked while the link was down is read from the log.
                    bridge.cluster.catch_up_soon();
                }
                Ok(Err(e)) => bridge.lose(ctx, &e.to_string()),
                Err(_) => bridge.lose(ctx, "no answer to SUBSCRIBE"),
            },
        ));
    }

    fn log_loss(&mut self, reason: &str) {
        if !self.lost_logged {
            self.lost_logged = true;
            log::error!(
                "[CLUSTER] pub/sub connection to Redis lost ({reason}): notifications from other nodes pause; reconnecting"
            );
        }
    }

    /// The connection is unusable: drop it (its reader too) and connect again.
    fn lose(&mut self, ctx: &mut Context<Self>, reason: &str) {
        self.cluster.pubsub_up(false);
        self.log_loss(reason);
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        // After what the old connection delivered: what follows may have skipped some.
        self.tell(Inbound::Lost);
        self.generation += 1;
        self.current.store(self.generation, Ordering::Release);
        self.sink = None;
        self.subscribed.clear();
        self.reconnect_later(ctx);
    }

    /// Checks that the connection still answers; one that does not within the command
    /// timeout is replaced. The actor's other messages wait meanwhile (bounded).
    fn ping(&mut self, ctx: &mut Context<Self>) {
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        let limit = self.link.timeout;
        let operation = async move {
            let result = tokio::time::timeout(limit, sink.ping()).await;
            (sink, result)
        };
        ctx.wait(
            operation
                .into_actor(self)
                .map(|(sink, result), bridge, ctx| match result {
                    Ok(Ok(())) => bridge.sink = Some(sink),
                    Ok(Err(e)) => bridge.lose(ctx, &e.to_string()),
                    Err(_) => bridge.lose(ctx, "no answer to PING"),
                }),
        );
    }

    /// Hands a subscription change to the inbox.
    /// In order with what the readers handed over so far, unless the queue is full.
    fn tell(&self, what: Inbound) {
        if let Err(mpsc::error::TrySendError::Full(what)) = self.inbound.try_send(what) {
            let inbound = self.inbound.clone();
            actix_rt::spawn(async move {
                let _ = inbound.send(what).await;
            });
        }
    }

    fn reconnect_later(&mut self, ctx: &mut Context<Self>) {
        if !self.cluster.is_leaving() {
            ctx.run_later(RECONNECT_DELAY, |bridge, ctx| bridge.connect(ctx));
        }
    }
}

impl Actor for Bridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
        ctx.run_interval(self.link.heartbeat, |bridge, ctx| bridge.ping(ctx));
    }
}

impl Handler<Hold> for Bridge {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, hold: Hold, _: &mut Context<Self>) -> Self::Result {
        *self.holds.entry(hold.channel.clone()).or_insert(0) += 1;
        let sink = match self.sink.take() {
            Some(sink) if !self.subscribed.contains(&hold.channel) => sink,
            other => {
                // Subscribed already, or no connection: the reconnection subscribes it.
                self.sink = other;
                return AtomicResponse::new(Box::pin(actix::fut::ready(())));
            }
        };
        let limit = self.link.timeout;
        let channel = hold.channel;
        let operation = async move {
            let mut sink = sink;
            let result =
                tokio::time::timeout(limit, sink.subscribe(std::slice::from_ref(&channel))).await;
            (sink, channel, result)
        };
        AtomicResponse::new(Box::pin(operation.into_actor(self).map(
            |(sink, channel, result), bridge, ctx| match result {
                Ok(Ok(())) => {
                    bridge.sink = Some(sink);
                    bridge.subscribed.insert(channel.clone());
                    bridge.tell(Inbound::Subscribed(channel));
                }
                Ok(Err(e)) => bridge.lose(ctx, &e.to_string()),
                Err(_) => bridge.lose(ctx, "no answer to SUBSCRIBE"),
            },
        )))
    }
}

impl Handler<Release> for Bridge {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, release: Release, _: &mut Context<Self>) -> Self::Result {
        let channel = release.channel;
        let left = match self.holds.get_mut(&channel) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        let done = AtomicResponse::new(Box::pin(actix::fut::ready(())));
        if left > 0 {
            return done;
        }
        self.holds.remove(&channel);
        self.tell(Inbound::Released(channel.clone()));
        if !self.subscribed.remove(&channel) {
            return done;
        }
        let Some(mut sink) = self.sink.take() else {
            return done;
        };
        let limit = self.link.timeout;
        let operation = async move {
            let result = tokio::time::timeout(limit, sink.unsubscribe(&channel)).await;
            (sink, result)
        };
        AtomicResponse::new(Box::pin(operation.into_actor(self).map(
            |(sink, result), bridge, ctx| match result {
                Ok(Ok(())) => bridge.sink = Some(sink),
                Ok(Err(e)) => bridge.lose(ctx, &e.to_string()),
                Err(_) => bridge.lose(ctx, "no answer to UNSUBSCRIBE"),
            },
        )))
    }
}

impl Handler<Disconnected> for Bridge {
    type Result = ();

    fn handle(&mut self, lost: Disconnected, ctx: &mut Context<Self>) {
        if lost.generation == self.generation {
            self.reader = None;
            self.lose(ctx, "the connection closed");
        }
    }
}

impl Handler<Unsubscribed> for Bridge {
    type Result = ();

    /// Redis unsubscribed a shard channel by itself (its slot moved to another master, or
    /// its master failed over): unless the node released it meanwhile, the link is
    /// replaced and every channel subscribed again where its slot now is.
    fn handle(&mut self, gone: Unsubscribed, ctx: &mut Context<Self>) {
        // A channel the node released left `subscribed` before its SUNSUBSCRIBE.
        if gone.generation == self.generation && self.subscribed.contains(&gone.channel) {
            self.lose(
                ctx,
                &format!("Redis unsubscribed {} (its slot moved)", gone.channel),
            );
        }
    }
}
