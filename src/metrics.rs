//! Prometheus metrics of a node (`GET /metrics`, OpenMetrics text format, encoded by the
//! `prometheus-client` crate). Counters are atomics updated where things happen; gauges
//! that mirror state (open connections, rooms, the bus) are read when scraped. Label
//! values come from fixed sets, never from what a client sends, so the number of series
//! stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use crate::cluster::BusCounters;
use crate::realtime::RealtimeCounters;
use crate::realtime::sessions::ExpiryCounters;
use crate::storage::hot::CacheCounters;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The Prometheus text format 0.0.4, for scrapers that do not ask for OpenMetrics.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (what Prometheus 2.5+ sends first).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept
            .split(',')
            .any(|part| part.trim().starts_with("application/openmetrics-text"))
    })
}

/// The OpenMetrics exposition `render` gives, in the Prometheus text format 0.0.4 (which
/// `prometheus-client` does not write): a counter's family is named with its `_total`
/// (as its samples are), `# UNIT` lines and the counters' `_created` samples go, and so does
/// `# EOF`. Every other line is the same in both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        if let Some((kind, rest)) = metadata {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(name) {
                out.push_str(kind);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if let Some(family) = name.strip_suffix("_created")
                && counters.contains(family)
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ProtocolLabel {
    http,
    websocket,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: ProtocolLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// A close code the server knows ("1000" … "1011"), or "other".
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// An action of the API table, or "unknown".
    pub controller: &'static str,
    pub action: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub controller: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// "expiry" or "revocation".
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// "tokens" or "users" (`storage::hot`).
    pub cache: &'static str,
    /// "hit" or "miss".
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// "published", "received", "dropped", "duplicate", "recovered", "missed" or
    /// "replayed" (`cluster::BusCounters`).
    pub direction: &'static str,
}

type HistogramFamily = Family<ActionLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// What the node's parts report when the metrics are read.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub websockets: usize,
    pub http_in_flight: usize,
    pub rooms: usize,
    pub subscriptions: usize,
    pub bus_up: bool,
    pub nodes_alive: usize,
    /// The store answers without its data (`Store::is_lost`).
    pub store_lost: bool,
}

/// A node as the dashboard shows it (`cluster:metrics`), besides its counters.
#[derive(Debug, Clone, Default)]
pub struct NodeFigures {
    pub id: String,
    pub address: Option<String>,
    pub birthdate: Option<u64>,
    pub uptime_seconds: u64,
    pub gauges: Gauges,
    /// The bus's state, as `cluster:status` reports it.
    pub bus: serde_json::Value,
}

pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Family<ProtocolLabels, Counter>,
    connections_open: Family<ProtocolLabels, Gauge>,
    pub closes: Family<CloseLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    rooms: Gauge,
    subscriptions: Gauge,
    pub publishes: Counter,
    pub deliveries: Counter,
    pub outbound_overflows: Counter,
    pub close_timeouts: Counter,
    pub token_expired: Family<ReasonLabels, Counter>,
    bus_messages: Family<DirectionLabels, Counter>,
    bus_reconnects: Counter,
    bus_up: Gauge,
    bus_waiting: Gauge,
    store_lost: Gauge,
    cache_lookups: Family<CacheLabels, Counter>,
    cache_flushes: Counter,
    nodes_alive: Gauge,
    /// Totals for the cluster's dashboard (`cluster:metrics`), which reads them directly.
    requests_answered: AtomicU64,
    closes_by_code: [AtomicU64; KNOWN_CLOSE_CODES.len() + 1],
    /// Requests answered (completed, failed) per protocol (WebSocket, HTTP) since the last
    /// statistics snapshot (`take_stats_counts`).
    stats_counts: [[AtomicU64; 2]; 2],
}

/// What one statistics snapshot counts per protocol: requests completed and failed since
/// the previous one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsCounts {
    pub completed: [u64; 2],
    pub failed: [u64; 2],
}

