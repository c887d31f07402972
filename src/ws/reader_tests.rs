//! Unit tests of `reader.rs`.
use super::*;
use crate::protocol::deflate::{self, Agreement};
use futures_util::StreamExt;
use std::convert::Infallible;

fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![(if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    frame::unmask(&mut body, mask);
    frame.extend_from_slice(&body);
    frame
}

/// Feeds `bytes` one byte at a time, so that every partial state is exercised.
async fn read_all(bytes: Vec<u8>, max: usize, deflate: bool) -> Vec<Result<Message, Violation>> {
    let chunks: Vec<Result<Bytes, Infallible>> = bytes
        .into_iter()
        .map(|b| Ok(Bytes::from(vec![b])))
        .collect();
    let inflater = deflate.then(|| {
        Inflater::new(&Agreement {
            server_window_bits: 15,
            client_no_context_takeover: false,
        })
    });
    let items: Vec<_> = Reader::new(Chunks(futures_util::stream::iter(chunks)), max, inflater)
        .collect()
        .await;
    items
        .into_iter()
        .filter(|item| *item != Ok(Message::End { clean: true }))
        .collect()
}

#[tokio::test]
async fn fragments_with_a_ping_between() {
    let mut bytes = client_frame(false, false, 1, "héllo ".as_bytes());
    bytes.extend(client_frame(true, false, 9, b"p"));
    bytes.extend(client_frame(false, false, 0, &"wörld".as_bytes()[..2]));
    bytes.extend(client_frame(true, false, 0, &"wörld".as_bytes()[2..]));
    assert_eq!(
        read_all(bytes, 100, false).await,
        vec![
            Ok(Message::Ping(Bytes::from_static(b"p"))),
            Ok(Message::Text(Bytes::from("héllo wörld"))),
        ]
    );
}

#[tokio::test]
async fn sequencing_errors() {
    let cases = [
        (
            client_frame(true, false, 0, b"x"),
            "continuation frame without a message",
        ),
        (
            [
                client_frame(false, false, 1, b"x"),
                client_frame(true, false, 1, b"y"),
            ]
            .concat(),
            "new message before the last one ended",
        ),
        (
            client_frame(true, true, 1, b"x"),
            "RSV1 set without permessage-deflate",
        ),
    ];
    for (bytes, reason) in cases {
        assert_eq!(
            read_all(bytes, 100, false).await,
            vec![Err(Violation::protocol(reason))],
            "{reason}"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_fails_before_the_message_ends() {
    let mut bytes = client_frame(false, false, 1, b"ok \xFF");
    // Never completed: the violation must come from the first fragment alone.
    bytes.extend(client_frame(false, false, 0, b"more"));
    assert_eq!(
        read_all(bytes, 100, false).await,
        vec![Err(Violation::INVALID_UTF8)]
    );
    let cut = client_frame(true, false, 1, &"é".as_bytes()[..1]);
    assert_eq!(
        read_all(cut, 100, false).await,
        vec![Err(Violation::INVALID_UTF8)]
    );
}

#[tokio::test]
async fn size_is_refused_from_the_header() {
    let mut bytes = client_frame(true, false, 2, &[0; 101]);
    bytes.truncate(8);
    assert_eq!(
        read_all(bytes, 100, false).await,
        vec![Err(Violation::TOO_BIG)]
    );
}

#[tokio::test]
async fn compressed_fragments_and_rsv1_rules() {
    let text = "{\"a\":\"".to_owned() + &"z".repeat(3000) + "\"}";
    let wire = deflate::compress(text.as_bytes(), 15).unwrap();
    let (first, rest) = wire.split_at(wire.len() / 2);
    let mut bytes = client_frame(false, true, 1, first);
    bytes.extend(client_frame(true, false, 0, rest));
    assert_eq!(
        read_all(bytes.clone(), 10_000, true).await,
        vec![Ok(Message::Text(Bytes::from(text.clone())))]
    );
    assert_eq!(
        read_all(bytes, 1000, true).await,
        vec![Err(Violation::TOO_BIG)]
    );

    let mut bytes = client_frame(false, true, 1, first);
    bytes.extend(client_frame(true, true, 0, rest));
    assert_eq!(
        read_all(bytes, 10_000, true).await,
        vec![Err(Violation::protocol("RSV1 set on a continuation frame"))]
    );
    assert_eq!(
        read_all(client_frame(true, true, 9, b""), 100, true).await,
        vec![Err(Violation::protocol("RSV1 set on a control frame"))]
    );
}

/// A reader fed `bytes`, then nothing more for ever (a client that went quiet).
fn quiet_after(
    bytes: Vec<u8>,
    max: usize,
) -> Reader<Chunks<impl Stream<Item = Result<Bytes, Infallible>> + Unpin>> {
    let chunks = futures_util::stream::iter(vec![Ok(Bytes::from(bytes))])
        .chain(futures_util::stream::pending());
    Reader::new(Chunks(chunks), max, None)
}

#[test]
fn an_announced_frame_costs_only_the_bytes_that_arrived() {
    let mut bytes = client_frame(true, false, 2, &vec![7; 1 << 20]);
    bytes.truncate(14 + 100);
    let mut reader = quiet_after(bytes, 2 << 20);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(Pin::new(&mut reader).poll_next(&mut cx).is_pending());
    assert_eq!(reader.buf.len(), 114);
    assert!(
        reader.buf.capacity() < 4096,
        "{} bytes held for a frame announcing 1 MiB",
        reader.buf.capacity()
    );
}

#[test]
fn an_idle_reader_holds_no_buffer_between_messages() {
    let mut reader = quiet_after(client_frame(true, false, 1, b"{\"p\":1}"), 1024);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(
        Pin::new(&mut reader).poll_next(&mut cx),
        Poll::Ready(Some(Ok(Message::Text(_))))
    ));
    assert!(Pin::new(&mut reader).poll_next(&mut cx).is_pending());
    assert_eq!(reader.buf.capacity(), 0);
}

fn intake(limit: u64, message_timeout: Duration) -> Arc<Intake> {
    Arc::new(Intake {
        budget: InboundBudget::new(limit),
        message_timeout,
    })
}

#[tokio::test]
async fn partial_input_is_taken_from_the_node_wide_budget() {
    let shared = intake(3000, Duration::from_secs(30));
    let mut partial = client_frame(true, false, 2, &[1; 4000]);
    partial.truncate(2000);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut first = quiet_after(partial.clone(), 8000).with_intake(shared.clone());
    assert!(Pin::new(&mut first).poll_next(&mut cx).is_pending());
    assert!(shared.budget.held() >= 2000, "{}", shared.budget.held());
    let mut second = quiet_after(partial, 8000).with_intake(shared.clone());
    assert_eq!(
        Pin::new(&mut second).poll_next(&mut cx),
        Poll::Ready(Some(Err(OVER_BUDGET))),
        "another socket would go past the node's budget"
    );
    assert_eq!(OVER_BUDGET.code, 1013);
    drop(first);
    drop(second);
    assert_eq!(shared.budget.held(), 0, "everything given back");
}

#[tokio::test]
async fn a_message_must_arrive_within_its_deadline_pings_or_not() {
    let mut bytes = client_frame(false, false, 1, b"{\"first\":");
    bytes.extend(client_frame(true, false, 9, b"ping"));
    // The fragment, then a PING every 20 ms for ever: the message never completes.
    let pings = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((
            Ok::<_, Infallible>(Bytes::from(client_frame(true, false, 9, b"p"))),
            (),
        ))
    });
    let input = futures_util::stream::iter(vec![Ok(Bytes::from(bytes))]).chain(pings);
    let mut reader = Reader::new(Chunks(Box::pin(input)), 1024, None)
        .with_intake(intake(1 << 20, Duration::from_millis(200)));
    let mut pings_seen = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match reader.next().await {
                Some(Ok(Message::Ping(_))) => pings_seen += 1,
                other => return other,
            }
        }
    })
    .await
    .expect("the deadline fires");
    assert_eq!(ended, Some(Err(TOO_SLOW)));
    assert_eq!(TOO_SLOW.code, 1008);
    assert!(pings_seen > 1, "pings arrived meanwhile: {pings_seen}");
}

