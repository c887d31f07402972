//! Normal form (PROTOCOL.md §7.2): negations pushed down to the terms, then disjunctive
//! normal form, with literals and conjunctions sorted by canonical JSON and deduplicated,
//! so that equivalent filters share a room. The room id is an HMAC-SHA256 of it.
//!
//! A normal form can be exponentially larger than its filter (an `and` of n two-term
//! `or`s has 2^n conjunctions), so its size is computed from the tree **before** it is
//! built, and a filter whose normal form would exceed [`Budget`] is refused without
//! paying for it. Each distinct literal is built once and shared by every conjunction
//! that holds it.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::parse::Node;
use super::term::Term;

/// Most conjunctions in one normal form.
pub const MAX_CONJUNCTIONS: u64 = 4096;
/// Most literals in one normal form, counted once per conjunction that holds them.
pub const MAX_LITERALS: u64 = 16_384;
/// Most bytes of canonical JSON a filter may produce in all (its normal form and the
/// normal forms of its `select` queries); the room id hashes them.
pub const MAX_NORMAL_FORM_BYTES: u64 = 1 << 20;

#[derive(Debug)]
pub struct Literal {
    pub term: Arc<Term>,
    pub negated: bool,
    /// Canonical JSON of the literal: its sort key and identity.
    pub key: String,
}

impl Literal {
    pub fn eval(&self, doc: &Value) -> bool {
        self.term.eval(doc) != self.negated
    }
}

/// Literals are shared between the conjunctions of a normal form.
pub type Conjunction = Vec<Arc<Literal>>;

/// Why a normal form was not built: the message of `koncorde_dsl_error`.
#[derive(Debug, PartialEq)]
pub struct TooComplex(pub String);

/// What one filter may still spend on normal forms, `select` queries included.
#[derive(Debug)]
pub struct Budget {
    bytes_left: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            bytes_left: MAX_NORMAL_FORM_BYTES,
        }
    }
}

/// Upper bounds of a normal form before simplification: conjunctions, literals, bytes.
#[derive(Debug, Clone, Copy)]
struct Size {
    conjunctions: u64,
    literals: u64,
    bytes: u64,
}

impl Size {
    const EMPTY: Size = Size {
        conjunctions: 0,
        literals: 0,
        bytes: 0,
    };
    /// The neutral element of `and`: one empty conjunction.
    const ONE: Size = Size {
        conjunctions: 1,
        literals: 0,
        bytes: 0,
    };

    fn or(self, other: Size) -> Size {
        Size {
            conjunctions: self.conjunctions.saturating_add(other.conjunctions),
            literals: self.literals.saturating_add(other.literals),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }

    /// Every conjunction of one side combined with every conjunction of the other.
    fn and(self, other: Size) -> Size {
        let cross = |a: u64, b_count: u64, b: u64, a_count: u64| {
            a.saturating_mul(b_count)
                .saturating_add(b.saturating_mul(a_count))
        };
        Size {
            conjunctions: self.conjunctions.saturating_mul(other.conjunctions),
            literals: cross(
                self.literals,
                other.conjunctions,
                other.literals,
                self.conjunctions,
            ),
            bytes: cross(
                self.bytes,
                other.conjunctions,
                other.bytes,
                self.conjunctions,
            ),
        }
    }
}

/// The distinct literals of one filter, each built once.
#[derive(Default)]
struct Literals {
    /// Per term of the tree (by address): the ids of its positive and negated literal.
    by_term: HashMap<*const Term, [u32; 2]>,
    by_key: HashMap<String, u32>,
    /// Canonical form of each distinct term → its id.
    term_keys: HashMap<String, u32>,
    table: Vec<Arc<Literal>>,
    /// Per literal: the id of its term's canonical form, to find contradictions.
    term_ids: Vec<u32>,
}

impl Literals {
    fn collect(&mut self, node: &Node) {
        match node {
            Node::Everything => {}
            Node::Term(term) => {
                let canonical = term.canonical_string();
                let next = self.term_keys.len() as u32;
                let term_id = *self.term_keys.entry(canonical.clone()).or_insert(next);
                let shared = Arc::new(term.clone());
                let ids = [false, true].map(|negated| {
                    let key = format!("{{\"not\":{negated},\"term\":{canonical}}}");
                    self.intern(key, &shared, negated, term_id)
                });
                self.by_term.insert(term as *const Term, ids);
            }
            Node::And(children) | Node::Or(children) => {
                children.iter().for_each(|c| self.collect(c));
            }
            Node::Not(child) => self.collect(child),
        }
    }

