//! The queue of messages towards Redis (issue 19, docs/clustering.md).
//!
//! - **Sequences.** Each collection's messages from this process are numbered from 1 in a
//!   *chain* named `<incarnation>.<n>`; receivers spot a gap, or a message they already
//!   delivered, per chain. A chain unused for long may be forgotten (the number of chains is
//!   bounded); the collection's next message starts a new one.
//! - **Answers.** A message is answered once Redis holds it (history and pub/sub, one
//!   script), or, while Redis does not answer, once it waits in this queue (the *retain*
//!   queue, bounded by `cluster.bus.retain`): past its count or size a new message is
//!   refused (`Refused`), past its age the oldest are dropped; both are counted.
//! - **Replay.** What Redis held in the last `cluster.bus.replay.maxAge` is kept and sent
//!   again, before anything newer, when Redis may have lost it: after a failed call, the
//!   next success first reads Redis's `run_id`, and a new one (a restart, a failover to
//!   another server) means the last writes may be gone (on a Redis Cluster, whose masters
//!   fail over one by one, any failed call counts as one); and when the heartbeat finds this
//!   node's registration vanished (Redis emptied). Receivers drop what they already
//!   delivered. A link that was only cut replays nothing.
//!
//! One task (on the control plane's thread) sends the queue in order, in pipelined batches.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::Link;
use super::history::PUBLISH_SCRIPT;
use super::wire;
use crate::config::{BusSettings, WindowSettings};

/// Messages per pipelined round trip, at most.
const BATCH: usize = 256;
/// Between two attempts while Redis does not answer.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// Chains remembered at most; past it the least recently used half is forgotten.
const MAX_CHAINS: usize = 100_000;
/// What an entry costs besides its text (bookkeeping), for the size bounds.
const ENTRY_OVERHEAD: usize = 64;

/// The retain queue is full: the message was not taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

#[derive(Clone, Copy)]
struct Window {
    messages: usize,
    size: usize,
    age: Duration,
}

impl From<&WindowSettings> for Window {
    fn from(w: &WindowSettings) -> Window {
        Window {
            messages: usize::try_from(w.max_messages).unwrap_or(usize::MAX),
            size: w.max_size.as_usize(),
            age: Duration::from_millis(w.max_age),
        }
    }
}

struct Entry {
    channel: Arc<str>,
    /// The collection's history; None for a message without one (revocations).
    history: Option<Arc<str>>,
    body: Arc<str>,
    /// When it was queued (waiting), or held by Redis (replay).
    at: Instant,
    answer: Option<oneshot::Sender<()>>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.body.len() + ENTRY_OVERHEAD
    }

    fn copy(&self) -> Outgoing {
        (
            self.channel.clone(),
            self.history.clone(),
            self.body.clone(),
        )
    }
}

type Outgoing = (Arc<str>, Option<Arc<str>>, Arc<str>);

struct Chain {
    origin: Arc<str>,
    next: u64,
    used: Instant,
}

#[derive(Default)]
struct Queue {
    /// Not yet held by Redis, oldest first.
    waiting: VecDeque<Entry>,
    waiting_bytes: usize,
    /// Held by Redis within the replay window, oldest first.
    held: VecDeque<Entry>,
    held_bytes: usize,
    /// Channel → its current chain.
    chains: HashMap<Arc<str>, Chain>,
    chains_made: u64,
    /// The last attempt failed: new messages are answered at once (retained).
    away: bool,
    /// What Redis held recently is to be sent again first.
    replay_due: bool,
    /// A call failed: which Redis answers is to be checked before sending on.
    verify: bool,
    /// The `run_id` of the Redis that held what was sent last.
    run_id: Option<String>,
    /// Messages dropped for age were logged in this episode.
    expiry_logged: bool,
}

pub struct Publisher {
    queue: Mutex<Queue>,
    wake: Notify,
    link: Arc<Link>,
    incarnation: String,
    retain: Window,
    replay: Window,
    history_length: u64,
    history_age: u64,
    script_hash: String,
}

