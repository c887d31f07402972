//! What the load tool says to each server it can measure: kuzzle-rt (Kuzzle's protocol) and
//! the reference servers of `bench/peers/` (Node `ws` with a JSON protocol of its own,
//! Socket.IO over its WebSocket transport). Every scenario is written once against `Peer`.
//!
//! Client-side parsing is kept to finding a few fields in the text: a notification's
//! `"sent"` and `"seq"` numbers, and a reply's id.

use std::net::{IpAddr, SocketAddr};

use kuzzle_rt::wsclient::{Client, Connected, Options};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kuzzle,
    /// `bench/peers/ws-server.js`: `{"sub":room,"id"}`, `{"pub":room,"body","id"}`,
    /// answered `{"id","ok":true}`.
    Ws,
    /// `bench/peers/socketio-server.js`: events `sub(room)` and `pub(room, body)` with
    /// acknowledgements; notifications are `n` events.
    SocketIo,
}

impl Dialect {
    pub fn parse(name: &str) -> Option<Dialect> {
        Some(match name {
            "kuzzle" => Dialect::Kuzzle,
            "ws" => Dialect::Ws,
            "socketio" | "socket.io" => Dialect::SocketIo,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Kuzzle => "kuzzle",
            Dialect::Ws => "ws",
            Dialect::SocketIo => "socketio",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Dialect::SocketIo => "/socket.io/?EIO=4&transport=websocket",
            _ => "/",
        }
    }
}

/// One client socket speaking one dialect.
pub struct Peer {
    client: Client,
    dialect: Dialect,
    next_id: u64,
}

/// Where a server's notification carries the publish's clock and sequence number.
pub struct Stamp {
    pub sent_us: u64,
    pub seq: u64,
}

impl Peer {
    pub async fn connect(
        dialect: Dialect,
        addr: SocketAddr,
        source: Option<IpAddr>,
        compression: bool,
    ) -> Result<Peer, String> {
        let offer = [("Sec-WebSocket-Extensions", "permessage-deflate")];
        let options = Options {
            path: dialect.path(),
            headers: if compression { &offer } else { &[] },
            source,
            ..Options::default()
        };
        let client = match Client::connect(addr, options)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?
        {
            Connected::Upgraded(client) => client,
            Connected::Refused(answer) => {
                return Err(format!(
                    "upgrade refused: {}",
                    answer.lines().next().unwrap_or_default()
                ));
            }
        };
        let mut peer = Peer {
            client,
            dialect,
            next_id: 0,
        };
        if dialect == Dialect::SocketIo {
            // Engine.IO's open packet, then the connection to the main namespace.
            let open = peer.next_text().await?;
            if !open.starts_with('0') {
                return Err(format!("expected an Engine.IO open packet, got {open:?}"));
            }
            peer.send("40").await?;
            let connected = peer.next_text().await?;
            if !connected.starts_with("40") {
                return Err(format!(
                    "expected a namespace connection, got {connected:?}"
                ));
            }
        }
        Ok(peer)
    }

    pub async fn send(&mut self, text: &str) -> Result<(), String> {
        self.client.send_text(text).await.map_err(|e| e.to_string())
    }

