//! The scenarios. Each returns its figures as a JSON object (`report` prints them as
//! tables). Timings come from one clock in this process: a publish carries the
//! microsecond it was sent at, and each delivery is timed when its text is read.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::dialect::{Dialect, Peer, stamp};
use crate::progress;

/// The measured server process, when its pid is known: memory and CPU from `/proc`.
#[derive(Clone, Copy)]
pub struct Probe {
    pub pid: Option<u32>,
}

impl Probe {
    pub fn measured(&self) -> bool {
        self.pid.is_some()
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> u64 {
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

    /// CPU time used so far (user + system, all threads), in milliseconds.
    pub fn cpu_ms(&self) -> u64 {
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

/// The server under measurement and how to reach it.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub dialect: Dialect,
    pub compression: bool,
    /// Local addresses the sockets are spread over.
    pub sources: Vec<IpAddr>,
    pub probe: Probe,
}

impl Target {
    pub async fn connect(&self, i: usize) -> Result<Peer, String> {
        let source = (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()]);
        Peer::connect(self.dialect, self.addr, source, self.compression).await
    }

    /// Opens `n` sockets, `CONNECTING_AT_ONCE` at a time, each subscribed to `room(i)`.
    pub async fn open(
        &self,
        n: usize,
        what: &str,
        room: impl Fn(usize) -> String,
    ) -> Result<Vec<Peer>, String> {
        const CONNECTING_AT_ONCE: usize = 250;
        let mut peers = Vec::with_capacity(n);
        let mut reported = 0;
        while peers.len() < n {
            let first = peers.len();
            let batch = (first..n.min(first + CONNECTING_AT_ONCE)).map(|i| {
                let target = self.clone();
                let room = room(i);
                tokio::spawn(async move {
                    let mut peer = target.connect(i).await?;
                    peer.subscribe(&room).await?;
                    Ok::<_, String>(peer)
                })
            });
            for opened in join_all(batch).await {
                peers.push(opened.map_err(|e| e.to_string())??);
            }
            if peers.len() - reported >= 2000 || peers.len() == n {
                reported = peers.len();
                progress(&format!("{} / {n} {what} open", peers.len()));
            }
        }
        Ok(peers)
    }
}

fn clock() -> Instant {
    static CLOCK: OnceLock<Instant> = OnceLock::new();
    *CLOCK.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    clock().elapsed().as_micros() as u64
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn kib(bytes: f64) -> f64 {
    (bytes / 102.4).round() / 10.0
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 104857.6).round() / 10.0
}

/// Idle sockets, each subscribed to one room: resident memory per socket, then how much of
/// it the server gives back within `release_wait` (10 s by default) of every socket closing.
pub async fn idle(target: &Target, n: usize, release_wait: Duration) -> Result<Value, String> {
    let probe = target.probe;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = probe.rss();
    let started = Instant::now();
    let mut peers = target.open(n, "idle sockets", |_| "idle".into()).await?;
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = probe.rss();
    // A sample of the sockets still answers.
    let step = (n / 100).max(1);
    let mut answering = 0;
    let mut sampled = 0;
    for peer in peers.iter_mut().step_by(step) {
        sampled += 1;
        if peer.subscribe("idle-sample").await.is_ok() {
            answering += 1;
        }
    }
    drop(peers);
    progress(&format!(
        "idle sockets closed; watching the memory for {} s",
        release_wait.as_secs()
    ));
    let closed = Instant::now();
    let mut rss_closed = probe.rss();
    while closed.elapsed() < release_wait {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_closed = probe.rss();
    }
    let grown = rss_open.saturating_sub(rss_before);
    let given_back = rss_open.saturating_sub(rss_closed);
    Ok(json!({
        "sockets": n,
        "sampled": sampled,
        "answering": answering,
        "open_seconds": (open_s * 100.0).round() / 100.0,
        "rss_before_mib": mib(rss_before),
        "rss_open_mib": mib(rss_open),
        "release_wait_seconds": release_wait.as_secs(),
        "rss_closed_mib": mib(rss_closed),
        "kib_per_socket": kib(grown as f64 / n.max(1) as f64),
        "given_back_percent": if grown == 0 { 0.0 } else {
            (given_back as f64 * 1000.0 / grown as f64).round() / 10.0
        },
    }))
}

/// kuzzle-rt only: `clients` sockets each sending `requests` `server:now` one after the
/// other, anonymous or with `jwt`.
pub async fn requests(
    target: &Target,
    clients: usize,
    requests: usize,
    jwt: Option<&str>,
) -> Result<Value, String> {
    let mut peers = Vec::with_capacity(clients);
    for i in 0..clients {
        peers.push(target.connect(i).await?);
    }
    let who = if jwt.is_some() {
        "with a token"
    } else {
        "anonymous"
    };
    progress(&format!("{clients} clients x {requests} requests, {who}"));
    let started = Instant::now();
    let runs = peers.into_iter().map(|mut peer| {
        let jwt = jwt.map(str::to_owned);
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let sent = Instant::now();
                peer.server_now(jwt.as_deref()).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            Ok::<_, String>(latencies)
        })
    });
    let mut latencies = Vec::with_capacity(clients * requests);
    for run in join_all(runs).await {
        latencies.extend(run.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(json!({
        "clients": clients,
        "requests": latencies.len(),
        "per_second": (latencies.len() as f64 / elapsed).round(),
        "p50_ms": ms(percentile(&latencies, 50.0)),
        "p99_ms": ms(percentile(&latencies, 99.0)),
        "max_ms": ms(latencies.last().copied().unwrap_or(0)),
    }))
}

/// How a fan-out publishes.
#[derive(Clone, Copy)]
pub enum Pace {
    /// One publish every so often, each waiting for its answer.
    Paced(Duration),
    /// As fast as answers come, with this many publishes in flight.
    Burst(usize),
}

/// What a subscriber saw of one fan-out.
struct Received {
    peer: Peer,
    /// Latency per publish, by sequence number.
    latencies: Vec<u64>,
    last_at_us: u64,
    wire_bytes: u64,
}

/// `subscribers` already in one room; `publishes` publishes to it from a socket of
/// `publisher`'s. Deliveries per second, first delivery of each publish, latency of all,
/// the server's CPU per delivery.
pub async fn fan_out(
    target: &Target,
    publisher: &Target,
    subscribers: Vec<Peer>,
    room: &str,
    publishes: usize,
    pace: Pace,
    document_bytes: usize,
) -> Result<(Value, Vec<Peer>), String> {
    let count = subscribers.len();
    let receivers: Vec<_> = subscribers
        .into_iter()
        .map(|mut peer| {
            tokio::spawn(async move {
                let mut latencies = vec![u64::MAX; publishes];
                let mut got = 0;
                let mut last_at_us = 0;
                let wire_before = peer.wire_bytes();
                while got < publishes {
                    let text = peer.next_text().await?;
                    let Some(stamp) = stamp(&text) else { continue };
                    let now = now_us();
                    if let Some(slot) = latencies.get_mut(stamp.seq as usize) {
                        *slot = now.saturating_sub(stamp.sent_us);
                        got += 1;
                        last_at_us = now;
                    }
                }
                let wire_bytes = peer.wire_bytes() - wire_before;
                Ok::<_, String>(Received {
                    peer,
                    latencies,
                    last_at_us,
                    wire_bytes,
                })
            })
        })
        .collect();
    let mut sender = publisher.connect(usize::MAX / 2).await?;
    let padding = padding_rows(document_bytes);
    let room_name = room.to_owned();
    let cpu_before = target.probe.cpu_ms();
    let started_us = now_us();
    let publishing = tokio::spawn(async move {
        // Each paced publish's round trip (request to answer), µs.
        let mut answers = Vec::new();
        let body = |seq: usize| {
            json!({"sent": now_us(), "seq": seq,
                "text": "a notification of a realistic size, with a few fields", "rows": padding})
        };
        match pace {
            Pace::Paced(interval) => {
                let start = Instant::now();
                for seq in 0..publishes {
                    let due = start + interval * seq as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let asked = Instant::now();
                    sender.publish(&room_name, &body(seq)).await?;
                    answers.push(asked.elapsed().as_micros() as u64);
                    if (seq + 1) % (publishes / 4).max(1) == 0 {
                        progress(&format!("{} / {publishes} publishes", seq + 1));
                    }
                }
            }
            Pace::Burst(window) => {
                let mut replies = std::collections::VecDeque::new();
                let mut sent = 0;
                while sent < publishes || !replies.is_empty() {
                    while sent < publishes && replies.len() < window {
                        let (message, reply) = sender.publish_message(&room_name, &body(sent));
                        sender.send(&message).await?;
                        replies.push_back(reply);
                        sent += 1;
                    }
                    let text = sender.next_text().await?;
                    if let Some(i) = replies.iter().position(|r| sender.is_reply(&text, r)) {
                        replies.remove(i);
                    }
                }
                progress(&format!("{publishes} publishes sent"));
            }
        }
        Ok::<_, String>((sender, answers))
    });
    let received = join_all(receivers).await;
    let cpu_ms = target.probe.cpu_ms().saturating_sub(cpu_before);
    let (_sender, mut answers) = publishing.await.map_err(|e| e.to_string())??;
    answers.sort_unstable();
    let mut all = Vec::with_capacity(count * publishes);
    let mut first = vec![u64::MAX; publishes];
    let mut last_at_us = started_us;
    let mut wire_bytes = 0;
    let mut peers = Vec::with_capacity(count);
    for result in received {
        let seen = result.map_err(|e| e.to_string())??;
        for (seq, &latency) in seen.latencies.iter().enumerate() {
            first[seq] = first[seq].min(latency);
        }
        all.extend(seen.latencies);
        last_at_us = last_at_us.max(seen.last_at_us);
        wire_bytes += seen.wire_bytes;
        peers.push(seen.peer);
    }
    all.sort_unstable();
    first.sort_unstable();
    let deliveries = all.len().max(1);
    let seconds = (last_at_us - started_us) as f64 / 1e6;
    let figures = json!({
        "subscribers": count,
        "publishes": publishes,
        "pace": match pace {
            Pace::Paced(interval) => format!("{:.0}/s", 1.0 / interval.as_secs_f64()),
            Pace::Burst(window) => format!("burst ({window} in flight)"),
        },
        "deliveries": all.len(),
        "deliveries_per_second": (all.len() as f64 / seconds.max(1e-6)).round(),
        "bytes_on_wire": (wire_bytes as f64 / deliveries as f64).round(),
        "first_p50_ms": ms(percentile(&first, 50.0)),
        "first_max_ms": ms(first.last().copied().unwrap_or(0)),
        "p50_ms": ms(percentile(&all, 50.0)),
        "p99_ms": ms(percentile(&all, 99.0)),
        "max_ms": ms(all.last().copied().unwrap_or(0)),
        "publish_answer_p50_ms": if answers.is_empty() { Value::Null } else { json!(ms(percentile(&answers, 50.0))) },
        "publish_answer_p99_ms": if answers.is_empty() { Value::Null } else { json!(ms(percentile(&answers, 99.0))) },
        "cpu_us_per_delivery": if target.probe.measured() {
            json!((cpu_ms as f64 * 10_000.0 / deliveries as f64).round() / 10.0)
        } else {
            Value::Null
        },
    });
    Ok((figures, peers))
}

/// Sensor-like records making about `bytes` of JSON (none for 0).
fn padding_rows(bytes: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut size = 0;
    while size < bytes {
        let row = json!({"sensor": format!("s-{}", rows.len()), "value": rows.len() as f64 * 1.5, "ok": true});
        size += row.to_string().len() + 1;
        rows.push(row);
    }
    rows
}

/// `cycles` times: `per_cycle` sockets connect, subscribe to rooms of their own, and
/// close. Resident memory after each cycle: it must level off.
pub async fn churn(target: &Target, cycles: usize, per_cycle: usize) -> Result<Value, String> {
    let probe = target.probe;
    let rss_before = probe.rss();
    let mut after = Vec::with_capacity(cycles);
    for cycle in 0..cycles {
        let peers = target
            .open(per_cycle, "churning sockets", |i| {
                format!("churn-{cycle}-{}", i % 16)
            })
            .await?;
        drop(peers);
        // Time for the server to see every close.
        tokio::time::sleep(Duration::from_millis(500)).await;
        after.push(probe.rss());
    }
    let half = after.get(cycles / 2).copied().unwrap_or(0);
    let last = after.last().copied().unwrap_or(0);
    Ok(json!({
        "cycles": cycles,
        "sockets_per_cycle": per_cycle,
        "rss_before_mib": mib(rss_before),
        "rss_after_first_mib": mib(after.first().copied().unwrap_or(0)),
        "rss_after_half_mib": mib(half),
        "rss_after_last_mib": mib(last),
        "growth_second_half_mib": ((last as f64 - half as f64) / 104857.6).round() / 10.0,
    }))
}

/// A token for the requests scenario: the first administrator is created (anonymous may,
/// on a new store) and logs in.
pub async fn admin_token(target: &Target) -> Result<String, String> {
    let mut peer = target.connect(0).await?;
    let credentials = json!({"username": "load-admin", "password": "load-password"});
    peer.call(
        json!({"controller": "security", "action": "createFirstAdmin",
        "_id": "load-admin", "body": {"content": {}, "credentials": {"local": credentials}}}),
    )
    .await?;
    let answer = peer
        .call(
            json!({"controller": "auth", "action": "login", "strategy": "local",
            "body": credentials}),
        )
        .await?;
    answer["result"]["jwt"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("login answered no jwt: {answer}"))
}
