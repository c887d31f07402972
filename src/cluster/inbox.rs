//! What arrives from other nodes (issue 19, docs/clustering.md), in one task on the node's
//! system thread: every message of a collection's channel carries its origin (a chain of one
//! process, `publisher`), a sequence number in it and its history id (`wire`). Per channel
//! the inbox remembers the last sequence it delivered of each origin and the last history
//! id it handled (the cursor), and
//! - delivers a message that follows the last one of its origin, or the first it sees of an
//!   origin;
//! - drops one it delivered already (a publisher sending again after a fault);
//! - on a gap, reads what it missed from the history (after the cursor, before the message)
//!   and delivers it first, waiting (up to 5 heartbeats and 3 command timeouts) while Redis
//!   does not answer; what the history no longer holds is counted as missed and logged once
//!   per episode;
//! - after the pub/sub link was replaced, reads every channel's history after its cursor,
//!   and until then reads it up to the first live message of a channel before handling it:
//!   the cursor never moves past an entry not handled.
//!
//! So each subscriber that stays connected gets every message once, in publish order per
//! publisher, unless the history lost it (counted).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Link;
use super::history::{self, RawEntries, StreamId};
use super::shared::SharedBus;
use super::wire::{self, Sequenced};

/// What the pub/sub side hands to the inbox, in order.
pub enum Inbound {
    /// A message as Redis delivered it on `channel`.
    Message { channel: String, payload: Vec<u8> },
    /// Redis confirmed the node's subscription to the channel.
    Subscribed(String),
    /// The pub/sub connection was lost: what arrives on the next one may have skipped
    /// messages of any origin.
    Lost,
    /// The node no longer listens to the channel.
    Released(String),
    /// A new pub/sub connection subscribed every channel again.
    Resubscribed,
}

/// Origins remembered per channel at most; past it the longest silent is forgotten.
const MAX_ORIGINS: usize = 1024;
/// Histories read at once (one call each, sent together) when catching up.
const CATCH_UP_BATCH: usize = 100;
/// How long the inbox waits for the history to answer on a gap (heartbeats, plus command
/// timeouts: a silent command connection is replaced after two), and between two reads;
/// past it, what is missing is counted as missed.
const FILL_PATIENCE_HEARTBEATS: u32 = 5;
const FILL_PATIENCE_TIMEOUTS: u32 = 3;
const FILL_RETRY: Duration = Duration::from_millis(250);
/// Missed messages within this long of the last logged belong to the same episode.
const EPISODE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Channel {
    /// Every history entry up to this one was handled.
    cursor: Option<StreamId>,
    /// The pub/sub link was replaced since the cursor: a live message may come after
    /// entries that never arrived, so the history is read up to it before anything else
    /// (and the cursor does not move past entries not handled).
    unsure: bool,
    origins: HashMap<String, Origin>,
}

struct Origin {
    last: u64,
    seen: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Deliver,
    Duplicate,
    /// `missing` messages of the origin came neither live nor from the history yet.
    Gap {
        missing: u64,
    },
}

impl Channel {
    fn verdict(&self, m: &Sequenced<'_>) -> Verdict {
        match self.origins.get(m.origin) {
            None => Verdict::Deliver,
            Some(o) if m.seq <= o.last => Verdict::Duplicate,
            Some(o) if m.seq == o.last + 1 => Verdict::Deliver,
            Some(o) => Verdict::Gap {
                missing: m.seq - o.last - 1,
            },
        }
    }

    fn accept(&mut self, m: &Sequenced<'_>, now: Instant) {
        if !self.origins.contains_key(m.origin) && self.origins.len() >= MAX_ORIGINS {
            let oldest = self
                .origins
                .iter()
                .min_by_key(|(_, o)| o.seen)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.origins.remove(&oldest);
            }
        }
        let origin = self
            .origins
            .entry(m.origin.to_owned())
            .or_insert(Origin { last: 0, seen: now });
        origin.last = origin.last.max(m.seq);
        origin.seen = now;
    }

    fn advance(&mut self, id: StreamId) {
        self.cursor = Some(self.cursor.map_or(id, |c| c.max(id)));
    }
}

pub struct Inbox {
    bus: Arc<SharedBus>,
    link: Arc<Link>,
    /// This process's chains start with it.
    mine: String,
    sessions: String,
    channels: HashMap<String, Channel>,
    /// Origins silent for longer are forgotten.
    forget_after: Duration,
    /// A catch-up failed: tried again at the next tick.
    catch_up_due: bool,
    missed_logged: Option<Instant>,
}

impl Inbox {
    pub fn new(bus: Arc<SharedBus>, incarnation: &str, forget_after: Duration) -> Inbox {
        let link = bus.link.clone();
        Inbox {
            sessions: link.keys.sessions_channel(),
            link,
            bus,
            mine: format!("{incarnation}."),
            channels: HashMap::new(),
            forget_after,
            catch_up_due: false,
            missed_logged: None,
        }
    }

