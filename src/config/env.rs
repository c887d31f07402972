//! Kuzzle's environment overrides (PROTOCOL.md §8.4) as a `config::Source`.
//!
//! `config::Environment` lowercases keys and cannot express `kuzzle_a__b`, so this source
//! reads a list of variables given to it (the process environment in production, a
//! fixed list in tests) and returns nested tables, which `config` deep-merges.

use config::{ConfigError, Map, Source, Value, ValueKind};

const PREFIX: &str = "kuzzle_";

#[derive(Debug, Clone)]
pub struct KuzzleEnv {
    vars: Vec<(String, String)>,
    /// Dotted key paths whose values stay text (CN-43).
    string_keys: Vec<String>,
}

impl KuzzleEnv {
    pub fn new(vars: Vec<(String, String)>, string_keys: Vec<String>) -> Self {
        KuzzleEnv { vars, string_keys }
    }

    /// Each override's variable name and the dotted key path it sets.
    pub fn key_paths(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter_map(|(name, _)| key_path(name).map(|path| (name.clone(), path.join("."))))
            .collect()
    }

    fn overrides(&self) -> impl Iterator<Item = (Vec<&str>, &str)> {
        self.vars
            .iter()
            .filter_map(|(name, value)| key_path(name).map(|path| (path, value.as_str())))
    }

    fn convert(&self, path: &[&str], raw: &str) -> Result<ValueKind, ConfigError> {
        let dotted = path.join(".");
        let last = path.last().copied().unwrap_or_default();
        if let Some(json) = raw.strip_prefix("*json:") {
            let parsed: serde_json::Value = serde_json::from_str(json).map_err(|_| {
                ConfigError::Message(format!(
                    "the key \"{dotted}\" does not contain a valid stringified JSON ({raw})"
                ))
            })?;
            return Ok(json_to_kind(parsed));
        }
        if last.to_ascii_lowercase().ends_with("version") || self.string_keys.contains(&dotted) {
            return Ok(ValueKind::String(raw.to_owned()));
        }
        Ok(match super::explain::scalar(raw) {
            Some(read) => json_to_kind(read),
            None => ValueKind::String(raw.to_owned()),
        })
    }
}

/// `kuzzle_a__b__c` (prefix in any case) → `["a", "b", "c"]`; `kuzzle_config` names a file.
fn key_path(name: &str) -> Option<Vec<&str>> {
    let head = name.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) || name.eq_ignore_ascii_case("kuzzle_config") {
        return None;
    }
    let path: Vec<&str> = name[PREFIX.len()..]
        .split("__")
        .filter(|s| !s.is_empty())
        .collect();
    (!path.is_empty()).then_some(path)
}

fn json_to_kind(value: serde_json::Value) -> ValueKind {
    use serde_json::Value as J;
    match value {
        J::Null => ValueKind::Nil,
        J::Bool(b) => ValueKind::Boolean(b),
        J::Number(n) => n
            .as_i64()
            .map(ValueKind::I64)
            .or_else(|| n.as_u64().map(ValueKind::U64))
            .unwrap_or_else(|| ValueKind::Float(n.as_f64().unwrap_or_default())),
        J::String(s) => ValueKind::String(s),
        J::Array(items) => ValueKind::Array(
            items
                .into_iter()
                .map(|v| Value::new(None, json_to_kind(v)))
                .collect(),
        ),
        J::Object(map) => ValueKind::Table(
            map.into_iter()
                .map(|(k, v)| (k, Value::new(None, json_to_kind(v))))
                .collect(),
        ),
    }
}

/// Places `value` at `path` inside `root`, creating tables on the way.
fn insert(root: &mut Map<String, Value>, path: &[&str], value: ValueKind) {
    let origin = Some(&"environment".to_string());
    match path {
        [] => {}
        [last] => {
            root.insert((*last).to_owned(), Value::new(origin, value));
        }
        [first, rest @ ..] => {
            let entry = root
                .entry((*first).to_owned())
                .or_insert_with(|| Value::new(origin, ValueKind::Table(Map::new())));
            if !matches!(entry.kind, ValueKind::Table(_)) {
                *entry = Value::new(origin, ValueKind::Table(Map::new()));
            }
            if let ValueKind::Table(table) = &mut entry.kind {
                insert(table, rest, value);
            }
        }
    }
}

impl Source for KuzzleEnv {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        let mut root = Map::new();
        for (path, raw) in self.overrides() {
            let value = self.convert(&path, raw)?;
            insert(&mut root, &path, value);
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(vars: &[(&str, &str)]) -> serde_json::Value {
        let env = KuzzleEnv::new(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vec!["services.storage.options.password".into()],
        );
        let config = config::Config::builder().add_source(env).build().unwrap();
        config.try_deserialize().unwrap()
    }

    #[test]
    fn nests_keys_and_keeps_their_case() {
        let v = collect(&[("kuzzle_server__protocols__websocket__idleTimeout", "5000")]);
        assert_eq!(
            v,
            serde_json::json!({"server":{"protocols":{"websocket":{"idleTimeout":5000}}}})
        );
    }

    #[test]
    fn prefix_is_case_insensitive_and_config_is_excluded() {
        let v = collect(&[
            ("KUZZLE_limits__loginsPerSecond", "50"),
            ("kuzzle_config", "/x"),
            ("KUZZLE_CONFIG", "/y"),
            ("other_x", "1"),
        ]);
        assert_eq!(v, serde_json::json!({"limits":{"loginsPerSecond":50}}));
    }

    #[test]
    fn converts_values() {
        let v = collect(&[
            ("kuzzle_a__t", "true"),
            ("kuzzle_a__f", "false"),
            ("kuzzle_a__i", "-12"),
            ("kuzzle_a__p", "+7"),
            ("kuzzle_a__x", "1.5"),
            ("kuzzle_a__s", "localhost"),
            ("kuzzle_a__dot", "1."),
            ("kuzzle_a__j", "*json:[\"default\",\"foo\"]"),
            ("kuzzle_a__apiVersion", "2"),
            ("kuzzle_services__storage__options__password", "1234"),
        ]);
        assert_eq!(
            v["a"],
            serde_json::json!({"t":true,"f":false,"i":-12,"p":7,"x":1.5,"s":"localhost","dot":"1.","j":["default","foo"],"apiVersion":"2"})
        );
        assert_eq!(v["services"]["storage"]["options"]["password"], "1234");
    }

    #[test]
    fn empty_segments_are_dropped() {
        let v = collect(&[("kuzzle___server____port", "1")]);
        assert_eq!(v, serde_json::json!({"server":{"port":1}}));
    }

    #[test]
    fn bad_json_names_the_key() {
        let env = KuzzleEnv::new(
            vec![(
                "kuzzle_security__restrictedProfileIds".into(),
                "*json:[oops".into(),
            )],
            vec![],
        );
        let err = env.collect().unwrap_err().to_string();
        assert_eq!(
            err,
            "the key \"security.restrictedProfileIds\" does not contain a valid stringified JSON (*json:[oops)"
        );
    }
}
