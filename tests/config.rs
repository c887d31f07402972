//! Configuration: the shipped kuzzlerc, source precedence, environment overrides, validation.

use std::path::{Path, PathBuf};
use std::process::Command;

use kuzzle_rt::config::{self, ConfigSources, Settings, Size, StorageBackend};
use serde_json::json;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Sources rooted in a temporary directory, with no files and no variables.
fn sources(root: &Path) -> ConfigSources {
    std::fs::create_dir_all(root.join("work/deep")).unwrap();
    ConfigSources {
        etc_dir: root.join("etc"),
        home: Some(root.join("home")),
        cwd: root.join("work/deep"),
        env: Vec::new(),
        config_arg: None,
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_error(mutate: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut tree = serde_json::to_value(Settings::default()).unwrap();
    mutate(&mut tree);
    config::from_json(tree).unwrap_err().to_string()
}

#[test]
fn shipped_kuzzlerc_equals_the_defaults() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("kuzzlerc")).unwrap();
    let tree = config::parse_kuzzlerc(&text).unwrap();
    assert_eq!(config::from_json(tree).unwrap(), Settings::default());
}

#[test]
fn no_source_gives_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        config::load(&sources(dir.path())).unwrap(),
        Settings::default()
    );
}

#[test]
fn each_source_overrides_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut src = sources(root);
    // Each file sets `port` (overridden later) and one key of its own (kept).
    let layers: Vec<(PathBuf, &str)> = vec![
        (root.join("etc/kuzzle/config"), "maxRequestSize"),
        (root.join("etc/kuzzlerc"), "strictSdkVersion"),
        (
            root.join("home/.config/kuzzle/config"),
            "shutdownGracePeriod",
        ),
        (root.join("home/.kuzzle/config"), "host"),
        (root.join("home/.kuzzlerc"), "heartbeatless"),
        (root.join("work/.kuzzlerc"), "cwd"),
        (root.join("named-by-env"), "env-file"),
        (root.join("named-by-arg"), "arg-file"),
    ];
    let mut expected_port = 0;
    for (i, (path, _)) in layers.iter().enumerate() {
        expected_port = 1000 + i as u16;
        write(
            path,
            &format!("// layer {i}\n{{\"server\": {{\"port\": {expected_port},}}}}"),
        );
        if path.ends_with("named-by-env") {
            src.env
                .push(("kuzzle_config".into(), path.display().to_string()));
        }
        if path.ends_with("named-by-arg") {
            src.config_arg = Some(path.clone());
        }
        assert_eq!(
            config::load(&src).unwrap().server.port,
            expected_port,
            "{}",
            path.display()
        );
    }
    // Deep merge: a lower file's sibling key survives a higher file's override.
    write(
        &root.join("etc/kuzzlerc"),
        r#"{"server": {"port": 1, "strictSdkVersion": false}, "limits": {"loginsPerSecond": 9}}"#,
    );
    let settings = config::load(&src).unwrap();
    assert_eq!(settings.server.port, expected_port);
    assert!(!settings.server.strict_sdk_version);
    assert_eq!(settings.limits.logins_per_second, 9);
    // The environment wins over every file.
    src.env.push(("kuzzle_server__port".into(), "4242".into()));
    assert_eq!(config::load(&src).unwrap().server.port, 4242);
}

#[test]
fn arrays_are_replaced_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = sources(dir.path());
    write(
        &dir.path().join("home/.kuzzlerc"),
        r#"{"security": {"restrictedProfileIds": ["a", "b", "c"]}}"#,
    );
    write(
        &dir.path().join("arg"),
        r#"{"security": {"restrictedProfileIds": ["z"]}}"#,
    );
    src.config_arg = Some(dir.path().join("arg"));
    assert_eq!(
        config::load(&src).unwrap().security.restricted_profile_ids,
        ["z"]
    );
}

