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
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let child = spawn(port, dir, persistent)?;
        Ok(RedisServer {
            child,
            port,
            dir: dir.to_owned(),
            persistent,
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
        self.child = spawn(self.port, &self.dir, self.persistent)?;
        Ok(())
    }
}

fn spawn(port: u16, dir: &Path, persistent: bool) -> Result<Child, String> {
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
