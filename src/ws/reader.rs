//! Turns the bytes a client sends into whole messages, enforcing RFC 6455 and RFC 7692:
//! fragmentation, control frames between fragments, RSV1 only on the first frame of a
//! compressed message, UTF-8 in text messages and close reasons, and the size limit
//! (on the inflated size, checked while inflating). What a socket holds of a message
//! that has not fully arrived is taken from the node-wide `InboundBudget`, and a message
//! must arrive within its deadline.
//!
//! The first violation ends the messages; the reader then reads and discards what the
//! client still sends (bounded in bytes), so that the client's unread bytes do not turn
//! the node's close frame into a reset.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::budget::InboundBudget;
use crate::protocol::deflate::Inflater;
use crate::protocol::frame::{self, Header, OpCode, Violation};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The client's code and reason, if it gave any.
    Close(Option<(u16, String)>),
    /// The input ended (the last item): with a FIN (`clean`), or with an error (a reset).
    End {
        clean: bool,
    },
}

/// A message being reassembled from several frames.
struct Partial {
    binary: bool,
    compressed: bool,
    data: Vec<u8>,
    /// Bytes received on the wire so far (compressed, for a compressed message).
    wire_len: usize,
    /// How much of `data` is known to be valid UTF-8.
    utf8_checked: usize,
}

/// Where a reader's bytes come from.
pub trait Source {
    /// Appends what arrived to `buf`; `Ok(0)` at the end of the input. An error ends the
    /// input abruptly (a reset).
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;
}

/// Bytes already cut into chunks (tests and fuzzing).
pub struct Chunks<S>(pub S);

impl<S, E> Source for Chunks<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match ready!(Pin::new(&mut self.0).poll_next(cx)) {
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                // An empty chunk is not the end of the input.
                Poll::Ready(Ok(chunk.len().max(1)))
            }
            Some(Err(_)) => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            None => Poll::Ready(Ok(0)),
        }
    }
}

/// Reads per worker thread, shared by all its sockets.
const READ_SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SCRATCH].into_boxed_slice());
}

/// A socket the connection owns: each read lands in the worker's scratch buffer and only
/// the bytes that arrived are copied to the reader, which keeps nothing once they are
/// whole messages.
pub struct SocketSource(pub Arc<TcpStream>);

impl Source for SocketSource {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let read = SCRATCH.with_borrow_mut(|scratch| {
                let n = self.0.try_read(scratch)?;
                buf.extend_from_slice(&scratch[..n]);
                Ok::<_, io::Error>(n)
            });
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// What a socket may hold while a message arrives (one per node, shared by its sockets).
pub struct Intake {
    /// The node-wide budget of partial input.
    pub budget: InboundBudget,
    /// How long a message may take to arrive once its first byte did.
    pub message_timeout: Duration,
}

impl Intake {
    /// `partial_budget`: bytes of unfinished messages every socket together may hold;
    /// `message_timeout`: how long one may take to arrive.
    pub fn new(partial_budget: u64, message_timeout: Duration) -> Intake {
        Intake {
            budget: InboundBudget::new(partial_budget),
            message_timeout,
        }
    }
}

enum Phase {
    Reading,
    /// After a violation: bytes the client may still send before the reader stops
    /// reading.
    Discarding(usize),
    Done,
}

pub struct Reader<S> {
    input: S,
    buf: BytesMut,
    max_message: usize,
    inflater: Option<Inflater>,
    partial: Option<Partial>,
    phase: Phase,
    intake: Option<Arc<Intake>>,
    /// Bytes taken from the budget.
    held: u64,
    /// When the message that started arriving must be whole.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// Closes a socket whose partial input would go past the node-wide budget.
pub const OVER_BUDGET: Violation = Violation {
    code: crate::protocol::close::TRY_AGAIN_LATER,
    reason: crate::protocol::close::BUSY,
};

/// Closes a socket whose message did not arrive within `messageTimeout`.
pub const TOO_SLOW: Violation = Violation {
    code: crate::protocol::close::POLICY_VIOLATION,
    reason: crate::protocol::close::MESSAGE_TIMEOUT,
};

impl<S> Reader<S> {
    /// `inflater` is given when permessage-deflate was negotiated.
    pub fn new(input: S, max_message: usize, inflater: Option<Inflater>) -> Self {
        Self::with_bytes(input, BytesMut::new(), max_message, inflater)
    }

