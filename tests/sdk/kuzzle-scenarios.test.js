// The scenarios of Kuzzle 2.56's own functional suite (features/ and features-legacy/) that
// exercise the auth, security, server and realtime APIs, restated here (Kuzzle's suite is
// not published on a registry CI can reach): each sends the same requests as the scenario
// and checks what it checks, through kuzzle-sdk's raw `query`, over WebSocket and HTTP, on
// the embedded store and on Redis, with the settings of Kuzzle's test stack
// (limits.loginsPerSecond 50) and the per-address login limit raised (docs/limits.md).
// Left out, and why: docs/PROTOCOL.md, Appendix B ("Kuzzle's functional tests").
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Kuzzle, WebSocket, Http } = require("kuzzle-sdk");
const { startNode, startRedis, sleep } = require("./node");

const STACK = {
  kuzzle_limits__loginsPerSecond: "50",
  kuzzle_limits__loginsPerSecondPerAddress: "0",
  kuzzle_stats__statsInterval: "1",
};

function protocolOf(name, port) {
  return name === "Http" ? new Http("127.0.0.1", { port }) : new WebSocket("127.0.0.1", { port });
}

/** A connected SDK, logged in as `username` when given. */
async function connect(name, port, username = null) {
  const kuzzle = new Kuzzle(protocolOf(name, port));
  await kuzzle.connect();
  if (username) await kuzzle.auth.login("local", { username, password: "password" });
  return kuzzle;
}

/** `kuzzle.query` that resolves to the response, error or not. */
function send(kuzzle, controller, action, args = {}) {
  return kuzzle.query({ controller, action, ...args }).then(
    (response) => response,
    (error) => ({ error, status: error.status, result: null }),
  );
}

/** "I successfully execute the action": the result. */
async function ok(kuzzle, controller, action, args = {}) {
  const response = await send(kuzzle, controller, action, args);
  assert.equal(response.error ?? null, null, `${controller}:${action} → ${response.error && response.error.message}`);
  return response.result;
}

/** "I execute the action … Then I should receive an error matching id". */
async function fails(kuzzle, controller, action, args, id) {
  const response = await send(kuzzle, controller, action, args);
  assert.ok(response.error, `${controller}:${action} should fail with ${id}`);
  assert.equal(response.error.id, id, response.error.message);
  return response.error;
}

const ids = (hits) => hits.map((h) => h._id);

/** Kuzzle's fixtures: an administrator and a user with the default profile. */
async function fixtures(admin) {
  for (const [id, profile] of [
    ["test-admin", "admin"],
    ["default-user", "default"],
  ]) {
    await ok(admin, "security", "createUser", {
      _id: id,
      body: { content: { profileIds: [profile] }, credentials: { local: { username: id, password: "password" } } },
    });
  }
}

/** "I update a role … with the following API rights". */
function setRole(admin, id, controllers) {
  return ok(admin, "security", "createOrReplaceRole", { _id: id, body: { controllers } });
}

