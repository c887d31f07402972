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

module.exports = { startNode, sleep };
