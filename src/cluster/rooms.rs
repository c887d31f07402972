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
use redis::Script;
use tokio::sync::{Notify, watch};

use std::sync::Weak;

use super::{Link, Upstream};

/// Rooms per script call, so that one call never holds Redis for long.
const BATCH: usize = 500;

/// A room's counts hash holds, per node, `<node>` → its count and, when some channel of
/// the room on that node wants user notifications, `u:<node>` → 1.
///
/// KEYS[1]: this node's set of rooms; then, per room, its hash and its counts' hash.
/// ARGV[1]: node id; ARGV[2]: how many nodes are known dead (`DEAD`), then their ids; then,
/// per room, id, local count, whether it wants user notifications (1/0), index, collection,
/// filter ("" when already written).
/// Returns, per room, the count of the other nodes not known dead and whether one of them
/// wants user notifications (1/0). The script touches only the keys it is given.
const SYNC_SCRIPT: &str = r"
local node = ARGV[1]
local dead, skip = {}, tonumber(ARGV[2])
for i = 1, skip do dead[ARGV[2 + i]] = true end
local out = {}
local rooms = (#KEYS - 1) / 2
for i = 1, rooms do
  local info, counts = KEYS[2 * i], KEYS[2 * i + 1]
  local a = 2 + skip + (i - 1) * 6
  local room, count = ARGV[a + 1], tonumber(ARGV[a + 2])
  if count > 0 then
    redis.call('HSET', counts, node, count)
    if ARGV[a + 3] == '1' then
      redis.call('HSET', counts, 'u:' .. node, 1)
    else
      redis.call('HDEL', counts, 'u:' .. node)
    end
    redis.call('SADD', KEYS[1], room)
    if ARGV[a + 6] ~= '' then
      redis.call('HSET', info, 'index', ARGV[a + 4], 'collection', ARGV[a + 5], 'filter', ARGV[a + 6])
    end
  else
    redis.call('HDEL', counts, node, 'u:' .. node)
    redis.call('SREM', KEYS[1], room)
    if redis.call('HLEN', counts) == 0 then redis.call('DEL', info) end
  end
  local remote, wants = 0, 0
  local fields = redis.call('HGETALL', counts)
  for j = 1, #fields, 2 do
    local field = fields[j]
    local owner = field
    if string.sub(field, 1, 2) == 'u:' then owner = string.sub(field, 3) end
    if owner ~= node and not dead[owner] then
      if owner == field then remote = remote + tonumber(fields[j + 1]) else wants = 1 end
    end
  end
  out[2 * i - 1] = remote
  out[2 * i] = wants
end
return out
";

/// KEYS: per room, its hash and its counts' hash. ARGV[1]: node id (not counted);
/// ARGV[2]: how many nodes are known dead, then their ids (not counted). Returns, per room,
/// index, collection and the count of the other nodes (index "" for a room that does not
/// exist).
const READ_SCRIPT: &str = r"
local node = ARGV[1]
local dead = {}
for i = 1, tonumber(ARGV[2]) do dead[ARGV[2 + i]] = true end
local out = {}
for i = 1, #KEYS / 2 do
  local place = redis.call('HMGET', KEYS[2 * i - 1], 'index', 'collection')
  local remote = 0
  local fields = redis.call('HGETALL', KEYS[2 * i])
  for j = 1, #fields, 2 do
    local field = fields[j]
    if field ~= node and string.sub(field, 1, 2) ~= 'u:' and not dead[field] then
      remote = remote + tonumber(fields[j + 1])
    end
  end
  out[#out + 1] = place[1] or ''
  out[#out + 1] = place[2] or ''
  out[#out + 1] = remote
end
return out
";

/// KEYS[1]: a dead node's set of rooms; with KEYS[2] (the node's registration key) and
/// KEYS[3] (the roster): only when the registration is gone (-1 otherwise), and only by the
/// one caller that removes the roster entry (-2 for the others), in one atomic step, so that
/// a node that registered again meanwhile keeps its entry and its counts. ARGV[1]: the dead
/// node; ARGV[2]: what a room's hashes are prefixed with (`Keys::room`'s form). Removes its
/// counts, and the rooms left empty. (The room hashes are reached from the set, not given as
/// keys: a Redis Cluster needs this split per slot — issue 20, with the bus.)
const FORGET_NODE_SCRIPT: &str = r"
local function room_key(room, what)
  return ARGV[2] .. '{r:' .. (string.gsub(room, '[{}]', '_')) .. '}/' .. what
end
if KEYS[2] then
  if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
  if redis.call('HDEL', KEYS[3], ARGV[1]) == 0 then return -2 end
end
local rooms = redis.call('SMEMBERS', KEYS[1])
for _, room in ipairs(rooms) do
  local counts = room_key(room, 'counts')
  redis.call('HDEL', counts, ARGV[1], 'u:' .. ARGV[1])
  if redis.call('HLEN', counts) == 0 then redis.call('DEL', room_key(room, 'room')) end
end
redis.call('DEL', KEYS[1])
return #rooms
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
    forget_script: Script,
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
            forget_script: Script::new(FORGET_NODE_SCRIPT),
            stopped: std::sync::atomic::AtomicBool::new(false),
            dead: Mutex::new(Arc::from([])),
        }
    }

    /// The roster's nodes whose registration expired, as the last heartbeat read them.
    pub fn set_dead(&self, nodes: Vec<String>) {
        *self.dead.lock() = Arc::from(nodes);
    }

    /// The dead nodes as a script's arguments: their number, then their ids.
    fn dead_args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        let dead = self.dead.lock().clone();
        invocation.arg(dead.len());
        for node in dead.iter() {
            invocation.arg(node);
        }
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
        let mut invocation = self.sync_script.prepare_invoke();
        invocation.key(link.keys.node_rooms(node)).arg(node);
        self.dead_args(&mut invocation);
        let mut counts = Vec::with_capacity(rooms.len());
        {
            let written = &self.queue.lock().written;
            for room in rooms {
                let snapshot = local.room(room);
                let count = snapshot.as_ref().map_or(0, |s| s.count);
                counts.push(count);
                invocation
                    .key(link.keys.room(room))
                    .key(link.keys.room_counts(room));
                let wants_users = snapshot.as_ref().is_some_and(|s| s.wants_users);
                invocation
                    .arg(&**room)
                    .arg(count)
                    .arg(if wants_users { "1" } else { "0" });
                match snapshot {
                    Some(s) if !written.contains(room) => {
                        invocation.arg(s.index).arg(s.collection).arg(&*s.body)
                    }
                    _ => invocation.arg("").arg("").arg(""),
                };
            }
        }
        let answer: Vec<usize> = link
            .bounded(invocation.invoke_async(&mut link.redis.get()))
            .await?;
        let remote = answer.chunks(2).map(|pair| Remote {
            count: pair.first().copied().unwrap_or(0),
            wants_users: pair.get(1) == Some(&1),
        });
        let mut queue = self.queue.lock();
        let mut known = self.remote.lock();
        for ((room, count), remote) in rooms.iter().zip(counts).zip(remote) {
            // Kept for a room that just left this node too: its "out" notification needs it
            // (`forget` removes it then).
            known.insert(room.clone(), remote);
            if count > 0 {
                queue.written.insert(room.clone());
            } else {
                queue.written.remove(room);
            }
        }
        Ok(())
    }

    /// Index, collection and other nodes' count of each room (chunked script calls).
    pub async fn read(
        &self,
        link: &Link,
        node_id: &str,
        rooms: &[String],
    ) -> Result<Vec<RemoteRoom>, String> {
        let mut out = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(BATCH) {
            let mut invocation = self.read_script.prepare_invoke();
            invocation.arg(node_id);
            self.dead_args(&mut invocation);
            for room in chunk {
                invocation
                    .key(link.keys.room(room))
                    .key(link.keys.room_counts(room));
            }
            let values: Vec<redis::Value> = link
                .bounded(invocation.invoke_async(&mut link.redis.get()))
                .await?;
            for (room, fields) in chunk.iter().zip(values.chunks(3)) {
                let text = |v: &redis::Value| -> String {
                    redis::from_redis_value_ref::<String>(v).unwrap_or_default()
                };
                let [index, collection, count] = fields else {
                    continue;
                };
                out.push(RemoteRoom {
                    room_id: room.clone(),
                    index: text(index),
                    collection: text(collection),
                    remote_count: redis::from_redis_value_ref::<usize>(count).unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Removes a node's counts (it left, or was evicted).
    pub async fn forget_node(&self, link: &Link, node_id: &str) -> Result<usize, String> {
        let mut invocation = self.forget_script.prepare_invoke();
        invocation
            .key(link.keys.node_rooms(node_id))
            .arg(node_id)
            .arg(link.keys.rooms_prefix());
        let rooms: i64 = link
            .bounded(invocation.invoke_async(&mut link.redis.get()))
            .await?;
        Ok(rooms.max(0) as usize)
    }

    /// Evicts a node whose registration expired: its roster entry and its counts go in one
    /// step, unless it registered again meanwhile or another node evicted it first (None).
    pub async fn evict(&self, link: &Link, node_id: &str) -> Result<Option<usize>, String> {
        let mut invocation = self.forget_script.prepare_invoke();
        invocation
            .key(link.keys.node_rooms(node_id))
            .key(link.keys.node(node_id))
            .key(link.keys.roster())
            .arg(node_id)
            .arg(link.keys.rooms_prefix());
        let rooms: i64 = link
            .bounded(invocation.invoke_async(&mut link.redis.get()))
            .await?;
        Ok(usize::try_from(rooms).ok())
    }
}
