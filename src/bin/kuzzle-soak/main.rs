//! kuzzle-soak: three kuzzle-rt nodes and one Redis (with an append-only file) under steady,
//! sequence-numbered traffic for a set time, while faults are injected at random but
//! reproducibly (a seed): node ↔ Redis links cut, frozen and made half-open (a fault proxy
//! per node), nodes SIGSTOPped and SIGKILLed, Redis killed and restarted. Tokens are revoked
//! on one node while their sockets live on another. It prints, per fault kind, what the
//! subscribers got: delivered, lost, duplicated, out of order, and what revoked sockets got
//! after the documented bound. Loss: an answered publish not delivered to a subscriber that
//! stayed connected to a node that stayed up (docs/clustering.md). Exits 1 unless all of it
//! is zero. Every node runs on its default settings.
//!
//! `--redis-cluster`: the nodes share a Redis Cluster of 3 masters + 3 replicas instead
//! (reached directly: no proxy), and the faults are the nodes' and the masters': a master
//! SIGKILLed (restarted a while later: it comes back as a replica) or frozen (SIGSTOP, then
//! SIGCONT: failed over meanwhile).

mod nodes;
// Each tool (and the tests) uses a part of it.
#[allow(dead_code)]
#[path = "../shared/processes.rs"]
mod processes;
mod proxy;
mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use nodes::{Node, signal};
use processes::{RedisCluster, RedisServer};
use proxy::FaultProxy;
use traffic::{Publisher, Subscriber};

/// The defaults the nodes run on (`cluster.heartbeat`, `services.storage.commandTimeout`).
const HEARTBEAT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const NODES: usize = 3;
/// How long a message may still be on its way after a fault healed: what a socket closed
/// within this of being published is not counted as lost to it.
const SETTLE: Duration = Duration::from_secs(8);

const USAGE: &str = "usage: kuzzle-soak [options]
  --binary PATH       the kuzzle-rt binary (default: next to this one)
  --duration SECONDS  how long faults are injected (default 60)
  --seed N            the faults' and the revocations' random sequence (default 1)
  --rate N            publishes per second per node (default 50)
  --subscribers N     subscribers per node (default 2)
  --redis-cluster     on a Redis Cluster of 3 masters + 3 replicas, with master faults
  --json              print the figures as JSON too";

struct Args {
    binary: PathBuf,
    duration: Duration,
    seed: u64,
    rate: u32,
    subscribers: usize,
    redis_cluster: bool,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        binary: std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("kuzzle-rt"),
        duration: Duration::from_secs(60),
        seed: 1,
        rate: 50,
        subscribers: 2,
        redis_cluster: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--binary" => args.binary = value()?.into(),
            "--duration" => args.duration = Duration::from_secs(number(value()?)?),
            "--seed" => args.seed = number(value()?)?,
            "--rate" => args.rate = number(value()?)?.clamp(1, 10_000) as u32,
            "--subscribers" => args.subscribers = number(value()?)?.clamp(1, 1000) as usize,
            "--json" => args.json = true,
            "--redis-cluster" => args.redis_cluster = true,
            _ => return Err(USAGE.to_owned()),
        }
    }
    // The nodes run in directories of their own.
    args.binary = std::fs::canonicalize(&args.binary)
        .map_err(|e| format!("{}: {e}", args.binary.display()))?;
    Ok(args)
}

fn progress(text: &str) {
    eprintln!("kuzzle-soak: {text}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Cut,
    Freeze,
    HalfOpen,
    Stop,
    Kill,
    RedisKill,
    MasterKill,
    MasterStop,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Cut,
        Kind::Freeze,
        Kind::HalfOpen,
        Kind::Stop,
        Kind::Kill,
        Kind::RedisKill,
    ];
    /// On a Redis Cluster (no proxy: the nodes reach every member directly).
    const ON_REDIS_CLUSTER: [Kind; 4] =
        [Kind::Stop, Kind::Kill, Kind::MasterKill, Kind::MasterStop];

    /// Whether it hits Redis rather than a node.
    fn on_redis(self) -> bool {
        matches!(self, Kind::RedisKill | Kind::MasterKill | Kind::MasterStop)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Cut => "link cut",
            Kind::Freeze => "link frozen",
            Kind::HalfOpen => "link half-open",
            Kind::Stop => "node SIGSTOP",
            Kind::Kill => "node SIGKILL",
            Kind::RedisKill => "Redis killed",
            Kind::MasterKill => "Redis Cluster master SIGKILL",
            Kind::MasterStop => "Redis Cluster master SIGSTOP",
        }
    }
}

