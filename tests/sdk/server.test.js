// The official kuzzle-sdk against a real kuzzle-rt node.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Kuzzle, WebSocket, Http } = require("kuzzle-sdk");
const { startNode, sleep } = require("./node");

test("connect, server actions, disconnect over WebSocket", async () => {
  const node = await startNode();
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port }));
  try {
    await kuzzle.connect();
    assert.equal(kuzzle.connected, true);

    const now = await kuzzle.server.now();
    assert.equal(typeof now, "number");
    assert.ok(Math.abs(now - Date.now()) < 60000);

    const info = await kuzzle.server.info();
    assert.equal(info.serverInfo.kuzzle.version, "2.56.0");
    assert.equal(info.serverInfo.kuzzle.implementation.name, "kuzzle-rt");
    assert.ok(info.serverInfo.kuzzle.api.routes.server.now);

    const health = await kuzzle.query({ controller: "server", action: "healthCheck" });
    assert.deepEqual(health.result, {
      status: "green",
      services: { internalCache: "green", memoryStorage: "green", storageEngine: "green" },
    });

    // Kuzzle's deprecated statistics: before the first snapshot, this node's counts.
    const last = await kuzzle.server.getLastStats();
    assert.equal(typeof last.completedRequests.websocket, "number");
    assert.ok(last.completedRequests.websocket >= 2, "the requests above");
    const all = await kuzzle.server.getAllStats();
    assert.equal(all.total, all.hits.length);
    const range = await kuzzle.server.getStats(Date.now() + 60000, Date.now() + 120000);
    assert.deepEqual(range, { hits: [], total: 0 }, "nothing taken in the future");

    const config = await kuzzle.server.getConfig();
    assert.equal(config.version, "2.56.0");
    assert.equal(config.security, undefined);

    // A raw query with a volatile gets it back unchanged.
    const res = await kuzzle.query({ controller: "server", action: "now", volatile: { mine: [1, 2] } });
    assert.deepEqual(res.volatile.mine, [1, 2]);
    assert.match(res.volatile.sdkName, /^js@7\./);

    // An unknown action rejects with the server's error.
    await assert.rejects(kuzzle.query({ controller: "server", action: "nope" }), (err) => {
      assert.equal(err.id, "api.process.action_not_found");
      assert.equal(err.status, 404);
      return true;
    });

    // SDK 7.17.1 removes its listeners inside disconnect(), so no "disconnected" event
    // fires: check the SDK's state and that the node saw the socket go.
    kuzzle.disconnect();
    assert.equal(kuzzle.connected, false);
    const http = new Kuzzle(new Http("127.0.0.1", { port: node.port }));
    await http.connect();
    let websockets = -1;
    for (let i = 0; i < 50 && websockets !== undefined; i++) {
      const metrics = await http.query({ controller: "server", action: "metrics" });
      websockets = metrics.result.network.connections.websocket;
      if (websockets !== undefined) await sleep(50);
    }
    assert.equal(websockets, undefined, "no WebSocket left in the node's metrics");
    http.disconnect();
  } finally {
    kuzzle.disconnect();
    assert.equal(await node.stop(), 0);
  }
});

test("a connection stays open through several ping intervals with a short idleTimeout", async () => {
  const node = await startNode({ kuzzle_server__protocols__websocket__idleTimeout: "3000" });
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port }));
  let drops = 0;
  kuzzle.on("networkError", () => drops++);
  kuzzle.on("disconnected", () => drops++);
  try {
    await kuzzle.connect();
    // The SDK pings every 2 s; its pings are activity, so the 3 s idle timeout never fires.
    await sleep(7000);
    assert.equal(drops, 0);
    assert.equal(kuzzle.connected, true);
    assert.equal(typeof (await kuzzle.server.now()), "number");
  } finally {
    kuzzle.disconnect();
    await node.stop();
  }
});

test("an idle SDK is closed with a code it reconnects after", async () => {
  const node = await startNode({ kuzzle_server__protocols__websocket__idleTimeout: "1000" });
  // No pings for a minute: the socket goes idle.
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port, pingInterval: 60000 }), {
    reconnectionDelay: 200,
  });
  try {
    await kuzzle.connect();
    const dropped = new Promise((resolve) => kuzzle.once("networkError", resolve));
    const reconnected = new Promise((resolve) => kuzzle.once("reconnected", resolve));
    await dropped;
    await reconnected;
    assert.equal(typeof (await kuzzle.server.now()), "number");
  } finally {
    kuzzle.disconnect();
    await node.stop();
  }
});

test("the SDK's Http protocol uses the node's routes", async () => {
  const node = await startNode();
  const kuzzle = new Kuzzle(new Http("127.0.0.1", { port: node.port }));
  try {
    await kuzzle.connect();
    assert.equal(typeof (await kuzzle.server.now()), "number");
    const info = await kuzzle.server.info();
    assert.equal(info.serverInfo.kuzzle.version, "2.56.0");
  } finally {
    kuzzle.disconnect();
    await node.stop();
  }
});

test("a node restart closes sockets with 1001 and the SDK reconnects", async () => {
  const node = await startNode();
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port }), { reconnectionDelay: 200 });
  try {
    await kuzzle.connect();
    let closedByServer = false;
    kuzzle.on("networkError", () => (closedByServer = true));
    assert.equal(await node.stop(), 0);
    await sleep(300);
    assert.equal(closedByServer, true, "a 1001 close is a network error for the SDK, not a disconnect");
  } finally {
    kuzzle.disconnect();
  }
});
