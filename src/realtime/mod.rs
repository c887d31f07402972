//! Realtime: Kuzzle's filter language, rooms and channels, notifications, and which
//! sockets use which token. `Realtime` (service.rs) is the one front door.

pub mod filter;
pub mod hub;
mod index;
pub mod notify;
pub mod service;
pub mod sessions;

pub use hub::{Hub, HubLimits, Member, RoomTarget, Scope, Users};
pub use service::{Realtime, RealtimeCounters, channel_of};
