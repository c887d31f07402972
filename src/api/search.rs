//! Searches of the security collections (PROTOCOL.md §4.4, searches): users, roles,
//! profiles and API keys whose document matches a query, in Elasticsearch's query DSL (the
//! subset of CN-24) or in Koncorde's, paged with `from`/`size` or a scroll cursor kept in
//! the store (so that another node can continue it).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::args::{count_arg, required_string};
use super::identity::{store_read_error, store_write_error};
use super::{ActionResult, Call, Reply};
use crate::config::timespan::parse_timespan;
use crate::protocol::errors::{self, ApiError};
use crate::realtime::filter::{Filter, scalar_key};
use crate::storage::Kind;

/// `body.query` of `searchUsers` with the default `lang`: a subset of Elasticsearch's
/// query DSL (CN-24), evaluated on `_source` and the user id.
fn es_matches(query: &Value, kuid: &str, source: &Value) -> Result<bool, ApiError> {
    let bad = || {
        ApiError::new(
            errors::INVALID_ARGUMENT,
            ["body.query", "match_all, match, term, terms, ids or bool"],
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
    // A scalar matches the field's value, or an element of an array field, arrays of
    // objects included (`policies.roleId`), as Elasticsearch flattens them; `_id` is the
    // document's id.
    let id_value = json!(kuid);
    let holds = |field: &str, wanted: &Value| {
        let wanted = scalar_key(wanted);
        if wanted.is_none() {
            return false;
        }
        let values = if field == "_id" {
            vec![&id_value]
        } else {
            values_at(source, field)
        };
        values.iter().any(|value| match value {
            Value::Array(items) => items.iter().any(|i| scalar_key(i) == wanted),
            value => scalar_key(value) == wanted,
        })
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
        // Full text, simplified: a field matches when one of its words is one of the
        // query's (case-insensitive, split on anything not alphanumeric).
        "match" => {
            let (field, value) = field_values(arg)?;
            let query = match &value {
                Value::String(text) => text.clone(),
                Value::Object(options) => options
                    .get("query")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(bad)?,
                other if !other.is_array() => other.to_string(),
                _ => return Err(bad()),
            };
            let wanted = words(&query);
            let texts = if field == "_id" {
                vec![&id_value]
            } else {
                values_at(source, &field)
            };
            texts.iter().any(|value| {
                let found = match value {
                    Value::Array(items) => items.iter().flat_map(text_words).collect(),
                    other => text_words(other),
                };
                found.iter().any(|w| wanted.contains(w))
            })
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

/// The lower-cased words of a text.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The words of a scalar (a string's, or a number's or boolean's text).
fn text_words(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => words(s),
        Value::Number(_) | Value::Bool(_) => words(&value.to_string()),
        _ => Vec::new(),
    }
}

/// The values at a dotted `path`, through arrays of objects on the way.
fn values_at<'a>(source: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![source];
    for key in path.split('.') {
        current = current
            .into_iter()
            .flat_map(|value| match value {
                Value::Array(items) => items.iter().filter_map(|i| i.get(key)).collect(),
                other => other.get(key).into_iter().collect::<Vec<_>>(),
            })
            .collect();
    }
    current
}

/// The longest a scroll cursor lives (Kuzzle's `services.storageEngine.maxScrollDuration`).
const MAX_SCROLL: Duration = Duration::from_secs(60);

/// `scroll`: a timespan ("10s", "1m", or milliseconds), at most `MAX_SCROLL`.
fn scroll_arg(call: &Call<'_>) -> Result<Option<Duration>, ApiError> {
    let text = match call.request.arg("scroll") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ApiError::invalid_type("scroll", "string")),
    };
    let millis = parse_timespan(&text)
        .filter(|ms| *ms > 0.0)
        .ok_or_else(|| ApiError::new(errors::INVALID_ARGUMENT, ["scroll", "a timespan"]))?;
    let duration = Duration::from_millis(millis as u64);
    if duration > MAX_SCROLL {
        return Err(ApiError::new(errors::SCROLL_DURATION_TOO_GREAT, [text]));
    }
    Ok(Some(duration))
}

/// What a search of one collection looks for.
#[derive(Clone)]
pub(super) enum Query {
    /// Elasticsearch's DSL (CN-24's subset).
    Elasticsearch(Value),
    /// A realtime filter, tested against the document plus `_id`.
    Koncorde(Value),
}

impl Query {
    /// `query` in the language `lang` names (Elasticsearch's by default).
    pub(super) fn of(call: &Call<'_>, query: Value) -> Result<Query, ApiError> {
        match call.request.string_arg("lang")? {
            None | Some("elasticsearch") => Ok(Query::Elasticsearch(query)),
            Some("koncorde") => Ok(Query::Koncorde(query)),
            Some(_) => Err(ApiError::new(
                errors::INVALID_ARGUMENT,
                ["lang", "\"elasticsearch\" or \"koncorde\""],
            )),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Query::Elasticsearch(q) => json!({"lang": "elasticsearch", "query": q}),
            Query::Koncorde(q) => json!({"lang": "koncorde", "query": q}),
        }
    }

    fn from_json(value: &Value) -> Option<Query> {
        let query = value.get("query")?.clone();
        match value.get("lang")?.as_str()? {
            "elasticsearch" => Some(Query::Elasticsearch(query)),
            "koncorde" => Some(Query::Koncorde(query)),
            _ => None,
        }
    }
}

/// The documents of `kind` that `query` matches and `keep` accepts, sorted by id.
pub(super) async fn matching(
    call: &Call<'_>,
    kind: Kind,
    query: &Query,
    keep: impl Fn(&str, &Value) -> bool,
) -> Result<Vec<(String, Value)>, ApiError> {
    let documents = call
        .node
        .store
        .list(kind)
        .await
        .map_err(store_read_error)?
        .into_iter()
        .filter(|(id, source)| keep(id, source))
        .collect();
    filter(call, query, documents)
}

/// The `documents` that `query` matches, in their order.
pub(super) fn filter(
    call: &Call<'_>,
    query: &Query,
    documents: Vec<(String, Value)>,
) -> Result<Vec<(String, Value)>, ApiError> {
    let koncorde = match query {
        Query::Koncorde(q) => Some(
            Filter::compile(
                q,
                call.node.settings.limits.subscription_conditions_count as usize,
            )
            .map_err(|m| ApiError::new(errors::INVALID_ARGUMENT, ["body.query".to_owned(), m]))?,
        ),
        Query::Elasticsearch(_) => None,
    };
    let mut hits = Vec::new();
    for (id, source) in documents {
        let matched = match (&koncorde, query) {
            (Some(filter), _) => {
                let mut document = source.clone();
                document["_id"] = json!(id);
                filter.matches(&document)
            }
            (None, Query::Elasticsearch(q)) => es_matches(q, &id, &source)?,
            (None, Query::Koncorde(_)) => false,
        };
        if matched {
            hits.push((id, source));
        }
    }
    Ok(hits)
}

/// A searchable security collection: its store kind, what a hit looks like, and the
/// documents a search of it may see.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Searched {
    Users,
    Profiles,
    Roles,
}

