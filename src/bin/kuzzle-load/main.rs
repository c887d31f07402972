//! kuzzle-load: measures a realtime server over loopback. By default it starts a kuzzle-rt
//! node; `--url` (with `--pid` for memory and CPU) measures one already running, and
//! `--dialect` measures the reference servers of `bench/peers/` with the same scenarios
//! (`bench/side-by-side` runs them all). Run `kuzzle-load --help` for the scenarios.
//!
//! The generator is multi-threaded (tokio) and spreads its sockets over several
//! 127.0.0.x source addresses. Everything stays on 127.0.0.0/8. The figures of
//! docs/benchmarks.md come from this tool.

mod dialect;
// Each tool (and the tests) uses a part of it.
#[allow(dead_code)]
#[path = "../shared/processes.rs"]
mod processes;
mod scenarios;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Map, Value, json};

use dialect::Dialect;
use processes::{RedisCluster, RedisServer, announced_address};
use scenarios::{Pace, Probe, Target};

const SCENARIOS: &[&str] = &["idle", "requests", "fanout", "burst", "churn"];

struct Args {
    binary: PathBuf,
    url: Option<SocketAddr>,
    pid: Option<u32>,
    dialect: Dialect,
    scenarios: Vec<String>,
    connections: usize,
    release_wait: u64,
    sources: usize,
    clients: usize,
    requests: usize,
    subscribers: usize,
    publishes: usize,
    rate: f64,
    burst: usize,
    window: usize,
    document_bytes: usize,
    compression: bool,
    cycles: usize,
    churn_sockets: usize,
    threads: Option<usize>,
    pin: Option<String>,
    json: bool,
    cluster: bool,
    redis_cluster: bool,
    identities: bool,
    with_token: bool,
}

const HELP: &str = "kuzzle-load: measures a realtime server over loopback (see docs/benchmarks.md).

usage: kuzzle-load [options]

Scenarios (--scenarios, in this order):
  idle      N sockets each subscribed to one room: resident memory per socket, then the
            share of it given back within 10 s (--release-wait) after they all close
  requests  C clients each sending R server:now one after the other (kuzzle-rt only)
  fanout    S subscribers in one room, P publishes paced at --rate: deliveries/s, first
            delivery of each publish, p50/p99/max publish-to-delivery, server CPU per delivery
  burst     the same S subscribers, B publishes with W in flight: deliveries/s, CPU per delivery
  churn     --cycles times: --churn-sockets sockets connect, subscribe, close; memory after
            each cycle (it must level off)

Options:
  --binary PATH            the kuzzle-rt binary to start (default: kuzzle-rt next to this tool)
  --url HOST:PORT          measure a server that is already running instead (ws://HOST:PORT
                           accepted); its memory and CPU are measured only with --pid
  --pid PID                the process of the --url server, for RSS and CPU from /proc
  --dialect NAME           kuzzle, ws or socketio: the protocol of the --url server
                           (bench/peers/ holds the ws and socketio servers) (default: kuzzle)
  --scenarios LIST         comma-separated, from idle,requests,fanout,burst,churn
                           (default: all of them)
  --connections N          idle sockets (default: 10000)
  --release-wait S         seconds the idle scenario watches the memory after closing its
                           sockets (default: 10)
  --sources K              spread sockets over 127.0.0.1 .. 127.0.0.K: one source address
                           has only so many ephemeral ports (default: 4)
  --clients C              request clients (default: 50)
  --requests R             server:now per request client (default: 2000)
  --subscribers S          sockets in the fan-out room (default: 1000)
  --publishes P            publishes of the paced fan-out (default: 200)
  --rate R                 publishes per second of the paced fan-out (default: 20)
  --burst B                publishes of the burst (default: 200)
  --window W               publishes in flight during the burst (default: 16)
  --document-bytes N       pad each published document to about N bytes of JSON (default: 0)
  --compression            permessage-deflate on in the node and offered by every client
                           (default: off)
  --cycles N               churn cycles (default: 10)
  --churn-sockets N        sockets per churn cycle (default: 1000)
  --threads T              the generator's threads (default: one per core)
  --pin CPUS               start the node under taskset -c CPUS (default: not pinned);
                           pin this tool elsewhere yourself, e.g. taskset -c 1 kuzzle-load --pin 0
  --json                   one JSON object on stdout instead of tables (default: tables)
  --cluster                start a redis-server and two nodes instead: the paced fan-out with
                           the publisher on the subscribers' node, then on the other node, the
                           Redis commands per publish, and what the bus's history holds
  --redis-cluster          --cluster on a Redis Cluster of 3 masters + 3 replicas instead of
                           one redis-server: the same figures, each master's CPU per 1,000
                           publishes, and how the channels of c000..c119 spread over the masters
  --with-token             the requests scenario with an administrator's token (the first
                           administrator is created: the server's store must be new)
  --identities             start a node on the embedded store and one on a redis-server of its
                           own instead: the requests scenario on each, anonymous and with an
                           administrator's token, in the order A B C D D C B A (rates are the
                           means of the two passes), and the ratios between them
  -h, --help               this help

