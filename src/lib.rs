//! kuzzle-rt: a Kuzzle-compatible, clustered realtime server.

pub mod api; // dispatch: the processing order, controllers, the action table
pub mod auth; // tokens
pub mod cluster; // nodes sharing one Redis: membership, cross-node notifications, counts
pub mod config;
pub mod delivery; // outboxes, shared outgoing messages, their frames, the fan-out // kuzzlerc files + kuzzle_* environment → validated Settings
#[doc(hidden)]
pub mod fuzzing; // entry points of the fuzz targets, replayed by tests/fuzz_corpora.rs
pub mod http; // the HTTP side of the shared port
pub mod metrics; // Prometheus metrics (GET /metrics)
pub mod names; // random readable ids (node ids)
pub mod node; // what one node's parts share
pub mod protocol; // wire formats: envelopes, errors, close codes, RFC 6455 frames, deflate
pub mod rate; // per-key rate counters and the node's request limiter
pub mod realtime; // filters, rooms, channels, notifications
pub mod security; // roles, profiles, rights
pub mod server; // binds, runs, drains
pub mod storage; // users, rights, tokens, secret: embedded (redb) or Redis
pub mod system; // host facts for server:info
pub mod ws; // the WebSocket transport: upgrade, reader, one actor per socket
pub mod wsclient; // a minimal WebSocket client for the load tool and the tests

/// The Kuzzle API level this server speaks.
pub const API_VERSION: &str = "2.56.0";
