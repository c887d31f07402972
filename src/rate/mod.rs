//! Rates and concurrency, below the API: per-key counters in one-second windows, and the
//! node's request limiter (step 6 of the processing order).

pub mod counter;
pub mod limiter;

pub use counter::RateCounter;
pub use limiter::RequestLimiter;
