//! The request envelope (PROTOCOL.md §3.1) and its typed argument getters.

use serde_json::{Map, Value};

use super::errors::ApiError;

/// Where a request came from. It decides how boolean arguments read and
/// whether the response carries `room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Websocket,
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Websocket => "websocket",
            Protocol::Http => "http",
        }
    }
}

/// How boolean arguments are read (§3.1, §2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolArgs {
    /// WebSocket frames: a JSON boolean; null or absent is false; anything else is an error.
    Strict,
    /// `/_query` bodies: booleans keep their value, null is false, anything else present is true.
    Lenient,
    /// Query strings: presence means true.
    Presence,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub protocol: Protocol,
    pub bool_args: BoolArgs,
    /// Empty when missing: step 2 of the processing order reports it.
    pub controller: String,
    pub action: String,
    pub request_id: String,
    pub jwt: Option<String>,
    /// Copied unchanged into the response and notifications; `None` serialises as null.
    pub volatile: Option<Value>,
    pub body: Option<Value>,
    /// Milliseconds since the epoch: the client's numeric `timestamp`, else the receive time.
    pub timestamp: u64,
    /// Every other top-level key.
    pub args: Map<String, Value>,
}

/// A frame that fails the envelope checks, with what the error frame needs.
#[derive(Debug)]
pub struct EnvelopeError {
    pub error: ApiError,
    /// The client's `requestId` when it is a non-empty string (it becomes `room`).
    pub request_id: Option<String>,
}

/// The client's `requestId` when the value is an object holding a non-empty string one.
pub fn readable_request_id(value: &Value) -> Option<String> {
    match value.get("requestId") {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        _ => None,
    }
}

fn type_error(attribute: &str, expected: &str) -> ApiError {
    ApiError::bare(
        400,
        format!("Attribute {attribute} must be of type \"{expected}\""),
    )
}

