//! The error catalogue of PROTOCOL.md §3.5, as one table.
//!
//! Each entry is a constant so that the code that raises an error names it
//! with the compiler's help; `ALL` lists every entry for the consistency tests.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;

/// One row of the catalogue.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorDef {
    pub id: &'static str,
    pub status: u16,
    pub code: u32,
    pub template: &'static str,
}

macro_rules! catalogue {
    ($($name:ident = ($id:literal, $status:literal, $code:literal, $template:literal);)*) => {
        $(pub const $name: &ErrorDef = &ErrorDef { id: $id, status: $status, code: $code, template: $template };)*
        /// Every catalogued error, in the order of PROTOCOL.md.
        pub const ALL: &[&ErrorDef] = &[$($name),*];
    };
}

catalogue! {
    INVALID_TYPE = ("api.assert.invalid_type", 400, 33619969, "Wrong type for argument \"%s\" (expected: %s)");
    INVALID_ARGUMENT = ("api.assert.invalid_argument", 400, 33619970, "Invalid argument \"%s\". Expected: %s");
    MISSING_ARGUMENT = ("api.assert.missing_argument", 400, 33619971, "Missing argument \"%s\".");
    EMPTY_ARGUMENT = ("api.assert.empty_argument", 400, 33619972, "The argument \"%s\" is empty.");
    MUTUALLY_EXCLUSIVE = ("api.assert.mutually_exclusive", 400, 33619973, "Arguments \"%s\" and \"%s\" are mutually exclusive");
    UNEXPECTED_ARGUMENT = ("api.assert.unexpected_argument", 400, 33619975, "Unexpected argument \"%s\" (accepted arguments: %s)");
    BODY_REQUIRED = ("api.assert.body_required", 400, 33619976, "The request must specify a body.");
    FORBIDDEN_ARGUMENT = ("api.assert.forbidden_argument", 400, 33619979, "The argument \"%s\" is not allowed by this API action.");
    KONCORDE_DSL_ERROR = ("api.assert.koncorde_dsl_error", 400, 33619982, "%s");
    OVERLOADED = ("api.process.overloaded", 503, 33685506, "Request discarded: Kuzzle Server is temporarily overloaded.");
    CONNECTION_DROPPED = ("api.process.connection_dropped", 400, 33685507, "Client connection dropped");
    CONTROLLER_NOT_FOUND = ("api.process.controller_not_found", 404, 33685508, "API controller \"%s\" not found.");
    ACTION_NOT_FOUND = ("api.process.action_not_found", 404, 33685509, "API action \"%s\":\"%s\" not found");
    INCOMPATIBLE_SDK_VERSION = ("api.process.incompatible_sdk_version", 400, 33685510, "Incompatible SDK client. Your SDK version (%s) does not match Kuzzle requirement (%s).");
    SHUTTING_DOWN = ("api.process.shutting_down", 503, 33685511, "Rejected: this node is shutting down.");
    TOO_MANY_REQUESTS = ("api.process.too_many_requests", 429, 33685512, "Rejected: requests rate limit exceeded for this user.");
    ADMIN_EXISTS = ("api.process.admin_exists", 412, 33685513, "Admin user is already set.");
    NOT_ENOUGH_NODES = ("api.process.not_enough_nodes", 503, 33685515, "Rejected: this cluster is disabled because there aren't enough nodes connected.");
    UNAUTHORIZED_ORIGIN = ("api.process.unauthorized_origin", 401, 33685516, "The origin \"%s\" is not authorized.");
    TOO_MANY_LOGINS_REQUESTS = ("api.process.too_many_logins_requests", 429, 33685517, "Rejected: Too many login attempts per second");
    HTTP_REQUEST_TOO_LARGE = ("network.http.request_too_large", 413, 50397185, "Maximum HTTP request size exceeded.");
    HTTP_UNEXPECTED_ERROR = ("network.http.unexpected_error", 400, 50397186, "Caught an unexpected HTTP error: %s");
    HTTP_TOO_MANY_ENCODINGS = ("network.http.too_many_encodings", 400, 50397187, "Too many encodings.");
    HTTP_UNSUPPORTED_COMPRESSION = ("network.http.unsupported_compression", 400, 50397188, "Unsupported compression algorithm \"%s\".");
    HTTP_COMPRESSION_DISABLED = ("network.http.compression_disabled", 400, 50397189, "Compression support is disabled.");
    // kuzzle-rt: `server.protocols.http.bodyTimeout`.
    HTTP_REQUEST_TIMEOUT = ("network.http.request_timeout", 408, 50397284, "The request body was not received within %s ms.");
    HTTP_UNSUPPORTED_VERB = ("network.http.unsupported_verb", 400, 50397190, "Unsupported HTTP verb \"%s\".");
    HTTP_URL_NOT_FOUND = ("network.http.url_not_found", 404, 50397191, "API URL not found: %s.");
    HTTP_UNSUPPORTED_CONTENT = ("network.http.unsupported_content", 400, 50397192, "Invalid request content-type. Expected \"application/json\", got: \"%s\".");
    HTTP_UNSUPPORTED_CHARSET = ("network.http.unsupported_charset", 400, 50397193, "Unsupported request charset. Expected \"utf-8\", got: \"%s\".");
    HTTP_VOLATILE_PARSE_FAILED = ("network.http.volatile_parse_failed", 400, 50397195, "Unable to convert the \"x-kuzzle-volatile\" HTTP header to JSON: %s");
    HTTP_BODY_PARSE_FAILED = ("network.http.body_parse_failed", 400, 50397196, "Unable to convert the HTTP body to JSON: %s");
    HTTP_FILE_TOO_LARGE = ("network.http.file_too_large", 413, 50397197, "Maximum HTTP file size exceeded");
    WS_UNEXPECTED_ERROR = ("network.websocket.unexpected_error", 400, 50528257, "Caught an unexpected WebSocket error: %s");
    WS_RATELIMIT_EXCEEDED = ("network.websocket.ratelimit_exceeded", 429, 50528258, "Rejected: too many requests received from that socket");
    TOKEN_INVALID = ("security.token.invalid", 401, 117506049, "Invalid token.");
    TOKEN_TTL_EXCEEDED = ("security.token.ttl_exceeded", 400, 117506052, "expiresIn value exceeds maximum allowed value");
    TOKEN_GENERATION_FAILED = ("security.token.generation_failed", 500, 117506053, "Error while generating token: %s");
    TOKEN_EXPIRED = ("security.token.expired", 401, 117506054, "Token expired");
    TOKEN_VERIFICATION_ERROR = ("security.token.verification_error", 500, 117506055, "Error verifying token: %s");
    TOKEN_REFRESH_FORBIDDEN = ("security.token.refresh_forbidden", 401, 117506056, "%s cannot be refreshed.");
    UNKNOWN_STRATEGY = ("security.credentials.unknown_strategy", 400, 117571585, "Unknown authentication strategy \"%s\"");
    DATABASE_INCONSISTENCY = ("security.credentials.database_inconsistency", 500, 117571586, "Internal database inconsistency detected: existing credentials found on non-existing user %s.");
    RIGHTS_UNAUTHORIZED = ("security.rights.unauthorized", 401, 117637121, "Unauthorized: authentication required to execute the action \"%s:%s\".");
    RIGHTS_FORBIDDEN = ("security.rights.forbidden", 403, 117637122, "Insufficient permissions to execute the action \"%s:%s\" (User \"%s\").");
    USER_ALREADY_EXISTS = ("security.user.already_exists", 412, 117702657, "User %s already exists.");
    USER_NOT_FOUND = ("security.user.not_found", 404, 117702658, "User \"%s\" not found.");
    USER_CANNOT_HYDRATE = ("security.user.cannot_hydrate", 500, 117702660, "Unable to hydrate the user \"%s\": missing profile(s) in the database");
    ROLE_NOT_FOUND = ("security.role.not_found", 404, 117768193, "Role \"%s\" not found.");
    ROLE_LOGIN_REQUIRED = ("security.role.login_required", 400, 117768194, "Cannot remove the \"login\" action from the anonymous role.");
    ROLE_CANNOT_DELETE = ("security.role.cannot_delete", 400, 117768195, "The following roles are protected and cannot be deleted: anonymous, default, admin");
    ROLE_IN_USE = ("security.role.in_use", 412, 117768196, "The role \"%s\" is still used and cannot be deleted.");
    ROLE_UNKNOWN_CONTROLLER = ("security.role.unknown_controller", 400, 117768201, "Trying to set role %s with a non-existing controller '%s'. %s");
    ROLE_UNKNOWN_ACTION = ("security.role.unknown_action", 400, 117768202, "Trying to set role %s with a non-existing action '%s' in controller '%s'. %s");
    PROFILE_NOT_FOUND = ("security.profile.not_found", 404, 117833729, "Profile \"%s\" not found.");
    PROFILE_CANNOT_DELETE = ("security.profile.cannot_delete", 400, 117833730, "The following profiles are protected and cannot be deleted: anonymous, default, admin");
    PROFILE_IN_USE = ("security.profile.in_use", 412, 117833731, "The profile \"%s\" is still used and cannot be deleted.");
    PROFILE_MISSING_ANONYMOUS_ROLE = ("security.profile.missing_anonymous_role", 400, 117833733, "The anonymous profile must include the anonymous role");
    COOKIE_INVALID = ("security.cookie.invalid", 401, 117899265, "Invalid cookie.");
    COOKIE_UNSUPPORTED = ("security.cookie.unsupported", 500, 117899266, "Cookie authentication not supported.");
    STRATEGY_MISSING_USER = ("plugin.strategy.missing_user", 401, 67305492, "%s");
    PLUGIN_UNEXPECTED_ERROR = ("plugin.runtime.unexpected_error", 500, 67239938, "Caught an unexpected plugin error: %s");
    UNEXPECTED_ERROR = ("core.fatal.unexpected_error", 500, 1, "Caught an unexpected error: %s.");
    SERVICE_UNAVAILABLE = ("core.fatal.service_unavailable", 500, 2, "Service unavailable: %s.");
    ROOM_NOT_FOUND = ("core.realtime.room_not_found", 404, 65537, "The room \"%s\" doesn't exist");
    INVALID_SCOPE = ("core.realtime.invalid_scope", 400, 65540, "Invalid value for the \"scope\" parameter (allowed: \"all\", \"in\", \"out\", \"none\").");
    INVALID_USERS = ("core.realtime.invalid_users", 400, 65541, "Invalid value for the \"users\" parameter (allowed: \"all\", \"in\", \"out\", \"none\").");
    TOO_MANY_ROOMS = ("core.realtime.too_many_rooms", 413, 65543, "Unable to subscribe: maximum number of unique rooms reached.");
    // kuzzle-rt: `limits.subscriptionsPerConnection`.
    TOO_MANY_SUBSCRIPTIONS = ("core.realtime.too_many_subscriptions", 413, 65636, "Unable to subscribe: this connection already holds the maximum number of subscriptions (%s).");
    // kuzzle-rt: `limits.subscriptionFiltersMemory`.
    FILTERS_BUDGET = ("core.realtime.filters_budget_exceeded", 413, 65637, "Unable to subscribe: the filters of this node's rooms hold the maximum memory (limits.subscriptionFiltersMemory: %s bytes); try again later.");
    NOT_SUBSCRIBED = ("core.realtime.not_subscribed", 412, 65544, "User \"%s\" has not subscribed to \"%s\".");
    CACHE_READ_FAILED = ("services.cache.read_failed", 500, 16973826, "Cache read fail: %s");
    CACHE_NOT_CONNECTED = ("services.cache.not_connected", 503, 16973827, "Unable to connect to the cache server.");
    CACHE_WRITE_FAILED = ("services.cache.write_failed", 500, 16973828, "Cache write fail: %s");
    GET_LIMIT_EXCEEDED = ("services.storage.get_limit_exceeded", 413, 16842755, "The number of documents returned by this request exceeds the configured server limit.");
    WRITE_LIMIT_EXCEEDED = ("services.storage.write_limit_exceeded", 413, 16842756, "The number of documents edited by this request exceeds the configured server limit.");
    INCOMPLETE_DELETE = ("services.storage.incomplete_delete", 206, 16842761, "Couldn't delete all the requested documents: %s");
    DOCUMENT_NOT_FOUND = ("services.storage.not_found", 404, 16842763, "Document \"%s\" not found in \"%s\":\"%s\".");
    UNKNOWN_SCROLL_ID = ("services.storage.unknown_scroll_id", 404, 16842766, "Non-existing or expired scroll identifier.");
    DOCUMENT_ALREADY_EXISTS = ("services.storage.document_already_exists", 400, 16842769, "Document already exists.");
    SCROLL_DURATION_TOO_GREAT = ("services.storage.scroll_duration_too_great", 400, 16842796, "Scroll duration \"%s\" is too great.");
    STATISTICS_NOT_AVAILABLE = ("services.statistics.not_available", 500, 17039361, "Statistics module is not available.");
}

