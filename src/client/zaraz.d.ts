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

  interface ZarazPurpose {
    id: string;
    name: string;
    description: string;
    order: number;
  }

  /**
   * Zaraz's Consent API. Until consent management is enabled in tagproxy,
   * `APIReady` stays `false` and every method only warns ("consent is not
   * enabled"); when it is, `zarazConsentAPIReady` is dispatched on `document`.
   */
  interface ZarazConsent {
    /** Whether the Consent API is available on the page (read-only). */
    readonly APIReady: boolean;
    /** Get or set the visibility of the consent modal. */
    modal: boolean;
    /** The configured purposes by id (read-only). */
    readonly purposes: Record<string, ZarazPurpose>;
    /** `true` granted, `false` refused, `undefined` no such purpose. */
    get(purposeId: string): boolean | undefined;
    /** Set the consent status of some purposes. */
    set(consentPreferences: Record<string, boolean>): void;
    /** The consent status of every purpose. */
    getAll(): Record<string, boolean>;
    /** Grant or refuse every purpose at once. */
    setAll(consentStatus: boolean): void;
    /** Send the events that waited for consent. */
    sendQueuedEvents(): void;
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
    /** Send a pageview now (for SPAs that route themselves); client triggers restart for the new virtual page. */
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

  /** The configuration the server prepends to the script. */
  interface TagproxyConfig {
    prefix?: string;
    auto_pageview?: boolean;
    spa?: boolean;
    data_layer?: boolean;
    ecommerce?: boolean;
    triggers?: TagproxyTrigger[];
    [key: string]: unknown;
  }

  interface Window {
    zaraz: Zaraz;
    dataLayer?: unknown[];
    __tagproxy?: TagproxyConfig;
  }

  // eslint-disable-next-line no-var
  var zaraz: Zaraz;
}
