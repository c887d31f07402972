//! The server's side of a socket: messages to send (shared between subscribers, each
//! deflated at most once per window size) and the writer that frames them straight into
//! the TCP stream the connection owns after the 101.
//!
//! Nothing is copied or buffered per socket while it is idle: a frame is its header
//! (at most 10 bytes, inline) and the message's shared payload, and everything queued
//! goes out in one `writev`. Only what the kernel did not take yet is kept, as those
//! same frames (`Frames`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use bytestring::ByteString;
use tokio::net::TcpStream;

use crate::protocol::deflate::{self, WINDOW_SLOTS};
use crate::protocol::frame::{self, OpCode};

/// One message for one or many sockets. Cloning shares it.
#[derive(Clone)]
pub struct Outgoing(Arc<Payload>);

struct Payload {
    opcode: OpCode,
    data: Bytes,
    /// The compressed form, per window size, made by the first socket that needs it;
    /// `None` if the compressor failed.
    deflated: [OnceLock<Option<Bytes>>; WINDOW_SLOTS],
}

impl Outgoing {
    pub fn text(text: ByteString) -> Self {
        Self::new(OpCode::Text, text.into_bytes())
    }

    pub fn binary(data: Bytes) -> Self {
        Self::new(OpCode::Binary, data)
    }

    /// A PING or PONG; the payload is cut to 125 bytes.
    pub fn control(opcode: OpCode, mut payload: Bytes) -> Self {
        payload.truncate(frame::MAX_CONTROL_PAYLOAD);
        Self::new(opcode, payload)
    }

    fn new(opcode: OpCode, data: Bytes) -> Self {
        Outgoing(Arc::new(Payload {
            opcode,
            data,
            deflated: Default::default(),
        }))
    }

    pub fn len(&self) -> usize {
        self.0.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.data.is_empty()
    }

    pub fn data(&self) -> &Bytes {
        &self.0.data
    }

    pub fn opcode(&self) -> OpCode {
        self.0.opcode
    }

    fn deflated(&self, window_bits: u8) -> Option<Bytes> {
        self.0.deflated[deflate::window_slot(window_bits)]
            .get_or_init(|| deflate::compress(&self.0.data, window_bits))
            .clone()
    }
}

impl From<ByteString> for Outgoing {
    fn from(text: ByteString) -> Self {
        Outgoing::text(text)
    }
}

/// How a socket compresses what it sends, when permessage-deflate was negotiated.
#[derive(Debug, Clone, Copy)]
pub struct Compression {
    pub window_bits: u8,
    /// Messages shorter than this are sent as they are.
    pub threshold: usize,
}

/// One server frame: its header inline and its payload shared with the message.
struct Frame {
    header: [u8; frame::MAX_HEADER],
    header_len: u8,
    payload: Bytes,
}

impl Frame {
    fn new(rsv1: bool, opcode: OpCode, payload: Bytes) -> Self {
        let mut header = [0; frame::MAX_HEADER];
        let header_len = frame::write_header(&mut header, rsv1, opcode, payload.len());
        Frame {
            header,
            header_len: header_len as u8,
            payload,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }
}

/// Frames per `writev`: two slices each, well below `IOV_MAX` (1024 on Linux).
const FRAMES_PER_WRITE: usize = 64;

/// Frames on their way to one socket, in order, and how much of the first already went.
/// Whoever holds them writes them: nothing else may write to the socket.
#[derive(Default)]
pub struct Frames {
    queue: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    written: usize,
}

impl Frames {
    /// Queues one message as a frame, compressed when it is worth it.
    pub fn queue(&mut self, message: &Outgoing, compression: Option<Compression>) {
        let opcode = message.opcode();
        let deflated = match compression {
            Some(c) if !opcode.is_control() && message.len() >= c.threshold => {
                message.deflated(c.window_bits)
            }
            _ => None,
        };
        let frame = match deflated {
            Some(compressed) => Frame::new(true, opcode, compressed),
            None => Frame::new(false, opcode, message.data().clone()),
        };
        self.queue.push_back(frame);
    }

    /// Queues the close frame; nothing may follow it.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        let payload = Bytes::from(frame::close_payload(code, reason));
        self.queue
            .push_back(Frame::new(false, OpCode::Close, payload));
    }