const securityScenarios = {
  async "search roles and profiles with a query on their own fields"(admin) {
    for (const id of ["kite-surf-1", "kite-surf-2"]) {
      await ok(admin, "security", "createRole", { _id: id, body: { tags: ["kite-surf"], controllers: { "*": { actions: { "*": true } } } } });
      await ok(admin, "security", "createProfile", { _id: id, body: { tags: ["kite-surf"], policies: [{ roleId: "default" }] } });
    }
    const roles = await ok(admin, "security", "searchRoles", { body: { query: { term: { tags: "kite-surf" } } } });
    assert.deepEqual(ids(roles.hits), ["kite-surf-1", "kite-surf-2"]);
    const profiles = await ok(admin, "security", "searchProfiles", { body: { query: { term: { tags: "kite-surf" } } } });
    assert.deepEqual(ids(profiles.hits), ["kite-surf-1", "kite-surf-2"]);
  },

  async "a role update behaves like a replace"(admin) {
    await ok(admin, "security", "createRole", { _id: "replaced", body: { controllers: { auth: { actions: { login: true } } } } });
    await ok(admin, "security", "updateRole", { _id: "replaced", body: { controllers: { realtime: { actions: { publish: true } } } } });
    const role = await ok(admin, "security", "getRole", { _id: "replaced" });
    assert.equal(role._source.controllers.auth, undefined);
  },

  async "checkRights for another user and for oneself"(admin, protocol, port) {
    await setRole(admin, "default", {
      auth: { actions: { login: true, checkRights: true } },
      realtime: { actions: { publish: false, subscribe: true } },
    });
    const denied = await ok(admin, "security", "checkRights", { userId: "default-user", body: { controller: "realtime", action: "publish" } });
    assert.equal(denied.allowed, false);
    const allowed = await ok(admin, "security", "checkRights", { userId: "default-user", body: { controller: "realtime", action: "subscribe" } });
    assert.equal(allowed.allowed, true);
    const user = await connect(protocol, port, "default-user");
    try {
      assert.equal((await ok(user, "auth", "checkRights", { body: { controller: "realtime", action: "publish" } })).allowed, false);
      assert.equal((await ok(user, "auth", "checkRights", { body: { controller: "realtime", action: "subscribe" } })).allowed, true);
    } finally {
      user.disconnect();
      await setRole(admin, "default", { "*": { actions: { "*": true } } });
    }
  },

  async "refresh a security collection"(admin) {
    await ok(admin, "security", "createUser", { _id: "aschen", refresh: false, body: { content: { profileIds: ["default"] } } });
    assert.equal(await ok(admin, "security", "refresh", { collection: "users" }), null);
    const users = await ok(admin, "security", "searchUsers", { body: { sort: "_id" } });
    assert.ok(ids(users.hits).includes("aschen"));
    await fails(admin, "security", "refresh", { collection: "frontend-security" }, "api.assert.unexpected_argument");
  },

  async "API keys of a user: create two, search, authenticate, delete"(admin, protocol, port) {
    await ok(admin, "security", "createUser", { _id: "My", body: { content: { profileIds: ["default"] } } });
    const first = await ok(admin, "security", "createApiKey", { userId: "My", expiresIn: -1, refresh: "wait_for", body: { description: "Le Huong" } });
    assert.deepEqual([first._source.expiresAt, first._source.ttl, first._source.description], [-1, -1, "Le Huong"]);
    assert.equal(typeof first._source.token, "string");
    assert.equal(typeof first._id, "string");
    await ok(admin, "security", "createApiKey", { userId: "My", expiresIn: -1, body: { description: "Foobar" } });
    const keyed = await connect(protocol, port);
    try {
      keyed.jwt = first._source.token;
      assert.equal((await ok(keyed, "auth", "getCurrentUser"))._id, "My");
    } finally {
      keyed.disconnect();
    }
    const found = await ok(admin, "security", "searchApiKeys", { userId: "My" });
    assert.deepEqual(found.hits.map((h) => h._source.description).sort(), ["Foobar", "Le Huong"]);
    for (const hit of found.hits) {
      assert.deepEqual([hit._source.userId, hit._source.ttl, hit._source.expiresAt], ["My", -1, -1]);
      assert.equal(typeof hit._source.fingerprint, "string");
    }
    for (const description of ["Sigfox API key", "Lora API key", "Lora API key 2"]) {
      await ok(admin, "security", "createApiKey", { userId: "test-admin", expiresIn: -1, body: { description } });
    }
    const lora = await ok(admin, "security", "searchApiKeys", { userId: "test-admin", body: { match: { description: "Lora" } } });
    assert.deepEqual(lora.hits.map((h) => h._source.description).sort(), ["Lora API key", "Lora API key 2"]);
    const koncorde = await ok(admin, "security", "searchApiKeys", { userId: "My", lang: "koncorde", body: { equals: { userId: "My" } } });
    assert.equal(koncorde.hits.length, 2);

    await ok(admin, "security", "createApiKey", { userId: "test-admin", _id: "SGN-HCM", expiresIn: -1, body: { description: "My Le Huong" } });
    const saved = await ok(admin, "security", "searchApiKeys", { userId: "test-admin", body: { match: { description: "Huong" } } });
    assert.deepEqual(ids(saved.hits), ["SGN-HCM"]);
    await ok(admin, "security", "deleteApiKey", { userId: "test-admin", _id: "SGN-HCM", refresh: "wait_for" });
    const after = await ok(admin, "security", "searchApiKeys", { userId: "test-admin", body: { match: { description: "Huong" } } });
    assert.deepEqual(after.hits, []);
  },

  async "profiles: delete, refused while assigned, removed from users"(admin) {
    await ok(admin, "security", "createRole", { _id: "test-role", body: { controllers: { realtime: { actions: { subscribe: true } } } } });
    await ok(admin, "security", "createProfile", { _id: "base-profile", body: { policies: [{ roleId: "test-role" }] } });
    await ok(admin, "security", "createProfile", { _id: "to-be-removed-profile", body: { policies: [{ roleId: "test-role", restrictedTo: [{ index: "example", collections: ["one", "two"] }] }] } });
    await ok(admin, "security", "createUser", { _id: "test-user", body: { content: { profileIds: ["base-profile", "to-be-removed-profile"] } } });
    await ok(admin, "security", "createUser", { _id: "test-user-two", body: { content: { profileIds: ["to-be-removed-profile"] } } });
    await fails(admin, "security", "deleteProfile", { _id: "to-be-removed-profile" }, "security.profile.in_use");
    await fails(admin, "security", "deleteRole", { _id: "test-role" }, "security.role.in_use");
    await ok(admin, "security", "deleteProfile", { _id: "to-be-removed-profile", onAssignedUsers: "remove", refresh: "wait_for" });
    assert.deepEqual((await ok(admin, "security", "getUser", { _id: "test-user" }))._source.profileIds, ["base-profile"]);
    assert.deepEqual((await ok(admin, "security", "getUser", { _id: "test-user-two" }))._source.profileIds, ["anonymous"]);
    await ok(admin, "security", "mDeleteUsers", { body: { ids: ["test-user", "test-user-two"] } });
    await ok(admin, "security", "deleteProfile", { _id: "base-profile" });
    await ok(admin, "security", "deleteRole", { _id: "test-role" });
  },

  async "roles: invalid rights, create/get/search/update/delete, mGet, forced controllers"(admin) {
    await fails(admin, "security", "createRole", { _id: "bad", body: { controllers: { "invalid-controller": { actions: { create: true } } } } }, "security.role.unknown_controller");
    await fails(admin, "security", "createRole", { _id: "bad", body: { controllers: { realtime: { actions: { invalid_action: true } } } } }, "security.role.unknown_action");
    const byController = async (controllers) => (await ok(admin, "security", "searchRoles", { body: { controllers }, size: 999 })).hits;
    const before = (await byController(["realtime"])).length;
    await ok(admin, "security", "createRole", { _id: "crud-role", body: { controllers: { realtime: { actions: { publish: true, subscribe: true } } } } });
    assert.deepEqual((await ok(admin, "security", "getRole", { _id: "crud-role" }))._source.controllers.realtime.actions, { publish: true, subscribe: true });
    assert.equal((await byController(["realtime"])).length, before + 1);
    await ok(admin, "security", "updateRole", { _id: "crud-role", body: { controllers: { realtime: { actions: { publish: false, subscribe: false } } } } });
    assert.deepEqual((await ok(admin, "security", "getRole", { _id: "crud-role" }))._source.controllers.realtime.actions, { publish: false, subscribe: false });
    await ok(admin, "security", "deleteRole", { _id: "crud-role" });
    assert.equal((await byController(["realtime"])).length, before);
    await fails(admin, "security", "getRole", { _id: "crud-role" }, "security.role.not_found");
    for (const id of ["m-role", "m-role-2", "m-role-3"]) {
      await ok(admin, "security", "createRole", { _id: id, body: { controllers: { realtime: { actions: { publish: true } } } } });
    }
    const many = await ok(admin, "security", "mGetRoles", { body: { ids: ["m-role", "m-role-2", "m-role-3"] } });
    assert.deepEqual(ids(many.hits), ["m-role", "m-role-2", "m-role-3"]);

    const plugin = { "functional-test-plugin/non-existing-controller": { actions: { manage: true } } };
    await fails(admin, "security", "createRole", { _id: "test-role-plugin", body: { controllers: plugin } }, "security.role.unknown_controller");
    await ok(admin, "security", "createRole", { _id: "test-role-plugin2", force: true, body: { controllers: plugin } });
    assert.ok(ids(await byController(["functional-test-plugin/non-existing-controller"])).includes("test-role-plugin2"));
    const off = { "functional-test-plugin/non-existing-controller": { actions: { manage: false } } };
    await fails(admin, "security", "updateRole", { _id: "test-role-plugin2", body: { controllers: off } }, "security.role.unknown_controller");
    await ok(admin, "security", "updateRole", { _id: "test-role-plugin2", force: true, body: { controllers: off } });
    const forced = await ok(admin, "security", "getRole", { _id: "test-role-plugin2" });
    assert.equal(forced._source.controllers["functional-test-plugin/non-existing-controller"].actions.manage, false);
  },

  async "users: mGet, search by _id with paging and in Koncorde, strategies"(admin) {
    await ok(admin, "security", "createUser", { _id: "test-user", body: { content: { profileIds: ["default"] }, credentials: { local: { username: "test-user", password: "password" } } } });
    await ok(admin, "security", "createUser", { _id: "test-user2", body: { content: { profileIds: ["admin"] } } });
    assert.deepEqual(ids((await ok(admin, "security", "mGetUsers", { ids: "test-user,test-user2" })).hits), ["test-user", "test-user2"]);
    assert.deepEqual(ids((await ok(admin, "security", "mGetUsers", { body: { ids: ["test-user", "test-user2"] } })).hits), ["test-user", "test-user2"]);
    const query = { query: { terms: { _id: ["test-user", "test-user2"] } } };
    const found = await ok(admin, "security", "searchUsers", { body: query });
    assert.deepEqual([ids(found.hits), found.total], [["test-user", "test-user2"], 2]);
    const beyond = await ok(admin, "security", "searchUsers", { body: query, from: 2, size: 10 });
    assert.deepEqual([beyond.hits, beyond.total], [[], 2]);
    const koncorde = await ok(admin, "security", "searchUsers", { lang: "koncorde", body: { query: { ids: { values: ["test-user", "test-user2"] } } } });
    assert.deepEqual([ids(koncorde.hits), koncorde.total], [["test-user", "test-user2"], 2]);
    assert.deepEqual((await ok(admin, "security", "getUserStrategies", { _id: "test-user" })).strategies, ["local"]);
    assert.deepEqual((await ok(admin, "security", "getUserStrategies", { _id: "-1" })).strategies, []);
    await fails(admin, "security", "getUserStrategies", { _id: "fake-user-id" }, "security.user.not_found");
  },

  async "sessions: login, logout (one and all), refresh, a deleted user's token, a restricted user"(admin, protocol, port) {
    await ok(admin, "security", "createUser", { _id: "useradmin-id", body: { content: { profileIds: ["admin"] }, credentials: { local: { username: "useradmin", password: "testpwd" } } } });
    const login = () => ok(admin, "auth", "login", { strategy: "local", expiresIn: "1h", body: { username: "useradmin", password: "testpwd" } });
    const valid = async (jwt) => (await ok(admin, "auth", "checkToken", { body: { token: jwt } })).valid;
    const session = await connect(protocol, port);
    try {
      session.jwt = (await login()).jwt;
      assert.equal(await valid(session.jwt), true);
      const jwt = session.jwt;
      await session.auth.logout();
      assert.equal(await valid(jwt), false);
      session.jwt = (await login()).jwt;
      const other = (await login()).jwt;
      await ok(session, "auth", "logout", { global: true });
      assert.equal(await valid(other), false, "logout of every session at once");
      session.jwt = (await login()).jwt;
      const refreshed = await ok(session, "auth", "refreshToken");
      assert.equal(await valid(refreshed.jwt), true);
      session.jwt = (await login()).jwt;
      const token = session.jwt;
      await ok(admin, "security", "deleteUser", { _id: "useradmin-id" });
      assert.equal(await valid(token), false, "a deleted user's token");
    } finally {
      session.disconnect();
    }
    const restricted = await ok(admin, "security", "createRestrictedUser", { _id: "restricteduser1-id", body: { content: {}, credentials: { local: { username: "restricteduser1", password: "testpwd" } } } });
    assert.deepEqual(restricted._source.profileIds, ["default"]);
  },

  async "profiles: rights with restrictions, search by role, update, scroll"(admin) {
    await ok(admin, "security", "createRole", { _id: "lg-role1", body: { controllers: { "*": { actions: { "*": true } } } } });
    await ok(admin, "security", "createRole", { _id: "lg-role2", body: { controllers: { auth: { actions: { logout: true } }, realtime: { actions: { "*": true } } } } });
    await ok(admin, "security", "createOrReplaceProfile", { _id: "lg-profile1", body: { policies: [{ roleId: "lg-role1" }] } });
    await ok(admin, "security", "createOrReplaceProfile", {
      _id: "lg-profile2",
      body: { policies: [{ roleId: "lg-role1", restrictedTo: [{ index: "kuzzle-test-index" }] }, { roleId: "lg-role2" }] },
    });
    const one = await ok(admin, "security", "getProfileRights", { _id: "lg-profile1" });
    assert.deepEqual(one.hits, [{ action: "*", collection: "*", controller: "*", index: "*", value: "allowed" }]);
    const two = await ok(admin, "security", "getProfileRights", { _id: "lg-profile2" });
    const key = (r) => `${r.controller}:${r.action}@${r.index}/${r.collection}=${r.value}`;
    assert.ok(two.hits.map(key).includes("*:*@kuzzle-test-index/*=allowed"));
    assert.ok(two.hits.map(key).includes("auth:logout@*/*=allowed"));
    await fails(admin, "security", "getProfileRights", { _id: "fake-profile" }, "security.profile.not_found");
    const withRole = async (role) => (await ok(admin, "security", "searchProfiles", { body: { roles: [role] } })).hits.length;
    assert.equal(await withRole("lg-role2"), 1);
    assert.equal(await withRole("undefined-role"), 0);
    await ok(admin, "security", "updateProfile", { _id: "lg-profile1", body: { policies: [{ roleId: "lg-role1" }, { roleId: "lg-role2" }] } });
    assert.equal(await withRole("lg-role2"), 2);
    const first = await ok(admin, "security", "searchProfiles", { body: { roles: ["lg-role1"] }, scroll: "10s", size: 1 });
    assert.deepEqual([first.hits.length, first.total], [1, 2]);
    const next = await ok(admin, "security", "scrollProfiles", { scrollId: first.scrollId, scroll: "10s" });
    assert.equal(next.hits.length, 1);
    assert.notEqual(next.hits[0]._id, first.hits[0]._id);
    // "get profile without id triggers an error" (over HTTP the SDK refuses it itself).
    assert.ok((await send(admin, "security", "getProfile", { _id: "" })).error);
  },

  async "credentials of another user and one's own, and revoked tokens"(admin, protocol, port) {
    await ok(admin, "security", "createUser", { _id: "nocredentialuser-id", body: { content: { profileIds: ["admin"] } } });
    await ok(admin, "security", "createCredentials", { strategy: "local", _id: "nocredentialuser-id", body: { username: "nocredentialuser", password: "testpwd1" } });
    const logIn = (password) => send(admin, "auth", "login", { strategy: "local", body: { username: "nocredentialuser", password } });
    assert.equal((await logIn("testpwd1")).status, 200);
    await ok(admin, "security", "updateCredentials", { strategy: "local", _id: "nocredentialuser-id", body: { password: "testpwd2" } });
    assert.equal((await logIn("testpwd1")).error.id, "plugin.strategy.missing_user");
    const user = await connect(protocol, port);
    try {
      await user.auth.login("local", { username: "nocredentialuser", password: "testpwd2" });
      assert.equal(await ok(user, "auth", "validateMyCredentials", { strategy: "local", body: { username: "nocredentialuser", password: "x" } }), true);
      assert.equal((await ok(user, "auth", "checkToken", { body: { token: user.jwt } })).valid, true);
      const jwt = user.jwt;
      await ok(admin, "security", "revokeTokens", { _id: "nocredentialuser-id" });
      assert.equal((await ok(admin, "auth", "checkToken", { body: { token: jwt } })).valid, false);
    } finally {
      user.disconnect();
    }
    await ok(admin, "security", "deleteCredentials", { strategy: "local", _id: "nocredentialuser-id" });
    assert.equal((await logIn("testpwd2")).error.id, "plugin.strategy.missing_user");
  },

  async "mappings of the security collections"(admin) {
    const roles = await ok(admin, "security", "getRoleMapping");
    assert.equal(roles.mapping.controllers.type, "object");
    await ok(admin, "security", "updateRoleMapping", { body: { properties: { foo: { type: "text" }, bar: { type: "keyword" } } } });
    const changed = (await ok(admin, "security", "getRoleMapping")).mapping;
    assert.deepEqual([changed.foo.type, changed.bar.type], ["text", "keyword"]);
    assert.ok((await ok(admin, "security", "getProfileMapping")).mapping.policies);
    assert.ok((await ok(admin, "security", "getUserMapping")).mapping.profileIds);
  },

  async "an unknown profile's role, a profile without policies"(admin) {
    await fails(admin, "security", "createOrReplaceProfile", { _id: "p-unknown", body: { policies: [{ roleId: "unexisting-role" }] } }, "security.role.not_found");
    await fails(admin, "security", "createOrReplaceProfile", { _id: "p-none", body: {} }, "api.assert.missing_argument");
  },
};

