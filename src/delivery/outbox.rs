//! The one way bytes reach a socket: a bounded FIFO shared by responses and notifications
//! (PROTOCOL.md §2.6), and the socket's frames on their way out.
//!
//! Past 1000 messages or 4 MiB the client is too slow: the queue is dropped and the
//! socket closed with 1011. One message larger than 4 MiB is still sent when it is queued
//! alone (a long response), uncounted. Nothing ever waits on a slow client.
//!
//! Whoever holds the lock may write, without blocking: the connection's write loop
//! (responses, control frames, the close, and whatever the socket could not take at
//! once), and the fan-out (`deliver`): a notification is queued without waking the
//! connection, and its worker's `Flusher` writes every socket that got one, once, after
//! the fan-out, so that a burst still leaves in one `writev` per socket. The first few
//! sockets of a fan-out are written at once, so that the first delivery never waits for
//! the whole room to be queued.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::writer::{Compression, Frames, Outgoing};
use crate::protocol::close;

pub const MAX_MESSAGES: usize = 1000;
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// PING/PONG frames waiting to go out. Past this, PINGs from the client get no PONG:
/// RFC 6455 only asks to answer the most recent one, and a client that floods PINGs
/// without reading must not grow the node's memory.
pub const MAX_CONTROL_FRAMES: usize = 8;

/// What a writer turns into frames at once (at least one message): frames are no longer
/// counted by the queue's bounds, so they are bounded too.
const BATCH_MESSAGES: usize = 256;
const BATCH_BYTES: usize = 1024 * 1024;

/// Sockets a fan-out writes itself before leaving the rest to the flushers.
const WRITTEN_AT_ONCE: usize = 16;

/// A hold on a socket's notifications (`Outbox::hold`); they go out when the last one
/// drops.
pub struct Hold {
    outbox: Outbox,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.outbox.inner.state.lock();
        state.holds = state.holds.saturating_sub(1);
        if state.holds > 0 || state.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut state.held);
        if state.close.is_some() {
            return; // nothing more goes out but the close
        }
        state.queue.extend(held);
        drop(state);
        self.outbox.inner.ready.notify_one();
    }
}

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the write loop: a message, a close, or a socket that would block.
    ready: Notify,
    /// `None` for a queue without a socket (tests): messages are only taken with `next`.
    sink: Option<Sink>,
}

struct Sink {
    stream: Arc<TcpStream>,
    compression: Option<Compression>,
    /// The flusher of the worker the socket lives on.
    flusher: Arc<Flusher>,
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
    /// The close ends with a close frame (false: the client ended without one, so the
    /// socket only shuts down once what is queued is out).
    close_frame: bool,
    /// When the socket started closing (the node decided, or the client ended): its
    /// close deadline runs from here.
    closing_since: Option<Instant>,
    aborted: bool,
    last_sent: Instant,
    /// Frames taken from the queues and not fully written.
    frames: Frames,
    /// The socket is on its flusher's list.
    flush_pending: bool,
    /// The socket failed: nothing more can be written.
    failed: bool,
    /// Subscribes in progress on the socket (`hold`): notifications wait in `held` until
    /// their answers are queued.
    holds: usize,
    /// Notifications that came during a hold, in order; counted in the queue's bounds.
    held: VecDeque<Outgoing>,
}

/// What the writer must do next (a queue without a socket, in tests).
#[cfg(test)]
pub enum Next {
    Send(Outgoing),
    Close(CloseReason),
}

