//! kuzzle-load: measures a real kuzzle-rt node started as a child process.
//!
//! 1. Idle connections: opens N WebSockets, checks the node holds them all, and reports
//!    the node's resident memory per idle connection.
//! 2. Request round trips: C clients each send R `server:now` requests one after the
//!    other; reports throughput and latency percentiles.
//! 3. Fan-out: S sockets subscribe to one room; one publisher sends P messages; reports
//!    deliveries per second, publish-to-delivery latency percentiles, the bytes each
//!    delivery took on the wire and the node's CPU time.
//!
//! `--publish-interval-ms` paces the publisher, so that latency is measured below the
//! rate at which the tool's single thread can read notifications.
//! `--compression` turns permessage-deflate on in the node and has every client offer
//! it; `--document-bytes N` pads each published document to about N bytes of JSON.
//!
//! `--cluster` measures a cluster instead: a `redis-server` started on a free port and
//! two nodes sharing it; the fan-out runs twice, the publisher on the subscribers' node
//! and then on the other node (cross-node, through Redis pub/sub), and reports the
//! Redis commands each publish cost.
//!
//! Everything runs on 127.0.0.1. The figures in the README come from this tool.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kuzzle_rt::wsclient::{Client, Connected, Options};
use serde_json::{Value, json};

struct Args {
    binary: PathBuf,
    connections: usize,
    clients: usize,
    requests: usize,
    subscribers: usize,
    publishes: usize,
    compression: bool,
    document_bytes: usize,
    /// Pause between publishes; 0 publishes as fast as the node answers.
    publish_interval: Duration,
    /// Two nodes and a Redis instead of one node.
    cluster: bool,
    /// A node already running, instead of one started by the tool.
    url: Option<SocketAddr>,
    /// That node's process, for its memory and CPU figures.
    pid: Option<u32>,
}

const HELP: &str =
    "kuzzle-load: measures a kuzzle-rt node over loopback (see the README's Performance).

usage: kuzzle-load [options]

  --binary PATH            the kuzzle-rt binary to start (default: kuzzle-rt next to this tool)
  --url HOST:PORT          measure a node that is already running instead (ws://HOST:PORT
                           accepted); its memory and CPU are measured only with --pid
  --pid PID                the process of the --url node, for RSS and CPU from /proc
  --connections N          idle WebSockets opened and held (default: 10000)
  --clients C              clients sending requests one after the other (default: 50)
  --requests R             server:now requests per client (default: 2000)
  --subscribers S          sockets subscribed to the fan-out room (default: 1000)
  --publishes P            messages published to that room (default: 200)
  --publish-interval-ms MS pause between publishes; 0 publishes as fast as answered (default: 0)
  --document-bytes N       pad each published document to about N bytes of JSON (default: 0)
  --compression            permessage-deflate on in the node and offered by every client
                           (default: off)
  --cluster                start a redis-server and two nodes instead: the fan-out with the
                           publisher on the subscribers' node, then on the other node, and the
                           Redis commands per publish (uses --subscribers, --publishes,
                           --publish-interval-ms, --document-bytes)
  -h, --help               this help

Progress goes to stderr during long phases; the tables go to stdout.";

fn parse_args() -> Result<Args, String> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("kuzzle-rt")))
        .unwrap_or_else(|| PathBuf::from("kuzzle-rt"));
    let mut args = Args {
        binary: sibling,
        connections: 10_000,
        clients: 50,
        requests: 2_000,
        subscribers: 1_000,
        publishes: 200,
        compression: false,
        document_bytes: 0,
        publish_interval: Duration::ZERO,
        cluster: false,
        url: None,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--binary" => args.binary = PathBuf::from(value()?),
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--clients" => {
                args.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?
            }
            "--requests" => {
                args.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?
            }
            "--subscribers" => {
                args.subscribers = value()?
                    .parse()
                    .map_err(|e| format!("--subscribers: {e}"))?
            }
            "--publishes" => {
                args.publishes = value()?.parse().map_err(|e| format!("--publishes: {e}"))?
            }
            "--compression" => args.compression = true,
            "--cluster" => args.cluster = true,
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
            "--publish-interval-ms" => {
                args.publish_interval = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--publish-interval-ms: {e}"))?,
                )
            }
            "--document-bytes" => {
                args.document_bytes = value()?
                    .parse()
                    .map_err(|e| format!("--document-bytes: {e}"))?
            }
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// The node measured: started for the measurement (stopped when dropped), or one already
/// running (`--url`).
struct NodeProcess {
    child: Option<Child>,
    /// The process, when known, for its memory and CPU.
    pid: Option<u32>,
    addr: SocketAddr,
    dir: Option<PathBuf>,
}

