//! The bus of a node alone (embedded store, or `cluster.enabled: false`): a one-node
//! cluster, where nothing leaves the node and every answer is local.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures_util::future::{LocalBoxFuture, ready};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::rooms::{Remote, RemoteRoom};
use super::wire::BusMessage;
use super::{Bus, ChannelHold, NodeInfo, Queued, Refused, StoreState, Upstream, membership};
use crate::config::Settings;

pub struct Alone {
    node_id: Arc<str>,
    info: OnceLock<NodeInfo>,
    leaving: AtomicBool,
    /// The activity log (`cluster:status`), newest first.
    activity: Mutex<VecDeque<Value>>,
    activity_depth: usize,
    minimum_nodes: usize,
}

impl Alone {
    pub fn new(settings: &Settings) -> Alone {
        Alone {
            node_id: Arc::from(crate::names::random_name("knode")),
            info: OnceLock::new(),
            leaving: AtomicBool::new(false),
            activity: Mutex::new(VecDeque::new()),
            activity_depth: settings.cluster.activity_depth as usize,
            minimum_nodes: settings.cluster.minimum_nodes as usize,
        }
    }
}

impl Bus for Alone {
    fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    fn start(
        &self,
        bound: SocketAddr,
        _: Weak<dyn Upstream>,
        _: StoreState,
    ) -> LocalBoxFuture<'_, Result<(), String>> {
        let info = NodeInfo::new(&self.node_id, bound);
        let mut log = self.activity.lock();
        log.push_front(membership::event(&info, "joined", None));
        log.truncate(self.activity_depth);
        drop(log);
        let _ = self.info.set(info);
        Box::pin(ready(Ok(())))
    }

    fn leave(&self) -> LocalBoxFuture<'_, ()> {
        self.leaving.store(true, Ordering::Release);
        Box::pin(ready(()))
    }

    fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    fn node_info(&self) -> Option<NodeInfo> {
        self.info.get().cloned()
    }

    fn alive(&self) -> usize {
        1
    }

    /// With `cluster.enabled: false` on Redis, `cluster.minimumNodes` above 1 is never met.
    fn has_enough_nodes(&self) -> bool {
        self.minimum_nodes <= 1
    }

    fn is_up(&self) -> bool {
        true
    }

    fn status(&self) -> LocalBoxFuture<'_, Result<Value, String>> {
        let nodes: Vec<&NodeInfo> = self.info.get().into_iter().collect();
        Box::pin(ready(Ok(json!({
            "activeNodes": nodes.len(),
            "activity": self.activity.lock().iter().cloned().collect::<Vec<_>>(),
            "nodes": nodes.iter().map(|n| membership::describe(n)).collect::<Vec<_>>(),
        }))))
    }

    fn snapshots(&self, mine: Value) -> LocalBoxFuture<'_, Result<Vec<Value>, String>> {
        Box::pin(ready(Ok(vec![mine])))
    }

    fn figures(&self) -> Value {
        json!({"nodes": 1, "bus": {"state": "standalone"}})
    }

    fn hold(&self, _: &str, _: &str) -> LocalBoxFuture<'static, ChannelHold> {
        Box::pin(ready(ChannelHold::none()))
    }

    fn release(&self, _: &str, _: &str) {}

    fn changed(&self, _: Vec<Arc<str>>) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }

    fn remote(&self, _: &str) -> Remote {
        Remote::default()
    }

    fn forget(&self, _: &str) {}

    fn send(&self, _: BusMessage) -> Result<Queued, Refused> {
        Ok(Queued::done())
    }

    fn remote_count<'a>(&'a self, _: &'a str) -> LocalBoxFuture<'a, usize> {
        Box::pin(ready(0))
    }

    fn remote_rooms(&self) -> LocalBoxFuture<'_, Arc<Vec<RemoteRoom>>> {
        Box::pin(ready(Arc::default()))
    }

    fn remote_room<'a>(
        &'a self,
        _: &'a str,
    ) -> LocalBoxFuture<'a, Option<(String, String, Value)>> {
        Box::pin(ready(None))
    }
}
