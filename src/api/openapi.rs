//! `server:publicApi` and the minimal OpenAPI 2.0 document of PROTOCOL.md §4.6.

use serde_json::{Map, Value, json};

use super::actions::{self, Verb};

/// `{"<controller>": {"<action>": {"action", "controller", "http"?: [...]}}}`.
pub fn public_api() -> Value {
    let routes = actions::routes();
    let mut out = Map::new();
    for action in actions::implemented() {
        let mut entry = Map::new();
        entry.insert("action".into(), action.name.into());
        entry.insert("controller".into(), action.controller.into());
        let http: Vec<Value> = routes
            .iter()
            .filter(|(_, _, a)| std::ptr::eq(*a, action))
            .map(|(verb, path, _)| json!({"path": path, "url": path, "verb": verb.name()}))
            .collect();
        if !http.is_empty() {
            entry.insert("http".into(), Value::Array(http));
        }
        let controller = out
            .entry(action.controller)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(map) = controller {
            map.insert(action.name.into(), Value::Object(entry));
        }
    }
    Value::Object(out)
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The document for `scope` `kuzzle` (every route) or `app` (no paths).
pub fn document(with_paths: bool) -> Value {
    let mut tags: Vec<&str> = Vec::new();
    for action in actions::implemented() {
        if !tags.contains(&action.controller) {
            tags.push(action.controller);
        }
    }
    let mut paths = Map::new();
    if with_paths {
        for (verb, path, action) in actions::routes() {
            let params: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix(':'))
                .collect();
            let openapi_path: String = path
                .split('/')
                .map(|s| {
                    s.strip_prefix(':')
                        .map_or_else(|| s.to_owned(), |p| format!("{{{p}}}"))
                })
                .collect::<Vec<_>>()
                .join("/");
            let mut operation = Map::new();
            operation.insert("tags".into(), json!([action.controller]));
            operation.insert(
                "description".into(),
                format!("Controller: {}.", action.controller).into(),
            );
            operation.insert("summary".into(), format!("Action: {}.", action.name).into());
            if !params.is_empty() {
                let parameters: Vec<Value> = params
                    .iter()
                    .map(|p| json!({"in": "path", "name": p, "required": true, "schema": {"type": "string"}}))
                    .collect();
                operation.insert("parameters".into(), Value::Array(parameters));
            }
            operation.insert("responses".into(), json!({"200": {"description": "OK"}}));
            let verb_name = match verb {
                Verb::Get => "get",
                Verb::Post => "post",
                Verb::Put => "put",
                Verb::Patch => "patch",
                Verb::Delete => "delete",
                Verb::Head => "head",
            };
            let item = paths
                .entry(openapi_path)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = item {
                map.insert(verb_name.into(), Value::Object(operation));
            }
        }
    }
    json!({
        "openapi": "3.0.1",
        "info": {"title": "Kuzzle API", "description": "Kuzzle HTTP API definition", "version": crate::API_VERSION},
        "tags": tags.iter().map(|t| json!({"name": t, "description": format!("{} Controller", capitalised(t))})).collect::<Vec<_>>(),
        "paths": paths,
    })
}

/// YAML for a JSON tree. Every string is written double-quoted (JSON escaping is valid
/// YAML), so no value can be misread as another type.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Object(m) if m.is_empty() => Some("{}".into()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(_) | Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = Value::String(k.clone()).to_string();
                match scalar(v) {
                    Some(s) => out.push_str(&format!("{pad}{key}: {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}-\n"));
                        write_yaml(item, indent + 2, out);
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_of_nested_values() {
        let v = json!({"a": {"b": [1, "x", {"c": true}], "e": {}}, "n": null});
        assert_eq!(
            to_yaml(&v),
            "\"a\":\n  \"b\":\n    - 1\n    - \"x\"\n    -\n      \"c\": true\n  \"e\": {}\n\"n\": null\n"
        );
    }

    #[test]
    fn public_api_lists_routes_with_upper_case_verbs() {
        let api = public_api();
        assert_eq!(
            api["server"]["info"]["http"],
            json!([{"path":"/","url":"/","verb":"GET"},{"path":"/_serverInfo","url":"/_serverInfo","verb":"GET"}])
        );
        assert_eq!(api["server"]["now"]["action"], "now");
    }
}
