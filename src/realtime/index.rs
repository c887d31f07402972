//! The candidate index of one index/collection: which conjunctions of which rooms a
//! message may match. A conjunction holding a positive `equals` (or an expanded
//! `in`/`ids`) is filed under that (field, value) and evaluated only for messages that
//! carry it; else one holding a positive `range` is filed in that field's range index and
//! evaluated only for values inside its bounds; the others are scanned. The cost of a
//! publish grows with the rooms it can match, not with all rooms.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use super::filter::{Filter, get_path, scalar_key};

/// One conjunction of one room's filter. It holds the filter, so that evaluating a
/// candidate needs no lookup.
#[derive(Clone)]
pub(super) struct ConjunctionRef {
    pub(super) room: Arc<str>,
    pub(super) filter: Arc<Filter>,
    conjunction: usize,
}

impl ConjunctionRef {
    pub(super) fn matches(&self, doc: &Value) -> bool {
        self.filter
            .conjunctions
            .get(self.conjunction)
            .is_some_and(|c| c.iter().all(|l| l.eval(doc)))
    }
}

/// A conjunction's unique number in its collection index.
type EntryId = u64;

/// Where a conjunction was filed.
pub(super) enum Placement {
    Equality {
        field: String,
        value: String,
        id: EntryId,
    },
    Range {
        field: String,
        lower: f64,
        id: EntryId,
    },
    Scan {
        id: EntryId,
    },
}

/// Conjunctions whose field must lie in [lower, upper], sorted by (lower, id) in blocks
/// of at most `2 × RANGE_BLOCK`, each knowing its largest upper bound: a lookup skips
/// whole blocks, and an insert or a removal touches one block.
#[derive(Default)]
struct RangeIndex {
    blocks: Vec<RangeBlock>,
}

struct RangeBlock {
    entries: Vec<RangeEntry>,
    max_upper: f64,
}

struct RangeEntry {
    lower: f64,
    upper: f64,
    id: EntryId,
    conjunction: ConjunctionRef,
}

impl RangeEntry {
    fn key_cmp(&self, lower: f64, id: EntryId) -> std::cmp::Ordering {
        self.lower.total_cmp(&lower).then(self.id.cmp(&id))
    }
}

const RANGE_BLOCK: usize = 64;

impl RangeBlock {
    fn new(entries: Vec<RangeEntry>) -> RangeBlock {
        let mut block = RangeBlock {
            entries,
            max_upper: f64::NEG_INFINITY,
        };
        block.refresh();
        block
    }

    fn refresh(&mut self) {
        self.max_upper = self
            .entries
            .iter()
            .map(|e| e.upper)
            .fold(f64::NEG_INFINITY, f64::max);
    }
}

impl RangeIndex {
    /// The block that holds, or would hold, the key (lower, id).
    fn block_for(&self, lower: f64, id: EntryId) -> usize {
        let after = self.blocks.partition_point(|b| {
            b.entries
                .last()
                .is_some_and(|e| e.key_cmp(lower, id).is_lt())
        });
        after.min(self.blocks.len().saturating_sub(1))
    }

    fn insert(&mut self, entry: RangeEntry) {
        if self.blocks.is_empty() {
            self.blocks.push(RangeBlock::new(vec![entry]));
            return;
        }
        let b = self.block_for(entry.lower, entry.id);
        let block = &mut self.blocks[b];
        let at = block
            .entries
            .partition_point(|e| e.key_cmp(entry.lower, entry.id).is_lt());
        block.max_upper = block.max_upper.max(entry.upper);
        block.entries.insert(at, entry);
        if block.entries.len() > 2 * RANGE_BLOCK {
            let upper_half = block.entries.split_off(RANGE_BLOCK);
            block.refresh();
            self.blocks.insert(b + 1, RangeBlock::new(upper_half));
        }
    }

