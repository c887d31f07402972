//! Authentication: tokens and local credentials (the session registry and the
//! controllers come with the rest of issue 3).

pub mod credentials;
pub mod token;
