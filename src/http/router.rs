//! HTTP routing (PROTOCOL.md §2.8): exact, case-sensitive segments; a trailing slash and
//! empty segments are ignored; segments are percent-decoded; a literal segment beats a
//! placeholder, with no backtracking.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::api::actions::{self, Action, Verb};
use crate::protocol::percent::percent_decode;

#[derive(Default)]
struct Level {
    literals: HashMap<&'static str, Level>,
    placeholder: Option<Box<Level>>,
    /// Each route ending here, by verb, with the names of its placeholders in order (two
    /// routes may name the same position differently: `/users/:_id/_create` and
    /// `/users/:userId/api-keys/_create`).
    actions: HashMap<Verb, (&'static Action, Vec<&'static str>)>,
}

pub struct Router {
    root: Level,
}

pub struct Matched {
    pub action: &'static Action,
    /// The placeholder values, by name.
    pub params: Map<String, Value>,
}

static ROUTER: LazyLock<Router> = LazyLock::new(Router::from_actions);

pub fn router() -> &'static Router {
    &ROUTER
}

impl Router {
    fn from_actions() -> Router {
        let mut root = Level::default();
        for (verb, path, action) in actions::routes() {
            let mut level = &mut root;
            let mut names = Vec::new();
            for segment in path.split('/').filter(|s| !s.is_empty()) {
                level = match segment.strip_prefix(':') {
                    Some(name) => {
                        names.push(name);
                        level.placeholder.get_or_insert_with(Box::default)
                    }
                    None => level.literals.entry(segment).or_default(),
                };
            }
            level.actions.insert(verb, (action, names));
        }
        Router { root }
    }

    /// Finds the action for a raw (still percent-encoded) path.
    pub fn find(&self, verb: Verb, raw_path: &str) -> Option<Matched> {
        let mut level = &self.root;
        let mut values = Vec::new();
        for raw in raw_path.split('/').filter(|s| !s.is_empty()) {
            let segment = percent_decode(raw);
            if let Some(next) = level.literals.get(segment.as_str()) {
                level = next;
            } else if let Some(next) = &level.placeholder {
                values.push(segment);
                level = next;
            } else {
                return None;
            }
        }
        let (action, names) = level.actions.get(&verb)?;
        let params: Map<String, Value> = names
            .iter()
            .map(|name| (*name).to_owned())
            .zip(values.into_iter().map(Value::String))
            .collect();
        Some(Matched { action, params })
    }
}

/// The path as `url_not_found` names it: without query string or trailing slash.
pub fn display_path(raw_path: &str) -> String {
    let trimmed = raw_path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_placeholders_and_slashes() {
        let r = router();
        assert_eq!(
            r.find(Verb::Get, "/_now").map(|m| m.action.name),
            Some("now")
        );
        assert_eq!(
            r.find(Verb::Get, "//_now/").map(|m| m.action.name),
            Some("now")
        );
        assert_eq!(r.find(Verb::Get, "/").map(|m| m.action.name), Some("info"));
        assert!(r.find(Verb::Post, "/_now").is_none());
        assert!(r.find(Verb::Get, "/_NOW").is_none(), "case-sensitive");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
