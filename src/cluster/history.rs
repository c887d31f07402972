//! The bus's history (issue 19, docs/clustering.md): every message on a collection's channel
//! is also an entry of that collection's Redis stream (`Keys::history_of`), appended and
//! published by one script, so that Redis holds both or neither. A node that missed
//! messages (a gap in an origin's sequence, a replaced pub/sub link) reads them back from
//! the stream from the last entry it handled. The stream is trimmed by length and by age
//! (`cluster.bus.history`), and vanishes when its collection is quiet for `maxAge`.

use std::fmt;

use super::Link;

/// A stream entry's id: milliseconds of Redis's clock, and a sequence within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId(pub u64, pub u64);

impl StreamId {
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// KEYS: the history stream, the channel. ARGV: the entry (`wire::entry`), maxLength,
/// maxAge (ms), the publishing command (`PUBLISH` on one server, `SPUBLISH` on a Redis
/// Cluster: the channel's shard alone carries it). Appends, trims, publishes
/// `<id> <entry>`; returns the id.
pub const PUBLISH_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', now - tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[4], KEYS[2], id .. ' ' .. ARGV[1])
return id
";

/// Stream entries as Redis answers XRANGE: id, then field/value pairs.
pub type RawEntries = Vec<(String, Vec<(String, String)>)>;

/// The entries (`wire::entry`) of an XRANGE answer, with their ids.
pub fn entries(raw: RawEntries) -> Vec<(StreamId, String)> {
    raw.into_iter()
        .filter_map(|(id, fields)| {
            let id = StreamId::parse(&id)?;
            let (_, entry) = fields.into_iter().find(|(k, _)| k == "m")?;
            Some((id, entry))
        })
        .collect()
}

/// Entries read per round trip.
pub const READ_BATCH: usize = 1000;

/// XRANGE of `key` after `after` (excluded) and before `until` (excluded; None: to the
/// end), at most `READ_BATCH` entries.
pub fn range(key: &str, after: StreamId, until: Option<StreamId>) -> redis::Cmd {
    let end = until.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
    let mut command = redis::cmd("XRANGE");
    command
        .arg(key)
        .arg(format!("({after}"))
        .arg(end)
        .arg("COUNT")
        .arg(READ_BATCH);
    command
}

/// The entries `range` selects, oldest first.
pub async fn read(
    link: &Link,
    key: &str,
    after: StreamId,
    until: Option<StreamId>,
) -> Result<Vec<(StreamId, String)>, String> {
    let raw: RawEntries = link
        .bounded(range(key, after, until).query_async(&mut link.redis.get()))
        .await?;
    Ok(entries(raw))
}

/// Where a node that starts listening to `key` now starts reading: its newest entry, or
/// Redis's clock when the stream is empty or behind it (an entry appended from now on has
/// a newer id).
pub async fn start_of(link: &Link, key: &str) -> Result<StreamId, String> {
    let mut pipe = redis::pipe();
    pipe.cmd("TIME")
        .cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    let ((seconds, micros), newest): ((u64, u64), RawEntries) = link
        .bounded(pipe.query_async(&mut link.redis.get()))
        .await?;
    let now = (seconds * 1000 + micros / 1000).saturating_sub(1);
    let clock = StreamId(now, u64::MAX);
    let newest = newest
        .first()
        .and_then(|(id, _)| StreamId::parse(id))
        .unwrap_or_default();
    Ok(clock.max(newest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_compare_as_pairs_of_numbers() {
        assert_eq!(StreamId::parse("10-2"), Some(StreamId(10, 2)));
        assert_eq!(StreamId::parse("10"), Some(StreamId(10, 0)));
        assert_eq!(StreamId::parse("x-1"), None);
        assert_eq!(StreamId(7, 3).to_string(), "7-3");
        assert!(StreamId(10, 0) > StreamId(9, 5));
        assert!(StreamId(10, 2) > StreamId(10, 1));
    }
}
