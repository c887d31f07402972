//! The node's open WebSocket connections, by connection id, and what they hold together
//! of partial input.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::budget::InboundBudget;
use super::outbox::Outbox;
use super::reader::Intake;

pub struct ConnectionRegistry {
    open: Mutex<HashMap<Arc<str>, Outbox>>,
    intake: Arc<Intake>,
}

impl ConnectionRegistry {
    /// `partial_budget`: bytes of unfinished messages every socket together may hold;
    /// `message_timeout`: how long one may take to arrive.
    pub fn new(partial_budget: u64, message_timeout: std::time::Duration) -> Self {
        ConnectionRegistry {
            open: Mutex::default(),
            intake: Arc::new(Intake {
                budget: InboundBudget::new(partial_budget),
                message_timeout,
            }),
        }
    }

    /// What every socket's reader takes its partial input from.
    pub fn intake(&self) -> &Arc<Intake> {
        &self.intake
    }

    pub fn insert(&self, id: Arc<str>, outbox: Outbox) {
        self.open.lock().insert(id, outbox);
    }

    pub fn remove(&self, id: &str) {
        self.open.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &str) -> Option<Outbox> {
        self.open.lock().get(id).cloned()
    }

    /// Closes every socket after what is already queued for it.
    pub fn close_all(&self, code: u16, reason: &str) {
        let outboxes: Vec<Outbox> = self.open.lock().values().cloned().collect();
        for outbox in outboxes {
            outbox.close(code, reason);
        }
    }
}
