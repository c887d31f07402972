//! Builds the actix App, binds, runs, and drains on shutdown (PROTOCOL.md §9).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::node::Node;
use crate::protocol::close;
use crate::security::bootstrap::bootstrap;
use crate::storage::Store;

/// A node that is serving.
pub struct RunningNode {
    pub node: Arc<Node>,
    pub addr: SocketAddr,
    handle: ServerHandle,
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
    let joining = crate::cluster::connect(&settings)
        .await
        .map_err(|e| io::Error::other(format!("[CLUSTER] {e}")))?;
    let node = Node::new(settings, store, ready.secret, joining);
    node.security
        .current(&node.store)
        .await
        .map_err(|e| io::Error::other(format!("[STORAGE] {e}")))?;
    let data = web::Data::new(node.clone());
    let s = &node.settings.server;
    let grace_secs = s.shutdown_grace_period.div_ceil(1000).max(1);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(crate::http::entry))
    })
    .disable_signals()
    .shutdown_timeout(grace_secs)
    .bind((s.host.as_str(), s.port))
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}:{}: {e}", s.host, s.port),
        )
    })?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("no address bound"))?;
    // Bound, but accepting nobody yet: the cluster is joined first, so that no request
    // finds it half started.
    node.cluster
        .start(addr, node.sessions.clone(), &node.secret)
        .await
        .map_err(|e| io::Error::other(format!("[CLUSTER] {e}")))?;
    if let Some(link) = node.cluster.link() {
        node.logins.share(link.clone());
    }
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
    Ok(RunningNode { node, addr, handle })
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
        while node.limiter.running() + node.limiter.pending() > 0 && Instant::now() < deadline {
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
        node.cluster.leave().await;
        self.handle.stop(true).await;
        log::info!("node {} stopped", node.id);
    }

    /// Stops at once, without draining.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Starts a node and serves until SIGTERM or SIGINT, then drains. A second signal exits at once.
pub async fn run(settings: Settings) -> io::Result<()> {
    // The handlers are installed before the node announces its address: a signal sent by whoever
    // waited for that line must find them (the default action would kill the process).
    let mut signals = Signals::install()?;
    let running = start(settings).await?;
    signals.next().await;
    actix_rt::spawn(async move {
        signals.next().await;
        log::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    running.drain().await;
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
