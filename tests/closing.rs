//! How sockets end (issue 17): what a client sent before its close is executed, the
//! close code of a violation reaches a client that is still writing, and a socket the
//! node decided to close is released by `closeTimeout` whatever the client does.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn subscribe_all() -> Value {
    json!({"controller":"realtime","action":"subscribe","index":"idx","collection":"col","body":{}})
}

fn publish(seq: usize, body: Value) -> Value {
    json!({"controller":"realtime","action":"publish","index":"idx","collection":"col",
           "requestId": format!("p{seq}"), "body": body})
}

/// 50 publishes with sequence numbers, as masked frames in one buffer.
fn fifty_publishes() -> Vec<u8> {
    (0..50)
        .flat_map(|seq| {
            encode_frame(
                0x80 | TEXT,
                publish(seq, json!({"seq": seq})).to_string().as_bytes(),
                true,
            )
        })
        .collect()
}

/// The sequence numbers a subscriber receives until it has `count` or nothing comes.
async fn receive_sequence(ws: &mut Ws, count: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match ws.next_frame_within(Duration::from_secs(10)).await {
            Ok(Some(Frame::Text(text))) => {
                let n: Value = serde_json::from_str(&text).unwrap();
                if let Some(seq) = n["result"]["_source"]["seq"].as_u64() {
                    seen.push(seq);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => break,
        }
    }
    seen
}

/// The publisher's answers (request ids in order) until the close frame or the end.
async fn answers_until_end(ws: &mut Ws) -> (Vec<String>, Option<Frame>) {
    let mut answers = Vec::new();
    loop {
        match ws.next_frame().await {
            Some(Frame::Text(text)) => {
                let res: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(res["status"], 200, "{res}");
                answers.push(res["requestId"].as_str().unwrap_or_default().to_owned());
            }
            Some(frame @ Frame::Close(..)) => return (answers, Some(frame)),
            Some(_) => {}
            None => return (answers, None),
        }
    }
}

fn in_order(n: usize) -> Vec<u64> {
    (0..n as u64).collect()
}

#[actix_rt::test]
async fn requests_sent_before_a_close_frame_are_executed_and_answered_first() {
    let node = start_node(|_| {}).await;
    let mut subscriber = Ws::connect(node.addr).await;
    assert_eq!(subscriber.request(subscribe_all()).await["status"], 200);
    let mut publisher = Ws::connect(node.addr).await;
    let mut bytes = fifty_publishes();
    bytes.extend(encode_frame(0x80 | CLOSE, &1000u16.to_be_bytes(), true));
    publisher.send_bytes(&bytes).await;

    let (answers, end) = answers_until_end(&mut publisher).await;
    let expected: Vec<String> = (0..50).map(|seq| format!("p{seq}")).collect();
    let mut sorted = answers.clone();
    sorted.sort_by_key(|id| id[1..].parse::<u32>().unwrap_or(0));
    assert_eq!(sorted, expected, "every answer, before the close");
    assert!(
        matches!(end, Some(Frame::Close(Some(1000), _))),
        "the client's close echoed after the answers: {end:?}"
    );
    assert_eq!(receive_sequence(&mut subscriber, 50).await, in_order(50));
    assert_serving(node.addr).await;
}

#[actix_rt::test]
async fn requests_sent_before_a_fin_are_executed() {
    let node = start_node(|_| {}).await;
    let mut subscriber = Ws::connect(node.addr).await;
    assert_eq!(subscriber.request(subscribe_all()).await["status"], 200);
    let mut publisher = Ws::connect(node.addr).await;
    publisher.send_bytes(&fifty_publishes()).await;
    publisher.shutdown_write().await;

    assert_eq!(receive_sequence(&mut subscriber, 50).await, in_order(50));
    // The answers still reach a client that only ended its own side.
    let (answers, end) = answers_until_end(&mut publisher).await;
    assert_eq!(answers.len(), 50);
    assert!(end.is_none(), "no close frame for a client that sent none");
    assert_serving(node.addr).await;
}

/// A client that writes a whole message over the limit before it reads: the node closes
/// with 1009 and reads what the client still sends, so that the close frame is not lost
/// to a reset.
#[actix_rt::test]
async fn the_close_code_of_a_violation_reaches_a_client_still_writing() {
    let node = start_node(|_| {}).await;
    let oversized = encode_frame(0x80 | TEXT, &vec![b' '; 2 << 20], true);
    for run in 0..20 {
        let mut ws = Ws::connect(node.addr).await;
        ws.send_bytes(&oversized).await;
        match ws.next_frame().await {
            Some(Frame::Close(code, reason)) => {
                assert_eq!((code, reason.as_str()), (Some(1009), "message too big"))
            }
            other => panic!("run {run}: {other:?} instead of the 1009 close"),
        }
    }
    assert_serving(node.addr).await;
}

/// A tiny generator, seeded: the same frames on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Between `min` and `min + spread` random bytes.
    fn some_bytes(&mut self, min: usize, spread: u64) -> Vec<u8> {
        let n = min + (self.next() % spread) as usize;
        self.bytes(n)
    }
}

