//! Parses and validates Kuzzle's filter language (PROTOCOL.md §7.1) into a tree of
//! terms and operands. Errors use Koncorde's wording, prefixed with the keyword path.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::geo::{self, Point};
use super::term::{Bound, RegexpState, Term};

#[derive(Debug, Clone)]
pub enum Node {
    Everything,
    Term(Term),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

/// A filter error: the dotted keyword path and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterError {
    pub path: String,
    pub reason: String,
}

impl FilterError {
    pub fn message(&self) -> String {
        if self.path.is_empty() {
            self.reason.clone()
        } else {
            format!("\"{}\": {}", self.path, self.reason)
        }
    }
}

type Parsed<T> = Result<T, FilterError>;

fn err<T>(path: &str, reason: impl Into<String>) -> Parsed<T> {
    Err(FilterError {
        path: path.to_owned(),
        reason: reason.into(),
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "property" } else { "properties" }
}

/// Parses a whole filter; `{}` matches everything.
pub fn parse(filter: &Value) -> Parsed<Node> {
    match filter {
        Value::Object(map) if map.is_empty() => Ok(Node::Everything),
        other => parse_node(other, ""),
    }
}

fn parse_node(value: &Value, path: &str) -> Parsed<Node> {
    let Value::Object(map) = value else {
        return err(path, "must be an object");
    };
    if map.is_empty() {
        return err(path, "must be a non-empty object");
    }
    if map.len() > 1 {
        return err(
            path,
            "Invalid filter syntax. Filters must have one keyword only",
        );
    }
    let Some((keyword, arg)) = map.iter().next() else {
        return err(path, "must be a non-empty object");
    };
    let here = join(path, keyword);
    match keyword.as_str() {
        "equals" => {
            let (field, value) = single_field(arg, &here)?;
            Ok(Node::Term(Term::Equals {
                field,
                value: scalar(value, &join(&here, field_name(arg)))?,
            }))
        }
        "in" => {
            let (field, values) = single_field(arg, &here)?;
            let strings = string_list(values, &join(&here, &field))?;
            Ok(Node::Or(
                strings
                    .into_iter()
                    .map(|s| {
                        Node::Term(Term::Equals {
                            field: field.clone(),
                            value: Value::String(s),
                        })
                    })
                    .collect(),
            ))
        }
        "exists" => parse_exists(arg, &here),
        "missing" => Ok(Node::Not(Box::new(parse_exists(arg, &here)?))),
        "range" => parse_range(arg, &here),
        "regexp" => parse_regexp(arg, &here),
        "ids" => {
            let map = exact_object(arg, &here, 1)?;
            let Some(values) = map.get("values") else {
                return not_allowed(map, &["values"], &here);
            };
            let ids = string_list(values, &join(&here, "values"))?;
            Ok(Node::Or(
                ids.into_iter()
                    .map(|id| {
                        Node::Term(Term::Equals {
                            field: "_id".into(),
                            value: Value::String(id),
                        })
                    })
                    .collect(),
            ))
        }
        "match" => match arg {
            Value::Object(m) if !m.is_empty() => Ok(Node::Term(Term::Match { value: arg.clone() })),
            _ => err(&here, "must be a non-empty object"),
        },
        "select" => parse_select(arg, &here),
        "geoBoundingBox" => {
            let (field, shape) = single_field(arg, &here)?;
            let Some(b) = geo::parse_box(shape) else {
                return err(&join(&here, &field), "unrecognized geo-point format");
            };
            Ok(Node::Term(Term::GeoBox {
                field,
                top: b.top,
                left: b.left,
                bottom: b.bottom,
                right: b.right,
            }))
        }
        "geoDistance" => {
            let map = exact_object(arg, &here, 2)?;
            let (field, center) = geo_center(map, &here, &["distance"])?;
            let distance = distance_arg(map, "distance", &here)?;
            Ok(Node::Term(Term::GeoDistance {
                field,
                center,
                distance,
            }))
        }
        "geoDistanceRange" => {
            let map = exact_object(arg, &here, 3)?;
            let (field, center) = geo_center(map, &here, &["from", "to"])?;
            let from = distance_arg(map, "from", &here)?;
            let to = distance_arg(map, "to", &here)?;
            if from >= to {
                return err(&here, "inner radius must be smaller than outer radius");
            }
            Ok(Node::Term(Term::GeoDistanceRange {
                field,
                center,
                from,
                to,
            }))
        }
        "geoPolygon" => {
            let (field, shape) = single_field(arg, &here)?;
            let field_path = join(&here, &field);
            let Value::Object(shape) = shape else {
                return err(&field_path, "must be an object");
            };
            let Some(points) = shape.get("points") else {
                return err(&field_path, "the property \"points\" is missing");
            };
            let Value::Array(points) = points else {
                return err(&join(&field_path, "points"), "must be an array");
            };
            if points.len() < 3 {
                return err(
                    &join(&field_path, "points"),
                    "at least 3 points are required to build a polygon",
                );
            }
            let points: Option<Vec<Point>> = points.iter().map(geo::parse_point).collect();
            let Some(points) = points else {
                return err(&join(&field_path, "points"), "unrecognized point format");
            };
            Ok(Node::Term(Term::GeoPolygon { field, points }))
        }
        "and" | "or" => {
            let children = filter_list(arg, &here)?;
            Ok(if keyword == "and" {
                Node::And(children)
            } else {
                Node::Or(children)
            })
        }
        "not" => Ok(Node::Not(Box::new(parse_node(arg, &here)?))),
        "bool" => parse_bool(arg, &here),
        _ => err(&here, "unknown keyword"),
    }
}

fn field_name(arg: &Value) -> &str {
    arg.as_object()
        .and_then(|m| m.keys().next())
        .map_or("", String::as_str)
}

/// An object with exactly `n` properties.
fn exact_object<'a>(arg: &'a Value, path: &str, n: usize) -> Parsed<&'a Map<String, Value>> {
    let Value::Object(map) = arg else {
        return err(path, "must be an object");
    };
    if map.len() != n {
        return err(
            path,
            format!(
                "expected object to have exactly {n} {}, got {}",
                plural(n),
                map.len()
            ),
        );
    }
    Ok(map)
}