enum Work {
    Idle,
    /// Which Redis answers (its `run_id`), before anything is sent.
    Verify,
    Replay(Vec<Outgoing>),
    Send(Vec<Outgoing>),
}

impl Publisher {
    pub fn new(link: Arc<Link>, incarnation: &str, settings: &BusSettings) -> Publisher {
        Publisher {
            queue: Mutex::new(Queue {
                verify: true,
                ..Queue::default()
            }),
            wake: Notify::new(),
            link,
            incarnation: incarnation.to_owned(),
            retain: (&settings.retain).into(),
            replay: (&settings.replay).into(),
            history_length: settings.history.max_length,
            history_age: settings.history.max_age,
            script_hash: redis::Script::new(PUBLISH_SCRIPT).get_hash().to_owned(),
        }
    }

    /// Queues a message for `channel`, kept in `history` when it has one; the queue's task
    /// takes it after the next `wake`. Returns what resolves once Redis holds it (None:
    /// answered already, Redis being away), or `Refused` when the retain queue is full.
    pub fn send(
        &self,
        channel: String,
        history: Option<String>,
        json: String,
    ) -> Result<Option<oneshot::Receiver<()>>, Refused> {
        let now = Instant::now();
        let mut q = self.queue.lock();
        let cost = json.len() + ENTRY_OVERHEAD + 48;
        if q.waiting.len() >= self.retain.messages || q.waiting_bytes + cost > self.retain.size {
            drop(q);
            self.link.health.counters.dropped.inc();
            return Err(Refused);
        }
        let channel: Arc<str> = Arc::from(channel);
        let body = match history {
            Some(_) => {
                let (origin, seq) = self.next_in_chain(&mut q, &channel, now);
                wire::entry(&origin, seq, &json)
            }
            None => json,
        };
        let (answer, receiver) = if q.away {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let entry = Entry {
            channel,
            history: history.map(Arc::from),
            body: Arc::from(body),
            at: now,
            answer,
        };
        q.waiting_bytes += entry.cost();
        q.waiting.push_back(entry);
        self.link
            .health
            .counters
            .waiting
            .set(q.waiting.len() as i64);
        Ok(receiver)
    }

    /// The queue's task sends what was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn next_in_chain(&self, q: &mut Queue, channel: &Arc<str>, now: Instant) -> (Arc<str>, u64) {
        if !q.chains.contains_key(channel) && q.chains.len() >= MAX_CHAINS {
            let mut used: Vec<Instant> = q.chains.values().map(|c| c.used).collect();
            used.sort_unstable();
            let cut = used[used.len() / 2];
            q.chains.retain(|_, c| c.used > cut);
        }
        let Queue {
            chains,
            chains_made,
            ..
        } = q;
        let chain = chains.entry(channel.clone()).or_insert_with(|| {
            *chains_made += 1;
            Chain {
                origin: Arc::from(format!("{}.{chains_made}", self.incarnation)),
                next: 1,
                used: now,
            }
        });
        let seq = chain.next;
        chain.next += 1;
        chain.used = now;
        (chain.origin.clone(), seq)
    }

    /// What Redis held recently is sent again before anything newer (Redis lost data).
    pub fn replay_soon(&self) {
        self.queue.lock().replay_due = true;
        self.wake.notify_one();
    }

    /// Redis answers again after a fault another path saw: which Redis it is is checked.
    pub fn verify_soon(&self) {
        self.queue.lock().verify = true;
        self.wake.notify_one();
    }

