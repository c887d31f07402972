//! Who is in the cluster. Each node holds a registration key with a TTL of 3 × heartbeat,
//! refreshed every heartbeat, and an entry in the roster. At each heartbeat a node also
//! looks for roster members whose registration expired: the first to remove one from the
//! roster evicts it (its counts go, the activity log says why). A node whose own
//! registration vanished (Redis restarted empty, or it was evicted while frozen) registers
//! again and rewrites its rooms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};

use super::rooms::RoomSync;
use super::shared::SharedBus;
use super::{Bus, Link, NodeInfo};
use crate::protocol::now_ms;

/// How many names a node tries before giving up (ids are random among ~10^9).
const ID_ATTEMPTS: usize = 20;

fn ttl_ms(link: &Link) -> u64 {
    (link.heartbeat.as_millis() as u64).saturating_mul(3).max(1)
}

/// A node id no live node holds, claimed with SET NX.
pub async fn claim_id(link: &Link) -> Result<String, String> {
    for _ in 0..ID_ATTEMPTS {
        let id = crate::names::random_name("knode");
        let claimed: Option<String> = link
            .bounded(
                redis::cmd("SET")
                    .arg(link.keys.node(&id))
                    .arg("{}")
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(link))
                    .query_async(&mut link.redis.get()),
            )
            .await?;
        if claimed.is_some() {
            return Ok(id);
        }
    }
    Err("no free node id".into())
}

/// `ip:port` when the node listens on one address; with a wildcard, the host name, which
/// is what other containers or hosts resolve it by.
pub fn advertised_address(bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", bound.port())
}