impl Request {
    /// Decodes an envelope, running the type checks of §3.1 in their documented order.
    pub fn from_value(
        value: Value,
        protocol: Protocol,
        bool_args: BoolArgs,
        received_at: u64,
    ) -> Result<Request, EnvelopeError> {
        let request_id = readable_request_id(&value);
        let Value::Object(mut map) = value else {
            return Err(EnvelopeError {
                error: ApiError::bare(500, "Input request data must be a non-null object"),
                request_id: None,
            });
        };
        let fail = |error| {
            Err(EnvelopeError {
                error,
                request_id: request_id.clone(),
            })
        };

        let jwt = match map.remove("jwt") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return fail(type_error("jwt", "string")),
        };
        let volatile = match map.remove("volatile") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => return fail(type_error("volatile", "object")),
        };
        let body = match map.remove("body") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v),
            Some(_) => {
                return fail(ApiError::bare(
                    400,
                    "Attribute body must be of type \"object\" or \"array\"",
                ));
            }
        };
        let mut text_field = |name: &str| match map.remove(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(type_error(name, "string")),
        };
        let controller = match text_field("controller") {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let action = match text_field("action") {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let request_id_field = match text_field("requestId") {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let timestamp = match map.remove("timestamp") {
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|t| *t >= 0.0)
                .map_or(received_at, |t| t as u64),
            _ => received_at,
        };
        Ok(Request {
            protocol,
            bool_args,
            controller,
            action,
            request_id: if request_id_field.is_empty() {
                new_request_id()
            } else {
                request_id_field
            },
            jwt,
            volatile,
            body,
            timestamp,
            args: map,
        })
    }

    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.args.get(name)
    }

    /// A boolean argument, read as the request's transport demands.
    pub fn bool_arg(&self, name: &str) -> Result<bool, ApiError> {
        let value = self.args.get(name);
        match (self.bool_args, value) {
            (_, None) | (_, Some(Value::Null)) => Ok(false),
            (_, Some(Value::Bool(b))) if self.bool_args != BoolArgs::Presence => Ok(*b),
            (BoolArgs::Strict, Some(_)) => Err(ApiError::invalid_type(name, "boolean")),
            (BoolArgs::Lenient | BoolArgs::Presence, Some(_)) => Ok(true),
        }
    }

    /// An optional string argument; a non-string value is `invalid_type`.
    pub fn string_arg(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.args.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid_type(name, "string")),
        }
    }
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: Value) -> Result<Request, EnvelopeError> {
        Request::from_value(v, Protocol::Websocket, BoolArgs::Strict, 42)
    }

    #[test]
    fn splits_envelope_from_arguments() {
        let req = decode(json!({"controller":"server","action":"now","requestId":"r1","index":"i","timestamp":7})).unwrap();
        assert_eq!(
            (
                req.controller.as_str(),
                req.action.as_str(),
                req.request_id.as_str()
            ),
            ("server", "now", "r1")
        );
        assert_eq!(req.timestamp, 7);
        assert_eq!(req.args.get("index"), Some(&json!("i")));
        assert!(req.args.get("controller").is_none());
    }

    #[test]
    fn non_numeric_timestamp_uses_receive_time() {
        let req = decode(json!({"controller":"a","action":"b","timestamp":"yesterday"})).unwrap();
        assert_eq!(req.timestamp, 42);
    }

    #[test]
    fn generates_request_id_when_missing_or_empty() {
        let a = decode(json!({"controller":"a","action":"b"})).unwrap();
        let b = decode(json!({"controller":"a","action":"b","requestId":""})).unwrap();
        assert_eq!(a.request_id.len(), 36);
        assert_eq!(b.request_id.len(), 36);
    }

    #[test]
    fn type_checks_run_in_documented_order() {
        let err = decode(json!({"jwt":1,"volatile":2,"controller":3,"requestId":"r"})).unwrap_err();
        assert_eq!(
            err.error.message(),
            "Attribute jwt must be of type \"string\""
        );
        assert_eq!(err.request_id.as_deref(), Some("r"));
        let err = decode(json!({"volatile":[],"controller":3})).unwrap_err();
        assert_eq!(
            err.error.message(),
            "Attribute volatile must be of type \"object\""
        );
        let err = decode(json!({"body":"x","controller":3})).unwrap_err();
        assert_eq!(
            err.error.message(),
            "Attribute body must be of type \"object\" or \"array\""
        );
        let err = decode(json!({"controller":3,"action":4})).unwrap_err();
        assert_eq!(
            err.error.message(),
            "Attribute controller must be of type \"string\""
        );
        let err = decode(json!({"controller":"a","action":4})).unwrap_err();
        assert_eq!(
            err.error.message(),
            "Attribute action must be of type \"string\""
        );
        let err = decode(json!({"controller":"a","action":"b","requestId":5})).unwrap_err();
        assert_eq!(
            err.error.message(),
            "Attribute requestId must be of type \"string\""
        );
        assert_eq!(err.request_id, None);
        assert_eq!(err.error.status(), 400);
    }

    #[test]
    fn non_object_is_a_500() {
        let err = decode(json!([1, 2])).unwrap_err();
        assert_eq!(
            err.error,
            ApiError::bare(500, "Input request data must be a non-null object")
        );
    }

    #[test]
    fn booleans_follow_the_transport() {
        let mut req =
            decode(json!({"controller":"a","action":"b","t":true,"n":null,"s":"false"})).unwrap();
        assert_eq!(req.bool_arg("t"), Ok(true));
        assert_eq!(req.bool_arg("n"), Ok(false));
        assert_eq!(req.bool_arg("absent"), Ok(false));
        assert_eq!(
            req.bool_arg("s"),
            Err(ApiError::invalid_type("s", "boolean"))
        );
        req.bool_args = BoolArgs::Lenient;
        assert_eq!(req.bool_arg("s"), Ok(true));
        req.args.insert("f".into(), json!(false));
        assert_eq!(req.bool_arg("f"), Ok(false));
        req.bool_args = BoolArgs::Presence;
        assert_eq!(req.bool_arg("s"), Ok(true));
        assert_eq!(req.bool_arg("f"), Ok(true));
    }
}
