//! Node-wide budgets (issue 17): what many sockets together make a node hold, partial
//! messages and room filters, stays within the node's bounds, is released on time, and
//! leaves the node serving everyone else. Each test runs the real binary, whose memory
//! it reads from `/proc`.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// Round trips of `server:now` on `ws` while `until` has not passed: the slowest.
async fn slowest_round_trip(ws: &mut Ws, until: Instant) -> Duration {
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let started = Instant::now();
        ws.assert_now_ok().await;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    slowest
}

/// How a socket holding part of a message ended: its close code, 0 for a TCP end
/// without a close frame, and when.
type Ends = Rc<RefCell<BTreeMap<u16, usize>>>;

/// Sends `bytes` (part of a message), then waits for the node's close, sending a PING
/// every 2 s when `pinging`.
async fn hold_partial(addr: SocketAddr, bytes: Rc<Vec<u8>>, pinging: bool, ends: Ends) {
    let mut ws = Ws::connect(addr).await;
    ws.send_bytes(&bytes).await;
    let code = loop {
        match ws.next_frame_within(Duration::from_secs(2)).await {
            Ok(Some(Frame::Close(code, _))) => break code.unwrap_or(0),
            Ok(Some(_)) => {}
            Ok(None) => break 0,
            Err(()) if pinging => ws.send_frame(true, PING, b"still here", true).await,
            Err(()) => {}
        }
    };
    *ends.borrow_mut().entry(code).or_insert(0) += 1;
}