impl NodeProcess {
    fn start(
        binary: &PathBuf,
        compression: bool,
        env: &[(String, String)],
    ) -> Result<NodeProcess, String> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kuzzle-load-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut child = Command::new(binary)
            .current_dir(&dir)
            .env("HOME", &dir)
            .env("RUST_LOG", "info")
            .env("kuzzle_server__host", "127.0.0.1")
            .env("kuzzle_server__port", "0")
            .env(
                "kuzzle_server__protocols__websocket__compression",
                compression.to_string(),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(15))
            .map_err(|_| "the node did not announce its address".to_owned())?
            .parse()
            .map_err(|e| format!("bad address: {e}"))?;
        Ok(NodeProcess {
            pid: Some(child.id()),
            child: Some(child),
            addr,
            dir: Some(dir),
        })
    }

    fn attach(addr: SocketAddr, pid: Option<u32>) -> NodeProcess {
        NodeProcess {
            child: None,
            pid,
            addr,
            dir: None,
        }
    }

    /// Whether memory and CPU can be read.
    fn measured(&self) -> bool {
        self.pid.is_some()
    }

    /// Resident memory of the node process, in bytes.
    fn rss(&self) -> u64 {
        let Some(pid) = self.pid else {
            return 0;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU time the node used so far (user + system, all threads), in milliseconds.
    fn cpu_ms(&self) -> u64 {
        let Some(pid) = self.pid else {
            return 0;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th, in clock ticks of 10 ms on Linux.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (ticks(11) + ticks(12)) * 10
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A progress line on stderr (the tables stay alone on stdout).
fn progress(text: &str) {
    eprintln!("kuzzle-load: {text}");
}

async fn connect(addr: SocketAddr, compression: bool) -> Result<Client, String> {
    let offer = [("Sec-WebSocket-Extensions", "permessage-deflate")];
    let options = Options {
        headers: if compression { &offer } else { &[] },
        ..Options::default()
    };
    match Client::connect(addr, options)
        .await
        .map_err(|e| e.to_string())?
    {
        Connected::Upgraded(client) => Ok(client),
        Connected::Refused(answer) => Err(format!(
            "upgrade refused: {}",
            answer.lines().next().unwrap_or_default()
        )),
    }
}

async fn request(
    client: &mut Client,
    controller: &str,
    action: &str,
    id: &str,
) -> Result<Value, String> {
    send_request(
        client,
        json!({"controller": controller, "action": action, "requestId": id}),
    )
    .await
}

/// Sends a request carrying a `requestId` and waits for its response.
async fn send_request(client: &mut Client, request: Value) -> Result<Value, String> {
    let id = request["requestId"].clone();
    client
        .send_text(&request.to_string())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let text = client.next_text().await.map_err(|e| e.to_string())?;
        let reply: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if reply["requestId"] == id {
            return Ok(reply);
        }
    }
}

/// A redis-server for `--cluster`, on a free port of 127.0.0.1, without persistence.
struct RedisProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    fn start() -> Result<RedisProcess, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("kuzzle-load-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let redis = RedisProcess { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Commands Redis has run since it started, all kinds together, and PUBLISHes.
    fn commands(&self) -> Result<(u64, u64), String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .map_err(|e| e.to_string())?;
        let mut connection = client.get_connection().map_err(|e| e.to_string())?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)
            .map_err(|e| e.to_string())?;
        let (mut all, mut publish) = (0, 0);
        for line in info.lines() {
            let Some((name, rest)) = line.split_once(":calls=") else {
                continue;
            };
            let calls: u64 = rest
                .split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            all += calls;
            if name == "cmdstat_publish" {
                publish += calls;
            }
        }
        Ok((all, publish))
    }

    fn node_env(&self) -> Vec<(String, String)> {
        vec![
            ("kuzzle_services__storage__backend".into(), "redis".into()),
            (
                "kuzzle_services__storage__node__host".into(),
                "127.0.0.1".into(),
            ),
            (
                "kuzzle_services__storage__node__port".into(),
                self.port.to_string(),
            ),
        ]
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two nodes on one Redis: the fan-out with the publisher on the subscribers' node, then
/// on the other node.
async fn measure_cluster(args: &Args) -> Result<(), String> {
    let redis = RedisProcess::start()?;
    let env = redis.node_env();
    let home = NodeProcess::start(&args.binary, args.compression, &env)?;
    let other = NodeProcess::start(&args.binary, args.compression, &env)?;
    println!(
        "# kuzzle-load --cluster: nodes {} and {}, redis-server 127.0.0.1:{}",
        home.addr, other.addr, redis.port
    );
    for (label, publisher) in [
        (", publisher on the subscribers' node", &home),
        (", publisher on the other node: cross-node", &other),
    ] {
        fan_out(args, &home, publisher.addr, label, Some(&redis)).await?;
    }
    Ok(())
}

/// S subscribers on one room of `node`, P publishes sent to `publisher`: deliveries per
/// second and latency.
async fn fan_out(
    args: &Args,
    node: &NodeProcess,
    publisher: SocketAddr,
    label: &str,
    redis: Option<&RedisProcess>,
) -> Result<(), String> {
    let clock = Instant::now();
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let collection = format!("fanout-{}", publisher.port());
    for i in 0..args.subscribers {
        let mut client = connect(node.addr, args.compression).await?;
        let subscribe = json!({"controller": "realtime", "action": "subscribe", "index": "load", "collection": collection,
            "body": {"range": {"sent": {"gte": 0}}}, "requestId": format!("sub-{i}")});
        let reply = send_request(&mut client, subscribe).await?;
        if reply["status"] != 200 {
            return Err(format!("subscribe failed: {reply}"));
        }
        subscribers.push(client);
        if subscribers.len() % 500 == 0 {
            progress(&format!(
                "{} / {} subscribers",
                subscribers.len(),
                args.subscribers
            ));
        }
    }
    let expected = args.publishes;
    let receivers = subscribers.into_iter().map(|mut client| async move {
        let mut latencies = Vec::with_capacity(expected);
        let mut json_bytes = 0u64;
        let wire_before = client.wire_bytes;
        while latencies.len() < expected {
            let text = client.next_text().await.map_err(|e| e.to_string())?;
            json_bytes += text.len() as u64;
            let notification: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let sent = notification["result"]["_source"]["sent"]
                .as_u64()
                .unwrap_or(0);
            let now = clock.elapsed().as_micros() as u64;
            latencies.push(Duration::from_micros(now.saturating_sub(sent)));
        }
        // The client is handed back so that it closes after the measurement.
        Ok::<_, String>((
            latencies,
            json_bytes,
            client.wire_bytes - wire_before,
            client,
        ))
    });
    let mut publisher = connect(publisher, args.compression).await?;
    let rows = padding_rows(args.document_bytes);
    let redis_before = redis.map(RedisProcess::commands).transpose()?;
    let started = Instant::now();
    let cpu_before = node.cpu_ms();
    let publishing = async {
        for p in 0..args.publishes {
            let sent = clock.elapsed().as_micros() as u64;
            let message = json!({"controller": "realtime", "action": "publish", "index": "load", "collection": collection,
                "body": {"sent": sent, "seq": p, "text": "a notification of a realistic size, with a few fields", "rows": rows},
                "requestId": format!("pub-{p}")});
            send_request(&mut publisher, message).await?;
            if (p + 1) % (args.publishes / 4).max(1) == 0 {
                progress(&format!("{} / {} publishes", p + 1, args.publishes));
            }
            if !args.publish_interval.is_zero() {
                tokio::time::sleep(args.publish_interval).await;
            }
        }
        Ok::<_, String>(())
    };
    let (received, published) = tokio::join!(join_all(receivers), publishing);
    published?;
    let elapsed = started.elapsed();
    let cpu_ms = node.cpu_ms().saturating_sub(cpu_before);
    let redis_after = redis.map(RedisProcess::commands).transpose()?;
    let mut latencies = Vec::with_capacity(args.subscribers * args.publishes);
    let (mut json_bytes, mut wire_bytes) = (0u64, 0u64);
    let mut clients = Vec::with_capacity(args.subscribers);
    for result in received {
        let (times, json, wire, client) = result?;
        latencies.extend(times);
        json_bytes += json;
        wire_bytes += wire;
        clients.push(client);
    }
    let deliveries = latencies.len().max(1) as f64;
    latencies.sort();
    println!();
    println!("## Fan-out (one room, realtime:publish over WebSocket{label})");
    println!();
    println!(
        "| subscribers | publishes | compression | notification | on the wire | deliveries/s | p50 publish→delivery | p99 | max | node CPU per 1000 deliveries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.0} B | {:.0} B | {:.0} | {} | {} | {} | {} |",
        args.subscribers,
        args.publishes,
        if args.compression { "on" } else { "off" },
        json_bytes as f64 / deliveries,
        wire_bytes as f64 / deliveries,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
        if node.measured() {
            format!("{:.1} ms", cpu_ms as f64 * 1000.0 / deliveries)
        } else {
            "n/a".into()
        }
    );
    if let (Some((all_before, publish_before)), Some((all_after, publish_after))) =
        (redis_before, redis_after)
    {
        // One INFO before and one after are the tool's own; the rest is the nodes'.
        let commands = (all_after - all_before).saturating_sub(1);
        println!();
        println!(
            "Redis while publishing: {} PUBLISH for {} publishes ({:.2} per publish); {} commands in all, the nodes' heartbeats included.",
            publish_after - publish_before,
            args.publishes,
            (publish_after - publish_before) as f64 / args.publishes.max(1) as f64,
            commands,
        );
    }
    drop(clients);
    Ok(())
}

/// Sensor-like records making about `bytes` of JSON (none for 0).
fn padding_rows(bytes: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut size = 0;
    while size < bytes {
        let i = rows.len();
        let row = json!({"sensor": format!("sensor-{i}"), "temperature": 20.5 + (i % 9) as f64,
            "unit": "celsius", "location": {"lat": 43.6 + i as f64 / 1000.0, "lon": 3.87}});
        size += row.to_string().len() + 1;
        rows.push(row);
    }
    rows
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(args: &Args, node: &NodeProcess) -> Result<(), String> {
    let mut probe = connect(node.addr, args.compression).await?;
    for i in 0..200 {
        request(&mut probe, "server", "now", &format!("warm-{i}")).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = node.rss();

    // 1. Idle connections.
    let started = Instant::now();
    let mut idle = Vec::with_capacity(args.connections);
    for batch in (0..args.connections).collect::<Vec<_>>().chunks(500) {
        let opened = join_all(batch.iter().map(|_| connect(node.addr, args.compression))).await;
        for result in opened {
            idle.push(result?);
        }
        if idle.len() % 2000 == 0 || idle.len() == args.connections {
            progress(&format!(
                "{} / {} idle connections open",
                idle.len(),
                args.connections
            ));
        }
    }
    let open_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_after = node.rss();
    let metrics = request(&mut probe, "server", "metrics", "metrics").await?;
    let held = metrics["result"]["network"]["connections"]["websocket"]
        .as_u64()
        .unwrap_or(0);
    // Every idle socket still answers.
    let mut alive = 0;
    for (i, client) in idle
        .iter_mut()
        .enumerate()
        .step_by((args.connections / 100).max(1))
    {
        if request(client, "server", "now", &format!("alive-{i}"))
            .await
            .is_ok()
        {
            alive += 1;
        }
    }
    let per_connection =
        rss_after.saturating_sub(rss_before) as f64 / args.connections.max(1) as f64;
    println!("## Idle connections");
    println!();
    println!(
        "| connections opened | held by the node | sampled and answering | time to open | node RSS before | node RSS after | RSS per idle connection |"
    );
    println!("|---|---|---|---|---|---|---|");
    let figure = |value: String| if node.measured() { value } else { "n/a".into() };
    println!(
        "| {} | {} | {alive}/{alive} | {:.2} s | {} | {} | {} |",
        args.connections,
        held.saturating_sub(1),
        open_time.as_secs_f64(),
        figure(format!("{:.1} MiB", rss_before as f64 / 1048576.0)),
        figure(format!("{:.1} MiB", rss_after as f64 / 1048576.0)),
        figure(format!("{:.1} KiB", per_connection / 1024.0))
    );
    if args.compression && node.measured() {
        // Each socket's inflater (with the client's 32 KiB window) is made on its first
        // compressed message: the worst case, every client having sent one.
        for batch in idle.chunks_mut(500) {
            let sent = batch.iter_mut().enumerate().map(|(i, client)| async move {
                let now =
                    json!({"controller": "server", "action": "now", "requestId": format!("z-{i}")});
                client
                    .send_compressed(&now.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                client.next_text().await.map_err(|e| e.to_string())
            });
            for result in join_all(sent).await {
                result?;
            }
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let rss_inflating = node.rss();
        println!();
        println!(
            "After one compressed request from each socket: node RSS {:.1} MiB, {:.1} KiB per connection.",
            rss_inflating as f64 / 1048576.0,
            rss_inflating.saturating_sub(rss_before) as f64
                / args.connections.max(1) as f64
                / 1024.0
        );
    }
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. Request round trips.
    progress(&format!(
        "{} clients x {} requests",
        args.clients, args.requests
    ));
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(connect(node.addr, args.compression).await?);
    }
    let started = Instant::now();
    let runs = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| async move {
            let mut latencies = Vec::with_capacity(args.requests);
            for i in 0..args.requests {
                let sent = Instant::now();
                request(&mut client, "server", "now", &format!("{c}-{i}")).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, String>(latencies)
        });
    let mut latencies = Vec::with_capacity(args.clients * args.requests);
    for result in join_all(runs).await {
        latencies.extend(result?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!();
    println!("## Request round trips (server:now over WebSocket)");
    println!();
    println!("| clients | requests | throughput | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} req/s | {} | {} | {} |",
        args.clients,
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    fan_out(args, node, node.addr, "", None).await
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("kuzzle-load: {message}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kuzzle-load: {e}");
            std::process::exit(1);
        }
    };
    if args.cluster {
        if let Err(message) = runtime.block_on(measure_cluster(&args)) {
            eprintln!("kuzzle-load: {message}");
            std::process::exit(1);
        }
        return;
    }
    let started = match args.url {
        Some(addr) => Ok(NodeProcess::attach(addr, args.pid)),
        None => NodeProcess::start(&args.binary, args.compression, &[]),
    };
    let node = match started {
        Ok(node) => node,
        Err(message) => {
            eprintln!("kuzzle-load: {message}");
            std::process::exit(1);
        }
    };
    match args.url {
        Some(_) => println!(
            "# kuzzle-load against {} (a node already running)",
            node.addr
        ),
        None => println!(
            "# kuzzle-load against {} (node {})",
            node.addr,
            args.binary.display()
        ),
    }
    println!();
    if let Err(message) = runtime.block_on(measure(&args, &node)) {
        eprintln!("kuzzle-load: {message}");
        std::process::exit(1);
    }
}
