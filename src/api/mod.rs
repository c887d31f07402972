//! `dispatch`: the processing order of PROTOCOL.md §3.2, shared by WebSocket frames,
//! HTTP routes and `/_query`, so behaviour cannot drift between protocols.

pub mod actions;
mod api_keys;
mod args;
mod auth;
mod cluster;
mod credentials;
pub mod identity;
mod openapi;
mod realtime;
mod roles;
mod search;
mod security;
mod server;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::cookie::AuthCookie;
use crate::delivery::outbox::Outbox;
use crate::node::Node;
use crate::protocol::errors::{self, ApiError};
use crate::protocol::{Protocol, Request, Response};
use crate::rate::RateCounter;
use crate::security::cache::Snapshot;
use crate::security::model::{Profile, is_allowed};
use identity::{
    Identity, Resolved, authenticate, check_rights, check_user_rate, current_security,
    resolve_token,
};

/// What an action answers.
#[derive(Debug)]
pub enum Reply {
    Json(Value),
    /// A result sent together with an error (`server:healthCheck` when a service is red).
    JsonWithError(Value, ApiError),
    /// A result with a `Set-Cookie` for HTTP (cookie mode, §6.3).
    JsonWithCookie(Value, String),
    /// A document that HTTP sends as is, not in an envelope (`server:openapi`).
    /// Over WebSocket it is the `result`.
    Raw {
        content_type: &'static str,
        document: Value,
    },
}

pub type ActionResult = Result<Reply, ApiError>;

/// Who sent the request: one WebSocket, or one HTTP request.
pub struct Caller {
    pub protocol: Protocol,
    /// The client's address (`node::client_address`), when known.
    pub address: Option<IpAddr>,
    pub connection_id: Arc<str>,
    /// The `Origin` header (of the HTTP request, or of the WebSocket handshake).
    pub origin: Option<String>,
    /// Cleared when the connection closes (step 7).
    pub open: Cell<bool>,
    /// The requests of this caller in flight (a WebSocket's: its connection waits for them
    /// when the client ends, and stops them when it goes).
    pub requests: InFlight,
    /// Where notifications for this connection go; HTTP callers have none.
    pub outbox: Option<Outbox>,
    /// `auth:login` calls in the current second (`limits.loginsPerSecond`).
    logins: RateCounter,
    /// The `authToken` cookie of the HTTP request or of the WebSocket handshake.
    pub cookie: AuthCookie,
    /// The token this WebSocket was last linked to (step 11).
    pub linked: RefCell<Option<LinkedToken>>,
}

/// Requests of one caller that were received and are not answered yet.
#[derive(Default)]
pub struct InFlight {
    count: Cell<usize>,
    /// Set when the client ended: whoever waits wants to know when the count reaches 0.
    awaited: Cell<bool>,
    /// Set when the caller is gone: requests not started yet do nothing, running ones
    /// give up at their next wait.
    stopped: Cell<bool>,
    stop: tokio::sync::Notify,
}

impl InFlight {
    /// One request received: counted from now until `run` ends.
    pub fn received(&self) {
        self.count.set(self.count.get() + 1);
    }

    /// Runs a request counted by `received`, unless the caller is gone; returns how many
    /// are left in flight.
    pub async fn run(&self, request: impl std::future::Future<Output = ()>) -> usize {
        if !self.stopped.get() {
            tokio::select! {
                biased;
                _ = self.stop.notified() => {}
                _ = request => {}
            }
        }
        let left = self.count.get().saturating_sub(1);
        self.count.set(left);
        left
    }

    /// Requests received and not answered.
    pub fn count(&self) -> usize {
        self.count.get()
    }

    /// From now on, the end of the last request matters (`is_awaited`).
    pub fn await_all(&self) {
        self.awaited.set(true);
    }

    pub fn is_awaited(&self) -> bool {
        self.awaited.get()
    }

    /// The caller is gone: every request still running gives up.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.stop.notify_waiters();
    }
}

#[derive(Debug, Clone)]
pub struct LinkedToken {
    pub token: String,
    pub kuid: String,
    pub expires_at: Option<u64>,
}

