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

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use bytestring::ByteString;
use futures_util::StreamExt;

use kuzzle_rt::ws::reader::{Message, Reader};
use kuzzle_rt::ws::writer::{Outgoing, Transport};
use kuzzle_rt::ws::{SocketOptions, accept};

const MAX_MESSAGE: usize = 64 * 1024 * 1024;

async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    options: web::Data<SocketOptions>,
) -> HttpResponse {
    match accept(&req, payload, None, **options) {
        Ok(upgraded) => {
            actix_web::rt::spawn(echo(upgraded.reader, upgraded.transport));
            upgraded.response
        }
        Err(refusal) => refusal.error_response(),
    }
}

async fn echo(mut reader: Reader<web::Payload>, transport: Transport) {
    while let Some(item) = reader.next().await {
        let sent = match item {
            Ok(Message::Text(data)) => match ByteString::try_from(data) {
                Ok(text) => transport.send(&Outgoing::text(text)).await,
                Err(_) => transport.close(1007, "invalid UTF-8").await,
            },
            Ok(Message::Binary(data)) => transport.send(&Outgoing::binary(data)).await,
            Ok(Message::Ping(payload)) => transport.pong(&payload).await,
            Ok(Message::Pong(_)) => Ok(()),
            Ok(Message::Close(close)) => {
                let (code, reason) = close.unwrap_or((1000, String::new()));
                let _ = transport.close(code, &reason).await;
                return;
            }
            Err(violation) => {
                let _ = transport.close(violation.code, violation.reason).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
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
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(options))
            .default_service(web::to(upgrade))
    })
    .workers(1)
    .bind(addr)?;
    for bound in server.addrs() {
        println!("echo listening on ws://{bound}");
    }
    server.run().await
}