    /// Drops the queued frames that have not started to go out; a frame half written
    /// is kept, so that a close frame can still follow it.
    pub fn drop_unstarted(&mut self) {
        let keep = usize::from(self.written > 0);
        self.queue.truncate(keep);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes until everything is out (`Ok(true)`) or the socket would block (`Ok(false)`).
    /// An idle socket keeps no buffer.
    pub fn write_some(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE * 2];
            let mut count = 0;
            let mut skip = self.written;
            for frame in self.queue.iter().take(FRAMES_PER_WRITE) {
                let header = &frame.header[..usize::from(frame.header_len)];
                for part in [header, &frame.payload[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    slices[count] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    count += 1;
                }
            }
            match stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.queue = VecDeque::new();
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        while let Some(front) = self.queue.front() {
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.queue.pop_front();
        }
    }
}

/// A socket and its frames, for a single writer that awaits the socket itself (the echo
/// endpoint of the Autobahn run; connections write through their `Outbox`).
pub struct SocketWriter {
    stream: Arc<TcpStream>,
    compression: Option<Compression>,
    frames: Frames,
}

impl SocketWriter {
    pub fn new(stream: Arc<TcpStream>, compression: Option<Compression>) -> Self {
        SocketWriter {
            stream,
            compression,
            frames: Frames::default(),
        }
    }

    pub fn queue(&mut self, message: &Outgoing) {
        self.frames.queue(message, self.compression);
    }

    pub fn queue_close(&mut self, code: u16, reason: &str) {
        self.frames.queue_close(code, reason);
    }

    /// Writes everything queued, waiting for the socket as needed. Cancel-safe: what was
    /// not written stays queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.frames.write_some(&self.stream)? {
            self.stream.writable().await?;
        }
        Ok(())
    }

    /// Half-closes: the client sees the end of the stream after the close frame.
    pub fn shutdown(&self) {
        shutdown(&self.stream);
    }
}

/// Half-closes `stream`: the client sees the end of the stream after what was written.
pub fn shutdown(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        (Arc::new(accepted.unwrap().0), client.unwrap())
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        client.read_exact(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn small_messages_go_plain_and_large_ones_compressed_once() {
        let (server, mut client) = pair().await;
        let mut writer = SocketWriter::new(
            server,
            Some(Compression {
                window_bits: 15,
                threshold: 100,
            }),
        );
        writer.queue(&Outgoing::text("short".into()));
        let big = Outgoing::text(ByteString::from("{\"x\":1}".repeat(500)));
        let shared = big.clone();
        writer.queue(&big);
        writer.flush().await.unwrap();
        assert_eq!(read_exactly(&mut client, 7).await, b"\x81\x05short");
        let head = read_exactly(&mut client, 2).await;
        assert_eq!(head[0], 0xC1, "FIN, RSV1, text");
        assert!(usize::from(head[1]) < 126, "compressed to a few bytes");
        let body = read_exactly(&mut client, usize::from(head[1])).await;
        // A second socket sharing the message reuses the same compressed buffer.
        assert_eq!(shared.deflated(15).unwrap(), body);
        assert!(Arc::ptr_eq(&big.0, &shared.0));
    }

    #[tokio::test]
    async fn a_half_written_frame_survives_dropping_the_rest() {
        let (server, mut client) = pair().await;
        let mut writer = SocketWriter::new(server, None);
        let big = Outgoing::text(ByteString::from("y".repeat(8 << 20)));
        writer.queue(&big);
        writer.queue(&Outgoing::text("dropped".into()));
        // The client reads nothing: the socket fills and the first frame stops midway.
        assert!(!writer.frames.write_some(&writer.stream).unwrap());
        assert_eq!(writer.frames.queue.len(), 2);
        assert!(
            writer.frames.written > 0,
            "part of the first frame went out"
        );
        writer.frames.drop_unstarted();
        writer.queue_close(1011, "slow");
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        writer.flush().await.unwrap();
        writer.shutdown();
        let all = reading.await.unwrap();
        let header_len = 10;
        assert_eq!(all.len(), header_len + (8 << 20) + 2 + 6);
        assert_eq!(&all[all.len() - 8..], b"\x88\x06\x03\xF3slow");
    }
}
