//! Realtime: Kuzzle's filter language, rooms and channels, notifications.

pub mod filter;
