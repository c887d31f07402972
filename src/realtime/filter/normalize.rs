//! Normal form (PROTOCOL.md §7.2): negations pushed down to the terms, then disjunctive
//! normal form, with literals and conjunctions sorted by canonical JSON and deduplicated,
//! so that equivalent filters share a room. The room id is an HMAC-SHA256 of it.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::parse::Node;
use super::term::Term;

/// Normal forms larger than this many conjunctions are refused as too complex.
pub const MAX_CONJUNCTIONS: usize = 4096;

const ROOM_KEY: &[u8; 32] = b"^m&mOISKBvb1xpl1mRsrylaQXpjb&IJX";

#[derive(Debug, Clone)]
pub struct Literal {
    pub term: Arc<Term>,
    pub negated: bool,
    /// Canonical JSON of the literal: its sort key and identity.
    pub key: String,
}

impl Literal {
    fn new(term: Arc<Term>, negated: bool) -> Literal {
        let key = canonical_string(&json!({"not": negated, "term": term.canonical()}));
        Literal { term, negated, key }
    }

    pub fn eval(&self, doc: &Value) -> bool {
        self.term.eval(doc) != self.negated
    }
}

pub type Conjunction = Vec<Literal>;

#[derive(Debug)]
pub struct TooComplex;

pub fn to_dnf(node: &Node) -> Result<Vec<Conjunction>, TooComplex> {
    let raw = dnf(node, false)?;
    let mut conjunctions: Vec<Conjunction> = raw.into_iter().filter_map(simplify).collect();
    conjunctions.sort_by_cached_key(conjunction_key);
    conjunctions.dedup_by(|a, b| conjunction_key(a) == conjunction_key(b));
    Ok(conjunctions)
}

fn dnf(node: &Node, negated: bool) -> Result<Vec<Conjunction>, TooComplex> {
    Ok(match node {
        Node::Everything if negated => Vec::new(),
        Node::Everything => vec![vec![Literal::new(Arc::new(Term::Everything), false)]],
        Node::Term(term) => vec![vec![Literal::new(Arc::new(term.clone()), negated)]],
        Node::Not(child) => dnf(child, !negated)?,
        Node::And(children) if !negated => product(children, negated)?,
        Node::Or(children) if negated => product(children, negated)?,
        Node::And(children) | Node::Or(children) => {
            let mut all = Vec::new();
            for child in children {
                all.extend(dnf(child, negated)?);
                if all.len() > MAX_CONJUNCTIONS {
                    return Err(TooComplex);
                }
            }
            all
        }
    })
}

/// The conjunction of children: every combination of one conjunction from each.
fn product(children: &[Node], negated: bool) -> Result<Vec<Conjunction>, TooComplex> {
    let mut result: Vec<Conjunction> = vec![Vec::new()];
    for child in children {
        let parts = dnf(child, negated)?;
        if result.len().saturating_mul(parts.len()) > MAX_CONJUNCTIONS {
            return Err(TooComplex);
        }
        result = result
            .iter()
            .flat_map(|left| {
                parts
                    .iter()
                    .map(move |right| left.iter().chain(right).cloned().collect())
            })
            .collect();
    }
    Ok(result)
}

/// Sorts and deduplicates literals; drops `everything` beside other literals; `None` for a
/// conjunction that holds a literal and its negation (it can never match).
fn simplify(mut conjunction: Conjunction) -> Option<Conjunction> {
    if conjunction.len() > 1 {
        conjunction.retain(|l| !matches!(*l.term, Term::Everything) || l.negated);
    }
    if conjunction.is_empty() {
        return Some(vec![Literal::new(Arc::new(Term::Everything), false)]);
    }
    conjunction.sort_by(|a, b| a.key.cmp(&b.key));
    conjunction.dedup_by(|a, b| a.key == b.key);
    let contradiction = conjunction.iter().any(|a| {
        conjunction
            .iter()
            .any(|b| a.negated != b.negated && a.term.canonical() == b.term.canonical())
    });
    (!contradiction).then_some(conjunction)
}

fn conjunction_key(conjunction: &Conjunction) -> String {
    conjunction
        .iter()
        .map(|l| l.key.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn canonical_dnf(conjunctions: &[Conjunction]) -> Value {
    Value::Array(
        conjunctions
            .iter()
            .map(|c| {
                Value::Array(
                    c.iter()
                        .map(|l| json!({"not": l.negated, "term": l.term.canonical()}))
                        .collect(),
                )
            })
            .collect(),
    )
}

pub fn matches_dnf(conjunctions: &[Conjunction], doc: &Value) -> bool {
    conjunctions.iter().any(|c| c.iter().all(|l| l.eval(doc)))
}

/// Lowercase hex HMAC-SHA256 of `{"filter": <normal form>, "index": "<index>/<collection>"}`.
pub fn room_id(index: &str, collection: &str, conjunctions: &[Conjunction]) -> String {
    let payload = canonical_string(
        &json!({"filter": canonical_dnf(conjunctions), "index": format!("{index}/{collection}")}),
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(ROOM_KEY) else {
        return String::new();
    };
    mac.update(payload.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Integral values as integers, others in shortest round-trip form.
pub fn canonical_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// JSON with object keys sorted and no whitespace.
pub fn canonical_string(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*key).clone()).to_string());
                    out.push(':');
                    write(&map[*key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}
