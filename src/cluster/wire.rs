//! What travels between nodes on Redis pub/sub: everything a receiving node needs to match
//! and to build the exact notification (PROTOCOL.md §7.4–7.5) without asking anyone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::StreamId;
use crate::protocol::Protocol;

/// A collection's message as the history keeps it: `<origin> <seq> <json>`, where `origin`
/// names one sequence of one process (its incarnation and a chain number, `inc.chain`)
/// and `seq` counts that sequence's messages from 1. On pub/sub the entry comes after its
/// history id: `<id> <origin> <seq> <json>` (`history::PUBLISH_SCRIPT`).
pub fn entry(origin: &str, seq: u64, json: &str) -> String {
    format!("{origin} {seq} {json}")
}

/// A sequenced message, read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Sequenced<'a> {
    pub origin: &'a str,
    pub seq: u64,
    pub json: &'a [u8],
}

/// Parses a history entry; None when it is not one.
pub fn parse_entry(bytes: &[u8]) -> Option<Sequenced<'_>> {
    let (origin, rest) = split_word(bytes)?;
    let (seq, json) = split_word(rest)?;
    Some(Sequenced {
        origin: std::str::from_utf8(origin).ok()?,
        seq: std::str::from_utf8(seq).ok()?.parse().ok()?,
        json,
    })
}

/// Parses a message as pub/sub delivers it: its history id, then the entry.
pub fn parse_published(bytes: &[u8]) -> Option<(StreamId, Sequenced<'_>)> {
    let (id, entry) = split_word(bytes)?;
    let id = StreamId::parse(std::str::from_utf8(id).ok()?)?;
    Some((id, parse_entry(entry)?))
}

fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum BusMessage {
    /// A `realtime:publish`, sent on its collection's channel.
    #[serde(rename_all = "camelCase")]
    Document {
        node: String,
        index: String,
        collection: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        source: Value,
        request_id: String,
        timestamp: u64,
        volatile: Option<Value>,
        protocol: WireProtocol,
    },
    /// Someone entered or left a room, with the cluster-wide count after it.
    #[serde(rename_all = "camelCase")]
    Presence {
        node: String,
        room: String,
        index: String,
        collection: String,
        entered: bool,
        action: String,
        count: usize,
        timestamp: u64,
        volatile: Option<Value>,
        protocol: WireProtocol,
    },
    /// Tokens revoked on `node`: the others end their connections linked to them.
    Revoke { node: String, tokens: Vec<String> },
    /// Users, roles or profiles changed on `node`: the others' caches learn the store's new
    /// security version (a node that misses it reads the version at its next heartbeat).
    Security { node: String, version: u64 },
}

impl BusMessage {
    pub fn origin(&self) -> &str {
        match self {
            BusMessage::Document { node, .. }
            | BusMessage::Presence { node, .. }
            | BusMessage::Revoke { node, .. }
            | BusMessage::Security { node, .. } => node,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WireProtocol {
    Websocket,
    Http,
}

impl From<Protocol> for WireProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Websocket => WireProtocol::Websocket,
            Protocol::Http => WireProtocol::Http,
        }
    }
}

impl From<WireProtocol> for Protocol {
    fn from(p: WireProtocol) -> Self {
        match p {
            WireProtocol::Websocket => Protocol::Websocket,
            WireProtocol::Http => Protocol::Http,
        }
    }
}

/// The action names a presence may carry; anything else from the wire is refused.
pub fn presence_action(name: &str) -> Option<&'static str> {
    ["subscribe", "join", "unsubscribe"]
        .into_iter()
        .find(|a| *a == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_round_trip_and_are_tagged() {
        let m = BusMessage::Revoke {
            node: "n".into(),
            tokens: vec!["t".into()],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"t":"revoke","node":"n","tokens":["t"]}"#);
        let doc: BusMessage = serde_json::from_value(json!({
            "t": "document", "node": "a", "index": "i", "collection": "c",
            "source": {"x": 1}, "requestId": "r", "timestamp": 5, "volatile": null,
            "protocol": "http"
        }))
        .unwrap();
        assert!(matches!(
            doc,
            BusMessage::Document {
                id: None,
                protocol: WireProtocol::Http,
                ..
            }
        ));
        assert_eq!(doc.origin(), "a");
        assert_eq!(presence_action("join"), Some("join"));
        assert_eq!(presence_action("publish"), None);
    }

    #[test]
    fn sequenced_messages_carry_id_origin_and_sequence() {
        let text = entry("abc.3", 42, r#"{"t":"x"}"#);
        assert_eq!(text, r#"abc.3 42 {"t":"x"}"#);
        let published = format!("17-2 {text}");
        let (id, m) = parse_published(published.as_bytes()).unwrap();
        assert_eq!(id, StreamId(17, 2));
        assert_eq!(
            m,
            Sequenced {
                origin: "abc.3",
                seq: 42,
                json: br#"{"t":"x"}"#
            }
        );
        assert_eq!(parse_entry(b"abc.3 x {}"), None);
        assert_eq!(parse_entry(b"nospace"), None);
        assert_eq!(parse_published(b"17 abc 1 {}").unwrap().0, StreamId(17, 0));
        assert!(parse_published(b"a-b abc 1 {}").is_none());
    }
}
