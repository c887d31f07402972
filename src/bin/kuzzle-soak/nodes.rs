//! The soak's kuzzle-rt nodes, on default settings, each reaching Redis through a fault
//! proxy of its own (or a Redis Cluster directly).

/// The environment of a node whose Redis is at 127.0.0.1:`port`.
pub fn single(port: u16) -> Vec<(String, String)> {
    vec![
        (
            "kuzzle_services__storage__node__host".into(),
            "127.0.0.1".into(),
        ),
        (
            "kuzzle_services__storage__node__port".into(),
            port.to_string(),
        ),
    ]
}

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::processes::announced_address;

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to a process.
pub fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
}

/// A kuzzle-rt node on default settings but its Redis (`storage`: the environment that
/// names it: its proxy, or the Redis Cluster's members).
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Node {
    pub fn start(binary: &Path, dir: &Path, storage: &[(String, String)]) -> Result<Node, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut child = Command::new(binary)
            .current_dir(dir)
            .env("HOME", dir)
            .env("RUST_LOG", "info")
            .env("kuzzle_server__host", "127.0.0.1")
            .env("kuzzle_server__port", "0")
            .env("kuzzle_services__storage__backend", "redis")
            .envs(storage.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let addr = announced_address(
            &mut child,
            Some(dir.join("node.log")),
            Duration::from_secs(30),
        )?;
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