#[tokio::test]
async fn the_end_of_the_input_says_how_it_ended() {
    let clean: Vec<Result<Bytes, Infallible>> =
        vec![Ok(Bytes::from(client_frame(true, false, 1, b"{}")))];
    let items: Vec<_> = Reader::new(Chunks(futures_util::stream::iter(clean)), 100, None)
        .collect()
        .await;
    assert_eq!(
        items,
        vec![
            Ok(Message::Text(Bytes::from_static(b"{}"))),
            Ok(Message::End { clean: true })
        ]
    );
    let reset: Vec<Result<Bytes, ()>> = vec![Err(())];
    let items: Vec<_> = Reader::new(Chunks(futures_util::stream::iter(reset)), 100, None)
        .collect()
        .await;
    assert_eq!(items, vec![Ok(Message::End { clean: false })]);
}

#[tokio::test]
async fn after_a_violation_what_the_client_still_sends_is_read_and_dropped() {
    let mut bytes = client_frame(true, false, 2, &[0; 200]);
    bytes.extend(vec![0xAB; 150]);
    let chunks: Vec<Result<Bytes, Infallible>> = vec![Ok(Bytes::from(bytes))];
    let mut reader = Reader::new(Chunks(futures_util::stream::iter(chunks)), 100, None);
    assert_eq!(reader.next().await, Some(Err(Violation::TOO_BIG)));
    assert!(matches!(reader.phase, Phase::Discarding(_)));
    assert_eq!(
        reader.next().await,
        None,
        "the input ended while discarding"
    );
    assert_eq!(reader.buf.capacity(), 0);
}

#[tokio::test]
async fn each_message_has_its_own_deadline() {
    // Every 60 ms a chunk that ends one message and starts the next: the buffer never
    // empties, yet every message arrives within 200 ms of its first byte.
    let frame = client_frame(true, false, 1, b"{\"p\":1}");
    let (head, tail) = frame.split_at(5);
    let (head, tail) = (Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail));
    let chunks = futures_util::stream::unfold(0u32, move |n| {
        let (head, tail) = (head.clone(), tail.clone());
        async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            let chunk = match n {
                0 => head,
                10 => return None,
                _ => Bytes::from([tail.as_ref(), head.as_ref()].concat()),
            };
            Some((Ok::<_, Infallible>(chunk), n + 1))
        }
    });
    let reader = Reader::new(Chunks(Box::pin(chunks)), 1024, None)
        .with_intake(intake(1 << 20, Duration::from_millis(200)));
    let items: Vec<_> = reader.collect().await;
    assert_eq!(items.len(), 10, "{items:?}");
    assert!(
        items[..9].iter().all(|i| matches!(i, Ok(Message::Text(_)))),
        "{items:?}"
    );
}
