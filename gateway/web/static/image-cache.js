/* image-gateway: the pictures of /images/ kept in the browser for offline use.
 *
 * Served as /client/image-cache.js (for a service worker of your own:
 * importScripts("/client/image-cache.js")) and, with a few lifecycle lines, as
 * /client/sw.js (a complete worker: navigator.serviceWorker.register("/client/sw.js",
 * {scope: "/"})). The gateway writes its settings (client.max_entries,
 * client.max_age) into self.IMAGE_GATEWAY above this text; a worker that sets
 * self.IMAGE_GATEWAY before importing overrides them.
 *
 * Only same-origin GET requests under /images/ are answered, cache first:
 *   - a cached copy younger than maxAge is answered at once, and revalidated in the
 *     background (If-None-Match): a purged or replaced picture is stored anew and
 *     shown on the next view (pages are told: {type: "image-gateway:updated", url});
 *   - otherwise the network; a 200 image that is not the gateway's fallback picture
 *     (X-Cache: FALLBACK) is stored, at most maxEntries, the oldest stored go first;
 *   - offline with nothing cached: the fallback picture, cached at install.
 * Placeholders (?placeholder=), errors, JSON and the fallback are never stored.
 * One entry per picture and variant, as in the gateway: query parameters it
 * ignores (cache busters, ?v=3) are not part of the key.
 * Messages: {type: "stats"} and {type: "clear"}, answered on the MessageChannel port
 * passed along, else to the sender.
 */