impl Searched {
    fn kind(self) -> Kind {
        match self {
            Searched::Users => Kind::User,
            Searched::Profiles => Kind::Profile,
            Searched::Roles => Kind::Role,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Searched::Users => "users",
            Searched::Profiles => "profiles",
            Searched::Roles => "roles",
        }
    }

    fn parse(name: &str) -> Option<Searched> {
        match name {
            "users" => Some(Searched::Users),
            "profiles" => Some(Searched::Profiles),
            "roles" => Some(Searched::Roles),
            _ => None,
        }
    }
}

fn hit(id: &str, source: Value) -> Value {
    json!({"_id": id, "_source": source})
}

/// `size` hits from `from` of the sorted `hits`, each as `shown` makes it, and how many
/// there are in all.
pub(super) fn page_of(
    hits: Vec<(String, Value)>,
    from: u64,
    size: u64,
    shown: impl Fn(String, Value) -> Value,
) -> (usize, Vec<Value>) {
    let total = hits.len();
    let page = hits
        .into_iter()
        .skip(from as usize)
        .take(size as usize)
        .map(|(id, source)| shown(id, source))
        .collect();
    (total, page)
}

/// One page of a search, and the cursor that continues it when `scroll` was given.
async fn page(
    call: &Call<'_>,
    searched: Searched,
    query: Query,
    from: u64,
    size: u64,
    scroll: Option<Duration>,
) -> ActionResult {
    let hits = matching(call, searched.kind(), &query, |_, _| true).await?;
    let (total, page) = page_of(hits, from, size, |id, source| hit(&id, source));
    let mut result = Map::new();
    result.insert("hits".into(), Value::Array(page));
    result.insert("total".into(), json!(total));
    if let Some(ttl) = scroll {
        let id = uuid::Uuid::new_v4().to_string();
        let cursor = json!({
            "collection": searched.name(),
            "search": query.to_json(),
            "next": from + size,
            "size": size,
            "ttl": ttl.as_millis() as u64,
        });
        call.node
            .store
            .put_expiring(Kind::Scroll, &id, &cursor, ttl)
            .await
            .map_err(store_write_error)?;
        result.insert("scrollId".into(), json!(id));
    }
    Ok(Reply::Json(Value::Object(result)))
}

/// `size` within `limits.documentsFetchCount`.
fn page_size(call: &Call<'_>, default: u64) -> Result<u64, ApiError> {
    let size = count_arg(call, "size", default)?;
    if size > u64::from(call.node.settings.limits.documents_fetch_count) {
        return Err(ApiError::plain(errors::GET_LIMIT_EXCEEDED));
    }
    Ok(size)
}