/// What a write left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is out.
    Idle,
    /// The socket would block: the write loop waits for it.
    Blocked,
    /// The socket failed.
    Failed,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// A queue without a socket.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// The queue of `stream`, on the current worker thread.
    pub fn for_socket(stream: Arc<TcpStream>, compression: Option<Compression>) -> Self {
        Self::build(Some(Sink {
            stream,
            compression,
            flusher: Flusher::of_this_thread(),
        }))
    }

    fn build(sink: Option<Sink>) -> Self {
        Outbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    control: VecDeque::new(),
                    bytes: 0,
                    front_exempt: false,
                    close: None,
                    close_frame: true,
                    closing_since: None,
                    aborted: false,
                    last_sent: Instant::now(),
                    frames: Frames::default(),
                    flush_pending: false,
                    failed: false,
                    holds: 0,
                    held: VecDeque::new(),
                }),
                ready: Notify::new(),
                sink,
            }),
        }
    }

    /// Queues one message and wakes the write loop. Returns false when the socket is
    /// closing, or when this message made the queue overflow (the socket is then closed
    /// with 1011).
    pub fn push(&self, message: impl Into<Outgoing>) -> bool {
        let queued = self.enqueue(message.into());
        if queued {
            self.inner.ready.notify_one();
        }
        queued
    }

    /// Queues one message without waking the write loop (part of a fan-out: see
    /// `deliver`). True when the socket must be put on its flusher's list. During a hold
    /// the notification waits behind the answers being prepared.
    fn enqueue_for_flush(&self, message: Outgoing) -> bool {
        let mut state = self.inner.state.lock();
        if state.close.is_some() {
            return false;
        }
        if state.holds > 0 {
            state.bytes += message.len();
            state.held.push_back(message);
            if state.queue.len() + state.held.len() > MAX_MESSAGES || state.bytes > MAX_BYTES {
                drop(state);
                self.overflowed();
            }
            return false;
        }
        if !Self::enqueue_locked(&mut state, message) {
            drop(state);
            self.overflowed();
            return false;
        }
        if self.inner.sink.is_none() {
            drop(state);
            self.inner.ready.notify_one();
            return false;
        }
        !std::mem::replace(&mut state.flush_pending, true)
    }

    /// Holds the socket's notifications until the guard drops: a subscribe queues its
    /// answer before any notification of the room it creates, so that a client (the SDK
    /// listens to a room's channel once it has the answer) misses none. Other rooms'
    /// notifications wait too, for as long as the subscribe runs (bounded by its own
    /// bounds: the command timeout); they count in the queue's bounds meanwhile.
    pub fn hold(&self) -> Hold {
        self.inner.state.lock().holds += 1;
        Hold {
            outbox: self.clone(),
        }
    }

    fn enqueue(&self, message: Outgoing) -> bool {
        let mut state = self.inner.state.lock();
        if state.close.is_some() {
            return false;
        }
        if Self::enqueue_locked(&mut state, message) {
            return true;
        }
        drop(state);
        self.overflowed();
        false
    }

    /// Queues on an open socket; false when that went over the bounds.
    fn enqueue_locked(state: &mut State, message: Outgoing) -> bool {
        if state.queue.is_empty() && message.len() > MAX_BYTES {
            state.front_exempt = true;
        } else {
            state.bytes += message.len();
        }
        state.queue.push_back(message);
        state.queue.len() <= MAX_MESSAGES && state.bytes <= MAX_BYTES
    }

    fn overflowed(&self) {
        log::debug!("closing a slow client: outbound queue over its bounds");
        self.abort(close::SERVER_ERROR, close::BACKPRESSURE);
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
        self.close_with(close_reason(code, reason));
    }

    pub fn close_with(&self, reason: CloseReason) {
        let mut state = self.inner.state.lock();
        if state.close.is_none() {
            state.close = Some(reason);
            state.closing_since.get_or_insert_with(Instant::now);
        }
        drop(state);
        self.inner.ready.notify_one();
    }

    /// The client ended without a close frame: once the queued messages are out, the
    /// socket shuts down without one (counted as 1006).
    pub fn finish(&self) {
        let mut state = self.inner.state.lock();
        if state.close.is_none() {
            state.close = Some(close_reason(close::ABNORMAL, ""));
            state.close_frame = false;
            state.closing_since.get_or_insert_with(Instant::now);
        }
        drop(state);
        self.inner.ready.notify_one();
    }

    /// Starts the close deadline before the close itself is decided (the client ended,
    /// and the requests it sent before are still running).
    pub fn begin_closing(&self) {
        self.inner
            .state
            .lock()
            .closing_since
            .get_or_insert_with(Instant::now);
        self.inner.ready.notify_one();
    }

    /// When the socket started closing, if it did.
    pub fn closing_since(&self) -> Option<Instant> {
        self.inner.state.lock().closing_since
    }

    /// Drops the queued messages and closes now; a frame half written is finished first,
    /// so that the close frame can follow it.
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
        state.frames.drop_unstarted();
        // An abort overrides a pending graceful close: the client is not draining it.
        state.close = Some(reason);
        state.close_frame = true;
        state.closing_since.get_or_insert_with(Instant::now);
        drop(state);
        self.inner.ready.notify_one();
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

    /// Writes what is queued, as far as the socket takes it without blocking.
    pub fn flush(&self) -> Flushed {
        let Some(sink) = &self.inner.sink else {
            return Flushed::Idle;
        };
        let mut state = self.inner.state.lock();
        Self::flush_locked(&mut state, sink)
    }

    fn flush_locked(state: &mut State, sink: &Sink) -> Flushed {
        if state.failed {
            return Flushed::Failed;
        }
        let mut wrote = false;
        loop {
            if state.frames.is_empty() && !Self::take_batch(state, sink) {
                if wrote {
                    state.last_sent = Instant::now();
                }
                return Flushed::Idle;
            }
            match state.frames.write_some(&sink.stream) {
                Ok(true) => wrote = true,
                Ok(false) => return Flushed::Blocked,
                Err(_) => {
                    state.failed = true;
                    return Flushed::Failed;
                }
            }
        }
    }

    /// Turns the control frames and a batch of messages into frames; false if none.
    fn take_batch(state: &mut State, sink: &Sink) -> bool {
        if state.control.is_empty() && state.queue.is_empty() {
            return false;
        }
        while let Some(control) = state.control.pop_front() {
            state.frames.queue(&control, None);
        }
        let (mut count, mut bytes) = (0, 0);
        while count < BATCH_MESSAGES && (bytes < BATCH_BYTES || count == 0) {
            let Some(message) = state.queue.pop_front() else {
                break;
            };
            if state.front_exempt {
                state.front_exempt = false;
            } else {
                state.bytes -= message.len();
            }
            bytes += message.len();
            count += 1;
            state.frames.queue(&message, sink.compression);
        }
        if state.queue.is_empty() {
            // Nothing is kept for an idle socket.
            state.queue = VecDeque::new();
        }
        true
    }

    /// For the write loop: once everything before it is out, queues the close frame;
    /// `None` while there is no close to send.
    pub fn queue_close_frame(&self) -> Option<CloseReason> {
        let mut state = self.inner.state.lock();
        if !state.queue.is_empty() || !state.control.is_empty() || !state.frames.is_empty() {
            return None;
        }
        let reason = state.close.clone()?;
        if state.close_frame {
            state.frames.queue_close(reason.code, &reason.reason);
        }
        Some(reason)
    }

    /// Resolves when the write loop has something to do.
    pub async fn ready(&self) {
        self.inner.ready.notified().await;
    }

    /// The socket, for the write loop to wait until it takes more.
    pub fn stream(&self) -> Option<&Arc<TcpStream>> {
        self.inner.sink.as_ref().map(|sink| &sink.stream)
    }

    /// The writer's side of a queue without a socket: the next message, or the close
    /// once the queue is empty.
    #[cfg(test)]
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

    /// Every message queued so far, parsed as JSON (tests of what a socket would receive).
    #[cfg(test)]
    pub async fn drain_json(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while self.queued().0 > 0 {
            if let Next::Send(text) = self.next().await {
                out.push(serde_json::from_slice(text.data()).expect("JSON"));
            }
        }
        out
    }

    /// Called by the flusher: writes, and hands a socket that would block to its write loop.
    fn flush_for_fan_out(&self) {
        let Some(sink) = &self.inner.sink else {
            return;
        };
        let mut state = self.inner.state.lock();
        state.flush_pending = false;
        let flushed = Self::flush_locked(&mut state, sink);
        drop(state);
        if flushed != Flushed::Idle {
            self.inner.ready.notify_one();
        }
    }

    fn flusher(&self) -> Option<&Arc<Flusher>> {
        self.inner.sink.as_ref().map(|sink| &sink.flusher)
    }
}

