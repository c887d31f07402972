//! One actor per WebSocket. It owns the socket's timers (heartbeat, idle timeout), the
//! application ping and the per-socket rate limit; it turns the whole messages of its
//! `Reader` (which enforces framing, compression and the size limit) into requests, runs
//! them concurrently through `api::dispatch`, and queues what comes back in the socket's
//! `Outbox`, which holds the TCP stream; its write loop writes what the fan-out's flushers
//! do not: responses, control frames, the close, and a socket that would block.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, StreamHandler, WrapFuture,
};
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::Value;

use super::frame::{OpCode, Violation};
use super::outbox::{Flushed, Outbox, close_reason};
use super::reader::Message;
use super::writer::{self, Outgoing};
use crate::api::{self, Caller};
use crate::auth::cookie::AuthCookie;
use crate::auth::messages::Unlink;
use crate::config::WebsocketProtocol;
use crate::metrics::{ProtocolLabel, ProtocolLabels};
use crate::node::Node;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::request::readable_request_id;
use crate::protocol::{BoolArgs, Protocol, Request, Response, close, now_ms};

/// How long a close frame may wait for room in the socket before the socket is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the client has to end its side after the close frame went out; the socket
/// is dropped then, unread bytes or not.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

const APP_PONG: &str = r#"{"p":2}"#;

pub struct Connection {
    node: Arc<Node>,
    caller: Rc<Caller>,
    outbox: Outbox,
    options: WebsocketProtocol,
    last_inbound: Instant,
    /// When the last heartbeat PING went out.
    heartbeat_ping: Option<Instant>,
    /// The idle period (its start) for which `sendPingsAutomatically` already pinged.
    idle_pinged_for: Option<Instant>,
    rate_window: (Instant, u32),
    closing: bool,
    /// The write loop ended (the close frame is out, or the socket failed).
    written_out: bool,
    /// The client's side ended.
    read_out: bool,
    /// For the access log's duration.
    opened: Instant,
}

impl Connection {
    pub fn new(
        node: Arc<Node>,
        outbox: Outbox,
        address: Option<std::net::IpAddr>,
        origin: Option<String>,
        cookie: AuthCookie,
    ) -> Self {
        let options = node.settings.server.protocols.websocket.clone();
        let now = Instant::now();
        Connection {
            caller: Rc::new(Caller::new(
                Protocol::Websocket,
                address,
                origin,
                Some(outbox.clone()),
                cookie,
            )),
            node,
            outbox,
            options,
            last_inbound: now,
            heartbeat_ping: None,
            idle_pinged_for: None,
            rate_window: (now, 0),
            closing: false,
            written_out: false,
            read_out: false,
            opened: now,
        }
    }

    fn peer(&self) -> String {
        self.caller
            .address
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    }

