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
use super::deflate::Inflater;
use super::frame::{self, Header, OpCode, Violation};

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

/// What a socket may hold while a message arrives.
#[derive(Clone)]
pub struct Intake {
    /// The node-wide budget of partial input.
    pub budget: Arc<InboundBudget>,
    /// How long a message may take to arrive once its first byte did.
    pub message_timeout: Duration,
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
    intake: Option<Intake>,
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
    pub fn with_intake(mut self, intake: Intake) -> Self {
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
mod tests {
    use super::*;
    use crate::ws::deflate::{self, Agreement};
    use futures_util::StreamExt;
    use std::convert::Infallible;

    fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![(if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        frame::unmask(&mut body, mask);
        frame.extend_from_slice(&body);
        frame
    }

    /// Feeds `bytes` one byte at a time, so that every partial state is exercised.
    async fn read_all(
        bytes: Vec<u8>,
        max: usize,
        deflate: bool,
    ) -> Vec<Result<Message, Violation>> {
        let chunks: Vec<Result<Bytes, Infallible>> = bytes
            .into_iter()
            .map(|b| Ok(Bytes::from(vec![b])))
            .collect();
        let inflater = deflate.then(|| {
            Inflater::new(&Agreement {
                server_window_bits: 15,
                client_no_context_takeover: false,
            })
        });
        let items: Vec<_> = Reader::new(Chunks(futures_util::stream::iter(chunks)), max, inflater)
            .collect()
            .await;
        items
            .into_iter()
            .filter(|item| *item != Ok(Message::End { clean: true }))
            .collect()
    }

    #[tokio::test]
    async fn fragments_with_a_ping_between() {
        let mut bytes = client_frame(false, false, 1, "héllo ".as_bytes());
        bytes.extend(client_frame(true, false, 9, b"p"));
        bytes.extend(client_frame(false, false, 0, &"wörld".as_bytes()[..2]));
        bytes.extend(client_frame(true, false, 0, &"wörld".as_bytes()[2..]));
        assert_eq!(
            read_all(bytes, 100, false).await,
            vec![
                Ok(Message::Ping(Bytes::from_static(b"p"))),
                Ok(Message::Text(Bytes::from("héllo wörld"))),
            ]
        );
    }

    #[tokio::test]
    async fn sequencing_errors() {
        let cases = [
            (
                client_frame(true, false, 0, b"x"),
                "continuation frame without a message",
            ),
            (
                [
                    client_frame(false, false, 1, b"x"),
                    client_frame(true, false, 1, b"y"),
                ]
                .concat(),
                "new message before the last one ended",
            ),
            (
                client_frame(true, true, 1, b"x"),
                "RSV1 set without permessage-deflate",
            ),
        ];
        for (bytes, reason) in cases {
            assert_eq!(
                read_all(bytes, 100, false).await,
                vec![Err(Violation::protocol(reason))],
                "{reason}"
            );
        }
    }

    #[tokio::test]
    async fn invalid_utf8_fails_before_the_message_ends() {
        let mut bytes = client_frame(false, false, 1, b"ok \xFF");
        // Never completed: the violation must come from the first fragment alone.
        bytes.extend(client_frame(false, false, 0, b"more"));
        assert_eq!(
            read_all(bytes, 100, false).await,
            vec![Err(Violation::INVALID_UTF8)]
        );
        let cut = client_frame(true, false, 1, &"é".as_bytes()[..1]);
        assert_eq!(
            read_all(cut, 100, false).await,
            vec![Err(Violation::INVALID_UTF8)]
        );
    }

    #[tokio::test]
    async fn size_is_refused_from_the_header() {
        let mut bytes = client_frame(true, false, 2, &[0; 101]);
        bytes.truncate(8);
        assert_eq!(
            read_all(bytes, 100, false).await,
            vec![Err(Violation::TOO_BIG)]
        );
    }

    #[tokio::test]
    async fn compressed_fragments_and_rsv1_rules() {
        let text = "{\"a\":\"".to_owned() + &"z".repeat(3000) + "\"}";
        let wire = deflate::compress(text.as_bytes(), 15).unwrap();
        let (first, rest) = wire.split_at(wire.len() / 2);
        let mut bytes = client_frame(false, true, 1, first);
        bytes.extend(client_frame(true, false, 0, rest));
        assert_eq!(
            read_all(bytes.clone(), 10_000, true).await,
            vec![Ok(Message::Text(Bytes::from(text.clone())))]
        );
        assert_eq!(
            read_all(bytes, 1000, true).await,
            vec![Err(Violation::TOO_BIG)]
        );

        let mut bytes = client_frame(false, true, 1, first);
        bytes.extend(client_frame(true, true, 0, rest));
        assert_eq!(
            read_all(bytes, 10_000, true).await,
            vec![Err(Violation::protocol("RSV1 set on a continuation frame"))]
        );
        assert_eq!(
            read_all(client_frame(true, true, 9, b""), 100, true).await,
            vec![Err(Violation::protocol("RSV1 set on a control frame"))]
        );
    }

    /// A reader fed `bytes`, then nothing more for ever (a client that went quiet).
    fn quiet_after(
        bytes: Vec<u8>,
        max: usize,
    ) -> Reader<Chunks<impl Stream<Item = Result<Bytes, Infallible>> + Unpin>> {
        let chunks = futures_util::stream::iter(vec![Ok(Bytes::from(bytes))])
            .chain(futures_util::stream::pending());
        Reader::new(Chunks(chunks), max, None)
    }

    #[test]
    fn an_announced_frame_costs_only_the_bytes_that_arrived() {
        let mut bytes = client_frame(true, false, 2, &vec![7; 1 << 20]);
        bytes.truncate(14 + 100);
        let mut reader = quiet_after(bytes, 2 << 20);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut reader).poll_next(&mut cx).is_pending());
        assert_eq!(reader.buf.len(), 114);
        assert!(
            reader.buf.capacity() < 4096,
            "{} bytes held for a frame announcing 1 MiB",
            reader.buf.capacity()
        );
    }

    #[test]
    fn an_idle_reader_holds_no_buffer_between_messages() {
        let mut reader = quiet_after(client_frame(true, false, 1, b"{\"p\":1}"), 1024);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            Pin::new(&mut reader).poll_next(&mut cx),
            Poll::Ready(Some(Ok(Message::Text(_))))
        ));
        assert!(Pin::new(&mut reader).poll_next(&mut cx).is_pending());
        assert_eq!(reader.buf.capacity(), 0);
    }

    fn intake(limit: u64, message_timeout: Duration) -> Intake {
        Intake {
            budget: Arc::new(InboundBudget::new(limit)),
            message_timeout,
        }
    }

    #[tokio::test]
    async fn partial_input_is_taken_from_the_node_wide_budget() {
        let shared = intake(3000, Duration::from_secs(30));
        let mut partial = client_frame(true, false, 2, &[1; 4000]);
        partial.truncate(2000);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut first = quiet_after(partial.clone(), 8000).with_intake(shared.clone());
        assert!(Pin::new(&mut first).poll_next(&mut cx).is_pending());
        assert!(shared.budget.held() >= 2000, "{}", shared.budget.held());
        let mut second = quiet_after(partial, 8000).with_intake(shared.clone());
        assert_eq!(
            Pin::new(&mut second).poll_next(&mut cx),
            Poll::Ready(Some(Err(OVER_BUDGET))),
            "another socket would go past the node's budget"
        );
        assert_eq!(OVER_BUDGET.code, 1013);
        drop(first);
        drop(second);
        assert_eq!(shared.budget.held(), 0, "everything given back");
    }

    #[tokio::test]
    async fn a_message_must_arrive_within_its_deadline_pings_or_not() {
        let mut bytes = client_frame(false, false, 1, b"{\"first\":");
        bytes.extend(client_frame(true, false, 9, b"ping"));
        // The fragment, then a PING every 20 ms for ever: the message never completes.
        let pings = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((
                Ok::<_, Infallible>(Bytes::from(client_frame(true, false, 9, b"p"))),
                (),
            ))
        });
        let input = futures_util::stream::iter(vec![Ok(Bytes::from(bytes))]).chain(pings);
        let mut reader = Reader::new(Chunks(Box::pin(input)), 1024, None)
            .with_intake(intake(1 << 20, Duration::from_millis(200)));
        let mut pings_seen = 0;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reader.next().await {
                    Some(Ok(Message::Ping(_))) => pings_seen += 1,
                    other => return other,
                }
            }
        })
        .await
        .expect("the deadline fires");
        assert_eq!(ended, Some(Err(TOO_SLOW)));
        assert_eq!(TOO_SLOW.code, 1008);
        assert!(pings_seen > 1, "pings arrived meanwhile: {pings_seen}");
    }

    #[tokio::test]
    async fn the_end_of_the_input_says_how_it_ended() {
        let clean: Vec<Result<Bytes, Infallible>> =
            vec![Ok(Bytes::from(client_frame(true, false, 1, b"{}")))];
        let items: Vec<_> = Reader::new(Chunks(futures_util::stream::iter(clean)), 100, None)
            .collect()
            .await;
        assert_eq!(
            items,
            vec![
                Ok(Message::Text(Bytes::from_static(b"{}"))),
                Ok(Message::End { clean: true })
            ]
        );
        let reset: Vec<Result<Bytes, ()>> = vec![Err(())];
        let items: Vec<_> = Reader::new(Chunks(futures_util::stream::iter(reset)), 100, None)
            .collect()
            .await;
        assert_eq!(items, vec![Ok(Message::End { clean: false })]);
    }

    #[tokio::test]
    async fn after_a_violation_what_the_client_still_sends_is_read_and_dropped() {
        let mut bytes = client_frame(true, false, 2, &[0; 200]);
        bytes.extend(vec![0xAB; 150]);
        let chunks: Vec<Result<Bytes, Infallible>> = vec![Ok(Bytes::from(bytes))];
        let mut reader = Reader::new(Chunks(futures_util::stream::iter(chunks)), 100, None);
        assert_eq!(reader.next().await, Some(Err(Violation::TOO_BIG)));
        assert!(matches!(reader.phase, Phase::Discarding(_)));
        assert_eq!(
            reader.next().await,
            None,
            "the input ended while discarding"
        );
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn each_message_has_its_own_deadline() {
        // Every 60 ms a chunk that ends one message and starts the next: the buffer never
        // empties, yet every message arrives within 200 ms of its first byte.
        let frame = client_frame(true, false, 1, b"{\"p\":1}");
        let (head, tail) = frame.split_at(5);
        let (head, tail) = (Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail));
        let chunks = futures_util::stream::unfold(0u32, move |n| {
            let (head, tail) = (head.clone(), tail.clone());
            async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                let chunk = match n {
                    0 => head,
                    10 => return None,
                    _ => Bytes::from([tail.as_ref(), head.as_ref()].concat()),
                };
                Some((Ok::<_, Infallible>(chunk), n + 1))
            }
        });
        let reader = Reader::new(Chunks(Box::pin(chunks)), 1024, None)
            .with_intake(intake(1 << 20, Duration::from_millis(200)));
        let items: Vec<_> = reader.collect().await;
        assert_eq!(items.len(), 10, "{items:?}");
        assert!(
            items[..9].iter().all(|i| matches!(i, Ok(Message::Text(_)))),
            "{items:?}"
        );
    }
}
