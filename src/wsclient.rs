//! A minimal RFC 6455 client for the load tool and the tests. It writes frames exactly
//! as asked (unmasked, invalid UTF-8, oversized, fragmented) so that tests can send what
//! well-behaved clients never would. Not for production use.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushDecompress};

use crate::protocol::deflate::compress_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const CONTINUATION: u8 = 0;
pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;
pub const CLOSE: u8 = 8;
pub const PING: u8 = 9;
pub const PONG: u8 = 10;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Continuation(Vec<u8>),
}

/// One frame whose first byte (FIN, RSV bits, opcode) is given as is, masked with a
/// random key unless told otherwise.
pub fn encode_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(first_byte);
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key: [u8; 4] = rand::random();
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

pub struct Options<'a> {
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// A small SO_RCVBUF makes a client that stops reading fill up quickly.
    pub recv_buffer: Option<u32>,
    /// The local address to connect from (the load tool spreads its sockets over several
    /// 127.0.0.x addresses: one address has only so many ephemeral ports).
    pub source: Option<std::net::IpAddr>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            path: "/",
            headers: &[],
            recv_buffer: None,
            source: None,
        }
    }
}

/// What a connection attempt gave.
pub enum Connected {
    Upgraded(Client),
    /// The server answered without upgrading: its whole answer as text.
    Refused(String),
}

pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    /// The head of the server's 101 answer.
    pub handshake: String,
    /// Set when the server agreed to permessage-deflate: inflates its RSV1 messages.
    inflater: Option<Box<Decompress>>,
    /// Compresses what `send_compressed` sends, keeping its context between messages
    /// (made on first use: it weighs a few hundred KiB).
    compressor: Option<Box<Compress>>,
    /// Payload bytes of the server's data frames, as they were on the wire.
    pub wire_bytes: u64,
    /// Server messages that arrived compressed.
    pub compressed_messages: u64,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Client {
    pub async fn connect(addr: SocketAddr, options: Options<'_>) -> io::Result<Connected> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(source) = options.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            options.path
        );
        for (name, value) in options.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(Connected::Refused(
                    String::from_utf8_lossy(&buf).into_owned(),
                ));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            // Read what follows the head, for the caller to inspect.
            let _ =
                tokio::time::timeout(Duration::from_millis(300), stream.read_buf(&mut buf)).await;
            return Ok(Connected::Refused(
                String::from_utf8_lossy(&buf).into_owned(),
            ));
        }
        buf.advance(head_end);
        let deflate = head.lines().any(|line| {
            line.to_ascii_lowercase()
                .starts_with("sec-websocket-extensions: permessage-deflate")
        });
        Ok(Connected::Upgraded(Client {
            stream,
            buf,
            handshake: head,
            inflater: deflate.then(|| Box::new(Decompress::new(false))),
            compressor: None,
            wire_bytes: 0,
            compressed_messages: 0,
        }))
    }

    /// Writes one frame exactly as given (masked unless told otherwise).
    pub async fn send_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        masked: bool,
    ) -> io::Result<()> {
        self.send_raw_frame((if fin { 0x80 } else { 0 }) | opcode, payload, masked)
            .await
    }

    /// Writes one frame whose first byte (FIN, RSV bits, opcode) is given as is.
    pub async fn send_raw_frame(
        &mut self,
        first_byte: u8,
        payload: &[u8],
        masked: bool,
    ) -> io::Result<()> {
        self.stream
            .write_all(&encode_frame(first_byte, payload, masked))
            .await
    }

    /// Writes `bytes` as they are, in one write (several frames at once, say).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Ends the client's side (a FIN), still reading what the server sends.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(true, TEXT, text.as_bytes(), true).await
    }

    /// Sends a text message compressed with permessage-deflate (RSV1 set), keeping the
    /// compression context from one message to the next.
    pub async fn send_compressed(&mut self, text: &str) -> io::Result<()> {
        if self.inflater.is_none() {
            return Err(invalid("permessage-deflate was not negotiated"));
        }
        let compressor = self
            .compressor
            .get_or_insert_with(|| Box::new(Compress::new(Compression::default(), false)));
        let wire = compress_with(compressor, text.as_bytes())
            .ok_or_else(|| invalid("the compressor failed"))?;
        self.send_raw_frame(0x80 | 0x40 | TEXT, &wire, true).await
    }

    /// The next frame; `None` when the server closed the TCP connection.
    pub async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(Some(frame));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next text message; PINGs are answered and PONGs skipped on the way.
    pub async fn next_text(&mut self) -> io::Result<String> {
        loop {
            match self.next_frame().await? {
                Some(Frame::Text(text)) => return Ok(text),
                Some(Frame::Ping(payload)) => self.send_frame(true, PONG, &payload, true).await?,
                Some(Frame::Pong(_)) => {}
                other => return Err(invalid(format!("expected a text message, got {other:?}"))),
            }
        }
    }

    fn parse_frame(&mut self) -> io::Result<Option<Frame>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            return Err(invalid("the server sent a masked frame"));
        }
        let opcode = b[0] & 0x0f;
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if b.len() < header + len {
            return Ok(None);
        }
        let rsv1 = b[0] & 0x40 != 0;
        self.buf.advance(header);
        let mut payload = self.buf.split_to(len).to_vec();
        if matches!(opcode, TEXT | BINARY | CONTINUATION) {
            self.wire_bytes += len as u64;
        }
        if rsv1 {
            payload = self.inflate(&payload)?;
            self.compressed_messages += 1;
        }
        Ok(Some(match opcode {
            TEXT => Frame::Text(
                String::from_utf8(payload).map_err(|_| invalid("the server sent invalid UTF-8"))?,
            ),
            BINARY => Frame::Binary(payload),
            CONTINUATION => Frame::Continuation(payload),
            CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                Frame::Close(
                    code,
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned(),
                )
            }
            PING => Frame::Ping(payload),
            PONG => Frame::Pong(payload),
            other => return Err(invalid(format!("unknown opcode {other}"))),
        }))
    }

    /// One whole compressed message (the server sends each in a single frame, with no
    /// context kept between messages).
    fn inflate(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let inflater = self
            .inflater
            .as_mut()
            .ok_or_else(|| invalid("RSV1 set without permessage-deflate"))?;
        inflater.reset(false);
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
        let mut out = Vec::with_capacity(payload.len() * 8 + 64);
        loop {
            let done = inflater.total_in() as usize;
            inflater
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
                .map_err(|e| invalid(format!("bad compressed message: {e}")))?;
            if inflater.total_in() as usize == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(1024));
        }
    }
}