    /// Sends the queue, in order, for as long as the node runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.next_work() {
                Work::Idle => self.wake.notified().await,
                Work::Verify => match self.run_id().await {
                    Ok(current) => {
                        self.link.health.up();
                        let mut q = self.queue.lock();
                        q.verify = false;
                        q.away = false;
                        if q.run_id
                            .as_ref()
                            .is_some_and(|known| !current.is_empty() && *known != current)
                        {
                            q.replay_due = true;
                            log::warn!(
                                "[CLUSTER] Redis restarted or failed over (a new run_id): what it held lately is sent again"
                            );
                        }
                        q.run_id = Some(current);
                    }
                    Err(reason) => self.failed(&reason).await,
                },
                Work::Replay(entries) => {
                    let n = entries.len();
                    match self.transmit(&entries).await {
                        Ok(()) => {
                            self.queue.lock().replay_due = false;
                            self.link.health.up();
                            self.link.health.counters.replayed.inc_by(n as u64);
                            log::info!(
                                "[CLUSTER] {n} message(s) Redis held lately sent again, in case it lost them"
                            );
                        }
                        Err(reason) => self.failed(&reason).await,
                    }
                }
                Work::Send(entries) => match self.transmit(&entries).await {
                    Ok(()) => self.held(entries.len()),
                    Err(reason) => self.failed(&reason).await,
                },
            }
        }
    }

    fn next_work(&self) -> Work {
        let mut q = self.queue.lock();
        self.expire(&mut q, Instant::now());
        if q.verify {
            return Work::Verify;
        }
        if q.replay_due {
            if q.held.is_empty() {
                q.replay_due = false;
            } else {
                return Work::Replay(q.held.iter().map(Entry::copy).collect());
            }
        }
        if q.waiting.is_empty() {
            return Work::Idle;
        }
        Work::Send(q.waiting.iter().take(BATCH).map(Entry::copy).collect())
    }

    /// Drops what waited longer than the retain window (counted, logged once per
    /// episode), and what left the replay window.
    fn expire(&self, q: &mut Queue, now: Instant) {
        let mut expired = 0u64;
        while let Some(front) = q.waiting.front()
            && now.duration_since(front.at) > self.retain.age
        {
            if let Some(entry) = q.waiting.pop_front() {
                q.waiting_bytes -= entry.cost();
                if let Some(answer) = entry.answer {
                    let _ = answer.send(());
                }
                expired += 1;
            }
        }
        if expired > 0 {
            self.link.health.counters.dropped.inc_by(expired);
            self.link
                .health
                .counters
                .waiting
                .set(q.waiting.len() as i64);
            if !std::mem::replace(&mut q.expiry_logged, true) {
                log::error!(
                    "[CLUSTER] Redis has not answered for longer than cluster.bus.retain.maxAge ({} ms): {expired} message(s) for other nodes dropped (counted in kuzzle_bus_messages_total{{direction=\"dropped\"}})",
                    self.retain.age.as_millis()
                );
            }
        }
        self.trim_held(q, now);
    }

    fn trim_held(&self, q: &mut Queue, now: Instant) {
        while let Some(front) = q.held.front()
            && (now.duration_since(front.at) > self.replay.age
                || q.held.len() > self.replay.messages
                || q.held_bytes > self.replay.size)
        {
            if let Some(entry) = q.held.pop_front() {
                q.held_bytes -= entry.cost();
            }
        }
    }

    /// The first `n` waiting messages are held by Redis.
    fn held(&self, n: usize) {
        let now = Instant::now();
        let mut q = self.queue.lock();
        for _ in 0..n {
            let Some(mut entry) = q.waiting.pop_front() else {
                break;
            };
            q.waiting_bytes -= entry.cost();
            if let Some(answer) = entry.answer.take() {
                let _ = answer.send(());
            }
            if entry.history.is_some() && !self.replay.age.is_zero() {
                entry.at = now;
                q.held_bytes += entry.cost();
                q.held.push_back(entry);
            }
        }
        self.trim_held(&mut q, now);
        q.away = false;
        q.expiry_logged = false;
        self.link
            .health
            .counters
            .waiting
            .set(q.waiting.len() as i64);
        drop(q);
        self.link.health.up();
        self.link.health.counters.published.inc_by(n as u64);
    }

    /// Redis did not take a batch: everything waits (answered as retained), and which
    /// Redis answers next is checked first (a new one may have lost the last writes).
    async fn failed(&self, reason: &str) {
        {
            let mut q = self.queue.lock();
            q.away = true;
            q.verify = true;
            for entry in q.waiting.iter_mut() {
                if let Some(answer) = entry.answer.take() {
                    let _ = answer.send(());
                }
            }
        }
        self.link.health.down(reason);
        tokio::time::sleep(RETRY_DELAY).await;
    }

    /// The `run_id` of the Redis that answers; an empty one when it refuses to tell (INFO
    /// disabled by a managed service: the replay then waits for the heartbeat's word).
    async fn run_id(&self) -> Result<String, String> {
        if self.link.redis.is_cluster() {
            // Which masters answer is not one server's run_id: a call failed, so a master
            // may have failed over and lost its last writes: every one is new.
            self.link
                .bounded(redis::cmd("PING").query_async::<()>(&mut self.link.redis.get()))
                .await?;
            return Ok(uuid::Uuid::new_v4().simple().to_string());
        }
        let mut command = redis::cmd("INFO");
        command.arg("server");
        let mut connection = self.link.redis.get();
        let asked = command.query_async::<String>(&mut connection);
        let info = match tokio::time::timeout(self.link.timeout, asked).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                self.link.redis.answered();
                return Ok(String::new());
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                self.link.redis.unanswered().await;
                return Err("no answer to INFO".into());
            }
        };
        self.link.redis.answered();
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .unwrap_or_default())
    }

    /// Sends `entries` in order, in pipelined batches; the script is loaded in each (a
    /// Redis that restarted has forgotten it). On a Redis Cluster a pipeline holds one
    /// slot: a batch goes as one pipeline per channel (a channel and its history share a
    /// slot), issued together; order is kept per channel, which is what receivers check.
    async fn transmit(&self, entries: &[Outgoing]) -> Result<(), String> {
        let cluster = self.link.redis.is_cluster();
        for batch in entries.chunks(BATCH) {
            if !cluster {
                let mut pipe = redis::pipe();
                pipe.cmd("SCRIPT").arg("LOAD").arg(PUBLISH_SCRIPT).ignore();
                for entry in batch {
                    self.push(&mut pipe, entry, "PUBLISH");
                }
                self.link
                    .bounded(pipe.query_async::<()>(&mut self.link.redis.get()))
                    .await?;
                continue;
            }
            let mut per_channel: indexmap::IndexMap<&str, redis::Pipeline> =
                indexmap::IndexMap::new();
            for entry in batch {
                let pipe = per_channel.entry(&*entry.0).or_insert_with(redis::pipe);
                self.push(pipe, entry, "SPUBLISH");
            }
            futures_util::future::try_join_all(per_channel.values().map(|pipe| async move {
                let mut connection = self.link.redis.get();
                self.link
                    .bounded(pipe.query_async::<()>(&mut connection))
                    .await
            }))
            .await?;
        }
        Ok(())
    }

    /// One message in a pipeline: the script for a message with a history (by its hash on
    /// one server, where the pipeline loads it first; whole on a Redis Cluster, whose
    /// pipelines cannot load it on every shard), `publish` alone otherwise.
    fn push(&self, pipe: &mut redis::Pipeline, (channel, history, body): &Outgoing, publish: &str) {
        match history {
            Some(history) => {
                match publish {
                    "PUBLISH" => pipe.cmd("EVALSHA").arg(&self.script_hash),
                    _ => pipe.cmd("EVAL").arg(PUBLISH_SCRIPT),
                };
                pipe.arg(2)
                    .arg(&**history)
                    .arg(&**channel)
                    .arg(&**body)
                    .arg(self.history_length)
                    .arg(self.history_age)
                    .arg(publish)
                    .ignore()
            }
            None => pipe.cmd(publish).arg(&**channel).arg(&**body).ignore(),
        };
    }
}