(function (self) {
  "use strict";

  const config = Object.assign({
    maxEntries: 200,
    maxAge: 604800,
    prefix: "/images/",
    fallback: "/client/fallback",
    cacheName: "image-gateway-pictures-v1",
    fallbackCache: "image-gateway-fallback-v1",
  }, self.IMAGE_GATEWAY || {});
  const STORED_AT = "X-Image-Gateway-Stored-At";
  const counts = { hits: 0, misses: 0, revalidated: 0, updated: 0, removed: 0,
                   expired: 0, evicted: 0, offline: 0, fallbacks: 0 };
  const refreshing = new Map();
  // The parameters the gateway reads (variants, signature); the rest it ignores.
  const KEPT = new Set(["w", "h", "fit", "format", "q", "dpr", "preset", "s", "exp"]);

  function keyOf(url) {
    const parsed = new URL(url);
    // Filtered as sent, never re-encoded: a signature covers these very characters.
    parsed.search = parsed.search.slice(1).split("&")
      .filter((part) => KEPT.has(decodeURIComponent(part.split("=")[0])))
      .join("&");
    parsed.hash = "";
    return parsed.href;
  }

  function isPicture(request) {
    if (request.method !== "GET") return false;
    const url = new URL(request.url);
    return url.origin === self.location.origin && url.pathname.startsWith(config.prefix)
      && !url.searchParams.has("placeholder");
  }

  function storable(response) {
    return response.status === 200 && response.type === "basic"
      && response.headers.get("X-Cache") !== "FALLBACK"
      && (response.headers.get("Content-Type") || "").startsWith("image/");
  }

  function ageOf(response) {
    const at = Number(response.headers.get(STORED_AT));
    return at > 0 ? (Date.now() - at) / 1000 : Infinity;
  }

  async function store(cache, key, response) {
    const headers = new Headers(response.headers);
    headers.set(STORED_AT, String(Date.now()));
    const body = await response.blob();
    // put() replaces an entry at the end of the list: keys() is oldest stored first.
    await cache.put(key, new Response(body, { status: 200, statusText: "OK", headers }));
    const keys = await cache.keys();
    for (let i = 0; i < keys.length - config.maxEntries; i++) {
      await cache.delete(keys[i]);
      counts.evicted++;
    }
  }

  async function notify(url) {
    const pages = await self.clients.matchAll({ type: "window" });
    for (const page of pages) page.postMessage({ type: "image-gateway:updated", url });
  }

  function refresh(cache, key, url, cached) {
    if (refreshing.has(key)) return refreshing.get(key);
    const headers = {};
    const etag = cached.headers.get("ETag");
    if (etag) headers["If-None-Match"] = etag;
    // no-store: the question goes to the gateway, not to the browser's HTTP cache,
    // which would say "fresh" for max-age after a purge.
    const done = fetch(url, { headers, cache: "no-store", credentials: "same-origin" })
      .then(async (response) => {
        if (response.status === 304) {
          counts.revalidated++;
          // Confirmed: its age starts again (not on every view: a put costs a write).
          if (ageOf(cached) > config.maxAge / 10) await store(cache, key, cached);
        } else if (storable(response)) {
          counts.updated++;
          await store(cache, key, response);
          await notify(key);
        } else if (response.status === 200 || response.status === 404) {
          counts.removed++; // deleted: the fallback now, which is never kept
          await cache.delete(key);
        }
      })
      .catch(() => { /* offline or failing: the cached copy stays */ })
      .finally(() => refreshing.delete(key));
    refreshing.set(key, done);
    return done;
  }

  async function respond(event) {
    const request = event.request;
    const key = keyOf(request.url);
    const cache = await self.caches.open(config.cacheName);
    const cached = await cache.match(key, { ignoreVary: true });
    if (cached && ageOf(cached) <= config.maxAge) {
      counts.hits++;
      event.waitUntil(refresh(cache, key, request.url, cached.clone()));
      return cached;
    }
    if (cached) {
      counts.expired++;
      await cache.delete(key);
    }
    try {
      const response = await fetch(request);
      if (storable(response)) {
        counts.misses++;
        event.waitUntil(store(cache, key, response.clone()));
      }
      return response;
    } catch (error) {
      counts.offline++;
      const fallback = await (await self.caches.open(config.fallbackCache)).match(config.fallback);
      if (!fallback) throw error;
      counts.fallbacks++;
      return fallback;
    }
  }

  async function stats() {
    const keys = await (await self.caches.open(config.cacheName)).keys();
    return Object.assign({ type: "image-gateway:stats", entries: keys.length,
                           maxEntries: config.maxEntries, maxAge: config.maxAge,
                           urls: keys.map((k) => k.url) }, counts);
  }

  async function dropExpired() {
    const cache = await self.caches.open(config.cacheName);
    for (const key of await cache.keys()) {
      const cached = await cache.match(key, { ignoreVary: true });
      if (!cached || ageOf(cached) > config.maxAge) {
        await cache.delete(key);
        counts.expired++;
      }
    }
  }

  self.addEventListener("install", (event) => {
    event.waitUntil(self.caches.open(config.fallbackCache)
      .then((cache) => cache.add(new Request(config.fallback, { cache: "reload" }))));
  });

  self.addEventListener("activate", (event) => {
    event.waitUntil((async () => {
      const ours = [config.cacheName, config.fallbackCache];
      for (const name of await self.caches.keys()) {
        if (name.startsWith("image-gateway-") && !ours.includes(name)) {
          await self.caches.delete(name); // an older version's
        }
      }
      await dropExpired();
    })());
  });

  self.addEventListener("fetch", (event) => {
    if (isPicture(event.request)) event.respondWith(respond(event));
  });

  self.addEventListener("message", (event) => {
    const data = event.data || {};
    const reply = (value) => {
      if (event.ports && event.ports[0]) event.ports[0].postMessage(value);
      else if (event.source) event.source.postMessage(value);
    };
    if (data.type === "stats") {
      event.waitUntil(stats().then(reply));
    } else if (data.type === "clear") {
      event.waitUntil(self.caches.delete(config.cacheName).then(() => {
        reply({ type: "image-gateway:cleared" });
      }));
    }
  });

  self.imageGatewayCache = { config, counts, stats, isPicture, storable, keyOf };
})(self);