    /// Starts closing: what is queued is sent first when `flush` is true.
    fn close(&mut self, code: u16, reason: &str, flush: bool) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.caller.open.store(false, Ordering::Release);
        log::debug!(
            "closing connection {} with {code} {reason}",
            self.caller.connection_id
        );
        if flush {
            self.outbox.close(code, reason);
        } else {
            self.outbox.abort(code, reason);
        }
    }

    fn send_control(&self, ping: bool, payload: Bytes) {
        let opcode = if ping { OpCode::Ping } else { OpCode::Pong };
        self.outbox.push_control(Outgoing::control(opcode, payload));
    }

    /// The socket is done once the close frame is out and the client ended its side (or
    /// had `CLOSE_LINGER` to do so): dropping it earlier, with the client's bytes unread,
    /// would reset the connection and could lose the close frame.
    fn written_out(&mut self, ctx: &mut Context<Self>) {
        self.written_out = true;
        if self.read_out {
            ctx.stop();
        } else {
            ctx.run_later(CLOSE_LINGER, |_, ctx| ctx.stop());
        }
    }

    fn heartbeat_tick(&mut self, _: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if let Some(ping_at) = self.heartbeat_ping
            && self.last_inbound < ping_at
        {
            self.close(close::GOING_AWAY, close::HEARTBEAT_TIMEOUT, false);
            return;
        }
        self.heartbeat_ping = Some(Instant::now());
        self.send_control(true, Bytes::new());
    }

    fn last_activity(&self) -> Instant {
        if self.options.reset_idle_timeout_on_send {
            self.last_inbound.max(self.outbox.last_sent())
        } else {
            self.last_inbound
        }
    }

    /// Checks the idle clock and schedules the next check at the next deadline.
    fn idle_check(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let timeout = Duration::from_millis(self.options.idle_timeout);
        let half = timeout / 2;
        let since = self.last_activity();
        let idle = since.elapsed();
        if idle >= timeout {
            self.close(close::GOING_AWAY, close::IDLE_TIMEOUT, false);
            return;
        }
        let wants_ping =
            self.options.send_pings_automatically && self.idle_pinged_for != Some(since);
        if wants_ping && idle >= half {
            self.idle_pinged_for = Some(since);
            self.send_control(true, Bytes::new());
        }
        let next = if self.options.send_pings_automatically && self.idle_pinged_for != Some(since) {
            half
        } else {
            timeout
        };
        ctx.run_later(
            next.saturating_sub(idle).max(Duration::from_millis(1)),
            Self::idle_check,
        );
    }

    /// One whole data message, past the size and UTF-8 checks (frame-level steps of §3.2).
    fn on_message(&mut self, data: Bytes, ctx: &mut Context<Self>) {
        if data.is_empty() {
            return;
        }
        if self.over_rate_limit() {
            let request_id = serde_json::from_slice::<Value>(&data)
                .ok()
                .as_ref()
                .and_then(readable_request_id);
            self.send_transport_error(request_id, ApiError::plain(errors::WS_RATELIMIT_EXCEEDED));
            return;
        }
        let value: Value = match serde_json::from_slice(&data) {
            Ok(v) => v,
            Err(e) => {
                self.send_transport_error(
                    None,
                    ApiError::new(errors::WS_UNEXPECTED_ERROR, [e.to_string()]),
                );
                return;
            }
        };
        if is_app_ping(&value) {
            self.outbox.push(ByteString::from_static(APP_PONG));
            return;
        }
        let request =
            match Request::from_value(value, Protocol::Websocket, BoolArgs::Strict, now_ms()) {
                Ok(request) => request,
                Err(e) => {
                    self.send_transport_error(e.request_id, e.error);
                    return;
                }
            };
        let node = self.node.clone();
        let caller = self.caller.clone();
        let outbox = self.outbox.clone();
        let run = async move {
            let request_id = request.request_id.clone();
            if let Some(dispatched) = api::dispatch(&node, &caller, request).await {
                let mut response = dispatched.response;
                response.room = Some(request_id);
                outbox.push(ByteString::from(response.to_json()));
            }
        };
        ctx.spawn(run.into_actor(self));
    }

    /// Counts one data frame in the current one-second window.
    fn over_rate_limit(&mut self) -> bool {
        let limit = self.options.rate_limit;
        if limit == 0 {
            return false;
        }
        let (start, count) = &mut self.rate_window;
        if start.elapsed() >= Duration::from_secs(1) {
            *start = Instant::now();
            *count = 0;
        }
        *count += 1;
        *count > limit
    }

    fn send_transport_error(&self, request_id: Option<String>, error: ApiError) {
        let response = Response::transport_error(&self.node.id, request_id, error);
        self.outbox.push(ByteString::from(response.to_json()));
    }
}

/// `{"p":1}` and nothing else: an object with exactly one member `p` equal to the number 1.
fn is_app_ping(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.len() == 1 && map.get("p").and_then(Value::as_f64) == Some(1.0),
        _ => false,
    }
}