/// `{"<field>": <value>}`: exactly one non-empty field name.
fn single_field<'a>(arg: &'a Value, path: &str) -> Parsed<(String, &'a Value)> {
    let map = exact_object(arg, path, 1)?;
    let Some((field, value)) = map.iter().next() else {
        return err(path, "must be a non-empty object");
    };
    if field.is_empty() {
        return err(path, "cannot test empty field name");
    }
    Ok((field.clone(), value))
}

fn scalar(value: &Value, path: &str) -> Parsed<Value> {
    match value {
        Value::Object(_) | Value::Array(_) => err(
            path,
            "must either be a string, a number, a boolean, or null",
        ),
        other => Ok(other.clone()),
    }
}

fn string_list(value: &Value, path: &str) -> Parsed<Vec<String>> {
    let Value::Array(items) = value else {
        return err(path, "must be an array");
    };
    if items.is_empty() {
        return err(path, "cannot be empty");
    }
    items
        .iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| FilterError {
                path: path.to_owned(),
                reason: "must hold only values of type \"string\"".into(),
            })
        })
        .collect()
}

fn not_allowed<T>(map: &Map<String, Value>, allowed: &[&str], path: &str) -> Parsed<T> {
    let bad = map
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .cloned()
        .unwrap_or_default();
    err(
        path,
        format!(
            "\"{bad}\" is not an allowed attribute (allowed: {})",
            allowed.join(",")
        ),
    )
}

