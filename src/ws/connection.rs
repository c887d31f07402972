//! One actor per WebSocket. It owns the socket's timers (heartbeat, idle timeout), the
//! application ping and the per-socket rate limit; it turns the whole messages of its
//! `Reader` (which enforces framing, compression and the size limit) into requests, runs
//! them concurrently through `api::dispatch`, and queues what comes back in the socket's
//! `Outbox`, which holds the TCP stream; its write loop writes what the fan-out's flushers
//! do not: responses, control frames, the close, and a socket that would block.
//!
//! The close (PROTOCOL.md §2.7): once the node decides to close a socket, or its client
//! ends (close frame or FIN), the socket has `closeTimeout` to finish; past it the socket
//! is released with a reset, whatever the client does. Requests received before the
//! client's close frame or FIN are executed and answered before the node's close frame;
//! a socket that violated the protocol gets its close frame while the reader discards
//! what the client still sends, so that the close code reaches the client.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, StreamHandler, WrapFuture,
};
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::Value;

use super::reader::Message;
use crate::api::{self, Caller};
use crate::auth::cookie::AuthCookie;
use crate::config::WebsocketProtocol;
use crate::delivery::outbox::{CloseReason, Flushed, Outbox, close_reason};
use crate::delivery::writer::{self, Outgoing};
use crate::metrics::{ProtocolLabel, ProtocolLabels};
use crate::node::Node;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::frame::{OpCode, Violation};
use crate::protocol::request::readable_request_id;
use crate::protocol::{BoolArgs, Protocol, Request, Response, close, now_ms};

const APP_PONG: &str = r#"{"p":2}"#;

/// How the client ended while requests it sent before still run.
enum ClientEnded {
    /// A close frame: echoed once the answers are out.
    Close(CloseReason),
    /// A FIN: the socket shuts down once the answers are out.
    Fin,
}

/// How the write loop ended.
enum WriteEnd {
    /// The close (frame) is out and the socket's side is shut.
    Done,
    /// The socket failed.
    Failed,
    /// The close deadline passed first.
    Expired,
}

pub struct Connection {
    node: Arc<Node>,
    caller: Rc<Caller>,
    outbox: Outbox,
    options: WebsocketProtocol,
    /// The client ended; the close waits for `in_flight` to reach 0.
    client_ended: Option<Box<ClientEnded>>,
    last_inbound: Instant,
    /// When the last heartbeat PING went out.
    heartbeat_ping: Option<Instant>,
    /// The idle period (its start) for which `sendPingsAutomatically` already pinged.
    idle_pinged_for: Option<Instant>,
    rate_window: (Instant, u32),
    /// No further message from the client is processed.
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
            client_ended: None,
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