/// Writes what the outbox holds whenever it is woken, waits for the socket when it would
/// block, and ends after the close frame (or when the socket fails).
async fn write_loop(outbox: Outbox) {
    let Some(stream) = outbox.stream().cloned() else {
        return;
    };
    // Set once the close frame is queued: how long it may take to go out.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        match outbox.flush() {
            Flushed::Failed => return,
            Flushed::Blocked => {
                let writable = async {
                    match closing {
                        Some(deadline) => tokio::time::timeout_at(deadline, stream.writable())
                            .await
                            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                        None => stream.writable().await,
                    }
                };
                tokio::select! {
                    ready = writable => if ready.is_err() { return },
                    // A new message or an abort: the next flush sees it.
                    _ = outbox.ready() => {}
                }
            }
            Flushed::Idle if closing.is_some() => {
                writer::shutdown(&stream);
                return;
            }
            Flushed::Idle => {
                if outbox.queue_close_frame().is_some() {
                    closing = Some(tokio::time::Instant::now() + CLOSE_FLUSH_TIMEOUT);
                    continue;
                }
                outbox.ready().await;
            }
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node
            .connections
            .insert(self.caller.connection_id.clone(), self.outbox.clone());
        self.node
            .metrics
            .connections_accepted
            .get_or_create(&ProtocolLabels {
                protocol: ProtocolLabel::websocket,
            })
            .inc();
        log::debug!("connection {} opened", self.caller.connection_id);
        if self.node.settings.server.logs.access {
            log::info!(target: "access", "{} websocket open", self.peer());
        }
        let writing = write_loop(self.outbox.clone());
        ctx.spawn(
            writing
                .into_actor(self)
                .map(|_, connection, ctx| connection.written_out(ctx)),
        );
        if self.options.heartbeat > 0 {
            ctx.run_interval(
                Duration::from_millis(self.options.heartbeat),
                Self::heartbeat_tick,
            );
        }
        if self.options.idle_timeout > 0 {
            self.idle_check(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.caller.open.store(false, Ordering::Release);
        // A node shutting down drops subscriptions without "out" notifications.
        let notify = !self.node.is_draining();
        self.node
            .cluster
            .remove_connection(&self.caller.connection_id, notify);
        self.node.sessions.do_send(Unlink {
            connection_id: self.caller.connection_id.clone(),
        });
        self.node.connections.remove(&self.caller.connection_id);
        // No close frame went out or came in: the connection dropped (1006).
        let close = self.outbox.closing_with();
        let metrics = &self.node.metrics;
        let code = close.as_ref().map_or(close::ABNORMAL, |c| c.code);
        metrics.closed(code);
        if self.node.settings.server.logs.access {
            log::info!(
                target: "access",
                "{} websocket closed {code} after {:.1}s",
                self.peer(),
                self.opened.elapsed().as_secs_f64()
            );
        }
        if close.is_some_and(|c| c.reason == close::BACKPRESSURE) {
            metrics.outbound_overflows.inc();
        }
        log::debug!("connection {} closed", self.caller.connection_id);
    }
}

impl StreamHandler<Result<Message, Violation>> for Connection {
    fn handle(&mut self, item: Result<Message, Violation>, ctx: &mut Context<Self>) {
        self.last_inbound = Instant::now();
        if self.closing {
            return;
        }
        match item {
            Err(violation) => self.close(violation.code, violation.reason, false),
            Ok(Message::Ping(payload)) => self.send_control(false, payload),
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(reason)) => {
                // Echo the client's close; this is the only way a 1000 close is sent.
                self.closing = true;
                self.caller.open.store(false, Ordering::Release);
                let (code, reason) = reason.unwrap_or((1000, String::new()));
                self.outbox.abort_with(close_reason(code, &reason));
            }
            Ok(Message::Text(data) | Message::Binary(data)) => self.on_message(data, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // A closing socket stops once its close frame is written as well; otherwise the
        // client is gone and nothing more can be delivered.
        self.read_out = true;
        if !self.closing || self.written_out {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_app_ping;
    use serde_json::json;

    #[test]
    fn app_ping_is_exactly_p_one() {
        assert!(is_app_ping(&json!({"p": 1})));
        assert!(!is_app_ping(&json!({"p": "1"})));
        assert!(!is_app_ping(&json!({"p": 1, "controller": "server"})));
        assert!(!is_app_ping(&json!({"p": 2})));
        assert!(!is_app_ping(&json!([1])));
    }
}
