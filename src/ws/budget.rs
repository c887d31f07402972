//! The node-wide budget of bytes that sockets hold in unfinished frames and messages
//! (PROTOCOL.md §2.4): every socket's reader takes from it what its partial input holds
//! and gives it back as messages complete, so that many sockets each sending most of a
//! large message cannot together exhaust the node's memory.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct InboundBudget {
    limit: u64,
    held: AtomicU64,
}

impl InboundBudget {
    pub fn new(limit: u64) -> Self {
        InboundBudget {
            limit,
            held: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` more; false (nothing taken) when that would go past the limit.
    pub fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub fn give_back(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held by every socket now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::InboundBudget;

    #[test]
    fn takes_up_to_the_limit_and_gives_back() {
        let budget = InboundBudget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(41), "past the limit");
        assert_eq!(budget.held(), 60, "a refusal takes nothing");
        assert!(budget.take(40));
        budget.give_back(100);
        assert_eq!(budget.held(), 0);
    }
}
