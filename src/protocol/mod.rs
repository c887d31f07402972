//! The wire formats, as pure data and functions (no I/O): Kuzzle's envelopes and error
//! catalogue, close codes, RFC 6455 frames and permessage-deflate.

pub mod deflate;
pub mod errors;
pub mod frame;
pub mod percent;
pub mod request;
pub mod response;

pub use errors::ApiError;
pub use request::{BoolArgs, EnvelopeError, Protocol, Request};
pub use response::Response;

/// WebSocket close codes and reasons of PROTOCOL.md §2.7.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const SERVER_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Never sent: what a connection that dropped without a close frame counts as.
    pub const ABNORMAL: u16 = 1006;

    pub const HEARTBEAT_TIMEOUT: &str = "heartbeat timeout";
    pub const IDLE_TIMEOUT: &str = "idle timeout";
    pub const SHUTTING_DOWN: &str = "server shutting down";
    pub const INVALID_UTF8: &str = "invalid UTF-8";
    pub const TOO_BIG: &str = "message too big";
    pub const BACKPRESSURE: &str = "too much backpressure: client is too slow";
    pub const BUSY: &str = "server busy: too many partial messages";
    pub const MESSAGE_TIMEOUT: &str = "message not completed in time";
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