/// `"field"`, `"field[<JSON scalar>]"` (with `\[` and `\]` escapes), or `{"field": "..."}`.
fn parse_exists(arg: &Value, path: &str) -> Parsed<Node> {
    let raw = match arg {
        Value::String(s) => s.as_str(),
        Value::Object(map) if !map.is_empty() => match map.get("field") {
            Some(Value::String(s)) if map.len() == 1 => s.as_str(),
            Some(_) if map.len() == 1 => return err(&join(path, "field"), "must be a string"),
            _ => return not_allowed(map, &["field"], path),
        },
        _ => return err(path, "must be either a string or a non-empty object"),
    };
    let (field, value) = split_array_value(raw).ok_or_else(|| FilterError {
        path: path.to_owned(),
        reason: format!("contains an invalid array value (\"{raw}\")"),
    })?;
    if field.is_empty() {
        return err(path, "cannot test empty field name");
    }
    Ok(Node::Term(Term::Exists { field, value }))
}

/// Splits `name[value]` into the unescaped name and the parsed JSON scalar.
fn split_array_value(raw: &str) -> Option<(String, Option<Value>)> {
    let bytes = raw.as_bytes();
    let escaped = |i: usize| i > 0 && bytes[i - 1] == b'\\';
    let open = (0..bytes.len()).find(|&i| bytes[i] == b'[' && !escaped(i));
    let unescape = |s: &str| s.replace("\\[", "[").replace("\\]", "]");
    match open {
        None => Some((unescape(raw), None)),
        Some(i) => {
            let last = bytes.len() - 1;
            if bytes[last] != b']' || escaped(last) || last <= i {
                return None;
            }
            let inner = &raw[i + 1..last];
            let value: Value = serde_json::from_str(inner).ok()?;
            if value.is_object() || value.is_array() {
                return None;
            }
            Some((unescape(&raw[..i]), Some(value)))
        }
    }
}

fn parse_range(arg: &Value, path: &str) -> Parsed<Node> {
    let (field, bounds) = single_field(arg, path)?;
    let field_path = join(path, &field);
    let Value::Object(bounds) = bounds else {
        return err(&field_path, "must be a non-empty object");
    };
    if bounds.is_empty() {
        return err(&field_path, "must be a non-empty object");
    }
    let (mut lower, mut upper): (Option<Bound>, Option<Bound>) = (None, None);
    for (key, value) in bounds {
        let key_path = join(&field_path, key);
        let inclusive = match key.as_str() {
            "gt" | "lt" => false,
            "gte" | "lte" => true,
            _ => return not_allowed(bounds, &["gt", "gte", "lt", "lte"], &field_path),
        };
        let Some(limit) = value.as_f64() else {
            return err(&key_path, "must be a number");
        };
        let bound = Bound { limit, inclusive };
        if key.starts_with('g') {
            if lower.replace(bound).is_some() {
                return err(&field_path, "only 1 lower boundary allowed");
            }
        } else if upper.replace(bound).is_some() {
            return err(&field_path, "only 1 upper boundary allowed");
        }
    }
    if let (Some(l), Some(u)) = (lower, upper)
        && l.limit >= u.limit
    {
        return err(
            &field_path,
            "lower boundary must be strictly inferior to the upper one",
        );
    }
    Ok(Node::Term(Term::Range {
        field,
        lower,
        upper,
    }))
}