    /// Handles what arrives until the node goes.
    pub async fn run(mut self, mut arrivals: mpsc::Receiver<Inbound>) {
        let mut tick = tokio::time::interval(self.link.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                arrival = arrivals.recv() => match arrival {
                    Some(arrival) => self.handle(arrival).await,
                    None => return,
                },
                _ = tick.tick() => {
                    self.forget_silent();
                    if self.catch_up_due {
                        self.catch_up().await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, arrival: Inbound) {
        match arrival {
            Inbound::Message { channel, payload } if channel == self.sessions => {
                self.bus.deliver_json(&payload, true);
            }
            Inbound::Message { channel, payload } => self.message(channel, &payload).await,
            Inbound::Subscribed(channel) => {
                // A channel new to this node starts reading from now; one it knows keeps
                // its cursor (what it missed meanwhile is still to be read).
                if self
                    .channels
                    .get(&channel)
                    .is_some_and(|c| c.cursor.is_some())
                {
                    return;
                }
                let key = self.link.keys.history_of(&channel);
                match history::start_of(&self.link, &key).await {
                    Ok(start) => self.channels.entry(channel).or_default().advance(start),
                    Err(reason) => self.link.health.down(&reason),
                }
            }
            Inbound::Released(channel) => {
                self.channels.remove(&channel);
            }
            Inbound::Lost => {
                for channel in self.channels.values_mut() {
                    channel.unsure = true;
                }
            }
            Inbound::Resubscribed => self.catch_up().await,
        }
    }

    async fn message(&mut self, channel: String, payload: &[u8]) {
        let Some((id, m)) = wire::parse_published(payload) else {
            log::warn!("[CLUSTER] unreadable bus message on {channel} dropped");
            return;
        };
        let state = self.channels.entry(channel.clone()).or_default();
        let mine = m.origin.starts_with(&self.mine);
        let gap = !mine && matches!(state.verdict(&m), Verdict::Gap { .. });
        if gap || state.unsure {
            // The history is read up to this message before it is handled; while Redis
            // does not answer (a command connection still being replaced after a fault),
            // the inbox waits and tries again, for a bounded time, rather than skip what it
            // missed.
            let patience = Instant::now()
                + FILL_PATIENCE_HEARTBEATS * self.link.heartbeat
                + FILL_PATIENCE_TIMEOUTS * self.link.timeout;
            loop {
                if self.fill(&channel, Some(id)).await {
                    if let Some(state) = self.channels.get_mut(&channel) {
                        state.unsure = false;
                    }
                    break;
                }
                if Instant::now() >= patience {
                    // Not every message waits that long: the channel goes on from here,
                    // and a gap of an origin shows (and is counted) at its next message.
                    if let Some(state) = self.channels.get_mut(&channel) {
                        state.unsure = false;
                    }
                    log::warn!(
                        "[CLUSTER] the history of {channel} could not be read in time: delivery goes on without it"
                    );
                    break;
                }
                tokio::time::sleep(FILL_RETRY).await;
            }
        }
        let state = self.channels.entry(channel.clone()).or_default();
        if mine {
            if !state.unsure {
                state.advance(id);
            }
            return;
        }
        let verdict = state.verdict(&m);
        self.apply(&channel, id, &m, verdict, false);
    }

    /// Delivers or drops one message of the channel by its verdict, and records it.
    fn apply(
        &mut self,
        channel: &str,
        id: StreamId,
        m: &Sequenced<'_>,
        verdict: Verdict,
        from_history: bool,
    ) {
        match verdict {
            Verdict::Duplicate => {
                if !from_history {
                    self.link.health.counters.duplicate.inc();
                }
            }
            Verdict::Deliver | Verdict::Gap { .. } => {
                if let Verdict::Gap { missing } = verdict {
                    self.missed(channel, missing);
                }
                if from_history {
                    self.link.health.counters.recovered.inc();
                }
                self.bus.deliver_json(m.json, false);
            }
        }
        if let Some(state) = self.channels.get_mut(channel) {
            state.accept(m, Instant::now());
            // Past an entry not handled (the link replaced, the history unread) the
            // cursor waits: the next read starts before it.
            if from_history || !state.unsure {
                state.advance(id);
            }
        }
    }

    fn missed(&mut self, channel: &str, n: u64) {
        self.link.health.counters.missed.inc_by(n);
        if self.missed_logged.is_some_and(|at| at.elapsed() < EPISODE) {
            return;
        }
        self.missed_logged = Some(Instant::now());
        log::error!(
            "[CLUSTER] {n} message(s) from another node on {channel} are lost: the history no longer holds them (cluster.bus.history; counted in kuzzle_bus_messages_total{{direction=\"missed\"}})"
        );
    }

    /// Reads the channel's history after its cursor (and before `until`), handling each
    /// entry in order. Returns false when Redis did not answer.
    async fn fill(&mut self, channel: &str, until: Option<StreamId>) -> bool {
        let key = self.link.keys.history_of(channel);
        loop {
            let Some(after) = self.channels.get(channel).and_then(|c| c.cursor) else {
                return true;
            };
            let entries = match history::read(&self.link, &key, after, until).await {
                Ok(entries) => entries,
                Err(reason) => {
                    self.link.health.down(&reason);
                    return false;
                }
            };
            let full = entries.len() >= history::READ_BATCH;
            self.apply_entries(channel, &entries);
            if !full {
                return true;
            }
        }
    }

    fn apply_entries(&mut self, channel: &str, entries: &[(StreamId, String)]) {
        for (id, text) in entries {
            let Some(m) = wire::parse_entry(text.as_bytes()) else {
                continue;
            };
            let Some(state) = self.channels.get_mut(channel) else {
                return;
            };
            if m.origin.starts_with(&self.mine) {
                state.advance(*id);
                continue;
            }
            let verdict = state.verdict(&m);
            self.apply(channel, *id, &m, verdict, true);
        }
    }

    /// Reads what every channel missed since its cursor (the pub/sub link was replaced):
    /// `CATCH_UP_BATCH` channels at once (one call per history, sent together), then channel
    /// by channel for those with more.
    async fn catch_up(&mut self) {
        self.catch_up_due = false;
        let channels: Vec<(String, StreamId)> = self
            .channels
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.cursor?)))
            .collect();
        for batch in channels.chunks(CATCH_UP_BATCH) {
            // One call per history (each in its channel's slot), all sent at once on the
            // multiplexed connection: one round trip on a single server too.
            let reads = batch.iter().map(|(channel, after)| {
                let read = history::range(&self.link.keys.history_of(channel), *after, None);
                let mut connection = self.link.redis.get();
                async move { read.query_async::<RawEntries>(&mut connection).await }
            });
            let all = async {
                futures_util::future::join_all(reads)
                    .await
                    .into_iter()
                    .collect::<redis::RedisResult<Vec<RawEntries>>>()
            };
            let answers: Vec<RawEntries> = match self.link.bounded(all).await {
                Ok(answers) => answers,
                Err(reason) => {
                    self.link.health.down(&reason);
                    self.catch_up_due = true;
                    return;
                }
            };
            for ((channel, _), entries) in batch.iter().zip(answers) {
                let full = entries.len() >= history::READ_BATCH;
                self.apply_entries(channel, &history::entries(entries));
                if full && !self.fill(channel, None).await {
                    self.catch_up_due = true;
                    return;
                }
                if let Some(state) = self.channels.get_mut(channel) {
                    state.unsure = false;
                }
            }
        }
    }

