//! Test helpers: a real node on 127.0.0.1:0, a raw WebSocket client that can send any
//! frame (bad ones included), and small HTTP helpers.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

/// The fault proxy the soak tool uses too.
#[path = "../../src/bin/kuzzle-soak/proxy.rs"]
pub mod proxy;

/// The processes the measuring tools start too.
#[path = "../../src/bin/shared/processes.rs"]
mod processes;

use std::net::SocketAddr;
use std::time::Duration;

use kuzzle_rt::config::Settings;
use kuzzle_rt::server::{self, RunningNode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

/// Settings for tests: loopback, a free port, and nothing else changed.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings
}

/// A node started in this test's actix system, with its own store directory.
pub struct TestNode {
    running: RunningNode,
    _store: tempfile::TempDir,
}

impl std::ops::Deref for TestNode {
    type Target = RunningNode;

    fn deref(&self) -> &RunningNode {
        &self.running
    }
}

/// Starts a node on 127.0.0.1:0 with an embedded store in a fresh directory.
pub async fn start_node(configure: impl FnOnce(&mut Settings)) -> TestNode {
    let store = tempfile::tempdir().unwrap();
    let mut settings = test_settings();
    settings.services.storage.path = store.path().display().to_string();
    configure(&mut settings);
    let running = server::start(settings).await.expect("node starts");
    TestNode {
        running,
        _store: store,
    }
}

pub use kuzzle_rt::wsclient::{
    BINARY, CLOSE, CONTINUATION, Frame, Options as WsOptions, PING, PONG, TEXT, encode_frame,
};
use kuzzle_rt::wsclient::{Client, Connected};

/// The library's client, with test conveniences: timeouts, JSON, requests by id.
pub struct Ws {
    client: Client,
    pub handshake: String,
    next_id: u64,
}

impl Ws {
    pub async fn connect(addr: SocketAddr) -> Ws {
        Self::connect_with(addr, WsOptions::default())
            .await
            .expect("upgrade accepted")
    }

    /// Err carries the raw HTTP answer when the upgrade is refused.
    pub async fn connect_with(addr: SocketAddr, options: WsOptions<'_>) -> Result<Ws, String> {
        let connected = tokio::time::timeout(WAIT, Client::connect(addr, options))
            .await
            .expect("handshake in time");
        match connected.expect("TCP connection") {
            Connected::Upgraded(client) => Ok(Ws {
                handshake: client.handshake.clone(),
                client,
                next_id: 0,
            }),
            Connected::Refused(answer) => Err(answer),
        }
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        self.client
            .send_frame(fin, opcode, payload, masked)
            .await
            .expect("frame written");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, TEXT, text.as_bytes(), true).await;
    }

    /// A masked frame whose first byte (FIN, RSV bits, opcode) is given as is.
    pub async fn send_raw_frame(&mut self, first_byte: u8, payload: &[u8]) {
        self.client
            .send_raw_frame(first_byte, payload, true)
            .await
            .expect("frame written");
    }

    /// A permessage-deflate compressed text message (the context is kept between them).
    pub async fn send_compressed(&mut self, text: &str) {
        self.client
            .send_compressed(text)
            .await
            .expect("frame written");
    }

    /// (payload bytes of the server's data frames on the wire, messages that came compressed)
    pub fn received_stats(&self) -> (u64, u64) {
        (self.client.wire_bytes, self.client.compressed_messages)
    }

    /// Bytes written as they are, in one write.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.client.send_bytes(bytes).await.expect("bytes written");
    }

    /// Ends the client's side with a FIN; the server's frames can still be read.
    pub async fn shutdown_write(&mut self) {
        self.client.shutdown_write().await.expect("FIN sent");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next frame, or None when the server closed the TCP connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        self.next_frame_within(WAIT).await.expect("a frame in time")
    }

    /// Err(()) on timeout.
    pub async fn next_frame_within(&mut self, limit: Duration) -> Result<Option<Frame>, ()> {
        match tokio::time::timeout(limit, self.client.next_frame()).await {
            Err(_) => Err(()),
            Ok(frame) => Ok(frame.expect("a well-formed frame")),
        }
    }

    /// The next text message as JSON; PINGs are answered, PONGs skipped.
    pub async fn next_json(&mut self) -> Value {
        let text = tokio::time::timeout(WAIT, self.client.next_text())
            .await
            .expect("a message in time")
            .expect("a text message");
        serde_json::from_str(&text).expect("server sends JSON")
    }

    /// Sends a request (with a fresh requestId unless it has one) and waits for its response.
    pub async fn request(&mut self, mut request: Value) -> Value {
        if request.get("requestId").is_none() {
            self.next_id += 1;
            request["requestId"] = json!(format!("req-{}", self.next_id));
        }
        let id = request["requestId"].clone();
        self.send_json(&request).await;
        loop {
            let message = self.next_json().await;
            if message["requestId"] == id {
                return message;
            }
        }
    }

    /// Reads until the close frame; returns its code and reason. Messages before it are skipped.
    pub async fn expect_close(&mut self) -> (Option<u16>, String) {
        loop {
            match self.next_frame().await {
                Some(Frame::Close(code, reason)) => return (code, reason),
                Some(_) => {}
                None => panic!("connection dropped without a close frame"),
            }
        }
    }
}

