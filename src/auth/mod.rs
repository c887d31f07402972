//! Authentication: tokens (and, with issue 3, the session registry and the controllers).

pub mod token;
