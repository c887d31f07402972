// permessage-deflate against Node's `ws` client (its own, independent implementation),
// and kuzzle-sdk (which never offers it) on a node that has compression on.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");
const { Kuzzle, WebSocket: SdkWebSocket } = require("kuzzle-sdk");
const { startNode } = require("./node");

const COMPRESSION_ON = { kuzzle_server__protocols__websocket__compression: "true" };

/** An open `ws` socket whose messages are parsed and queued. */
function open(port, perMessageDeflate) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate });
  const queue = [];
  const waiters = [];
  ws.on("message", (data) => {
    const message = { json: JSON.parse(data.toString()), length: data.length };
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else queue.push(message);
  });
  ws.next = (ms = 5000) =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no message in time")), ms);
          waiters.push((message) => {
            clearTimeout(timer);
            resolve(message);
          });
        });
  ws.request = async (body) => {
    ws.send(JSON.stringify(body));
    for (;;) {
      const message = await ws.next();
      if (message.json.requestId === body.requestId) return message.json;
    }
  };
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

/** The parameters of the server's answer, as ws parsed them. */
function agreed(ws) {
  return { ...ws._extensions["permessage-deflate"].params };
}

/** Bytes read from the TCP socket while `action` runs. */
async function bytesOnTheWire(ws, action) {
  const before = ws._socket.bytesRead;
  const result = await action();
  return { bytes: ws._socket.bytesRead - before, result };
}

function bigDocument(seq) {
  const rows = [];
  for (let i = 0; i < 300; i++) {
    rows.push({ sensor: `sensor-${i}`, temperature: 20 + (i % 7), unit: "celsius", ok: true });
  }
  return { seq, rows };
}

test("ws negotiates permessage-deflate, sends compressed requests and gets compressed notifications", async () => {
  const node = await startNode(COMPRESSION_ON);
  try {
    const subscriber = await open(node.port, true);
    const publisher = await open(node.port, true);
    assert.equal(subscriber.extensions, "permessage-deflate");
    assert.deepEqual(agreed(subscriber), { server_no_context_takeover: true });

    const subscribed = await subscriber.request({
      controller: "realtime", action: "subscribe", index: "i", collection: "c",
      body: {}, requestId: "sub",
    });
    assert.equal(subscribed.status, 200);

    // Small answers (under compressionThreshold) travel as they are.
    const now = await bytesOnTheWire(subscriber, () =>
      subscriber.request({ controller: "server", action: "now", requestId: "now" }),
    );
    assert.equal(now.result.status, 200);
    const plainLength = Buffer.byteLength(JSON.stringify(now.result));
    assert.ok(now.bytes >= plainLength, `${now.bytes} bytes for ${plainLength}`);

    // ws compresses the large publishes (over its own 1 KiB threshold), keeping its
    // context between them; the node inflates both.
    for (const seq of [0, 1]) {
      const published = await publisher.request({
        controller: "realtime", action: "publish", index: "i", collection: "c",
        body: bigDocument(seq), requestId: `pub-${seq}`,
      });
      assert.equal(published.status, 200, JSON.stringify(published));
    }
    const received = await bytesOnTheWire(subscriber, async () => [
      await subscriber.next(),
      await subscriber.next(),
    ]);
    let jsonLength = 0;
    for (const [seq, notification] of received.result.entries()) {
      const { rows, seq: got } = notification.json.result._source;
      assert.deepEqual({ seq: got, rows }, bigDocument(seq));
      jsonLength += notification.length;
    }
    assert.ok(
      received.bytes * 5 < jsonLength,
      `${received.bytes} bytes on the wire for ${jsonLength} bytes of JSON`,
    );
    subscriber.close();
    publisher.close();
  } finally {
    await node.stop();
  }
});

test("ws with client_no_context_takeover and a 9-bit server window", async () => {
  const node = await startNode(COMPRESSION_ON);
  try {
    const ws = await open(node.port, { clientNoContextTakeover: true, serverMaxWindowBits: 9 });
    assert.deepEqual(agreed(ws), {
      server_no_context_takeover: true,
      client_no_context_takeover: true,
      server_max_window_bits: 9,
    });
    await ws.request({
      controller: "realtime", action: "subscribe", index: "i", collection: "c",
      body: {}, requestId: "sub",
    });
    const publisher = await open(node.port, true);
    for (const seq of [0, 1, 2]) {
      const published = await publisher.request({
        controller: "realtime", action: "publish", index: "i", collection: "c",
        body: bigDocument(seq), requestId: `pub-${seq}`,
      });
      assert.equal(published.status, 200);
    }
    for (const seq of [0, 1, 2]) {
      const { rows, seq: got } = (await ws.next()).json.result._source;
      assert.deepEqual({ seq: got, rows }, bigDocument(seq));
    }
    ws.close();
    publisher.close();
  } finally {
    await node.stop();
  }
});

test("clients that do not compress, and nodes that do not, still work", async () => {
  const on = await startNode(COMPRESSION_ON);
  const off = await startNode();
  try {
    const plainClient = await open(on.port, false);
    assert.equal(plainClient.extensions, "");
    assert.equal((await plainClient.request({ controller: "server", action: "now", requestId: "a" })).status, 200);
    plainClient.close();

    const offering = await open(off.port, true);
    assert.equal(offering.extensions, "");
    const big = await offering.request({
      controller: "realtime", action: "publish", index: "i", collection: "c",
      body: bigDocument(0), requestId: "big",
    });
    assert.equal(big.status, 200);
    offering.close();

    // kuzzle-sdk turns permessage-deflate off in Node.
    const kuzzle = new Kuzzle(new SdkWebSocket("127.0.0.1", { port: on.port }));
    await kuzzle.connect();
    assert.equal(typeof (await kuzzle.server.now()), "number");
    kuzzle.disconnect();
  } finally {
    await on.stop();
    await off.stop();
  }
});
