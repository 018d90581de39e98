// The service worker's logic (gateway/web/static/image-cache.js) under Node's own test
// runner, against small stand-ins for the worker's globals (Cache API, fetch,
// clients): what it stores, answers, revalidates, evicts and refuses. Real Chromium
// runs the same file in tests/integration/test_client_worker.py.
// Run by tests/unit/test_worker_js.py (node --test tests/js/).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const SOURCE = readFileSync(new URL("../../gateway/web/static/image-cache.js", import.meta.url),
                            "utf8");
const ORIGIN = "https://app.example";

class FakeCache {
  constructor() { this.entries = new Map(); }
  async match(key) {
    const hit = this.entries.get(typeof key === "string" ? new URL(key, ORIGIN).href : key.url);
    return hit ? hit.clone() : undefined;
  }
  async put(key, response) {
    const url = typeof key === "string" ? new URL(key, ORIGIN).href : key.url;
    this.entries.delete(url); // re-inserted at the end, as the Cache API does
    this.entries.set(url, response);
  }
  async add(request) { await this.put(request.url, await this.owner.fetch(request)); }
  async delete(key) {
    return this.entries.delete(typeof key === "string" ? new URL(key, ORIGIN).href : key.url);
  }
  async keys() { return [...this.entries.keys()].map((url) => new Request(url)); }
}

// Objects made in the worker's realm, compared by value.
const plain = (value) => JSON.parse(JSON.stringify(value));

function picture(body, extra = {}) {
  return new Response(body, { status: 200, headers: {
    "Content-Type": "image/png", ETag: `"${body}"`, "X-Cache": "MISS", ...extra } });
}

