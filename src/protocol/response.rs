//! The response envelope (PROTOCOL.md §3.3).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::request::{Request, new_request_id};

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct EmptyObject {}

/// One response, in the recommended key order. `room` is appended only for WebSocket.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<Value>,
    pub controller: Option<String>,
    pub error: Option<ApiError>,
    pub headers: EmptyObject,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Value>,
    pub node: Arc<str>,
    #[serde(rename = "requestId")]
    pub request_id: String,
    pub result: Value,
    pub status: u16,
    pub volatile: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

impl Response {
    /// The response to `request`: its result on success, its error otherwise.
    pub fn to_request(
        node: &Arc<str>,
        request: &Request,
        outcome: Result<Value, ApiError>,
    ) -> Self {
        let (result, error) = match outcome {
            Ok(result) => (result, None),
            Err(error) => (Value::Null, Some(error)),
        };
        Self::with_result_and_error(node, request, result, error)
    }

    /// A response that carries both a result and an error (`server:healthCheck` when red).
    pub fn with_result_and_error(
        node: &Arc<str>,
        request: &Request,
        result: Value,
        error: Option<ApiError>,
    ) -> Self {
        let status = error.as_ref().map_or(200, ApiError::status);
        Response {
            action: non_empty(&request.action),
            collection: request.args.get("collection").cloned(),
            controller: non_empty(&request.controller),
            error,
            headers: EmptyObject {},
            index: request.args.get("index").cloned(),
            node: node.clone(),
            request_id: request.request_id.clone(),
            result,
            status,
            volatile: request.volatile.clone(),
            room: None,
        }
    }

    /// A transport-level error (bad JSON, rate limit, envelope): controller, action and
    /// volatile are null; `room` and `requestId` are the client's id when readable (CN-16).
    pub fn transport_error(
        node: &Arc<str>,
        client_request_id: Option<String>,
        error: ApiError,
    ) -> Self {
        Response {
            action: None,
            collection: None,
            controller: None,
            status: error.status(),
            error: Some(error),
            headers: EmptyObject {},
            index: None,
            node: node.clone(),
            request_id: client_request_id.clone().unwrap_or_else(new_request_id),
            result: Value::Null,
            volatile: None,
            room: client_request_id,
        }
    }

    /// An envelope with a null result and no request behind it (`/_healthcheck`, `/_ready`).
    pub fn empty(
        node: &Arc<str>,
        request_id: String,
        status: u16,
        result: Value,
        error: Option<ApiError>,
    ) -> Self {
        Response {
            action: None,
            collection: None,
            controller: None,
            error,
            headers: EmptyObject {},
            index: None,
            node: node.clone(),
            request_id,
            result,
            status,
            volatile: None,
            room: None,
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Removes every key named `password` or `secret`, at any depth.
pub fn strip_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| k != "password" && k != "secret");
            map.values_mut().for_each(strip_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

pub fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::errors;
    use crate::protocol::request::{BoolArgs, Protocol};
    use serde_json::json;

    #[test]
    fn websocket_success_matches_the_spec_example() {
        let node: Arc<str> = Arc::from("knode-brave-otter-4242");
        let req = Request::from_value(
            json!({"controller":"server","action":"now","requestId":"7c1e","volatile":{"sdkInstanceId":"1d3f","sdkName":"js@7.17.1"}}),
            Protocol::Websocket,
            BoolArgs::Strict,
            0,
        )
        .unwrap();
        let mut res = Response::to_request(&node, &req, Ok(json!({"now":1700000000000u64})));
        res.room = Some(req.request_id.clone());
        assert_eq!(
            res.to_json(),
            r#"{"action":"now","controller":"server","error":null,"headers":{},"node":"knode-brave-otter-4242","requestId":"7c1e","result":{"now":1700000000000},"status":200,"volatile":{"sdkInstanceId":"1d3f","sdkName":"js@7.17.1"},"room":"7c1e"}"#
        );
    }

    #[test]
    fn error_echoes_index_and_collection() {
        let node: Arc<str> = Arc::from("knode-brave-otter-4242");
        let req = Request::from_value(
            json!({"controller":"realtime","action":"subscribe","requestId":"r1","index":"idx","collection":"col"}),
            Protocol::Websocket,
            BoolArgs::Strict,
            0,
        )
        .unwrap();
        let mut res =
            Response::to_request(&node, &req, Err(ApiError::plain(errors::TOKEN_INVALID)));
        res.room = Some("r1".into());
        assert_eq!(
            res.to_json(),
            r#"{"action":"subscribe","collection":"col","controller":"realtime","error":{"code":117506049,"id":"security.token.invalid","message":"Invalid token.","props":[],"status":401},"headers":{},"index":"idx","node":"knode-brave-otter-4242","requestId":"r1","result":null,"status":401,"volatile":null,"room":"r1"}"#
        );
    }

    #[test]
    fn strips_secrets_everywhere() {
        let mut v = json!({"a":{"password":"x","b":[{"secret":1,"c":2}]},"secret":3});
        strip_secrets(&mut v);
        assert_eq!(v, json!({"a":{"b":[{"c":2}]}}));
    }
}
