//! The real binary: start on the default store with nothing configured, drain on signals.

mod common;

use common::*;
use serde_json::json;

#[actix_rt::test]
async fn sigterm_drains_closes_sockets_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _) = spawn_binary(dir.path(), &[]);
    let mut ws = Ws::connect(addr).await;
    assert_eq!(
        ws.request(json!({"controller":"server","action":"now"}))
            .await["status"],
        200
    );
    send_signal(&child, "TERM");
    assert_eq!(
        ws.expect_close().await,
        (Some(1001), "server shutting down".into())
    );
    assert!(wait_exit(&mut child).success());
}

#[actix_rt::test]
async fn sigint_does_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _) = spawn_binary(dir.path(), &[]);
    let mut ws = Ws::connect(addr).await;
    send_signal(&child, "INT");
    assert_eq!(
        ws.expect_close().await,
        (Some(1001), "server shutting down".into())
    );
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}
