//! `security:searchUsers` (PROTOCOL.md §4.4): the users whose document matches a query,
//! in Elasticsearch's query DSL (the subset of CN-24) or in Koncorde's.

use serde_json::{Value, json};

use super::identity::store_read_error;
use super::{ActionResult, Call, Reply};
use crate::protocol::errors::{self, ApiError};
use crate::realtime::filter::{Filter, get_path, scalar_key};
use crate::storage::Kind;

/// `body.query` of `searchUsers` with the default `lang`: a subset of Elasticsearch's
/// query DSL (CN-24), evaluated on `_source` and the user id.
fn es_matches(query: &Value, kuid: &str, source: &Value) -> Result<bool, ApiError> {
    let bad = || {
        ApiError::new(
            errors::INVALID_ARGUMENT,
            ["body.query", "match_all, term, terms, ids or bool"],
        )
    };
    let Value::Object(map) = query else {
        return Err(bad());
    };
    if map.is_empty() {
        return Ok(true);
    }
    if map.len() != 1 {
        return Err(bad());
    }
    let (kind, arg) = map.iter().next().ok_or_else(bad)?;
    let field_values = |arg: &Value| -> Result<(String, Value), ApiError> {
        match arg {
            Value::Object(m) if m.len() == 1 => m
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.clone()))
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    };
    // A scalar matches the field's value, or an element of an array field.
    let holds = |field: &str, wanted: &Value| {
        let wanted = scalar_key(wanted);
        match get_path(source, field) {
            Some(Value::Array(items)) => items.iter().any(|i| scalar_key(i) == wanted),
            Some(value) => wanted.is_some() && scalar_key(value) == wanted,
            None => false,
        }
    };
    Ok(match kind.as_str() {
        "match_all" => true,
        "term" => {
            let (field, value) = field_values(arg)?;
            if value.is_object() || value.is_array() {
                return Err(bad());
            }
            holds(&field, &value)
        }
        "terms" => {
            let (field, values) = field_values(arg)?;
            let Value::Array(values) = values else {
                return Err(bad());
            };
            values.iter().any(|v| holds(&field, v))
        }
        "ids" => {
            let Some(Value::Array(values)) = arg.get("values") else {
                return Err(bad());
            };
            values.iter().any(|v| v.as_str() == Some(kuid))
        }
        "bool" => {
            let Value::Object(clauses) = arg else {
                return Err(bad());
            };
            let all = |name: &str| -> Result<Vec<bool>, ApiError> {
                match clauses.get(name) {
                    None => Ok(Vec::new()),
                    Some(Value::Array(items)) => {
                        items.iter().map(|q| es_matches(q, kuid, source)).collect()
                    }
                    Some(single @ Value::Object(_)) => Ok(vec![es_matches(single, kuid, source)?]),
                    Some(_) => Err(bad()),
                }
            };
            if clauses
                .keys()
                .any(|k| !matches!(k.as_str(), "must" | "filter" | "must_not" | "should"))
            {
                return Err(bad());
            }
            let required: Vec<bool> = all("must")?.into_iter().chain(all("filter")?).collect();
            let excluded = all("must_not")?;
            let optional = all("should")?;
            let should_ok =
                optional.is_empty() || !required.is_empty() || optional.iter().any(|m| *m);
            required.iter().all(|m| *m) && !excluded.iter().any(|m| *m) && should_ok
        }
        _ => return Err(bad()),
    })
}

fn count_arg(call: &Call<'_>, name: &str, default: u64) -> Result<u64, ApiError> {
    match call.request.arg(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ApiError::invalid_type(name, "integer")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::invalid_type(name, "integer")),
        Some(_) => Err(ApiError::invalid_type(name, "integer")),
    }
}

pub async fn search_users(call: &Call<'_>) -> ActionResult {
    let from = count_arg(call, "from", 0)?;
    let size = count_arg(call, "size", 10)?;
    if size > u64::from(call.node.settings.limits.documents_fetch_count) {
        return Err(ApiError::plain(errors::GET_LIMIT_EXCEEDED));
    }
    let query = call
        .request
        .body
        .as_ref()
        .and_then(|b| b.get("query"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let koncorde = match call.request.string_arg("lang")? {
        None | Some("elasticsearch") => None,
        Some("koncorde") => Some(
            Filter::compile(
                &query,
                call.node.settings.limits.subscription_conditions_count as usize,
            )
            .map_err(|m| ApiError::new(errors::INVALID_ARGUMENT, ["body.query".to_owned(), m]))?,
        ),
        Some(_) => {
            return Err(ApiError::new(
                errors::INVALID_ARGUMENT,
                ["lang", "\"elasticsearch\" or \"koncorde\""],
            ));
        }
    };
    let mut hits = Vec::new();
    for (kuid, source) in call
        .node
        .store
        .list(Kind::User)
        .await
        .map_err(store_read_error)?
    {
        let matched = match &koncorde {
            Some(filter) => {
                let mut document = source.clone();
                document["_id"] = json!(kuid);
                filter.matches(&document)
            }
            None => es_matches(&query, &kuid, &source)?,
        };
        if matched {
            hits.push(json!({"_id": kuid, "_source": source}));
        }
    }
    let total = hits.len();
    let page: Vec<Value> = hits
        .into_iter()
        .skip(from as usize)
        .take(size as usize)
        .collect();
    Ok(Reply::Json(json!({"hits": page, "total": total})))
}
