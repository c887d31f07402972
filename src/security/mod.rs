//! The security model (PROTOCOL.md §4.3): roles, profiles, the rights check.

pub mod bootstrap;
pub mod cache;
pub mod model;
