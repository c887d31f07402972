//! Builds the actix App, binds, runs, and drains on shutdown (PROTOCOL.md §9).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::rc::Rc;

use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactory, fn_factory, fn_service, map_config};
use actix_web::body::BoxBody;
use actix_web::dev::{AppConfig, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use tokio::net::TcpStream;

use crate::cluster::Upstream;
use crate::config::Settings;
use crate::metrics::{Metrics, ProtocolLabel, ProtocolLabels};
use crate::node::Node;
use crate::protocol::close;
use crate::realtime::Realtime;
use crate::realtime::service::room_key;
use crate::security::bootstrap::bootstrap;
use crate::storage::Store;
use crate::storage::marker::StoreMarker;

/// A node that is serving.
pub struct RunningNode {
    pub node: Arc<Node>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `server.metrics.port` is set.
    pub metrics_addr: Option<SocketAddr>,
    handle: ServerHandle,
    metrics_handle: Option<ServerHandle>,
}

/// Binds `server.host:server.port` and starts serving on the current actix system.
pub async fn start(settings: Settings) -> io::Result<RunningNode> {
    let store = Store::open(&settings.services.storage)
        .await
        .map_err(|e| io::Error::other(format!("[STORAGE] {e}")))?;
    let ready = bootstrap(&store, &settings)
        .await
        .map_err(|e| io::Error::other(format!("[STORAGE] {e}")))?;
    for warning in &ready.warnings {
        log::warn!("{warning}");
    }
    // The composition root: the bus, the realtime service above it, the node's context.
    let metrics = Arc::new(Metrics::new());
    let bus = crate::cluster::connect(&settings, metrics.bus_counters())
        .await
        .map_err(|e| io::Error::other(format!("[CLUSTER] {e}")))?;
    store.count_with(metrics.cache_counters());
    store.expect_confirmations(Duration::from_millis(settings.cluster.heartbeat));
    let announcer = bus.clone();
    store.on_security_change(Box::new(move |version| {
        // Refused (counted) only when the retain queue is full: the others then learn the
        // version at their next heartbeat.
        let _ = announcer.send(crate::cluster::BusMessage::Security {
            node: announcer.node_id().to_string(),
            version,
        });
    }));
    let realtime = Realtime::new(
        bus.clone(),
        &settings.limits,
        room_key(&ready.secret),
        metrics.realtime_counters(),
    );
    let node = Node::new(
        settings,
        store,
        ready.secret.clone(),
        bus,
        realtime,
        metrics,
    );
    if ready.marker.admin_created {
        node.security.note_admin_created();
    }
    let bus = node.bus.clone();
    node.security
        .set_marker_source(Box::new(move || bus.store_marker()));
    node.security
        .current(&node.store, &node.settings)
        .await
        .map_err(|e| io::Error::other(format!("[STORAGE] {e}")))?;
    let data = web::Data::new(node.clone());
    let websocket = &node.settings.server.protocols.websocket;
    let intake = web::Data::new(crate::ws::Intake::new(
        websocket.partial_messages_budget.0,
        Duration::from_millis(websocket.message_timeout),
    ));
    let s = &node.settings.server;
    let accepted = node
        .metrics
        .connections_accepted
        .get_or_create(&ProtocolLabels {
            protocol: ProtocolLabel::http,
        })
        .clone();
    let metrics_data = data.clone();
    let listeners = bind(&s.host, s.port)?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|e| io::Error::other(format!("no address bound: {e}")))?;
    let mut server = actix_server::Server::build()
        .disable_signals()
        // The drain (`RunningNode::drain`) has waited for the requests by then: actix's own
        // graceful stop only lets answers finish leaving, and closes idle kept-alive
        // connections after this, instead of waiting out their keep-alive (5 s).
        .shutdown_timeout(1);
    for listener in listeners {
        let data = data.clone();
        let intake = intake.clone();
        let accepted = accepted.clone();
        let local = listener.local_addr()?;
        server = server.listen("kuzzle-rt", listener, move || {
            let accepted = accepted.clone();
            let upgrade_data = data.clone();
            let upgrade_intake = intake.clone();
            // actix-web's HttpServer defaults, which this server replaces to get the
            // upgrade hook, plus TCP_NODELAY.
            HttpService::build()
                .client_disconnect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .local_addr(local)
                .on_connect_ext(move |_: &TcpStream, _| {
                    accepted.inc();
                })
                .upgrade(fn_factory(move || {
                    let app = app(upgrade_data.clone(), upgrade_intake.clone()).into_factory();
                    async move {
                        let app = Rc::new(app.new_service(AppConfig::default()).await?);
                        Ok::<_, ()>(fn_service(move |upgrade| {
                            crate::ws::upgrade::serve(app.clone(), upgrade)
                        }))
                    }
                }))
                .finish(map_config(app(data.clone(), intake.clone()), |_| {
                    AppConfig::default()
                }))
                .tcp()
        })?;
    }
    let metrics_listener = metrics_listener(&node, metrics_data)?;
    // Bound, but accepting nobody yet: the cluster is joined first, so that no request
    // finds it half started.
    let upstream: Arc<dyn Upstream> = node.clone();
    let store_state = crate::cluster::StoreState {
        secret: node.secret.clone(),
        marker: serde_json::to_string(&ready.marker).unwrap_or_default(),
    };
    node.bus
        .start(addr, Arc::downgrade(&upstream), store_state)
        .await
        .map_err(|e| io::Error::other(format!("[CLUSTER] {e}")))?;
    if let Some(link) = node.bus.link() {
        node.logins.share(link.clone());
    }
    node.realtime
        .set_token_check(token_check(Arc::downgrade(&node)));
    watch_the_store(
        &node,
        Duration::from_millis(node.settings.cluster.heartbeat),
    );
    take_statistics(&node);
    let weak = Arc::downgrade(&node);
    node.bus.share_figures(Box::new(move || {
        let node = weak.upgrade()?;
        Some(node.metrics.snapshot(&node.figures()).to_string())
    }));
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let ws = &s.protocols.websocket;
    log::info!(
        "node {} listening on {addr} (websocket: {}, http: {}, storage: {}, maxRequestSize: {} bytes, heartbeat: {} ms, idleTimeout: {} ms, rateLimit: {}/s)",
        node.id,
        if ws.enabled { "on" } else { "off" },
        if s.protocols.http.enabled {
            "on"
        } else {
            "off"
        },
        node.settings.services.storage.backend.name(),
        s.max_request_size.bytes(),
        ws.heartbeat,
        ws.idle_timeout,
        ws.rate_limit,
    );
    let (metrics_addr, metrics_handle) = match metrics_listener {
        Some((server, addr)) => {
            let handle = server.handle();
            actix_rt::spawn(server);
            log::info!("metrics on http://{addr}/metrics");
            (Some(addr), Some(handle))
        }
        None => (None, None),
    };
    Ok(RunningNode {
        node,
        addr,
        metrics_addr,
        handle,
        metrics_handle,
    })
}