/// An error as it goes on the wire: a catalogued one, or one of the id-less
/// errors of PROTOCOL.md §3.6.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    Known {
        def: &'static ErrorDef,
        props: Vec<Value>,
    },
    Bare {
        status: u16,
        message: String,
    },
}

impl ApiError {
    pub fn new<P: Into<Value>>(def: &'static ErrorDef, props: impl IntoIterator<Item = P>) -> Self {
        ApiError::Known {
            def,
            props: props.into_iter().map(Into::into).collect(),
        }
    }

    /// A catalogued error whose template has no placeholder.
    pub fn plain(def: &'static ErrorDef) -> Self {
        ApiError::Known {
            def,
            props: Vec::new(),
        }
    }

    pub fn bare(status: u16, message: impl Into<String>) -> Self {
        ApiError::Bare {
            status,
            message: message.into(),
        }
    }

    pub fn missing_argument(name: &str) -> Self {
        Self::new(MISSING_ARGUMENT, [name])
    }

    pub fn invalid_type(name: &str, expected: &str) -> Self {
        Self::new(INVALID_TYPE, [name, expected])
    }

    pub fn unexpected(reason: impl std::fmt::Display) -> Self {
        Self::new(UNEXPECTED_ERROR, [reason.to_string()])
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::Known { def, .. } => def.status,
            ApiError::Bare { status, .. } => *status,
        }
    }

    pub fn id(&self) -> Option<&'static str> {
        match self {
            ApiError::Known { def, .. } => Some(def.id),
            ApiError::Bare { .. } => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Known { def, props } => render(def.template, props),
            ApiError::Bare { message, .. } => message.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl Serialize for ApiError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ApiError::Known { def, props } => {
                let mut map = serializer.serialize_map(Some(5))?;
                map.serialize_entry("code", &def.code)?;
                map.serialize_entry("id", def.id)?;
                map.serialize_entry("message", &render(def.template, props))?;
                map.serialize_entry("props", props)?;
                map.serialize_entry("status", &def.status)?;
                map.end()
            }
            ApiError::Bare { status, message } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("message", message)?;
                map.serialize_entry("status", status)?;
                map.end()
            }
        }
    }
}