    fn intern(&mut self, key: String, term: &Arc<Term>, negated: bool, term_id: u32) -> u32 {
        if let Some(id) = self.by_key.get(&key) {
            return *id;
        }
        let id = self.table.len() as u32;
        self.by_key.insert(key.clone(), id);
        self.table.push(Arc::new(Literal {
            term: term.clone(),
            negated,
            key,
        }));
        self.term_ids.push(term_id);
        id
    }

    fn literal(&self, term: &Term, negated: bool) -> u32 {
        self.by_term
            .get(&(term as *const Term))
            .map_or(0, |ids| ids[usize::from(negated)])
    }

    fn size(&self, node: &Node, negated: bool) -> Size {
        match node {
            Node::Everything if negated => Size::EMPTY,
            Node::Everything => Size::ONE,
            Node::Term(term) => Size {
                conjunctions: 1,
                literals: 1,
                // The key and a separator.
                bytes: self.table[self.literal(term, negated) as usize].key.len() as u64 + 1,
            },
            Node::Not(child) => self.size(child, !negated),
            Node::And(children) if !negated => children
                .iter()
                .fold(Size::ONE, |acc, c| acc.and(self.size(c, negated))),
            Node::Or(children) if negated => children
                .iter()
                .fold(Size::ONE, |acc, c| acc.and(self.size(c, negated))),
            Node::And(children) | Node::Or(children) => children
                .iter()
                .fold(Size::EMPTY, |acc, c| acc.or(self.size(c, negated))),
        }
    }

    /// The normal form over literal ids; its size was bounded by `size` first.
    fn dnf(&self, node: &Node, negated: bool) -> Vec<Vec<u32>> {
        match node {
            Node::Everything if negated => Vec::new(),
            Node::Everything => vec![Vec::new()],
            Node::Term(term) => vec![vec![self.literal(term, negated)]],
            Node::Not(child) => self.dnf(child, !negated),
            Node::And(children) if !negated => self.product(children, negated),
            Node::Or(children) if negated => self.product(children, negated),
            Node::And(children) | Node::Or(children) => {
                children.iter().flat_map(|c| self.dnf(c, negated)).collect()
            }
        }
    }

