//! WebSocket connections: the upgrade, the framing (with permessage-deflate), the
//! per-socket actor and its outbound queue.

pub mod budget;
mod connection;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod outbox;
pub mod reader;
pub mod registry;
pub mod upgrade;
pub mod writer;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::node::Node;

pub use connection::Connection;
pub use handshake::{SocketOptions, accept};
pub use upgrade::{AcceptedSocket, ThroughUpgrade};

/// True when the request asks for a WebSocket upgrade.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Accepts the upgrade (any path): the 101 response carries what the connection actor
/// needs, and `upgrade::service` starts it on the TCP stream once the 101 is written.
/// `address` is the client's, resolved by the caller through trusted proxies.
pub fn upgrade(
    req: &HttpRequest,
    node: &Arc<Node>,
    address: Option<std::net::IpAddr>,
) -> HttpResponse {
    // If subprotocols are offered, the first one is selected.
    let first_protocol = req
        .headers()
        .get(actix_web::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()));
    let websocket = &node.settings.server.protocols.websocket;
    let options = SocketOptions {
        max_message: node.settings.server.max_request_size.as_usize(),
        compression_threshold: websocket
            .compression
            .then(|| websocket.compression_threshold.as_usize()),
    };
    let upgraded = match accept(req.head(), first_protocol, options) {
        Ok(upgraded) => upgraded,
        Err(refusal) => return refusal.error_response(),
    };
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cookie = crate::auth::cookie::parse(
        req.headers()
            .get(actix_web::http::header::COOKIE)
            .and_then(|v| v.to_str().ok()),
    );
    let mut response = upgraded.response;
    response.extensions_mut().insert(AcceptedSocket {
        node: node.clone(),
        agreed: upgraded.agreed,
        address,
        origin,
        cookie,
    });
    response
}
