// The official kuzzle-sdk against a cluster of three nodes behind nginx (cluster/run).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Kuzzle, WebSocket } = require("kuzzle-sdk");
const { execFileSync } = require("node:child_process");
const { startCluster, sleep } = require("./node");

async function client(port) {
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port }), { reconnectionDelay: 200 });
  await kuzzle.connect();
  return kuzzle;
}

/** The id of the node a client's socket is on. */
async function nodeOf(kuzzle) {
  const response = await kuzzle.query({ controller: "server", action: "now" });
  return response.node;
}

/**
 * A subscriber through nginx and a publisher connected to another node directly (both
 * disconnected by the caller through `clients`).
 */
async function subscriberAndPublisher(cluster, clients) {
  const subscriber = await client(cluster.port);
  clients.push(subscriber);
  const home = await nodeOf(subscriber);
  const other = cluster.nodes.find((n) => n.id !== home);
  const publisher = await client(other.port);
  clients.push(publisher);
  assert.notEqual(await nodeOf(publisher), home);
  return { subscriber, publisher, home, other };
}

/** Polls `check` every 100 ms until it is true, for at most `ms`. */
async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await sleep(100);
  }
}

test("publisher and subscriber on different nodes; the subscriber's node dies and the SDK recovers through nginx", async () => {
  const cluster = await startCluster(3);
  const clients = [];
  try {
    assert.equal(cluster.nodes.length, 3);
    // The publisher talks to another node directly.
    const { subscriber, publisher, home, other } = await subscriberAndPublisher(cluster, clients);

    const received = [];
    await subscriber.realtime.subscribe("shop", "orders", { equals: { kind: "order" } }, (n) => received.push(n));
    await publisher.realtime.publish("shop", "orders", { kind: "order", n: 1 });
    await until(() => received.length === 1, 5000, "the first notification");
    assert.equal(received[0].result._source.n, 1);
    assert.equal(received[0].node, other.id, "published on the other node");

    // The subscriber's node is killed: the SDK reconnects through nginx to a live node,
    // resubscribes (same room id), and gets the next publish.
    let reconnected = false;
    subscriber.on("reconnected", () => (reconnected = true));
    process.kill(cluster.nodes.find((n) => n.id === home).pid, "SIGKILL");
    await until(() => reconnected, 15000, "the SDK reconnects");
    assert.notEqual(await nodeOf(subscriber), home, "now on another node");
    // The resubscription is sent right after the reconnection; publish until it is in.
    let n = 1;
    await until(
      async () => {
        n += 1;
        await publisher.realtime.publish("shop", "orders", { kind: "order", n });
        await sleep(100);
        return received.length > 1;
      },
      10000,
      "a notification after the reconnection",
    );
    assert.ok(received[1].result._source.n > 1);
  } finally {
    for (const c of clients) c.disconnect();
    await cluster.stop();
  }
});

/** `redis-cli` on one member of the Redis Cluster. */
function redisCli(port, ...args) {
  return execFileSync("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], { encoding: "utf8" });
}

test("on a Redis Cluster: a master holding the collection's channel is killed mid-stream; the SDK subscriber gets every message once, in order", async () => {
  const cluster = await startCluster(3, 500, { redisCluster: true });
  const clients = [];
  try {
    assert.equal(cluster.redis.length, 6);
    const { subscriber, publisher, home } = await subscriberAndPublisher(cluster, clients);

    const received = [];
    await subscriber.realtime.subscribe("shop", "orders", {}, (n) => received.push(n.result._source.n));
    // The master that owns the channel's slot (the replicas are in sync: cluster/run waits).
    const channel = "krt/cluster/{c:shop/orders}/notify";
    const owner = cluster.redis.find((r) => redisCli(r.port, "PUBSUB", "SHARDCHANNELS").split("\n").includes(channel));
    assert.ok(owner, "a master holds the channel");

    const total = 300;
    for (let n = 0; n < total; n++) {
      if (n === 50) process.kill(owner.pid, "SIGKILL");
      // Answered once Redis holds it, or once it waits for Redis (retain queue).
      await publisher.realtime.publish("shop", "orders", { n });
      await sleep(10);
    }
    await until(() => received.length >= total, 30000, `every message (got ${received.length})`);
    await sleep(500);
    assert.deepEqual(received, [...Array(total).keys()], "once each, in order");
    assert.equal(await nodeOf(subscriber), home, "the subscriber's socket never moved");
    const masters = cluster.redis.filter((r) => r.pid !== owner.pid && /role:master/.test(redisCli(r.port, "INFO", "replication")));
    assert.equal(masters.length, 3, "a replica took over");
  } finally {
    for (const c of clients) c.disconnect();
    await cluster.stop();
  }
});
