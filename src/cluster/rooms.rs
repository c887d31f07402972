//! The rooms of this node as the cluster sees them: their filters and per-node counts in
//! Redis (PROTOCOL.md §9 "Counts"), written by one task so that writes keep the order of
//! the changes they reflect.
//!
//! A change marks its room dirty and gets a ticket; the writer takes every dirty room,
//! writes each one's *current* local count (so a late write can never undo a newer one),
//! and then releases every ticket it covered. A subscribe waits for its ticket before it
//! is answered: once answered, it is counted everywhere. The set of dirty rooms is bounded
//! by the rooms of the node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexSet;
use parking_lot::Mutex;
use redis::{AsyncCommands, Script};
use tokio::sync::{Notify, watch};

use std::sync::Weak;

use super::{Link, Upstream};

/// Rooms whose scripts are in flight together, so that one write never floods Redis.
const BATCH: usize = 500;

/// One room, one slot (its two hashes share a hash tag), so that it runs on a Redis Cluster
/// as on one server. A room's counts hash holds, per node, `<node>` → its count and, when
/// some channel of the room on that node wants user notifications, `u:<node>` → 1.
///
/// KEYS: the room's hash, its counts' hash. ARGV[1]: node id; ARGV[2]: local count;
/// ARGV[3]: whether it wants user notifications (1/0); ARGV[4..6]: index, collection,
/// filter ("" when already written); ARGV[7]: how many nodes are known dead (`DEAD`), then
/// their ids. Returns the count of the other nodes not known dead and whether one of them
/// wants user notifications (1/0). The node's room set (`Keys::node_rooms`, in the
/// membership slot) is written apart: the room added before its count, removed after.
const SYNC_SCRIPT: &str = r"
local node, count = ARGV[1], tonumber(ARGV[2])
local dead = {}
for i = 1, tonumber(ARGV[7]) do dead[ARGV[7 + i]] = true end
if count > 0 then
  redis.call('HSET', KEYS[2], node, count)
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[2], 'u:' .. node, 1)
  else
    redis.call('HDEL', KEYS[2], 'u:' .. node)
  end
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'index', ARGV[4], 'collection', ARGV[5], 'filter', ARGV[6])
  end
else
  redis.call('HDEL', KEYS[2], node, 'u:' .. node)
  if redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
end
local remote, wants = 0, 0
local fields = redis.call('HGETALL', KEYS[2])
for j = 1, #fields, 2 do
  local field = fields[j]
  local owner = field
  if string.sub(field, 1, 2) == 'u:' then owner = string.sub(field, 3) end
  if owner ~= node and not dead[owner] then
    if owner == field then remote = remote + tonumber(fields[j + 1]) else wants = 1 end
  end
end
return {remote, wants}
";

/// KEYS: a room's hash, its counts' hash. ARGV[1]: node id (not counted); ARGV[2]: how
/// many nodes are known dead, then their ids (not counted). Returns index, collection and
/// the count of the other nodes (index "" for a room that does not exist).
const READ_SCRIPT: &str = r"
local node = ARGV[1]
local dead = {}
for i = 1, tonumber(ARGV[2]) do dead[ARGV[2 + i]] = true end
local place = redis.call('HMGET', KEYS[1], 'index', 'collection')
local remote = 0
local fields = redis.call('HGETALL', KEYS[2])
for j = 1, #fields, 2 do
  local field = fields[j]
  if field ~= node and string.sub(field, 1, 2) ~= 'u:' and not dead[field] then
    remote = remote + tonumber(fields[j + 1])
  end
end
return {place[1] or '', place[2] or '', remote}
";

/// KEYS: a room's hash, its counts' hash. ARGV[1]: a node that left or was evicted. Its
/// count goes, and the room when no node is left in it.
const DROP_SCRIPT: &str = r"
redis.call('HDEL', KEYS[2], ARGV[1], 'u:' .. ARGV[1])
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
return 1
";

/// An eviction's first step, in the membership slot. KEYS: the node's registration, the
/// roster, the node's room set, its eviction mark. ARGV[1]: the node; ARGV[2]: how long
/// the mark holds (ms). -1 when the node is registered (alive again), -2 when it left the
/// roster or another node evicts it; otherwise the mark is set (a registration waits for
/// it to go) and the node's rooms are returned. The rooms' counts go next, one slot each,
/// while the roster still lists the node as dead (so that no one counts them meanwhile),
/// then `EVICTED_SCRIPT` removes it.
const EVICT_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -2 end
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[2]) then return -2 end
return redis.call('SMEMBERS', KEYS[3])
";

