//! Keys that no setting reads: a typo or a wrong case (`idletimeout`) would otherwise be
//! ignored in silence. Each is reported with where it came from and the closest known key.

use std::collections::BTreeSet;

use serde_json::Value;

/// Subtrees whose content is free-form (roles, profiles, Kuzzle's own service sections).
const FREE_FORM: &[&str] = &[
    "security.default.role",
    "security.standard.roles",
    "security.standard.profiles",
    "security.authToken.expiresIn",
    "security.jwt.expiresIn",
    "services.internalCache",
    "services.memoryStorage",
    "services.storageEngine",
];

/// Every key path of the defaults, intermediate objects included.
pub struct KnownKeys {
    paths: BTreeSet<String>,
}

impl KnownKeys {
    pub fn of(defaults: &Value) -> KnownKeys {
        fn walk(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
            if let Value::Object(map) = value {
                for (key, child) in map {
                    let path = join(prefix, key);
                    walk(child, &path, out);
                    out.insert(path);
                }
            }
        }
        let mut paths = BTreeSet::new();
        walk(defaults, "", &mut paths);
        paths.extend(FREE_FORM.iter().map(|p| p.to_string()));
        KnownKeys { paths }
    }

    fn is_known(&self, path: &str) -> bool {
        self.paths.contains(path)
            || FREE_FORM
                .iter()
                .any(|free| path.starts_with(free) && path[free.len()..].starts_with('.'))
    }

    /// The unknown key paths of a configuration tree (the first unknown level of each).
    pub fn unknown_in(&self, tree: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(tree, "", &mut out);
        out
    }

    fn collect(&self, value: &Value, prefix: &str, out: &mut Vec<String>) {
        let Value::Object(map) = value else {
            return;
        };
        for (key, child) in map {
            let path = join(prefix, key);
            if !self.is_known(&path) {
                out.push(path);
            } else if !FREE_FORM.contains(&path.as_str()) {
                self.collect(child, &path, out);
            }
        }
    }

    /// Whether a dotted path (from an environment variable) names a known key.
    pub fn knows(&self, path: &str) -> bool {
        self.is_known(path)
    }

    /// The known key closest to `path`: the same but for case, else one a few edits away.
    pub fn closest(&self, path: &str) -> Option<&str> {
        let lower = path.to_lowercase();
        if let Some(same) = self.paths.iter().find(|p| p.to_lowercase() == lower) {
            return Some(same);
        }
        let budget = (path.len() / 4).clamp(2, 6);
        self.paths
            .iter()
            .map(|p| (strsim::levenshtein(&p.to_lowercase(), &lower), p))
            .filter(|(distance, _)| *distance <= budget)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, p)| p.as_str())
    }

    /// "unknown configuration key `a.b` in <where> (did you mean `a.c`?)".
    pub fn describe(&self, path: &str, origin: &str) -> String {
        match self.closest(path) {
            Some(known) => {
                format!("unknown configuration key `{path}` {origin}: did you mean `{known}`?")
            }
            None => format!("unknown configuration key `{path}` {origin}: it is ignored"),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use serde_json::json;

    fn known() -> KnownKeys {
        KnownKeys::of(&serde_json::to_value(Settings::default()).unwrap())
    }

    #[test]
    fn unknown_keys_and_suggestions() {
        let k = known();
        let tree = json!({
            "server": {"port": 1, "protocols": {"websocket": {"idletimeout": 5}}},
            "limits": {"subscriptionRoms": 3},
            "security": {"standard": {"roles": {"anything": {"goes": true}}}},
            "nonsense": {"deep": 1}
        });
        let unknown = k.unknown_in(&tree);
        assert_eq!(
            unknown,
            [
                "server.protocols.websocket.idletimeout",
                "limits.subscriptionRoms",
                "nonsense"
            ],
            "in the order of the file"
        );
        assert_eq!(
            k.closest("server.protocols.websocket.idletimeout"),
            Some("server.protocols.websocket.idleTimeout")
        );
        assert_eq!(
            k.closest("limits.subscriptionRoms"),
            Some("limits.subscriptionRooms")
        );
        assert_eq!(k.closest("nonsense"), None);
        assert!(k.knows("services.storage.node.port"));
        assert!(!k.knows("services.storage.node.prot"));
        assert!(k.knows("security.standard.profiles.mine.rateLimit"));
        assert_eq!(
            k.describe("limits.subscriptionRoms", "in /etc/kuzzlerc"),
            "unknown configuration key `limits.subscriptionRoms` in /etc/kuzzlerc: did you mean `limits.subscriptionRooms`?"
        );
    }
}
