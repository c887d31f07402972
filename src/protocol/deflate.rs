//! permessage-deflate (RFC 7692): negotiating it in the handshake, inflating what clients
//! send, and deflating what the server sends.
//!
//! The server always answers with `server_no_context_takeover`: every outgoing message is
//! compressed on its own, so one notification is deflated once (per window size) and the
//! same bytes go to every subscriber that agreed on that window size, and no connection
//! keeps a compressor. Clients keep their own context unless they offered
//! `client_no_context_takeover`; then each connection has an inflater holding the
//! client's window (created on the first compressed message).

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::Violation;
use crate::protocol::close;

/// What both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The largest window (base-2 logarithm) the client lets the server use.
    pub server_window_bits: u8,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
}

const DEFAULT_WINDOW_BITS: u8 = 15;

/// The empty stored block that ends each compressed message; it is removed on the wire.
const MESSAGE_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Chooses the first `permessage-deflate` offer this server can honour, from the values
/// of every `Sec-WebSocket-Extensions` header. Returns the agreement and the value of the
/// response header, or `None` when nothing acceptable was offered.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<(Agreement, String)> {
    for header in headers {
        for offer in split_outside_quotes(header, ',') {
            let mut parts = split_outside_quotes(offer, ';').into_iter();
            if parts.next().map(str::trim) != Some("permessage-deflate") {
                continue;
            }
            if let Some(agreement) = accept_offer(parts) {
                return Some((agreement, response_header(&agreement)));
            }
        }
    }
    None
}

fn accept_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreement> {
    let mut agreement = Agreement {
        server_window_bits: DEFAULT_WINDOW_BITS,
        client_no_context_takeover: false,
    };
    let mut seen: Vec<&str> = Vec::new();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim()))),
            None => (param.trim(), None),
        };
        // A parameter given twice makes the offer invalid (RFC 7692 §7).
        if seen.contains(&name) {
            return None;
        }
        seen.push(name);
        match (name, value) {
            ("server_no_context_takeover", None) => {}
            ("client_no_context_takeover", None) => agreement.client_no_context_takeover = true,
            ("server_max_window_bits", Some(value)) => {
                agreement.server_window_bits = window_bits(value)?
            }
            // The client limits its own window; inflating with the largest window
            // decodes any smaller one, so there is nothing to answer.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
    }
    Some(agreement)
}

/// 8 to 15, in decimal without leading zeroes.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn response_header(agreement: &Agreement) -> String {
    let mut header = String::from("permessage-deflate; server_no_context_takeover");
    if agreement.client_no_context_takeover {
        header.push_str("; client_no_context_takeover");
    }
    if agreement.server_window_bits != DEFAULT_WINDOW_BITS {
        header.push_str(&format!(
            "; server_max_window_bits={}",
            agreement.server_window_bits
        ));
    }
    header
}

/// zlib cannot deflate with a 256-byte window; with 512 bytes it never refers further
/// back than 250 bytes (its window minus its 262-byte lookahead), so its output is valid
/// for a peer that asked for 8 bits.
fn effective_window_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// Where a message compressed for `bits` is cached: one slot per distinct effective window.
pub const WINDOW_SLOTS: usize = 7;

pub fn window_slot(bits: u8) -> usize {
    usize::from(effective_window_bits(bits) - 9)
}

/// Measured on a 3.6 KB notification (zlib-rs): level 1 takes 8 µs for 4.1×, but only
/// uses fixed Huffman codes (random data grows 6%); level 2 takes 18 µs for 5.4×;
/// level 6, 25 µs for 5.6×. Each message is deflated once whatever its audience.
const LEVEL: u32 = 2;

thread_local! {
    static COMPRESSORS: RefCell<[Option<Compress>; WINDOW_SLOTS]> = Default::default();
}

/// The wire payload of `data` as one compressed message with no context (`None` only if
/// the compressor fails). Incompressible data is still sent compressed, a few bytes
/// larger, as Node's `ws` does: a message's form then depends on its size alone.
pub fn compress(data: &[u8], window_bits: u8) -> Option<Bytes> {
    let bits = effective_window_bits(window_bits);
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let compressor = compressors[window_slot(bits)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)
        });
        let result = compress_with(compressor, data);
        compressor.reset();
        result
    })
}

