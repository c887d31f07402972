//! An echo endpoint on kuzzle-rt's own WebSocket layer (handshake, frame reader,
//! permessage-deflate, transport), for conformance suites such as Autobahn:
//!
//!     cargo run --release --example echo -- 127.0.0.1:9001
//!
//! Every text or binary message comes back as it was sent; PINGs are answered; a close
//! is echoed; a protocol violation closes with its code. Compression is negotiated with
//! clients that offer it and applies to every echoed message (threshold 0); `--plain`
//! turns it off. Messages may be up to 64 MiB (Autobahn's section 9 sends 16 MiB).

use std::net::SocketAddr;

use actix_codec::Framed;
use actix_http::{HttpService, Request, Response, h1};
use actix_service::{fn_factory, fn_service};
use actix_web::ResponseError;
use bytestring::ByteString;
use futures_util::StreamExt;
use tokio::net::TcpStream;

use kuzzle_rt::delivery::writer::{Outgoing, SocketWriter};
use kuzzle_rt::ws::reader::{Message, Reader, SocketSource};
use kuzzle_rt::ws::upgrade::{respond, switch};
use kuzzle_rt::ws::{SocketOptions, accept};

const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Takes the connection of every upgrade request, as the node does.
async fn upgrade(
    options: SocketOptions,
    (req, framed): (Request, Framed<TcpStream, h1::Codec>),
) -> Result<(), actix_web::Error> {
    match accept(req.head(), None, options) {
        Ok(upgraded) => {
            let (head, _) = Response::from(upgraded.response).into_parts();
            let (stream, read) = switch(framed, head).await?;
            let agreed = upgraded.agreed;
            let reader = Reader::with_bytes(
                SocketSource(stream.clone()),
                read,
                agreed.max_message,
                agreed.inflater,
            );
            actix_web::rt::spawn(echo(reader, SocketWriter::new(stream, agreed.compression)));
            Ok(())
        }
        Err(refusal) => {
            let (head, body) = Response::from(refusal.error_response()).into_parts();
            Ok(respond(framed, head, body).await?)
        }
    }
}

async fn echo(mut reader: Reader<SocketSource>, mut writer: SocketWriter) {
    while let Some(item) = reader.next().await {
        match item {
            Ok(Message::Text(data)) => match ByteString::try_from(data) {
                Ok(text) => writer.queue(&Outgoing::text(text)),
                Err(_) => return close(writer, 1007, "invalid UTF-8").await,
            },
            Ok(Message::Binary(data)) => writer.queue(&Outgoing::binary(data)),
            Ok(Message::Ping(payload)) => writer.queue(&Outgoing::control(
                kuzzle_rt::protocol::frame::OpCode::Pong,
                payload,
            )),
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(close_frame)) => {
                let (code, reason) = close_frame.unwrap_or((1000, String::new()));
                return close(writer, code, &reason).await;
            }
            Ok(Message::End { .. }) => return,
            Err(violation) => return close(writer, violation.code, violation.reason).await,
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

async fn close(mut writer: SocketWriter, code: u16, reason: &str) {
    writer.queue_close(code, reason);
    if writer.flush().await.is_ok() {
        writer.shutdown();
    }
    // Give the client time to read the close frame and end its side.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(500)).await;
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 9001).into();
    let mut compression_threshold = Some(0);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--plain" => compression_threshold = None,
            other => {
                addr = other.parse().map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{other}: {e} (usage: echo [ADDR] [--plain])"),
                    )
                })?
            }
        }
    }
    let options = SocketOptions {
        max_message: MAX_MESSAGE,
        compression_threshold,
    };
    let listener = std::net::TcpListener::bind(addr)?;
    println!("echo listening on ws://{}", listener.local_addr()?);
    actix_server::Server::build()
        .workers(1)
        .listen("echo", listener, move || {
            HttpService::build()
                .upgrade(fn_factory(move || async move {
                    Ok::<_, ()>(fn_service(move |upgraded| upgrade(options, upgraded)))
                }))
                .finish(fn_service(|_: Request| async {
                    Ok::<_, actix_web::Error>(Response::not_found())
                }))
                .tcp()
        })?
        .run()
        .await
}