struct Fault {
    kind: Kind,
    /// The node it hit (None: Redis).
    node: Option<usize>,
    start: Instant,
    end: Instant,
}

/// Everything the soak started and recorded.
struct Soak {
    args: Args,
    /// One Redis (behind a proxy per node), or a Redis Cluster.
    redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    proxies: Vec<FaultProxy>,
    nodes: Vec<Option<Node>>,
    restarts: usize,
    publishers: Vec<Arc<Publisher>>,
    subscribers: Vec<Arc<Subscriber>>,
    revoked: Arc<parking_lot::Mutex<Vec<Arc<Subscriber>>>>,
    faults: Vec<Fault>,
    stop: Arc<AtomicBool>,
    started: Instant,
    dir: Scratch,
}

/// A directory of the soak's own, removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Soak {
    fn start(args: Args) -> Result<Soak, String> {
        let dir = Scratch(std::env::temp_dir().join(format!("kuzzle-soak-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
        let (redis, cluster, proxies) = match args.redis_cluster {
            true => {
                let cluster = RedisCluster::start(&dir.0.join("redis"), 3)?;
                (None, Some(cluster), Vec::new())
            }
            false => {
                let redis = RedisServer::start(&dir.0.join("redis"), true)?;
                let proxies = (0..NODES).map(|_| FaultProxy::start(redis.port)).collect();
                (Some(redis), None, proxies)
            }
        };
        let mut soak = Soak {
            args,
            redis,
            cluster,
            proxies,
            nodes: Vec::new(),
            restarts: 0,
            publishers: Vec::new(),
            subscribers: Vec::new(),
            revoked: Arc::default(),
            faults: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            dir,
        };
        for i in 0..NODES {
            let node_dir = soak.dir.0.join(format!("node-{i}"));
            let started = Node::start(&soak.args.binary, &node_dir, &soak.storage(i))?;
            soak.nodes.push(Some(started));
        }
        Ok(soak)
    }

    /// How node `i` is told where its Redis is.
    fn storage(&self, i: usize) -> Vec<(String, String)> {
        match &self.cluster {
            Some(cluster) => {
                let seeds: Vec<Value> = cluster
                    .servers
                    .iter()
                    .map(|s| json!({"host": "127.0.0.1", "port": s.port}))
                    .collect();
                vec![(
                    "kuzzle_services__storage__nodes".into(),
                    format!("*json:{}", Value::Array(seeds)),
                )]
            }
            None => nodes::single(self.proxies[i].port),
        }
    }

    fn addr(&self, node: usize) -> Option<std::net::SocketAddr> {
        self.nodes[node].as_ref().map(|n| n.addr)
    }

    /// A publisher and the subscribers of `node`.
    fn clients_on(&mut self, node: usize) {
        let Some(addr) = self.addr(node) else {
            return;
        };
        let publisher = Arc::new(Publisher {
            id: self.publishers.len() as u32,
            node,
            sent: parking_lot::Mutex::new(Vec::new()),
            finished: AtomicBool::new(false),
        });
        self.publishers.push(publisher.clone());
        let every = Duration::from_secs(1) / self.args.rate;
        tokio::spawn(traffic::publish(addr, publisher, every, self.stop.clone()));
        for _ in 0..self.args.subscribers {
            let subscriber = Arc::new(Subscriber {
                node,
                ..Subscriber::default()
            });
            self.subscribers.push(subscriber.clone());
            tokio::spawn(traffic::subscribe(addr, subscriber, None));
        }
    }

    /// Injects one fault of `kind` on `node` for `length`, and heals it.
    async fn inject(&mut self, kind: Kind, node: usize, length: Duration) -> Result<(), String> {
        let start = Instant::now();
        match kind {
            Kind::Cut | Kind::Freeze => {
                if kind == Kind::Cut {
                    self.proxies[node].cut();
                } else {
                    self.proxies[node].freeze();
                }
                tokio::time::sleep(length).await;
                self.proxies[node].pass();
            }
            Kind::HalfOpen => {
                // The node must notice by itself: replaced within a few heartbeats.
                self.proxies[node].blackhole();
                tokio::time::sleep(3 * HEARTBEAT + 2 * COMMAND_TIMEOUT).await;
            }
            Kind::Stop => {
                if let Some(n) = &self.nodes[node] {
                    signal(&n.child, "STOP");
                    tokio::time::sleep(length).await;
                    signal(&n.child, "CONT");
                }
            }
            Kind::Kill => {
                self.nodes[node] = None;
                tokio::time::sleep(length).await;
                self.restarts += 1;
                let node_dir = self.dir.0.join(format!("node-{node}-{}", self.restarts));
                let started = Node::start(&self.args.binary, &node_dir, &self.storage(node))?;
                self.nodes[node] = Some(started);
                self.clients_on(node);
            }
            Kind::RedisKill => {
                if let Some(redis) = self.redis.as_mut() {
                    redis.kill();
                    tokio::time::sleep(length).await;
                    redis.restart()?;
                }
            }
            Kind::MasterKill | Kind::MasterStop => {
                let Some(cluster) = self.cluster.as_mut() else {
                    return Ok(());
                };
                // A master killed before its replica is in sync has none to take over.
                cluster.wait_until_ready(Duration::from_secs(30))?;
                let masters = cluster.masters();
                let Some(victim) = masters.get(node % masters.len().max(1)).copied() else {
                    return Ok(());
                };
                let Some(server) = cluster.servers.iter_mut().find(|s| s.port == victim) else {
                    return Ok(());
                };
                if kind == Kind::MasterKill {
                    server.kill();
                    tokio::time::sleep(length).await;
                    server.restart()?;
                } else {
                    let pid = server.pid().to_string();
                    let _ = std::process::Command::new("kill")
                        .args(["-STOP", &pid])
                        .status();
                    tokio::time::sleep(length).await;
                    let _ = std::process::Command::new("kill")
                        .args(["-CONT", &pid])
                        .status();
                }
            }
        }
        self.faults.push(Fault {
            kind,
            node: (!kind.on_redis()).then_some(node),
            start,
            end: Instant::now(),
        });
        Ok(())
    }
}

/// Every few seconds, a token is logged in on one node, linked to a subscribing socket
/// there, and revoked on another node.
async fn revocations(
    addrs: Arc<parking_lot::Mutex<Vec<Option<std::net::SocketAddr>>>>,
    revoked: Arc<parking_lot::Mutex<Vec<Arc<Subscriber>>>>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let here = rng.random_range(0..NODES);
        let there = (here + rng.random_range(1..NODES)) % NODES;
        let known = addrs.lock().clone();
        let (Some(a), Some(b)) = (known[here], known[there]) else {
            continue;
        };
        let Some(jwt) = traffic::login(a).await else {
            continue; // the node could not reach the store
        };
        let socket = Arc::new(Subscriber {
            node: here,
            ..Subscriber::default()
        });
        tokio::spawn(traffic::subscribe(a, socket.clone(), Some(jwt.clone())));
        let deadline = Instant::now() + Duration::from_secs(10);
        while socket.since.lock().is_none() && !socket.closed.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if socket.since.lock().is_none() {
            continue;
        }
        revoked.lock().push(socket.clone());
        if traffic::logout(b, &jwt).await {
            *socket.revoked.lock() = Some(Instant::now());
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Figures {
    delivered: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    revoked_delivered: u64,
}

impl Figures {
    fn bad(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.revoked_delivered
    }
}

/// The fault a message sent at `at` went through, if any.
fn kind_at(faults: &[Fault], at: Instant) -> Option<Kind> {
    faults
        .iter()
        .find(|f| at + Duration::from_secs(1) >= f.start && at <= f.end + SETTLE)
        .map(|f| f.kind)
}

struct Tally {
    by_kind: BTreeMap<Option<Kind>, Figures>,
    subscribers_counted: usize,
    revocations: usize,
    never_told: usize,
}

fn tally(soak: &Soak) -> Tally {
    let mut by_kind: BTreeMap<Option<Kind>, Figures> = BTreeMap::new();
    let sent: Vec<Vec<(Instant, bool)>> = soak
        .publishers
        .iter()
        .map(|p| p.sent.lock().clone())
        .collect();
    let revoked: Vec<Arc<Subscriber>> = soak.revoked.lock().clone();
    let mut counted = 0;
    // Subscribers that stayed connected, and revoked sockets whose logout failed.
    let listeners = soak
        .subscribers
        .iter()
        .chain(revoked.iter().filter(|s| s.revoked.lock().is_none()));
    for subscriber in listeners {
        let Some(since) = *subscriber.since.lock() else {
            continue;
        };
        // A socket that closed (its node killed) is held to what was published while it
        // was connected, but for the last moments, which were still on their way.
        let until = match *subscriber.closed_at.lock() {
            Some(closed) => match closed.checked_sub(SETTLE) {
                Some(until) if until > since => until,
                _ => continue,
            },
            None => Instant::now(),
        };
        counted += 1;
        let got = subscriber.got.lock().clone();
        for (p, log) in sent.iter().enumerate() {
            let mut seen = vec![0u32; log.len()];
            let mut highest: Option<u64> = None;
            for &(_, seq, _) in got.iter().filter(|(q, _, _)| *q as usize == p) {
                let Some((at, _)) = log.get(seq as usize) else {
                    continue;
                };
                let figures = by_kind.entry(kind_at(&soak.faults, *at)).or_default();
                seen[seq as usize] += 1;
                if seen[seq as usize] > 1 {
                    figures.duplicated += 1;
                    continue;
                }
                if highest.is_some_and(|h| seq < h) {
                    figures.reordered += 1;
                }
                highest = highest.max(Some(seq));
            }
            let mut lost: Vec<u64> = Vec::new();
            for (seq, (at, ok)) in log.iter().enumerate() {
                if !ok || *at <= since || *at > until {
                    continue;
                }
                let figures = by_kind.entry(kind_at(&soak.faults, *at)).or_default();
                if seen[seq] > 0 {
                    figures.delivered += 1;
                } else {
                    figures.lost += 1;
                    lost.push(seq as u64);
                }
            }
            if let (Some(first), Some(last)) = (lost.first(), lost.last()) {
                let elapsed = |seq: u64| {
                    log[seq as usize]
                        .0
                        .saturating_duration_since(soak.started)
                        .as_millis()
                };
                progress(&format!(
                    "a subscriber on node {} lost {} of publisher {} (node {}): seq {first} ({} ms) to {last} ({} ms); it closed: {}",
                    subscriber.node,
                    lost.len(),
                    p,
                    soak.publishers[p].node,
                    elapsed(*first),
                    elapsed(*last),
                    subscriber
                        .closed_at
                        .lock()
                        .map_or("no".to_owned(), |at| format!(
                            "at {} ms",
                            at.saturating_duration_since(soak.started).as_millis()
                        )),
                ));
            }
        }
    }
    // Revoked sockets: nothing published after the bound may reach them.
    let mut revocations = 0;
    let mut never_told = 0;
    for socket in &revoked {
        let Some(at) = *socket.revoked.lock() else {
            continue;
        };
        if socket.closed.load(Ordering::Acquire) {
            continue; // its node went
        }
        revocations += 1;
        if !socket.told.load(Ordering::Acquire) {
            never_told += 1;
        }
        // Within 2 heartbeats after the node reaches Redis again (PROTOCOL §9).
        let mut bound = at + 2 * HEARTBEAT + COMMAND_TIMEOUT;
        for f in &soak.faults {
            let hits = f.node.is_none_or(|n| n == socket.node);
            if hits && f.start <= bound {
                bound = bound.max(f.end + 3 * HEARTBEAT + 2 * COMMAND_TIMEOUT);
            }
        }
        let kind = kind_at(&soak.faults, at);
        for &(p, seq, _) in socket.got.lock().iter() {
            let published = sent
                .get(p as usize)
                .and_then(|log| log.get(seq as usize))
                .map(|(at, _)| *at);
            if published.is_some_and(|t| t > bound) {
                by_kind.entry(kind).or_default().revoked_delivered += 1;
            }
        }
    }
    Tally {
        by_kind,
        subscribers_counted: counted,
        revocations,
        never_told,
    }
}

async fn run(args: Args) -> Result<bool, String> {
    progress(&format!(
        "3 nodes ({}), {}, seed {}, {} s, {} publishes/s per node, {} subscribers per node",
        args.binary.display(),
        match args.redis_cluster {
            true => "a Redis Cluster of 3 masters + 3 replicas",
            false => "one Redis with an append-only file",
        },
        args.seed,
        args.duration.as_secs(),
        args.rate,
        args.subscribers
    ));
    let mut soak = Soak::start(args)?;
    let first = soak.addr(0).ok_or("no node")?;
    // Every node sees the others before traffic starts.
    tokio::time::sleep(HEARTBEAT).await;
    traffic::create_user(first).await?;
    for node in 0..NODES {
        soak.clients_on(node);
    }
    let addrs = Arc::new(parking_lot::Mutex::new(
        (0..NODES).map(|n| soak.addr(n)).collect::<Vec<_>>(),
    ));
    let revoking = Arc::new(AtomicBool::new(false));
    tokio::spawn(revocations(
        addrs.clone(),
        soak.revoked.clone(),
        soak.args.seed,
        revoking.clone(),
    ));
    let mut rng = StdRng::seed_from_u64(soak.args.seed);
    let end = Instant::now() + soak.args.duration;
    tokio::time::sleep(Duration::from_secs(3)).await;
    while Instant::now() + Duration::from_secs(8) < end {
        let kinds: &[Kind] = match soak.args.redis_cluster {
            true => &Kind::ON_REDIS_CLUSTER,
            false => &Kind::ALL,
        };
        let kind = kinds[rng.random_range(0..kinds.len())];
        let node = rng.random_range(0..NODES);
        let mut length = Duration::from_millis(rng.random_range(1000..4000));
        if matches!(kind, Kind::MasterKill | Kind::MasterStop) {
            // Long enough for its replica to take over (cluster-node-timeout 1000 ms).
            length = length.max(Duration::from_secs(4));
        }
        progress(&format!(
            "{} ms: {}{} for {} ms",
            soak.started.elapsed().as_millis(),
            kind.name(),
            if kind.on_redis() {
                String::new()
            } else {
                format!(" on node {node}")
            },
            length.as_millis()
        ));
        soak.inject(kind, node, length).await?;
        *addrs.lock() = (0..NODES).map(|n| soak.addr(n)).collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..5000))).await;
    }
    revoking.store(true, Ordering::Release);
    // Everything settles, then each publisher sends its marker.
    tokio::time::sleep(3 * HEARTBEAT + 2 * COMMAND_TIMEOUT).await;
    soak.stop.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let finished: Vec<u32> = soak
            .publishers
            .iter()
            .filter(|p| p.finished.load(Ordering::Acquire))
            .map(|p| p.id)
            .collect();
        let live = soak
            .subscribers
            .iter()
            .filter(|s| !s.closed.load(Ordering::Acquire) && s.since.lock().is_some());
        let waiting = live
            .filter(|s| {
                let markers = s.markers.lock();
                !finished.iter().all(|p| markers.contains(p))
            })
            .count();
        let alive_publishers = soak
            .publishers
            .iter()
            .filter(|p| soak.nodes[p.node].is_some())
            .count();
        if waiting == 0 && finished.len() >= alive_publishers.min(NODES) {
            break;
        }
        if Instant::now() > deadline {
            progress(&format!("{waiting} subscriber(s) never got every marker"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = tally(&soak);
    report(&soak, &t);
    Ok(t.by_kind.values().all(|f| f.bad() == 0) && t.never_told == 0)
}

fn report(soak: &Soak, t: &Tally) {
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for f in &soak.faults {
        *counts.entry(f.kind).or_default() += 1;
    }
    let injected: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{} × {n}", k.name()))
        .collect();
    println!(
        "faults: {}",
        if injected.is_empty() {
            "none".to_owned()
        } else {
            injected.join(", ")
        }
    );
    println!(
        "{:<16} {:>10} {:>6} {:>11} {:>13} {:>18}",
        "during", "delivered", "lost", "duplicated", "out of order", "revoked, delivered"
    );
    let mut total = Figures::default();
    for (kind, f) in &t.by_kind {
        println!(
            "{:<16} {:>10} {:>6} {:>11} {:>13} {:>18}",
            kind.map_or("no fault", Kind::name),
            f.delivered,
            f.lost,
            f.duplicated,
            f.reordered,
            f.revoked_delivered
        );
        total.delivered += f.delivered;
        total.lost += f.lost;
        total.duplicated += f.duplicated;
        total.reordered += f.reordered;
        total.revoked_delivered += f.revoked_delivered;
    }
    println!(
        "{:<16} {:>10} {:>6} {:>11} {:>13} {:>18}",
        "total",
        total.delivered,
        total.lost,
        total.duplicated,
        total.reordered,
        total.revoked_delivered
    );
    let published: usize = soak.publishers.iter().map(|p| p.sent.lock().len()).sum();
    println!(
        "{published} publishes, {} subscribers counted (each for the time it was connected), {} revocations, {} never told (TokenExpired)",
        t.subscribers_counted, t.revocations, t.never_told
    );
    if soak.args.json {
        let kinds: serde_json::Map<String, Value> = t
            .by_kind
            .iter()
            .map(|(k, f)| {
                (
                    k.map_or("none", Kind::name).to_owned(),
                    json!({"delivered": f.delivered, "lost": f.lost, "duplicated": f.duplicated,
                        "outOfOrder": f.reordered, "revokedDelivered": f.revoked_delivered}),
                )
            })
            .collect();
        println!(
            "{}",
            json!({"seed": soak.args.seed, "seconds": soak.args.duration.as_secs(),
                "faults": counts.iter().map(|(k, n)| (k.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "byFault": kinds, "publishes": published,
                "subscribers": t.subscribers_counted, "revocations": t.revocations,
                "neverTold": t.never_told})
        );
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kuzzle-soak: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("kuzzle-soak: {e}");
            std::process::exit(2);
        }
    }
}