#[test]
fn environment_overrides_use_kuzzle_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = sources(dir.path());
    src.env = env(&[
        ("kuzzle_server__protocols__websocket__idleTimeout", "5000"),
        (
            "KUZZLE_server__protocols__websocket__sendPingsAutomatically",
            "true",
        ),
        ("kuzzle_services__storage__node__host", "redis"),
        ("kuzzle_services__storage__options__password", "1234"),
        (
            "kuzzle_http__accessControlAllowOrigin",
            "http://a.example, http://b.example",
        ),
        (
            "kuzzle_security__restrictedProfileIds",
            "*json:[\"default\",\"foo\"]",
        ),
        ("kuzzle_server__maxRequestSize", "2MB"),
        ("kuzzle_limits__loginsPerSecond", "50"),
    ]);
    let s = config::load(&src).unwrap();
    assert_eq!(s.server.protocols.websocket.idle_timeout, 5000);
    assert!(s.server.protocols.websocket.send_pings_automatically);
    assert_eq!(s.services.storage.node.host, "redis");
    assert_eq!(
        s.services.storage.options.password.as_deref(),
        Some("1234"),
        "string keys keep their text (CN-43)"
    );
    assert_eq!(
        s.http.access_control_allow_origin,
        ["http://a.example", "http://b.example"]
    );
    assert_eq!(s.security.restricted_profile_ids, ["default", "foo"]);
    assert_eq!(s.server.max_request_size, Size(2 << 20));
    assert_eq!(s.limits.logins_per_second, 50);
}

#[test]
fn bad_stringified_json_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = sources(dir.path());
    src.env = env(&[("kuzzle_security__restrictedProfileIds", "*json:[nope")]);
    let err = config::load(&src).unwrap_err().to_string();
    assert!(
        err.contains("the key \"security.restrictedProfileIds\" does not contain a valid stringified JSON (*json:[nope)"),
        "{err}"
    );
}

#[test]
fn unreadable_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = sources(dir.path());
    write(&dir.path().join("bad"), "{ this is not json");
    src.config_arg = Some(dir.path().join("bad"));
    let err = config::load(&src).unwrap_err().to_string();
    assert!(
        err.starts_with("[CONFIG] Unable to read kuzzlerc configuration file: "),
        "{err}"
    );
    assert!(err.contains("bad"), "names the file: {err}");
}

