//! The entry points of the fuzz targets (`fuzz/`, `cargo fuzz`). Each takes arbitrary
//! bytes, runs one input-facing part of the node on them, and panics only when an
//! invariant breaks. `tests/fuzz_corpora.rs` replays the saved corpora through the same
//! functions on stable Rust, so CI needs no nightly.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Value, json};

use crate::config::{self, Settings, Size};
use crate::http::body::{self, BodyKind};
use crate::protocol::deflate::{Agreement, Inflater};
use crate::protocol::{BoolArgs, Protocol, Request};
use crate::realtime::filter::{Filter, MAX_CONJUNCTIONS, MAX_LITERALS};
use crate::ws::reader::{Chunks, Message, Reader};

/// The frame parser and message reader, with or without permessage-deflate. The first
/// byte chooses the options and how the rest is cut into reads.
pub fn websocket_frames(data: &[u8]) {
    let Some((&options, stream)) = data.split_first() else {
        return;
    };
    let deflate = options & 1 == 1;
    let max_message = 16 + usize::from(options >> 4) * 256;
    let chunk = 1 + usize::from((options >> 1) & 7) * 3;
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = stream
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let inflater = deflate.then(|| {
        Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: options & 2 == 2,
        })
    });
    let mut reader = Reader::new(
        Chunks(futures_util::stream::iter(chunks)),
        max_message,
        inflater,
    );
    let mut context = Context::from_waker(Waker::noop());
    // The input is always ready, so every poll makes progress or ends the stream.
    loop {
        match Pin::new(&mut reader).poll_next(&mut context) {
            Poll::Ready(Some(Ok(message))) => match message {
                Message::Text(text) => {
                    assert!(text.len() <= max_message, "a message past the limit");
                    assert!(std::str::from_utf8(&text).is_ok(), "text that is not UTF-8");
                }
                Message::Binary(data) => {
                    assert!(data.len() <= max_message, "a message past the limit");
                }
                Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
                Message::Close(_) | Message::End { .. } => {}
            },
            Poll::Ready(Some(Err(_)) | None) => return,
            Poll::Pending => panic!("an always-ready input left the reader pending"),
        }
    }
}

/// A frame's JSON into a request envelope, as WebSocket and `/_query` decode it.
pub fn request_envelope(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for (protocol, bools) in [
        (Protocol::Websocket, BoolArgs::Strict),
        (Protocol::Http, BoolArgs::Lenient),
    ] {
        if let Ok(request) = Request::from_value(value.clone(), protocol, bools, 0) {
            assert!(!request.request_id.is_empty(), "a request without an id");
        }
    }
}

/// A realtime filter: parse, bound, normalise, identify, and match it against itself.
pub fn realtime_filter(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for minterms in [0, 8] {
        let Ok(filter) = Filter::compile_with(&value, 100, minterms) else {
            continue;
        };
        assert!(filter.conjunctions.len() as u64 <= MAX_CONJUNCTIONS);
        let literals: usize = filter.conjunctions.iter().map(Vec::len).sum();
        assert!(literals as u64 <= MAX_LITERALS);
        if minterms > 0 {
            assert!(filter.conjunctions.len() <= minterms);
        }
        let id = filter.room_id(b"fuzzing", "index", "collection");
        assert_eq!(id.len(), 64);
        for doc in [
            &value,
            &json!({}),
            &json!({"a": 1, "b": "x", "c": [1, "y"]}),
        ] {
            filter.matches(doc);
        }
    }
}

/// The HTTP body pipeline after the head: Content-Encoding layers, then parsing by
/// content type. The first byte chooses the encoding and the content type.
pub fn http_body(data: &[u8]) {
    let Some((&options, body)) = data.split_first() else {
        return;
    };
    let mut settings = Settings::default();
    settings.server.max_request_size = Size(64 * 1024);
    settings.server.protocols.http.max_form_file_size = Size(16 * 1024);
    let encoding = [
        "identity",
        "gzip",
        "deflate",
        "gzip, deflate",
        "deflate, gzip, gzip",
        "br",
    ][usize::from(options & 7) % 6];
    let kind = match (options >> 3) & 3 {
        0 => BodyKind::Json,
        1 => BodyKind::UrlEncoded,
        2 => BodyKind::Multipart {
            boundary: "XyZ".into(),
        },
        _ => BodyKind::Multipart {
            boundary: String::new(),
        },
    };
    let limit = settings.server.max_request_size.as_usize();
    match body::decode_codings(encoding, Bytes::copy_from_slice(body), &settings) {
        Ok(decoded) => {
            assert!(decoded.len() <= limit, "decoded past the limit");
            let _ = body::parse(&kind, &decoded, &settings);
        }
        Err(error) => assert!((400..500).contains(&error.status())),
    }
}

/// A `kuzzlerc` file: parsed as JSON with comments, then typed and validated; and searched
/// for a key's line, as a configuration error does.
pub fn configuration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = config::parse_kuzzlerc(text) {
        let _ = config::from_json(value);
    }
    // Where an error's key was set: read over any text, parsed or not.
    let _ = config::explain::line_of(text, "server.protocols.websocket.idleTimeout");
}