    /// The next text message; the server's pings (RFC 6455, and Engine.IO's `2`) are
    /// answered on the way.
    pub async fn next_text(&mut self) -> Result<String, String> {
        loop {
            let text = self.client.next_text().await.map_err(|e| e.to_string())?;
            if self.dialect == Dialect::SocketIo && text == "2" {
                self.send("3").await?;
                continue;
            }
            return Ok(text);
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// Subscribes to `room` (a collection for kuzzle-rt) and waits for the answer.
    pub async fn subscribe(&mut self, room: &str) -> Result<(), String> {
        let id = self.new_id("s");
        let (message, reply) = self.subscribe_message(room, &id);
        self.send(&message).await?;
        self.wait_reply(&reply).await
    }

    fn subscribe_message(&mut self, room: &str, id: &str) -> (String, String) {
        match self.dialect {
            Dialect::Kuzzle => (
                json!({"controller": "realtime", "action": "subscribe", "index": "load",
                    "collection": room, "body": {}, "requestId": id})
                .to_string(),
                format!("\"requestId\":\"{id}\""),
            ),
            Dialect::Ws => (
                json!({"sub": room, "id": id}).to_string(),
                format!("\"id\":\"{id}\""),
            ),
            Dialect::SocketIo => {
                let n = self.next_id;
                (format!("42{n}[\"sub\",{}]", json!(room)), format!("43{n}["))
            }
        }
    }

    /// The text of a publish of `body` to `room`, and what its answer contains.
    pub fn publish_message(&mut self, room: &str, body: &Value) -> (String, String) {
        let id = self.new_id("p");
        match self.dialect {
            Dialect::Kuzzle => (
                json!({"controller": "realtime", "action": "publish", "index": "load",
                    "collection": room, "body": body, "requestId": id})
                .to_string(),
                format!("\"requestId\":\"{id}\""),
            ),
            Dialect::Ws => (
                json!({"pub": room, "body": body, "id": id}).to_string(),
                format!("\"id\":\"{id}\""),
            ),
            Dialect::SocketIo => {
                let n = self.next_id;
                (
                    format!("42{n}[\"pub\",{},{body}]", json!(room)),
                    format!("43{n}["),
                )
            }
        }
    }

    /// Publishes and waits for the answer.
    pub async fn publish(&mut self, room: &str, body: &Value) -> Result<(), String> {
        let (message, reply) = self.publish_message(room, body);
        self.send(&message).await?;
        self.wait_reply(&reply).await
    }

    /// Waits for the message that contains `reply`, skipping notifications.
    pub async fn wait_reply(&mut self, reply: &str) -> Result<(), String> {
        loop {
            let text = self.next_text().await?;
            if !self.is_reply(&text, reply) {
                continue;
            }
            if self.dialect == Dialect::Kuzzle && !text.contains("\"status\":200") {
                return Err(format!("the server refused: {text}"));
            }
            return Ok(());
        }
    }

    pub fn is_reply(&self, text: &str, reply: &str) -> bool {
        match self.dialect {
            Dialect::SocketIo => text.starts_with(reply),
            _ => text.contains(reply),
        }
    }

    /// kuzzle-rt's `server:now`, for the request scenario: anonymous, or with `jwt`.
    pub async fn server_now(&mut self, jwt: Option<&str>) -> Result<(), String> {
        let id = self.new_id("n");
        let message = match jwt {
            None => format!(r#"{{"controller":"server","action":"now","requestId":"{id}"}}"#),
            Some(jwt) => json!({"controller": "server", "action": "now", "requestId": id,
                "jwt": jwt})
            .to_string(),
        };
        self.send(&message).await?;
        self.wait_reply(&format!("\"requestId\":\"{id}\"")).await
    }

    /// A kuzzle-rt request (`requestId` added) and its answer, refused unless 200.
    pub async fn call(&mut self, mut request: Value) -> Result<Value, String> {
        let id = self.new_id("c");
        request["requestId"] = json!(id);
        self.send(&request.to_string()).await?;
        loop {
            let text = self.next_text().await?;
            let Ok(answer) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if answer["requestId"] != json!(id) {
                continue;
            }
            if answer["status"] != json!(200) {
                return Err(format!("{request} answered {answer}"));
            }
            return Ok(answer);
        }
    }

    pub fn wire_bytes(&self) -> u64 {
        self.client.wire_bytes
    }
}

/// The stamp a notification carries, if it is one.
pub fn stamp(text: &str) -> Option<Stamp> {
    Some(Stamp {
        sent_us: number_after(text, "\"sent\":")?,
        seq: number_after(text, "\"seq\":")?,
    })
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_each_dialect() {
        let kuzzle = r#"{"status":200,"result":{"_source":{"sent":1234,"seq":7,"text":"x"}}}"#;
        let socketio = r#"42["n",{"result":{"_source":{"sent":99,"seq":0}}}]"#;
        for (text, sent, seq) in [(kuzzle, 1234, 7), (socketio, 99, 0)] {
            let stamp = stamp(text).unwrap();
            assert_eq!((stamp.sent_us, stamp.seq), (sent, seq));
        }
        assert!(stamp(r#"{"status":200,"result":{}}"#).is_none());
    }
}
