// The security and auth controllers' administration actions (issue 21) through the official
// kuzzle-sdk's own methods, over WebSocket and HTTP, on the embedded store and on Redis.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Kuzzle, WebSocket, Http } = require("kuzzle-sdk");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { startNode, startRedis } = require("./node");

const root = { username: "root", password: "root password" };

function protocolOf(name, port) {
  return name === "Http" ? new Http("127.0.0.1", { port }) : new WebSocket("127.0.0.1", { port });
}

async function client(name, port) {
  const kuzzle = new Kuzzle(protocolOf(name, port));
  await kuzzle.connect();
  return kuzzle;
}

/** Resolves to the error `promise` rejects with, after checking its id. */
async function refused(promise, id) {
  let error = null;
  await promise.then(
    () => assert.fail(`expected ${id}`),
    (e) => (error = e),
  );
  assert.equal(error.id, id, `${error.message}`);
  return error;
}

async function rolesAndProfiles(kuzzle) {
  const sec = kuzzle.security;
  const editor = await sec.createRole("editor", { controllers: { realtime: { actions: { publish: true } } } });
  assert.equal(editor._id, "editor");
  await refused(sec.createRole("editor", { controllers: { auth: { actions: { login: true } } } }), "services.storage.document_already_exists");
  const updated = await sec.updateRole("editor", { controllers: { realtime: { actions: { publish: true, subscribe: true } } } });
  assert.deepEqual(updated.controllers.realtime.actions, { publish: true, subscribe: true });
  await refused(sec.updateRole("ghost", { controllers: {} }), "security.role.not_found");
  await refused(sec.createRole("bad", { controllers: { realtime: { actions: { nope: true } } } }), "security.role.unknown_action");
  assert.deepEqual((await sec.mGetRoles(["editor", "ghost", "admin"])).map((r) => r._id), ["editor", "admin"]);
  const byController = await sec.searchRoles({ controllers: ["realtime"] });
  assert.deepEqual(byController.hits.map((r) => r._id).sort(), ["admin", "editor"], "a role naming realtime, or *");
  const byId = await sec.searchRoles({ query: { ids: { values: ["editor"] } } });
  assert.deepEqual(byId.hits.map((r) => r._id), ["editor"]);
  assert.equal(byId.total, 1);

  assert.ok((await sec.getRoleMapping()).mapping.controllers);
  await sec.updateRoleMapping({ properties: { team: { type: "keyword" } } });
  assert.deepEqual((await sec.getRoleMapping()).mapping.team, { type: "keyword" });
  assert.deepEqual((await sec.getUserMapping()).mapping.profileIds, { type: "keyword" });
  assert.ok((await sec.getProfileMapping()).mapping.policies);

  const editors = await sec.createProfile("editors", { policies: [{ roleId: "editor" }] });
  assert.equal(editors._id, "editors");
  await refused(sec.createProfile("editors", { policies: [{ roleId: "default" }] }), "services.storage.document_already_exists");
  await refused(sec.createProfile("p", { policies: [{ roleId: "ghost" }] }), "security.role.not_found");
  const limited = await sec.updateProfile("editors", { rateLimit: 5 });
  assert.equal(limited.rateLimit, 5);
  assert.deepEqual(limited.policies, [{ roleId: "editor" }]);
  await refused(sec.updateProfile("ghost", { rateLimit: 1 }), "security.profile.not_found");
  assert.deepEqual((await sec.mGetProfiles(["editors", "default", "ghost"])).map((p) => p._id), ["editors", "default"]);
  const byRole = await sec.searchProfiles({ roles: ["editor"] });
  assert.deepEqual(byRole.hits.map((p) => p._id), ["editors"]);
  const byTerm = await sec.searchProfiles({ query: { term: { "policies.roleId": "editor" } } });
  assert.deepEqual(byTerm.hits.map((p) => p._id), ["editors"]);
  const rights = await sec.getProfileRights("editors");
  assert.deepEqual(
    rights.map((r) => `${r.controller}:${r.action}:${r.value}`).sort(),
    ["realtime:publish:allowed", "realtime:subscribe:allowed"],
  );
  await refused(sec.getProfileRights("ghost"), "security.profile.not_found");

  // Scrolled profile search: every profile once.
  let page = await sec.searchProfiles({}, { scroll: "10s", size: 2 });
  const seen = [];
  while (page) {
    seen.push(...page.hits.map((p) => p._id));
    page = await page.next();
  }
  assert.deepEqual(seen, ["admin", "anonymous", "default", "editors"]);

  // Multiple deletions.
  await sec.createRole("temp1", { controllers: { auth: { actions: { login: true } } } });
  await sec.createRole("temp2", { controllers: { auth: { actions: { login: true } } } });
  assert.deepEqual(await sec.mDeleteRoles(["temp1", "temp2"]), ["temp1", "temp2"]);
  assert.deepEqual((await sec.mGetRoles(["temp1", "temp2"])).length, 0);
  await sec.createProfile("tempP", { policies: [{ roleId: "default" }] });
  assert.deepEqual(await sec.mDeleteProfiles(["tempP"]), ["tempP"]);
  const partial = await refused(sec.mDeleteRoles(["admin"]), "services.storage.incomplete_delete");
  assert.equal(partial.status, 206);
}

