//! The HTTP side of the shared port: one handler for every path and verb. It hands
//! WebSocket upgrades to `ws`, answers the special endpoints, runs the transport steps
//! of PROTOCOL.md §2.8, routes, and sends the result of `api::dispatch`.

pub(crate) mod body;
mod reply;
pub mod router;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::{Method, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};

use crate::api::actions::Verb;
use crate::api::{self, Caller};
use crate::auth::cookie;
use crate::node::Node;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::request::new_request_id;
use crate::protocol::{BoolArgs, Protocol, Request, Response, now_ms};
use crate::ws;

use reply::Reply;

/// Keys of the query string that never become arguments.
const RESERVED_QUERY_KEYS: &[&str] = &["controller", "action", "body", "volatile", "requestId"];

pub async fn entry(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<Arc<Node>>,
) -> HttpResponse {
    let node = node.get_ref();
    let protocols = &node.settings.server.protocols;
    // Only a request actix-http handed to the upgrade path (`ws::upgrade::serve`) can
    // give its connection to a socket; one that came with a body did not.
    if protocols.websocket.enabled
        && ws::is_upgrade(&req)
        && req.extensions().contains::<ws::ThroughUpgrade>()
    {
        if node.is_draining() {
            let reply = Reply::new(&req, node, request_id_of(&req));
            return reply.bare(&ApiError::plain(errors::SHUTTING_DOWN));
        }
        let address = client_address(&req, &node.settings.http.trusted_proxies);
        return ws::upgrade(&req, node, address);
    }
    let _in_flight = InFlight::enter(node);
    let started = std::time::Instant::now();
    let reply = Reply::new(&req, node, request_id_of(&req));
    let response = serve(&req, payload, node, &reply).await;
    if node.settings.server.logs.access {
        // The path only: a query string may carry a token.
        log::info!(
            target: "access",
            "{} http {} {} {} {:.1}ms",
            client_address(&req, &node.settings.http.trusted_proxies)
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            req.method(),
            req.path(),
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    response
}

/// Counts an HTTP request for `server:metrics` until it ends, also when actix drops
/// the handler because the client went away.
struct InFlight<'a>(&'a Node);

impl<'a> InFlight<'a> {
    fn enter(node: &'a Node) -> Self {
        node.http_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(node)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.http_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An envelope that carries `error` and no request.
fn error_envelope(node: &Node, reply: &Reply, error: ApiError) -> HttpResponse {
    let response = Response::empty(
        &node.id,
        reply.request_id.clone(),
        error.status(),
        Value::Null,
        Some(error),
    );
    reply.envelope(&response)
}

/// The response, with the connection closed after it.
fn closing(mut response: HttpResponse) -> HttpResponse {
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// The client's address of an HTTP request or WebSocket handshake.
pub fn client_address(
    req: &HttpRequest,
    trusted: &[crate::config::ProxyRange],
) -> Option<std::net::IpAddr> {
    crate::node::client_address(
        req.peer_addr().map(|a| a.ip()),
        header_text(req, header::HeaderName::from_static("x-forwarded-for")),
        trusted,
    )
}

fn request_id_of(req: &HttpRequest) -> String {
    req.headers()
        .get("x-kuzzle-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map_or_else(new_request_id, str::to_owned)
}

/// The dashboard page (`GET /_dashboard`): it logs in and reads `cluster:metrics` over
/// the node's own WebSocket protocol.
const DASHBOARD: &str = include_str!("dashboard.html");

/// `GET /metrics`.
/// `/metrics`: OpenMetrics when the `Accept` header asks for it, else the Prometheus text
/// format 0.0.4 (older Prometheus servers and other scrapers).
pub fn metrics_response(node: &Node, req: &HttpRequest) -> HttpResponse {
    let text = node.metrics.render(&node.gauges());
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    if crate::metrics::wants_openmetrics(accept) {
        HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(text)
    } else {
        HttpResponse::Ok()
            .content_type(crate::metrics::PROMETHEUS_CONTENT_TYPE)
            .body(crate::metrics::to_prometheus_text(&text))
    }
}

async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    node: &Arc<Node>,
    reply: &Reply,
) -> HttpResponse {
    let path = req.path();
    let method = req.method();
    if method == Method::GET && path == "/_healthcheck" {
        return reply.envelope(&Response::empty(
            &node.id,
            reply.request_id.clone(),
            200,
            Value::Null,
            None,
        ));
    }
    if method == Method::GET
        && path == "/metrics"
        && node.settings.http.metrics.enabled
        && node.settings.server.metrics.port.is_none()
    {
        // On the API port, the rights of `server:metrics` (a bearer token); the separate
        // metrics port (`server.metrics.port`) stays open, for a private network.
        let token = bearer_token(req);
        return match crate::api::identity::authorize(node, token.as_deref(), "server", "metrics")
            .await
        {
            Ok(()) => metrics_response(node, req),
            Err(error) => reply.bare(&error),
        };
    }
    if method == Method::GET && path == "/_dashboard" {
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(DASHBOARD);
    }
    if method == Method::GET && path == "/_ready" {
        let ready =
            !node.is_draining() && node.limiter.pending() == 0 && node.bus.has_enough_nodes();
        let status = if ready { 200 } else { 503 };
        return reply.envelope(&Response::empty(
            &node.id,
            reply.request_id.clone(),
            status,
            Value::Null,
            None,
        ));
    }
    if !node.settings.server.protocols.http.enabled {
        return reply.bare(&ApiError::new(
            errors::HTTP_URL_NOT_FOUND,
            [router::display_path(path)],
        ));
    }
    if method == Method::OPTIONS {
        return reply.envelope(&Response::empty(
            &node.id,
            reply.request_id.clone(),
            200,
            Value::Object(Map::new()),
            None,
        ));
    }
    if method == Method::HEAD && router::display_path(path) == "/" {
        return reply.head();
    }

    let settings = &node.settings;
    // A verb the API does not route is answered before any body is read: after a
    // CONNECT's head, actix-http hands the rest of the connection to the payload, which
    // would never end.
    if !ws::is_upgrade(req) && Verb::parse(req.method().as_str()).is_none() {
        let error = ApiError::new(errors::HTTP_UNSUPPORTED_VERB, [req.method().as_str()]);
        return closing(error_envelope(node, reply, error));
    }
    let body_timeout = Duration::from_millis(settings.server.protocols.http.body_timeout);
    let body = async {
        let kind = body::content_kind(req, settings)?;
        // An upgrade request has no body: after its head, actix-http hands the rest of the
        // connection to the payload, which would never end.
        let raw = if ws::is_upgrade(req) {
            bytes::Bytes::new()
        } else {
            let limit = settings.server.max_request_size.as_usize();
            // A body trickled in byte by byte must not hold its connection for ever.
            tokio::time::timeout(body_timeout, body::read_body(req, payload, limit))
                .await
                .map_err(|_| {
                    ApiError::new(
                        errors::HTTP_REQUEST_TIMEOUT,
                        [body_timeout.as_millis().to_string()],
                    )
                })??
        };
        let decoded = body::decode(req, raw, settings)?;
        body::parse(&kind, &decoded, settings)
    };
    let body = match body.await {
        Ok(body) => body,
        Err(error) if error.status() == 408 => return closing(reply.bare(&error)),
        Err(error) => return reply.bare(&error),
    };

    let request = match build_request(req, reply, body) {
        Ok(request) => request,
        Err(error) => return error_envelope(node, reply, error),
    };
    let caller = Caller::new(
        Protocol::Http,
        client_address(req, &node.settings.http.trusted_proxies),
        reply.origin.clone(),
        None,
        cookie::read(header_text(req, header::COOKIE), reply.credentials),
    );
    match api::dispatch(node, &caller, request).await {
        Some(dispatched) => match dispatched.raw {
            Some((content_type, document)) if dispatched.response.error.is_none() => {
                reply.raw(content_type, &document)
            }
            _ => reply.with_cookies(reply.envelope(&dispatched.response), &dispatched.cookies),
        },
        // HTTP requests cannot be dropped while waiting; answer as overloaded if it happens.
        None => reply.bare(&ApiError::plain(errors::OVERLOADED)),
    }
}

/// The request behind `/_query` or a route; its errors are answered in an envelope.
fn build_request(req: &HttpRequest, reply: &Reply, body: Value) -> Result<Request, ApiError> {
    let bearer = bearer_token(req);
    let header_volatile = match req.headers().get("x-kuzzle-volatile") {
        None => None,
        Some(raw) => {
            let text = raw.to_str().unwrap_or_default();
            match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => Some(v),
                Ok(_) => {
                    return Err(ApiError::new(
                        errors::HTTP_VOLATILE_PARSE_FAILED,
                        ["not a JSON object"],
                    ));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        errors::HTTP_VOLATILE_PARSE_FAILED,
                        [e.to_string()],
                    ));
                }
            }
        }
    };

    let Some(verb) = Verb::parse(req.method().as_str()) else {
        return Err(ApiError::new(
            errors::HTTP_UNSUPPORTED_VERB,
            [req.method().as_str()],
        ));
    };

    if verb == Verb::Post && router::display_path(req.path()) == "/_query" {
        let Value::Object(mut envelope) = body else {
            return Err(ApiError::plain(errors::BODY_REQUIRED));
        };
        envelope.remove("requestId");
        envelope.insert("requestId".into(), reply.request_id.clone().into());
        if !envelope.contains_key("jwt")
            && let Some(token) = bearer
        {
            envelope.insert("jwt".into(), token.into());
        }
        if !envelope.contains_key("volatile")
            && let Some(volatile) = header_volatile
        {
            envelope.insert("volatile".into(), volatile);
        }
        return Request::from_value(
            Value::Object(envelope),
            Protocol::Http,
            BoolArgs::Lenient,
            now_ms(),
        )
        .map_err(|e| e.error);
    }

    let Some(matched) = router::router().find(verb, req.path()) else {
        return Err(ApiError::new(
            errors::HTTP_URL_NOT_FOUND,
            [router::display_path(req.path())],
        ));
    };
    let mut args = Map::new();
    let mut query_jwt = None;
    for (key, value) in body::parse_query(req.query_string()) {
        if RESERVED_QUERY_KEYS.contains(&key.as_str()) {
            continue;
        }
        if key == "jwt" {
            query_jwt = Some(value);
            continue;
        }
        match args.get_mut(&key) {
            Some(Value::Array(items)) => items.push(Value::String(value)),
            Some(existing) => *existing = Value::Array(vec![existing.take(), Value::String(value)]),
            None => {
                args.insert(key, Value::String(value));
            }
        }
    }
    args.extend(matched.params);
    Ok(Request {
        protocol: Protocol::Http,
        bool_args: BoolArgs::Presence,
        controller: matched.action.controller.to_owned(),
        action: matched.action.name.to_owned(),
        request_id: reply.request_id.clone(),
        jwt: bearer.or(query_jwt).filter(|t| !t.is_empty()),
        volatile: header_volatile,
        body: match body {
            Value::Null => None,
            other => Some(other),
        },
        timestamp: now_ms(),
        args,
    })
}

fn header_text(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `Authorization: Bearer <token>`, scheme case-insensitive; other schemes are ignored.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}
