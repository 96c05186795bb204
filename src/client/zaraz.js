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
 * Client-side triggers (config `triggers`, SPEC §7) send zaraz.track(<id>).
 * With consent on (config `consent`), zaraz.consent comes from {prefix}/c.js
 * (consent.js), loaded async; this file only keeps copies of the events sent
 * while a purpose is undecided, for c.js to replay.
 * Plain ES2017, no run-time dependencies.
 */
((w, d, nav, loc) => {
  const z = (w.zaraz = w.zaraz || {});
  if (z._tp) return; // loaded twice

  const C = Object.assign(
    { prefix: "/_tagproxy", auto_pageview: true, spa: true, data_layer: false, ecommerce: true },
    w.__tagproxy
  );
  const T = C.prefix + "/t";
  const P = "_tp_"; // storage key prefix for session / persist vars
  // Resolves a promise, for the API calls that return one.
  const warn = (...a) => (console.warn("tagproxy:", ...a), Promise.resolve());
  const json = JSON.stringify;
  const bytes = (s) => new Blob([s]).size;
  const path = () => loc.pathname + loc.search;
  const on = (t, e, f, o) => t.addEventListener(e, f, o);

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
  const cookie = (n, v, age) =>
    (d.cookie =
      n + "=" + v +
      (age != null ? "; Max-Age=" + age : "") +
      "; Path=/" +
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

  const add = (e) =>
    new Promise((r) => {
      Q.push({ e, r });
      hold || timer || (timer = setTimeout(flush));
    });
  // What the consent script (c.js, consent.js) works with: `c` copies of the
  // events sent while a purpose is undecided (at most 100), kept while `k`;
  // `q` the zaraz.consent calls made before c.js loaded; `s` queues an event;
  // `Q` / `R` the events not sent yet / waiting for a retry.
  const X = (z._tp = { c: [], k: C.consent, d: 0, q: [], s: add, Q, R });
  // The current (virtual) page's referrer: see `moved`.
  let ref = d.referrer;
  // The one way out for every event.
  const emit = (type, name, props) => {
    let e;
    try {
      e = JSON.parse(
        json({
          type,
          name, // undefined (so absent) for pageviews
          properties: props && typeof props == "object" ? props : {},
          page: { url: loc.href, title: d.title, referrer: ref, encoding: d.characterSet },
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
      return warn(name || type, "not sent:", err);
    }
    // Over 100: the oldest goes; the first time, a warning (c.js tells the total).
    X.k && X.c.push(e) > 100 && (X.c.shift(), X.d++ || warn("consent queue full (100)"));
    return add(e);
  };

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
      // Tool cookies (`_fbp`, click ids) come as the collector's own
      // Set-Cookie headers, never from here (SPEC §5).
      if (i.fetch) fetch(i.fetch, { mode: "no-cors", credentials: "include", keepalive: true }).catch(() => {});
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

  // A new visitor's ids (tp_cid / tp_sid) come with the collector's first
  // answer: until that cookie exists, one request at a time, or two requests
  // in flight would make two visitors. The page's first request (with the
  // load pageview) also goes alone, so nothing overtakes that pageview, and
  // so does each of several batches, to arrive in order.
  let gate;
  let one = 1;
  const flush = () => {
    timer = 0;
    if (gate) return;
    const a = batches();
    if (a[1] || (a[0] && (one || !/(^|;\s*)tp_cid=/.test(d.cookie)))) {
      one = 0;
      Q.unshift(...a.slice(1).flat());
      gate = send(a[0], 0).finally(() => {
        gate = 0;
        Q.length && flush();
      });
    } else a.forEach((b) => send(b, 0));
  };

  // Page hidden or left: everything pending goes out now with sendBeacon,
  // in order: what waits for a retry is older than what is queued.
  const bye = () => {
    const o = [];
    for (const b of R) clearTimeout(b.t), o.push(...b);
    R.clear();
    Q.unshift(...o);
    batches().forEach(beacon);
  };
  on(w, "pagehide", bye);
  on(d, "visibilitychange", () => d.visibilityState == "hidden" && bye());

  if (hold)
    on(d, "DOMContentLoaded", () => {
      hold = false;
      for (const x of Q) x.e.page.title = x.e.page.title || d.title;
      flush();
      arm();
    });

  // ---- pageviews -------------------------------------------------------------
  const pageview = () => emit("pageview"); // no name, no properties
  let here = path();
  let href = loc.href;
  let nv = 0; // a virtual page began whose pageview is still to come
  // A new path or query is a virtual page, whose referrer (for its pageview
  // and every later event) is the previous page's URL, without the fragment
  // like document.referrer; gtag sets page_referrer so on history changes.
  // Noted at once, so an event sent right after pushState has it too.
  const moved = () => {
    const u = path();
    u != here && ((ref = loc.origin + here), (here = u), (nv = 1));
  };
  // The pageview is deferred one task so a title set right after pushState
  // is reported. On a virtual page every client trigger restarts; a
  // hash-only change re-checks the triggers' page rules.
  const changed = () => (
    moved(),
    setTimeout(() => {
      if (loc.href == href) return;
      href = loc.href;
      const v = nv;
      nv = 0;
      v && C.auto_pageview && pageview();
      arm(v);
    })
  );
  if (C.spa) {
    const h = history;
    for (const m of ["pushState", "replaceState"]) {
      const o = h[m];
      h[m] = function () {
        const r = o.apply(this, arguments);
        changed();
        return r;
      };
    }
    on(w, "popstate", changed);
  }

  // ---- client-side triggers (SPEC §7) -------------------------------------------
  // C.triggers: [{id, rule: {<kind>: {...}}, page: [{path, op, value, exclude}]}].
  // Each fires zaraz.track(id, props); the server checks every rule again, so
  // page rules here only decide where a trigger is armed.
  const A = C.triggers || [];
  const fire = (t, p) => emit("track", t.id, p);
  const props = (el) => {
    const p = {};
    for (const a of el.attributes || []) p[a.name] = a.value;
    p.textContent = (el.textContent || "").trim().slice(0, 200);
    return p;
  };
  // `page.url[.part]`, `page.query.<param>`, `page.title|referrer|encoding`.
  const val = (p) => {
    const [, a, ...b] = p.split(".");
    const k = b.join(".");
    const v =
      a == "url" ? (k ? loc[k] : loc.href)
      : a == "query" ? new URLSearchParams(loc.search).get(k)
      : a == "encoding" ? d.characterSet
      : a == "referrer" ? ref
      : d[a];
    return typeof v == "string" ? v : "";
  };
  // The 14 ops, case-sensitive; the numeric ones are false on a missing or
  // non-numeric side.
  const test = (l, op, v) => {
    const n = op.startsWith("not_");
    const o = n ? op.slice(4) : op;
    if (/^(g|l)/.test(o)) {
      const a = l.trim() ? +l : NaN;
      return isFinite(a) && isFinite((v = +v)) && (o[0] == "g" ? a > v || (o.length > 12 && a == v) : a < v || (o.length > 9 && a == v));
    }
    return (
      n !=
      (o == "equals" ? l == v
      : o == "contains" ? l.includes(v)
      : o == "starts_with" ? l.startsWith(v)
      : o == "ends_with" ? l.endsWith(v)
      : o == "matches_regex" ? RegExp(v).test(l)
      : n)
    );
  };
  // The closest element at or above `el` that the rule's selector matches.
  const hit = (el, r) => {
    if (r.css) return el.closest(r.css);
    let m;
    const x = d.evaluate(r.xpath, d, null, 7, null);
    for (let i = 0; i < x.snapshotLength; i++) {
      const n = x.snapshotItem(i);
      if (n.contains(el) && !(m && n.contains(m))) m = n;
    }
    return m;
  };
  const each = (k, f) => {
    for (const t of A)
      if (t.on && t.rule[k])
        try {
          f(t, t.rule[k]);
        } catch (e) {
          warn("trigger", t.id, e);
        }
  };

  // Clicks are matched in the capture phase (before the page can stop them);
  // navigation is held only in the bubble phase, once the page's own handlers
  // (e.g. a SPA router) had their chance to preventDefault.
  let held;
  on(w, "click", (e) => {
    const el = e.target;
    const s = [];
    let ms = 0;
    held = 0;
    if (el.closest)
      each("click", (t, r) => {
        const m = hit(el, r);
        if (m) s.push(fire(t, props(m))), (ms = Math.max(ms, r.wait_ms | 0));
      });
    if (ms) held = [e, s, ms];
  }, true);
  on(w, "click", (e) => {
    if (!held || held[0] != e || e.defaultPrevented || e.button || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
    const el = e.target;
    const a = el.closest("a[href]");
    const b = el.closest("button,input");
    const f = b && b.form;
    const self = (x) => /^(_self)?$/i.test(x);
    let go;
    if (a) {
      const u = a.href;
      if (self(a.target) && !a.hasAttribute("download") && /^https?:$/.test(a.protocol)) go = () => loc.assign(u);
    } else if (f && /^(submit|image)$/.test(b.type) && self(b.formTarget || f.target))
      go = () => (f.requestSubmit ? f.requestSubmit(b) : f.submit());
    if (go) {
      e.preventDefault();
      let g = 0;
      const once = () => g++ || go();
      Promise.all(held[1]).then(once);
      setTimeout(once, held[2]);
    }
  });
  on(d, "submit", (e) => {
    const f = e.target;
    each("form_submit", (t, r) => f.matches(r.css) && (!r.validate || f.checkValidity()) && fire(t, props(f)));
  }, true);

  // Element-visible scans, re-run (debounced) when the DOM changes.
  const scans = new Set();
  let mo;
  // Arm / disarm functions per kind; each returns its disarm.
  const K = {
    timer: (t, r) => {
      let n = 0;
      const i = setInterval(() => {
        fire(t, { count: ++n });
        n == r.limit && clearInterval(i);
      }, r.interval_ms);
      return () => clearInterval(i);
    },
    // Depth scrolled = bottom of the viewport; "50%" of the document height.
    scroll_depth: (t, r) => {
      const f = new Set();
      const h = () => {
        const y = Math.ceil(w.scrollY + w.innerHeight);
        const H = (d.scrollingElement || d.documentElement).scrollHeight;
        for (const x of r.depths)
          f.has(x) || y < (/%$/.test(x) ? (parseFloat(x) * H) / 100 : parseFloat(x)) || (f.add(x), fire(t, { depth: x }));
      };
      on(w, "scroll", h, { passive: true });
      return () => w.removeEventListener("scroll", h);
    },
    element_visible: (t, r) => {
      const seen = new WeakSet();
      const io = new IntersectionObserver((es) => {
        for (const e of es)
          if (e.isIntersecting && !seen.has(e.target)) seen.add(e.target), io.unobserve(e.target), fire(t, props(e.target));
      });
      const scan = () => d.querySelectorAll(r.css).forEach((e) => seen.has(e) || io.observe(e));
      scan();
      scans.add(scan);
      if (!mo) {
        let p = 0;
        mo = new MutationObserver(
          () =>
            p ||
            (p = setTimeout(() => {
              p = 0;
              scans.forEach((f) => {
                try {
                  f();
                } catch (e) {}
              });
            }, 99))
        );
        mo.observe(d.documentElement, { childList: true, subtree: true });
      }
      return () => (io.disconnect(), scans.delete(scan));
    },
  };

  // Arms the triggers whose page rules hold here and disarms the others;
  // `reset` (a new virtual page) restarts the ones that stay armed.
  const arm = (reset) => {
    for (const t of A) {
      const ok = (t.page || []).every((p) => {
        try {
          return test(val(p.path), p.op, p.value) == !p.exclude;
        } catch (e) {
          return 1; // e.g. a regex JS can't compile: the server decides
        }
      });
      if (t.on && (reset || !ok)) (t.on = 0), t.off && t.off();
      if (ok && !t.on) {
        t.on = 1;
        t.off = 0;
        for (const k in t.rule)
          try {
            t.off = K[k] && K[k](t, t.rule[k]);
          } catch (e) {
            warn("trigger", t.id, e);
          }
      }
    }
  };

  // ---- the API -----------------------------------------------------------------
  // zaraz.consent: until c.js has loaded (only with consent enabled), a stub
  // whose calls wait in X.q; c.js turns this same object into the real API.
  const off = () => warn("consent is not enabled");
  const con = { APIReady: false, modal: false, purposes: {} };
  for (const m of "get set getAll setAll sendQueuedEvents".split(" "))
    con[m] = C.consent ? (...a) => void X.q.push([m, a]) : off;
  // A script element made by script is async.
  C.consent && d.head.append(Object.assign(d.createElement("script"), { src: C.prefix + "/c.js" }));
  Object.assign(z, {
    track: (n, p) => (n == null || n === "" ? warn("zaraz.track needs an event name") : emit("track", String(n), p)),
    set,
    ecommerce: (n, p) =>
      C.ecommerce ? emit("ecommerce", String(n), p) : warn("ecommerce is not enabled"),
    // Also stands for the automatic pageview of a history change just made.
    spaPageview: () => (moved(), (nv = 0), pageview(), arm(1)),
    debug: (k) => cookie("zarazDebug", k || "", k ? null : 0),
    consent: con,
  });

  // The load pageview goes first (in the queue, the consent copies and by
  // timestamp), then the calls queued by the stub, in order; it carries the
  // vars those calls set. Later pushes to the old queue run at once.
  const pv = C.auto_pageview && (pageview(), Q[Q.length - 1]);
  const call = (x) => {
    const [m, a] = Array.isArray(x) ? x : [x && x.m, x && x.a];
    typeof z[m] == "function" ? z[m](...(a || [])) : warn("unknown queued call", m);
  };
  const q = z.q;
  z.q = { push: call };
  (Array.isArray(q) ? q : []).forEach(call);
  pv && (pv.e.vars = vars());
  // Triggers arm once the DOM is parsed (page rules may read the title).
  hold || arm();

  // ---- dataLayer compatibility ------------------------------------------------
  if (C.data_layer) {
    const dl = (w.dataLayer = w.dataLayer || []);
    const take = (o) => {
      if ({}.toString.call(o) != "[object Object]") return; // e.g. gtag's arguments
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
