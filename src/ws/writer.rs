//! The server's side of a socket: messages to send (shared between subscribers, each
//! deflated at most once per window size) and the transport that frames them into the
//! HTTP response body.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::deflate::{self, WINDOW_SLOTS};
use super::frame::{self, OpCode};

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

/// The transport is gone: nothing more can be sent.
#[derive(Debug)]
pub struct Closed;

enum Chunk {
    Bytes(Bytes),
    /// The close frame went out: the body ends and the connection with it.
    End,
}

/// Frames waiting for the HTTP layer; past this, sending waits (backpressure).
const CHANNEL_CAPACITY: usize = 16;

/// Payloads up to this size are copied next to their header to make one write.
const COPY_BELOW: usize = 1024;

#[derive(Clone)]
pub struct Transport {
    tx: mpsc::Sender<Chunk>,
    compression: Option<Compression>,
}

impl Transport {
    /// The transport and the response body it feeds.
    pub fn new(compression: Option<Compression>) -> (Transport, Body) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        (Transport { tx, compression }, Body { rx, ended: false })
    }

    pub async fn send(&self, message: &Outgoing) -> Result<(), Closed> {
        let deflated = match self.compression {
            Some(c) if message.len() >= c.threshold => message.deflated(c.window_bits),
            _ => None,
        };
        let (rsv1, payload) = match deflated {
            Some(compressed) => (true, compressed),
            None => (false, message.0.data.clone()),
        };
        let header = frame::encode_header(rsv1, message.0.opcode, payload.len());
        if payload.len() < COPY_BELOW {
            let mut frame = BytesMut::with_capacity(header.len() + payload.len());
            frame.extend_from_slice(&header);
            frame.extend_from_slice(&payload);
            self.write(frame.freeze()).await
        } else {
            self.write(header).await?;
            self.write(payload).await
        }
    }

    pub async fn ping(&self, payload: &[u8]) -> Result<(), Closed> {
        self.control(OpCode::Ping, payload).await
    }

    pub async fn pong(&self, payload: &[u8]) -> Result<(), Closed> {
        self.control(OpCode::Pong, payload).await
    }

    async fn control(&self, opcode: OpCode, payload: &[u8]) -> Result<(), Closed> {
        let payload = &payload[..payload.len().min(frame::MAX_CONTROL_PAYLOAD)];
        self.write(frame::encode_frame(opcode, payload)).await
    }

    /// Sends a close frame, then ends the body: nothing can follow it.
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), Closed> {
        let payload = frame::close_payload(code, reason);
        self.write(frame::encode_frame(OpCode::Close, &payload))
            .await?;
        self.tx.send(Chunk::End).await.map_err(|_| Closed)
    }

    async fn write(&self, bytes: Bytes) -> Result<(), Closed> {
        self.tx.send(Chunk::Bytes(bytes)).await.map_err(|_| Closed)
    }
}

/// The upgraded response's body: the frames the transport wrote.
pub struct Body {
    rx: mpsc::Receiver<Chunk>,
    ended: bool,
}

impl Stream for Body {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Chunk::Bytes(bytes))) => Poll::Ready(Some(Ok(bytes))),
            Poll::Ready(Some(Chunk::End) | None) => {
                this.ended = true;
                this.rx.close();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn written(body: &mut Body) -> Vec<u8> {
        body.next().await.unwrap().unwrap().to_vec()
    }

    #[tokio::test]
    async fn small_messages_go_plain_and_large_ones_compressed_once() {
        let (transport, mut body) = Transport::new(Some(Compression {
            window_bits: 15,
            threshold: 100,
        }));
        transport
            .send(&Outgoing::text("short".into()))
            .await
            .unwrap();
        assert_eq!(written(&mut body).await, b"\x81\x05short");

        let big = Outgoing::text(ByteString::from("{\"x\":1}".repeat(500)));
        let shared = big.clone();
        transport.send(&big).await.unwrap();
        let frame = written(&mut body).await;
        assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
        assert!(usize::from(frame[1]) < 126, "compressed to a few bytes");
        // A second socket sharing the message reuses the same compressed buffer.
        let again = shared.deflated(15).unwrap();
        assert_eq!(again, frame[2..]);
        assert!(Arc::ptr_eq(&big.0, &shared.0));
    }

    #[tokio::test]
    async fn close_ends_the_body() {
        let (transport, mut body) = Transport::new(None);
        transport.close(1001, "bye").await.unwrap();
        assert_eq!(written(&mut body).await, b"\x88\x05\x03\xE9bye");
        assert!(body.next().await.is_none());
        assert!(
            transport.ping(b"").await.is_err(),
            "nothing after the close"
        );
    }
}