#[test]
fn validation_errors_name_the_key_and_the_value() {
    type Mutation = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|t| t["server"]["protocols"]["websocket"]["idleTimeout"] = json!(999)),
            "[CONFIG] server.protocols.websocket.idleTimeout: must be 0 (disabled) or at least 1000 milliseconds (got 999)",
        ),
        (
            Box::new(|t| t["server"]["protocols"]["websocket"]["heartbeat"] = json!(1)),
            "[CONFIG] server.protocols.websocket.heartbeat: must be 0 (disabled) or at least 1000 milliseconds (got 1)",
        ),
        (
            Box::new(|t| {
                t["server"]["protocols"]["websocket"]["compressionThreshold"] = json!("lots")
            }),
            "[CONFIG] server.protocols.websocket.compressionThreshold: expected a size such as 512, \"512KB\" or \"1 MB\" (units B, KB, MB, GB, TB) (got \"lots\")",
        ),
        (
            Box::new(|t| t["server"]["port"] = json!(-1)),
            "[CONFIG] server.port: must be a port number from 0 to 65535 (got -1)",
        ),
        (
            Box::new(|t| t["server"]["port"] = json!("seven")),
            "[CONFIG] server.port: must be a port number from 0 to 65535 (got \"seven\")",
        ),
        (
            Box::new(|t| t["services"]["storage"]["backend"] = json!("mongo")),
            "[CONFIG] services.storage.backend: unknown variant `mongo`, expected `embedded` or `redis` (got \"mongo\")",
        ),
        (
            Box::new(|t| t["server"]["maxRequestSize"] = json!("1.5MB")),
            "[CONFIG] server.maxRequestSize: expected a size such as 512, \"512KB\" or \"1 MB\" (units B, KB, MB, GB, TB) (got \"1.5MB\")",
        ),
        (
            Box::new(|t| {
                t["server"]["protocols"]["websocket"]["enabled"] = json!(false);
                t["server"]["protocols"]["http"]["enabled"] = json!(false);
            }),
            "[CONFIG] server.protocols: HTTP and WebSocket cannot both be disabled",
        ),
        (
            Box::new(|t| t["server"]["protocols"]["mqtt"]["enabled"] = json!(true)),
            "[CONFIG] server.protocols.mqtt.enabled",
        ),
        (
            Box::new(|t| t["cluster"]["minimumNodes"] = json!(3)),
            "[CONFIG] cluster.minimumNodes: a cluster of more than one node needs services.storage.backend = \"redis\" (got 3)",
        ),
        (
            Box::new(|t| t["limits"]["concurrentRequests"] = json!(60000)),
            "[CONFIG] limits.concurrentRequests: must be lower than limits.requestsBufferSize (got 60000)",
        ),
        (
            Box::new(|t| t["limits"]["loginsPerSecond"] = json!(0)),
            "[CONFIG] limits.loginsPerSecond: must be at least 1 (got 0)",
        ),
        (
            Box::new(|t| t["security"]["authToken"]["algorithm"] = json!("RS256")),
            "[CONFIG] security.authToken.algorithm: must be HS256, HS384 or HS512 (got \"RS256\")",
        ),
        (
            Box::new(|t| t["security"]["authToken"]["expiresIn"] = json!("soon")),
            "[CONFIG] security.authToken.expiresIn: must be a number of milliseconds, -1, or a parsable timespan string (got \"soon\")",
        ),
        (
            Box::new(|t| t["security"]["authToken"]["maxTTL"] = json!(60000)),
            "[CONFIG] security.authToken.expiresIn: exceeds security.authToken.maxTTL (got \"1h\")",
        ),
        (
            Box::new(|t| {
                t["http"]["accessControlAllowOrigin"] = json!(["(unclosed"]);
                t["http"]["accessControlAllowOriginUseRegExp"] = json!(true);
            }),
            "[CONFIG] http.accessControlAllowOrigin: invalid regular expression",
        ),
        (
            Box::new(|t| {
                t["services"]["storage"]["backend"] = json!("redis");
                t["services"]["storage"]["nodes"] = json!([{"host": "127.0.0.1", "port": 7000}]);
                t["services"]["storage"]["database"] = json!(2);
            }),
            "[CONFIG] services.storage.database: Redis Cluster has only database 0 (got 2)",
        ),
        (
            Box::new(|t| t["services"]["storage"]["nodes"] = json!([{"host": "", "port": 7000}])),
            "[CONFIG] services.storage.nodes: every node needs a host (got \"\")",
        ),
        (
            Box::new(|t| t["services"]["storage"]["nodes"] = json!([{"host": "h", "port": 0}])),
            "[CONFIG] services.storage.nodes: must be at least 1 (got 0)",
        ),
        (
            Box::new(|t| t["cluster"]["bus"]["history"]["maxAge"] = json!(10)),
            "[CONFIG] cluster.bus.history.maxAge: must be at least 1000 (got 10)",
        ),
        (
            Box::new(|t| t["cluster"]["bus"]["history"]["maxLength"] = json!(5)),
            "[CONFIG] cluster.bus.history.maxLength: must be at least 100 (got 5)",
        ),
        (
            Box::new(|t| t["cluster"]["bus"]["retain"]["maxMessages"] = json!(0)),
            "[CONFIG] cluster.bus.retain.maxMessages: must be at least 1 (got 0)",
        ),
        (
            Box::new(|t| t["cluster"]["bus"]["retain"]["maxAge"] = json!(999)),
            "[CONFIG] cluster.bus.retain.maxAge: must be at least 1000 (got 999)",
        ),
        (
            Box::new(|t| t["cluster"]["bus"]["retain"]["maxSize"] = json!("1KB")),
            "[CONFIG] cluster.bus.retain.maxSize: must be at least 1048576 (got 1024)",
        ),
        (
            Box::new(|t| t["cluster"]["ip"] = json!("somewhere")),
            "[CONFIG] cluster.ip: must be \"private\", \"public\" or null (got \"somewhere\")",
        ),
        (
            Box::new(|t| t["cluster"]["syncTimeout"] = json!(70000)),
            "[CONFIG] cluster.syncTimeout: must be lower than cluster.joinTimeout (got 70000)",
        ),
    ];
    for (mutate, expected) in cases {
        let err = load_error(mutate);
        assert!(
            err.starts_with(expected),
            "expected {expected:?}\n     got {err:?}"
        );
    }
}

#[test]
fn deprecated_jwt_keys_fill_null_auth_token_keys() {
    let mut tree = serde_json::to_value(Settings::default()).unwrap();
    tree["security"]["authToken"]["gracePeriod"] = json!(null);
    tree["security"]["jwt"]["gracePeriod"] = json!(5000);
    tree["security"]["jwt"]["expiresIn"] = json!("2h");
    let s = config::from_json(tree).unwrap();
    assert_eq!(s.security.grace_period(), 5000);
    assert_eq!(
        s.security.expires_in(),
        json!("1h"),
        "authToken wins when set"
    );
    assert_eq!(s.services.storage.backend, StorageBackend::Embedded);
}

