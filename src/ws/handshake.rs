//! The handshake: checks the client's request, negotiates permessage-deflate, and returns
//! the 101 response with what the socket agreed to.

use actix_http::RequestHead;
use actix_http::ws::HandshakeError;
use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderValue};

use crate::delivery::writer::Compression;
use crate::protocol::deflate::{self, Inflater};

/// How sockets are accepted.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// The largest message a client may send (inflated size when compressed).
    pub max_message: usize,
    /// `Some` when permessage-deflate may be negotiated: the smallest message compressed.
    pub compression_threshold: Option<usize>,
}

pub struct Upgraded {
    pub response: HttpResponse,
    pub agreed: Agreed,
}

/// What both sides agreed to for one socket.
pub struct Agreed {
    pub max_message: usize,
    pub inflater: Option<Inflater>,
    pub compression: Option<Compression>,
}

/// Accepts the upgrade, answering with `protocol` as the subprotocol if given.
/// A bad handshake is refused with the error's own response (`ResponseError`).
pub fn accept(
    req: &RequestHead,
    protocol: Option<&str>,
    options: SocketOptions,
) -> Result<Upgraded, HandshakeError> {
    actix_http::ws::verify_handshake(req)?;
    let key = req
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| actix_http::ws::hash_key(key.as_bytes()))
        .ok_or(HandshakeError::BadWebsocketKey)?;
    let mut response = HttpResponse::SwitchingProtocols();
    response.upgrade("websocket").insert_header((
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_bytes(&key).map_err(|_| HandshakeError::BadWebsocketKey)?,
    ));
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let agreement = options.compression_threshold.and_then(|threshold| {
        let offers = req
            .headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .filter_map(|value| value.to_str().ok());
        deflate::negotiate(offers).map(|(agreement, answer)| (agreement, answer, threshold))
    });
    let (inflater, compression) = match agreement {
        Some((agreement, answer, threshold)) => {
            response.insert_header((header::SEC_WEBSOCKET_EXTENSIONS, answer));
            (
                Some(Inflater::new(&agreement)),
                Some(Compression {
                    window_bits: agreement.server_window_bits,
                    threshold,
                }),
            )
        }
        None => (None, None),
    };
    Ok(Upgraded {
        response: response.finish(),
        agreed: Agreed {
            max_message: options.max_message,
            inflater,
            compression,
        },
    })
}
