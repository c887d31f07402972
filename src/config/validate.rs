//! Startup checks of PROTOCOL.md §8.3 that types alone cannot express, and the startup warnings.

use serde_json::{Value, json};

use super::load::ConfigError;
use super::settings::{Settings, StorageBackend};
use super::timespan::{Lifetime, parse_lifetime};

fn fail(path: &str, problem: &str, got: impl Into<Value>) -> Result<(), ConfigError> {
    Err(ConfigError::key(path, problem, &got.into()))
}

fn at_least(path: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        fail(path, &format!("must be at least {min}"), value)
    } else {
        Ok(())
    }
}

fn zero_or_at_least_1000(path: &str, value: u64) -> Result<(), ConfigError> {
    if value != 0 && value < 1000 {
        fail(
            path,
            "must be 0 (disabled) or at least 1000 milliseconds",
            value,
        )
    } else {
        Ok(())
    }
}

pub fn validate(s: &Settings) -> Result<(), ConfigError> {
    let ws = &s.server.protocols.websocket;
    let http = &s.server.protocols.http;
    zero_or_at_least_1000("server.protocols.websocket.heartbeat", ws.heartbeat)?;
    zero_or_at_least_1000("server.protocols.websocket.idleTimeout", ws.idle_timeout)?;
    at_least(
        "server.protocols.websocket.closeTimeout",
        ws.close_timeout,
        100,
    )?;
    at_least(
        "server.protocols.websocket.messageTimeout",
        ws.message_timeout,
        1000,
    )?;
    at_least(
        "server.protocols.websocket.partialMessagesBudget",
        ws.partial_messages_budget.0,
        s.server.max_request_size.0,
    )?;
    if s.server.protocols.mqtt.enabled {
        fail(
            "server.protocols.mqtt.enabled",
            "MQTT is not supported by kuzzle-rt",
            true,
        )?;
    }
    if !ws.enabled && !http.enabled {
        fail(
            "server.protocols",
            "HTTP and WebSocket cannot both be disabled",
            json!({"http": {"enabled": false}, "websocket": {"enabled": false}}),
        )?;
    }
    at_least(
        "server.protocols.http.maxEncodingLayers",
        http.max_encoding_layers.into(),
        1,
    )?;

    let l = &s.limits;
    at_least("limits.concurrentRequests", l.concurrent_requests.into(), 1)?;
    at_least(
        "limits.requestsBufferSize",
        l.requests_buffer_size.into(),
        1,
    )?;
    if l.concurrent_requests >= l.requests_buffer_size {
        fail(
            "limits.concurrentRequests",
            "must be lower than limits.requestsBufferSize",
            l.concurrent_requests,
        )?;
    }
    if l.requests_buffer_warning_threshold < l.concurrent_requests
        || l.requests_buffer_warning_threshold > l.requests_buffer_size
    {
        fail(
            "limits.requestsBufferWarningThreshold",
            "must be between limits.concurrentRequests and limits.requestsBufferSize",
            l.requests_buffer_warning_threshold,
        )?;
    }
    at_least("limits.loginsPerSecond", l.logins_per_second.into(), 1)?;
    at_least(
        "limits.loginFailuresBeforeDelay",
        l.login_failures_before_delay.into(),
        1,
    )?;
    if l.login_failure_max_delay < l.login_failure_delay {
        fail(
            "limits.loginFailureMaxDelay",
            "must be at least limits.loginFailureDelay",
            l.login_failure_max_delay,
        )?;
    }
    at_least(
        "limits.subscriptionConditionsCount",
        l.subscription_conditions_count.into(),
        1,
    )?;
    at_least(
        "limits.documentsFetchCount",
        l.documents_fetch_count.into(),
        1,
    )?;
    at_least(
        "limits.documentsWriteCount",
        l.documents_write_count.into(),
        1,
    )?;

    at_least("stats.statsInterval", s.stats.stats_interval, 1)?;
    at_least("stats.ttl", s.stats.ttl, 1)?;

    let sec = &s.security;
    if !matches!(sec.algorithm(), "HS256" | "HS384" | "HS512") {
        fail(
            "security.authToken.algorithm",
            "must be HS256, HS384 or HS512",
            sec.algorithm(),
        )?;
    }
    let max_ttl = sec.max_ttl();
    if max_ttl < -1 {
        fail(
            "security.authToken.maxTTL",
            "must be -1 (no maximum) or a number of milliseconds",
            max_ttl,
        )?;
    }
    if sec.api_key.max_ttl < -1 {
        fail(
            "security.apiKey.maxTTL",
            "must be -1 (no maximum) or a number of milliseconds",
            sec.api_key.max_ttl,
        )?;
    }
    let expires_in = sec.expires_in();
    match parse_lifetime(&expires_in) {
        None => fail(
            "security.authToken.expiresIn",
            "must be a number of milliseconds, -1, or a parsable timespan string",
            expires_in,
        )?,
        Some(lifetime) if max_ttl > -1 => {
            let exceeds = match lifetime {
                Lifetime::Infinite => true,
                Lifetime::Millis(ms) => ms > max_ttl as u64,
            };
            if exceeds {
                fail(
                    "security.authToken.expiresIn",
                    "exceeds security.authToken.maxTTL",
                    expires_in,
                )?;
            }
        }
        Some(_) => {}
    }

    if s.http.access_control_allow_origin_use_regexp {
        for origin in &s.http.access_control_allow_origin {
            if let Err(e) = regex::Regex::new(origin) {
                fail(
                    "http.accessControlAllowOrigin",
                    &format!("invalid regular expression: {e}"),
                    origin.as_str(),
                )?;
            }
        }
    }

    at_least(
        "server.protocols.http.bodyTimeout",
        s.server.protocols.http.body_timeout,
        1,
    )?;
    at_least(
        "services.storage.commandTimeout",
        s.services.storage.command_timeout,
        1,
    )?;

    let c = &s.cluster;
    at_least("cluster.heartbeat", c.heartbeat, 1)?;
    at_least("cluster.minimumNodes", c.minimum_nodes.into(), 1)?;
    at_least("cluster.activityDepth", c.activity_depth.into(), 1)?;
    at_least("cluster.joinTimeout", c.join_timeout, 1)?;
    at_least("cluster.syncTimeout", c.sync_timeout, 1)?;
    if c.sync_timeout >= c.join_timeout {
        fail(
            "cluster.syncTimeout",
            "must be lower than cluster.joinTimeout",
            c.sync_timeout,
        )?;
    }
    at_least("cluster.ports.command", c.ports.command.into(), 1)?;
    at_least("cluster.ports.sync", c.ports.sync.into(), 1)?;
    if let Some(ip) = c.ip.as_deref()
        && !matches!(ip, "private" | "public" | "" | "null")
    {
        fail("cluster.ip", "must be \"private\", \"public\" or null", ip)?;
    }
    let bus = &c.bus;
    at_least("cluster.bus.history.maxAge", bus.history.max_age, 1000)?;
    at_least("cluster.bus.history.maxLength", bus.history.max_length, 100)?;
    at_least("cluster.bus.retain.maxMessages", bus.retain.max_messages, 1)?;
    at_least("cluster.bus.retain.maxAge", bus.retain.max_age, 1000)?;
    at_least(
        "cluster.bus.retain.maxSize",
        bus.retain.max_size.0,
        s.server.max_request_size.0,
    )?;
    let storage = &s.services.storage;
    for node in &storage.nodes {
        if node.host.is_empty() {
            fail(
                "services.storage.nodes",
                "every node needs a host",
                node.host.as_str(),
            )?;
        }
        at_least("services.storage.nodes", node.port.into(), 1)?;
    }
    if storage.is_redis_cluster() && storage.database != 0 {
        fail(
            "services.storage.database",
            "Redis Cluster has only database 0",
            storage.database,
        )?;
    }
    if c.minimum_nodes > 1 && s.services.storage.backend != StorageBackend::Redis {
        fail(
            "cluster.minimumNodes",
            "a cluster of more than one node needs services.storage.backend = \"redis\"",
            c.minimum_nodes,
        )?;
    }
    Ok(())
}