    fn product(&self, children: &[Node], negated: bool) -> Vec<Vec<u32>> {
        let mut result: Vec<Vec<u32>> = vec![Vec::new()];
        for child in children {
            let parts = self.dnf(child, negated);
            result = result
                .iter()
                .flat_map(|left| {
                    parts
                        .iter()
                        .map(move |right| left.iter().chain(right).copied().collect())
                })
                .collect();
        }
        result
    }
}

/// Bounds, then builds, the normal form of `node`; charges its size to `budget`.
pub fn to_dnf(node: &Node, budget: &mut Budget) -> Result<Vec<Conjunction>, TooComplex> {
    let mut literals = Literals::default();
    literals.collect(node);
    let size = literals.size(node, false);
    if size.conjunctions > MAX_CONJUNCTIONS {
        return Err(TooComplex(format!(
            "Filter too complex: its normal form would hold {} conjunctions (max: {MAX_CONJUNCTIONS})",
            size.conjunctions
        )));
    }
    if size.literals > MAX_LITERALS {
        return Err(TooComplex(format!(
            "Filter too complex: its normal form would hold {} conditions (max: {MAX_LITERALS})",
            size.literals
        )));
    }
    if size.bytes > budget.bytes_left {
        return Err(TooComplex(format!(
            "Filter too complex: its normal form would exceed {MAX_NORMAL_FORM_BYTES} bytes"
        )));
    }
    budget.bytes_left -= size.bytes;

    // Ranks follow the literals' canonical order, so sorting ids by rank sorts by key.
    let mut order: Vec<u32> = (0..literals.table.len() as u32).collect();
    order.sort_by(|a, b| {
        literals.table[*a as usize]
            .key
            .cmp(&literals.table[*b as usize].key)
    });
    let mut rank = vec![0u32; order.len()];
    for (r, id) in order.iter().enumerate() {
        rank[*id as usize] = r as u32;
    }
    let is_everything = |id: u32| {
        let literal = &literals.table[id as usize];
        matches!(*literal.term, Term::Everything) && !literal.negated
    };
    let mut conjunctions: Vec<Vec<u32>> = literals
        .dnf(node, false)
        .into_iter()
        .filter_map(|mut conjunction| {
            conjunction.retain(|id| !is_everything(*id));
            conjunction
                .iter_mut()
                .for_each(|id| *id = rank[*id as usize]);
            conjunction.sort_unstable();
            conjunction.dedup();
            let mut terms: Vec<(u32, bool)> = conjunction
                .iter()
                .map(|r| {
                    let id = order[*r as usize] as usize;
                    (literals.term_ids[id], literals.table[id].negated)
                })
                .collect();
            terms.sort_unstable();
            // A literal beside its own negation can never match.
            let contradiction = terms
                .windows(2)
                .any(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1);
            (!contradiction).then_some(conjunction)
        })
        .collect();
    // Lexicographic order of rank sequences is the order of their joined keys: no key is
    // a prefix of another (each is a whole JSON object).
    conjunctions.sort_unstable();
    conjunctions.dedup();
    let everything = || {
        Arc::new(Literal {
            term: Arc::new(Term::Everything),
            negated: false,
            key: "{\"not\":false,\"term\":{\"everything\":true}}".to_owned(),
        })
    };
    Ok(conjunctions
        .into_iter()
        .map(|ranks| {
            if ranks.is_empty() {
                return vec![everything()];
            }
            ranks
                .iter()
                .map(|r| literals.table[order[*r as usize] as usize].clone())
                .collect()
        })
        .collect())
}

/// The canonical JSON of a normal form: `[[<literal>,…],…]`.
pub fn canonical_dnf(conjunctions: &[Conjunction]) -> String {
    let mut out = String::new();
    write_dnf(conjunctions, &mut |part| out.push_str(part));
    out
}

fn write_dnf(conjunctions: &[Conjunction], out: &mut impl FnMut(&str)) {
    out("[");
    for (i, conjunction) in conjunctions.iter().enumerate() {
        out(if i == 0 { "[" } else { ",[" });
        for (j, literal) in conjunction.iter().enumerate() {
            if j > 0 {
                out(",");
            }
            out(&literal.key);
        }
        out("]");
    }
    out("]");
}

pub fn matches_dnf(conjunctions: &[Conjunction], doc: &Value) -> bool {
    conjunctions.iter().any(|c| c.iter().all(|l| l.eval(doc)))
}

/// Lowercase hex HMAC-SHA256, keyed with `key`, of the canonical JSON
/// `{"filter": <normal form>, "index": "<index>/<collection>"}`, streamed: the normal form
/// is never written out whole.
pub fn room_id(key: &[u8], index: &str, collection: &str, conjunctions: &[Conjunction]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"{\"filter\":");
    write_dnf(conjunctions, &mut |part| mac.update(part.as_bytes()));
    mac.update(b",\"index\":");
    mac.update(
        Value::String(format!("{index}/{collection}"))
            .to_string()
            .as_bytes(),
    );
    mac.update(b"}");
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
