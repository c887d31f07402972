//! Kuzzle's filter language: parse and validate, normalise, identify, evaluate.

mod geo;
mod normalize;
mod parse;
mod term;

use serde_json::Value;

pub use normalize::{Conjunction, Literal, MAX_CONJUNCTIONS, canonical_string};
pub use term::{Term, get_path, scalar_key};

/// A validated filter in normal form.
#[derive(Debug, Clone)]
pub struct Filter {
    pub conjunctions: Vec<Conjunction>,
}

impl Filter {
    /// Parses, checks the condition limit and normalises. The error is the message of
    /// `api.assert.koncorde_dsl_error`.
    pub fn compile(filter: &Value, max_conditions: usize) -> Result<Filter, String> {
        let tree = parse::parse(filter).map_err(|e| e.message())?;
        let conditions = parse::count_conditions(&tree);
        if conditions > max_conditions {
            return Err(format!(
                "Filter too complex: exceeds the configured maximum number of conditions (conditions: {conditions}, max: {max_conditions})"
            ));
        }
        let conjunctions = normalize::to_dnf(&tree).map_err(|_| {
            format!("Filter too complex: its normal form exceeds {MAX_CONJUNCTIONS} conjunctions")
        })?;
        Ok(Filter { conjunctions })
    }

    pub fn matches(&self, doc: &Value) -> bool {
        normalize::matches_dnf(&self.conjunctions, doc)
    }

    /// The deterministic room id of this filter on `index`/`collection`.
    pub fn room_id(&self, index: &str, collection: &str) -> String {
        normalize::room_id(index, collection, &self.conjunctions)
    }
}

#[cfg(test)]
mod tests;
