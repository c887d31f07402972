//! WebSocket connections: the upgrade, the per-socket actor and its outbound queue.

mod connection;
pub mod outbox;
pub mod registry;

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::node::Node;

pub use connection::Connection;

/// True when the request asks for a WebSocket upgrade.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Accepts the upgrade (any path) and starts the connection actor.
pub fn upgrade(req: &HttpRequest, payload: web::Payload, node: &Arc<Node>) -> HttpResponse {
    // If subprotocols are offered, the first one is selected.
    let first_protocol = req
        .headers()
        .get(actix_web::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_owned);
    let protocols: Vec<&str> = first_protocol.iter().map(String::as_str).collect();
    let (response, session, stream) =
        match actix_ws::handle_with_protocols(req, payload, &protocols) {
            Ok(parts) => parts,
            Err(e) => return e.error_response(),
        };
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let stream = stream.max_frame_size(node.settings.server.max_request_size.as_usize());
    let cookie = crate::auth::cookie::parse(
        req.headers()
            .get(actix_web::http::header::COOKIE)
            .and_then(|v| v.to_str().ok()),
    );
    let connection = Connection::new(node.clone(), session, origin, cookie);
    Connection::create(move |ctx| {
        ctx.add_stream(stream);
        connection
    });
    response
}
