//! Configuration: `kuzzlerc` files and `kuzzle_*` environment overrides merged into one
//! typed, validated `Settings` tree (PROTOCOL.md §8).

mod env;
pub(crate) mod explain;
mod load;
mod settings;
mod size;
pub mod timespan;
mod unknown;
mod validate;

pub use env::KuzzleEnv;
pub use load::{ConfigError, ConfigSources, Loaded, from_json, load, load_checked, parse_kuzzlerc};
pub use settings::*;
pub use size::Size;
pub use validate::warnings;
