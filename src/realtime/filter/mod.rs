//! Kuzzle's filter language: parse and validate, normalise, identify, evaluate.

mod geo;
mod normalize;
mod parse;
mod term;

use serde_json::Value;

pub use normalize::{
    Conjunction, Literal, MAX_CONJUNCTIONS, MAX_LITERALS, MAX_NORMAL_FORM_BYTES, canonical_string,
};
pub use term::{Term, get_path, scalar_key};

/// Deepest nesting of objects and arrays in a filter. Parsing, normalising and matching
/// recurse along it, on worker threads with 2 MiB stacks; nesting any deeper only serves to
/// exhaust them (found by the `realtime_filter` fuzz target).
pub const MAX_DEPTH: usize = 32;

/// The deepest nesting of objects and arrays in `value`, found without recursion.
fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth);
        if deepest > MAX_DEPTH {
            break;
        }
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// Estimated bytes of one distinct condition of a normal form (its literal, its term and
/// their allocations), measured on equality terms (docs/limits.md).
pub const CONDITION_BYTES: u64 = 320;
/// Bytes of a conjunction's reference to a condition.
pub const REFERENCE_BYTES: u64 = 8;
/// Bytes of a conjunction itself and its entry in the collection's index.
pub const CONJUNCTION_BYTES: u64 = 256;

/// A validated filter in normal form.
#[derive(Debug, Clone)]
pub struct Filter {
    pub conjunctions: Vec<Conjunction>,
}

impl Filter {
    /// Parses, checks the condition limit and normalises. The error is the message of
    /// `api.assert.koncorde_dsl_error`.
    pub fn compile(filter: &Value, max_conditions: usize) -> Result<Filter, String> {
        Filter::compile_with(filter, max_conditions, 0)
    }

    /// Like `compile`, refusing normal forms of more than `max_minterms` conjunctions
    /// when it is not 0 (`limits.subscriptionMinterms`).
    pub fn compile_with(
        filter: &Value,
        max_conditions: usize,
        max_minterms: usize,
    ) -> Result<Filter, String> {
        if json_depth(filter) > MAX_DEPTH {
            return Err(format!(
                "Filter too complex: objects and arrays nested deeper than {MAX_DEPTH} levels"
            ));
        }
        let mut tree = parse::parse(filter).map_err(|e| e.message())?;
        let conditions = parse::count_conditions(&tree);
        if conditions > max_conditions {
            return Err(format!(
                "Filter too complex: exceeds the configured maximum number of conditions (conditions: {conditions}, max: {max_conditions})"
            ));
        }
        let mut budget = normalize::Budget::default();
        prepare(&mut tree, &mut budget)?;
        let conjunctions = normalize::to_dnf(&tree, &mut budget).map_err(|e| e.0)?;
        if max_minterms > 0 && conjunctions.len() > max_minterms {
            return Err(format!(
                "Filter too complex: exceeds the configured maximum number of minterms (minterms: {}, max: {max_minterms})",
                conjunctions.len()
            ));
        }
        Ok(Filter { conjunctions })
    }

    /// What keeping this normal form costs, in bytes as estimated for the node-wide
    /// budget of room filters: each distinct condition (a literal and its term), and each
    /// place a conjunction refers to one.
    pub fn footprint(&self) -> u64 {
        let mut distinct: Vec<*const Literal> = self
            .conjunctions
            .iter()
            .flatten()
            .map(std::sync::Arc::as_ptr)
            .collect();
        let references = distinct.len() as u64;
        distinct.sort_unstable();
        distinct.dedup();
        distinct.len() as u64 * CONDITION_BYTES
            + references * REFERENCE_BYTES
            + self.conjunctions.len() as u64 * CONJUNCTION_BYTES
    }

    pub fn matches(&self, doc: &Value) -> bool {
        normalize::matches_dnf(&self.conjunctions, doc)
    }

    /// The deterministic room id of this filter on `index`/`collection`, keyed with the
    /// deployment's room key.
    pub fn room_id(&self, key: &[u8], index: &str, collection: &str) -> String {
        normalize::room_id(key, index, collection, &self.conjunctions)
    }
}

/// Compiles every regexp, then builds the normal form of every `select` query, innermost
/// first, within `budget`.
fn prepare(node: &mut parse::Node, budget: &mut normalize::Budget) -> Result<(), String> {
    match node {
        parse::Node::Everything => Ok(()),
        parse::Node::Term(Term::Select { query, dnf, .. }) => {
            prepare(query, budget)?;
            *dnf = normalize::to_dnf(query, budget).map_err(|e| e.0)?;
            Ok(())
        }
        parse::Node::Term(term) => parse::compile_pending(term).map_err(|e| e.message()),
        parse::Node::And(children) | parse::Node::Or(children) => {
            children.iter_mut().try_for_each(|c| prepare(c, budget))
        }
        parse::Node::Not(child) => prepare(child, budget),
    }
}

#[cfg(test)]
mod tests;
