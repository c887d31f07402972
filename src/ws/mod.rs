//! WebSocket connections, one transport over `delivery`: the upgrade, the reader of the
//! client's frames (with permessage-deflate) and the per-socket actor. What the node sends
//! goes through the socket's `delivery::Outbox`.

pub mod budget;
mod connection;
pub mod handshake;
pub mod reader;
pub mod upgrade;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::node::Node;

pub use connection::Connection;
pub use handshake::{SocketOptions, accept};
pub use reader::Intake;
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
    // Registered by the server with the App: what every socket's reader shares.
    let Some(intake) = req.app_data::<actix_web::web::Data<Intake>>() else {
        log::error!("no WebSocket intake registered with the App: upgrade refused");
        return HttpResponse::ServiceUnavailable().finish();
    };
    let upgraded = match accept(req.head(), first_protocol, options) {
        Ok(upgraded) => upgraded,
        Err(refusal) => return refusal.error_response(),
    };
    let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let origin = text(actix_web::http::header::ORIGIN).map(str::to_owned);
    // A handshake's cookie authenticates the socket only from an origin that may carry
    // credentials (PROTOCOL.md §6.4).
    let credentials = node
        .origins
        .carries_credentials(origin.as_deref(), text(actix_web::http::header::HOST));
    let cookie = crate::auth::cookie::read(text(actix_web::http::header::COOKIE), credentials);
    let mut response = upgraded.response;
    response.extensions_mut().insert(AcceptedSocket {
        node: node.clone(),
        intake: intake.clone().into_inner(),
        agreed: upgraded.agreed,
        address,
        origin,
        cookie,
    });
    response
}