Progress goes to stderr during long phases; the results go to stdout.";

fn parse_args() -> Result<Args, String> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("kuzzle-rt")))
        .unwrap_or_else(|| PathBuf::from("kuzzle-rt"));
    let mut args = Args {
        binary: sibling,
        url: None,
        pid: None,
        dialect: Dialect::Kuzzle,
        scenarios: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        connections: 10_000,
        release_wait: 10,
        sources: 4,
        clients: 50,
        requests: 2_000,
        subscribers: 1_000,
        publishes: 200,
        rate: 20.0,
        burst: 200,
        window: 16,
        document_bytes: 0,
        compression: false,
        cycles: 10,
        churn_sockets: 1_000,
        threads: None,
        pin: None,
        json: false,
        cluster: false,
        redis_cluster: false,
        identities: false,
        with_token: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        macro_rules! number {
            ($field:expr) => {
                $field = value()?.parse().map_err(|e| format!("{flag}: {e}"))?
            };
        }
        match flag.as_str() {
            "--binary" => {
                // The node starts in a directory of its own: a relative path would not resolve.
                let path = PathBuf::from(value()?);
                args.binary = std::fs::canonicalize(&path)
                    .map_err(|e| format!("--binary {}: {e}", path.display()))?;
            }
            "--url" => {
                let text = value()?;
                let bare = text
                    .trim_start_matches("ws://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                let addr = std::net::ToSocketAddrs::to_socket_addrs(bare)
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| format!("--url: cannot resolve {text:?}"))?;
                args.url = Some(addr);
            }
            "--pid" => args.pid = Some(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            "--dialect" => {
                let name = value()?;
                args.dialect = Dialect::parse(&name)
                    .ok_or_else(|| format!("--dialect: {name:?} is not kuzzle, ws or socketio"))?;
            }
            "--scenarios" => {
                let list = value()?;
                args.scenarios = list.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(unknown) = args
                    .scenarios
                    .iter()
                    .find(|s| !SCENARIOS.contains(&s.as_str()))
                {
                    return Err(format!("--scenarios: unknown scenario {unknown:?}"));
                }
            }
            "--connections" => number!(args.connections),
            "--release-wait" => number!(args.release_wait),
            "--sources" => number!(args.sources),
            "--clients" => number!(args.clients),
            "--requests" => number!(args.requests),
            "--subscribers" => number!(args.subscribers),
            "--publishes" => number!(args.publishes),
            "--rate" => number!(args.rate),
            "--burst" => number!(args.burst),
            "--window" => number!(args.window),
            "--document-bytes" => number!(args.document_bytes),
            "--cycles" => number!(args.cycles),
            "--churn-sockets" => number!(args.churn_sockets),
            "--threads" => {
                args.threads = Some(value()?.parse().map_err(|e| format!("{flag}: {e}"))?)
            }
            "--pin" => args.pin = Some(value()?),
            "--compression" => args.compression = true,
            "--json" => args.json = true,
            "--cluster" => args.cluster = true,
            "--redis-cluster" => {
                args.cluster = true;
                args.redis_cluster = true;
            }
            "--identities" => args.identities = true,
            "--with-token" => args.with_token = true,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.dialect != Dialect::Kuzzle && args.url.is_none() {
        return Err("--dialect other than kuzzle needs --url".into());
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        return Err("--rate must be above 0".into());
    }
    if !(1..=250).contains(&args.sources) {
        return Err("--sources must be between 1 and 250".into());
    }
    args.window = args.window.max(1);
    Ok(args)
}

/// A progress line on stderr (the results stay alone on stdout).
pub fn progress(text: &str) {
    eprintln!("kuzzle-load: {text}");
}

/// A node started for the measurement, stopped when dropped.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl NodeProcess {
    fn start(args: &Args, env: &[(String, String)]) -> Result<NodeProcess, String> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kuzzle-load-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut command = match &args.pin {
            Some(cpus) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", cpus]).arg(&args.binary);
                taskset
            }
            None => Command::new(&args.binary),
        };
        let mut child = command
            .current_dir(&dir)
            .env("HOME", &dir)
            .env("RUST_LOG", "info")
            .env("kuzzle_server__host", "127.0.0.1")
            .env("kuzzle_server__port", "0")
            .env(
                "kuzzle_server__protocols__websocket__compression",
                args.compression.to_string(),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.binary.display()))?;
        let addr = announced_address(&mut child, None, Duration::from_secs(15))?;
        Ok(NodeProcess { child, addr, dir })
    }

    /// The node as a measurement's target.
    fn target(&self, args: &Args) -> Target {
        Target {
            addr: self.addr,
            dialect: Dialect::Kuzzle,
            compression: args.compression,
            sources: sources(args.sources),
            probe: self.probe(),
        }
    }

    fn probe(&self) -> Probe {
        Probe {
            pid: Some(self.child.id()),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis of `--cluster`: a redis-server, or a Redis Cluster (`--redis-cluster`), on
/// free ports of 127.0.0.1, without persistence.
struct RedisProcess {
    single: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    dir: PathBuf,
}

impl RedisProcess {
    fn start(cluster: bool) -> Result<RedisProcess, String> {
        let dir = std::env::temp_dir().join(format!("kuzzle-load-redis-{}", std::process::id()));
        let (single, cluster) = match cluster {
            true => (None, Some(RedisCluster::start(&dir, 3)?)),
            false => (Some(RedisServer::start(&dir, false)?), None),
        };
        Ok(RedisProcess {
            single,
            cluster,
            dir,
        })
    }

    /// The masters: port and process.
    fn masters(&self) -> Vec<(u16, u32)> {
        match (&self.single, &self.cluster) {
            (Some(server), _) => vec![(server.port, server.pid())],
            (_, Some(cluster)) => {
                let masters = cluster.masters();
                cluster
                    .servers
                    .iter()
                    .filter(|s| masters.contains(&s.port))
                    .map(|s| (s.port, s.pid()))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn connection(port: u16) -> Result<redis::Connection, String> {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .map_err(|e| e.to_string())
    }

    /// Calls of `command` (lowercase) Redis has run since it started, scripts' included,
    /// summed over the masters.
    fn calls(&self, command: &str) -> Result<u64, String> {
        let mut total = 0;
        for (port, _) in self.masters() {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut Self::connection(port)?)
                .map_err(|e| e.to_string())?;
            total += info
                .lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// The bus's histories in Redis: entries, and bytes (`MEMORY USAGE`, summed).
    fn histories(&self) -> Result<(u64, u64), String> {
        let (mut entries, mut bytes) = (0, 0);
        for (port, _) in self.masters() {
            let mut connection = Self::connection(port)?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("*cluster/{c:*}/history")
                .query(&mut connection)
                .map_err(|e| e.to_string())?;
            for key in keys {
                let n: u64 = redis::cmd("XLEN")
                    .arg(&key)
                    .query(&mut connection)
                    .map_err(|e| e.to_string())?;
                let size: Option<u64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .query(&mut connection)
                    .map_err(|e| e.to_string())?;
                entries += n;
                bytes += size.unwrap_or(0);
            }
        }
        Ok((entries, bytes))
    }

    /// Which master serves the slot of `key` (a Redis Cluster; the server otherwise).
    fn master_of(&self, key: &str) -> Result<u16, String> {
        let masters = self.masters();
        let Some(&(first, _)) = masters.first() else {
            return Err("no Redis".into());
        };
        if self.cluster.is_none() {
            return Ok(first);
        }
        let mut connection = Self::connection(first)?;
        let slot: u64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .map_err(|e| e.to_string())?;
        let ranges: Vec<(u64, u64, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut connection)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|range| {
                let redis::Value::Array(items) = range else {
                    return None;
                };
                let start = redis::from_redis_value_ref::<u64>(items.first()?).ok()?;
                let end = redis::from_redis_value_ref::<u64>(items.get(1)?).ok()?;
                let redis::Value::Array(master) = items.get(2)? else {
                    return None;
                };
                let host = redis::from_redis_value_ref::<String>(master.first()?).ok()?;
                let port = redis::from_redis_value_ref::<u16>(master.get(1)?).ok()?;
                Some((start, end, (host, port)))
            })
            .collect();
        ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| port)
            .ok_or_else(|| format!("no master serves slot {slot}"))
    }

    fn node_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("kuzzle_services__storage__backend".into(), "redis".into())];
        match (&self.single, &self.cluster) {
            (Some(server), _) => {
                env.push((
                    "kuzzle_services__storage__node__host".into(),
                    "127.0.0.1".into(),
                ));
                env.push((
                    "kuzzle_services__storage__node__port".into(),
                    server.port.to_string(),
                ));
            }
            (_, Some(cluster)) => {
                let seeds: Vec<Value> = cluster
                    .servers
                    .iter()
                    .map(|s| json!({"host": "127.0.0.1", "port": s.port}))
                    .collect();
                env.push((
                    "kuzzle_services__storage__nodes".into(),
                    format!("*json:{}", Value::Array(seeds)),
                ));
            }
            _ => {}
        }
        env
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(server) = self.single.as_mut() {
            server.kill();
        }
        self.cluster = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sources(count: usize) -> Vec<IpAddr> {
    (1..=count as u8)
        .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .collect()
}

/// Runs the chosen scenarios against one server.
async fn measure(args: &Args, target: &Target) -> Result<Map<String, Value>, String> {
    let mut results = Map::new();
    let wants = |name: &str| args.scenarios.iter().any(|s| s == name);
    if wants("idle") {
        progress(&format!("idle: {} sockets", args.connections));
        results.insert(
            "idle".into(),
            scenarios::idle(
                target,
                args.connections,
                Duration::from_secs(args.release_wait),
            )
            .await?,
        );
    }
    if wants("requests") && target.dialect == Dialect::Kuzzle {
        let jwt = match args.with_token {
            true => Some(scenarios::admin_token(target).await?),
            false => None,
        };
        results.insert(
            "requests".into(),
            scenarios::requests(target, args.clients, args.requests, jwt.as_deref()).await?,
        );
    }
    if wants("fanout") || wants("burst") {
        let mut subscribers = target
            .open(args.subscribers, "subscribers", |_| "fanout".into())
            .await?;
        if wants("fanout") {
            let interval = Duration::from_secs_f64(1.0 / args.rate);
            let (figures, peers) = scenarios::fan_out(
                target,
                target,
                subscribers,
                "fanout",
                args.publishes,
                Pace::Paced(interval),
                args.document_bytes,
            )
            .await?;
            results.insert("fanout".into(), figures);
            subscribers = peers;
        }
        if wants("burst") {
            let (figures, _) = scenarios::fan_out(
                target,
                target,
                subscribers,
                "fanout",
                args.burst,
                Pace::Burst(args.window),
                args.document_bytes,
            )
            .await?;
            results.insert("burst".into(), figures);
        }
    }
    if wants("churn") {
        results.insert(
            "churn".into(),
            scenarios::churn(target, args.cycles, args.churn_sockets).await?,
        );
    }
    Ok(results)
}

/// Two nodes on one Redis (or a Redis Cluster): the paced fan-out with the publisher on
/// the subscribers' node, then on the other node.
async fn measure_cluster(args: &Args) -> Result<Map<String, Value>, String> {
    let redis = RedisProcess::start(args.redis_cluster)?;
    let env = redis.node_env();
    let home = NodeProcess::start(args, &env)?;
    let other = NodeProcess::start(args, &env)?;
    let masters = redis.masters();
    progress(&format!(
        "cluster: nodes {} and {}, Redis masters {:?}",
        home.addr,
        other.addr,
        masters.iter().map(|(port, _)| port).collect::<Vec<_>>()
    ));
    let target = |node: &NodeProcess| node.target(args);
    let (home_target, other_target) = (target(&home), target(&other));
    let mut results = Map::new();
    let mut subscribers = home_target
        .open(args.subscribers, "subscribers", |_| "fanout".into())
        .await?;
    let cpu = || -> Vec<u64> {
        masters
            .iter()
            .map(|(_, pid)| Probe { pid: Some(*pid) }.cpu_ms())
            .collect()
    };
    let publishes = |redis: &RedisProcess| -> Result<u64, String> {
        Ok(redis.calls("publish")? + redis.calls("spublish")?)
    };
    let scripts = |redis: &RedisProcess| -> Result<u64, String> {
        Ok(redis.calls("evalsha")? + redis.calls("eval")?)
    };
    for (name, publisher) in [("same_node", &home_target), ("cross_node", &other_target)] {
        let before = (publishes(&redis)?, scripts(&redis)?, cpu());
        let (mut figures, peers) = scenarios::fan_out(
            &home_target,
            publisher,
            subscribers,
            "fanout",
            args.publishes,
            Pace::Paced(Duration::from_secs_f64(1.0 / args.rate)),
            args.document_bytes,
        )
        .await?;
        let per_publish = |calls: u64| {
            json!((calls as f64 * 100.0 / args.publishes.max(1) as f64).round() / 100.0)
        };
        figures["redis_publish_per_publish"] = per_publish(publishes(&redis)? - before.0);
        figures["redis_script_calls_per_publish"] = per_publish(scripts(&redis)? - before.1);
        // Each master's CPU per 1,000 publishes (ms): the channel's master carries them.
        figures["redis_cpu_ms_per_1000_publishes"] = json!(
            cpu()
                .iter()
                .zip(&before.2)
                .map(|(after, before)| (after - before) as f64 * 1000.0
                    / args.publishes.max(1) as f64)
                .map(|ms| (ms * 10.0).round() / 10.0)
                .collect::<Vec<f64>>()
        );
        let (entries, bytes) = redis.histories()?;
        figures["redis_history_entries"] = json!(entries);
        figures["redis_history_bytes"] = json!(bytes);
        results.insert(name.into(), figures);
        subscribers = peers;
    }
    if args.redis_cluster {
        // Where the channels of 120 collections land: one per collection, by its slot.
        let keys = kuzzle_rt::cluster::keys::Keys::new("krt/");
        let mut per_master: std::collections::BTreeMap<u16, u64> =
            masters.iter().map(|(port, _)| (*port, 0)).collect();
        for i in 0..120 {
            let channel = keys.collection_channel("i", &format!("c{i:03}"));
            *per_master.entry(redis.master_of(&channel)?).or_insert(0) += 1;
        }
        let mean = 120.0 / per_master.len().max(1) as f64;
        let busiest = per_master.values().copied().max().unwrap_or(0) as f64;
        results.insert(
            "spread".into(),
            json!({
                "channels_per_master": per_master.values().collect::<Vec<_>>(),
                "busiest_per_mean": (busiest / mean * 100.0).round() / 100.0,
            }),
        );
    }
    Ok(results)
}

/// The requests scenario anonymous and with a token, on the embedded store and on Redis,
/// each twice (A B C D D C B A: a drift of the machine weighs on all four alike).
async fn measure_identities(args: &Args) -> Result<Map<String, Value>, String> {
    let redis = RedisProcess::start(false)?;
    let embedded = NodeProcess::start(args, &[])?;
    let shared = NodeProcess::start(args, &redis.node_env())?;
    let target = |node: &NodeProcess| node.target(args);
    let (embedded, shared) = (target(&embedded), target(&shared));
    let tokens = [
        scenarios::admin_token(&embedded).await?,
        scenarios::admin_token(&shared).await?,
    ];
    let cases = [
        ("embedded_anonymous", &embedded, None),
        ("embedded_token", &embedded, Some(tokens[0].as_str())),
        ("redis_anonymous", &shared, None),
        ("redis_token", &shared, Some(tokens[1].as_str())),
    ];
    // A short first pass of each, not counted: connections, caches and allocators warm.
    for (name, target, jwt) in cases {
        progress(&format!("identities: {name}, warming up"));
        scenarios::requests(target, args.clients, args.requests / 10 + 1, jwt).await?;
    }
    let mut passes: Vec<Vec<Value>> = vec![Vec::new(); cases.len()];
    for i in (0..cases.len()).chain((0..cases.len()).rev()) {
        let (name, target, jwt) = cases[i];
        progress(&format!("identities: {name}"));
        passes[i].push(scenarios::requests(target, args.clients, args.requests, jwt).await?);
    }
    let mut results = Map::new();
    let mut rates = Vec::new();
    for ((name, ..), runs) in cases.iter().zip(passes) {
        let mean = |field: &str| {
            runs.iter().filter_map(|r| r[field].as_f64()).sum::<f64>() / runs.len() as f64
        };
        let rate = mean("per_second");
        rates.push(rate);
        results.insert(
            (*name).into(),
            json!({
                "per_second": rate.round(),
                "passes": runs.iter().map(|r| r["per_second"].clone()).collect::<Vec<_>>(),
                "p50_ms": (mean("p50_ms") * 1000.0).round() / 1000.0,
                "p99_ms": (mean("p99_ms") * 1000.0).round() / 1000.0,
            }),
        );
    }
    let ratio = |a: f64, b: f64| json!((a / b.max(1.0) * 100.0).round() / 100.0);
    results.insert(
        "ratios".into(),
        json!({
            "embedded_token_per_anonymous": ratio(rates[1], rates[0]),
            "redis_token_per_anonymous": ratio(rates[3], rates[2]),
            "redis_anonymous_per_embedded": ratio(rates[2], rates[0]),
        }),
    );
    Ok(results)
}

/// The results as Markdown tables: one per scenario, its figures as columns.
fn print_tables(heading: &str, results: &Map<String, Value>) {
    println!("# {heading}");
    for (scenario, figures) in results {
        let Value::Object(figures) = figures else {
            continue;
        };
        println!();
        println!("## {scenario}");
        println!();
        let names: Vec<&str> = figures.keys().map(String::as_str).collect();
        println!("| {} |", names.join(" | "));
        println!("|{}", "---|".repeat(names.len()));
        let values: Vec<String> = figures
            .values()
            .map(|v| match v {
                Value::Null => "n/a".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        println!("| {} |", values.join(" | "));
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("kuzzle-load: {message}");
            std::process::exit(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kuzzle-load: {e}");
            std::process::exit(1);
        }
    };
    let outcome = runtime.block_on(async {
        if args.identities {
            let results = measure_identities(&args).await?;
            return Ok::<_, String>((
                "kuzzle-load --identities: requests anonymous and with a token, embedded and Redis"
                    .to_owned(),
                results,
                None,
            ));
        }
        if args.cluster {
            let results = measure_cluster(&args).await?;
            return Ok::<_, String>((
                match args.redis_cluster {
                    true => "kuzzle-load --redis-cluster: two nodes, a Redis Cluster of 3 masters",
                    false => "kuzzle-load --cluster: two nodes, one Redis",
                }
                .to_owned(),
                results,
                None,
            ));
        }
        let node = match args.url {
            Some(_) => None,
            None => Some(NodeProcess::start(&args, &[])?),
        };
        let target = Target {
            addr: args
                .url
                .or(node.as_ref().map(|n| n.addr))
                .ok_or_else(|| "no server".to_owned())?,
            dialect: args.dialect,
            compression: args.compression,
            sources: sources(args.sources),
            probe: node
                .as_ref()
                .map_or(Probe { pid: args.pid }, NodeProcess::probe),
        };
        let heading = match &node {
            Some(_) => format!(
                "kuzzle-load against {} (node {})",
                target.addr,
                args.binary.display()
            ),
            None => format!(
                "kuzzle-load against {} ({}, already running)",
                target.addr,
                args.dialect.name()
            ),
        };
        let results = measure(&args, &target).await?;
        drop(node);
        Ok((heading, results, Some(target.addr)))
    });
    match outcome {
        Ok((heading, results, addr)) => {
            if args.json {
                let mut all = Map::new();
                all.insert("dialect".into(), json!(args.dialect.name()));
                all.insert("server".into(), json!(addr.map(|a| a.to_string())));
                all.extend(results);
                println!("{}", Value::Object(all));
            } else {
                print_tables(&heading, &results);
            }
        }
        Err(message) => {
            eprintln!("kuzzle-load: {message}");
            std::process::exit(1);
        }
    }
}