async function users(kuzzle) {
  const sec = kuzzle.security;
  await sec.createRole("self", { controllers: { auth: { actions: { "*": true } } } });
  await sec.createProfile("selves", { policies: [{ roleId: "self" }] });
  for (const id of ["u1", "u2", "u3"]) {
    const content = { profileIds: ["editors", "selves"], n: id };
    await sec.createUser(id, { content, credentials: { local: { username: id, password: `${id} pw` } } });
  }
  assert.deepEqual((await sec.mGetUsers(["u1", "ghost", "u2"])).map((u) => u._id), ["u1", "u2"]);
  // The bug this issue names: `terms` on `_id` finds both users.
  const both = await sec.searchUsers({ query: { terms: { _id: ["u1", "u2"] } } });
  assert.equal(both.total, 2);
  assert.deepEqual(both.hits.map((u) => u._id), ["u1", "u2"]);
  assert.equal((await sec.searchUsers({ query: { term: { _id: "u3" } } })).total, 1);

  let page = await sec.searchUsers({ query: {} }, { scroll: "10s", size: 2 });
  const seen = [];
  while (page) {
    seen.push(...page.hits.map((u) => u._id));
    page = await page.next();
  }
  assert.deepEqual(seen, ["root", "u1", "u2", "u3"], "scrolled once each, in order");

  const rights = await sec.getUserRights("u1");
  assert.ok(rights.some((r) => r.controller === "realtime" && r.action === "publish" && r.value === "allowed"));
  await refused(sec.getUserRights("ghost"), "security.user.not_found");
  assert.deepEqual(await sec.getUserStrategies("u1"), ["local"]);
  await refused(sec.getUserStrategies("ghost"), "security.user.not_found");

  const created = await sec.query({ action: "upsertUser", _id: "u4", body: { content: { profileIds: ["default"], a: 1 }, default: { b: 2 } } });
  assert.deepEqual([created.result._source.a, created.result._source.b], [1, 2]);
  const upserted = await sec.query({ action: "upsertUser", _id: "u4", body: { content: { profileIds: ["editors"], a: 3 }, default: { b: 9 } } });
  assert.deepEqual([upserted.result._source.a, upserted.result._source.b], [3, 2]);
  assert.deepEqual(upserted.result._source.profileIds, ["editors"]);
  await refused(sec.query({ action: "upsertUser", _id: "u5", body: { content: { a: 1 } } }), "api.assert.missing_argument");

  assert.equal(await sec.checkRights("u1", { controller: "realtime", action: "publish", index: "i", collection: "c" }), true);
  assert.equal(await sec.checkRights("u1", { controller: "server", action: "getConfig" }), false);
  await refused(sec.checkRights("ghost", { controller: "server", action: "now" }), "security.user.not_found");
  await refused(sec.checkRights("u1", { action: "now" }), "api.assert.missing_argument");
  assert.equal(await kuzzle.auth.checkRights({ controller: "server", action: "getConfig" }), true);
}

