// Starts the real kuzzle-rt binary for the SDK tests.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const BINARY = process.env.KUZZLE_RT_BIN || path.resolve(__dirname, "../../target/debug/kuzzle-rt");

/**
 * Starts a node on 127.0.0.1 and a free port, in `dir` (its embedded store is
 * `dir/data`), or in a fresh directory removed when the node stops.
 * `env` holds kuzzle_* overrides. Resolves to { port, dir, stop(), child }.
 */
function startNode(env = {}, dir = null) {
  const owned = dir === null;
  if (owned) dir = fs.mkdtempSync(path.join(os.tmpdir(), "kuzzle-rt-sdk-"));
  const child = spawn(BINARY, [], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      HOME: dir,
      RUST_LOG: "info",
      kuzzle_server__host: "127.0.0.1",
      kuzzle_server__port: "0",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node did not start:\n${log}`)), 10000);
    child.on("exit", (code) => reject(new Error(`node exited with ${code}:\n${log}`)));
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve({
          port: Number(match[1]),
          dir,
          child,
          log: () => log,
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null) return done(child.exitCode);
              child.removeAllListeners("exit");
              child.on("exit", (code) => {
                if (owned) fs.rmSync(dir, { recursive: true, force: true });
                done(code);
              });
              child.kill("SIGTERM");
            }),
        });
      }
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A free TCP port on 127.0.0.1 followed by `count - 1` free ones, below Linux's ephemeral
 * range (32768-60999): a port chosen there may be taken as the source port of an outgoing
 * connection (Redis Cluster members link to each other) before the node binds it.
 */
async function freePorts(count) {
  const net = require("node:net");
  const isFree = (port) =>
    new Promise((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 200; attempt++) {
    // 25000-32767: above the Redis Cluster members' ports and their bus ports
    // (cluster/run: 10000-14999 and 20000-24999).
    const base = 25000 + Math.floor(Math.random() * (7700 - count));
    const ports = Array.from({ length: count }, (_, i) => base + i);
    let free = true;
    for (const port of ports) if (!(await isFree(port))) free = false;
    if (free) return ports;
  }
  throw new Error("no free ports");
}

/**
 * Starts `cluster/run`: a redis-server (with `redisCluster`: a Redis Cluster of 3 masters
 * and 3 replicas), `nodes` nodes and nginx in front, all on 127.0.0.1. Resolves to
 * { port (nginx), nodes: [{id, pid, port}], redis: [{pid, port}], stop() }.
 */
async function startCluster(nodes = 3, heartbeat = 500, { redisCluster = false } = {}) {
  const [port, ...nodePorts] = await freePorts(nodes + 1);
  const script = path.resolve(__dirname, "../../cluster/run");
  const args = ["--nodes", String(nodes), "--port", String(port), "--first-node-port", String(nodePorts[0]), "--heartbeat", String(heartbeat), "--clean"];
  if (redisCluster) args.push("--redis-cluster");
  const child = spawn(
    script,
    args,
    { env: { ...process.env, KUZZLE_RT_BIN: BINARY }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stderr.on("data", (chunk) => (out += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cluster did not start:\n${out}`)), 30000);
    child.on("exit", (code) => reject(new Error(`cluster/run exited with ${code}:\n${out}`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (!/cluster ready on/.test(out)) return;
      clearTimeout(timer);
      const found = [...out.matchAll(/node (knode-\S+) pid (\d+) on 127\.0\.0\.1:(\d+)/g)].map((m) => ({
        id: m[1],
        pid: Number(m[2]),
        port: Number(m[3]),
      }));
      const redis = [...out.matchAll(/redis-server pid (\d+) on 127\.0\.0\.1:(\d+)/g)].map((m) => ({
        pid: Number(m[1]),
        port: Number(m[2]),
      }));
      resolve({
        port,
        nodes: found,
        redis,
        output: () => out,
        stop: () =>
          new Promise((done) => {
            if (child.exitCode !== null) return done(child.exitCode);
            child.removeAllListeners("exit");
            child.on("exit", done);
            child.kill("SIGTERM");
          }),
      });
    });
  });
}

/**
 * Starts a redis-server of our own on 127.0.0.1 and a free port, persisting nothing.
 * Resolves to { port, env (the kuzzle_* settings of a node on it), stop() }.
 */
async function startRedis() {
  const [port] = await freePorts(1);
  const child = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let exited = null;
  const exit = new Promise((resolve) => child.on("exit", (code) => resolve((exited = code))));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 10000);
    exit.then((code) => reject(new Error(`redis-server exited with ${code}:\n${out}`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return {
    port,
    env: {
      kuzzle_services__storage__backend: "redis",
      kuzzle_services__storage__node__host: "127.0.0.1",
      kuzzle_services__storage__node__port: String(port),
    },
    stop: () => {
      if (exited === null) child.kill("SIGTERM");
      return exit;
    },
  };
}

module.exports = { startNode, startCluster, startRedis, sleep };