const authScenarios = {
  async "checkToken: valid and invalid"(admin) {
    const { jwt } = await ok(admin, "auth", "login", { strategy: "local", body: { username: "test-admin", password: "password" } });
    const check = await ok(admin, "auth", "checkToken", { body: { token: jwt } });
    assert.deepEqual([check.valid, check.kuid, typeof check.expiresAt], [true, "test-admin", "number"]);
    const bad = await ok(admin, "auth", "checkToken", { body: { token: "invalid token" } });
    assert.deepEqual([bad.valid, typeof bad.state], [false, "string"]);
  },

  async "the caller's own API keys"(admin, protocol, port) {
    // default-user: test-admin holds keys of the security scenarios.
    const me = await connect(protocol, port, "default-user");
    try {
      const created = await ok(me, "auth", "createApiKey", { expiresIn: -1, refresh: "wait_for", body: { description: "Sigfox API key" } });
      assert.deepEqual([created._source.expiresAt, created._source.ttl, created._source.description], [-1, -1, "Sigfox API key"]);
      await ok(me, "auth", "createApiKey", { expiresIn: -1, body: { description: "Lora API key" } });
      await ok(me, "auth", "createApiKey", { expiresIn: 42, body: { description: "Lora API key 2" } });
      const lora = await ok(me, "auth", "searchApiKeys", { body: { match: { description: "Lora" } } });
      const byDescription = Object.fromEntries(lora.hits.map((h) => [h._source.description, h._source]));
      assert.deepEqual(Object.keys(byDescription).sort(), ["Lora API key", "Lora API key 2"]);
      assert.equal(byDescription["Lora API key 2"].ttl, 42);
      assert.equal(byDescription["Lora API key 2"].userId, "default-user");
      assert.equal(typeof byDescription["Lora API key 2"].expiresAt, "number");
      const sixtyTwo = await ok(me, "auth", "searchApiKeys", { lang: "koncorde", body: { equals: { ttl: 42 } } });
      assert.deepEqual(sixtyTwo.hits.map((h) => h._source.description), ["Lora API key 2"]);
      await ok(me, "auth", "createApiKey", { _id: "SGN-HCM", expiresIn: -1, body: { description: "to delete" } });
      await ok(me, "auth", "deleteApiKey", { _id: "SGN-HCM", refresh: "wait_for" });
      const left = await ok(me, "auth", "searchApiKeys", { body: { match: { description: "delete" } } });
      assert.deepEqual(left.hits, []);
    } finally {
      me.disconnect();
    }
  },
};

