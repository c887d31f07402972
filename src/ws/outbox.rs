//! The one way bytes reach a socket: a bounded FIFO shared by responses and notifications
//! (PROTOCOL.md §2.6). Anyone may push; one writer drains it into the transport.
//! Past 1000 messages or 4 MiB the client is too slow: the queue is dropped and the
//! socket closed with 1011. One message larger than 4 MiB is still sent when it is queued
//! alone (a long response), uncounted. Nothing else ever waits on a slow client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::writer::Outgoing;
use crate::protocol::close;

pub const MAX_MESSAGES: usize = 1000;
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// PING/PONG frames waiting to go out. Past this, PINGs from the client get no PONG:
/// RFC 6455 only asks to answer the most recent one, and a client that floods PINGs
/// without reading must not grow the node's memory.
pub const MAX_CONTROL_FRAMES: usize = 8;

/// What the writer takes at once (at least one message): what it holds is no longer
/// counted by the queue's bounds, so it is bounded too.
const BATCH_MESSAGES: usize = 256;
const BATCH_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the writer: a message or a close is waiting.
    ready: Notify,
    /// Wakes a writer blocked on the transport: the queue was aborted.
    aborted: Notify,
}

struct State {
    queue: VecDeque<Outgoing>,
    /// PING/PONG frames, sent before the queued messages.
    control: VecDeque<Outgoing>,
    bytes: usize,
    /// The message at the front is larger than `MAX_BYTES` and was queued alone: it is
    /// not counted in `bytes`, so that one large response (a long `realtime:list`) is
    /// still sent, and what follows it is judged by the usual bounds.
    front_exempt: bool,
    close: Option<CloseReason>,
    aborted: bool,
    last_sent: Instant,
}

/// What the writer must do next.
pub enum Next {
    Send(Outgoing),
    Close(CloseReason),
}

/// What the writer must do next, taking everything it can at once.
pub enum Batch {
    /// Control frames first, then messages, in order.
    Send(Vec<Outgoing>),
    Close(CloseReason),
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    control: VecDeque::new(),
                    bytes: 0,
                    front_exempt: false,
                    close: None,
                    aborted: false,
                    last_sent: Instant::now(),
                }),
                ready: Notify::new(),
                aborted: Notify::new(),
            }),
        }
    }

    /// Queues one message. Returns false when the socket is closing, or when this
    /// message made the queue overflow (the socket is then closed with 1011).
    pub fn push(&self, message: impl Into<Outgoing>) -> bool {
        let message = message.into();
        let mut state = self.inner.state.lock();
        if state.close.is_some() {
            return false;
        }
        if state.queue.is_empty() && message.len() > MAX_BYTES {
            state.front_exempt = true;
        } else {
            state.bytes += message.len();
        }
        state.queue.push_back(message);
        if state.queue.len() > MAX_MESSAGES || state.bytes > MAX_BYTES {
            drop(state);
            log::debug!("closing a slow client: outbound queue over its bounds");
            self.abort(close::SERVER_ERROR, close::BACKPRESSURE);
            return false;
        }
        drop(state);
        self.inner.ready.notify_one();
        true
    }

    /// Queues a PING or PONG ahead of the messages; false when the socket is closing or
    /// `MAX_CONTROL_FRAMES` are already waiting.
    pub fn push_control(&self, frame: Outgoing) -> bool {
        let mut state = self.inner.state.lock();
        if state.close.is_some() || state.control.len() >= MAX_CONTROL_FRAMES {
            return false;
        }
        state.control.push_back(frame);
        drop(state);
        self.inner.ready.notify_one();
        true
    }

    /// The close the socket is going through, if any.
    pub fn closing_with(&self) -> Option<CloseReason> {
        self.inner.state.lock().close.clone()
    }

    /// Closes after the queued messages are sent.
    pub fn close(&self, code: u16, reason: &str) {
        let mut state = self.inner.state.lock();
        if state.close.is_none() {
            state.close = Some(close_reason(code, reason));
        }
        drop(state);
        self.inner.ready.notify_one();
    }

    /// Drops the queued messages and closes now, interrupting a blocked send.
    pub fn abort(&self, code: u16, reason: &str) {
        self.abort_with(close_reason(code, reason));
    }

    pub fn abort_with(&self, reason: CloseReason) {
        let mut state = self.inner.state.lock();
        if state.aborted {
            return;
        }
        state.aborted = true;
        state.queue = VecDeque::new();
        state.control = VecDeque::new();
        state.bytes = 0;
        state.front_exempt = false;
        // An abort overrides a pending graceful close: the client is not draining it.
        state.close = Some(reason);
        drop(state);
        self.inner.ready.notify_one();
        self.inner.aborted.notify_waiters();
    }

    pub fn is_closing(&self) -> bool {
        self.inner.state.lock().close.is_some()
    }

    pub fn queued(&self) -> (usize, usize) {
        let state = self.inner.state.lock();
        (state.queue.len(), state.bytes)
    }

    pub fn last_sent(&self) -> Instant {
        self.inner.state.lock().last_sent
    }

    /// The writer's side: the next message, or the close once the queue is empty.
    pub async fn next(&self) -> Next {
        loop {
            let ready = self.inner.ready.notified();
            {
                let mut state = self.inner.state.lock();
                if let Some(message) = state.queue.pop_front() {
                    if state.front_exempt {
                        state.front_exempt = false;
                    } else {
                        state.bytes -= message.len();
                    }
                    return Next::Send(message);
                }
                if let Some(reason) = state.close.clone() {
                    return Next::Close(reason);
                }
            }
            ready.await;
        }
    }

    /// The writer's side: control frames and as many messages as a batch takes, or the
    /// close once nothing is left.
    pub async fn next_batch(&self) -> Batch {
        loop {
            let ready = self.inner.ready.notified();
            {
                let mut state = self.inner.state.lock();
                if !state.control.is_empty() || !state.queue.is_empty() {
                    let mut batch: Vec<Outgoing> = state.control.drain(..).collect();
                    let mut bytes = 0;
                    while batch.len() < BATCH_MESSAGES && (bytes < BATCH_BYTES || batch.is_empty())
                    {
                        let Some(message) = state.queue.pop_front() else {
                            break;
                        };
                        if state.front_exempt {
                            state.front_exempt = false;
                        } else {
                            state.bytes -= message.len();
                        }
                        bytes += message.len();
                        batch.push(message);
                    }
                    if state.queue.is_empty() {
                        // Nothing is kept for an idle socket.
                        state.queue = VecDeque::new();
                    }
                    return Batch::Send(batch);
                }
                if let Some(reason) = state.close.clone() {
                    return Batch::Close(reason);
                }
            }
            ready.await;
        }
    }

    /// Resolves once the queue has been aborted.
    pub async fn aborted(&self) {
        loop {
            let notified = self.inner.aborted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.state.lock().aborted {
                return;
            }
            notified.await;
        }
    }

    pub fn mark_sent(&self) {
        self.inner.state.lock().last_sent = Instant::now();
    }
}

