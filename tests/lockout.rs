//! Login throttling without targeted lockout (issue 17, docs/limits.md): failures delay
//! the (username, address) that made them, not the owner elsewhere; guesses spread over
//! many addresses meet a per-username ceiling from which the owner's known addresses are
//! exempt.

mod common;

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;

const CHECKED_WRONG: &str = "plugin.strategy.missing_user";

fn local(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// `attempts` logins from `source`, one every `every` from `offset` on, each fired on
/// schedule whatever the answers take; how many were answered 200, and how many had their
/// password checked and refused (401). Refusals before the check are 429 (throttled) or
/// 503 (the password hashers' queue is full).
async fn logins(
    node: std::net::SocketAddr,
    source: IpAddr,
    password: &'static str,
    attempts: u32,
    every: Duration,
    offset: Duration,
) -> (u32, u32) {
    let (ok, checked) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let start = Instant::now() + offset;
    let mut tasks = Vec::new();
    for i in 0..attempts {
        let at = start + every * i;
        let (ok, checked) = (ok.clone(), checked.clone());
        tasks.push(actix_rt::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            match http_login_from(node, source, "root", password).await {
                (200, _) => ok.set(ok.get() + 1),
                (401, id) if id == CHECKED_WRONG => checked.set(checked.get() + 1),
                (429, id) if id == "api.process.too_many_logins_requests" => {}
                (503, id) if id == "api.process.overloaded" => {}
                other => panic!("unexpected answer {other:?}"),
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (ok.get(), checked.get())
}

/// A node whose administrator `root` (the owner) logged in from 127.0.0.3 before.
async fn owner_known_at_3() -> TestNode {
    let node = start_node(|_| {}).await;
    let (_admin, _) = admin_session(&node).await;
    assert_eq!(
        http_login_from(node.addr, local(3), "root", "toor").await.0,
        200
    );
    node
}

#[actix_rt::test]
async fn a_guesser_on_one_address_cannot_lock_the_owner_out() {
    let node = owner_known_at_3().await;
    let every = Duration::from_millis(500);
    let attacker = logins(node.addr, local(2), "wrong", 40, every, Duration::ZERO);
    let owner = logins(node.addr, local(3), "toor", 20, every * 2, every / 2);
    let ((_, guessed), (owner_in, _)) = futures_util::join!(attacker, owner);
    eprintln!("attacker: {guessed} passwords checked; owner: {owner_in} of 20 logins");
    assert!(
        guessed <= 12,
        "{guessed} passwords checked for the attacker"
    );
    assert!(owner_in >= 18, "the owner logged in {owner_in} times of 20");
    // The owner's successes did not reset the attacker's delay.
    assert_eq!(
        http_login_from(node.addr, local(2), "root", "toor").await,
        (
            429,
            serde_json::json!("api.process.too_many_logins_requests")
        )
    );
}

#[actix_rt::test]
async fn guesses_spread_over_many_addresses_meet_the_username_ceiling() {
    let node = owner_known_at_3().await;
    let every = Duration::from_millis(500);
    // A botnet's guesses spread over time: each address at its own offset.
    let attackers = futures_util::future::join_all((10..60u8).map(|last| {
        let offset = every * u32::from(last - 10) / 50;
        logins(node.addr, local(last), "wrong", 40, every, offset)
    }));
    let owner = logins(node.addr, local(3), "toor", 20, every * 2, every / 4);
    let (attackers, (owner_in, _)) = futures_util::join!(attackers, owner);
    let guessed: u32 = attackers.iter().map(|(_, checked)| checked).sum();
    eprintln!("50 attackers: {guessed} passwords checked; owner: {owner_in} of 20 logins");
    assert!(
        guessed <= 150,
        "{guessed} passwords checked for 50 addresses"
    );
    assert!(owner_in >= 18, "the owner logged in {owner_in} times of 20");
    // A new address of the owner's meets the ceiling too, until it is known.
    assert_eq!(
        http_login_from(node.addr, local(4), "root", "toor").await.0,
        429
    );
}
