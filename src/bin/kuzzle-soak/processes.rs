//! The soak's processes: one `redis-server` with an append-only file, and kuzzle-rt nodes
//! on default settings, each reaching Redis through a fault proxy of its own.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to a process.
pub fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
}

/// A redis-server on a free port of 127.0.0.1, its data in an append-only file synced
/// every second (Redis's default), so that a kill loses up to a second of writes.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start(dir: &Path) -> Result<Redis, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Self::spawn(port, &dir)?;
        Ok(Redis { child, port, dir })
    }

    fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes"])
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

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, on the same port and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.child = Self::spawn(self.port, &self.dir)?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A kuzzle-rt node on default settings but its Redis (`redis_port`: its proxy).
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Node {
    pub fn start(binary: &Path, dir: &Path, redis_port: u16) -> Result<Node, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut child = Command::new(binary)
            .current_dir(dir)
            .env("HOME", dir)
            .env("RUST_LOG", "info")
            .env("kuzzle_server__host", "127.0.0.1")
            .env("kuzzle_server__port", "0")
            .env("kuzzle_services__storage__backend", "redis")
            .env("kuzzle_services__storage__node__host", "127.0.0.1")
            .env(
                "kuzzle_services__storage__node__port",
                redis_port.to_string(),
            )
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = dir.join("node.log");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(log).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                if let Some(file) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the node did not announce its address".to_owned())?
            .parse()
            .map_err(|e| format!("bad address: {e}"))?;
        Ok(Node { child, addr })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