/// The sockets of one worker thread that a fan-out queued messages for, written by one
/// task on that worker once the fan-out is done.
#[derive(Default)]
pub struct Flusher {
    pending: Mutex<Vec<Outbox>>,
    wake: Notify,
}

impl Flusher {
    /// This worker's flusher, started on first use.
    fn of_this_thread() -> Arc<Flusher> {
        thread_local! {
            static FLUSHER: OnceCell<Arc<Flusher>> = const { OnceCell::new() };
        }
        FLUSHER.with(|cell| {
            cell.get_or_init(|| {
                let flusher = Arc::new(Flusher::default());
                let running = flusher.clone();
                tokio::task::spawn_local(async move { running.run().await });
                flusher
            })
            .clone()
        })
    }

    async fn run(&self) {
        loop {
            let notified = self.wake.notified();
            let pending = std::mem::take(&mut *self.pending.lock());
            if pending.is_empty() {
                notified.await;
                continue;
            }
            for outbox in pending {
                outbox.flush_for_fan_out();
            }
        }
    }
}

/// Delivers one fan-out: every message is queued first; the first sockets are written at
/// once, the others by their worker's flusher, one `writev` each whatever the fan-out
/// queued for them.
pub fn deliver<'a>(deliveries: impl IntoIterator<Item = (&'a Outbox, &'a Outgoing)>) {
    let mut flushers: Vec<(Arc<Flusher>, Vec<Outbox>)> = Vec::new();
    for (i, (outbox, message)) in deliveries.into_iter().enumerate() {
        if !outbox.enqueue_for_flush(message.clone()) {
            continue;
        }
        if i < WRITTEN_AT_ONCE {
            outbox.flush_for_fan_out();
            continue;
        }
        let Some(flusher) = outbox.flusher() else {
            continue;
        };
        match flushers.iter_mut().find(|(f, _)| Arc::ptr_eq(f, flusher)) {
            Some((_, list)) => list.push(outbox.clone()),
            None => flushers.push((flusher.clone(), vec![outbox.clone()])),
        }
    }
    for (flusher, list) in flushers {
        flusher.pending.lock().extend(list);
        flusher.wake.notify_one();
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
    async fn a_hold_keeps_notifications_behind_the_answer() {
        let outbox = Outbox::new();
        let before = Outgoing::from(text("before"));
        deliver([(&outbox, &before)]);
        let hold = outbox.hold();
        let during = Outgoing::from(text("notification"));
        deliver([(&outbox, &during)]);
        assert_eq!(outbox.queued().0, 1, "held, not queued");
        assert!(outbox.push(text("answer")));
        drop(hold);
        for expected in ["before", "answer", "notification"] {
            assert!(matches!(outbox.next().await, Next::Send(m) if m.data() == expected));
        }
        // Nested holds release on the last one; held notifications count in the bounds.
        let (a, b) = (outbox.hold(), outbox.hold());
        for _ in 0..MAX_MESSAGES {
            deliver([(&outbox, &during)]);
        }
        drop(a);
        assert_eq!(outbox.queued().0, 0);
        deliver([(&outbox, &during)]);
        assert!(outbox.is_closing(), "past the bound: 1011");
        drop(b);
        assert!(
            matches!(outbox.next().await, Next::Close(r) if r == close_reason(1011, close::BACKPRESSURE))
        );
    }

    #[tokio::test]
    async fn overflow_by_count_closes_with_1011() {
        let outbox = Outbox::new();
        for _ in 0..MAX_MESSAGES {
            assert!(outbox.push(text("x")));
        }
        assert!(!outbox.push(text("x")));
        assert_eq!(outbox.queued(), (0, 0), "the backlog is dropped");
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

    #[tokio::test]
    async fn a_fan_out_reaches_every_socket_in_order() {
        use tokio::io::AsyncReadExt;
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let (mut clients, mut outboxes) = (Vec::new(), Vec::new());
                // More sockets than a fan-out writes itself: the flusher writes the rest.
                for _ in 0..WRITTEN_AT_ONCE + 24 {
                    let (accepted, client) =
                        tokio::join!(listener.accept(), TcpStream::connect(addr));
                    let stream = Arc::new(accepted.unwrap().0);
                    outboxes.push(Outbox::for_socket(stream, None));
                    clients.push(client.unwrap());
                }
                let (one, two) = (Outgoing::text(text("one")), Outgoing::text(text("two")));
                deliver(outboxes.iter().map(|o| (o, &one)));
                deliver(outboxes.iter().map(|o| (o, &two)));
                for client in &mut clients {
                    let mut frames = [0; 10];
                    client.read_exact(&mut frames).await.unwrap();
                    assert_eq!(&frames, b"\x81\x03one\x81\x03two");
                }
                assert!(outboxes.iter().all(|o| o.queued() == (0, 0)));
            })
            .await;
    }
}