    pub(super) fn remove(&mut self, lower: f64, id: EntryId) {
        if self.blocks.is_empty() {
            return;
        }
        let b = self.block_for(lower, id);
        let block = &mut self.blocks[b];
        if let Ok(at) = block.entries.binary_search_by(|e| e.key_cmp(lower, id)) {
            block.entries.remove(at);
            block.refresh();
            if block.entries.is_empty() {
                self.blocks.remove(b);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub(super) fn candidates<'a>(&'a self, value: f64, out: &mut Vec<&'a ConjunctionRef>) {
        for block in &self.blocks {
            if block.entries.first().is_some_and(|e| e.lower > value) {
                break;
            }
            if block.max_upper < value {
                continue;
            }
            out.extend(
                block
                    .entries
                    .iter()
                    .filter(|e| e.lower <= value && e.upper >= value)
                    .map(|e| &e.conjunction),
            );
        }
    }
}

type Bucket = IndexMap<EntryId, ConjunctionRef>;

#[derive(Default)]
pub(super) struct CollectionIndex {
    /// field → scalar key → conjunctions that need that value.
    by_equality: HashMap<String, HashMap<String, Bucket>>,
    /// field → conjunctions that need a number within bounds.
    by_range: HashMap<String, RangeIndex>,
    scan: Bucket,
    next_id: EntryId,
}

impl CollectionIndex {
    /// Files every conjunction of the room's filter; returns where each went.
    pub(super) fn add(&mut self, room: &Arc<str>, filter: &Arc<Filter>) -> Vec<Placement> {
        let mut placements = Vec::with_capacity(filter.conjunctions.len());
        for (i, conjunction) in filter.conjunctions.iter().enumerate() {
            let id = self.next_id;
            self.next_id += 1;
            let entry = ConjunctionRef {
                room: room.clone(),
                filter: filter.clone(),
                conjunction: i,
            };
            let positive = || conjunction.iter().filter(|l| !l.negated);
            let equality = positive().find_map(|l| {
                l.term
                    .equality()
                    .and_then(|(f, v)| scalar_key(v).map(|k| (f.to_owned(), k)))
            });
            if let Some((field, value)) = equality {
                self.by_equality
                    .entry(field.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .insert(id, entry);
                placements.push(Placement::Equality { field, value, id });
            } else if let Some((field, lower, upper)) = positive().find_map(|l| l.term.range()) {
                self.by_range
                    .entry(field.to_owned())
                    .or_default()
                    .insert(RangeEntry {
                        lower,
                        upper,
                        id,
                        conjunction: entry,
                    });
                placements.push(Placement::Range {
                    field: field.to_owned(),
                    lower,
                    id,
                });
            } else {
                self.scan.insert(id, entry);
                placements.push(Placement::Scan { id });
            }
        }
        placements
    }

    /// Removes what `add` filed: O(1) per hashed or scanned conjunction, one block per
    /// ranged one; never a walk over the other rooms.
    pub(super) fn remove(&mut self, placements: &[Placement]) {
        for placement in placements {
            match placement {
                Placement::Equality { field, value, id } => {
                    let Some(values) = self.by_equality.get_mut(field) else {
                        continue;
                    };
                    if let Some(bucket) = values.get_mut(value) {
                        bucket.swap_remove(id);
                        if bucket.is_empty() {
                            values.remove(value);
                        }
                    }
                    if values.is_empty() {
                        self.by_equality.remove(field);
                    }
                }
                Placement::Range { field, lower, id } => {
                    if let Some(index) = self.by_range.get_mut(field) {
                        index.remove(*lower, *id);
                        if index.is_empty() {
                            self.by_range.remove(field);
                        }
                    }
                }
                Placement::Scan { id } => {
                    self.scan.swap_remove(id);
                }
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.scan.is_empty() && self.by_equality.is_empty() && self.by_range.is_empty()
    }

    /// The conjunctions worth evaluating for `doc`.
    pub(super) fn candidates<'a>(&'a self, doc: &Value) -> Vec<&'a ConjunctionRef> {
        let mut out: Vec<&ConjunctionRef> = self.scan.values().collect();
        for (field, values) in &self.by_equality {
            if let Some(refs) = get_path(doc, field)
                .and_then(scalar_key)
                .and_then(|key| values.get(&key))
            {
                out.extend(refs.values());
            }
        }
        for (field, index) in &self.by_range {
            if let Some(value) = get_path(doc, field).and_then(Value::as_f64) {
                index.candidates(value, &mut out);
            }
        }
        out
    }
}