/// True when the node still serves a fresh client.
pub async fn assert_serving(addr: SocketAddr) {
    let mut other = Ws::connect(addr).await;
    let res = other
        .request(json!({"controller":"server","action":"now"}))
        .await;
    assert_eq!(res["status"], 200, "{res}");
    assert!(res["result"]["now"].as_u64().is_some());
}

/// A node with an administrator `root`/`toor` (standard rights installed); returns the
/// admin's socket and token.
pub async fn admin_session(node: &TestNode) -> (Ws, String) {
    admin_session_with(node, true).await
}

/// Like `admin_session`; without `reset`, anonymous keeps every right.
pub async fn admin_session_with(node: &TestNode, reset: bool) -> (Ws, String) {
    let mut ws = Ws::connect(node.addr).await;
    let res = ws
        .request(
            json!({"controller":"security","action":"createFirstAdmin","_id":"root","reset":reset,
            "body":{"credentials":{"local":{"username":"root","password":"toor"}}}}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let res = ws
        .request(json!({"controller":"auth","action":"login","strategy":"local","body":{"username":"root","password":"toor"}}))
        .await;
    (ws, res["result"]["jwt"].as_str().unwrap().to_owned())
}

pub fn url(node: &RunningNode, path: &str) -> String {
    format!("http://{}{}", node.addr, path)
}

/// A raw HTTP/1.1 exchange: the whole answer as text (the connection is closed after it).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The real binary, started on 127.0.0.1 with a free port, in `dir` (its working and
/// home directory). Returns the child, the address it announced, and its log so far.
pub fn spawn_binary(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    spawn_binary_with(dir, env, None)
}

/// Like `spawn_binary`, with at most `open_files` descriptors (through `prlimit`).
pub fn spawn_binary_with(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    open_files: Option<u64>,
) -> (
    std::process::Child,
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::BufRead;
    let binary = env!("CARGO_BIN_EXE_kuzzle-rt");
    let mut command = match open_files {
        None => std::process::Command::new(binary),
        Some(n) => {
            let mut prlimit = std::process::Command::new("prlimit");
            prlimit
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(binary);
            prlimit
        }
    };
    let mut child = command
        .current_dir(dir)
        .env("HOME", dir)
        .env("kuzzle_server__host", "127.0.0.1")
        .env("kuzzle_server__port", "0")
        // The node's default levels, whatever this process has.
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            // Logged first, so that the log holds the line once the address is known.
            if let Ok(mut log) = sink.lock() {
                log.push_str(&line);
                log.push('\n');
            }
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(WAIT)
        .expect("the node announces its address");
    (child, addr.parse().unwrap(), log)
}

pub fn send_signal(child: &std::process::Child, signal: &str) {
    signal_pid(child.id(), signal);
}

fn signal_pid(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the child to exit, at most `WAIT`.
pub fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Ws {
    /// Reads for `duration`, answering every PING; returns how many came. Any other frame fails.
    pub async fn answer_pings_for(&mut self, duration: Duration) -> usize {
        let until = std::time::Instant::now() + duration;
        let mut pings = 0;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.next_frame_within(left).await {
                Err(()) => return pings,
                Ok(Some(Frame::Ping(payload))) => {
                    pings += 1;
                    self.send_frame(true, PONG, &payload, true).await;
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Reads until the close frame: how many text messages came first, and the close.
    pub async fn count_until_close(&mut self) -> (usize, (Option<u16>, String)) {
        let mut texts = 0;
        loop {
            match self.next_frame().await {
                Some(Frame::Text(_)) => texts += 1,
                Some(Frame::Close(code, reason)) => return (texts, (code, reason)),
                Some(_) => {}
                None => panic!("connection dropped without a close frame"),
            }
        }
    }

    /// `server:now` on this socket succeeds.
    pub async fn assert_now_ok(&mut self) {
        let res = self
            .request(json!({"controller":"server","action":"now"}))
            .await;
        assert_eq!(res["status"], 200, "{res}");
    }
}

/// The keys of a JSON object, in order.
pub fn keys_of(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// A `redis-server` of the test's own, on a free loopback port; killed when dropped.
pub struct RedisServer {
    server: processes::RedisServer,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::wrap(|dir| processes::RedisServer::start(dir, false))
    }

    /// A server on a given port (to bring a stopped one back), without persistence.
    pub fn start_on(port: u16) -> RedisServer {
        Self::wrap(|dir| processes::RedisServer::start_on(port, dir, false))
    }

    /// A server that keeps its data in an append-only file (fsync every second, the
    /// default), so that `restart` brings back what it wrote until about a second before
    /// `kill`.
    pub fn start_persistent() -> RedisServer {
        Self::wrap(|dir| processes::RedisServer::start(dir, true))
    }

    fn wrap(
        start: impl FnOnce(&std::path::Path) -> Result<processes::RedisServer, String>,
    ) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path()).expect("redis-server starts (apt-get install redis-server)");
        RedisServer {
            port: server.port,
            server,
            dir,
        }
    }

    /// Kills the server (SIGKILL); `restart` brings it back.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.server.restart().expect("redis-server restarts");
    }

    /// Sends a signal to the server (`STOP` freezes it, `CONT` thaws it).
    pub fn signal(&self, signal: &str) {
        signal_pid(self.server.pid(), signal);
    }

    pub fn settings(&self) -> kuzzle_rt::config::StorageSettings {
        kuzzle_rt::config::StorageSettings {
            backend: kuzzle_rt::config::StorageBackend::Redis,
            node: kuzzle_rt::config::RedisNode {
                host: "127.0.0.1".into(),
                port: self.port,
            },
            path: self.dir.path().display().to_string(),
            ..Default::default()
        }
    }
}

/// A Redis Cluster of the test's own: 3 masters and 3 replicas on free loopback ports,
/// ready (every slot served, every replica in sync); killed when dropped.
pub struct RedisCluster {
    pub cluster: processes::RedisCluster,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let cluster = processes::RedisCluster::start(dir.path(), 3)
            .expect("a Redis Cluster starts (redis-server and redis-cli 7)");
        RedisCluster { cluster, _dir: dir }
    }

    /// The store's settings: every member as a seed node.
    pub fn settings(&self) -> kuzzle_rt::config::StorageSettings {
        kuzzle_rt::config::StorageSettings {
            backend: kuzzle_rt::config::StorageBackend::Redis,
            nodes: self
                .cluster
                .servers
                .iter()
                .map(|s| kuzzle_rt::config::RedisNode {
                    host: "127.0.0.1".into(),
                    port: s.port,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The seed nodes as a `kuzzle_services__storage__nodes` value.
    pub fn nodes_env(&self) -> String {
        let nodes: Vec<Value> = self
            .cluster
            .servers
            .iter()
            .map(|s| serde_json::json!({"host": "127.0.0.1", "port": s.port}))
            .collect();
        format!("*json:{}", Value::Array(nodes))
    }

    /// `redis-cli` on the member at `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        processes::cli(port, args)
    }
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The kernel's TCP memory, in pages (`/proc/net/sockstat`, machine-wide).
pub fn tcp_memory_pages() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .and_then(|line| line.split(" mem ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it holds; false if `limit` passed first.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /_login/local` over a connection of its own from `source` (a 127.0.0.x address):
/// the status and the error id (null on success).
pub async fn http_login_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
    username: &str,
    password: &str,
) -> (u16, Value) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = json!({"username": username, "password": password}).to_string();
    let request = format!(
        "POST /_login/local HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut out))
        .await
        .expect("a login answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|body| serde_json::from_str::<Value>(body).ok())
        .unwrap_or(Value::Null);
    (status, json["error"]["id"].clone())
}
