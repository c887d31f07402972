//! Test helpers: a real node on 127.0.0.1:0, a raw WebSocket client that can send any
//! frame (bad ones included), and small HTTP helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kuzzle_rt::config::Settings;
use kuzzle_rt::server::{self, RunningNode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// Settings for tests: loopback, a free port, and nothing else changed.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings
}

/// Starts a node in this test's actix system.
pub async fn start_node(configure: impl FnOnce(&mut Settings)) -> RunningNode {
    let mut settings = test_settings();
    configure(&mut settings);
    server::start(settings).await.expect("node starts")
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Continuation(Vec<u8>),
}

pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;
pub const CONTINUATION: u8 = 0;
pub const CLOSE: u8 = 8;
pub const PING: u8 = 9;

pub struct Ws {
    stream: TcpStream,
    buf: BytesMut,
    pub handshake: String,
    next_id: u64,
}

pub struct WsOptions<'a> {
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// A small SO_RCVBUF makes a client that stops reading fill up quickly.
    pub recv_buffer: Option<u32>,
}

impl Default for WsOptions<'_> {
    fn default() -> Self {
        WsOptions {
            path: "/",
            headers: &[],
            recv_buffer: None,
        }
    }
}

impl Ws {
    pub async fn connect(addr: SocketAddr) -> Ws {
        Self::connect_with(addr, WsOptions::default())
            .await
            .expect("upgrade accepted")
    }

    /// Err carries the raw HTTP answer when the upgrade is refused.
    pub async fn connect_with(addr: SocketAddr, options: WsOptions<'_>) -> Result<Ws, String> {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.unwrap();
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            options.path
        );
        for (k, v) in options.headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
                .await
                .expect("handshake answer")
                .unwrap();
            if n == 0 {
                return Err(String::from_utf8_lossy(&buf).into_owned());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            // Read the rest of the refusal for the caller to inspect.
            let _ =
                tokio::time::timeout(Duration::from_millis(300), stream.read_buf(&mut buf)).await;
            return Err(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.advance(head_end);
        Ok(Ws {
            stream,
            buf,
            handshake: head,
            next_id: 0,
        })
    }

    /// Writes one frame exactly as given (masked unless told otherwise).
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, TEXT, text.as_bytes(), true).await;
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
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(Some(frame));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    fn parse_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
        if b.len() < header + len {
            return None;
        }
        self.buf.advance(header);
        let payload = self.buf.split_to(len).to_vec();
        Some(match opcode {
            TEXT => Frame::Text(String::from_utf8(payload).expect("server text is UTF-8")),
            BINARY => Frame::Binary(payload),
            CONTINUATION => Frame::Continuation(payload),
            CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                Frame::Close(
                    code,
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned(),
                )
            }
            PING => Frame::Ping(payload),
            10 => Frame::Pong(payload),
            other => panic!("unexpected opcode {other}"),
        })
    }

    /// The next text message as JSON; PINGs are answered, PONGs skipped.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next_frame().await {
                Some(Frame::Text(t)) => {
                    return serde_json::from_str(&t).expect("server sends JSON");
                }
                Some(Frame::Ping(p)) => self.send_frame(true, 10, &p, true).await,
                Some(Frame::Pong(_)) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
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

    pub async fn close(mut self) {
        self.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true)
            .await;
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
/// home directory). Returns the child and the address it announced.
pub fn spawn_binary(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kuzzle-rt"))
        .current_dir(dir)
        .env("HOME", dir)
        .env("kuzzle_server__host", "127.0.0.1")
        .env("kuzzle_server__port", "0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
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
    (child, addr.parse().unwrap())
}

pub fn send_signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
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
