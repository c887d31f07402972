//! The soak's clients: publishers sending numbered messages, subscribers recording what
//! they get, and sockets whose token is revoked on another node.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kuzzle_rt::wsclient::{Client, Connected, Options};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const INDEX: &str = "soak";
pub const COLLECTION: &str = "numbered";

/// A WebSocket to a node, request by request.
pub struct Session {
    client: Client,
    next: u64,
}

impl Session {
    pub async fn open(addr: SocketAddr) -> Option<Session> {
        let connect = Client::connect(addr, Options::default());
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(Connected::Upgraded(client))) => Some(Session { client, next: 0 }),
            _ => None,
        }
    }

    /// Sends `request` and returns its answer; None once the socket is gone. What else
    /// arrives meanwhile goes to `other`.
    pub async fn request(
        &mut self,
        mut request: Value,
        other: &mut impl FnMut(Value),
    ) -> Option<Value> {
        self.next += 1;
        let id = format!("r{}", self.next);
        request["requestId"] = json!(id);
        self.client.send_text(&request.to_string()).await.ok()?;
        loop {
            let message = self.next_message().await?;
            if message["requestId"] == id.as_str() {
                return Some(message);
            }
            other(message);
        }
    }

    pub async fn next_message(&mut self) -> Option<Value> {
        let text = self.client.next_text().await.ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// What one publisher sent.
pub struct Publisher {
    pub id: u32,
    pub node: usize,
    /// seq → when it was sent, and whether it was answered 200.
    pub sent: Mutex<Vec<(Instant, bool)>>,
    /// The marker was answered.
    pub finished: AtomicBool,
}

/// Publishes `{"p": id, "s": seq}` every `every` on `addr` until `stop`, then a marker.
pub async fn publish(addr: SocketAddr, me: Arc<Publisher>, every: Duration, stop: Arc<AtomicBool>) {
    let Some(mut session) = Session::open(addr).await else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        let body = if stop.load(Ordering::Acquire) {
            json!({"p": me.id, "marker": true})
        } else {
            json!({"p": me.id, "s": seq})
        };
        let marker = body.get("marker").is_some();
        let sent = Instant::now();
        if !marker {
            me.sent.lock().push((sent, false));
        }
        let request = json!({"controller": "realtime", "action": "publish",
            "index": INDEX, "collection": COLLECTION, "body": body});
        let Some(answer) = session.request(request, &mut |_| {}).await else {
            return; // its node went
        };
        let ok = answer["status"] == 200;
        if marker {
            me.finished.store(ok, Ordering::Release);
            if ok {
                return;
            }
            continue;
        }
        if let Some(entry) = me.sent.lock().get_mut(seq as usize) {
            entry.1 = ok;
        }
        seq += 1;
    }
}

/// What one subscriber got.
#[derive(Default)]
pub struct Subscriber {
    pub node: usize,
    /// When its subscribe was answered.
    pub since: Mutex<Option<Instant>>,
    /// (publisher, seq), in arrival order, with when it arrived.
    pub got: Mutex<Vec<(u32, u64, Instant)>>,
    pub markers: Mutex<HashSet<u32>>,
    /// The socket closed (its node went, or the node closed it).
    pub closed: AtomicBool,
    /// When it closed.
    pub closed_at: Mutex<Option<Instant>>,
    /// A TokenExpired arrived.
    pub told: AtomicBool,
    /// For a revoked socket: when the logout on another node was answered.
    pub revoked: Mutex<Option<Instant>>,
}

/// Subscribes to every numbered message (with `jwt`, when given: the socket's token) and
/// records what arrives until the socket goes.
pub async fn subscribe(addr: SocketAddr, me: Arc<Subscriber>, jwt: Option<String>) {
    let Some(mut session) = Session::open(addr).await else {
        me.closed.store(true, Ordering::Release);
        return;
    };
    let mut request = json!({"controller": "realtime", "action": "subscribe",
        "index": INDEX, "collection": COLLECTION, "body": {}, "users": "none"});
    if let Some(jwt) = jwt {
        request["jwt"] = json!(jwt);
    }
    let record = |message: Value| note(&me, message);
    let mut record = record;
    match session.request(request, &mut record).await {
        Some(answer) if answer["status"] == 200 => *me.since.lock() = Some(Instant::now()),
        _ => {
            me.closed.store(true, Ordering::Release);
            return;
        }
    }
    while let Some(message) = session.next_message().await {
        note(&me, message);
    }
    *me.closed_at.lock() = Some(Instant::now());
    me.closed.store(true, Ordering::Release);
}

fn note(me: &Subscriber, message: Value) {
    if message["type"] == "TokenExpired" {
        me.told.store(true, Ordering::Release);
        return;
    }
    if message["type"] != "document" {
        return;
    }
    let source = &message["result"]["_source"];
    let Some(publisher) = source["p"].as_u64() else {
        return;
    };
    if source["marker"] == true {
        me.markers.lock().insert(publisher as u32);
    } else if let Some(seq) = source["s"].as_u64() {
        me.got.lock().push((publisher as u32, seq, Instant::now()));
    }
}

/// Logs in on `addr` as the soak's user; the token, when the node could check the password.
pub async fn login(addr: SocketAddr) -> Option<String> {
    let mut session = Session::open(addr).await?;
    let answer = session
        .request(
            json!({"controller": "auth", "action": "login", "strategy": "local",
                "body": {"username": USER, "password": PASSWORD}}),
            &mut |_| {},
        )
        .await?;
    answer["result"]["jwt"].as_str().map(str::to_owned)
}

/// Revokes `jwt` on `addr`; true once answered 200.
pub async fn logout(addr: SocketAddr, jwt: &str) -> bool {
    let Some(mut session) = Session::open(addr).await else {
        return false;
    };
    let answer = session
        .request(
            json!({"controller": "auth", "action": "logout", "jwt": jwt}),
            &mut |_| {},
        )
        .await;
    answer.is_some_and(|a| a["status"] == 200)
}

pub const USER: &str = "soak";
pub const PASSWORD: &str = "soak-password";

/// The soak's administrator; anonymous keeps its rights (no reset).
pub async fn create_user(addr: SocketAddr) -> Result<(), String> {
    let mut session = Session::open(addr).await.ok_or("cannot connect")?;
    let answer = session
        .request(
            json!({"controller": "security", "action": "createFirstAdmin", "_id": USER,
                "reset": false,
                "body": {"credentials": {"local": {"username": USER, "password": PASSWORD}}}}),
            &mut |_| {},
        )
        .await
        .ok_or("the node closed the socket")?;
    if answer["status"] != 200 {
        return Err(format!("createFirstAdmin: {answer}"));
    }
    Ok(())
}
