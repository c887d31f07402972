//! Elementary conditions: their canonical JSON form (for room ids) and their evaluation.

use regex::Regex;
use serde_json::{Map, Value, json};

use super::geo::{self, BoundingBox, Point};
use super::normalize::{
    Conjunction, canonical_dnf, canonical_number, canonical_string, matches_dnf,
};
use super::parse::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub limit: f64,
    pub inclusive: bool,
}

/// A regexp is compiled after the filter's condition count has been checked, so that a
/// request of many regexps costs nothing before it is refused.
#[derive(Debug, Clone)]
pub enum RegexpState {
    Pending {
        /// Where the error would be reported, and the flags as the client wrote them.
        error_path: String,
        written_flags: String,
    },
    Ready(Regex),
}

#[derive(Debug, Clone)]
pub enum Term {
    Everything,
    Equals {
        field: String,
        value: Value,
    },
    /// The path exists; with `value`, the field is an array containing it.
    Exists {
        field: String,
        value: Option<Value>,
    },
    Range {
        field: String,
        lower: Option<Bound>,
        upper: Option<Bound>,
    },
    Regexp {
        field: String,
        pattern: String,
        flags: String,
        compiled: RegexpState,
    },
    Match {
        value: Value,
    },
    Select {
        field: String,
        index: i64,
        query: Box<Node>,
        dnf: Vec<Conjunction>,
    },
    GeoBox {
        field: String,
        top: f64,
        left: f64,
        bottom: f64,
        right: f64,
    },
    GeoDistance {
        field: String,
        center: Point,
        distance: f64,
    },
    GeoDistanceRange {
        field: String,
        center: Point,
        from: f64,
        to: f64,
    },
    GeoPolygon {
        field: String,
        points: Vec<Point>,
    },
}

impl Term {
    /// A `select` whose query's normal form is built later, within the filter's budget
    /// (`Filter::compile`).
    pub fn select(field: String, index: i64, query: Node) -> Term {
        Term::Select {
            field,
            index,
            query: Box::new(query),
            dnf: Vec::new(),
        }
    }

    /// The field an equality index can use, with its value.
    pub fn equality(&self) -> Option<(&str, &Value)> {
        match self {
            Term::Equals { field, value } => Some((field, value)),
            _ => None,
        }
    }

    /// The field a range index can use, with its bounds (open sides infinite). The
    /// index treats bounds as inclusive; the full evaluation settles exclusive ones.
    pub fn range(&self) -> Option<(&str, f64, f64)> {
        match self {
            Term::Range {
                field,
                lower,
                upper,
            } => Some((
                field,
                lower.map_or(f64::NEG_INFINITY, |b| b.limit),
                upper.map_or(f64::INFINITY, |b| b.limit),
            )),
            _ => None,
        }
    }

    /// A deterministic JSON text: equal conditions give equal texts.
    pub fn canonical_string(&self) -> String {
        match self {
            Term::Select {
                field, index, dnf, ..
            } => format!(
                "{{\"select\":{{\"field\":{},\"index\":{index},\"query\":{}}}}}",
                Value::String(field.clone()),
                canonical_dnf(dnf)
            ),
            other => canonical_string(&other.canonical()),
        }
    }

    /// The canonical form as JSON, except for `select` (see `canonical_string`).
    fn canonical(&self) -> Value {
        let point =
            |p: &Point| json!({"lat": canonical_number(p.lat), "lon": canonical_number(p.lon)});
        match self {
            Term::Everything => json!({"everything": true}),
            Term::Equals { field, value } => json!({"equals": {field: canonical_value(value)}}),
            Term::Exists { field, value } => match value {
                None => json!({"exists": {"field": field}}),
                Some(v) => json!({"exists": {"field": field, "value": canonical_value(v)}}),
            },
            Term::Range {
                field,
                lower,
                upper,
            } => {
                let mut bounds = Map::new();
                if let Some(b) = lower {
                    bounds.insert(
                        (if b.inclusive { "gte" } else { "gt" }).into(),
                        canonical_number(b.limit),
                    );
                }
                if let Some(b) = upper {
                    bounds.insert(
                        (if b.inclusive { "lte" } else { "lt" }).into(),
                        canonical_number(b.limit),
                    );
                }
                json!({"range": {field: bounds}})
            }
            Term::Regexp {
                field,
                pattern,
                flags,
                ..
            } => json!({"regexp": {field: {"flags": flags, "value": pattern}}}),
            Term::Match { value } => json!({"match": canonical_value(value)}),
            // Its query is already canonical text.
            Term::Select { .. } => Value::Null,
            Term::GeoBox {
                field,
                top,
                left,
                bottom,
                right,
            } => json!({"geoBoundingBox": {field: {
                "bottom": canonical_number(*bottom), "left": canonical_number(*left),
                "right": canonical_number(*right), "top": canonical_number(*top)}}}),
            Term::GeoDistance {
                field,
                center,
                distance,
            } => {
                json!({"geoDistance": {field: point(center), "distance": canonical_number(*distance)}})
            }
            Term::GeoDistanceRange {
                field,
                center,
                from,
                to,
            } => json!({"geoDistanceRange": {
                field: point(center), "from": canonical_number(*from), "to": canonical_number(*to)}}),
            Term::GeoPolygon { field, points } => {
                json!({"geoPolygon": {field: {"points": points.iter().map(point).collect::<Vec<_>>()}}})
            }
        }
    }

