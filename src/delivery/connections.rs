//! The node's open sockets, by connection id, each as the outbox that reaches it: for the
//! counts of `server:info` and the metrics, and for closing them all at shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::outbox::Outbox;

#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<Arc<str>, Outbox>>,
    /// Set by `close_all` (the node shuts down): how a socket inserted later is closed.
    closed: Mutex<Option<(u16, String)>>,
}

impl Connections {
    /// A socket opened after `close_all` (its upgrade was under way) is closed at once, the
    /// same way.
    pub fn insert(&self, id: Arc<str>, outbox: Outbox) {
        self.open.lock().insert(id, outbox.clone());
        if let Some((code, reason)) = self.closed.lock().clone() {
            outbox.close(code, &reason);
        }
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
        *self.closed.lock() = Some((code, reason.to_owned()));
        let outboxes: Vec<Outbox> = self.open.lock().values().cloned().collect();
        for outbox in outboxes {
            outbox.close(code, reason);
        }
    }
}