    /// A reader whose input starts with `read`, the bytes that came with the handshake.
    pub fn with_bytes(
        input: S,
        read: BytesMut,
        max_message: usize,
        inflater: Option<Inflater>,
    ) -> Self {
        Reader {
            input,
            buf: read,
            max_message,
            inflater,
            partial: None,
            phase: Phase::Reading,
            intake: None,
            held: 0,
            deadline: None,
        }
    }

    /// Partial input taken from `intake`'s budget and bounded in time.
    pub fn with_intake(mut self, intake: Arc<Intake>) -> Self {
        self.intake = Some(intake);
        self
    }

    /// What the client may still send once a violation ended the messages: a message
    /// of the largest size, twice, and a margin.
    fn discard_allowance(&self) -> usize {
        self.max_compressed()
            .saturating_mul(2)
            .saturating_add(64 * 1024)
    }

    /// Brings the budget in line with what the socket holds now, and arms or disarms
    /// the message's deadline.
    fn account(&mut self) -> Result<(), Violation> {
        let Some(intake) = &self.intake else {
            return Ok(());
        };
        let partial = self.partial.as_ref().map_or(0, |p| p.data.capacity());
        let holds = (self.buf.capacity() + partial) as u64;
        if holds > self.held {
            if !intake.budget.take(holds - self.held) {
                return Err(OVER_BUDGET);
            }
        } else if holds < self.held {
            intake.budget.give_back(self.held - holds);
        }
        self.held = holds;
        let arriving = !self.buf.is_empty() || self.partial.is_some();
        match (&self.deadline, arriving) {
            (None, true) => {
                self.deadline = Some(Box::pin(tokio::time::sleep(intake.message_timeout)));
            }
            (Some(_), false) => self.deadline = None,
            _ => {}
        }
        Ok(())
    }

    /// Drops every byte held and gives them back.
    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.partial = None;
        self.deadline = None;
        if let Some(intake) = &self.intake {
            intake.budget.give_back(self.held);
        }
        self.held = 0;
    }

    fn violated(&mut self, violation: Violation) -> Poll<Option<Result<Message, Violation>>> {
        self.release();
        self.phase = Phase::Discarding(self.discard_allowance());
        Poll::Ready(Some(Err(violation)))
    }

    /// Compressed data may be a little larger than what it inflates to.
    fn max_compressed(&self) -> usize {
        self.max_message
            .saturating_add(self.max_message / 256)
            .saturating_add(1024)
    }

    /// What can be refused before the payload arrives.
    fn admit(&self, header: &Header) -> Result<(), Violation> {
        let data_frame = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv1 && !(data_frame && self.inflater.is_some()) {
            return Err(Violation::protocol(match header.opcode {
                OpCode::Continuation => "RSV1 set on a continuation frame",
                _ if self.inflater.is_none() => "RSV1 set without permessage-deflate",
                _ => "RSV1 set on a control frame",
            }));
        }
        let compressed = match (&self.partial, header.opcode) {
            (None, OpCode::Continuation) => {
                return Err(Violation::protocol("continuation frame without a message"));
            }
            (Some(_), OpCode::Text | OpCode::Binary) => {
                return Err(Violation::protocol("new message before the last one ended"));
            }
            (Some(partial), OpCode::Continuation) => partial.compressed,
            (_, opcode) if opcode.is_control() => return Ok(()),
            _ => header.rsv1,
        };
        let so_far = self.partial.as_ref().map_or(0, |p| p.wire_len);
        let limit = if compressed {
            self.max_compressed()
        } else {
            self.max_message
        };
        if (so_far as u64).saturating_add(header.payload_len) > limit as u64 {
            return Err(Violation::TOO_BIG);
        }
        Ok(())
    }

