//! What every part of one node shares: identity, settings, lifecycle and counters.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use regex::Regex;

use crate::auth::throttle::LoginThrottle;
use crate::cluster::{Bus, BusMessage, RoomState, Upstream};
use crate::config::Settings;
use crate::delivery::Connections;
use crate::metrics::{Gauges, Metrics, NodeFigures};
use crate::rate::{RateCounter, RequestLimiter};
use crate::realtime::Realtime;
use crate::security::cache::SecurityCache;
use crate::storage::Store;

pub struct Node {
    pub id: Arc<str>,
    pub settings: Arc<Settings>,
    pub started: Instant,
    pub limiter: RequestLimiter,
    pub origins: OriginPolicy,
    /// Open WebSocket connections.
    pub connections: Connections,
    /// Subscriptions, notifications, and which sockets use which token.
    pub realtime: Arc<Realtime>,
    /// Membership of the cluster (a node alone without Redis).
    pub bus: Arc<dyn Bus>,
    pub store: Store,
    pub security: SecurityCache,
    /// Requests per kuid in the current second (profiles' `rateLimit`).
    pub user_rates: RateCounter,
    /// Logins per client address, and delays after repeated failures per username.
    pub logins: LoginThrottle,
    /// The JWT signing secret, shared by every node of the store.
    pub secret: String,
    pub http_in_flight: AtomicUsize,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Node {
    /// The parts are built and wired by `server.rs`.
    pub fn new(
        settings: Settings,
        store: Store,
        secret: String,
        bus: Arc<dyn Bus>,
        realtime: Arc<Realtime>,
        metrics: Arc<Metrics>,
    ) -> Arc<Node> {
        let limits = &settings.limits;
        let limiter = RequestLimiter::new(
            limits.concurrent_requests as usize,
            limits.requests_buffer_size as usize,
            limits.requests_buffer_warning_threshold as usize,
        );
        let origins = OriginPolicy::new(
            &settings.http.access_control_allow_origin,
            settings.http.access_control_allow_origin_use_regexp,
        );
        let id = bus.node_id().clone();
        Arc::new(Node {
            id,
            realtime,
            bus,
            store,
            secret,
            security: SecurityCache::default(),
            user_rates: RateCounter::default(),
            logins: LoginThrottle::new(&settings.limits),
            settings: Arc::new(settings),
            started: Instant::now(),
            limiter,
            origins,
            connections: Connections::default(),
            http_in_flight: AtomicUsize::new(0),
            metrics,
            draining: AtomicBool::new(false),
        })
    }

    /// What the metrics read of the node's parts.
    pub fn gauges(&self) -> Gauges {
        let (rooms, subscriptions) = self.realtime.metrics();
        Gauges {
            websockets: self.connections.len(),
            http_in_flight: self.http_in_flight.load(Ordering::Relaxed),
            rooms,
            subscriptions,
            bus_up: self.bus.is_up(),
            nodes_alive: self.bus.alive(),
            store_lost: self.store.is_lost(),
        }
    }

    /// A statistics snapshot (Kuzzle's `server:getStats` frame): requests completed and
    /// failed since the previous one, requests in flight and open sockets, per protocol.
    /// `take`: the counts start again from zero (a stored snapshot); otherwise a look at
    /// the counts so far.
    pub fn statistics(&self, timestamp: u64, take: bool) -> serde_json::Value {
        let counts = if take {
            self.metrics.take_stats_counts()
        } else {
            self.metrics.stats_counts()
        };
        let http = self.http_in_flight.load(Ordering::Relaxed) as u64;
        let running = self.limiter.running() as u64;
        serde_json::json!({
            "completedRequests": {"websocket": counts.completed[0], "http": counts.completed[1]},
            "failedRequests": {"websocket": counts.failed[0], "http": counts.failed[1]},
            "ongoingRequests": {"websocket": running.saturating_sub(http), "http": http},
            "connections": {"websocket": self.connections.len()},
            "timestamp": timestamp,
        })
    }

    /// This node for the dashboard (`cluster:metrics`).
    pub fn figures(&self) -> NodeFigures {
        let info = self.bus.node_info();
        NodeFigures {
            id: self.id.to_string(),
            address: info.as_ref().map(|i| i.address.clone()),
            birthdate: info.map(|i| i.birthdate),
            uptime_seconds: self.started.elapsed().as_secs(),
            gauges: self.gauges(),
            bus: self.bus.figures()["bus"].clone(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Tokens were revoked here: every connection linked to one of them, on this node
    /// and on the others, gets `TokenExpired` and loses its subscriptions.
    pub fn revoke(&self, tokens: Vec<String>) {
        self.realtime.revoke(tokens);
    }
}

/// What the bus hands up: realtime traffic goes to the realtime service; revocations and
/// security changes also to the store's caches, so that no node keeps accepting what
/// another revoked or changed.
impl Upstream for Node {
    fn receive(&self, message: BusMessage) {
        match message {
            BusMessage::Security { version, .. } => self.store.note_security_version(version),
            BusMessage::Revoke { ref tokens, .. } => {
                self.store.forget_tokens(tokens);
                self.realtime.receive(message);
            }
            message => self.realtime.receive(message),
        }
    }

    fn room(&self, room_id: &str) -> Option<RoomState> {
        self.realtime.room(room_id)
    }

    fn rooms(&self) -> Vec<Arc<str>> {
        self.realtime.rooms()
    }

    fn recheck_tokens(&self) {
        self.store.forget_all_tokens();
        self.realtime.recheck_tokens();
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy
/// (`http.trustedProxies`), the last address of `X-Forwarded-For`.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[crate::config::ProxyRange],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|range| range.contains(&peer)) {
        return Some(peer);
    }
    forwarded_for
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .or(Some(peer))
}

/// `http.accessControlAllowOrigin`: `*`, exact origins, or unanchored regular expressions.
pub struct OriginPolicy {
    any: bool,
    exact: Vec<String>,
    patterns: Vec<Regex>,
}

impl OriginPolicy {
    /// Invalid expressions were refused at startup by the configuration checks.
    pub fn new(list: &[String], use_regexp: bool) -> Self {
        let any = list.iter().any(|o| o == "*");
        let (exact, patterns) = if use_regexp {
            (
                Vec::new(),
                list.iter().filter_map(|o| Regex::new(o).ok()).collect(),
            )
        } else {
            (list.to_vec(), Vec::new())
        };
        OriginPolicy {
            any,
            exact,
            patterns,
        }
    }

    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether a request from `origin` may use credentials (PROTOCOL.md §6.4): a request
    /// without an `Origin` (not a browser's), an origin listed or matched by an expression,
    /// or the node's own (the origin's host and port are the request's `Host`). An origin
    /// allowed only through `*` may not: its cookie is ignored and responses to it carry no
    /// `Access-Control-Allow-Credentials`.
    pub fn carries_credentials(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let own = origin
            .split_once("://")
            .zip(host)
            .is_some_and(|((_, authority), host)| authority.eq_ignore_ascii_case(host));
        own || self.exact.iter().any(|o| o == origin)
            || self.patterns.iter().any(|p| p.is_match(origin))
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self.exact.iter().any(|o| o == origin)
            || self.patterns.iter().any(|p| p.is_match(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyRange;

    #[test]
    fn only_listed_or_own_origins_carry_credentials() {
        let any = OriginPolicy::new(&["*".into()], false);
        assert!(any.allows("https://evil.example"));
        assert!(!any.carries_credentials(Some("https://evil.example"), Some("kuzzle:7512")));
        assert!(
            any.carries_credentials(None, Some("kuzzle:7512")),
            "not a browser"
        );
        assert!(
            any.carries_credentials(Some("http://Kuzzle:7512"), Some("kuzzle:7512")),
            "the node's own page"
        );
        assert!(
            !any.carries_credentials(Some("http://kuzzle:7513"), Some("kuzzle:7512")),
            "another port is another origin"
        );
        assert!(!any.carries_credentials(Some("null"), Some("kuzzle:7512")));
        let listed = OriginPolicy::new(&["*".into(), "https://app.example".into()], false);
        assert!(listed.carries_credentials(Some("https://app.example"), None));
        assert!(!listed.carries_credentials(Some("https://evil.example"), None));
        let patterns = OriginPolicy::new(&["^https://[a-z]+\\.example$".into()], true);
        assert!(patterns.carries_credentials(Some("https://app.example"), None));
        assert!(!patterns.carries_credentials(Some("https://app.example.evil"), None));
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted: Vec<ProxyRange> = ["127.0.0.1", "10.0.0.0/8"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let from = |peer: &str| client_address(Some(ip(peer)), Some("1.2.3.4, 5.6.7.8"), &trusted);
        assert_eq!(from("127.0.0.1"), Some(ip("5.6.7.8")));
        assert_eq!(
            from("10.9.8.7"),
            Some(ip("5.6.7.8")),
            "a network of proxies"
        );
        assert_eq!(
            from("11.0.0.1"),
            Some(ip("11.0.0.1")),
            "anyone else: the peer"
        );
        assert!("10.0.0.0/33".parse::<ProxyRange>().is_err());
        assert!("nginx".parse::<ProxyRange>().is_err());
        let text: Vec<String> = trusted.into_iter().map(String::from).collect();
        assert_eq!(text, ["127.0.0.1", "10.0.0.0/8"]);
    }
}
