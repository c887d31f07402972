//! What travels between nodes on Redis pub/sub: everything a receiving node needs to match
//! and to build the exact notification (PROTOCOL.md §7.4–7.5) without asking anyone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::Protocol;

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
}

impl BusMessage {
    pub fn origin(&self) -> &str {
        match self {
            BusMessage::Document { node, .. }
            | BusMessage::Presence { node, .. }
            | BusMessage::Revoke { node, .. } => node,
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
}