async function credentials(kuzzle) {
  const sec = kuzzle.security;
  await sec.createUser("nocreds", { content: { profileIds: ["default"] } });
  assert.equal(await sec.hasCredentials("local", "nocreds"), false);
  assert.deepEqual(await sec.createCredentials("local", "nocreds", { username: "nc", password: "nc pw" }), { username: "nc", kuid: "nocreds" });
  await refused(sec.createCredentials("local", "ghost", { username: "g", password: "g" }), "security.user.not_found");
  assert.equal(await sec.hasCredentials("local", "nocreds"), true);
  assert.deepEqual(await sec.getCredentials("local", "nocreds"), { username: "nc", kuid: "nocreds" });
  assert.deepEqual(await sec.getCredentialsById("local", "nc"), { username: "nc", kuid: "nocreds" });
  assert.equal(await sec.validateCredentials("local", "nocreds", { username: "nc", password: "other" }), true);
  const used = await sec.validateCredentials("local", "u1", { username: "nc", password: "x" }).catch((e) => e);
  assert.equal(used.status, 412);
  assert.deepEqual(await sec.getCredentialFields("local"), ["password", "username"]);
  assert.deepEqual(await sec.getAllCredentialFields(), { local: ["password", "username"] });
  await refused(sec.getCredentialFields("oauth"), "security.credentials.unknown_strategy");
  const found = await sec.query({ action: "searchUsersByCredentials", strategy: "local", body: { query: { term: { username: "nc" } } } });
  assert.deepEqual(found.result, { hits: [{ kuid: "nocreds", username: "nc" }], total: 1 });
  assert.deepEqual(await sec.deleteCredentials("local", "nocreds"), { acknowledged: true });
  assert.equal(await sec.hasCredentials("local", "nocreds"), false);
  const none = await sec.deleteCredentials("local", "nocreds").catch((e) => e);
  assert.equal(none.status, 412);
}

async function apiKeys(kuzzle, protocol, port) {
  const sec = kuzzle.security;
  const key = await sec.createApiKey("u1", "cron job", { expiresIn: -1 });
  assert.match(key._source.token, /^kapikey-/);
  assert.equal(key._source.expiresAt, -1);
  assert.equal(key._source.userId, "u1");
  const found = await sec.searchApiKeys("u1", { match_all: {} });
  assert.equal(found.total, 1);
  assert.equal(found.hits[0]._source.token, undefined, "a key's token is shown once");
  assert.match(found.hits[0]._source.fingerprint, /^[0-9a-f]{64}$/);
  assert.equal((await sec.searchApiKeys("u2")).total, 0);

  const bot = new Kuzzle(protocolOf(protocol, port));
  await bot.connect();
  try {
    bot.jwt = key._source.token;
    assert.equal((await bot.auth.getCurrentUser())._id, "u1");
    await refused(bot.auth.refreshToken(), "security.token.refresh_forbidden");
    // A socket that used the key learns that it ended; an HTTP client is refused.
    const expired = protocol === "WebSocket" ? new Promise((resolve) => bot.once("tokenExpired", resolve)) : null;
    await sec.deleteApiKey("u1", key._id);
    assert.equal((await kuzzle.auth.checkToken(key._source.token)).valid, false);
    if (expired) {
      await expired;
      assert.equal(bot.jwt, null);
    } else {
      await refused(bot.auth.getCurrentUser(), "security.token.invalid");
    }
  } finally {
    bot.disconnect();
  }
  await refused(sec.deleteApiKey("u1", key._id), "services.storage.not_found");
  await refused(sec.createApiKey("ghost", "x"), "security.user.not_found");

  // A user's own keys.
  const u1 = new Kuzzle(protocolOf(protocol, port));
  await u1.connect();
  try {
    await u1.auth.login("local", { username: "u1", password: "u1 pw" });
    const mine = await u1.auth.createApiKey("mine", { expiresIn: "1h" });
    assert.ok(mine._source.expiresAt > Date.now());
    assert.equal((await u1.auth.searchApiKeys()).total, 1);
    await u1.auth.deleteApiKey(mine._id);
    assert.equal((await u1.auth.searchApiKeys()).total, 0);
    const token = await u1.query({ controller: "auth", action: "createToken", expiresIn: "10m" });
    assert.match(token.result.token, /^kauth-/);
    assert.equal((await kuzzle.auth.checkToken(token.result.token)).kuid, "u1");
    // revokeTokens ends the user's sessions.
    await sec.query({ action: "revokeTokens", _id: "u1" });
    assert.equal((await kuzzle.auth.checkToken(token.result.token)).valid, false);
  } finally {
    u1.disconnect();
  }
}