/// `data` as one permessage-deflate message from `compressor`, whose context is left as
/// it is (the test client keeps it between messages); `None` if the compressor fails.
pub fn compress_with(compressor: &mut Compress, data: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let start_in = compressor.total_in();
    loop {
        let consumed = (compressor.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        compressor
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .ok()?;
        let done = compressor.total_in() - start_in == data.len() as u64;
        // A sync flush is complete once it did not fill the output.
        if done && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&MESSAGE_TAIL) {
        return None;
    }
    out.truncate(out.len() - MESSAGE_TAIL.len());
    Some(Bytes::from(out))
}

const CORRUPT: Violation = Violation {
    code: close::INVALID_PAYLOAD,
    reason: "invalid compressed data",
};

/// Inflates one connection's compressed messages.
pub struct Inflater {
    keep_context: bool,
    state: Option<Box<Decompress>>,
}

/// The first room made for output, so that a small frame never allocates the whole
/// limit up front.
const INFLATE_STEP: usize = 64 * 1024;

impl Inflater {
    pub fn new(agreement: &Agreement) -> Self {
        Inflater {
            keep_context: !agreement.client_no_context_takeover,
            state: None,
        }
    }

    /// Inflates one frame's payload into `out`, failing with 1009 as soon as `out` would
    /// exceed `limit`, without inflating the rest.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), Violation> {
        let decompress = self
            .state
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        let mut input = input;
        loop {
            // Grow geometrically, but never past one byte over the limit.
            let room = limit.saturating_add(1).saturating_sub(out.len());
            out.reserve_exact(room.min(out.len().max(INFLATE_STEP)).max(1));
            let spare = out.capacity() - out.len();
            let (before_in, before_out) = (decompress.total_in(), decompress.total_out());
            let status = decompress
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| CORRUPT)?;
            let consumed = (decompress.total_in() - before_in) as usize;
            let produced = (decompress.total_out() - before_out) as usize;
            input = &input[consumed..];
            if out.len() > limit {
                return Err(Violation::TOO_BIG);
            }
            if status == Status::StreamEnd {
                // A final block ends this deflate stream; the next message starts anew.
                self.state = None;
                return Ok(());
            }
            if input.is_empty() && produced < spare {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(CORRUPT);
            }
        }
    }

    /// Ends a message: inflates the tail the sender removed, and drops the context
    /// when the client does not keep it.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), Violation> {
        if self.state.is_some() {
            self.inflate(&MESSAGE_TAIL, out, limit)?;
        }
        if !self.keep_context {
            self.state = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(headers: &[&str]) -> Option<(Agreement, String)> {
        negotiate(headers.iter().copied())
    }

    #[test]
    fn plain_offer() {
        let (agreement, header) = agreed(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(agreement.server_window_bits, 15);
        assert!(!agreement.client_no_context_takeover);
        assert_eq!(header, "permessage-deflate; server_no_context_takeover");
    }

    #[test]
    fn parameters_are_answered() {
        let (agreement, header) = agreed(&[
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=\"10\"",
        ])
        .unwrap();
        assert_eq!(agreement.server_window_bits, 10);
        assert!(agreement.client_no_context_takeover);
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
    }

    #[test]
    fn first_acceptable_offer_wins() {
        let (agreement, _) = agreed(&[
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
        ])
        .unwrap();
        assert_eq!(agreement.server_window_bits, 8);
    }

    #[test]
    fn unacceptable_offers_are_declined() {
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(agreed(&[offer]), None, "{offer}");
        }
    }

    fn inflate_all(
        inflater: &mut Inflater,
        wire: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, Violation> {
        let mut out = Vec::new();
        inflater.inflate(wire, &mut out, limit)?;
        inflater.finish(&mut out, limit)?;
        Ok(out)
    }

    #[test]
    fn round_trip_at_every_window_size() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{{\"n\":{i},\"name\":\"item {}\"}}", i % 37).into_bytes())
            .collect();
        for bits in 8..=15 {
            let wire = compress(&text, bits).unwrap();
            assert!(wire.len() < text.len() / 2, "bits {bits}: {}", wire.len());
            let mut inflater = Inflater::new(&Agreement {
                server_window_bits: 15,
                client_no_context_takeover: true,
            });
            assert_eq!(inflate_all(&mut inflater, &wire, usize::MAX).unwrap(), text);
        }
    }

    #[test]
    fn incompressible_data_grows_by_a_few_bytes() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let wire = compress(&noise, 15).unwrap();
        assert!(wire.len() <= noise.len() + 16, "{}", wire.len());
        let mut inflater = Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: true,
        });
        assert_eq!(inflate_all(&mut inflater, &wire, 8192).unwrap(), noise);
    }

    #[test]
    fn context_is_kept_across_messages_unless_declined() {
        // Two messages compressed by one compressor that keeps its context.
        let mut client = Compress::new(Compression::default(), false);
        let message = b"{\"controller\":\"realtime\",\"action\":\"publish\",\"body\":{\"a\":1}}";
        let mut wires = Vec::new();
        for _ in 0..2 {
            let mut wire = Vec::with_capacity(256);
            let before = client.total_in();
            client
                .compress_vec(message, &mut wire, FlushCompress::Sync)
                .unwrap();
            assert_eq!(client.total_in() - before, message.len() as u64);
            wire.truncate(wire.len() - 4);
            wires.push(wire);
        }
        assert!(
            wires[1].len() < wires[0].len(),
            "the second refers to the first"
        );
        let mut keeping = Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: false,
        });
        for wire in &wires {
            assert_eq!(inflate_all(&mut keeping, wire, 1024).unwrap(), message);
        }
        let mut resetting = Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: true,
        });
        assert_eq!(
            inflate_all(&mut resetting, &wires[0], 1024).unwrap(),
            message
        );
        assert!(inflate_all(&mut resetting, &wires[1], 1024).is_err());
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let mut bomber = Compress::new(Compression::best(), false);
        let mut wire = Vec::with_capacity(64 * 1024);
        bomber
            .compress_vec(&zeros, &mut wire, FlushCompress::Sync)
            .unwrap();
        assert_eq!(bomber.total_in(), zeros.len() as u64);
        assert!(wire.len() < 20 * 1024, "{}", wire.len());
        let mut inflater = Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: false,
        });
        let mut out = Vec::new();
        assert_eq!(
            inflater.inflate(&wire, &mut out, 1024 * 1024),
            Err(Violation::TOO_BIG)
        );
        assert!(out.capacity() <= 1024 * 1024 + 1, "{}", out.capacity());
    }

    #[test]
    fn corrupt_data_is_refused() {
        let mut inflater = Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: false,
        });
        // Block type 3 is reserved in DEFLATE.
        assert_eq!(
            inflate_all(&mut inflater, &[0xFF, 0xFF, 0xFF], 1024),
            Err(CORRUPT)
        );
    }
}
