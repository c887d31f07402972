// Users and tokens with the official kuzzle-sdk against a real kuzzle-rt node.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { Kuzzle, WebSocket } = require("kuzzle-sdk");
const { startNode } = require("./node");

const credentials = { username: "ada", password: "correct horse battery" };

async function client(port) {
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port }), { reconnectionDelay: 200 });
  await kuzzle.connect();
  return kuzzle;
}

test("createFirstAdmin, login, checkToken, getCurrentUser, logout", async () => {
  const node = await startNode();
  const kuzzle = await client(node.port);
  try {
    assert.equal(await kuzzle.server.adminExists(), false);
    const admin = await kuzzle.security.createFirstAdmin("ada", { content: { name: "Ada" }, credentials: { local: credentials } });
    assert.equal(admin._id, "ada");

    const jwt = await kuzzle.auth.login("local", credentials, "1h");
    assert.match(jwt, /^kauth-/);
    assert.equal(kuzzle.jwt, jwt);
    const check = await kuzzle.auth.checkToken();
    assert.equal(check.valid, true);
    assert.equal(check.kuid, "ada");
    const me = await kuzzle.auth.getCurrentUser();
    assert.equal(me._id, "ada");
    assert.equal(me.content.name, "Ada");
    assert.deepEqual(me.content.profileIds, ["admin"]);

    // Another connection: logins are limited to one per second per connection.
    const other = await client(node.port);
    await assert.rejects(other.auth.login("local", { username: "ada", password: "nope" }), (err) => {
      assert.equal(err.id, "plugin.strategy.missing_user");
      assert.equal(err.message, "wrong username or password");
      return true;
    });
    other.disconnect();

    await kuzzle.auth.logout();
    assert.equal(kuzzle.jwt, null);
    const after = await kuzzle.auth.checkToken(jwt);
    assert.equal(after.valid, false);
  } finally {
    kuzzle.disconnect();
    await node.stop();
  }
});

test("an expiring token fires the SDK's tokenExpired event", async () => {
  const node = await startNode();
  const kuzzle = await client(node.port);
  try {
    await kuzzle.security.createFirstAdmin("ada", { credentials: { local: credentials } });
    await kuzzle.auth.login("local", credentials, "2s");
    const expired = new Promise((resolve) => kuzzle.once("tokenExpired", resolve));
    await kuzzle.realtime.subscribe("i", "c", {}, () => {});
    const started = Date.now();
    await expired;
    assert.ok(Date.now() - started < 5000);
    assert.equal(kuzzle.jwt, null);
  } finally {
    kuzzle.disconnect();
    await node.stop();
  }
});

test("a node restarted on its embedded store still accepts the token and the user", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kuzzle-rt-sdk-restart-"));
  try {
    const first = await startNode({}, dir);
    const kuzzle = await client(first.port);
    await kuzzle.security.createFirstAdmin("ada", { credentials: { local: credentials } });
    const jwt = await kuzzle.auth.login("local", credentials, "1h");
    kuzzle.disconnect();
    assert.equal(await first.stop(), 0);

    const second = await startNode({}, dir);
    const again = await client(second.port);
    try {
      const check = await again.auth.checkToken(jwt);
      assert.equal(check.valid, true, "tokens outlive restarts");
      again.jwt = jwt;
      assert.equal((await again.auth.getCurrentUser())._id, "ada");
    } finally {
      again.disconnect();
      await second.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("cookie flow: HTTP login sets authToken, a WebSocket opened with it is authenticated", async () => {
  const node = await startNode();
  const setup = await client(node.port);
  try {
    await setup.security.createFirstAdmin("ada", { credentials: { local: credentials } }, { reset: true });
    const response = await fetch(`http://127.0.0.1:${node.port}/_login/local?cookieAuth`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(credentials),
    });
    const body = await response.json();
    assert.equal(body.result.jwt, undefined, "no jwt in cookie mode");
    const setCookie = response.headers.get("set-cookie");
    assert.match(setCookie, /^authToken=kauth-[^;]+; Path=\/; Expires=[^;]+ GMT; HttpOnly; SameSite=Strict$/);
    const cookie = setCookie.split(";")[0];

    // What a browser does: the handshake carries the cookie (Node's ws can send it).
    const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port, headers: { Cookie: cookie } }));
    await kuzzle.connect();
    try {
      const check = await kuzzle.query({ controller: "auth", action: "checkToken", cookieAuth: true });
      assert.equal(check.result.valid, true);
      assert.equal(check.result.kuid, "ada");
      const me = await kuzzle.auth.getCurrentUser();
      assert.equal(me._id, "ada");
      // Under the standard rights only an authenticated admin may read metrics.
      const metrics = await kuzzle.query({ controller: "server", action: "metrics" });
      assert.equal(metrics.status, 200);
    } finally {
      kuzzle.disconnect();
    }
  } finally {
    setup.disconnect();
    await node.stop();
  }
});

test("refreshToken keeps the socket working past the old token's expiry", async () => {
  const node = await startNode();
  const kuzzle = await client(node.port);
  try {
    await kuzzle.security.createFirstAdmin("ada", { credentials: { local: credentials } });
    const first = await kuzzle.auth.login("local", credentials, "2s");
    let expired = false;
    kuzzle.on("tokenExpired", () => (expired = true));
    const received = [];
    await kuzzle.realtime.subscribe("i", "c", {}, (n) => received.push(n));
    const refreshed = await kuzzle.auth.refreshToken({ expiresIn: "1h" });
    assert.notEqual(refreshed.jwt, first);
    assert.equal(kuzzle.jwt, refreshed.jwt);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal(expired, false, "no tokenExpired: the socket moved to the new token");
    assert.equal((await kuzzle.auth.checkToken()).valid, true);
    await kuzzle.realtime.publish("i", "c", { after: "refresh" });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(received.length, 1, "the subscription survived");
  } finally {
    kuzzle.disconnect();
    await node.stop();
  }
});