fn body_query(call: &Call<'_>) -> Value {
    call.request
        .body
        .as_ref()
        .and_then(|b| b.get("query"))
        .cloned()
        .unwrap_or_else(|| json!({}))
}

pub async fn search_users(call: &Call<'_>) -> ActionResult {
    let from = count_arg(call, "from", 0)?;
    let size = page_size(call, 10)?;
    let scroll = scroll_arg(call)?;
    let query = Query::of(call, body_query(call))?;
    page(call, Searched::Users, query, from, size, scroll).await
}

pub async fn search_profiles(call: &Call<'_>) -> ActionResult {
    let from = count_arg(call, "from", 0)?;
    let size = page_size(call, 10)?;
    let scroll = scroll_arg(call)?;
    let body = call.request.body.clone().unwrap_or_else(|| json!({}));
    let query = match body.get("roles") {
        None | Some(Value::Null) => body_query(call),
        Some(_) if body.get("query").is_some() => {
            return Err(ApiError::bare(
                400,
                "You cannot specifify both \"roles\" and \"query\". Prefer the usage of \"query\" property with a search query.",
            ));
        }
        // Kuzzle's deprecated form: profiles with a policy on one of these roles.
        Some(Value::Array(roles)) if roles.is_empty() => json!({"match_all": {}}),
        Some(Value::Array(roles)) => json!({"terms": {"policies.roleId": roles}}),
        Some(_) => return Err(ApiError::invalid_type("body.roles", "array")),
    };
    let query = Query::of(call, query)?;
    page(call, Searched::Profiles, query, from, size, scroll).await
}

pub async fn search_roles(call: &Call<'_>) -> ActionResult {
    let from = count_arg(call, "from", 0)?;
    let size = page_size(call, 10)?;
    let body = call.request.body.clone().unwrap_or_else(|| json!({}));
    let controllers = match body.get("controllers") {
        None | Some(Value::Null) => None,
        Some(_) if body.get("query").is_some() => {
            return Err(ApiError::bare(
                400,
                "You cannot specifify both \"controllers\" and \"query\". Prefer the usage of \"query\" property with a search query.",
            ));
        }
        Some(Value::Array(names)) => Some(
            names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| ApiError::invalid_type("body.controllers", "string[]"))?,
        ),
        Some(_) => return Err(ApiError::invalid_type("body.controllers", "array")),
    };
    let query = Query::of(call, body_query(call))?;
    // Kuzzle's `controllers` form: roles that name one of them, or `*`.
    let names = |role: &Value| -> Vec<String> {
        role.get("controllers")
            .and_then(Value::as_object)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    };
    let hits = matching(call, Kind::Role, &query, |_, role| match &controllers {
        None => true,
        Some(wanted) => names(role).iter().any(|n| n == "*" || wanted.contains(n)),
    })
    .await?;
    let (total, page) = page_of(hits, from, size, |id, source| hit(&id, source));
    Ok(Reply::Json(json!({"hits": page, "total": total})))
}

/// `scrollUsers` and `scrollProfiles`: the next page of the cursor, on whichever node.
async fn scroll(call: &Call<'_>, searched: Searched) -> ActionResult {
    let id = required_string(call, "scrollId")?;
    let store = &call.node.store;
    let unknown = || ApiError::plain(errors::UNKNOWN_SCROLL_ID);
    let cursor = store
        .get_live(Kind::Scroll, &id)
        .await
        .map_err(store_read_error)?
        .ok_or_else(unknown)?;
    let collection = cursor.get("collection").and_then(Value::as_str);
    if collection.and_then(Searched::parse) != Some(searched) {
        return Err(unknown());
    }
    let query = cursor
        .get("search")
        .and_then(Query::from_json)
        .ok_or_else(unknown)?;
    let number = |name: &str| cursor.get(name).and_then(Value::as_u64).unwrap_or(0);
    let (next, size) = (number("next"), number("size"));
    let ttl = match scroll_arg(call)? {
        Some(ttl) => ttl,
        None => Duration::from_millis(number("ttl").max(1)),
    };
    let hits = matching(call, searched.kind(), &query, |_, _| true).await?;
    let (total, page) = page_of(hits, next, size, |id, source| hit(&id, source));
    let mut cursor = cursor;
    cursor["next"] = json!(next + size);
    cursor["ttl"] = json!(ttl.as_millis() as u64);
    store
        .put_expiring(Kind::Scroll, &id, &cursor, ttl)
        .await
        .map_err(store_write_error)?;
    Ok(Reply::Json(
        json!({"hits": page, "scrollId": id, "total": total}),
    ))
}

pub async fn scroll_users(call: &Call<'_>) -> ActionResult {
    scroll(call, Searched::Users).await
}

pub async fn scroll_profiles(call: &Call<'_>) -> ActionResult {
    scroll(call, Searched::Profiles).await
}