/// An eviction's last step. KEYS: the roster, the node's room set, its eviction mark.
/// ARGV[1]: the node.
const EVICTED_SCRIPT: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
";

/// What the other nodes have of a room, as of the last write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Remote {
    pub count: usize,
    pub wants_users: bool,
}

#[derive(Default)]
struct Queue {
    dirty: IndexSet<Arc<str>>,
    next_ticket: u64,
    /// Rooms whose filter this node wrote since it (re)registered.
    written: HashSet<Arc<str>>,
}

pub struct RoomSync {
    queue: Mutex<Queue>,
    wake: Notify,
    /// The highest ticket the writer has gone past.
    done: watch::Sender<u64>,
    /// Per room, the other nodes' count at the last write, and whether one of them
    /// wants user notifications.
    remote: Mutex<HashMap<Arc<str>, Remote>>,
    sync_script: Script,
    read_script: Script,
    drop_script: Script,
    evict_script: Script,
    evicted_script: Script,
    /// Set when the node leaves: nothing more is written.
    stopped: std::sync::atomic::AtomicBool,
    /// Nodes of the roster whose registration had expired at the last heartbeat: their
    /// counts are not counted (until an eviction removes them). A node the roster does not
    /// list yet (it joined since) is counted.
    dead: Mutex<Arc<[String]>>,
}

/// A room's place and cluster-wide count without this node, as read from Redis.
#[derive(Clone)]
pub struct RemoteRoom {
    pub room_id: String,
    pub index: String,
    pub collection: String,
    pub remote_count: usize,
}

impl Default for RoomSync {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomSync {
    pub fn new() -> RoomSync {
        RoomSync {
            queue: Mutex::new(Queue {
                next_ticket: 1,
                ..Queue::default()
            }),
            wake: Notify::new(),
            done: watch::channel(0).0,
            remote: Mutex::new(HashMap::new()),
            sync_script: Script::new(SYNC_SCRIPT),
            read_script: Script::new(READ_SCRIPT),
            drop_script: Script::new(DROP_SCRIPT),
            evict_script: Script::new(EVICT_SCRIPT),
            evicted_script: Script::new(EVICTED_SCRIPT),
            stopped: std::sync::atomic::AtomicBool::new(false),
            dead: Mutex::new(Arc::from([])),
        }
    }

    /// The roster's nodes whose registration expired, as the last heartbeat read them.
    pub fn set_dead(&self, nodes: Vec<String>) {
        *self.dead.lock() = Arc::from(nodes);
    }

    /// Stops writing, once the writes under way are done (bounded by `limit`): the node
    /// is leaving and removes its counts itself.
    pub async fn stop(&self, limit: Duration) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let ticket = self.mark([]);
        self.wait(ticket, limit).await;
    }

    /// Marks rooms as changed; returns the ticket to wait for.
    pub fn mark(&self, rooms: impl IntoIterator<Item = Arc<str>>) -> u64 {
        let mut queue = self.queue.lock();
        queue.dirty.extend(rooms);
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        drop(queue);
        self.wake.notify_one();
        ticket
    }

    /// Everything is to be written again, filters included (Redis came back, maybe empty):
    /// `rooms` are every room of this node.
    pub fn mark_all(&self, rooms: Vec<Arc<str>>) {
        let mut queue = self.queue.lock();
        queue.written.clear();
        queue.dirty.extend(rooms);
        drop(queue);
        self.wake.notify_one();
    }

    /// Waits until the writer went past `ticket`, at most `limit`.
    pub async fn wait(&self, ticket: u64, limit: Duration) {
        let mut done = self.done.subscribe();
        let _ = tokio::time::timeout(limit, done.wait_for(|d| *d >= ticket)).await;
    }

    /// The other nodes' share of the room, as of the last write.
    pub fn remote(&self, room_id: &str) -> Remote {
        self.remote.lock().get(room_id).copied().unwrap_or_default()
    }

    /// Forgets the other nodes' count of a room that is no longer on this node.
    pub fn forget(&self, room_id: &str) {
        self.remote.lock().remove(room_id);
    }

