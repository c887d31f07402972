// One socket subscribes to N distinct rooms, then drops; prints how long the node takes to
// remove them, and the slowest /_now answered meanwhile. Needs `npm ci` in tests/sdk and a
// node started with kuzzle_limits__subscriptionsPerConnection=0:
//   node scripts/disconnect-measure.js <port> [N]
"use strict";
const path = require("path");
const WebSocket = require(path.join(__dirname, "../tests/sdk/node_modules/ws"));
const http = require("http");
const port = Number(process.argv[2]); const N = Number(process.argv[3] || 40000);
const query = (body) => new Promise((res, rej) => {
  const data = JSON.stringify(body);
  const t = process.hrtime.bigint();
  const req = http.request({ host: "127.0.0.1", port, path: "/_query", method: "POST", headers: { "Content-Type": "application/json" } }, (r) => {
    let out = ""; r.on("data", (c) => (out += c)); r.on("end", () => res({ ms: Number(process.hrtime.bigint() - t) / 1e6, body: JSON.parse(out) }));
  });
  req.on("error", rej); req.end(data);
});
(async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`);
  await new Promise((r) => ws.on("open", r));
  let pending = 0; let done;
  ws.on("message", () => { pending--; if (pending === 0 && done) done(); });
  for (let i = 0; i < N; i += 500) {
    const wait = new Promise((r) => (done = r));
    for (let j = i; j < Math.min(N, i + 500); j++) {
      pending++;
      ws.send(JSON.stringify({ controller: "realtime", action: "subscribe", index: "i", collection: "c", body: { range: { n: { gte: j, lt: j + 1 } } } }));
    }
    await wait; done = null;
  }
  const before = await query({ controller: "server", action: "metrics" });
  console.log("rooms before close:", before.body.result.realtime.rooms);
  const t0 = process.hrtime.bigint();
  ws.terminate();
  let worst = 0, samples = 0;
  for (;;) {
    const r = await query({ controller: "server", action: "now" });
    worst = Math.max(worst, r.ms); samples++;
    const m = await query({ controller: "server", action: "metrics" });
    if (m.body.result.realtime.rooms === 0) break;
  }
  console.log(`all ${N} rooms gone after ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms; ${samples} /_now meanwhile, slowest ${worst.toFixed(2)} ms`);
  process.exit(0);
})();