    fn forget_silent(&mut self) {
        let now = Instant::now();
        for channel in self.channels.values_mut() {
            channel
                .origins
                .retain(|_, o| now.duration_since(o.seen) < self.forget_after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(origin: &str, seq: u64) -> Sequenced<'_> {
        Sequenced {
            origin,
            seq,
            json: b"{}",
        }
    }

    #[test]
    fn verdicts_follow_each_origin_sequence() {
        let mut c = Channel::default();
        let now = Instant::now();
        assert_eq!(c.verdict(&m("a.1", 5)), Verdict::Deliver);
        c.accept(&m("a.1", 5), now);
        assert_eq!(c.verdict(&m("a.1", 6)), Verdict::Deliver);
        assert_eq!(c.verdict(&m("a.1", 5)), Verdict::Duplicate);
        assert_eq!(c.verdict(&m("a.1", 2)), Verdict::Duplicate);
        assert_eq!(c.verdict(&m("a.1", 9)), Verdict::Gap { missing: 3 });
        assert_eq!(c.verdict(&m("b.1", 9)), Verdict::Deliver);
        c.advance(StreamId(10, 0));
        c.advance(StreamId(9, 0));
        assert_eq!(c.cursor, Some(StreamId(10, 0)));
    }

    #[test]
    fn origins_per_channel_are_bounded() {
        let mut c = Channel::default();
        let start = Instant::now();
        for i in 0..MAX_ORIGINS + 10 {
            let origin = format!("o.{i}");
            c.accept(&m(&origin, 1), start + Duration::from_millis(i as u64));
        }
        assert_eq!(c.origins.len(), MAX_ORIGINS);
        assert!(!c.origins.contains_key("o.0"));
        assert!(c.origins.contains_key(&format!("o.{}", MAX_ORIGINS + 9)));
    }
}