    /// The writer: runs for the life of the node (while `upstream` lives).
    pub async fn run(
        self: Arc<Self>,
        link: Arc<Link>,
        node: Arc<str>,
        upstream: Weak<dyn Upstream>,
    ) {
        loop {
            let (rooms, upto) = {
                let mut queue = self.queue.lock();
                let rooms: Vec<Arc<str>> = queue.dirty.drain(..).collect();
                (rooms, queue.next_ticket - 1)
            };
            if rooms.is_empty() {
                self.done.send_replace(upto);
                self.wake.notified().await;
                continue;
            }
            let mut failed = Vec::new();
            if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
                self.done.send_replace(upto);
                continue;
            }
            let Some(local) = upstream.upgrade() else {
                return;
            };
            // Tried whatever other paths found; a failure keeps the rest for later.
            for (i, chunk) in rooms.chunks(BATCH).enumerate() {
                match self.write(&link, &node, &*local, chunk).await {
                    Ok(()) => {
                        link.health.up();
                    }
                    Err(reason) => {
                        link.health.down(&reason);
                        failed.extend_from_slice(&rooms[i * BATCH..]);
                        break;
                    }
                }
            }
            drop(local);
            self.done.send_replace(upto);
            if !failed.is_empty() {
                // Kept for when Redis answers again.
                self.queue.lock().dirty.extend(failed);
                tokio::time::sleep(link.heartbeat.min(Duration::from_secs(1))).await;
            }
        }
    }

    async fn write(
        &self,
        link: &Link,
        node: &str,
        local: &dyn Upstream,
        rooms: &[Arc<str>],
    ) -> Result<(), String> {
        let dead = self.dead.lock().clone();
        let mut counts = Vec::with_capacity(rooms.len());
        let mut invocations = Vec::with_capacity(rooms.len());
        {
            let written = &self.queue.lock().written;
            for room in rooms {
                let snapshot = local.room(room);
                let count = snapshot.as_ref().map_or(0, |s| s.count);
                counts.push(count);
                let mut invocation = self.sync_script.prepare_invoke();
                invocation
                    .key(link.keys.room(room))
                    .key(link.keys.room_counts(room))
                    .arg(node)
                    .arg(count)
                    .arg(match snapshot.as_ref().is_some_and(|s| s.wants_users) {
                        true => "1",
                        false => "0",
                    });
                match snapshot {
                    Some(s) if !written.contains(room) => {
                        invocation.arg(s.index).arg(s.collection).arg(&*s.body)
                    }
                    _ => invocation.arg("").arg("").arg(""),
                };
                dead_args(&mut invocation, &dead);
                invocations.push(invocation);
            }
        }
        let (added, removed): (Vec<_>, Vec<_>) = rooms
            .iter()
            .zip(&counts)
            .partition(|(_, count)| **count > 0);
        let node_rooms = link.keys.node_rooms(node);
        // The room set first: a node that dies now leaves no count an eviction cannot find.
        room_set(link, "SADD", &node_rooms, &added).await?;
        let answers = futures_util::future::try_join_all(
            invocations
                .iter()
                .map(|invocation| link.invoke::<(usize, usize)>(invocation)),
        )
        .await?;
        room_set(link, "SREM", &node_rooms, &removed).await?;
        let mut queue = self.queue.lock();
        let mut known = self.remote.lock();
        for ((room, count), (remote, wants)) in rooms.iter().zip(counts).zip(answers) {
            // Kept for a room that just left this node too: its "out" notification needs it
            // (`forget` removes it then).
            known.insert(
                room.clone(),
                Remote {
                    count: remote,
                    wants_users: wants == 1,
                },
            );
            if count > 0 {
                queue.written.insert(room.clone());
            } else {
                queue.written.remove(room);
            }
        }
        Ok(())
    }

    /// Index, collection and other nodes' count of each room (one script per room, in
    /// batches issued together).
    pub async fn read(
        &self,
        link: &Link,
        node_id: &str,
        rooms: &[String],
    ) -> Result<Vec<RemoteRoom>, String> {
        let dead = self.dead.lock().clone();
        let mut out = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(BATCH) {
            let invocations: Vec<_> = chunk
                .iter()
                .map(|room| {
                    let mut invocation = self.read_script.prepare_invoke();
                    invocation
                        .key(link.keys.room(room))
                        .key(link.keys.room_counts(room))
                        .arg(node_id);
                    dead_args(&mut invocation, &dead);
                    invocation
                })
                .collect();
            let answers = futures_util::future::try_join_all(
                invocations
                    .iter()
                    .map(|invocation| link.invoke::<(String, String, usize)>(invocation)),
            )
            .await?;
            for (room, (index, collection, remote_count)) in chunk.iter().zip(answers) {
                out.push(RemoteRoom {
                    room_id: room.clone(),
                    index,
                    collection,
                    remote_count,
                });
            }
        }
        Ok(out)
    }

    /// Removes a node's count from each of `rooms` (one slot each), in batches.
    async fn drop_counts(
        &self,
        link: &Link,
        node_id: &str,
        rooms: &[String],
    ) -> Result<(), String> {
        for chunk in rooms.chunks(BATCH) {
            let invocations: Vec<_> = chunk
                .iter()
                .map(|room| {
                    let mut invocation = self.drop_script.prepare_invoke();
                    invocation
                        .key(link.keys.room(room))
                        .key(link.keys.room_counts(room))
                        .arg(node_id);
                    invocation
                })
                .collect();
            futures_util::future::try_join_all(
                invocations
                    .iter()
                    .map(|invocation| link.invoke::<()>(invocation)),
            )
            .await?;
        }
        Ok(())
    }

    /// Removes a node's counts (it leaves, or registers again after its registration
    /// vanished: what an interrupted eviction left goes before it writes its rooms again).
    pub async fn forget_node(&self, link: &Link, node_id: &str) -> Result<usize, String> {
        let node_rooms = link.keys.node_rooms(node_id);
        let rooms: Vec<String> = link.bounded(link.redis.get().smembers(&node_rooms)).await?;
        self.drop_counts(link, node_id, &rooms).await?;
        link.bounded(link.redis.get().del::<_, ()>(&node_rooms))
            .await?;
        Ok(rooms.len())
    }

    /// Evicts a node whose registration expired: its counts, then its roster entry, unless
    /// it registered again or another node evicts it (None). The eviction mark makes the
    /// node's registration wait until its counts are gone (bounded: the mark expires).
    pub async fn evict(&self, link: &Link, node_id: &str) -> Result<Option<usize>, String> {
        let mark = link.keys.evicting(node_id);
        let mut claim = self.evict_script.prepare_invoke();
        claim
            .key(link.keys.node(node_id))
            .key(link.keys.roster())
            .key(link.keys.node_rooms(node_id))
            .key(&mark)
            .arg(node_id)
            .arg(eviction_mark_ms(link));
        let answer: redis::Value = link
            .bounded(claim.invoke_async(&mut link.redis.get()))
            .await?;
        let rooms: Vec<String> = match answer {
            redis::Value::Int(_) => return Ok(None),
            other => redis::from_redis_value(other).map_err(|e| e.to_string())?,
        };
        self.drop_counts(link, node_id, &rooms).await?;
        let mut done = self.evicted_script.prepare_invoke();
        done.key(link.keys.roster())
            .key(link.keys.node_rooms(node_id))
            .key(&mark)
            .arg(node_id);
        link.bounded(done.invoke_async::<()>(&mut link.redis.get()))
            .await?;
        Ok(Some(rooms.len()))
    }
}

/// How long an eviction's mark holds a node's registration back at most: longer than the
/// eviction's calls take (each bounded by the command timeout).
pub fn eviction_mark_ms(link: &Link) -> u64 {
    u64::try_from(link.timeout.as_millis())
        .unwrap_or(u64::MAX / 8)
        .saturating_mul(4)
        .max(1000)
}

/// `SADD` or `SREM` of `rooms` (with their counts) in a node's room set; nothing when empty.
async fn room_set(
    link: &Link,
    command: &str,
    set: &str,
    rooms: &[(&Arc<str>, &usize)],
) -> Result<(), String> {
    if rooms.is_empty() {
        return Ok(());
    }
    let mut call = redis::cmd(command);
    call.arg(set);
    for (room, _) in rooms {
        call.arg(&***room);
    }
    link.bounded(call.query_async::<()>(&mut link.redis.get()))
        .await
}

/// The dead nodes as a script's last arguments: their number, then their ids.
fn dead_args(invocation: &mut redis::ScriptInvocation<'_>, dead: &[String]) {
    invocation.arg(dead.len());
    for node in dead {
        invocation.arg(node);
    }
}