/// Reads the store's security counter every `every` on a shared store: the caches' safety
/// net (`Store::confirm`: a security change whose bus message was lost, a store replaced),
/// and a store emptied behind the cluster's back shows (`kuzzle_store_lost`) without any
/// request.
fn watch_the_store(node: &Arc<Node>, every: Duration) {
    if node.store.backend() != crate::config::StorageBackend::Redis {
        return;
    }
    let weak = Arc::downgrade(node);
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(node) = weak.upgrade() else {
                return;
            };
            let was_lost = node.store.is_lost();
            let epoch = node
                .bus
                .store_marker()
                .and_then(|text| serde_json::from_str::<StoreMarker>(&text).ok())
                .map(|marker| marker.epoch);
            let _ = node.store.confirm(epoch.as_deref()).await;
            if node.store.is_lost() != was_lost {
                if was_lost {
                    log::warn!("[STORAGE] the store has its data again");
                } else {
                    log::error!(
                        "[STORAGE] the store answers without its data (users, roles, tokens): restore the backup (kuzzle_store_lost 1)"
                    );
                }
            }
        }
    });
}

/// Every `stats.statsInterval` seconds, a snapshot of this node's request counters goes to
/// the store for `stats.ttl` seconds (`server:getStats`; cluster-wide on Redis). A store
/// that does not answer loses that snapshot, nothing else.
fn take_statistics(node: &Arc<Node>) {
    let stats = &node.settings.stats;
    if !stats.enabled {
        return;
    }
    let every = Duration::from_secs(stats.stats_interval);
    let ttl = Duration::from_secs(stats.ttl);
    let weak = Arc::downgrade(node);
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(node) = weak.upgrade() else {
                return;
            };
            let now = crate::protocol::now_ms();
            let snapshot = node.statistics(now, true);
            let id = format!("{now:013}-{}", node.id);
            if let Err(e) = node
                .store
                .put_expiring(crate::storage::Kind::Stats, &id, &snapshot, ttl)
                .await
            {
                log::debug!("statistics snapshot not stored: {e}");
            }
        }
    });
}

