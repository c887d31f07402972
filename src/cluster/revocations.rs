//! The revocation log (issue 19): a revocation is not only a pub/sub message, which a node
//! cut off from Redis never sees, but also an entry of a Redis stream (`Keys::revocations`)
//! that every node reads from its own offset at every heartbeat and after every
//! reconnection. A node that cannot write an entry keeps it (bounded) and writes it when
//! Redis answers again. When the log no longer covers a node's offset (trimmed past it, or
//! Redis came back empty), the node checks every token its sockets are linked to instead.

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::Link;
use super::history::{RawEntries, StreamId};

/// Entries the log keeps (trimmed approximately): a node away for longer than this many
/// revocations checks its linked tokens one by one instead.
pub const LOG_LENGTH: usize = 10_000;

/// Revocations kept while Redis is away; past it the oldest is dropped (and counted), and
/// the log gets an entry telling every node to check all its linked tokens instead.
pub const PENDING_MAX: usize = 10_000;

/// The `tokens` of an entry that stands for revocations that could not be kept.
const EVERY_TOKEN: &str = "*";

/// Entries read per round trip.
const READ_BATCH: usize = 500;

/// What a read of the log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Caught {
    /// Tokens other nodes revoked since the last read.
    pub tokens: Vec<String>,
    /// The log no longer held everything since the last read: every linked token must be
    /// checked.
    pub gap: bool,
}

#[derive(Default)]
pub struct RevocationLog {
    /// The id of the last entry read; None until the node started reading.
    offset: Mutex<Option<String>>,
    /// Revocations of this node not yet in the log, oldest first.
    pending: Mutex<VecDeque<Vec<String>>>,
    /// Some were dropped from `pending`: the next write says so first.
    overflowed: std::sync::atomic::AtomicBool,
    /// Serialises writes, so that two never write the same entry.
    writing: tokio::sync::Mutex<()>,
    /// Serialises reads, so that two never deliver the same entries.
    reading: tokio::sync::Mutex<()>,
}

fn newer(a: &str, b: &str) -> bool {
    StreamId::parse(a).unwrap_or_default() > StreamId::parse(b).unwrap_or_default()
}

impl RevocationLog {
    /// From now on, what is appended after the log's current end is this node's to read.
    /// The node marks its start with an entry of its own, so that the log exists from then
    /// on and its disappearance (Redis emptied) shows as a gap.
    pub async fn start(&self, link: &Link, node: &str) -> Result<(), String> {
        let id = append_entry(link, node, "[]").await?;
        *self.offset.lock() = Some(id);
        Ok(())
    }

    /// Appends a revocation of this node's; kept for later when Redis does not answer.
    /// Returns how many older revocations were dropped to keep the pending list bounded.
    pub async fn append(&self, link: &Link, node: &str, tokens: Vec<String>) -> usize {
        let dropped = {
            let mut pending = self.pending.lock();
            pending.push_back(tokens);
            let over = pending.len().saturating_sub(PENDING_MAX);
            pending.drain(..over);
            if over > 0 {
                self.overflowed
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            over
        };
        if let Err(reason) = self.flush(link, node).await {
            link.health.down(&reason);
        }
        dropped
    }

    /// Writes the pending revocations, in order.
    pub async fn flush(&self, link: &Link, node: &str) -> Result<(), String> {
        let _writing = self.writing.lock().await;
        if self.overflowed.load(std::sync::atomic::Ordering::Acquire) {
            append_entry(link, node, EVERY_TOKEN).await?;
            self.overflowed
                .store(false, std::sync::atomic::Ordering::Release);
        }
        loop {
            let Some(tokens) = self.pending.lock().front().cloned() else {
                return Ok(());
            };
            let text = serde_json::to_string(&tokens).map_err(|e| e.to_string())?;
            append_entry(link, node, &text).await?;
            let mut pending = self.pending.lock();
            if pending.front() == Some(&tokens) {
                pending.pop_front();
            }
        }
    }

    /// Writes what is pending, then reads what the other nodes appended since the last read.
    pub async fn catch_up(&self, link: &Link, node: &str) -> Result<Caught, String> {
        let _reading = self.reading.lock().await;
        self.flush(link, node).await?;
        let Some(mut offset) = self.offset.lock().clone() else {
            return Ok(Caught::default());
        };
        let mut caught = Caught::default();
        // The oldest entry still held: newer than the offset, entries may have been trimmed
        // away; none at all, the log itself went (Redis emptied).
        let oldest: RawEntries = link
            .bounded(
                redis::cmd("XRANGE")
                    .arg(link.keys.revocations())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut link.redis.get()),
            )
            .await?;
        match oldest.first() {
            None => {
                // The log went (Redis emptied): it starts again, and all of it is new.
                caught.gap = true;
                append_entry(link, node, "[]").await?;
                offset = "0-0".into();
            }
            Some((id, _)) => caught.gap = newer(id, &offset),
        }
        loop {
            let entries: RawEntries = link
                .bounded(
                    redis::cmd("XRANGE")
                        .arg(link.keys.revocations())
                        .arg(format!("({offset}"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(READ_BATCH)
                        .query_async(&mut link.redis.get()),
                )
                .await?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            let last = last.clone();
            for (_, fields) in entries.iter() {
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                if field("node") == Some(node) {
                    continue;
                }
                if field("tokens") == Some(EVERY_TOKEN) {
                    caught.gap = true;
                    continue;
                }
                if let Some(tokens) =
                    field("tokens").and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
                {
                    caught.tokens.extend(tokens);
                }
            }
            let full = entries.len() == READ_BATCH;
            offset = last;
            if !full {
                break;
            }
        }
        *self.offset.lock() = Some(offset);
        Ok(caught)
    }
}

/// Appends one entry (a JSON list of tokens) and returns its id.
async fn append_entry(link: &Link, node: &str, tokens: &str) -> Result<String, String> {
    link.bounded(
        redis::cmd("XADD")
            .arg(link.keys.revocations())
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_LENGTH)
            .arg("*")
            .arg("node")
            .arg(node)
            .arg("tokens")
            .arg(tokens)
            .query_async::<String>(&mut link.redis.get()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_pairs_of_numbers() {
        assert!(newer("10-0", "9-5"));
        assert!(newer("10-2", "10-1"));
        assert!(!newer("10-1", "10-1"));
        assert!(!newer("0-0", "1-0"));
    }
}