/// The code and reason of the close frame that ends a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

pub fn close_reason(code: u16, reason: &str) -> CloseReason {
    CloseReason {
        code,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn text(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    #[tokio::test]
    async fn delivers_in_order_then_closes() {
        let outbox = Outbox::new();
        assert!(outbox.push(text("a")));
        assert!(outbox.push(text("b")));
        outbox.close(1001, "bye");
        assert!(!outbox.push(text("c")), "closing refuses new messages");
        assert!(matches!(outbox.next().await, Next::Send(m) if m.data() == "a"));
        assert!(matches!(outbox.next().await, Next::Send(m) if m.data() == "b"));
        match outbox.next().await {
            Next::Close(r) => assert_eq!(r, close_reason(1001, "bye")),
            Next::Send(_) => panic!("expected close"),
        }
    }

    #[tokio::test]
    async fn overflow_by_count_closes_with_1011() {
        let outbox = Outbox::new();
        for _ in 0..MAX_MESSAGES {
            assert!(outbox.push(text("x")));
        }
        assert!(!outbox.push(text("x")));
        assert_eq!(outbox.queued(), (0, 0), "the backlog is dropped");
        outbox.aborted().await;
        match outbox.next().await {
            Next::Close(r) => assert_eq!(r, close_reason(1011, close::BACKPRESSURE)),
            Next::Send(_) => panic!("expected close"),
        }
    }

    #[tokio::test]
    async fn overflow_by_bytes() {
        let outbox = Outbox::new();
        let big = text(&"x".repeat(MAX_BYTES / 2));
        assert!(outbox.push(big.clone()));
        assert!(outbox.push(big.clone()));
        assert!(!outbox.push(text("y")), "one byte over 4 MiB");
        assert!(outbox.is_closing());
    }

    #[tokio::test]
    async fn a_lone_message_over_the_byte_bound_is_still_sent() {
        let outbox = Outbox::new();
        let huge = text(&"x".repeat(MAX_BYTES + 10));
        assert!(outbox.push(huge.clone()), "queued alone");
        assert!(outbox.push(text("after")), "what follows is judged alone");
        assert_eq!(outbox.queued(), (2, 5));
        assert!(matches!(outbox.next().await, Next::Send(m) if m.len() == MAX_BYTES + 10));
        assert!(matches!(outbox.next().await, Next::Send(m) if m.data() == "after"));
        assert_eq!(outbox.queued(), (0, 0));
        // Behind other messages, it overflows as before.
        assert!(outbox.push(text("first")));
        assert!(!outbox.push(huge));
        assert!(outbox.is_closing());
    }
}