fn iso(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// An entry of the activity log.
pub fn event(node: &NodeInfo, what: &str, reason: Option<&str>) -> Value {
    let mut e =
        json!({"address": node.address, "date": iso(now_ms()), "event": what, "id": node.id});
    if let (Some(reason), Value::Object(map)) = (reason, &mut e) {
        map.insert("reason".into(), reason.into());
    }
    e
}

/// A node as `cluster:status` lists it.
pub fn describe(node: &NodeInfo) -> Value {
    json!({"address": node.address, "birthdate": iso(node.birthdate), "id": node.id})
}

async fn log_activity(link: &Link, event: Value) -> Result<(), String> {
    let key = link.keys.activity();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .lpush(&key, event.to_string())
        .ignore()
        .ltrim(&key, 0, link.activity_depth.saturating_sub(1) as isize)
        .ignore();
    link.bounded(pipe.query_async::<()>(&mut link.redis.get()))
        .await
}

/// KEYS: the registration, the roster, the node's eviction mark. ARGV: the registration's
/// text, its TTL (ms), the node id. 0 while another node evicts this one (its counts are
/// being removed: the registration waits for that), 1 once registered.
const REGISTER_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
";

/// Writes the registration (refreshing its TTL) and the roster entry, and logs `joined`;
/// false (nothing written) while another node evicts this one.
pub async fn register(link: &Link, info: &NodeInfo) -> Result<bool, String> {
    let text = serde_json::to_string(info).map_err(|e| e.to_string())?;
    let script = redis::Script::new(REGISTER_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(link.keys.node(&info.id))
        .key(link.keys.roster())
        .key(link.keys.evicting(&info.id))
        .arg(text)
        .arg(ttl_ms(link))
        .arg(&info.id);
    let registered: i64 = link
        .bounded(invocation.invoke_async(&mut link.redis.get()))
        .await?;
    if registered == 0 {
        return Ok(false);
    }
    log_activity(link, event(info, "joined", None)).await?;
    Ok(true)
}

/// Every heartbeat: refresh, re-register if needed, evict the dead, count the living.
pub async fn heartbeat(cluster: Arc<SharedBus>, link: Arc<Link>) {
    let mut tick = tokio::time::interval(link.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // Whether the last heartbeat failed: this one's success then rewrites what may have been
    // lost meanwhile (other paths may have found Redis back already).
    let mut failed = false;
    loop {
        tick.tick().await;
        if cluster.is_leaving() {
            return;
        }
        let Some(info) = cluster.info.get() else {
            continue;
        };
        match refresh(&link, info).await {
            Ok(Registration::Twin) => {
                log::error!(
                    "[CLUSTER] another process registered as node {} (a twin): this node gives way and stops",
                    info.id
                );
                cluster.give_way();
                return;
            }
            Ok(Registration::Refreshed) => {
                link.health.up();
                if std::mem::take(&mut failed) {
                    // Writes may have been lost while Redis was away.
                    cluster.rewrite_rooms();
                    cluster.verify_soon();
                }
            }
            Ok(Registration::Vanished) => {
                failed = false;
                link.health.up();
                log::warn!(
                    "[CLUSTER] the registration of node {} vanished (Redis restarted empty, or the node was evicted): registering again",
                    info.id
                );
                // Redis lost data: what this node published lately may be gone from it.
                cluster.replay_soon();
                // What an eviction left half done goes before the rooms are written again.
                let registered = match cluster.rooms.forget_node(&link, &info.id).await {
                    Ok(_) => register(&link, info).await,
                    Err(reason) => Err(reason),
                };
                match registered {
                    Ok(true) => cluster.rewrite_rooms(),
                    // Another node is evicting this one: registered at the next heartbeat.
                    Ok(false) => continue,
                    Err(reason) => link.health.down(&reason),
                }
            }
            Err(reason) => {
                failed = true;
                link.health.down(&reason);
                continue;
            }
        }
        // A store emptied behind the cluster's back gets its marker and the JWT secret back,
        // so that no node starting now takes it for a new one or uses another secret.
        restore_store(&cluster, &link).await;
        // Revocations this node missed (cut off from pub/sub) end here now.
        cluster.catch_up().await;
        match roster(&link).await {
            Ok(nodes) => {
                set_alive(&cluster, &nodes);
                if let Err(reason) = evict_dead(&cluster, &link, nodes).await {
                    link.health.down(&reason);
                }
            }
            Err(reason) => link.health.down(&reason),
        }
    }
}

/// KEYS: the store's marker. ARGV: the marker this node knows. Returns the stored marker, or
/// nothing when it was missing and has been written back. (One key: the secret, in another
/// slot of a Redis Cluster, is written back by a command of its own.)
const RESTORE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return false
";

/// Reads the store's marker (remembered for `createFirstAdmin`); writes it back, with the
/// secret, when it vanished.
async fn restore_store(cluster: &SharedBus, link: &Link) {
    let known = cluster.marker.lock().clone();
    let (Some(secret), false) = (cluster.secret.get(), known.is_empty()) else {
        return;
    };
    // The secret is written back whenever it is missing (another node's wins if it wrote
    // first), the marker after it: a store found with a marker has its secret.
    let secret_back = link
        .bounded(
            redis::cmd("SET")
                .arg(link.keys.secret())
                .arg(secret)
                .arg("NX")
                .query_async::<Option<String>>(&mut link.redis.get()),
        )
        .await;
    if let Err(reason) = secret_back {
        link.health.down(&reason);
        return;
    }
    let script = redis::Script::new(RESTORE_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation.key(link.keys.store_marker()).arg(&known);
    match link
        .bounded(invocation.invoke_async::<Option<String>>(&mut link.redis.get()))
        .await
    {
        Ok(Some(current)) => *cluster.marker.lock() = current,
        Ok(None) => log::error!(
            "[CLUSTER] the store lost its data (Redis emptied, restarted without persistence, or failed over to an empty replica): its marker and the JWT secret were written back so that no node takes it for a new store; users, roles and tokens are gone: restore the backup"
        ),
        Err(reason) => link.health.down(&reason),
    }
}

/// KEYS: the registration, the roster. ARGV: the registration's text, its TTL (ms), the
/// node id. "1": refreshed, and the roster entry restored; "0": the registration vanished;
/// otherwise the registration another process (another incarnation) wrote.
const REFRESH_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return '0' end
if current ~= ARGV[1] then return current end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return '1'
";

/// What a heartbeat found of this node's registration.
#[derive(Debug, PartialEq, Eq)]
enum Registration {
    Refreshed,
    Vanished,
    /// Another process registered under this node's id.
    Twin,
}

/// Refreshes the registration's TTL and the roster entry (restored if someone removed it).
async fn refresh(link: &Link, info: &NodeInfo) -> Result<Registration, String> {
    let text = serde_json::to_string(info).map_err(|e| e.to_string())?;
    let script = redis::Script::new(REFRESH_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(link.keys.node(&info.id))
        .key(link.keys.roster())
        .arg(text)
        .arg(ttl_ms(link))
        .arg(&info.id);
    let answer: String = link
        .bounded(invocation.invoke_async(&mut link.redis.get()))
        .await?;
    Ok(match answer.as_str() {
        "1" => Registration::Refreshed,
        "0" => Registration::Vanished,
        other => {
            // The younger twin gives way; the older takes its registration back.
            let twin: Option<NodeInfo> = serde_json::from_str(other).ok();
            let older = twin.is_some_and(|t| {
                (info.birthdate, &info.incarnation) < (t.birthdate, &t.incarnation)
            });
            if older {
                if !register(link, info).await? {
                    return Ok(Registration::Vanished);
                }
                Registration::Refreshed
            } else {
                Registration::Twin
            }
        }
    })
}

/// Roster members and whether each is alive (its registration exists).
async fn roster(link: &Link) -> Result<Vec<(NodeInfo, bool)>, String> {
    let entries: Vec<(String, String)> = link
        .bounded(link.redis.get().hgetall(link.keys.roster()))
        .await?;
    let nodes: Vec<NodeInfo> = entries
        .into_iter()
        .filter_map(|(_, text)| serde_json::from_str(&text).ok())
        .collect();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.exists(link.keys.node(&node.id));
    }
    let alive: Vec<bool> = link
        .bounded(pipe.query_async(&mut link.redis.get()))
        .await?;
    Ok(nodes.into_iter().zip(alive).collect())
}

async fn evict_dead(
    cluster: &SharedBus,
    link: &Link,
    nodes: Vec<(NodeInfo, bool)>,
) -> Result<(), String> {
    for (node, alive) in nodes {
        if alive || node.id == **cluster.node_id() {
            continue;
        }
        // Checked and removed in one step: one node evicts, and not one that came back.
        let Some(rooms) = cluster.rooms.evict(link, &node.id).await? else {
            continue;
        };
        log_activity(link, event(&node, "evicted", Some("heartbeat timeout"))).await?;
        log::warn!(
            "[CLUSTER] node {} evicted (heartbeat timeout); its counts in {rooms} room(s) removed",
            node.id
        );
    }
    Ok(())
}

pub async fn refresh_alive(cluster: &SharedBus, link: &Link) {
    match roster(link).await {
        Ok(nodes) => set_alive(cluster, &nodes),
        Err(reason) => link.health.down(&reason),
    }
}

fn set_alive(cluster: &SharedBus, nodes: &[(NodeInfo, bool)]) {
    cluster.rooms.set_dead(
        nodes
            .iter()
            .filter(|(node, alive)| !alive && node.id != **cluster.node_id())
            .map(|(node, _)| node.id.clone())
            .collect(),
    );
    let alive = nodes.iter().filter(|(_, alive)| *alive).count().max(1);
    let before = cluster.alive();
    cluster.set_alive(alive);
    if alive != before && !cluster.has_enough_nodes() {
        log::warn!(
            "[CLUSTER] {alive} node(s) alive, fewer than cluster.minimumNodes: requests get api.process.not_enough_nodes"
        );
    }
}

/// `cluster:status` from Redis.
pub async fn status(link: &Link) -> Result<Value, String> {
    let mut nodes: Vec<NodeInfo> = roster(link)
        .await?
        .into_iter()
        .filter(|(_, alive)| *alive)
        .map(|(node, _)| node)
        .collect();
    nodes.sort_by(|a, b| a.birthdate.cmp(&b.birthdate).then(a.id.cmp(&b.id)));
    let activity: Vec<String> = link
        .bounded(link.redis.get().lrange(
            link.keys.activity(),
            0,
            link.activity_depth.saturating_sub(1) as isize,
        ))
        .await?;
    let activity: Vec<Value> = activity
        .iter()
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect();
    Ok(json!({
        "activeNodes": nodes.len(),
        "activity": activity,
        "nodes": nodes.iter().map(describe).collect::<Vec<_>>(),
    }))
}

/// How often a node writes its figures for the dashboard.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// Writes this node's figures (JSON text from `figures`) every second, with a TTL of a few
/// seconds so that a dead node's vanish, until the node leaves or `figures` has none.
pub async fn share_figures(cluster: Arc<SharedBus>, figures: Box<dyn Fn() -> Option<String>>) {
    let link = cluster.link.clone();
    let ttl = (ttl_ms(&link)).max(3 * SNAPSHOT_INTERVAL.as_millis() as u64);
    let key = link.keys.node_metrics(cluster.node_id());
    let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if cluster.is_leaving() {
            return;
        }
        if !link.health.is_up() {
            continue;
        }
        let Some(snapshot) = figures() else {
            return;
        };
        let written = link
            .bounded(
                link.redis
                    .get()
                    .pset_ex::<_, _, ()>(key.clone(), snapshot, ttl),
            )
            .await;
        if let Err(reason) = written {
            link.health.down(&reason);
        }
    }
}

/// The latest figures of every live node (the dashboard's `cluster:metrics`).
pub async fn snapshots(link: &Link) -> Result<Vec<Value>, String> {
    let alive: Vec<String> = roster(link)
        .await?
        .into_iter()
        .filter(|(_, alive)| *alive)
        .map(|(node, _)| link.keys.node_metrics(&node.id))
        .collect();
    if alive.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<Option<String>> = link
        .bounded(
            redis::cmd("MGET")
                .arg(&alive)
                .query_async(&mut link.redis.get()),
        )
        .await?;
    Ok(texts
        .into_iter()
        .flatten()
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect())
}

/// The rooms that live nodes other than `me` have counts in.
pub async fn rooms_of_other_nodes(link: &Link, me: &str) -> Result<Vec<String>, String> {
    let others: Vec<NodeInfo> = roster(link)
        .await?
        .into_iter()
        .filter(|(node, alive)| *alive && node.id != me)
        .map(|(node, _)| node)
        .collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for node in &others {
        pipe.smembers(link.keys.node_rooms(&node.id));
    }
    let sets: Vec<Vec<String>> = link
        .bounded(pipe.query_async(&mut link.redis.get()))
        .await?;
    Ok(sets.into_iter().flatten().collect())
}

/// A room's index, collection and filter, when some node has it.
pub async fn room(link: &Link, room_id: &str) -> Option<(String, String, Value)> {
    let fields: (Option<String>, Option<String>, Option<String>) = link
        .bounded(
            redis::cmd("HMGET")
                .arg(link.keys.room(room_id))
                .arg("index")
                .arg("collection")
                .arg("filter")
                .query_async(&mut link.redis.get()),
        )
        .await
        .ok()?;
    let (Some(index), Some(collection), Some(filter)) = fields else {
        return None;
    };
    Some((index, collection, serde_json::from_str(&filter).ok()?))
}

/// The node leaves: registration, roster entry and counts removed, `evicted` logged.
pub async fn leave(link: &Link, rooms: &RoomSync, info: &NodeInfo) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .del(link.keys.node(&info.id))
        .ignore()
        .del(link.keys.node_metrics(&info.id))
        .ignore()
        .hdel(link.keys.roster(), &info.id)
        .ignore();
    link.bounded(pipe.query_async::<()>(&mut link.redis.get()))
        .await?;
    rooms.forget_node(link, &info.id).await?;
    log_activity(link, event(info, "evicted", Some("Node is shutting down"))).await?;
    log::info!("[CLUSTER] node {} left the cluster", info.id);
    Ok(())
}