    /// Counts the socket among the node's open ones, as soon as its 101 is written (before
    /// the actor first runs), so that a drain closing every socket closes it too (and one
    /// registered after that is closed at once: `Connections::insert`).
    pub fn register(&self) {
        self.node
            .connections
            .insert(self.caller.connection_id.clone(), self.outbox.clone());
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
        self.caller.open.set(false);
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

    /// The client ended: requests already received still run, and their answers go out
    /// before the close; the close deadline starts now.
    fn client_ended(&mut self, ended: ClientEnded) {
        self.closing = true;
        self.outbox.begin_closing();
        self.client_ended = Some(Box::new(ended));
        self.caller.requests.await_all();
        self.settle_client_end();
    }

    /// Closes the outbox once the requests received before the client's end are answered.
    fn settle_client_end(&mut self) {
        if self.caller.requests.count() > 0 {
            return;
        }
        match self.client_ended.take().map(|ended| *ended) {
            // Echo the client's close; this is the only way a 1000 close is sent.
            Some(ClientEnded::Close(reason)) => self.outbox.close_with(reason),
            Some(ClientEnded::Fin) => self.outbox.finish(),
            None => {}
        }
    }

    fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.options.close_timeout)
    }

    /// When a closing socket is released whatever the client does.
    fn close_deadline(&self) -> Option<Instant> {
        self.outbox
            .closing_since()
            .map(|since| since + self.close_timeout())
    }

    /// Releases the socket now: the client did not let it finish closing in time, so the
    /// close is abortive (a reset), which frees the kernel's buffers at once.
    fn release(&mut self, ctx: &mut Context<Self>) {
        if let Some(stream) = self.outbox.stream() {
            let _ = socket2::SockRef::from(stream.as_ref()).set_linger(Some(Duration::ZERO));
        }
        self.node.metrics.close_timeouts.inc();
        log::debug!(
            "connection {} released: not closed within closeTimeout",
            self.caller.connection_id
        );
        ctx.stop();
    }

    fn write_ended(&mut self, end: WriteEnd, ctx: &mut Context<Self>) {
        match end {
            WriteEnd::Done => {
                // The socket is done once the client ended its side too (dropping it
                // earlier, with the client's bytes unread, would reset the connection and
                // could lose the close frame), or at the close deadline.
                self.written_out = true;
                if self.read_out {
                    ctx.stop();
                    return;
                }
                let left = self.close_deadline().map_or(Duration::ZERO, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                ctx.run_later(left, |connection, ctx| connection.release(ctx));
            }
            WriteEnd::Failed => ctx.stop(),
            WriteEnd::Expired => self.release(ctx),
        }
    }

    fn heartbeat_tick(&mut self, ctx: &mut Context<Self>) {
        let unanswered = self
            .heartbeat_ping
            .is_some_and(|ping_at| self.last_inbound < ping_at);
        if self.outbox.closing_since().is_some() {
            // Still running while the socket closes: a silent client is released.
            if unanswered {
                self.release(ctx);
            }
            return;
        }
        if unanswered {
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

    /// Checks the idle clock and schedules the next check at the next deadline. While
    /// the socket closes, the clock starts again from the close, and a socket idle for a
    /// whole period more is released.
    fn idle_check(&mut self, ctx: &mut Context<Self>) {
        let timeout = Duration::from_millis(self.options.idle_timeout);
        let half = timeout / 2;
        // Set whenever the socket is closing, whoever decided it.
        let closing_since = self.outbox.closing_since();
        let since = match closing_since {
            Some(closing) => self.last_activity().max(closing),
            None => self.last_activity(),
        };
        let idle = since.elapsed();
        if idle >= timeout {
            if closing_since.is_some() {
                self.release(ctx);
                return;
            }
            self.close(close::GOING_AWAY, close::IDLE_TIMEOUT, false);
            ctx.run_later(timeout, Self::idle_check);
            return;
        }
        let wants_ping = closing_since.is_none()
            && self.options.send_pings_automatically
            && self.idle_pinged_for != Some(since);
        if wants_ping && idle >= half {
            self.idle_pinged_for = Some(since);
            self.send_control(true, Bytes::new());
        }
        let next = if wants_ping && self.idle_pinged_for != Some(since) {
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
        // Told when the last request in flight is answered after the client ended.
        let connection = ctx.address();
        caller.requests.received();
        // A task of the worker rather than an actor future: tasks start in the order
        // they were spawned, so that a socket's requests run (and its publishes are
        // delivered) in the order they arrived; the actor's futures would not. When the
        // connection stops, the request gives up: nothing more keeps its socket.
        // A subscribe's answer goes out before any notification of its room (`hold`).
        let opens_a_room = request.controller == "realtime"
            && matches!(request.action.as_str(), "subscribe" | "join");
        actix_rt::spawn(async move {
            let run = async {
                let hold = opens_a_room.then(|| outbox.hold());
                let request_id = request.request_id.clone();
                if let Some(dispatched) = api::dispatch(&node, &caller, request).await {
                    let mut response = dispatched.response;
                    response.room = Some(request_id);
                    outbox.push(ByteString::from(response.to_json()));
                }
                drop(hold);
            };
            if caller.requests.run(run).await == 0 && caller.requests.is_awaited() {
                connection.do_send(Answered);
            }
        });
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
/// block, and ends after the close (or when the socket fails, or when the socket started
/// closing `close_timeout` ago).
async fn write_loop(outbox: Outbox, close_timeout: Duration) -> WriteEnd {
    let Some(stream) = outbox.stream().cloned() else {
        return WriteEnd::Done;
    };
    let mut close_queued = false;
    loop {
        let deadline = outbox
            .closing_since()
            .map(|since| tokio::time::Instant::from_std(since + close_timeout));
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        match outbox.flush() {
            Flushed::Failed => return WriteEnd::Failed,
            Flushed::Blocked => {
                tokio::select! {
                    ready = stream.writable() => if ready.is_err() { return WriteEnd::Failed },
                    // A new message, a close or an abort: the next flush sees it.
                    _ = outbox.ready() => {}
                    _ = expired => return WriteEnd::Expired,
                }
            }
            Flushed::Idle if close_queued => {
                writer::shutdown(&stream);
                return WriteEnd::Done;
            }
            Flushed::Idle => {
                if outbox.queue_close_frame().is_some() {
                    close_queued = true;
                    continue;
                }
                tokio::select! {
                    _ = outbox.ready() => {}
                    _ = expired => return WriteEnd::Expired,
                }
            }
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
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
        let writing = write_loop(self.outbox.clone(), self.close_timeout());
        ctx.spawn(
            writing
                .into_actor(self)
                .map(|end, connection, ctx| connection.write_ended(end, ctx)),
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
        self.caller.open.set(false);
        // What still runs was received before an abrupt end or a passed deadline.
        self.caller.requests.stop();
        // A node shutting down drops subscriptions without "out" notifications.
        let notify = !self.node.is_draining();
        self.node
            .realtime
            .disconnect(&self.caller.connection_id, notify);
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

/// The last request received before the client ended is answered.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Answered;

impl actix::Handler<Answered> for Connection {
    type Result = ();

    fn handle(&mut self, _: Answered, _: &mut Context<Self>) {
        self.settle_client_end();
    }
}

impl StreamHandler<Result<Message, Violation>> for Connection {
    fn handle(&mut self, item: Result<Message, Violation>, ctx: &mut Context<Self>) {
        self.last_inbound = Instant::now();
        match item {
            Ok(Message::End { clean: false }) => {
                // A reset: nobody is left to answer; requests still waiting are dropped.
                self.read_out = true;
                self.caller.open.set(false);
                ctx.stop();
            }
            Ok(Message::End { clean: true }) => {
                self.read_out = true;
                if !self.closing {
                    self.client_ended(ClientEnded::Fin);
                }
            }
            _ if self.closing => {}
            Err(violation) => self.close(violation.code, violation.reason, false),
            Ok(Message::Ping(payload)) => self.send_control(false, payload),
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(reason)) => {
                let (code, reason) = reason.unwrap_or((1000, String::new()));
                self.client_ended(ClientEnded::Close(close_reason(code, &reason)));
            }
            Ok(Message::Text(data) | Message::Binary(data)) => self.on_message(data, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The reader ended (after its last item, or once it stopped discarding after a
        // violation). A socket still closing stops once its close is written too.
        self.read_out = true;
        if self.written_out {
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
