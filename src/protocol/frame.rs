//! RFC 6455 frames: parsing the client's headers, unmasking, and encoding the server's
//! (unmasked) frames. Whole-message rules live in `reader`.

use crate::protocol::close;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Why the connection must be failed: the close code and reason to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

impl Violation {
    pub const fn protocol(reason: &'static str) -> Self {
        Violation {
            code: close::PROTOCOL_ERROR,
            reason,
        }
    }

    pub const TOO_BIG: Violation = Violation {
        code: close::MESSAGE_TOO_BIG,
        reason: close::TOO_BIG,
    };

    pub const INVALID_UTF8: Violation = Violation {
        code: close::INVALID_PAYLOAD,
        reason: close::INVALID_UTF8,
    };
}

/// Control frame payloads are at most 125 bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub payload_len: u64,
    /// Bytes taken by the header itself.
    pub len: usize,
}

/// Parses a client frame header; `None` until enough bytes have arrived.
/// Everything that can be refused from the header alone is refused here.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x30 != 0 {
        return Err(Violation::protocol("reserved bits set"));
    }
    let opcode = OpCode::from_bits(first & 0x0F).ok_or(Violation::protocol("reserved opcode"))?;
    let fin = first & 0x80 != 0;
    if second & 0x80 == 0 {
        return Err(Violation::protocol("unmasked client frame"));
    }
    let (payload_len, at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if payload_len >> 63 != 0 {
        return Err(Violation::protocol("invalid payload length"));
    }
    if opcode.is_control() {
        if !fin {
            return Err(Violation::protocol("fragmented control frame"));
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Violation::protocol("control frame too long"));
        }
    }
    let Some(mask) = buf
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
    else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        rsv1: first & 0x40 != 0,
        opcode,
        mask,
        payload_len,
        len: at + 4,
    }))
}

pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Chunks are 8 bytes long, so the remainder starts on a mask boundary.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The longest server frame header: no mask, 64-bit length.
pub const MAX_HEADER: usize = 10;

/// Writes the header of one unfragmented server frame carrying `len` payload bytes into
/// `out`; returns its length.
pub fn write_header(out: &mut [u8; MAX_HEADER], rsv1: bool, opcode: OpCode, len: usize) -> usize {
    out[0] = 0x80 | if rsv1 { 0x40 } else { 0 } | opcode.bits();
    match len {
        0..=125 => {
            out[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

/// A close frame's payload: the code, then as much of the reason as fits in 123 bytes
/// without splitting a character.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// A status a peer may send in a close frame (RFC 6455 §7.4, IANA registry).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code and reason of a client's close frame; `None` for an empty one.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("close frame with a 1-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                return Err(Violation::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::INVALID_UTF8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, len_bytes: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        frame.extend_from_slice(len_bytes);
        frame[1] |= 0x80;
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame
    }

    #[test]
    fn header_needs_every_byte() {
        let frame = masked(0x81, &[126, 0x01, 0x00]);
        for cut in 0..frame.len() {
            assert_eq!(parse_header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        let header = parse_header(&frame).unwrap().unwrap();
        assert_eq!(header.payload_len, 256);
        assert_eq!(header.len, 8);
        assert_eq!(header.mask, [1, 2, 3, 4]);
        assert!(header.fin && !header.rsv1);
    }

    #[test]
    fn refuses_what_the_header_alone_shows() {
        let cases: [(&[u8], &str); 6] = [
            (&[0xA1, 0x80], "reserved bits set"),
            (&[0x91, 0x80], "reserved bits set"),
            (&[0x83, 0x80], "reserved opcode"),
            (&[0x81, 0x00], "unmasked client frame"),
            (&[0x09, 0x80], "fragmented control frame"),
            (&[0x89, 0xFE, 0x00, 0x7E], "control frame too long"),
        ];
        for (bytes, reason) in cases {
            assert_eq!(
                parse_header(bytes),
                Err(Violation::protocol(reason)),
                "{bytes:x?}"
            );
        }
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_header(&huge),
            Err(Violation::protocol("invalid payload length"))
        );
    }

    #[test]
    fn rsv1_is_reported_not_refused() {
        let header = parse_header(&masked(0xC1, &[0])).unwrap().unwrap();
        assert!(header.rsv1);
    }

    #[test]
    fn unmask_is_its_own_inverse_at_every_length() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            unmask(&mut data, [0xDE, 0xAD, 0xBE, 0xEF]);
            for (i, (a, b)) in data.iter().zip(&original).enumerate() {
                assert_eq!(*a, b ^ [0xDE, 0xAD, 0xBE, 0xEF][i % 4]);
            }
            unmask(&mut data, [0xDE, 0xAD, 0xBE, 0xEF]);
            assert_eq!(data, original);
        }
    }

    fn encode_header(rsv1: bool, opcode: OpCode, len: usize) -> Vec<u8> {
        let mut out = [0; MAX_HEADER];
        let n = write_header(&mut out, rsv1, opcode, len);
        out[..n].to_vec()
    }

    #[test]
    fn header_lengths() {
        assert_eq!(encode_header(false, OpCode::Text, 125), [0x81, 125]);
        assert_eq!(
            encode_header(true, OpCode::Binary, 126),
            [0xC2, 126, 0, 126]
        );
        assert_eq!(
            encode_header(false, OpCode::Text, 65536),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert!(parse_close(&[3]).is_err());
        assert_eq!(
            parse_close(&[0x03, 0xE8, b'o', b'k']),
            Ok(Some((1000, "ok".into())))
        );
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
            assert_eq!(
                parse_close(&bad.to_be_bytes()),
                Err(Violation::protocol("invalid close code")),
                "{bad}"
            );
        }
        assert_eq!(
            parse_close(&[0x03, 0xE8, 0xFF]),
            Err(Violation::INVALID_UTF8)
        );
        let long = "é".repeat(100);
        let payload = close_payload(1001, &long);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