impl Caller {
    pub fn new(
        protocol: Protocol,
        address: Option<IpAddr>,
        origin: Option<String>,
        outbox: Option<Outbox>,
        cookie: AuthCookie,
    ) -> Self {
        Caller {
            protocol,
            address,
            connection_id: Arc::from(uuid::Uuid::new_v4().to_string()),
            origin,
            open: Cell::new(true),
            requests: InFlight::default(),
            outbox,
            logins: RateCounter::default(),
            cookie,
            linked: RefCell::new(None),
        }
    }

    fn is_open(&self) -> bool {
        self.open.get()
    }
}

/// What an action handler sees.
pub struct Call<'a> {
    pub node: &'a Arc<Node>,
    pub caller: &'a Caller,
    pub request: &'a Request,
    pub identity: &'a Identity,
    /// The token source after step 8 (cookie mode and the effective token).
    pub resolved: &'a Resolved,
    /// The caller's profiles and every role, as the rights check of step 12 saw them.
    pub profiles: &'a [&'a Profile],
    pub security: &'a Snapshot,
}

impl Call<'_> {
    /// Whether the caller may run `controller:action` on `index`/`collection`, as step 12
    /// would decide for such a request.
    pub fn may(&self, controller: &str, action: &str, index: &str, collection: &str) -> bool {
        is_allowed(
            self.profiles,
            &self.security.roles,
            controller,
            action,
            Some(index),
            Some(collection),
        )
    }
}