/// Fills each `%s` with the next prop; props left over are appended, one space each.
fn render(template: &str, props: &[Value]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut props = props.iter();
    let mut pieces = template.split("%s").peekable();
    while let Some(piece) = pieces.next() {
        out.push_str(piece);
        if pieces.peek().is_some() {
            match props.next() {
                Some(prop) => out.push_str(&prop_text(prop)),
                None => out.push_str("%s"),
            }
        }
    }
    for prop in props {
        out.push(' ');
        out.push_str(&prop_text(prop));
    }
    out
}

/// The string form Kuzzle gives a prop: arrays as `[ 'a', 'b' ]`.
fn prop_text(prop: &Value) -> String {
    match prop {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|item| match item {
                    Value::String(s) => format!("'{s}'"),
                    other => prop_text(other),
                })
                .collect();
            format!("[ {} ]", inner.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn domain_number(name: &str) -> Option<u32> {
        Some(match name {
            "core" => 0,
            "services" => 1,
            "api" => 2,
            "network" => 3,
            "plugin" => 4,
            "security" => 7,
            _ => return None,
        })
    }

    fn subdomain_number(domain: &str, sub: &str) -> Option<u32> {
        Some(match (domain, sub) {
            ("core", "fatal") => 0,
            ("core", "realtime") => 1,
            ("core", "configuration") => 3,
            ("services", "storage") => 1,
            ("services", "cache") => 3,
            ("services", "statistics") => 4,
            ("api", "assert") => 1,
            ("api", "process") => 2,
            ("network", "http") => 1,
            ("network", "websocket") => 3,
            ("network", "entrypoint") => 4,
            ("plugin", "runtime") => 2,
            ("plugin", "strategy") => 3,
            ("security", "token") => 1,
            ("security", "credentials") => 2,
            ("security", "rights") => 3,
            ("security", "user") => 4,
            ("security", "role") => 5,
            ("security", "profile") => 6,
            ("security", "cookie") => 7,
            _ => return None,
        })
    }

    #[test]
    fn codes_are_unique_and_follow_the_formula() {
        let mut codes = HashSet::new();
        let mut ids = HashSet::new();
        for def in ALL {
            assert!(codes.insert(def.code), "duplicate code {}", def.code);
            assert!(ids.insert(def.id), "duplicate id {}", def.id);
            let parts: Vec<&str> = def.id.split('.').collect();
            assert_eq!(parts.len(), 3, "{}", def.id);
            let domain = domain_number(parts[0]).expect(def.id);
            let sub = subdomain_number(parts[0], parts[1]).expect(def.id);
            assert_eq!(def.code >> 24, domain, "{}", def.id);
            assert_eq!((def.code >> 16) & 0xff, sub, "{}", def.id);
            assert!(def.code & 0xffff > 0, "{}", def.id);
            // 206: Kuzzle's PartialError (a result and an error together).
            assert!(
                (400..600).contains(&def.status) || def.status == 206,
                "{}",
                def.id
            );
        }
        // The 80 rows of PROTOCOL.md §3.5, and kuzzle-rt's
        // core.realtime.too_many_subscriptions and network.http.request_timeout
        // (documented with their settings).
        assert_eq!(ALL.len(), 82);
    }

    #[test]
    fn surplus_props_are_appended() {
        let err = ApiError::new(
            RIGHTS_UNAUTHORIZED,
            [Value::from("auth"), "logout".into(), (-1).into()],
        );
        assert_eq!(
            err.message(),
            "Unauthorized: authentication required to execute the action \"auth:logout\". -1"
        );
    }

    #[test]
    fn array_props_render_like_kuzzle() {
        let err = ApiError::new(
            UNEXPECTED_ARGUMENT,
            [Value::from("foo"), serde_json::json!(["kuzzle", "app"])],
        );
        assert_eq!(
            err.message(),
            "Unexpected argument \"foo\" (accepted arguments: [ 'kuzzle', 'app' ])"
        );
    }

    #[test]
    fn serialises_in_wire_order() {
        let err = ApiError::new(CONTROLLER_NOT_FOUND, ["foo"]);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"code":33685508,"id":"api.process.controller_not_found","message":"API controller \"foo\" not found.","props":["foo"],"status":404}"#
        );
        let bare = ApiError::bare(400, "Attribute jwt must be of type \"string\"");
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"message":"Attribute jwt must be of type \"string\"","status":400}"#
        );
    }
}