    pub fn eval(&self, doc: &Value) -> bool {
        match self {
            Term::Everything => true,
            Term::Equals { field, value } => {
                get_path(doc, field).is_some_and(|v| scalar_eq(v, value))
            }
            Term::Exists { field, value: None } => get_path(doc, field).is_some(),
            Term::Exists {
                field,
                value: Some(wanted),
            } => {
                matches!(get_path(doc, field), Some(Value::Array(items)) if items.iter().any(|i| scalar_eq(i, wanted)))
            }
            Term::Range {
                field,
                lower,
                upper,
            } => match get_path(doc, field).and_then(Value::as_f64) {
                None => false,
                Some(n) => {
                    lower.is_none_or(|b| {
                        if b.inclusive {
                            n >= b.limit
                        } else {
                            n > b.limit
                        }
                    }) && upper.is_none_or(|b| {
                        if b.inclusive {
                            n <= b.limit
                        } else {
                            n < b.limit
                        }
                    })
                }
            },
            Term::Regexp {
                field, compiled, ..
            } => get_path(doc, field)
                .and_then(Value::as_str)
                .is_some_and(|s| match compiled {
                    RegexpState::Ready(regex) => regex.is_match(s),
                    RegexpState::Pending { .. } => false,
                }),
            Term::Match { value } => partial_match(value, doc),
            Term::Select {
                field, index, dnf, ..
            } => {
                let Some(Value::Array(items)) = get_path(doc, field) else {
                    return false;
                };
                let position = if *index < 0 {
                    items.len() as i64 + index
                } else {
                    *index
                };
                let Some(item) = usize::try_from(position).ok().and_then(|i| items.get(i)) else {
                    return false;
                };
                matches_dnf(dnf, &json!({"value": item}))
            }
            Term::GeoBox {
                field,
                top,
                left,
                bottom,
                right,
            } => {
                let shape = BoundingBox {
                    top: *top,
                    left: *left,
                    bottom: *bottom,
                    right: *right,
                };
                point_at(doc, field).is_some_and(|p| shape.contains(p))
            }
            Term::GeoDistance {
                field,
                center,
                distance,
            } => point_at(doc, field).is_some_and(|p| geo::distance(*center, p) <= *distance),
            Term::GeoDistanceRange {
                field,
                center,
                from,
                to,
            } => point_at(doc, field).is_some_and(|p| {
                let d = geo::distance(*center, p);
                d >= *from && d <= *to
            }),
            Term::GeoPolygon { field, points } => {
                point_at(doc, field).is_some_and(|p| geo::polygon_contains(points, p))
            }
        }
    }
}

fn point_at(doc: &Value, field: &str) -> Option<Point> {
    get_path(doc, field).and_then(geo::parse_point)
}

/// A dotted path through nested objects; paths do not step into arrays.
pub fn get_path<'a>(doc: &'a Value, field: &str) -> Option<&'a Value> {
    field
        .split('.')
        .try_fold(doc, |node, key| node.as_object().and_then(|m| m.get(key)))
}

/// Same JSON type and value; numbers compare numerically.
pub fn scalar_eq(doc_value: &Value, wanted: &Value) -> bool {
    match (doc_value, wanted) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Object(_) | Value::Array(_), _) => false,
        (a, b) => a == b,
    }
}

fn partial_match(filter: &Value, doc: &Value) -> bool {
    match (filter, doc) {
        (Value::Object(f), Value::Object(d)) => f
            .iter()
            .all(|(k, fv)| d.get(k).is_some_and(|dv| partial_match(fv, dv))),
        (Value::Array(f), Value::Array(d)) => {
            f.iter().all(|fv| d.iter().any(|dv| partial_match(fv, dv)))
        }
        (Value::Object(_) | Value::Array(_), _) => false,
        (f, d) => scalar_eq(d, f),
    }
}

/// Numbers in canonical form, everything else unchanged.
fn canonical_value(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or_else(|| value.clone(), canonical_number),
        Value::Array(items) => Value::Array(items.iter().map(canonical_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), canonical_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Used by the matcher's hash index: one key per scalar, numbers by value.
pub fn scalar_key(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_f64().map(|f| format!("n:{}", canonical_number(f))),
        Value::String(s) => Some(format!("s:{s}")),
        Value::Bool(b) => Some(format!("b:{b}")),
        Value::Null => Some("null".into()),
        _ => None,
    }
}