/// Frames that break a rule, followed by more bytes the client sends before it reads:
/// every one of them ends with the node's close frame, never with a reset.
#[actix_rt::test]
async fn fuzzed_violations_end_with_a_close_frame_not_a_reset() {
    let node = start_node(|s| s.server.max_request_size = kuzzle_rt::config::Size(4096)).await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut resets = 0;
    let mut closes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let mut bytes = match rng.next() % 5 {
            // A frame over the size limit.
            0 => encode_frame(0x82, &rng.some_bytes(5000, 20_000), true),
            // Unmasked.
            1 => encode_frame(0x81, b"{}", false),
            // Reserved opcode or RSV bits.
            2 => {
                let first = 0x80 | [3u8, 4, 5, 6, 7, 0x10 | 1, 0x20 | 1][(rng.next() % 7) as usize];
                encode_frame(first, &rng.bytes(100), true)
            }
            // Invalid UTF-8 in a text frame.
            3 => encode_frame(0x81, &[0xC3, 0x28, 0xFF, 0xFE], true),
            // Random bytes.
            _ => rng.some_bytes(64, 4096),
        };
        // What the client keeps sending before it reads.
        bytes.extend(rng.some_bytes(0, 60_000));
        let mut ws = Ws::connect(node.addr).await;
        ws.send_bytes(&bytes).await;
        match ws.next_frame_within(Duration::from_secs(10)).await {
            Ok(Some(Frame::Close(code, _))) => *closes.entry(code).or_insert(0) += 1,
            Ok(None) => resets += 1,
            other => panic!("{other:?} instead of a close frame"),
        }
    }
    assert_eq!(resets, 0, "closes seen: {closes:?}");
    assert_serving(node.addr).await;
}

/// TCP memory (receive and send queues, in bytes) of the sockets on `port`, from `ss`.
fn socket_memory(port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "all", &format!("( sport = :{port} )")])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("skmem:(")
        .skip(1)
        .map(|fields| {
            let fields = fields.split(')').next().unwrap_or_default();
            fields
                .split(',')
                .filter_map(|f| {
                    let (name, value) = f.split_at(f.find(|c: char| c.is_ascii_digit())?);
                    matches!(name, "r" | "w" | "f").then(|| value.parse::<u64>().ok())?
                })
                .sum::<u64>()
        })
        .sum()
}

/// 30 subscribers that never read (a 4 KiB receive buffer) of a room getting 3,000 × 8 KB
/// publishes: the node decides 1011, cannot write the close frame, and releases the
/// sockets at `closeTimeout`, descriptors and kernel buffers included.
#[actix_rt::test]
async fn never_reading_subscribers_are_released_with_their_kernel_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _log) = spawn_binary(dir.path(), &[]);
    let pid = child.id();
    let mut publisher = Ws::connect(addr).await;
    publisher.assert_now_ok().await;
    let fds_before = open_fds(pid);
    let memory_before = socket_memory(addr.port());
    let tcp_before = tcp_memory_pages();
    let mut sleepers = Vec::new();
    for _ in 0..30 {
        let options = WsOptions {
            recv_buffer: Some(4096),
            ..WsOptions::default()
        };
        let mut ws = Ws::connect_with(addr, options).await.unwrap();
        assert_eq!(ws.request(subscribe_all()).await["status"], 200);
        sleepers.push(ws);
    }
    let body = json!({"text": "x".repeat(8000)});
    for batch in 0..30 {
        for i in 0..100 {
            publisher
                .send_json(&publish(batch * 100 + i, body.clone()))
                .await;
        }
        for _ in 0..100 {
            assert_eq!(publisher.next_json().await["status"], 200);
        }
    }
    let memory_peak = socket_memory(addr.port());
    let tcp_peak = tcp_memory_pages();
    assert!(
        memory_peak > memory_before + 30 * 100_000,
        "the sleepers hold the node's send buffers: {memory_before} → {memory_peak}"
    );
    let released = eventually(Duration::from_secs(25), || {
        open_fds(pid) <= fds_before
            && socket_memory(addr.port()) <= memory_before + (memory_peak - memory_before) / 10
    })
    .await;
    let tcp_after = tcp_memory_pages();
    assert!(
        released,
        "descriptors {fds_before} → {}, socket memory {memory_before} → {memory_peak} → {}",
        open_fds(pid),
        socket_memory(addr.port())
    );
    eprintln!("machine-wide TCP memory (pages): {tcp_before} → {tcp_peak} → {tcp_after}");
    publisher.assert_now_ok().await;
    drop(sleepers);
    send_signal(&child, "KILL");
    wait_exit(&mut child);
}