fn parse_regexp(arg: &Value, path: &str) -> Parsed<Node> {
    let (field, spec) = single_field(arg, path)?;
    let field_path = join(path, &field);
    let (pattern, flags) = match spec {
        Value::String(p) => (p.clone(), String::new()),
        Value::Object(map) if !map.is_empty() => {
            if map.keys().any(|k| k != "value" && k != "flags") {
                return not_allowed(map, &["value", "flags"], &field_path);
            }
            let Some(value) = map.get("value") else {
                return err(&field_path, "the property \"value\" is missing");
            };
            let Value::String(pattern) = value else {
                return err(&join(&field_path, "value"), "must be a string");
            };
            let flags = match map.get("flags") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(f)) => f.clone(),
                Some(_) => return err(&join(&field_path, "flags"), "must be a string"),
            };
            (pattern.clone(), flags)
        }
        _ => return err(&field_path, "must be either a string or a non-empty object"),
    };
    if let Some(bad) = flags
        .chars()
        .find(|c| !matches!(c, 'i' | 'm' | 's' | 'g' | 'u'))
    {
        return err(
            &field_path,
            format!(
                "cannot parse regexp expression \"/{pattern}/{flags}\" (invalid flag \"{bad}\")"
            ),
        );
    }
    // Compiled once the filter's size is known to be within its limits (`prepare`).
    let compiled = RegexpState::Pending {
        error_path: field_path,
        written_flags: flags.clone(),
    };
    Ok(Node::Term(Term::Regexp {
        field,
        pattern,
        flags: canonical_flags(&flags),
        compiled,
    }))
}

/// `i`, `m` and `s` change matching; `g` and `u` have no effect (CN-31).
fn canonical_flags(flags: &str) -> String {
    let mut kept: Vec<char> = flags
        .chars()
        .filter(|c| matches!(c, 'i' | 'm' | 's'))
        .collect();
    kept.sort_unstable();
    kept.dedup();
    kept.into_iter().collect()
}

/// Compiled regular expressions are bounded in size, so that one condition cannot hold
/// megabytes (a counted repetition of a Unicode class compiles to a large program).
const REGEXP_SIZE_LIMIT: usize = 256 * 1024;

/// Deepest nesting of groups and repetitions in a pattern. The regex compiler recurses
/// along it; its default (250) let `a*****…` overflow a worker's 2 MiB stack, aborting the
/// node (found by the `realtime_filter` fuzz target).
const REGEXP_NEST_LIMIT: u32 = 32;

/// Compiles a pattern with canonical flags (`i`, `m`, `s`).
pub fn compile_regexp(pattern: &str, flags: &str) -> Result<Regex, String> {
    let full = if flags.is_empty() {
        pattern.to_owned()
    } else {
        format!("(?{flags}){pattern}")
    };
    RegexBuilder::new(&full)
        .size_limit(REGEXP_SIZE_LIMIT)
        .nest_limit(REGEXP_NEST_LIMIT)
        .dfa_size_limit(REGEXP_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
}

/// Compiles a pending regexp term; the error is the whole filter error.
pub fn compile_pending(term: &mut Term) -> Parsed<()> {
    let Term::Regexp {
        pattern,
        flags,
        compiled,
        ..
    } = term
    else {
        return Ok(());
    };
    let RegexpState::Pending {
        error_path,
        written_flags,
    } = compiled
    else {
        return Ok(());
    };
    match compile_regexp(pattern, flags) {
        Ok(regex) => {
            *compiled = RegexpState::Ready(regex);
            Ok(())
        }
        Err(reason) => err(
            error_path,
            format!("cannot parse regexp expression \"/{pattern}/{written_flags}\" ({reason})"),
        ),
    }
}

fn parse_select(arg: &Value, path: &str) -> Parsed<Node> {
    let map = exact_object(arg, path, 3)?;
    if map
        .keys()
        .any(|k| !matches!(k.as_str(), "field" | "index" | "query"))
    {
        return not_allowed(map, &["field", "index", "query"], path);
    }
    let Some(Value::String(field)) = map.get("field") else {
        return err(&join(path, "field"), "must be a string");
    };
    if field.is_empty() {
        return err(&join(path, "field"), "cannot test empty field name");
    }
    let index = match map.get("index") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => i,
            None if n.as_f64().is_some_and(|f| f.fract() != 0.0) => {
                return err(
                    &join(path, "index"),
                    "cannot have decimals, must be an integer",
                );
            }
            None => return err(&join(path, "index"), "must be an integer"),
        },
        _ => return err(&join(path, "index"), "must be an integer"),
    };
    let query_path = join(path, "query");
    let query = parse(map.get("query").unwrap_or(&Value::Null)).map_err(|e| {
        if e.path.is_empty() {
            FilterError {
                path: query_path.clone(),
                reason: e.reason,
            }
        } else {
            FilterError {
                path: join(&query_path, &e.path),
                reason: e.reason,
            }
        }
    })?;
    Ok(Node::Term(Term::select(field.clone(), index, query)))
}

