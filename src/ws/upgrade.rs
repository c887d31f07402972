//! The upgrade path of the shared port. actix-http hands every request that asks to switch
//! protocols (`Upgrade: websocket`, and CONNECT) to `serve` together with its connection.
//! The request goes through the same App as any other request. When the App accepted a
//! WebSocket (a 101 carrying an `AcceptedSocket`), the 101 is written and the connection
//! actor takes the TCP stream itself, with the bytes that already followed the handshake:
//! no HTTP dispatcher, body stream or buffer stays behind for the socket's life. Any other
//! answer is written as an ordinary response, and the connection closed.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_codec::Framed;
use actix_http::body::{BodySize, MessageBody};
use actix_http::{ConnectionType, Request, StatusCode, h1};
use actix_service::Service;
use actix_web::HttpMessage;
use actix_web::dev::ServiceResponse;
use futures_util::SinkExt;
use tokio::net::TcpStream;

use super::connection::Connection;
use super::handshake::Agreed;
use super::reader::{Reader, SocketSource};
use crate::auth::cookie::AuthCookie;
use crate::delivery::Outbox;
use crate::node::Node;

/// What the App's handler accepted: everything the connection actor starts with.
pub struct AcceptedSocket {
    pub(super) node: Arc<Node>,
    pub(super) intake: Arc<super::Intake>,
    pub(super) agreed: Agreed,
    pub(super) address: Option<IpAddr>,
    pub(super) origin: Option<String>,
    pub(super) cookie: AuthCookie,
}

/// Marks a request that came through this path: only those can be upgraded.
#[derive(Clone, Copy)]
pub struct ThroughUpgrade;

/// Runs one upgrade request through `app` and writes its answer on `framed`.
pub async fn serve<S>(
    app: Rc<S>,
    (req, framed): (Request, Framed<TcpStream, h1::Codec>),
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    req.extensions_mut().insert(ThroughUpgrade);
    let response: actix_http::Response<_> = app.call(req).await?.into();
    let (mut head, body) = response.into_parts();
    let accepted = head.extensions_mut().remove::<AcceptedSocket>();
    let written = match accepted {
        Some(accepted) if head.status() == StatusCode::SWITCHING_PROTOCOLS => switch(framed, head)
            .await
            .map(|(stream, read)| start(stream, read, accepted)),
        _ => respond(framed, head, body).await,
    };
    // A client gone before its answer is not the server's error (actix-http would log
    // one at the error level).
    if let Err(e) = written {
        log::debug!("upgrade answer not written: {e}");
    }
    Ok(())
}

/// Writes the 101 and takes the stream out of `framed`, with the bytes that already
/// followed the handshake.
pub async fn switch(
    mut framed: Framed<TcpStream, h1::Codec>,
    head: actix_http::Response<()>,
) -> std::io::Result<(Arc<TcpStream>, bytes::BytesMut)> {
    framed
        .send(h1::Message::Item((head, BodySize::None)))
        .await?;
    let parts = framed.into_parts();
    Ok((Arc::new(parts.io), parts.read_buf))
}

/// Writes an ordinary response, after which the connection closes.
pub async fn respond(
    mut framed: Framed<TcpStream, h1::Codec>,
    mut head: actix_http::Response<()>,
    body: impl MessageBody,
) -> std::io::Result<()> {
    let body = actix_http::body::to_bytes(body).await.unwrap_or_default();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = body.size();
    framed.feed(h1::Message::Item((head, size))).await?;
    if !body.is_empty() {
        framed.feed(h1::Message::Chunk(Some(body))).await?;
    }
    framed.send(h1::Message::Chunk(None)).await
}

/// Starts the connection actor on the current worker, owning `stream`.
fn start(stream: Arc<TcpStream>, read: bytes::BytesMut, accepted: AcceptedSocket) {
    let AcceptedSocket {
        node,
        intake,
        agreed,
        address,
        origin,
        cookie,
    } = accepted;
    let reader = Reader::with_bytes(
        SocketSource(stream.clone()),
        read,
        agreed.max_message,
        agreed.inflater,
    )
    .with_intake(intake);
    let outbox = Outbox::for_socket(stream, agreed.compression);
    let connection = Connection::new(node, outbox, address, origin, cookie);
    connection.register();
    Connection::create(move |ctx| {
        ctx.add_stream(reader);
        connection
    });
}
