//! Logs (issue 12): the access log, request lines at debug, the JSON format; never a
//! token, a password or a body.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Waits until the node's log holds `needle`; returns the log.
fn wait_for_log(log: &std::sync::Arc<std::sync::Mutex<String>>, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = log.lock().unwrap().clone();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[actix_rt::test]
async fn the_access_log_has_a_line_per_request_and_per_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) =
        spawn_binary(dir.path(), &[("kuzzle_server__logs__access", "true")]);
    let answer = raw_http(
        addr,
        b"GET /_now?password=not-to-be-logged HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut ws = Ws::connect(addr).await;
    ws.assert_now_ok().await;
    ws.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true)
        .await;
    let text = wait_for_log(&log, "websocket closed 1000 after ");
    assert!(text.contains("127.0.0.1 http GET /_now 200 "), "{text}");
    assert!(text.contains("127.0.0.1 websocket open"), "{text}");
    assert!(
        !text.contains("not-to-be-logged"),
        "no query string: {text}"
    );
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());

    // Off by default.
    let (mut child, addr, log) = spawn_binary(dir.path(), &[]);
    assert!(
        raw_http(
            addr,
            b"GET /_now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 200")
    );
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    assert!(!log.lock().unwrap().contains(" http GET /_now "));
}

#[actix_rt::test]
async fn json_logs_with_request_lines_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) = spawn_binary(
        dir.path(),
        &[
            ("kuzzle_server__logs__format", "json"),
            ("kuzzle_server__logs__access", "true"),
            ("RUST_LOG", "debug"),
        ],
    );
    let mut ws = Ws::connect(addr).await;
    let res = ws
        .request(
            json!({"controller":"security","action":"createFirstAdmin","_id":"root",
            "body":{"credentials":{"local":{"username":"root","password":"hunter2-secret"}}}}),
        )
        .await;
    assert_eq!(res["status"], 200, "{res}");
    let mut other = Ws::connect(addr).await;
    let res = other
        .request(
            json!({"controller":"auth","action":"login","strategy":"local",
            "body":{"username":"root","password":"hunter2-secret"}}),
        )
        .await;
    let jwt = res["result"]["jwt"].as_str().unwrap().to_owned();
    let res = other
        .request(json!({"controller":"auth","action":"checkToken","body":{"token": jwt}}))
        .await;
    assert_eq!(res["status"], 200);
    wait_for_log(&log, "websocket auth:checkToken 200 ");
    send_signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let text = log.lock().unwrap().clone();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    for line in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("websocket auth:login 200 ")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "access" && l["message"] == "127.0.0.1 websocket open"),
        "{text}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("configuration: ")),
        "{text}"
    );
    assert!(!text.contains("hunter2-secret"), "no password in the logs");
    assert!(!text.contains(&jwt), "no token in the logs");
}
