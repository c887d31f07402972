// Every JavaScript sample of the README and of docs/**/*.md, run as pasted (in a folder of its own, with
// kuzzle-sdk from this directory's node_modules), each against a fresh node.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { execFile } = require("node:child_process");
const { startNode } = require("./node");

const ROOT = path.resolve(__dirname, "../..");

/** README.md and every Markdown page under docs/, with their paths from the root. */
function pages() {
  const found = ["README.md"];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const relative = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(relative);
      else if (entry.name.endsWith(".md")) found.push(relative);
    }
  };
  walk("docs");
  return found.sort();
}

const samples = pages().flatMap((page) =>
  [...fs.readFileSync(path.join(ROOT, page), "utf8").matchAll(/```js\n([\s\S]*?)```/g)].map((m) => ({ page, code: m[1] })),
);

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

test("the README and docs/ have JavaScript samples", () => {
  assert.ok(samples.length >= 3, `${samples.length} samples`);
  assert.ok(samples.some((s) => s.page === "README.md"), "the README's own");
});

for (const [i, { page, code: sample }] of samples.entries()) {
  const name = (/^\/\/ (\S+\.js)/.exec(sample) || [null, `sample-${i}.js`])[1];
  test(`${page}: sample ${name} runs as pasted`, async () => {
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
