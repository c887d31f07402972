//! Realtime: Kuzzle's filter language, rooms and channels, notifications.

pub mod filter;
pub mod hub;
mod index;
pub mod notify;

pub use hub::{Hub, HubLimits, Member, RoomTarget, Scope, Users};
