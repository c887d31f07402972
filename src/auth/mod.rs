//! Authentication: tokens, local credentials and the session registry.

pub mod cookie;
pub mod credentials;
pub mod messages;
pub mod registry;
pub mod throttle;
pub mod token;