/// Linked tokens checked against the store (all at once, so over Redis they are
/// pipelined): those it no longer holds were revoked. A store that does not answer
/// revokes nothing.
fn token_check(node: std::sync::Weak<Node>) -> crate::realtime::service::TokenCheck {
    Box::new(move |tokens| {
        let node = node.clone();
        Box::pin(async move {
            let Some(node) = node.upgrade() else {
                return Vec::new();
            };
            let checks = tokens.into_iter().map(|token| {
                let node = node.clone();
                async move {
                    match node.store.token_owner(&token).await {
                        Ok(None) => Some(token),
                        _ => None,
                    }
                }
            });
            futures_util::future::join_all(checks)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    })
}

/// The App every request goes through, upgrades included.
fn app(
    data: web::Data<Arc<Node>>,
    intake: web::Data<crate::ws::Intake>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(data)
        .app_data(intake)
        .default_service(web::to(crate::http::entry))
}

/// Listens on every address `host` names (as actix-web's `bind` does), with actix-web's
/// backlog.
fn bind(host: &str, port: u16) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let cannot =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {host}:{port}: {e}"));
    let mut listeners = Vec::new();
    for addr in std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map_err(cannot)? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(cannot)?;
        socket.set_reuse_address(true).map_err(cannot)?;
        socket.bind(&addr.into()).map_err(cannot)?;
        socket.listen(1024).map_err(cannot)?;
        listeners.push(std::net::TcpListener::from(socket));
    }
    if listeners.is_empty() {
        return Err(io::Error::other(format!("{host}:{port} names no address")));
    }
    Ok(listeners)
}

/// With `server.metrics.port`, a listener of its own serving `GET /metrics` only.
fn metrics_listener(
    node: &Node,
    data: web::Data<Arc<Node>>,
) -> io::Result<Option<(actix_web::dev::Server, SocketAddr)>> {
    let listener = &node.settings.server.metrics;
    let (true, Some(port)) = (node.settings.http.metrics.enabled, listener.port) else {
        return Ok(None);
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/metrics",
                web::get().to(
                    |node: web::Data<Arc<Node>>, req: actix_web::HttpRequest| async move {
                        crate::http::metrics_response(&node, &req)
                    },
                ),
            )
            .default_service(web::to(actix_web::HttpResponse::NotFound))
    })
    .workers(1)
    .disable_signals()
    .bind((listener.host.as_str(), port))
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {}:{port} (server.metrics): {e}",
                listener.host
            ),
        )
    })?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("no address bound for the metrics"))?;
    Ok(Some((server.run(), addr)))
}

impl RunningNode {
    /// The drain: refuse new requests, let running ones finish (bounded by
    /// `server.shutdownGracePeriod`), close every socket with 1001, then stop.
    pub async fn drain(self) {
        let node = &self.node;
        node.start_draining();
        log::info!("node {} draining", node.id);
        let grace = Duration::from_millis(node.settings.server.shutdown_grace_period);
        let deadline = Instant::now() + grace;
        let busy = || {
            node.limiter.running() + node.limiter.pending() > 0
                || node
                    .http_in_flight
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
        };
        while busy() && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        node.connections
            .close_all(close::GOING_AWAY, close::SHUTTING_DOWN);
        // Give the sockets a moment to flush their close frame.
        let flush_deadline =
            Instant::now() + Duration::from_secs(2).min(grace.max(Duration::from_millis(200)));
        while !node.connections.is_empty() && Instant::now() < flush_deadline {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        node.bus.leave().await;
        self.handle.stop(true).await;
        if let Some(metrics) = self.metrics_handle {
            metrics.stop(true).await;
        }
        log::info!("node {} stopped", node.id);
    }

    /// Stops at once, without draining.
    pub async fn stop(self) {
        self.handle.stop(false).await;
        if let Some(metrics) = self.metrics_handle {
            metrics.stop(false).await;
        }
    }
}

/// Starts a node and serves until SIGTERM or SIGINT, then drains. A second signal exits at once.
pub async fn run(settings: Settings) -> io::Result<()> {
    // The handlers are installed before the node announces its address: a signal sent by whoever
    // waited for that line must find them (the default action would kill the process).
    let mut signals = Signals::install()?;
    let running = start(settings).await?;
    let bus = running.node.bus.clone();
    let displaced = tokio::select! {
        _ = signals.next() => false,
        _ = bus.displaced() => true,
    };
    actix_rt::spawn(async move {
        signals.next().await;
        log::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    running.drain().await;
    if displaced {
        return Err(io::Error::other(
            "[CLUSTER] another process took this node's id: stopped (restart it to get a new one)",
        ));
    }
    Ok(())
}

/// SIGTERM and SIGINT, listened to from the moment `install` returns.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