/// 500 sockets each holding 1 MiB − 1 of a 1 MiB frame, and 200 holding a 512 KiB first
/// fragment while sending a PING every 2 s: the node holds at most its budget of partial
/// input (256 MiB), closes what would go past it with 1013 and what does not complete in
/// `messageTimeout` (30 s) with 1008, and keeps serving a healthy client.
#[actix_rt::test]
async fn partial_messages_are_bounded_node_wide_and_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _log) = spawn_binary(dir.path(), &[]);
    let pid = child.id();
    let mut healthy = Ws::connect(addr).await;
    healthy.assert_now_ok().await;
    let rss_before = rss_bytes(pid);

    let mut frame = encode_frame(0x82, &vec![7; MIB as usize], true);
    frame.truncate(frame.len() - 1);
    let frame = Rc::new(frame);
    let fragment = Rc::new(encode_frame(0x02, &vec![7; 512 * 1024], true));
    let ends: Ends = Rc::default();
    let started = Instant::now();
    let mut holders = Vec::new();
    for i in 0..700 {
        let (bytes, pinging) = if i < 500 {
            (frame.clone(), false)
        } else {
            (fragment.clone(), true)
        };
        holders.push(actix_rt::spawn(hold_partial(
            addr,
            bytes,
            pinging,
            ends.clone(),
        )));
        if i % 50 == 49 {
            // Let the sends of this batch go out before opening more sockets.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut rss_peak = 0;
    let mut slowest = Duration::ZERO;
    let all_closed = loop {
        let done = ends.borrow().values().sum::<usize>();
        rss_peak = rss_peak.max(rss_bytes(pid));
        if done == 700 || started.elapsed() > Duration::from_secs(45) {
            break done == 700;
        }
        let asked = Instant::now();
        healthy.assert_now_ok().await;
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let closed_after = started.elapsed();
    let ends = ends.borrow().clone();
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "closes {ends:?} within {closed_after:?}; RSS {} MiB → peak {} MiB; slowest round trip {slowest:?}",
        rss_before / MIB,
        rss_peak / MIB
    );
    assert!(all_closed, "still open after 45 s: {ends:?}");
    assert!(
        closed_after < Duration::from_secs(35),
        "the last socket closed after {closed_after:?}"
    );
    assert_eq!(
        ends.keys().copied().collect::<Vec<_>>(),
        vec![1008, 1013],
        "closed over budget (1013) or after messageTimeout (1008): {ends:?}"
    );
    assert!(growth <= 400 * MIB, "the node grew by {} MiB", growth / MIB);
    healthy.assert_now_ok().await;
    send_signal(&child, "KILL");
    wait_exit(&mut child);
}

fn subscribe(filter: Value) -> Value {
    json!({"controller":"realtime","action":"subscribe","index":"idx","collection":"col","body":filter})
}

/// An `and` of `ors` two-term `or`s and `equals` terms, distinct for each `n`.
fn and_of_ors(ors: usize, equals: usize, n: usize) -> Value {
    let mut terms: Vec<Value> = (0..ors)
        .map(
            |i| json!({"or": [{"equals": {format!("a{i}"): n}}, {"equals": {format!("b{i}"): n}}]}),
        )
        .collect();
    terms.extend((0..equals).map(|i| json!({"equals": {format!("c{i}"): n}})));
    json!({"and": terms})
}

/// Subscribes `per_socket` distinct filters on each of `sockets` sockets (500 in flight
/// at most per socket): the statuses seen, and the sockets.
async fn subscribe_many(
    addr: SocketAddr,
    sockets: usize,
    per_socket: usize,
    filter: impl Fn(usize) -> Value,
) -> (BTreeMap<String, usize>, Vec<Ws>) {
    let mut statuses = BTreeMap::new();
    let mut open = Vec::new();
    for s in 0..sockets {
        let mut ws = Ws::connect(addr).await;
        for batch in (0..per_socket).collect::<Vec<_>>().chunks(500) {
            for i in batch {
                ws.send_json(&subscribe(filter(s * per_socket + i))).await;
            }
            for _ in batch {
                let res = ws.next_json().await;
                let key = match res["error"]["id"].as_str() {
                    Some(id) => format!("{} {id}", res["status"]),
                    None => res["status"].to_string(),
                };
                *statuses.entry(key).or_insert(0) += 1;
            }
        }
        open.push(ws);
    }
    (statuses, open)
}

/// Normal use is never refused: 10 sockets × 1,000 distinct subscriptions (the limit per
/// socket), for each of two shapes (an `and` of 100 `equals`; an `and` of 4 two-term `or`s
/// and 20 `equals`).
#[actix_rt::test]
async fn normal_filters_fit_in_the_budget() {
    for (name, ors, equals) in [("100 equals", 0, 100), ("4 ors + 20 equals", 4, 20)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, addr, _log) = spawn_binary(dir.path(), &[]);
        let pid = child.id();
        let rss_before = rss_bytes(pid);
        let (statuses, open) = subscribe_many(addr, 10, 1000, |n| and_of_ors(ors, equals, n)).await;
        let rss = rss_bytes(pid);
        eprintln!(
            "{name}: {statuses:?}, {} bytes per room",
            rss.saturating_sub(rss_before) / 10_000
        );
        assert_eq!(
            statuses,
            BTreeMap::from([("200".to_owned(), 10_000)]),
            "{name}"
        );
        drop(open);
        let mut watcher = Ws::connect(addr).await;
        assert_eq!(rooms_of(&mut watcher, 0).await, 0, "{name}: rooms removed");
        send_signal(&child, "KILL");
        wait_exit(&mut child);
    }
}