    /// The next whole message already in the buffer, if any.
    fn next_message(&mut self) -> Result<Option<Message>, Violation> {
        loop {
            let Some(header) = frame::parse_header(&self.buf)? else {
                return Ok(None);
            };
            self.admit(&header)?;
            // Bounded by `admit`: at most the size limit, or 125 for control frames.
            let total = header.len + header.payload_len as usize;
            // The buffer grows with what arrives, not with what a header announces: a
            // client that announces a large frame and trickles it pays for its bytes.
            if self.buf.len() < total {
                return Ok(None);
            }
            let mut payload = self.buf.split_to(total).split_off(header.len);
            frame::unmask(&mut payload, header.mask);
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn on_frame(
        &mut self,
        header: Header,
        payload: BytesMut,
    ) -> Result<Option<Message>, Violation> {
        let (binary, fin) = match header.opcode {
            OpCode::Close => return frame::parse_close(&payload).map(|c| Some(Message::Close(c))),
            OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Text | OpCode::Binary if header.fin && !header.rsv1 => {
                // The common case: a whole uncompressed message in one frame, not copied.
                let payload = payload.freeze();
                return Ok(Some(if header.opcode == OpCode::Binary {
                    Message::Binary(payload)
                } else {
                    std::str::from_utf8(&payload).map_err(|_| Violation::INVALID_UTF8)?;
                    Message::Text(payload)
                }));
            }
            OpCode::Text | OpCode::Binary => {
                self.partial = Some(Partial {
                    binary: header.opcode == OpCode::Binary,
                    compressed: header.rsv1,
                    data: Vec::new(),
                    wire_len: 0,
                    utf8_checked: 0,
                });
                (header.opcode == OpCode::Binary, header.fin)
            }
            OpCode::Continuation => (self.partial.as_ref().is_some_and(|p| p.binary), header.fin),
        };
        let max = self.max_message;
        let Some(partial) = self.partial.as_mut() else {
            return Err(Violation::protocol("continuation frame without a message"));
        };
        partial.wire_len += payload.len();
        match (&mut self.inflater, partial.compressed) {
            (Some(inflater), true) => {
                inflater.inflate(&payload, &mut partial.data, max)?;
                if fin {
                    inflater.finish(&mut partial.data, max)?;
                }
            }
            _ => partial.data.extend_from_slice(&payload),
        }
        if !binary {
            check_utf8(partial, fin)?;
        }
        if !fin {
            return Ok(None);
        }
        let data = self
            .partial
            .take()
            .map(|p| Bytes::from(p.data))
            .unwrap_or_default();
        Ok(Some(if binary {
            Message::Binary(data)
        } else {
            Message::Text(data)
        }))
    }
}

/// Checks the bytes added since the last call; fails as soon as a sequence is invalid,
/// and at the end of the message if a character was left incomplete.
fn check_utf8(partial: &mut Partial, fin: bool) -> Result<(), Violation> {
    match std::str::from_utf8(&partial.data[partial.utf8_checked..]) {
        Ok(_) => partial.utf8_checked = partial.data.len(),
        Err(e) if e.error_len().is_some() => return Err(Violation::INVALID_UTF8),
        Err(e) => partial.utf8_checked += e.valid_up_to(),
    }
    if fin && partial.utf8_checked != partial.data.len() {
        return Err(Violation::INVALID_UTF8);
    }
    Ok(())
}

impl<S> Drop for Reader<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: Source + Unpin> Reader<S> {
    /// After a violation: reads and drops what arrives until the input ends or the
    /// allowance is spent.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Violation>>> {
        loop {
            let Phase::Discarding(allowance) = &mut self.phase else {
                return Poll::Ready(None);
            };
            match self.input.poll_read_into(cx, &mut self.buf) {
                Poll::Ready(Ok(n)) if n > 0 && n < *allowance => {
                    *allowance -= n;
                    self.buf.clear();
                }
                Poll::Ready(_) => {
                    self.phase = Phase::Done;
                    self.release();
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: Source + Unpin> Stream for Reader<S> {
    type Item = Result<Message, Violation>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Reading => {}
            Phase::Discarding(_) => return this.poll_discard(cx),
            Phase::Done => return Poll::Ready(None),
        }
        loop {
            match this.next_message() {
                Ok(Some(message)) => {
                    let completed = matches!(message, Message::Text(_) | Message::Binary(_));
                    if this.held > 0 || (completed && this.deadline.is_some()) {
                        // The deadline was this message's: what follows starts its own.
                        // Control frames between fragments do not end it.
                        if completed {
                            this.deadline = None;
                        }
                        if let Err(violation) = this.account() {
                            return this.violated(violation);
                        }
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(violation) => return this.violated(violation),
            }
            if this.buf.is_empty() {
                // Between messages an idle socket keeps no buffer.
                this.buf = BytesMut::new();
            }
            if let Err(violation) = this.account() {
                return this.violated(violation);
            }
            if let Some(deadline) = &mut this.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return this.violated(TOO_SLOW);
            }
            match this.input.poll_read_into(cx, &mut this.buf) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                // The input ended: the last item says how.
                Poll::Ready(ended) => {
                    this.phase = Phase::Done;
                    this.release();
                    return Poll::Ready(Some(Ok(Message::End {
                        clean: ended.is_ok(),
                    })));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
