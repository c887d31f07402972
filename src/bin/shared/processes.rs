//! The processes the measuring tools (`kuzzle-load`, `kuzzle-soak`) and the tests start: a
//! `redis-server` of their own, and how a kuzzle-rt node's address is learnt.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address a node started with a piped stderr announces ("… listening on <addr>"),
/// within `wait`; its log goes on being read (and written to `log`, when given).
pub fn announced_address(
    child: &mut Child,
    log: Option<PathBuf>,
    wait: Duration,
) -> Result<SocketAddr, String> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = log.and_then(|path| std::fs::File::create(path).ok());
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(address.to_owned());
            }
            if let Some(file) = file.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    });
    rx.recv_timeout(wait)
        .map_err(|_| "the node did not announce its address".to_owned())?
        .parse()
        .map_err(|e| format!("bad address: {e}"))
}

/// A `redis-server` of the tool's own, on a free port of 127.0.0.1, its files in a
/// directory the tool chooses. Killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    /// More arguments of `redis-server` (a Redis Cluster member's).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one in `dir`; `persistent`: with an append-only file synced every second
    /// (Redis's default), so that a kill loses up to a second of writes.
    pub fn start(dir: &Path, persistent: bool) -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        Self::start_on(port, dir, persistent)
    }

    /// Starts one on a given port (to bring a stopped one back).
    pub fn start_on(port: u16, dir: &Path, persistent: bool) -> Result<RedisServer, String> {
        Self::start_with(port, dir, persistent, Vec::new())
    }

    fn start_with(
        port: u16,
        dir: &Path,
        persistent: bool,
        extra: Vec<String>,
    ) -> Result<RedisServer, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let child = spawn(port, dir, persistent, &extra)?;
        Ok(RedisServer {
            child,
            port,
            dir: dir.to_owned(),
            persistent,
            extra,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, on the same port and files.
    pub fn restart(&mut self) -> Result<(), String> {
        self.child = spawn(self.port, &self.dir, self.persistent, &self.extra)?;
        Ok(())
    }
}

fn spawn(port: u16, dir: &Path, persistent: bool, extra: &[String]) -> Result<Child, String> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", if persistent { "yes" } else { "no" }])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of its own on 127.0.0.1: `masters` masters with one replica each
/// (`cluster-node-timeout` 1000 ms: a master killed is replaced by its replica in about
/// 2 to 3 s). Killed when dropped.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the servers in `dir`, creates the cluster, and waits until every slot is
    /// served and every replica is in sync with its master. Tried up to three times on new
    /// ports: a port found free may be taken before its server binds it (another test
    /// starting its own servers at the same moment).
    pub fn start(dir: &Path, masters: usize) -> Result<RedisCluster, String> {
        let mut failure = String::new();
        for attempt in 0..3 {
            match Self::start_once(&dir.join(format!("attempt-{attempt}")), masters) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }

    fn start_once(dir: &Path, masters: usize) -> Result<RedisCluster, String> {
        let mut servers = Vec::with_capacity(masters * 2);
        for _ in 0..masters * 2 {
            let port = cluster_port()?;
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
            ]
            .map(str::to_owned)
            .to_vec();
            servers.push(RedisServer::start_with(
                port,
                &dir.join(port.to_string()),
                false,
                extra,
            )?);
        }
        let cluster = RedisCluster { servers };
        let addresses: Vec<String> = cluster
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        cluster.wait_until_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Every server says the cluster is ok, and every replica's link to its master is up
    /// (a master killed before that has no replica able to take over).
    pub fn wait_until_ready(&self, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            let ready = self.servers.iter().all(|server| {
                let info = cli(server.port, &["CLUSTER", "INFO"]);
                let replication = cli(server.port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the Redis Cluster did not become ready".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ports of the servers that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter(|s| cli(s.port, &["INFO", "replication"]).contains("role:master"))
            .map(|s| s.port)
            .collect()
    }
}

/// `redis-cli -p port args…`'s output ("" when it fails).
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// A free port whose cluster bus port (+10000) is free too, both below Linux's ephemeral
/// range (32768 and up): a port chosen there may become the source port of an outgoing
/// connection (the members' links to each other) before the server binds it, and the
/// server then exits.
fn cluster_port() -> Result<u16, String> {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..1000 {
        // xorshift: enough to spread concurrent test processes over the range.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let port = 10_000 + (seed % 5_000) as u16;
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    Err("no free port pair for a Redis Cluster member".into())
}
