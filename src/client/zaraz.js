/*
 * tagproxy client script: Cloudflare Zaraz's Web API as `window.zaraz`.
 *
 * Served as `{prefix}/s.js` = `window.__tagproxy=<config JSON>;` + s.min.js,
 * the terser build of this file (`npm ci && npm run build`; commit s.min.js).
 * The proxy injects it as the first child of <head>, parser-blocking, so
 * `zaraz` exists before any later inline script runs.
 *
 * Sites that load the tag async can queue calls before it arrives with:
 *   <script>window.zaraz=window.zaraz||{q:[]};["track","set","ecommerce"].forEach(function(m){zaraz[m]=zaraz[m]||function(){zaraz.q.push({m:m,a:[].slice.call(arguments)})}})</script>
 * Queued calls ({m, a} or [m, a]) are replayed in order once the real API is in.
 *
 * Events: POST {prefix}/t, a JSON array of 1..50 events per request, batched
 * per tick; retried with backoff on network errors / 429 / 5xx; whatever is
 * pending when the page is hidden or left goes out with sendBeacon.
 * Plain ES2017, no run-time dependencies.
 */
((w, d, nav, loc) => {
  const z = (w.zaraz = w.zaraz || {});
  if (z._tp) return; // loaded twice
  z._tp = 1;

  const C = Object.assign(
    { prefix: "/_tagproxy", auto_pageview: true, spa: true, data_layer: false, ecommerce: true },
    w.__tagproxy
  );
  const T = C.prefix + "/t";
  const P = "_tp_"; // storage key prefix for session / persist vars
  const warn = (...a) => console.warn("tagproxy:", ...a);
  const json = JSON.stringify;
  const bytes = (s) => new Blob([s]).size;
  const path = () => loc.pathname + loc.search;

  // ---- vars (zaraz.set) ----------------------------------------------------
  const store = (n) => {
    try {
      return w[n + "Storage"];
    } catch (e) {} // storage blocked: page scope only
  };
  const L = store("local");
  const S = store("session");
  const page = {};
  const scopes = { persist: L, session: S };

  const vars = () => {
    const v = {};
    // persist < session < page
    for (const s of [L, S])
      if (s)
        for (let i = 0; i < s.length; i++) {
          const k = s.key(i);
          if (k.startsWith(P))
            try {
              v[k.slice(P.length)] = JSON.parse(s.getItem(k));
            } catch (e) {}
        }
    return Object.assign(v, page);
  };

  // Zaraz: scope defaults to "persist"; undefined removes the key from every
  // scope. The last call wins: setting a key removes it from the other scopes.
  const set = (k, v, o) => {
    k = String(k);
    delete page[k];
    for (const s of [L, S])
      try {
        s.removeItem(P + k);
      } catch (e) {}
    if (v === undefined) return;
    try {
      v = JSON.parse(json(v));
    } catch (e) {
      return warn("zaraz.set: value of", k, "is not JSON", e);
    }
    const s = scopes[(o && o.scope) || "persist"];
    if (s)
      try {
        return s.setItem(P + k, json(v));
      } catch (e) {} // quota / blocked: keep it for this page
    page[k] = v;
  };

  // ---- cookies -------------------------------------------------------------
  const cookie = (n, v, age, p) =>
    (d.cookie =
      n + "=" + v +
      (age != null ? "; Max-Age=" + age : "") +
      "; Path=" + (p || "/") +
      "; SameSite=Lax" +
      (loc.protocol == "https:" ? "; Secure" : ""));

  // ---- events --------------------------------------------------------------
  const uuid = () => {
    try {
      return crypto.randomUUID();
    } catch (e) {
      return [...crypto.getRandomValues(new Uint8Array(16))]
        .map((b) => (b | 256).toString(16).slice(1))
        .join("");
    }
  };

  const Q = []; // not yet sent: {e: event, r: resolve, s: serialized}
  const R = new Set(); // batches waiting for a retry (each with its timer .t)
  let timer = 0;
  // While the document is still parsing, <title> may not exist yet: hold the
  // queue until DOMContentLoaded and fill in the title of events made before.
  let hold = d.readyState == "loading";

  // The one way out for every event (the seam where consent will gate later).
  const emit = (type, name, props, first) =>
    new Promise((r) => {
      let e;
      try {
        e = JSON.parse(
          json({
            type,
            name, // undefined (so absent) for pageviews
            properties: props && typeof props == "object" ? props : {},
            page: { url: loc.href, title: d.title, referrer: d.referrer, encoding: d.characterSet },
            device: {
              viewport: w.innerWidth + "x" + w.innerHeight,
              resolution: screen.width + "x" + screen.height,
              language: nav.language,
              tz_offset: new Date().getTimezoneOffset(),
            },
            vars: vars(),
            ts: Date.now(),
            id: uuid(),
          })
        );
      } catch (err) {
        warn(name || type, "not sent:", err);
        return r();
      }
      Q[first ? "unshift" : "push"]({ e, r });
      hold || timer || (timer = setTimeout(flush));
    });

  // Cut the queue into requests of at most 50 events and ~60 KB.
  const batches = () => {
    const a = [];
    let b = [];
    let n = 2;
    for (const x of Q.splice(0)) {
      const l = bytes((x.s = json(x.e))) + 1;
      if (b.length > 49 || (b.length && n + l > 6e4)) a.push(b), (b = []), (n = 2);
      b.push(x);
      n += l;
    }
    b.length && a.push(b);
    return a;
  };
  const body = (b) => "[" + b.map((x) => x.s) + "]";
  const done = (b) => b.forEach((x) => x.r());

  const beacon = (b) => {
    let ok;
    try {
      ok = nav.sendBeacon(T, new Blob([body(b)], { type: "text/plain" }));
    } catch (e) {}
    ok || warn(b.length, "event(s) could not be sent");
    done(b);
  };

  const run = (i) => {
    try {
      if (i.fetch) fetch(i.fetch, { mode: "no-cors", credentials: "include", keepalive: true }).catch(() => {});
      else if (i.set_cookie) {
        const c = i.set_cookie;
        cookie(c.name, c.value, c.max_age, c.path);
      }
    } catch (e) {}
  };

  const send = async (b, n) => {
    const s = body(b);
    let r;
    let j = {};
    try {
      const p = fetch(T, {
        method: "POST",
        keepalive: bytes(s) <= 6e4, // keepalive bodies are capped at 64 KB
        credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: s,
      });
      try {
        r = await p;
        j = await r.json();
      } catch (e) {}
    } catch (e) {
      return beacon(b); // no fetch, or it threw synchronously
    }
    if (!r || r.status == 429 || r.status > 499) {
      if (n < 4) {
        // retry after 1, 2, 4, 8 s (5 tries in all)
        R.add(b);
        b.t = setTimeout(() => R.delete(b) && send(b, n + 1), 1e3 << n);
        return;
      }
      warn("gave up on", b.length, "event(s):", r ? r.status : "network error");
    } else if (!r.ok) warn(j.error || r.status);
    else (j.instructions || []).forEach(run);
    done(b);
  };

  const flush = () => {
    timer = 0;
    batches().forEach((b) => send(b, 0));
  };

  // Page hidden or left: everything pending (queued or waiting for a retry)
  // goes out now with sendBeacon.
  const bye = () => {
    for (const b of R) clearTimeout(b.t), Q.push(...b);
    R.clear();
    batches().forEach(beacon);
  };
  w.addEventListener("pagehide", bye);
  d.addEventListener("visibilitychange", () => d.visibilityState == "hidden" && bye());

  if (hold)
    d.addEventListener("DOMContentLoaded", () => {
      hold = false;
      for (const x of Q) x.e.page.title = x.e.page.title || d.title;
      flush();
    });

  // ---- pageviews -------------------------------------------------------------
  const pageview = (first) => emit("pageview", undefined, {}, first);
  let here = path();
  // Deferred one task so a title set right after pushState is reported;
  // hash-only changes and same-URL replaceState don't count.
  const changed = () =>
    setTimeout(() => {
      const u = path();
      if (u != here) (here = u), pageview();
    });
  if (C.spa && C.auto_pageview) {
    const h = history;
    for (const m of ["pushState", "replaceState"]) {
      const o = h[m];
      h[m] = function () {
        const r = o.apply(this, arguments);
        changed();
        return r;
      };
    }
    w.addEventListener("popstate", changed);
  }

  // ---- the API -----------------------------------------------------------------
  const off = () => warn("consent is not enabled");
  Object.assign(z, {
    track: (n, p) => (n == null || n === "" ? (warn("zaraz.track needs an event name"), Promise.resolve()) : emit("track", String(n), p)),
    set,
    ecommerce: (n, p) =>
      C.ecommerce ? emit("ecommerce", String(n), p) : (warn("ecommerce is not enabled"), Promise.resolve()),
    spaPageview: () => pageview(),
    debug: (k) => cookie("zarazDebug", k || "", k ? null : 0),
    // Seam for the consent issue: same shape as Zaraz's zaraz.consent.
    consent: {
      APIReady: false,
      modal: false,
      purposes: {},
      get: off,
      set: off,
      getAll: off,
      setAll: off,
      sendQueuedEvents: off,
    },
  });

  // Calls queued by the stub, in order; later pushes to the old queue run at once.
  const call = (x) => {
    const [m, a] = Array.isArray(x) ? x : [x && x.m, x && x.a];
    typeof z[m] == "function" ? z[m](...(a || [])) : warn("unknown queued call", m);
  };
  const q = z.q;
  z.q = { push: call };
  (Array.isArray(q) ? q : []).forEach(call);

  // The load pageview goes first, with the vars the queued calls set.
  if (C.auto_pageview) pageview(true);

  // ---- dataLayer compatibility ------------------------------------------------
  if (C.data_layer) {
    const dl = (w.dataLayer = w.dataLayer || []);
    const take = (o) => {
      if (Object.prototype.toString.call(o) != "[object Object]") return; // e.g. gtag's arguments
      if ("event" in o) {
        const p = Object.assign({}, o);
        delete p.event;
        z.track(o.event, p);
      } else
        for (const k in o)
          try {
            page[k] = JSON.parse(json(o[k])); // GTM data model: page-scope vars
          } catch (e) {}
    };
    dl.forEach(take);
    const push = dl.push;
    dl.push = function () {
      const r = push.apply(this, arguments);
      for (const o of arguments) take(o);
      return r;
    };
  }
})(window, document, navigator, location);
