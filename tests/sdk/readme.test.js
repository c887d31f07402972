// Every JavaScript sample of the README, run as pasted (in a folder of its own, with
// kuzzle-sdk from this directory's node_modules), each against a fresh node.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { execFile } = require("node:child_process");
const { startNode } = require("./node");

const readme = fs.readFileSync(path.resolve(__dirname, "../../README.md"), "utf8");
const samples = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);

function run(file) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [file],
      { env: { ...process.env, NODE_PATH: path.join(__dirname, "node_modules") }, timeout: 30000 },
      (error, stdout, stderr) => resolve({ code: error ? error.code ?? 1 : 0, stdout, stderr }),
    );
  });
}

test("the README has JavaScript samples", () => {
  assert.ok(samples.length >= 3, `${samples.length} samples`);
});

for (const [i, sample] of samples.entries()) {
  const name = (/^\/\/ (\S+\.js)/.exec(sample) || [null, `sample-${i}.js`])[1];
  test(`README sample ${name} runs as pasted`, async () => {
    assert.match(sample, /port: 7512/, "it targets the default port");
    const node = await startNode();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kuzzle-rt-readme-"));
    try {
      const file = path.join(dir, name);
      fs.writeFileSync(file, sample.replace("port: 7512", `port: ${node.port}`));
      const { code, stdout, stderr } = await run(file);
      assert.equal(code, 0, `${name} failed:\n${stdout}\n${stderr}`);
      assert.ok(stdout.length > 0, `${name} printed nothing`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      await node.stop();
    }
  });
}