/** Over HTTP only: the cookie scenarios. */
async function cookieScenarios(port) {
  const post = (path, headers = {}, body = null) =>
    fetch(`http://127.0.0.1:${port}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
  const login = await post("/_login/local?cookieAuth=true", {}, { username: "test-admin", password: "password" });
  const cookie = login.headers.get("set-cookie");
  assert.match(cookie, /^authToken=[^;]+;.*/);
  const logged = await login.json();
  assert.equal(logged.result.jwt, undefined);
  assert.equal(typeof logged.result.expiresAt, "number");
  const check = await (await post("/_checkToken?cookieAuth=true", { cookie: cookie.split(";")[0] })).json();
  assert.deepEqual([check.result.valid, check.result.kuid], [true, "test-admin"]);
  const wrong = await (await post("/_checkToken?cookieAuth=true", { cookie: "authToken=wrongtoken" })).json();
  assert.equal(wrong.result.valid, false);
  const refreshed = await post("/_refreshToken?cookieAuth=true", { cookie: cookie.split(";")[0] });
  assert.match(refreshed.headers.get("set-cookie"), /^authToken=[^;]+;.*/);
  const logout = await post("/_logout?cookieAuth=true", { cookie: refreshed.headers.get("set-cookie").split(";")[0] });
  assert.match(logout.headers.get("set-cookie"), /^authToken=null;.*/);
  const again = await post("/_login/local?cookieAuth=true", {}, { username: "test-admin", password: "password" });
  assert.equal(again.status, 200);
  // server:openapi answers the raw OpenAPI document.
  const openapi = await (await fetch(`http://127.0.0.1:${port}/_openapi`)).json();
  assert.equal(openapi.openapi, "3.0.1");
}

const serverScenarios = {
  async "healthCheck, with and without a list of services"(admin) {
    const all = await ok(admin, "server", "healthCheck");
    assert.deepEqual(all, { status: "green", services: { internalCache: "green", memoryStorage: "green", storageEngine: "green" } });
    assert.deepEqual(await ok(admin, "server", "healthCheck", { services: "storageEngine" }), { status: "green", services: { storageEngine: "green" } });
    const two = await ok(admin, "server", "healthCheck", { services: "storageEngine,memoryStorage" });
    assert.deepEqual(two.services, { memoryStorage: "green", storageEngine: "green" });
  },

  async "statistics frames: the last, from a date, all"(admin) {
    const since = Date.now() - 60000;
    let all = null;
    for (let i = 0; i < 100 && !(all && all.total >= 1); i++) {
      if (all) await sleep(100);
      all = await ok(admin, "server", "getAllStats");
    }
    assert.ok(all.total >= 1, "a frame within 10 s (stats.statsInterval 1)");
    assert.equal(typeof (await ok(admin, "server", "getLastStats")).timestamp, "number");
    assert.ok((await ok(admin, "server", "getStats", { startTime: since })).total >= 1);
    assert.equal(typeof (await ok(admin, "server", "now")).now, "number");
  },
};

/** The realtime scenarios of features-legacy (subscriptions, counts, users, lists). */
async function realtimeScenarios(protocol, port) {
  const a = await connect("WebSocket", port, "test-admin");
  const b = await connect("WebSocket", port, "test-admin");
  const publisher = await connect(protocol, port, "test-admin");
  try {
    const index = "kuzzle-test-index";
    const collection = `kuzzle-collection-test-${protocol}`;
    const got = [];
    const users = [];
    const room = await a.realtime.subscribe(index, collection, { equals: { lastName: "Hopper" } }, (n) => (n.type === "user" ? users.push(n) : got.push(n)), { users: "all", volatile: { mine: 1 } });
    await b.realtime.subscribe(index, collection, { equals: { lastName: "Hopper" } }, () => {}, { volatile: { theirs: 2 } });
    assert.equal(await a.realtime.count(room), 2);
    const listed = await ok(publisher, "realtime", "list");
    assert.equal(Object.values(listed[index][collection]).reduce((x, y) => x + y, 0), 2);
    await publisher.realtime.publish(index, collection, { lastName: "Hopper" });
    for (let i = 0; i < 500 && (got.length < 1 || users.length < 1); i++) await sleep(20);
    assert.equal(got[0].result._source.lastName, "Hopper");
    assert.equal(users[0].action, "subscribe");
    assert.deepEqual(users[0].volatile.theirs, 2, "the user notification carries the subscriber's volatile");
    b.disconnect();
    for (let i = 0; i < 500 && users.length < 2; i++) await sleep(20);
    assert.equal(users[1].action, "unsubscribe");
  } finally {
    for (const k of [a, b, publisher]) k.disconnect();
  }
}

for (const store of ["embedded", "redis"]) {
  for (const protocol of ["WebSocket", "Http"]) {
    test(`Kuzzle's functional scenarios over ${protocol} on the ${store} store`, async () => {
      const redis = store === "redis" ? await startRedis() : null;
      const node = await startNode({ ...STACK, ...(redis ? redis.env : {}) });
      const setup = await connect(protocol, node.port);
      let admin = null;
      try {
        // "Create first admin": without reset the default role keeps its rights; with
        // reset (below, on another node) it is the standard one.
        const first = await ok(setup, "security", "createFirstAdmin", {
          _id: "first-admin",
          body: { content: {}, credentials: { local: { username: "first-admin", password: "password" } } },
        });
        assert.deepEqual(first._source.profileIds, ["admin"]);
        await setup.auth.login("local", { username: "first-admin", password: "password" });
        await fixtures(setup);
        admin = await connect(protocol, node.port, "test-admin");
        for (const [name, scenario] of Object.entries({ ...securityScenarios, ...authScenarios, ...serverScenarios })) {
          try {
            await scenario(admin, protocol, node.port);
          } catch (error) {
            error.message = `${name}: ${error.message}`;
            throw error;
          }
        }
        await realtimeScenarios(protocol, node.port);
        if (protocol === "Http") await cookieScenarios(node.port);
      } finally {
        setup.disconnect();
        if (admin) admin.disconnect();
        assert.equal(await node.stop(), 0);
        if (redis) await redis.stop();
      }
    });
  }
}

test("createFirstAdmin with reset restores the standard roles", async () => {
  const node = await startNode(STACK);
  const kuzzle = await connect("WebSocket", node.port);
  try {
    await ok(kuzzle, "security", "createFirstAdmin", {
      _id: "first-admin",
      reset: true,
      body: { content: {}, credentials: { local: { username: "first-admin", password: "password" } } },
    });
    await kuzzle.auth.login("local", { username: "first-admin", password: "password" });
    const role = await ok(kuzzle, "security", "getRole", { _id: "default" });
    assert.deepEqual(Object.keys(role._source.controllers).sort(), ["auth", "server"]);
    await fails(kuzzle, "security", "createFirstAdmin", { _id: "again", body: {} }, "api.process.admin_exists");
  } finally {
    kuzzle.disconnect();
    assert.equal(await node.stop(), 0);
  }
});
