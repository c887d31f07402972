//! Authentication: tokens, local credentials, the login throttle and the browser cookie.
//! (Which sockets use which token is the realtime layer's: `realtime::sessions`.)

pub mod cookie;
pub mod credentials;
pub mod throttle;
pub mod token;