/// The geopoint field of `geoDistance`/`geoDistanceRange`: the one key besides `others`.
fn geo_center(map: &Map<String, Value>, path: &str, others: &[&str]) -> Parsed<(String, Point)> {
    let mut fields = map.iter().filter(|(k, _)| !others.contains(&k.as_str()));
    let Some((field, point)) = fields.next() else {
        return err(path, "the property \"<field>\" is missing");
    };
    if fields.next().is_some() {
        let missing = others
            .iter()
            .find(|o| !map.contains_key(**o))
            .copied()
            .unwrap_or_default();
        return err(path, format!("the property \"{missing}\" is missing"));
    }
    if field.is_empty() {
        return err(path, "cannot test empty field name");
    }
    let center = geo::parse_point(point).ok_or_else(|| FilterError {
        path: join(path, field),
        reason: "unrecognized geo-point format".into(),
    })?;
    Ok((field.clone(), center))
}

fn distance_arg(map: &Map<String, Value>, key: &str, path: &str) -> Parsed<f64> {
    let Some(value) = map.get(key) else {
        return err(path, format!("the property \"{key}\" is missing"));
    };
    geo::parse_distance(value).ok_or_else(|| {
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        FilterError {
            path: join(path, key),
            reason: format!("unable to parse distance value \"{shown}\""),
        }
    })
}

fn filter_list(arg: &Value, path: &str) -> Parsed<Vec<Node>> {
    let Value::Array(items) = arg else {
        return err(path, "must be an array");
    };
    if items.is_empty() {
        return err(path, "cannot be empty");
    }
    if items
        .iter()
        .any(|i| !matches!(i, Value::Object(m) if !m.is_empty()))
    {
        return err(path, "can only contain non-empty objects");
    }
    items.iter().map(|item| parse_node(item, path)).collect()
}

fn parse_bool(arg: &Value, path: &str) -> Parsed<Node> {
    let Value::Object(map) = arg else {
        return err(path, "must be a non-empty object");
    };
    if map.is_empty() {
        return err(path, "must be a non-empty object");
    }
    const CLAUSES: [&str; 4] = ["must", "must_not", "should", "should_not"];
    if map.keys().any(|k| !CLAUSES.contains(&k.as_str())) {
        return not_allowed(map, &CLAUSES, path);
    }
    let mut all = Vec::new();
    for clause in CLAUSES {
        let Some(list) = map.get(clause) else {
            continue;
        };
        let children = filter_list(list, &join(path, clause))?;
        all.push(match clause {
            "must" => Node::And(children),
            "must_not" => Node::Not(Box::new(Node::Or(children))),
            "should" => Node::Or(children),
            _ => Node::Or(
                children
                    .into_iter()
                    .map(|c| Node::Not(Box::new(c)))
                    .collect(),
            ),
        });
    }
    Ok(Node::And(all))
}

/// Elementary conditions, `in` and `ids` counting one per value (§7.1 limit).
pub fn count_conditions(node: &Node) -> usize {
    match node {
        Node::Everything => 0,
        Node::Term(Term::Select { query, .. }) => 1 + count_conditions(query),
        Node::Term(_) => 1,
        Node::And(children) | Node::Or(children) => children.iter().map(count_conditions).sum(),
        Node::Not(child) => count_conditions(child),
    }
}