async function deletions(kuzzle, protocol) {
  const sec = kuzzle.security;
  const error = await refused(sec.mDeleteUsers(["u2", "ghost", "u3"]), "services.storage.incomplete_delete");
  assert.equal(error.status, 206);
  assert.equal((await sec.mGetUsers(["u2", "u3"])).length, 0, "the others went");
  assert.deepEqual(await sec.mDeleteUsers(["u4"]), ["u4"]);
  await sec.refresh("users");
  await refused(sec.refresh("documents"), "api.assert.unexpected_argument");
  // restrictDefaultRights installs the standard roles again (createFirstAdmin's reset);
  // like Kuzzle, it has no HTTP route.
  if (protocol !== "WebSocket") return;
  await sec.updateRole("default", { controllers: { "*": { actions: { "*": true } } } });
  assert.equal((await sec.query({ action: "restrictDefaultRights" })).result, null);
  assert.deepEqual(Object.keys((await sec.getRole("default")).controllers).sort(), ["auth", "server"]);
}

for (const store of ["embedded", "redis"]) {
  for (const protocol of ["WebSocket", "Http"]) {
    test(`security and auth administration over ${protocol} on the ${store} store`, async () => {
      const redis = store === "redis" ? await startRedis() : null;
      const node = await startNode(redis ? redis.env : {});
      const kuzzle = await client(protocol, node.port);
      try {
        await kuzzle.security.createFirstAdmin("root", { credentials: { local: root } }, { reset: true });
        await kuzzle.auth.login("local", root);
        await rolesAndProfiles(kuzzle);
        await users(kuzzle);
        await credentials(kuzzle);
        await apiKeys(kuzzle, protocol, node.port);
        await deletions(kuzzle, protocol);
      } finally {
        kuzzle.disconnect();
        assert.equal(await node.stop(), 0);
        if (redis) await redis.stop();
      }
    });
  }
}

test("an API key that never expires authenticates a socket after a node restart, until it is deleted", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kuzzle-rt-sdk-apikey-"));
  try {
    const first = await startNode({}, dir);
    const setup = await client("WebSocket", first.port);
    await setup.security.createFirstAdmin("root", { credentials: { local: root } }, { reset: true });
    await setup.auth.login("local", root);
    const key = await setup.security.createApiKey("root", "survives restarts", { expiresIn: -1 });
    setup.disconnect();
    assert.equal(await first.stop(), 0);

    const second = await startNode({}, dir);
    const bot = await client("WebSocket", second.port);
    const admin = await client("WebSocket", second.port);
    try {
      bot.jwt = key._source.token;
      assert.equal((await bot.auth.getCurrentUser())._id, "root");
      await bot.realtime.subscribe("i", "c", {}, () => {});
      const expired = new Promise((resolve) => bot.once("tokenExpired", resolve));
      await admin.auth.login("local", root);
      await admin.security.deleteApiKey("root", key._id);
      await expired;
      assert.equal(bot.jwt, null);
    } finally {
      bot.disconnect();
      admin.disconnect();
      assert.equal(await second.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