#[test]
fn the_binary_refuses_to_start_on_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kuzzle-rt"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("kuzzle_server__protocols__websocket__idleTimeout", "500")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[CONFIG] server.protocols.websocket.idleTimeout: must be 0 (disabled) or at least 1000 milliseconds (got 500)"),
        "{stderr}"
    );
}

/// Issue 22: a file and the environment accept the same spellings (numbers and booleans
/// written as text), and a type error says what is expected in words and where the key was
/// set: the file and its line, or the variable.
#[test]
fn files_read_text_values_as_the_environment_does_and_errors_say_where() {
    let root = tempfile::tempdir().unwrap();
    let mut s = sources(root.path());
    let rc = root.path().join("work/my.kuzzlerc");
    write(
        &rc,
        "{\n  // quoted, as the environment gives them\n  \"server\": {\"port\": \"7600\", \"strictConfig\": \"true\",\n    \"metrics\": {\"port\": \"9100\"}},\n  \"cluster\": {\"heartbeat\": \"1500\"}\n}\n",
    );
    s.config_arg = Some(rc.clone());
    let settings = config::load(&s).unwrap();
    assert_eq!(settings.server.port, 7600);
    assert!(settings.server.strict_config);
    assert_eq!(settings.server.metrics.port, Some(9100));
    assert_eq!(settings.cluster.heartbeat, 1500);
    // The same from the environment.
    let mut from_env = sources(root.path());
    from_env.env = env(&[
        ("kuzzle_server__port", "7600"),
        ("kuzzle_cluster__heartbeat", "1500"),
    ]);
    let settings = config::load(&from_env).unwrap();
    assert_eq!(
        (settings.server.port, settings.cluster.heartbeat),
        (7600, 1500)
    );
    // Text values stay text where the key is text.
    write(
        &rc,
        "{\"server\": {\"host\": \"127.0.0.1\"}, \"services\": {\"storage\": {\"options\": {\"password\": \"1234\"}}}}",
    );
    let settings = config::load(&s).unwrap();
    assert_eq!(
        settings.services.storage.options.password.as_deref(),
        Some("1234")
    );

    // A type error: what is expected, in words, and the file's line.
    write(
        &rc,
        "{\n  \"server\": {\n    \"host\": \"127.0.0.1\",\n    \"port\": \"seven\"\n  }\n}\n",
    );
    assert_eq!(
        config::load(&s).unwrap_err().to_string(),
        format!(
            "[CONFIG] server.port: must be a port number from 0 to 65535 (got \"seven\"); set in {}, line 4",
            rc.display()
        )
    );
    write(&rc, "{server: {protocols: {websocket: {compression: 2}}}}");
    assert_eq!(
        config::load(&s).unwrap_err().to_string(),
        format!(
            "[CONFIG] server.protocols.websocket.compression: must be true or false (got 2); set in {}, line 1",
            rc.display()
        )
    );
    // The environment wins over the file, and is named.
    s.env = env(&[("kuzzle_server__port", "70000")]);
    write(&rc, "{\"server\": {\"port\": 7600}}");
    assert_eq!(
        config::load(&s).unwrap_err().to_string(),
        "[CONFIG] server.port: must be a port number from 0 to 65535 (got 70000); set by kuzzle_server__port"
    );
    // A validation error of our own is located too.
    s.env = Vec::new();
    write(
        &rc,
        "{\n\"server\": {\"protocols\": {\"websocket\": {\n  \"idleTimeout\": \"500\"}}}}",
    );
    assert_eq!(
        config::load(&s).unwrap_err().to_string(),
        format!(
            "[CONFIG] server.protocols.websocket.idleTimeout: must be 0 (disabled) or at least 1000 milliseconds (got 500); set in {}, line 3",
            rc.display()
        )
    );
}

