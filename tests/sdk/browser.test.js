// kuzzle-sdk's browser bundle in headless Chromium (Debian's `chromium`, driven by
// playwright-core): the cookie mode from a page of another origin (PROTOCOL.md §6.4), and
// the dashboard before the first administrator exists.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { chromium } = require("playwright-core");
const { Kuzzle, WebSocket } = require("kuzzle-sdk");
const { startNode } = require("./node");

const CHROMIUM = process.env.CHROMIUM_BIN || ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));
const BUNDLE = path.join(__dirname, "node_modules/kuzzle-sdk/dist/kuzzle.js");

/** An application's origin: a page that loads the SDK's browser bundle. */
function appServer() {
  const server = http.createServer((req, res) => {
    if (req.url === "/kuzzle.js") {
      res.writeHead(200, { "Content-Type": "text/javascript" });
      res.end(fs.readFileSync(BUNDLE));
    } else {
      res.writeHead(200, { "Content-Type": "text/html" });
      // The bundle reads process.env.NODE_ENV, which an application's bundler defines.
      res.end(
        '<!doctype html><html><head><script>window.process = { env: { NODE_ENV: "production" } };</script>' +
          '<script src="/kuzzle.js"></script></head><body>app</body></html>',
      );
    }
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` })),
  );
}

/**
 * In the page: the SDK in cookie mode (its Http protocol: kuzzle-sdk 7.17.1's WebSocket
 * protocol rejects its own login in cookie mode, as it clears its pending requests when it
 * closes the socket to log in over HTTP) logs in and asks who it is; then a WebSocket opened
 * by the page, whose handshake carries the cookie, asks the same.
 */
function cookieLogin(page, port) {
  return page.evaluate(async (port) => {
    const kuzzle = new KuzzleSDK.Kuzzle(new KuzzleSDK.Http("127.0.0.1", { port }), { cookieAuth: true });
    try {
      await kuzzle.connect();
      await kuzzle.auth.login("local", { username: "admin", password: "browser" });
      const me = await kuzzle.auth.getCurrentUser();
      const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
      const overSocket = await new Promise((resolve, reject) => {
        socket.onopen = () => socket.send(JSON.stringify({ controller: "auth", action: "getCurrentUser", requestId: "me" }));
        socket.onmessage = (event) => resolve(JSON.parse(event.data).result._id);
        socket.onerror = () => reject(new Error("socket error"));
      });
      socket.close();
      return { id: me._id, overSocket, jwt: kuzzle.jwt || null, cookieVisible: document.cookie.includes("authToken") };
    } catch (error) {
      return { error: error.id || String(error) };
    } finally {
      kuzzle.disconnect();
    }
  }, port);
}

test("the SDK's cookie mode works from a listed origin, and never from one allowed only through *", { skip: !CHROMIUM && "no chromium" }, async () => {
  const listed = await appServer();
  const other = await appServer();
  const node = await startNode({ kuzzle_http__accessControlAllowOrigin: `*json:["*", "${listed.origin}"]` });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  const admin = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port }));
  try {
    await admin.connect();
    await admin.security.createFirstAdmin("admin", { credentials: { local: { username: "admin", password: "browser" } } }, { reset: true });
    await admin.auth.login("local", { username: "admin", password: "browser" });

    const page = await browser.newPage();
    await page.goto(`${listed.origin}/`);
    const fromListed = await cookieLogin(page, node.port);
    assert.deepEqual(fromListed, { id: "admin", overSocket: "admin", jwt: null, cookieVisible: false }, "logged in by the HttpOnly cookie");

    const stranger = await browser.newPage();
    await stranger.goto(`${other.origin}/`);
    // The browser holds the cookie (same site): the node must ignore it from this origin.
    const anonymous = await stranger.evaluate(async (port) => {
      const kuzzle = new KuzzleSDK.Kuzzle(new KuzzleSDK.WebSocket("127.0.0.1", { port }));
      await kuzzle.connect();
      try {
        return (await kuzzle.auth.getCurrentUser())._id;
      } catch (error) {
        return error.id || String(error);
      } finally {
        kuzzle.disconnect();
      }
    }, node.port);
    assert.equal(anonymous, "-1", "the handshake's cookie is not honoured from a wildcard origin");
    // A cookie login from there, in a browser without cookies: the node answers
    // security.cookie.unsupported without Access-Control-Allow-Credentials, so the browser
    // withholds the answer from the page (the SDK sees a network error) and no cookie is set.
    const fresh = await browser.newContext();
    const strangerAlone = await fresh.newPage();
    await strangerAlone.goto(`${other.origin}/`);
    assert.deepEqual(await cookieLogin(strangerAlone, node.port), { error: "Error: Cannot connect to host. Is the host online?" });
    assert.deepEqual(await fresh.cookies(), []);
    await fresh.close();
    // The node still serves everyone.
    assert.equal(typeof (await admin.server.now()), "number");
  } finally {
    admin.disconnect();
    await browser.close();
    listed.server.close();
    other.server.close();
    await node.stop();
  }
});

test("before the first administrator, the dashboard says how to create one, and creates it", { skip: !CHROMIUM && "no chromium" }, async () => {
  const node = await startNode();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${node.port}/_dashboard`);
    await page.waitForSelector("#first-admin:has-text('No administrator exists yet')", { timeout: 10000 });
    const command = await page.textContent("#first-admin-command");
    assert.match(command, new RegExp(`^curl -X POST 'http://127\\.0\\.0\\.1:${node.port}/_createFirstAdmin/admin\\?reset'`));
    await page.fill("#admin-username", "root");
    await page.fill("#admin-password", "first one");
    await page.click("#first-admin button[type=submit]");
    await page.waitForSelector("#subtitle:has-text('logged in as root')", { timeout: 10000 });
    assert.equal(await page.isHidden("#first-admin"), true);

    const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port: node.port }));
    await kuzzle.connect();
    try {
      // Created with reset: anonymous callers lost their rights.
      await assert.rejects(kuzzle.server.now(), (e) => e.id === "security.rights.unauthorized");
      await kuzzle.auth.login("local", { username: "root", password: "first one" });
      assert.equal(await kuzzle.server.adminExists(), true);
    } finally {
      kuzzle.disconnect();
    }
    // Once it exists the page offers only the login.
    const asked = page.waitForResponse((r) => r.url().endsWith("/_adminExists"));
    await page.reload();
    await (await asked).finished();
    await page.evaluate(() => new Promise((r) => setTimeout(r, 0)));
    assert.equal(await page.isHidden("#first-admin"), true);
    assert.equal(await page.isVisible("#login"), true);
  } finally {
    await browser.close();
    await node.stop();
  }
});