/// Warnings the node logs at startup (those that need no store).
pub fn warnings(s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    if s.services.storage.is_redis_cluster() {
        out.push(format!(
            "services.storage.nodes is set: the store is the Redis Cluster of {} seed node(s), and services.storage.node is ignored",
            s.services.storage.nodes.len()
        ));
    }
    if s.http.access_control_allow_origin_use_regexp {
        for origin in &s.http.access_control_allow_origin {
            if origin != "*" && !(origin.starts_with('^') && origin.ends_with('$')) {
                out.push(format!(
                    "http.accessControlAllowOrigin: the regular expression {origin:?} is not anchored with ^ and $: it also allows every origin that merely contains a match"
                ));
            }
        }
    }
    for (key, present) in [
        ("internalCache", s.services.internal_cache.is_some()),
        ("memoryStorage", s.services.memory_storage.is_some()),
        ("storageEngine", s.services.storage_engine.is_some()),
    ] {
        if present {
            out.push(format!("services.{key} is a Kuzzle key that kuzzle-rt ignores: configure services.storage instead"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_origin_expressions_are_warned_about() {
        let mut settings = Settings::default();
        settings.http.access_control_allow_origin_use_regexp = true;
        settings.http.access_control_allow_origin = vec![
            "^https://app\\.example\\.com$".into(),
            "https://.*\\.example\\.com".into(),
        ];
        let warnings = warnings(&settings);
        let unanchored: Vec<&String> = warnings
            .iter()
            .filter(|w| w.contains("not anchored"))
            .collect();
        assert_eq!(unanchored.len(), 1, "{warnings:?}");
        assert!(
            unanchored[0].contains("\"https://.*\\\\.example\\\\.com\""),
            "{warnings:?}"
        );
        settings.http.access_control_allow_origin_use_regexp = false;
        assert!(
            !warnings_of(&settings).contains("not anchored"),
            "plain origins"
        );
    }

    fn warnings_of(settings: &Settings) -> String {
        warnings(settings).join("\n")
    }
}