/// Found by the `configuration` fuzz target: the JSON5 parser recursed once per level and
/// overflowed its stack on a file of nested brackets.
#[test]
fn deeply_nested_files_are_refused_not_crashed_on() {
    let deep = "[".repeat(10_000);
    assert_eq!(
        config::parse_kuzzlerc(&deep).unwrap_err().to_string(),
        "[CONFIG] Unable to read kuzzlerc configuration file: objects and arrays nested deeper than 32 levels"
    );
    // Brackets inside strings and comments do not count.
    let text = format!(
        "// {deep}\n/* {deep} */\n{{\"plugins\": {{\"note\": \"{deep}\", \"nested\": {}1{}}}}}",
        "[".repeat(20),
        "]".repeat(20)
    );
    let tree = config::parse_kuzzlerc(&text).unwrap();
    assert_eq!(tree["plugins"]["note"].as_str().map(str::len), Some(10_000));
    // A `//` comment ends at any JSON5 line terminator, a lone `\r` included.
    let after_cr = format!("// note\r{deep}");
    assert!(
        config::parse_kuzzlerc(&after_cr).is_err_and(|e| e.to_string().contains("nested deeper"))
    );
}

/// Runs the binary with `args` and `vars` in `dir`; returns (exit code, stderr). A node
/// that starts is stopped with SIGTERM once it says it listens.
fn run_binary(
    dir: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuzzle-rt"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("kuzzle_server__host", "127.0.0.1")
        .env("kuzzle_server__port", "0")
        .envs(vars.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let stderr = child.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
        if line.contains(" listening on ") {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
    }
    (child.wait().unwrap().code(), log)
}

#[test]
fn a_named_configuration_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = run_binary(dir.path(), &["--config", "nope.json"], &[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("[CONFIG] nope.json: no such configuration file (named by --config)"),
        "{log}"
    );
    let (code, log) = run_binary(dir.path(), &[], &[("kuzzle_config", "/nowhere/rc")]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("[CONFIG] /nowhere/rc: no such configuration file (named by $kuzzle_config)"),
        "{log}"
    );
    // A directory is not a configuration file.
    let (code, log) = run_binary(dir.path(), &["--config", "."], &[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("no such configuration file"), "{log}");
}

#[test]
fn unknown_keys_are_named_with_the_closest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("my.kuzzlerc");
    write(
        &rc,
        r#"{ "server": { "protocols": { "websocket": { "idletimeout": 30000 } } },
             "limits": { "subscriptionRoms": 5 } }"#,
    );
    let rc_arg = rc.display().to_string();
    let typo = [("kuzzle_cluster__heartbaet", "1000")];
    // Warned about, and the node starts.
    let (code, log) = run_binary(dir.path(), &["--config", &rc_arg], &typo);
    assert_eq!(code, Some(0), "{log}");
    for expected in [
        format!("unknown configuration key `server.protocols.websocket.idletimeout` in {rc_arg}: did you mean `server.protocols.websocket.idleTimeout`?"),
        format!("unknown configuration key `limits.subscriptionRoms` in {rc_arg}: did you mean `limits.subscriptionRooms`?"),
        "unknown configuration key `cluster.heartbaet` from kuzzle_cluster__heartbaet: did you mean `cluster.heartbeat`?".to_owned(),
        format!("configuration: files read, last wins: {rc_arg}"),
    ] {
        assert!(log.contains(&expected), "missing {expected:?} in:\n{log}");
    }
    // --strict-config, or server.strictConfig, stops the start.
    let (code, log) = run_binary(dir.path(), &["--config", &rc_arg, "--strict-config"], &typo);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("[CONFIG] strict configuration: stopping"),
        "{log}"
    );
    assert!(!log.contains(" listening on "), "{log}");
    let (code, log) = run_binary(
        dir.path(),
        &[],
        &[("kuzzle_server__strictConfig", "true"), typo[0]],
    );
    assert_eq!(code, Some(1), "{log}");
    // Known keys only: strict mode starts.
    let (code, log) = run_binary(dir.path(), &["--strict-config"], &[]);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("unknown configuration key"), "{log}");
}

#[test]
fn a_syntax_error_names_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("broken.kuzzlerc");
    write(&rc, "{\n  \"server\": {\n    \"port\": 7512,,\n  }\n}\n");
    let (code, log) = run_binary(dir.path(), &["--config", &rc.display().to_string()], &[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("broken.kuzzlerc"), "{log}");
    assert!(
        log.contains("broken.kuzzlerc: expected identifier at line 3 column 18\n"),
        "one position, the error's: {log}"
    );
}

#[test]
fn a_port_in_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, log) = run_binary(dir.path(), &[], &[("kuzzle_server__port", &port)]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{log}"
    );
}