// A worker global with its listeners, fake caches and a scripted network.
function worker(settings = {}) {
  const listeners = {};
  const caches = new Map();
  const env = {
    requests: [], messages: [], online: true, answers: new Map(), now: 1_000_000,
  };
  const storage = {
    async open(name) {
      if (!caches.has(name)) { const c = new FakeCache(); c.owner = self; caches.set(name, c); }
      return caches.get(name);
    },
    async keys() { return [...caches.keys()]; },
    async delete(name) { return caches.delete(name); },
  };
  const self = {
    IMAGE_GATEWAY: settings,
    location: new URL(ORIGIN + "/"),
    caches: storage,
    clients: { matchAll: async () => [{ postMessage: (m) => env.messages.push(m) }] },
    addEventListener: (type, fn) => { listeners[type] = fn; },
    async fetch(input, init = {}) {
      const request = new Request(input instanceof Request ? input.url : new URL(input, ORIGIN),
                                  init);
      env.requests.push({ url: request.url, inm: request.headers.get("If-None-Match") });
      if (!env.online) throw new TypeError("Failed to fetch");
      const answer = env.answers.get(request.url);
      if (!answer) return new Response("{}", { status: 404,
                                               headers: { "Content-Type": "application/json" } });
      return answer(request);
    },
  };
  // Relative URLs resolve against the worker's location, as in a browser.
  const WorkerRequest = class extends Request {
    constructor(input, init) {
      super(typeof input === "string" ? new URL(input, ORIGIN) : input, init);
    }
  };
  const context = vm.createContext({
    self, URL, Request: WorkerRequest, Response, Headers, Map, Set, Promise, Object, Number, String,
    Date: { now: () => env.now }, console,
  });
  vm.runInContext(SOURCE.replace(/\bfetch\(/g, "self.fetch("), context);
  // Responses made inside the worker's realm are "basic" in a browser; here every
  // Response has type "default", so the stand-in fetch marks ours as basic.
  const api = self.imageGatewayCache;
  const send = async (type, data = {}) => {
    const pending = [];
    await listeners[type]({ ...data, waitUntil: (p) => pending.push(p) });
    await Promise.all(pending);
  };
  const get = async (path) => {
    const pending = [];
    let answer = null;
    const event = {
      request: new Request(new URL(path, ORIGIN)),
      respondWith: (p) => { answer = p; },
      waitUntil: (p) => pending.push(p),
    };
    listeners.fetch(event);
    const response = answer ? await answer : null;
    await Promise.all(pending);
    await Promise.all(pending); // a store may queue after the first settle
    return response;
  };
  const entries = async () => [...(await storage.open(api.config.cacheName)).entries.keys()];
  return { self, env, api, send, get, entries, storage };
}

function serve(w, path, make) {
  w.env.answers.set(new URL(path, ORIGIN).href, (request) => {
    const response = make(request);
    Object.defineProperty(response, "type", { value: "basic" });
    return response;
  });
}

test("only same-origin GETs under /images/, never placeholders", () => {
  const { api } = worker();
  const is = (url, method = "GET") => api.isPicture(new Request(url, { method }));
  assert.equal(is(`${ORIGIN}/images/a.png`), true);
  assert.equal(is(`${ORIGIN}/images/a.png?w=64`), true);
  assert.equal(is(`${ORIGIN}/images/a.png?placeholder=blurhash`), false);
  assert.equal(is(`${ORIGIN}/images/a.png`, "HEAD"), false);
  assert.equal(is(`https://cdn.example/images/a.png`), false);
  assert.equal(is(`${ORIGIN}/app/images/a.png`), false);
  assert.equal(is(`${ORIGIN}/client/sw.js`), false);
});

test("the key drops what the gateway ignores, keeps the rest as sent", () => {
  const { api } = worker();
  assert.equal(api.keyOf(`${ORIGIN}/images/a.png?v=3&w=64&utm=x#top`),
               `${ORIGIN}/images/a.png?w=64`);
  assert.equal(api.keyOf(`${ORIGIN}/images/a.png?w=64&exp=99&s=ab%2Fc`),
               `${ORIGIN}/images/a.png?w=64&exp=99&s=ab%2Fc`);
  assert.equal(api.keyOf(`${ORIGIN}/images/a%20b.png`), `${ORIGIN}/images/a%20b.png`);
});

test("a miss is stored; a hit answers from the cache and revalidates", async () => {
  const w = worker();
  serve(w, "/images/a.png?v=1", () => picture("one"));
  const first = await w.get("/images/a.png?v=1");
  assert.equal(await first.text(), "one");
  assert.deepEqual(await w.entries(), [`${ORIGIN}/images/a.png`]);

  serve(w, "/images/a.png?v=2", (request) => {
    assert.equal(request.headers.get("If-None-Match"), '"one"');
    return new Response(null, { status: 304 });
  });
  const second = await w.get("/images/a.png?v=2");
  assert.equal(await second.text(), "one");
  assert.equal(w.api.counts.hits, 1);
  assert.equal(w.api.counts.revalidated, 1);
});

test("new bytes after a purge replace the copy, and pages are told", async () => {
  const w = worker();
  serve(w, "/images/a.png", () => picture("old"));
  await w.get("/images/a.png");
  // The gateway: 304 for the ETag it has, the bytes otherwise.
  serve(w, "/images/a.png", (request) => (request.headers.get("If-None-Match") === '"new"'
    ? new Response(null, { status: 304 }) : picture("new")));
  assert.equal(await (await w.get("/images/a.png")).text(), "old"); // this view: cached
  assert.equal(await (await w.get("/images/a.png")).text(), "new"); // the next one
  assert.deepEqual(plain(w.env.messages), [{ type: "image-gateway:updated",
                                      url: `${ORIGIN}/images/a.png` }]);
});

test("the fallback picture, errors and JSON are never stored", async () => {
  const w = worker();
  serve(w, "/images/gone.png", () => picture("pfp", { "X-Cache": "FALLBACK" }));
  serve(w, "/images/bad.png", () => new Response("{}", { status: 502,
    headers: { "Content-Type": "application/json" } }));
  serve(w, "/images/a.png/url", () => new Response("{}", {
    headers: { "Content-Type": "application/json" } }));
  assert.equal((await w.get("/images/gone.png")).status, 200);
  assert.equal((await w.get("/images/bad.png")).status, 502);
  assert.equal((await w.get("/images/a.png/url")).status, 200);
  assert.deepEqual(await w.entries(), []);
});

test("a picture deleted since is dropped when the fallback comes back", async () => {
  const w = worker();
  serve(w, "/images/a.png", () => picture("one"));
  await w.get("/images/a.png");
  serve(w, "/images/a.png", () => picture("pfp", { "X-Cache": "FALLBACK" }));
  await w.get("/images/a.png");
  assert.deepEqual(await w.entries(), []);
  assert.equal(w.api.counts.removed, 1);
});

test("at most maxEntries, the oldest stored go first", async () => {
  const w = worker({ maxEntries: 3 });
  for (const name of ["a", "b", "c", "d", "e"]) {
    serve(w, `/images/${name}.png`, () => picture(name));
    await w.get(`/images/${name}.png`);
  }
  assert.deepEqual(await w.entries(), ["c", "d", "e"].map((n) => `${ORIGIN}/images/${n}.png`));
  assert.equal(w.api.counts.evicted, 2);
});

test("older than maxAge: not answered, dropped, fetched again", async () => {
  const w = worker({ maxAge: 60 });
  serve(w, "/images/a.png", () => picture("one"));
  await w.get("/images/a.png");
  w.env.now += 61_000;
  serve(w, "/images/a.png", () => picture("two"));
  assert.equal(await (await w.get("/images/a.png")).text(), "two");
  assert.equal(w.api.counts.expired, 1);
});

test("offline: the cached copy, else the fallback cached at install", async () => {
  const w = worker();
  serve(w, "/client/fallback", () => picture("pfp"));
  await w.send("install");
  serve(w, "/images/a.png", () => picture("one"));
  await w.get("/images/a.png");
  w.env.online = false;
  assert.equal(await (await w.get("/images/a.png")).text(), "one");
  assert.equal(await (await w.get("/images/never.png")).text(), "pfp");
  assert.deepEqual(await w.entries(), [`${ORIGIN}/images/a.png`]);
  assert.equal(w.api.counts.fallbacks, 1);
});

test("messages: stats and clear", async () => {
  const w = worker({ maxEntries: 9 });
  serve(w, "/images/a.png", () => picture("one"));
  await w.get("/images/a.png");
  const replies = [];
  const port = { postMessage: (m) => replies.push(m) };
  await w.send("message", { data: { type: "stats" }, ports: [port] });
  assert.equal(replies[0].entries, 1);
  assert.equal(replies[0].maxEntries, 9);
  assert.deepEqual(plain(replies[0].urls), [`${ORIGIN}/images/a.png`]);
  await w.send("message", { data: { type: "clear" }, ports: [port] });
  assert.equal(replies[1].type, "image-gateway:cleared");
  assert.deepEqual(await w.entries(), []);
});
