// The dashboard page (GET /_dashboard) in headless Chromium (Debian's `chromium`, driven by
// playwright-core), through nginx in front of a three-node cluster (cluster/run).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { chromium } = require("playwright-core");
const { Kuzzle, WebSocket } = require("kuzzle-sdk");
const { startCluster, sleep } = require("./node");

const CHROMIUM = process.env.CHROMIUM_BIN || ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));

async function client(port) {
  const kuzzle = new Kuzzle(new WebSocket("127.0.0.1", { port }), { reconnectionDelay: 200 });
  await kuzzle.connect();
  return kuzzle;
}

/** A client logged in as the administrator (anonymous may do nothing once one exists). */
async function adminClient(port) {
  const kuzzle = await client(port);
  await kuzzle.auth.login("local", { username: "admin", password: "dashboard" });
  return kuzzle;
}

test("an administrator sees every node, the deliveries moving, and a killed node leaving", { skip: !CHROMIUM && "no chromium" }, async () => {
  const cluster = await startCluster(3);
  const clients = [];
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const admin = await client(cluster.port);
    clients.push(admin);
    await admin.security.createFirstAdmin("admin", { credentials: { local: { username: "admin", password: "dashboard" } } }, { reset: true });
    await admin.auth.login("local", { username: "admin", password: "dashboard" });
    await admin.security.createUser("bob", {
      content: { profileIds: ["default"] },
      credentials: { local: { username: "bob", password: "builder" } },
    });

    const page = await browser.newPage({ viewport: { width: 1400, height: 600 } });
    const pageLog = [];
    page.on("console", (m) => pageLog.push(m.text()));
    page.on("pageerror", (e) => pageLog.push(String(e)));
    const url = `http://127.0.0.1:${cluster.port}/_dashboard`;

    // Not an administrator: the documented 403, said on the page.
    await page.goto(url);
    await page.fill("#username", "bob");
    await page.fill("#password", "builder");
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#message:has-text('security.rights.forbidden')", { timeout: 10000 });

    await page.fill("#username", "admin");
    await page.fill("#password", "dashboard");
    await page.click("#login button[type=submit]");
    await page
      .waitForFunction(() => document.querySelectorAll("#nodes tr").length === 3, null, { timeout: 15000 })
      .catch(async (e) => {
        throw new Error(`${e.message}; message: ${await page.textContent("#message")}; console: ${pageLog.join(" | ")}`);
      });
    const shown = await page.$$eval("#nodes tr", (rows) => rows.map((r) => r.dataset.node).sort());
    assert.deepEqual(shown, cluster.nodes.map((n) => n.id).sort());

    // A subscriber on one node, a publisher running: its deliveries counter moves.
    const home = cluster.nodes[0];
    const subscriber = await adminClient(home.port);
    clients.push(subscriber);
    await subscriber.realtime.subscribe("dash", "board", {}, () => {});
    const deliveries = () =>
      page.$eval(`#nodes tr[data-node="${home.id}"] td[data-field=deliveries]`, (td) => Number(td.textContent));
    const before = await deliveries();
    const publisher = await adminClient(cluster.nodes[1].port);
    clients.push(publisher);
    let publishing = true;
    const running = (async () => {
      while (publishing) {
        await publisher.realtime.publish("dash", "board", { at: Date.now() });
        await sleep(20);
      }
    })();
    const deadline = Date.now() + 15000;
    while ((await deliveries()) <= before) {
      assert.ok(Date.now() < deadline, "the deliveries counter never moved");
      await sleep(200);
    }
    publishing = false;
    await running;
    if (process.env.DASHBOARD_SCREENSHOT) {
      await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
    }

    // A node killed: it leaves the page once its registration expires.
    const victim = cluster.nodes[2];
    process.kill(victim.pid, "SIGKILL");
    await page.waitForFunction(
      (id) => document.querySelectorAll("#nodes tr").length === 2 && !document.querySelector(`#nodes tr[data-node="${id}"]`),
      victim.id,
      { timeout: 20000 },
    );
  } finally {
    await browser.close();
    for (const c of clients) c.disconnect();
    await cluster.stop();
  }
});