/// The close codes counted under their own label.
const KNOWN_CLOSE_CODES: [&str; 11] = [
    "1000", "1001", "1002", "1003", "1006", "1007", "1008", "1009", "1010", "1011", "1013",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kuzzle");
        let m = Metrics {
            connections_accepted: Family::default(),
            connections_open: Family::default(),
            closes: Family::default(),
            requests: Family::default(),
            request_duration: HistogramFamily::new_with_constructor(latency_histogram),
            rooms: Gauge::default(),
            subscriptions: Gauge::default(),
            publishes: Counter::default(),
            deliveries: Counter::default(),
            outbound_overflows: Counter::default(),
            close_timeouts: Counter::default(),
            token_expired: Family::default(),
            bus_messages: Family::default(),
            bus_reconnects: Counter::default(),
            bus_up: Gauge::default(),
            bus_waiting: Gauge::default(),
            store_lost: Gauge::default(),
            cache_lookups: Family::default(),
            cache_flushes: Counter::default(),
            nodes_alive: Gauge::default(),
            requests_answered: AtomicU64::new(0),
            closes_by_code: Default::default(),
            stats_counts: Default::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_accepted",
            "Connections accepted: TCP connections (http) and WebSocket upgrades (websocket)",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_open",
            "Open WebSockets (websocket) and HTTP requests in flight (http)",
            m.connections_open.clone(),
        );
        r.register(
            "websocket_closes",
            "WebSockets closed, by close code (1006: the connection dropped without one)",
            m.closes.clone(),
        );
        r.register(
            "requests",
            "API requests, by controller, action and status",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer an API request, by controller and action",
            m.request_duration.clone(),
        );
        r.register(
            "rooms",
            "Rooms with a subscriber on this node",
            m.rooms.clone(),
        );
        r.register(
            "subscriptions",
            "Connections of this node with at least one subscription",
            m.subscriptions.clone(),
        );
        r.register(
            "notifications_published",
            "Document notifications published on this node",
            m.publishes.clone(),
        );
        r.register(
            "deliveries",
            "Document notifications queued to this node's sockets (local and cross-node publishes)",
            m.deliveries.clone(),
        );
        r.register(
            "outbound_queue_overflows",
            "Sockets closed with 1011 because their outbound queue overflowed",
            m.outbound_overflows.clone(),
        );
        r.register(
            "websocket_close_timeouts",
            "WebSockets released with a TCP reset: not closed within closeTimeout of the close",
            m.close_timeouts.clone(),
        );
        r.register(
            "token_expired",
            "TokenExpired notifications sent, by reason (expiry or revocation)",
            m.token_expired.clone(),
        );
        r.register(
            "bus_messages",
            "Cluster bus messages, by direction: published (Redis holds it), received, dropped (refused or expired while Redis was away), duplicate (delivered already), recovered (read back from the history), missed (the history no longer held it), replayed (sent again after a fault)",
            m.bus_messages.clone(),
        );
        r.register(
            "bus_reconnects",
            "Times the pub/sub connection to Redis was established again",
            m.bus_reconnects.clone(),
        );
        r.register(
            "bus_up",
            "1 while Redis answers the cluster (always 1 for a node without a cluster)",
            m.bus_up.clone(),
        );
        r.register(
            "bus_waiting",
            "Messages for other nodes waiting for Redis (the retain queue)",
            m.bus_waiting.clone(),
        );
        r.register(
            "store_lost",
            "1 while the store answers without its data (emptied behind the cluster's back): restore the backup",
            m.store_lost.clone(),
        );
        r.register(
            "cache_lookups",
            "Lookups of this node's caches of verified tokens and of users, by cache and outcome (hit: no store round trip; miss: read from the store)",
            m.cache_lookups.clone(),
        );
        r.register(
            "cache_flushes",
            "Times a cache was emptied at once: the security version or the store changed, or revocations may have been missed",
            m.cache_flushes.clone(),
        );
        r.register(
            "cluster_nodes_alive",
            "Live nodes of the cluster, this one included",
            m.nodes_alive.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The counters of the store's caches (`storage::hot`).
    pub fn cache_counters(&self) -> CacheCounters {
        let lookup = |cache, outcome| {
            self.cache_lookups
                .get_or_create(&CacheLabels { cache, outcome })
                .clone()
        };
        CacheCounters {
            token_hits: lookup("tokens", "hit"),
            token_misses: lookup("tokens", "miss"),
            user_hits: lookup("users", "hit"),
            user_misses: lookup("users", "miss"),
            flushes: self.cache_flushes.clone(),
        }
    }

    /// The counters the cluster's bus updates (they stay at 0 without a cluster).
    pub fn bus_counters(&self) -> BusCounters {
        let direction = |direction| {
            self.bus_messages
                .get_or_create(&DirectionLabels { direction })
                .clone()
        };
        BusCounters {
            published: direction("published"),
            received: direction("received"),
            dropped: direction("dropped"),
            duplicate: direction("duplicate"),
            recovered: direction("recovered"),
            missed: direction("missed"),
            replayed: direction("replayed"),
            reconnects: self.bus_reconnects.clone(),
            waiting: self.bus_waiting.clone(),
        }
    }

    /// The counters the realtime service updates.
    pub fn realtime_counters(&self) -> RealtimeCounters {
        let expired = |reason| {
            self.token_expired
                .get_or_create(&ReasonLabels { reason })
                .clone()
        };
        RealtimeCounters {
            publishes: self.publishes.clone(),
            deliveries: self.deliveries.clone(),
            expired: ExpiryCounters {
                expiry: expired("expiry"),
                revocation: expired("revocation"),
            },
        }
    }

    /// A WebSocket closed with `code` (1006 when it dropped without a close frame).
    pub fn closed(&self, code: u16) {
        let code = code.to_string();
        let known = KNOWN_CLOSE_CODES.iter().position(|known| **known == code);
        let label = known.map_or("other", |i| KNOWN_CLOSE_CODES[i]);
        self.closes
            .get_or_create(&CloseLabels { code: label })
            .inc();
        self.closes_by_code[known.unwrap_or(KNOWN_CLOSE_CODES.len())]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// What the dashboard shows of this node (`cluster:metrics`).
    pub fn snapshot(&self, node: &NodeFigures) -> serde_json::Value {
        let mut closes = serde_json::Map::new();
        for (i, count) in self.closes_by_code.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let code = KNOWN_CLOSE_CODES.get(i).copied().unwrap_or("other");
                closes.insert(code.into(), count.into());
            }
        }
        let gauges = &node.gauges;
        serde_json::json!({
            "id": &*node.id,
            "address": node.address,
            "birthdate": node.birthdate,
            "uptime": node.uptime_seconds,
            "connections": {
                "websocket": gauges.websockets,
                "http": gauges.http_in_flight,
            },
            "rooms": gauges.rooms,
            "subscriptions": gauges.subscriptions,
            "requests": self.requests_answered.load(Ordering::Relaxed),
            "deliveries": self.deliveries.get(),
            "closes": closes,
            "bus": node.bus,
            "time": crate::protocol::now_ms(),
        })
    }

    /// One API request over `protocol` (0: WebSocket, 1: HTTP) answered with `status`, for
    /// the statistics snapshots.
    pub fn count_for_stats(&self, protocol: usize, status: u16) {
        let failed = usize::from(status >= 400);
        if let Some(counter) = self.stats_counts.get(failed).and_then(|c| c.get(protocol)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts since the last `take_stats_counts`.
    pub fn stats_counts(&self) -> StatsCounts {
        let get = |kind: usize, protocol: usize| {
            self.stats_counts[kind][protocol].load(Ordering::Relaxed)
        };
        StatsCounts {
            completed: [get(0, 0), get(0, 1)],
            failed: [get(1, 0), get(1, 1)],
        }
    }

    /// The counts since the last call, and zero from now on.
    pub fn take_stats_counts(&self) -> StatsCounts {
        let take = |kind: usize, protocol: usize| {
            self.stats_counts[kind][protocol].swap(0, Ordering::Relaxed)
        };
        StatsCounts {
            completed: [take(0, 0), take(0, 1)],
            failed: [take(1, 0), take(1, 1)],
        }
    }

    /// One API request answered with `status` after `seconds`. The controller and action
    /// come from the API's action table ("unknown" for one that does not exist), so that
    /// the series are bounded.
    pub fn answered(
        &self,
        controller: &'static str,
        action: &'static str,
        status: u16,
        seconds: f64,
    ) {
        self.requests_answered.fetch_add(1, Ordering::Relaxed);
        self.requests
            .get_or_create(&RequestLabels {
                controller,
                action,
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&ActionLabels { controller, action })
            .observe(seconds);
    }

    /// The whole exposition: the gauges as given, then every metric.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.connections_open
            .get_or_create(&ProtocolLabels {
                protocol: ProtocolLabel::websocket,
            })
            .set(gauges.websockets as i64);
        self.connections_open
            .get_or_create(&ProtocolLabels {
                protocol: ProtocolLabel::http,
            })
            .set(gauges.http_in_flight as i64);
        self.rooms.set(gauges.rooms as i64);
        self.subscriptions.set(gauges.subscriptions as i64);
        self.bus_up.set(i64::from(gauges.bus_up));
        self.store_lost.set(i64::from(gauges.store_lost));
        self.nodes_alive.set(gauges.nodes_alive as i64);
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            log::error!("cannot encode the metrics: {e}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_the_prometheus_text_format() {
        let openmetrics = "# HELP kuzzle_publishes Publishes.\n# TYPE kuzzle_publishes counter\nkuzzle_publishes_total 3\nkuzzle_publishes_created 1.7e9\n# HELP kuzzle_rooms Rooms.\n# TYPE kuzzle_rooms gauge\nkuzzle_rooms 2\n# HELP kuzzle_seconds Latency.\n# TYPE kuzzle_seconds histogram\n# UNIT kuzzle_seconds seconds\nkuzzle_seconds_bucket{le=\"0.1\"} 1\nkuzzle_seconds_sum 0.05\nkuzzle_seconds_count 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP kuzzle_publishes_total Publishes.\n# TYPE kuzzle_publishes_total counter\nkuzzle_publishes_total 3\n# HELP kuzzle_rooms Rooms.\n# TYPE kuzzle_rooms gauge\nkuzzle_rooms 2\n# HELP kuzzle_seconds Latency.\n# TYPE kuzzle_seconds histogram\nkuzzle_seconds_bucket{le=\"0.1\"} 1\nkuzzle_seconds_sum 0.05\nkuzzle_seconds_count 1\n"
        );
    }

    #[test]
    fn only_an_accept_naming_openmetrics_gets_it() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
