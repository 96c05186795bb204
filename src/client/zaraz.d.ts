// Typings of `window.zaraz` as served by tagproxy at `{prefix}/s.js`
// (Cloudflare Zaraz's Web API). Use with `/// <reference path="zaraz.d.ts" />`
// or by adding the file to a tsconfig's "files"/"include".

export {};

declare global {
  /** Lifetime of a `zaraz.set` value. Zaraz's default is `"persist"`. */
  type ZarazScope = "page" | "session" | "persist";

  /** Free-form event properties; they must survive `JSON.stringify`. */
  type ZarazEventProperties = Record<string, unknown>;

  interface ZarazSetOptions {
    /** `page`: this page only; `session`: sessionStorage; `persist` (default): localStorage. */
    scope?: ZarazScope;
  }

  /** One consent purpose, its texts in the visitor's language. */
  interface ZarazPurpose {
    id: string;
    name: string;
    description: string;
    /** Position in the configuration (and in the modal), from 0. */
    order: number;
  }

  /** `{ purposeId: granted }`. */
  type ZarazConsentPreferences = Record<string, boolean>;

  /**
   * Zaraz's Consent API. With consent off in tagproxy, `APIReady` stays
   * `false` and every method only warns ("consent is not enabled"). With it
   * on, s.js loads `{prefix}/c.js`; until then `get`, `set`, `getAll`,
   * `setAll` and `sendQueuedEvents` are queued (they return `undefined`) and
   * `modal = true` takes effect once it has loaded; then `APIReady` becomes
   * `true` and `zarazConsentAPIReady` is dispatched on `document`.
   * `zarazConsentChoicesUpdated` is dispatched after every `set` / `setAll`
   * (and every choice made in the modal). The choice is stored in the
   * `cf_consent` cookie (URL-encoded JSON, one year).
   */
  interface ZarazConsent {
    /** Whether the Consent API is available on the page (read-only). */
    readonly APIReady: boolean;
    /** Get or set the visibility of the built-in consent modal. */
    modal: boolean;
    /** The configured purposes by id (read-only). */
    readonly purposes: Record<string, ZarazPurpose>;
    /** `true` granted, `false` refused, `undefined` not chosen yet (or no such purpose). */
    get(purposeId: string): boolean | undefined;
    /**
     * Set the consent status of some purposes (others keep theirs). Events
     * kept while purposes were undecided are then sent again for the tools
     * whose purposes are now all granted.
     */
    set(consentPreferences: ZarazConsentPreferences): void;
    /** The consent status of every purpose (`undefined`: not chosen yet). */
    getAll(): Record<string, boolean | undefined>;
    /** Grant or refuse every purpose at once. */
    setAll(consentStatus: boolean): void;
    /** Send the kept events now, if a purpose was granted since they were sent. */
    sendQueuedEvents(): void;
    /** The modal's checkboxes (not the choice), by purpose id. Available once `APIReady`. */
    getAllCheckboxes(): ZarazConsentPreferences;
    /** Tick or untick some of the modal's checkboxes. Available once `APIReady`. */
    setCheckboxes(checkboxesStatus: ZarazConsentPreferences): void;
    /** Tick or untick all of the modal's checkboxes. Available once `APIReady`. */
    setAllCheckboxes(checkboxStatus: boolean): void;
  }

  interface Zaraz {
    /** Send a custom event; resolves once the collector answered (never rejects). */
    track(eventName: string, eventProperties?: ZarazEventProperties): Promise<void>;
    /**
     * Attach `key` to every following event (as `{{ client.key }}`).
     * `undefined` removes the key from every scope.
     */
    set(key: string, value: unknown, options?: ZarazSetOptions): void;
    /** Send one of Zaraz's e-commerce events (e.g. "Order Completed"). */
    ecommerce(eventName: string, eventProperties?: ZarazEventProperties): Promise<void>;
    /**
     * Send a pageview now (for SPAs that route themselves); client triggers
     * restart for the new virtual page. After a path or query change its
     * referrer (and that of later events) is the previous in-app URL; it
     * stands for the automatic pageview of a history change just made, so
     * the page is counted once.
     */
    spaPageview(): void;
    /** Set the `zarazDebug` cookie to `key`; no key clears it. */
    debug(key?: string): void;
    consent: ZarazConsent;
  }

  /** A client-side rule (SPEC §7): exactly one kind per rule. */
  type TagproxyClientRule =
    | { click: { css?: string; xpath?: string; /** Hold same-tab link / submit navigation up to this long for the send. */ wait_ms: number } }
    | { form_submit: { css: string; /** Fire only when `form.checkValidity()`. */ validate: boolean } }
    | { timer: { interval_ms: number; /** 0 = no limit. */ limit: number } }
    | { scroll_depth: { /** `"50%"` of the document height or `"1200px"`, measured at the viewport's bottom. */ depths: string[] } }
    | { element_visible: { css: string } };

  type TagproxyOp =
    | "equals" | "not_equals" | "contains" | "not_contains"
    | "starts_with" | "not_starts_with" | "ends_with" | "not_ends_with"
    | "matches_regex" | "not_matches_regex"
    | "greater_than" | "greater_than_or_equal" | "less_than" | "less_than_or_equal";

  /** A `system.page.*` match rule the script checks before arming a trigger. */
  interface TagproxyPageRule {
    /** `page.url[.href|origin|protocol|host|hostname|port|pathname|search|hash]`, `page.query.<param>`, `page.title`, `page.referrer`. */
    path: string;
    op: TagproxyOp;
    value: string;
    /** An exclude rule: the trigger is not armed where it holds. */
    exclude: boolean;
  }

  /**
   * A client-side trigger. When it fires the script sends
   * `zaraz.track(id, props)`: the element's attributes plus `textContent`
   * (click, form_submit, element_visible), `{ depth }` (scroll_depth) or
   * `{ count }` (timer).
   */
  interface TagproxyTrigger {
    id: string;
    rule: TagproxyClientRule;
    page?: TagproxyPageRule[];
  }

  /** A text, or its translations by language tag (`{ en: "…", de: "…" }`). */
  type TagproxyText = string | Record<string, string>;

  /** `[consent]` as the scripts see it. */
  interface TagproxyConsentConfig {
    /** The cookie holding the choice (`cf_consent`). */
    cookie: string;
    /** Open the modal on a visit with no complete choice (never in TCF mode). */
    show_modal: boolean;
    /** IAB TCF mode: the site's CMP decides (its `euconsent-v2` cookie). */
    tcf: boolean;
    purposes: { id: string; name: TagproxyText; description: TagproxyText; default: "granted" | "denied" }[];
  }

  /** The configuration the server prepends to the script. */
  interface TagproxyConfig {
    prefix?: string;
    auto_pageview?: boolean;
    spa?: boolean;
    data_layer?: boolean;
    ecommerce?: boolean;
    triggers?: TagproxyTrigger[];
    /** `null` when consent is off. */
    consent?: TagproxyConsentConfig | null;
    [key: string]: unknown;
  }

  interface DocumentEventMap {
    zarazConsentAPIReady: Event;
    zarazConsentChoicesUpdated: Event;
  }

  interface Window {
    zaraz: Zaraz;
    dataLayer?: unknown[];
    __tagproxy?: TagproxyConfig;
  }

  // eslint-disable-next-line no-var
  var zaraz: Zaraz;
}