/// The node's rooms, once they are `expected` or after 30 s.
async fn rooms_of(ws: &mut Ws, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = ws
            .request(json!({"controller":"server","action":"metrics"}))
            .await;
        let rooms = res["result"]["realtime"]["rooms"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if rooms == expected || Instant::now() > deadline {
            return rooms;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 8 sockets × 1,000 distinct subscriptions of the largest `and`-of-`or`s filter the node
/// accepts: the node-wide budget refuses what would go past it with a clear error, the
/// node grows by at most 512 MiB, serves a healthy client, and gives the memory back.
#[actix_rt::test]
async fn the_largest_filters_are_bounded_node_wide() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _log) = spawn_binary(dir.path(), &[]);
    let pid = child.id();
    let mut healthy = Ws::connect(addr).await;
    // The largest of the family: as many two-term `or`s as subscriptionMinterms allows.
    let mut ors = 0;
    while healthy
        .request(subscribe(and_of_ors(ors + 1, 100 - 2 * (ors + 1), 0)))
        .await["status"]
        == 200
    {
        ors += 1;
    }
    let equals = 100 - 2 * ors;
    eprintln!("largest accepted: {ors} ors + {equals} equals");
    let rss_before = rss_bytes(pid);
    let (statuses, open) = subscribe_many(addr, 8, 1000, |n| and_of_ors(ors, equals, n + 1)).await;
    let rss_peak = rss_bytes(pid);
    assert!(
        statuses
            .keys()
            .all(|k| k == "200" || k == "413 \"core.realtime.filters_budget_exceeded\""),
        "accepted, or refused by the node-wide budget: {statuses:?}"
    );
    let started = Instant::now();
    let slowest = slowest_round_trip(&mut healthy, started + Duration::from_secs(2)).await;
    eprintln!(
        "{statuses:?}; RSS {} MiB → {} MiB; slowest round trip {slowest:?}",
        rss_before / MIB,
        rss_peak / MIB
    );
    assert!(
        rss_peak.saturating_sub(rss_before) <= 512 * MIB,
        "grew by {} MiB",
        (rss_peak - rss_before) / MIB
    );
    drop(open);
    let probes = ors as u64;
    assert_eq!(
        rooms_of(&mut healthy, probes).await,
        probes,
        "only the healthy client's rooms are left"
    );
    let released = eventually(Duration::from_secs(15), || {
        rss_bytes(pid) <= rss_before + 128 * MIB
    })
    .await;
    assert!(released, "RSS {} MiB 15 s after", rss_bytes(pid) / MIB);
    healthy.assert_now_ok().await;
    send_signal(&child, "KILL");
    wait_exit(&mut child);
}

/// Past `limits.subscriptionFiltersMemory` a new room is refused with an error that names
/// the limit, whichever socket asks; existing rooms can still be joined, and a room that
/// goes gives its share back.
#[actix_rt::test]
async fn a_subscribe_past_the_filters_budget_names_the_limit() {
    let node = start_node(|s| {
        s.limits.subscription_filters_memory = kuzzle_rt::config::Size(2 * MIB);
    })
    .await;
    let mut first = Ws::connect(node.addr).await;
    let mut accepted = 0;
    let refusal = loop {
        let res = first.request(subscribe(and_of_ors(0, 100, accepted))).await;
        if res["status"] != 200 {
            break res;
        }
        accepted += 1;
        assert!(accepted < 1000, "never refused");
    };
    assert!(accepted >= 10, "refused after {accepted} rooms");
    assert_eq!(refusal["status"], 413, "{refusal}");
    assert_eq!(
        refusal["error"]["id"],
        "core.realtime.filters_budget_exceeded"
    );
    assert_eq!(refusal["error"]["code"], 65637);
    assert_eq!(
        refusal["error"]["message"],
        "Unable to subscribe: the filters of this node's rooms hold the maximum memory (limits.subscriptionFiltersMemory: 2097152 bytes); try again later."
    );
    let mut second = Ws::connect(node.addr).await;
    let res = second
        .request(subscribe(and_of_ors(0, 100, accepted)))
        .await;
    assert_eq!(
        res["status"], 413,
        "the budget is the node's, not the socket's: {res}"
    );
    let res = second.request(subscribe(and_of_ors(0, 100, 0))).await;
    assert_eq!(
        res["status"], 200,
        "an existing room costs nothing more: {res}"
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = second.request(subscribe(and_of_ors(0, 100, 5000))).await;
        if res["status"] == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed socket's rooms were not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_serving(node.addr).await;
}
