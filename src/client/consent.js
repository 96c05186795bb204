/*
 * tagproxy consent script: Cloudflare Zaraz's Consent API as `zaraz.consent`
 * and the built-in consent modal (SPEC §9).
 *
 * Served as `{prefix}/c.js` = c.min.js, the terser build of this file
 * (`npm run build`; commit c.min.js). s.js loads it (async) only when the
 * config has `consent` ({cookie, show_modal, tcf, purposes: [{id, name,
 * description, default}], texts: {title|intro|accept_all|reject_all|save:
 * {lang: text}}}); until then `zaraz.consent` is a stub whose calls
 * wait in `zaraz._tp.q`. This script turns that same object into the API.
 *
 * The choice lives in the `cookie` (cf_consent): URL-encoded JSON, purpose id
 * → true / false, absent = not chosen. While a purpose is undecided, s.js
 * keeps a copy of each event (`_tp.c`); after a choice (or
 * sendQueuedEvents()) the copies go out again with `consent_replay: true`
 * and the same ids (the collector delivers those only to tools whose
 * purposes are now all granted), then are cleared.
 * Plain ES2017, like s.js; no external assets.
 */
((w, d, nav) => {
  const z = w.zaraz;
  const X = z && z._tp;
  const K = (w.__tagproxy || {}).consent;
  if (!K || !X || !X.c || X.api) return; // no consent, no s.js, or loaded twice
  X.api = 1;
  const A = z.consent;
  const P = K.purposes || [];
  const ids = P.map((p) => p.id);
  const has = (id) => ids.includes(id);
  const warn = (...a) => console.warn("tagproxy:", ...a);
  const $ = (s) => root.querySelectorAll(s);
  const fire = (n) => d.dispatchEvent(new Event("zarazConsent" + n));

  // ---- the choice ----------------------------------------------------------
  // {id: bool} for the configured purposes the visitor decided.
  const read = () => {
    const o = {};
    for (const c of d.cookie.split(/; */))
      if (c.startsWith(K.cookie + "="))
        try {
          const v = JSON.parse(decodeURIComponent(c.slice(K.cookie.length + 1)));
          for (const id of ids) typeof v[id] == "boolean" && (o[id] = v[id]);
        } catch (e) {}
    return o;
  };
  const tc = () => /(^|;\s*)euconsent-v2=./.test(d.cookie);
  // Every purpose decided (TCF mode: the CMP wrote its TC string).
  const all = (c) => (K.tcf ? tc() : ids.every((id) => id in c));
  // Granted per purpose as the collector sees it (undecided = the default;
  // TCF mode: unknown here, so "some TC string").
  const eff = (c) => {
    const o = {};
    for (const p of P) o[p.id] = K.tcf ? tc() : p.id in c ? c[p.id] : p.default == "granted";
    return o;
  };
  let G; // the grants the kept copies were sent under

  // Re-sends the kept copies, then forgets them, when a purpose is granted
  // now that was not when they were sent (else a replay could reach no tool
  // that lacks them: they stay kept while a purpose is undecided). A copy
  // still waiting to be sent goes out with the new cookie anyway.
  const replay = () => {
    const c = read();
    const now = eff(c);
    const more = ids.some((id) => now[id] && !G[id]);
    const waiting = (e) => X.Q.some((x) => x.e == e) || [...X.R].some((b) => b.some((x) => x.e == e));
    if (more || all(c)) {
      for (const e of X.c.splice(0)) more && !waiting(e) && X.s(Object.assign({}, e, { consent_replay: true }));
      X.d && warn(X.d, "event(s) waiting for consent were dropped (over 100)");
      X.d = 0;
    }
    G = now;
    X.k = !all(c);
  };

  const changed = () => {
    replay();
    sync(eff(read()));
    fire("ChoicesUpdated");
  };

  const set = (o) => {
    const c = read();
    for (const id in o || {})
      has(id) && typeof o[id] == "boolean" ? (c[id] = o[id]) : warn("zaraz.consent.set: ignored", id);
    d.cookie =
      K.cookie + "=" + encodeURIComponent(JSON.stringify(c)) +
      "; Max-Age=31536000; Path=/; SameSite=Lax" +
      (location.protocol == "https:" ? "; Secure" : "");
    changed();
  };
  // {id: f(id)} for every purpose.
  const map = (f) => ids.reduce((o, id) => ((o[id] = f(id)), o), {});
  const each = (v) => map(() => !!v);

  // ---- the modal -----------------------------------------------------------
  let host, root, open, back;
  // The checkboxes' state (also while the modal is closed).
  let boxes = {};
  const sync = (o) => {
    for (const id in o) has(id) && (boxes[id] = !!o[id]);
    root && $("input").forEach((i, n) => (i.checked = boxes[ids[n]]));
  };
  // A text in the visitor's language: exact tag, primary subtag, en, the first.
  const L = nav.language || "en";
  const text = (t) =>
    (t && typeof t == "object" ? [L, L.split("-")[0], "en"].map((k) => t[k]).concat(Object.values(t)).find((v) => v != null) : t) || "";

  const focusables = () => [...$("input,button")];
  const show = () => {
    if (!d.body) return d.addEventListener("DOMContentLoaded", show);
    if (!host) {
      host = d.createElement("div");
      host.id = "tagproxy-consent";
      root = host.attachShadow({ mode: "open" });
      root.innerHTML =
        "<style>:host{all:initial}" +
        ".w{--a:var(--tp-consent-accent,#1a56db);--b:var(--tp-consent-bg,#fff);position:fixed;top:0;left:0;right:0;bottom:0;z-index:2147483647;display:flex;align-items:center;justify-content:center;padding:1em;background:var(--tp-consent-backdrop,#0008);font:var(--tp-consent-font,15px/1.45 system-ui,sans-serif)}" +
        ".d{background:var(--b);color:var(--tp-consent-fg,#1f2328);border-radius:var(--tp-consent-radius,10px);box-shadow:0 8px 40px #0006;padding:1.5em;width:100%;max-width:34em;max-height:100%;overflow:auto;box-sizing:border-box}" +
        "h2{font-size:1.25em;margin:0 0 .4em}p{margin:0 0 1em}.p{display:flex;gap:.7em;margin:0 0 .8em}" +
        "input{flex:none;width:1.2em;height:1.2em;margin:.15em 0 0;accent-color:var(--a)}label span{display:block;opacity:.8;font-size:.9em}" +
        ".b{display:flex;flex-wrap:wrap;justify-content:flex-end;gap:.5em;margin-top:1.2em}" +
        "button{font:inherit;padding:.5em 1.1em;border-radius:6px;border:2px solid var(--a);background:var(--b);color:var(--a);cursor:pointer}" +
        "button+button{background:var(--a);color:var(--tp-consent-accent-fg,#fff)}" +
        ":focus-visible{outline:3px solid var(--tp-consent-focus,#e8710a);outline-offset:2px}</style>" +
        '<div class=w><div class=d role=dialog aria-modal=true aria-labelledby=t aria-describedby=s tabindex=-1>' +
        "<h2 id=t></h2><p id=s></p>" +
        P.map((p, i) => `<div class=p><input type=checkbox id=c${i}><label for=c${i}><b></b><span></span></label></div>`).join("") +
        "<div class=b><button></button><button></button><button></button></div></div></div>";
      // The modal's own texts ([consent.texts.<lang>], built-in en/de/fr/es),
      // picked like purpose texts; set as text, never as HTML.
      const T = K.texts || {};
      const own = (k, en) => text(T[k]) || en;
      $("#t")[0].textContent = own("title", "Privacy choices");
      $("#s")[0].textContent = own("intro", "");
      ["save", "reject_all", "accept_all"].forEach((k, i) => ($("button")[i].textContent = own(k, k)));
      $("label").forEach((l, i) => {
        l.firstChild.textContent = A.purposes[ids[i]].name;
        l.lastChild.textContent = A.purposes[ids[i]].description;
      });
      $("input").forEach((i, n) => (i.onchange = () => (boxes[ids[n]] = i.checked)));
      const [save, no, yes] = $("button");
      save.onclick = () => (hide(), set(boxes));
      no.onclick = () => (hide(), set(each(0)));
      yes.onclick = () => (hide(), set(each(1)));
      root.addEventListener("keydown", (e) => {
        // Escape grants nothing: it closes only once the visitor has chosen.
        if (e.key == "Escape") all(read()) && hide();
        else if (e.key == "Tab") {
          // Tab / Shift+Tab cycle inside the dialog.
          const f = focusables();
          const i = f.indexOf(root.activeElement);
          f[e.shiftKey ? (i < 1 ? f.length : i) - 1 : (i + 1) % f.length].focus();
        } else return;
        e.preventDefault();
      });
      // Focus that leaves the dialog (e.g. a page script) comes back.
      d.addEventListener("focusin", (e) => open && e.target != host && focusables()[0].focus());
    }
    if (open) return;
    open = 1;
    back = d.activeElement;
    sync(boxes);
    d.body.append(host);
    focusables()[0].focus();
  };
  const hide = () => {
    if (!open) return;
    open = 0;
    host.remove();
    back && back.focus && back.focus();
  };

  // ---- the API ---------------------------------------------------------------
  const m0 = A.modal;
  const q = X.q;
  Object.defineProperty(A, "modal", {
    get: () => !!open,
    set: (v) => (v ? show() : hide()),
    enumerable: true,
  });
  const purposes = {};
  P.forEach((p, order) => (purposes[p.id] = { id: p.id, name: text(p.name), description: text(p.description), order }));
  Object.assign(A, {
    purposes,
    get: (id) => (has(id) ? read()[id] : undefined),
    set,
    getAll: () => {
      const c = read();
      return map((id) => c[id]);
    },
    setAll: (v) => set(each(v)),
    sendQueuedEvents: replay,
    getAllCheckboxes: () => Object.assign({}, boxes),
    setCheckboxes: sync,
    setAllCheckboxes: (v) => sync(each(v)),
  });
  const c = read();
  G = eff(c);
  boxes = Object.assign({}, G);
  // Everything decided already: nothing will be replayed.
  (X.k = !all(c)) || (X.c.length = 0);
  // TCF mode: the site's CMP decides; replay once the visitor acted.
  K.tcf &&
    w.__tcfapi &&
    w.__tcfapi("addEventListener", 2, (t, ok) => ok && t.eventStatus == "useractioncomplete" && setTimeout(changed));
  X.q = { push: ([m, a]) => A[m](...a) };
  q.forEach(X.q.push);
  A.APIReady = true;
  fire("APIReady");
  (m0 || (K.show_modal && !K.tcf && !all(read()))) && show();
})(window, document, navigator);
