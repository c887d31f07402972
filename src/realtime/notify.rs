//! Notification payloads (PROTOCOL.md §7.4–7.6). Each is serialised once without its
//! `room`; a channel only appends `,"room":"<channel>"}` to the shared prefix.

use bytestring::ByteString;
use serde_json::{Map, Value};

use crate::protocol::Protocol;

/// A serialised notification, waiting for its `room`.
pub struct Prefix(String);

impl Prefix {
    fn new(fields: Map<String, Value>) -> Prefix {
        let mut text = Value::Object(fields).to_string();
        text.pop(); // the closing brace; `for_room` puts it back after `room`
        Prefix(text)
    }

    pub fn for_room(&self, room: &str) -> ByteString {
        let mut text = String::with_capacity(self.0.len() + room.len() + 12);
        text.push_str(&self.0);
        text.push_str(",\"room\":");
        text.push_str(&Value::String(room.to_owned()).to_string());
        text.push('}');
        ByteString::from(text)
    }
}

/// What a publish carries into its notifications.
pub struct Published<'a> {
    pub node: &'a str,
    pub index: &'a str,
    pub collection: &'a str,
    pub id: Option<&'a str>,
    pub source: &'a Value,
    pub request_id: &'a str,
    pub timestamp: u64,
    pub volatile: Option<&'a Value>,
    pub protocol: Protocol,
}

pub fn document(p: &Published<'_>) -> Prefix {
    let mut result = Map::new();
    if let Some(id) = p.id {
        result.insert("_id".into(), id.into());
    }
    result.insert("_source".into(), p.source.clone());
    let mut m = Map::new();
    m.insert("type".into(), "document".into());
    m.insert("status".into(), 200.into());
    m.insert("action".into(), "publish".into());
    m.insert("scope".into(), "in".into());
    m.insert("result".into(), Value::Object(result));
    m.insert("node".into(), p.node.into());
    m.insert("event".into(), "publish".into());
    m.insert("requestId".into(), p.request_id.into());
    m.insert("timestamp".into(), p.timestamp.into());
    m.insert(
        "volatile".into(),
        p.volatile.cloned().unwrap_or(Value::Null),
    );
    m.insert("index".into(), p.index.into());
    m.insert("collection".into(), p.collection.into());
    m.insert("controller".into(), "realtime".into());
    m.insert("protocol".into(), p.protocol.name().into());
    Prefix::new(m)
}

/// Someone entered (`in`, on subscribe or join) or left (`out`) a room.
pub struct UserEvent<'a> {
    pub node: &'a str,
    pub entered: bool,
    pub action: &'a str,
    pub count: usize,
    pub timestamp: u64,
    pub volatile: Option<&'a Value>,
    pub index: &'a str,
    pub collection: &'a str,
    pub protocol: Protocol,
}

pub fn user(e: &UserEvent<'_>) -> Prefix {
    let mut m = Map::new();
    m.insert("type".into(), "user".into());
    m.insert("status".into(), 200.into());
    m.insert("user".into(), (if e.entered { "in" } else { "out" }).into());
    m.insert("result".into(), serde_json::json!({"count": e.count}));
    m.insert("node".into(), e.node.into());
    m.insert("timestamp".into(), e.timestamp.into());
    m.insert(
        "volatile".into(),
        e.volatile.cloned().unwrap_or(Value::Null),
    );
    m.insert("index".into(), e.index.into());
    m.insert("collection".into(), e.collection.into());
    m.insert("controller".into(), "realtime".into());
    m.insert("action".into(), e.action.into());
    m.insert("protocol".into(), e.protocol.name().into());
    Prefix::new(m)
}

/// The server notification sent to a connection whose token expired or was revoked.
pub fn token_expired(node: &str) -> ByteString {
    let mut m = Map::new();
    m.insert("status".into(), 200.into());
    m.insert(
        "info".into(),
        "This is an automated server notification".into(),
    );
    m.insert("message".into(), "Authentication Token Expired".into());
    m.insert("type".into(), "TokenExpired".into());
    m.insert("node".into(), node.into());
    Prefix::new(m).for_room("kuzzle:notification:server")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_notification_has_the_documented_order() {
        let source =
            json!({"text": "hi", "_kuzzle_info": {"author": "-1", "createdAt": 1700000000000u64}});
        let volatile = json!({"sdkInstanceId": "s"});
        let n = document(&Published {
            node: "knode-a-b-1",
            index: "idx",
            collection: "col",
            id: Some("m1"),
            source: &source,
            request_id: "r",
            timestamp: 1700000000000,
            volatile: Some(&volatile),
            protocol: Protocol::Websocket,
        });
        assert_eq!(
            &*n.for_room("abc-411"),
            r#"{"type":"document","status":200,"action":"publish","scope":"in","result":{"_id":"m1","_source":{"text":"hi","_kuzzle_info":{"author":"-1","createdAt":1700000000000}}},"node":"knode-a-b-1","event":"publish","requestId":"r","timestamp":1700000000000,"volatile":{"sdkInstanceId":"s"},"index":"idx","collection":"col","controller":"realtime","protocol":"websocket","room":"abc-411"}"#
        );
    }

    #[test]
    fn token_expired_is_exact() {
        assert_eq!(
            &*token_expired("knode-a-b-1"),
            r#"{"status":200,"info":"This is an automated server notification","message":"Authentication Token Expired","type":"TokenExpired","node":"knode-a-b-1","room":"kuzzle:notification:server"}"#
        );
    }

    #[test]
    fn user_notification_order() {
        let n = user(&UserEvent {
            node: "n",
            entered: true,
            action: "subscribe",
            count: 2,
            timestamp: 5,
            volatile: None,
            index: "i",
            collection: "c",
            protocol: Protocol::Websocket,
        });
        assert_eq!(
            &*n.for_room("x-111"),
            r#"{"type":"user","status":200,"user":"in","result":{"count":2},"node":"n","timestamp":5,"volatile":null,"index":"i","collection":"c","controller":"realtime","action":"subscribe","protocol":"websocket","room":"x-111"}"#
        );
    }
}
