//! Matching cost: how long one publish takes to find its rooms among many.
//!
//! `cargo bench --bench matching` prints a table: for each filter kind and room count,
//! the time per publish and how many rooms the message matched. Every room has one
//! subscriber; each publish matches one room (or none), so the figures show the cost of
//! finding matches, not of delivering them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuzzle_rt::delivery::Outbox;
use kuzzle_rt::protocol::Protocol;
use kuzzle_rt::realtime::filter::Filter;
use kuzzle_rt::realtime::notify::Published;
use kuzzle_rt::realtime::{Hub, HubLimits, Member, RoomTarget, Scope, Users};
use serde_json::{Value, json};

struct Kind {
    name: &'static str,
    filter: fn(usize) -> Value,
    message: fn(usize) -> Value,
}

const KINDS: &[Kind] = &[
    Kind {
        name: "equals (hashed)",
        filter: |i| json!({"equals": {"user": format!("u{i}")}}),
        message: |i| json!({"user": format!("u{i}"), "text": "hello"}),
    },
    Kind {
        name: "in, 3 values (hashed)",
        filter: |i| json!({"in": {"tag": [format!("a{i}"), format!("b{i}"), format!("c{i}")]}}),
        message: |i| json!({"tag": format!("b{i}")}),
    },
    Kind {
        name: "equals + range (hashed)",
        filter: |i| json!({"and": [{"equals": {"symbol": format!("s{i}")}}, {"range": {"price": {"gte": 10, "lt": 20}}}]}),
        message: |i| json!({"symbol": format!("s{i}"), "price": 15}),
    },
    Kind {
        name: "geoDistance (scanned)",
        filter: |i| json!({"geoDistance": {"pos": [(i % 180) as f64 - 89.5, 0.0], "distance": "1km"}}),
        message: |i| json!({"pos": [(i % 180) as f64 - 89.5, 0.0]}),
    },
    Kind {
        name: "range (sorted)",
        filter: |i| json!({"range": {"n": {"gte": i, "lt": i + 1}}}),
        message: |i| json!({"n": i}),
    },
];

fn measure(kind: &Kind, rooms: usize) -> (Duration, usize) {
    let hub = Hub::new(Arc::from("bench"), HubLimits::default(), [0; 32]);
    for i in 0..rooms {
        let member = Member {
            connection_id: Arc::from(format!("c{i}")),
            outbox: Outbox::new(),
            protocol: Protocol::Websocket,
        };
        let body = (kind.filter)(i);
        let filter = Filter::compile(&body, 100).expect("valid filter");
        let room_id = Arc::from(hub.room_id(&filter, "idx", "col"));
        let target = RoomTarget {
            index: "idx",
            collection: "col",
            filter,
            body: Arc::from(body.to_string()),
            room_id,
        };
        hub.subscribe(&member, target, Scope::All, Users::None, None)
            .expect("subscribed");
    }
    let publishes = (200_000 / rooms.max(1)).clamp(200, 20_000);
    let mut delivered = 0;
    let started = Instant::now();
    for p in 0..publishes {
        let source = (kind.message)((p * 7919) % rooms);
        delivered += hub.publish(&Published {
            node: "bench",
            index: "idx",
            collection: "col",
            id: None,
            source: &source,
            request_id: "r",
            timestamp: 0,
            volatile: None,
            protocol: Protocol::Websocket,
        });
    }
    (started.elapsed() / publishes as u32, delivered / publishes)
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep it short then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if quick {
        &[100]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!("| filter kind | rooms | time per publish | rooms matched per publish |");
    println!("|---|---|---|---|");
    for kind in KINDS {
        for &rooms in sizes {
            let (per_publish, matched) = measure(kind, rooms);
            println!(
                "| {} | {rooms} | {:.2} µs | {matched} |",
                kind.name,
                per_publish.as_secs_f64() * 1e6
            );
        }
    }
}
