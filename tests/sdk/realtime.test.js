// Realtime with the official kuzzle-sdk against a real kuzzle-rt node.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Kuzzle, WebSocket } = require("kuzzle-sdk");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { startNode, sleep } = require("./node");

/** Resolves with the next value pushed into the returned `push`. */
function inbox() {
  const items = [];
  const waiters = [];
  return {
    push(item) {
      const waiter = waiters.shift();
      if (waiter) waiter(item);
      else items.push(item);
    },
    next(ms = 5000) {
      if (items.length) return Promise.resolve(items.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no notification in time")), ms);
        waiters.push((item) => {
          clearTimeout(timer);
          resolve(item);
        });
      });
    },
    get size() {
      return items.length;
    },
  };
}

async function client(port, options = {}) {
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port }), { reconnectionDelay: 200, ...options });
  await kuzzle.connect();
  return kuzzle;
}

test("subscribe, publish, count, unsubscribe", async () => {
  const node = await startNode();
  const subscriber = await client(node.port);
  const publisher = await client(node.port);
  try {
    const received = inbox();
    const roomId = await subscriber.realtime.subscribe("shop", "orders", { range: { total: { gte: 100 } } }, (n) => received.push(n));
    assert.match(roomId, /^[0-9a-f]{64}$/);

    assert.equal(await publisher.realtime.publish("shop", "orders", { total: 150, item: "lamp" }, { _id: "o-1" }), true);
    await publisher.realtime.publish("shop", "orders", { total: 5, item: "pen" });
    const n = await received.next();
    assert.equal(n.type, "document");
    assert.equal(n.action, "publish");
    assert.equal(n.event, "publish");
    assert.equal(n.scope, "in");
    assert.equal(n.index, "shop");
    assert.equal(n.collection, "orders");
    assert.equal(n.result._id, "o-1");
    assert.equal(n.result._source.item, "lamp");
    assert.equal(n.result._source._kuzzle_info.author, "-1");
    assert.equal(n.volatile.sdkInstanceId, publisher.protocol.id);
    await sleep(200);
    assert.equal(received.size, 0, "the small order did not match");

    assert.equal(await subscriber.realtime.count(roomId), 1);
    await subscriber.realtime.unsubscribe(roomId);
    assert.equal(await publisher.realtime.count(roomId), 0);
    await publisher.realtime.publish("shop", "orders", { total: 500 });
    await sleep(200);
    assert.equal(received.size, 0, "nothing after unsubscribe");
  } finally {
    subscriber.disconnect();
    publisher.disconnect();
    await node.stop();
  }
});

test("subscribeToSelf: false drops our own publishes", async () => {
  const node = await startNode();
  const kuzzle = await client(node.port);
  const other = await client(node.port);
  try {
    const mine = inbox();
    await kuzzle.realtime.subscribe("i", "c", {}, (n) => mine.push(n), { subscribeToSelf: false });
    await kuzzle.realtime.publish("i", "c", { from: "self" });
    await other.realtime.publish("i", "c", { from: "other" });
    const n = await mine.next();
    assert.equal(n.result._source.from, "other");
    await sleep(200);
    assert.equal(mine.size, 0);
  } finally {
    kuzzle.disconnect();
    other.disconnect();
    await node.stop();
  }
});

test("user notifications with users: 'all'", async () => {
  const node = await startNode();
  const watcher = await client(node.port);
  const visitor = await client(node.port);
  try {
    const events = inbox();
    const filter = { equals: { channel: "lobby" } };
    const roomId = await watcher.realtime.subscribe("chat", "messages", filter, (n) => events.push(n), { users: "all" });
    const visitorRoom = await visitor.realtime.subscribe("chat", "messages", filter, () => {}, { volatile: { nick: "ada" } });
    assert.equal(visitorRoom, roomId);
    const joined = await events.next();
    assert.equal(joined.type, "user");
    assert.equal(joined.user, "in");
    assert.equal(joined.result.count, 2);
    assert.equal(joined.volatile.nick, "ada");
    await visitor.realtime.unsubscribe(visitorRoom);
    const left = await events.next();
    assert.equal(left.user, "out");
    assert.equal(left.result.count, 1);
    assert.equal(left.volatile.nick, "ada");
  } finally {
    watcher.disconnect();
    visitor.disconnect();
    await node.stop();
  }
});

test("after a node restart the SDK resubscribes to the same room and receives again", async () => {
  // A restart keeps the node's store, whose secret keys the room ids.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kuzzle-rt-sdk-restart-"));
  const first = await startNode({}, dir);
  const port = first.port;
  const kuzzle = await client(port);
  let second;
  try {
    const received = inbox();
    const roomId = await kuzzle.realtime.subscribe("i", "c", { equals: { a: 1 } }, (n) => received.push(n));

    const reconnected = new Promise((resolve) => kuzzle.once("reconnected", resolve));
    assert.equal(await first.stop(), 0);
    second = await startNode({ kuzzle_server__port: String(port) }, dir);
    await reconnected;

    // Resubscription happens right after "reconnected": wait until the room is back.
    const publisher = await client(port);
    let count = 0;
    for (let i = 0; i < 50 && count === 0; i++) {
      count = await publisher.realtime.count(roomId);
      if (count === 0) await sleep(100);
    }
    assert.equal(count, 1, "the SDK resubscribed with the same roomId");
    // kuzzle-sdk starts listening to the room's channel in a continuation of the
    // subscribe's answer: a notification read in the same chunk as that answer is emitted
    // before the listener exists (an SDK race, with Kuzzle too; seen twice in CI under
    // load). So publish until one arrives: the point is that the resubscribed room receives.
    for (let i = 0; i < 50 && received.size === 0; i++) {
      await publisher.realtime.publish("i", "c", { a: 1, after: "restart", i });
      await sleep(100);
    }
    const n = await received.next();
    assert.equal(n.result._source.after, "restart");
    publisher.disconnect();
  } finally {
    kuzzle.disconnect();
    if (second) await second.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