/// The response and, for HTTP, how to send it.
pub struct Dispatched {
    pub response: Response,
    /// Set when HTTP must send this document instead of the envelope.
    pub raw: Option<(&'static str, Value)>,
    /// `Set-Cookie` values for HTTP.
    pub cookies: Vec<String>,
}

/// Runs one request through every step. `None` means nothing is to be delivered
/// (the connection closed while the request waited, step 7).
pub async fn dispatch(node: &Arc<Node>, caller: &Caller, request: Request) -> Option<Dispatched> {
    let started = std::time::Instant::now();
    let dispatched = answer(node, caller, request).await?;
    let response = &dispatched.response;
    // Never the arguments, the body or a token: only what the request was and how it ended.
    log::debug!(
        target: "request",
        "{} {}:{} {} {:.1}ms",
        caller.protocol.name(),
        response.controller.as_deref().unwrap_or("-"),
        response.action.as_deref().unwrap_or("-"),
        response.status,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let (controller, action) = actions::label(
        response.controller.as_deref().unwrap_or_default(),
        response.action.as_deref().unwrap_or_default(),
    );
    node.metrics.answered(
        controller,
        action,
        response.status,
        started.elapsed().as_secs_f64(),
    );
    let protocol = match caller.protocol {
        Protocol::Websocket => 0,
        Protocol::Http => 1,
    };
    node.metrics.count_for_stats(protocol, response.status);
    Some(dispatched)
}

async fn answer(node: &Arc<Node>, caller: &Caller, request: Request) -> Option<Dispatched> {
    let outcome = match admit(node, caller, &request) {
        Err(error) => Err(error),
        Ok(()) => match node.limiter.acquire().await {
            Err(_) => Err(ApiError::plain(errors::OVERLOADED)),
            Ok(_permit) => {
                if !caller.is_open() {
                    return None;
                }
                execute(node, caller, &request).await
            }
        },
    };
    Some(match outcome {
        Ok(Reply::Json(result)) => Dispatched {
            response: Response::to_request(&node.id, &request, Ok(result)),
            raw: None,
            cookies: Vec::new(),
        },
        Ok(Reply::JsonWithCookie(result, cookie)) => Dispatched {
            response: Response::to_request(&node.id, &request, Ok(result)),
            raw: None,
            cookies: vec![cookie],
        },
        Ok(Reply::JsonWithError(result, error)) => Dispatched {
            response: Response::with_result_and_error(&node.id, &request, result, Some(error)),
            raw: None,
            cookies: Vec::new(),
        },
        Ok(Reply::Raw {
            content_type,
            document,
        }) => Dispatched {
            response: Response::to_request(&node.id, &request, Ok(document.clone())),
            raw: Some((content_type, document)),
            cookies: Vec::new(),
        },
        Err(error) => Dispatched {
            response: Response::to_request(&node.id, &request, Err(error)),
            raw: None,
            cookies: Vec::new(),
        },
    })
}

/// Steps 1 to 5: checks that need no waiting.
fn admit(node: &Node, caller: &Caller, request: &Request) -> Result<(), ApiError> {
    if node.is_draining() {
        return Err(ApiError::plain(errors::SHUTTING_DOWN));
    }
    if !node.bus.has_enough_nodes() {
        return Err(ApiError::plain(errors::NOT_ENOUGH_NODES));
    }
    if request.controller.is_empty() {
        return Err(ApiError::missing_argument("controller"));
    }
    if request.action.is_empty() {
        return Err(ApiError::missing_argument("action"));
    }
    if request.args.contains_key("targets")
        && (request.args.contains_key("index") || request.args.contains_key("collection"))
    {
        return Err(ApiError::new(
            errors::MUTUALLY_EXCLUSIVE,
            ["index, collection", "targets"],
        ));
    }
    if let Some(origin) = &caller.origin
        && !node.origins.allows(origin)
    {
        return Err(ApiError::new(
            errors::UNAUTHORIZED_ORIGIN,
            [origin.as_str()],
        ));
    }
    Ok(())
}

/// Steps 9 to 16. Cookies (step 8) and token linking (step 11) come with the session
/// registry.
async fn execute(node: &Arc<Node>, caller: &Caller, request: &Request) -> ActionResult {
    let resolved = resolve_token(
        node.settings.http.cookie_authentication,
        request.bool_arg("cookieAuth")?,
        &caller.cookie,
        request.jwt.as_deref(),
    )?;
    let is = |controller: &str, action: &str| {
        request.controller == controller && request.action == action
    };
    // Cookie mode (§6.2 row 4): login and checkToken handle the cookie themselves, so a
    // stale one cannot block a login; logout runs as the cookie's user when it verifies,
    // else as anonymous without a rights check, since it can only clear the cookie.
    let mut skip_rights = false;
    let identity = if resolved.cookie_mode_token
        && (is("auth", "login") || is("auth", "checkToken"))
    {
        Identity::anonymous()
    } else if resolved.cookie_mode_token && is("auth", "logout") {
        authenticate(node, resolved.token.as_deref())
            .await
            .unwrap_or_else(|_| {
                skip_rights = true;
                Identity::anonymous()
            })
    } else {
        authenticate(node, resolved.token.as_deref())
            .await
            .inspect_err(|error| end_refused_link(node, caller, resolved.token.as_deref(), error))?
    };
    if let Some(token) = &identity.token {
        link_connection(node, caller, &identity.kuid, token, identity.expires_at);
    }
    let security = current_security(node).await?;
    let profiles = identity.profiles_in(&security);
    if !skip_rights {
        check_rights(&identity, &profiles, &security.roles, request)?;
    }
    if request.controller == "auth" && request.action == "login" {
        let limit = u64::from(node.settings.limits.logins_per_second);
        if !caller.logins.admit("login", limit) || !node.logins.check_address(caller.address).await
        {
            return Err(ApiError::plain(errors::TOO_MANY_LOGINS_REQUESTS));
        }
    }
    check_user_rate(node, &identity, &profiles, request)?;
    let handler = match actions::lookup(&request.controller, &request.action) {
        actions::Lookup::Found(handler) => handler,
        actions::Lookup::NoController => {
            return Err(ApiError::new(
                errors::CONTROLLER_NOT_FOUND,
                [request.controller.as_str()],
            ));
        }
        actions::Lookup::NoAction => {
            return Err(ApiError::new(
                errors::ACTION_NOT_FOUND,
                [request.controller.as_str(), request.action.as_str()],
            ));
        }
    };
    if node.settings.server.strict_sdk_version {
        check_sdk_version(request)?;
    }
    let call = Call {
        node,
        caller,
        request,
        identity: &identity,
        resolved: &resolved,
        profiles: &profiles,
        security: &security,
    };
    handler(&call).await
}

/// A request refused for the token its socket is linked to (revoked, expired, its user
/// gone) ends the link: the socket gets `TokenExpired` and loses its subscriptions, even if
/// the revocation itself never reached this node.
fn end_refused_link(node: &Node, caller: &Caller, token: Option<&str>, error: &ApiError) {
    let refused = [
        errors::TOKEN_INVALID,
        errors::TOKEN_EXPIRED,
        errors::USER_NOT_FOUND,
    ]
    .iter()
    .any(|def| error.id() == Some(def.id));
    let mut linked = caller.linked.borrow_mut();
    if !refused || token.is_none() || linked.as_ref().map(|l| l.token.as_str()) != token {
        return;
    }
    if let Some(linked) = linked.take() {
        node.realtime.end_token_here(linked.token);
    }
}

/// Step 11: a WebSocket that uses a token is linked to it, so that it learns when the
/// token expires or is revoked. Off with `realtimeNotifications: false`.
pub(crate) fn link_connection(
    node: &Node,
    caller: &Caller,
    kuid: &str,
    token: &str,
    expires_at: Option<u64>,
) {
    let Some(outbox) = &caller.outbox else { return };
    // Linked already: the registry knows (every way it ends a link also fails the token's
    // next request, or clears `linked`; a refresh moves the link to the new token, where it
    // stays), and telling it again would cost a message per request.
    if caller
        .linked
        .borrow()
        .as_ref()
        .is_some_and(|linked| linked.token == token)
    {
        return;
    }
    *caller.linked.borrow_mut() = Some(LinkedToken {
        token: token.to_owned(),
        kuid: kuid.to_owned(),
        expires_at,
    });
    if !node
        .settings
        .server
        .protocols
        .websocket
        .realtime_notifications
    {
        return;
    }
    node.realtime.link(
        token.to_owned(),
        expires_at,
        caller.connection_id.clone(),
        outbox.clone(),
    );
}

/// Step 15: refuse SDKs older than the minimum major version for their name.
fn check_sdk_version(request: &Request) -> Result<(), ApiError> {
    let Some(volatile) = request.volatile.as_ref() else {
        return Ok(());
    };
    if let Some(v1) = volatile.get("sdkVersion") {
        let version = v1.as_str().map_or_else(|| v1.to_string(), str::to_owned);
        return Err(ApiError::new(
            errors::INCOMPATIBLE_SDK_VERSION,
            [version, "Kuzzle v2".to_owned()],
        ));
    }
    let Some(sdk_name) = volatile.get("sdkName").and_then(Value::as_str) else {
        return Ok(());
    };
    let Some((name, version)) = sdk_name.split_once('@') else {
        return Ok(());
    };
    if name.is_empty() || version.is_empty() {
        return Ok(());
    }
    let minimum = match name {
        "js" => 7,
        "csharp" | "cpp" => 2,
        "java" | "go" => 3,
        "android" => 5,
        "php" => 4,
        _ => return Ok(()),
    };
    let major_text = version.split('.').next().unwrap_or_default();
    let Ok(major) = major_text.parse::<u64>() else {
        return Ok(());
    };
    if major < minimum {
        return Err(ApiError::new(
            errors::INCOMPATIBLE_SDK_VERSION,
            [version.to_owned(), format!("min: {minimum}, max: none")],
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BoolArgs;
    use serde_json::json;

    fn with_volatile(volatile: Value) -> Request {
        Request::from_value(
            json!({"controller":"server","action":"now","volatile":volatile}),
            Protocol::Websocket,
            BoolArgs::Strict,
            0,
        )
        .unwrap()
    }

    #[test]
    fn sdk_version_check() {
        assert!(check_sdk_version(&with_volatile(json!({"sdkName":"js@7.17.1"}))).is_ok());
        assert!(
            check_sdk_version(&with_volatile(json!({"sdkName":"js@10.0.0"}))).is_ok(),
            "numeric compare (CN-14)"
        );
        assert!(check_sdk_version(&with_volatile(json!({"sdkName":"unknown@1.0"}))).is_ok());
        assert!(check_sdk_version(&with_volatile(json!({"sdkName":"js@beta"}))).is_ok());
        assert!(check_sdk_version(&with_volatile(json!({"sdkName":"js@"}))).is_ok());
        let err = check_sdk_version(&with_volatile(json!({"sdkName":"js@6.2.0"}))).unwrap_err();
        assert_eq!(
            err.message(),
            "Incompatible SDK client. Your SDK version (6.2.0) does not match Kuzzle requirement (min: 7, max: none)."
        );
        let err = check_sdk_version(&with_volatile(json!({"sdkVersion":"5.0.1"}))).unwrap_err();
        assert_eq!(
            err.message(),
            "Incompatible SDK client. Your SDK version (5.0.1) does not match Kuzzle requirement (Kuzzle v2)."
        );
    }
}
