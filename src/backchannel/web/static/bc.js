/*! Backchannel bc.js: the first-party browser leg (https://github.com/…/backchannel).
 *
 * Put it in <head>, before the Pixel snippets (TikTok, Meta, Google's tag, Snap, Pinterest,
 * Reddit; after them works too), served from the shop's own domain (a reverse-proxy path to Backchannel), with a publishable site key:
 *
 *   <script src="/bc.js" data-key="bc_pub_…"></script>
 *
 * On every page it:
 *   - keeps ttclid, fbclid and Google's gclid/gbraid/wbraid from the landing URL in
 *     first-party cookies (_bc_ttclid, _bc_fbclid, _bc_gclid, _bc_gbraid, _bc_wbraid; lifetime
 *     click_cookie_days, default 7) so they survive navigation and link-tracking protection
 *     on later pages;
 *   - keeps a first-party session id (_bc_sid, 30 minutes, renewed on every page);
 *   - reads the Pixel's _ttp, Meta's _fbp/_fbc and Google's _ga cookies (and the gclid of
 *     Google's _gcl_aw when it has none of its own), the UTMs, the referrer, the page load
 *     time (Navigation Timing) and whether the TikTok Pixel loaded or was blocked;
 *   - does the same for every other platform's ids its destination module declares
 *     (Snapchat's ScCid and _scid, Pinterest's epik/_epik, Reddit's rdt_cid/_rdt_uuid…):
 *     the server writes that list into this script (PLATFORM_IDS) when it serves it;
 *   - mirrors each Pixel's conversion calls with the id the platform deduplicates on, so
 *     Backchannel knows which conversions each Pixel fired (or tried to):
 *       ttq.track(event, props, {event_id}) (and ttq.instance(code).track),
 *       fbq('track', name, data, {eventID}) (and trackCustom, trackSingle…),
 *       gtag('event', name, {transaction_id}) (Google's tag: the transaction_id),
 *       snaptr('track', NAME, {client_dedup_id}), pintrk('track', name, {event_id}),
 *       rdt('track', name, {conversionId});
 *     the server writes which calls to watch, and each one's platform, into this script
 *     (MIRRORS) from the destinations it knows;
 *   - sends it all to /v1/collect with sendBeacon (fetch keepalive as a fallback).
 *
 * It reads no form field and no PII. Cookies are SameSite=Lax, and Secure on https.
 *
 * API: bc.eventId(orderId, eventName) -> the event_id Backchannel derives for that order
 *      ("CompletePayment-1001"): pass it as each Pixel's dedup id on the thank-you page
 *      (ttq's event_id, fbq's eventID, snaptr's client_dedup_id, pintrk's event_id, rdt's
 *      conversionId); gtag's transaction_id is the order id itself.
 *      bc.sessionId() -> the session id, for the shop's backend to send with the order.
 *      bc.pixelStatus() -> "loaded" | "blocked" | "absent".
 */
(function (window, document) {
  "use strict";
  if (window.bc && window.bc.version) return; // loaded twice: keep the first

  var CLICK_DAYS = Number("__BC_CLICK_DAYS__") || 7; // filled in by the server
  // [field, landing URL parameter or null, the platform's cookie or null], from the
  // destination modules' IDENTIFIERS (backchannel.identifiers.generic); filled by the server
  var PLATFORM_IDS = /*__BC_IDS__*/[];
  // {Pixel call: platform its mirrored calls are stored under}, from the destination
  // modules' PIXEL_CALL/PIXEL_MIRROR (backchannel.mirrors); a call not listed is not watched
  var MIRRORS = /*__BC_MIRRORS__*/{};
  var SESSION_SECONDS = 30 * 60;
  var script = document.currentScript;
  function attr(name) {
    return (script && script.getAttribute(name)) || null;
  }
  var config = window.bcConfig || {};
  var KEY = attr("data-key") || config.key || "";
  var ENDPOINT =
    attr("data-endpoint") ||
    config.endpoint ||
    (script && script.src ? new URL("/v1/collect", script.src).href : "/v1/collect");
  var clickDays = Number(attr("data-click-days") || config.clickDays) || CLICK_DAYS;
  // gtag.js's data layer is window.dataLayer unless the tag was loaded with &l=<name>
  var DATA_LAYER = attr("data-layer") || config.dataLayer || "dataLayer";
  var secure = window.location.protocol === "https:";

  // --- cookies ----------------------------------------------------------------------------
  function getCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) {
        try {
          return decodeURIComponent(parts[i].slice(eq + 1)) || null;
        } catch (e) {
          return parts[i].slice(eq + 1) || null;
        }
      }
    }
    return null;
  }
  function setCookie(name, value, seconds) {
    document.cookie =
      name + "=" + encodeURIComponent(value) + "; Max-Age=" + Math.round(seconds) +
      "; Path=/; SameSite=Lax" + (secure ? "; Secure" : "");
  }
  function randomId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    var text = "";
    for (var i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
    return window.btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function clip(value, max) {
    if (value === null || value === undefined || value === "") return undefined;
    value = String(value);
    return value.length > max ? undefined : value; // a cut identifier would match nobody
  }

  // --- event ids: the twin of backchannel.events.derive_event_id -------------------------
  // Python's str.strip() removes exactly these characters (str.isspace); JavaScript's trim()
  // differs (it keeps U+001C-U+001F and U+0085, and removes U+FEFF), so it is not used.
  var PY_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a" +
    "\\u2028\\u2029\\u202f\\u205f\\u3000";
  var PY_STRIP = new RegExp("^[" + PY_SPACE + "]+|[" + PY_SPACE + "]+$", "g");
  function pyStrip(text) {
    return text.replace(PY_STRIP, "");
  }
  function eventId(orderId, eventName) {
    var id;
    if (typeof orderId === "string") id = orderId;
    else if (typeof orderId === "bigint") id = orderId.toString();
    else if (typeof orderId === "number" && Number.isSafeInteger(orderId)) id = String(orderId);
    else throw new TypeError("bc.eventId: the order id must be a string or a whole number");
    if (typeof eventName !== "string") throw new TypeError("bc.eventId: eventName must be a string");
    return pyStrip(eventName) + "-" + pyStrip(id);
  }

  // --- the landing: click ids, UTMs, session ----------------------------------------------
  var query;
  try {
    query = new URLSearchParams(window.location.search);
  } catch (e) {
    query = { get: function () { return null; } };
  }
  var urlTtclid = clip(query.get("ttclid"), 512);
  var urlFbclid = clip(query.get("fbclid"), 512);
  if (urlTtclid) setCookie("_bc_ttclid", urlTtclid, clickDays * 86400);
  if (urlFbclid) setCookie("_bc_fbclid", urlFbclid, clickDays * 86400);
  // Google Ads click ids: gclid (auto-tagging), gbraid/wbraid (iOS app / web clicks)
  var urlGoogle = {};
  ["gclid", "gbraid", "wbraid"].forEach(function (name) {
    urlGoogle[name] = clip(query.get(name), 512);
    if (urlGoogle[name]) setCookie("_bc_" + name, urlGoogle[name], clickDays * 86400);
  });
  // Every other platform's click id: kept from the landing URL in _bc_<field>, like ttclid
  var urlIds = {};
  PLATFORM_IDS.forEach(function (spec) {
    if (!spec[1]) return;
    urlIds[spec[0]] = clip(query.get(spec[1]), 512);
    if (urlIds[spec[0]]) setCookie("_bc_" + spec[0], urlIds[spec[0]], clickDays * 86400);
  });
  var utm = {};
  var hasUtm = false;
  ["source", "medium", "campaign", "content", "term"].forEach(function (name) {
    var value = query.get("utm_" + name);
    if (value) {
      utm[name] = value.slice(0, 256);
      hasUtm = true;
    }
  });
  var sid = getCookie("_bc_sid");
  var landing = !sid;
  if (!sid || !/^[A-Za-z0-9_.\-]{8,128}$/.test(sid)) {
    sid = randomId();
    landing = true;
  }
  setCookie("_bc_sid", sid, SESSION_SECONDS);

  // Google's Conversion Linker keeps the last gclid in _gcl_aw as "GCL.<unix seconds>.<gclid>"
  // (docs/platforms/google_ads.md, section 5: split on ".", at least three parts, the gclid is
  // parts[2:] joined by "."; gclids normally hold no "."). Anything else is not read.
  function linkerGclid(value) {
    if (!value) return undefined;
    var parts = String(value).split(".");
    if (parts.length < 3 || parts[0] !== "GCL") return undefined;
    return clip(parts.slice(2).join("."), 512);
  }
  function identifiers(message) {
    // Read at send time: the Pixel sets _ttp (and gtag.js _ga) only once it has loaded.
    message.ttclid = urlTtclid || clip(getCookie("_bc_ttclid"), 512);
    message.fbclid = urlFbclid || clip(getCookie("_bc_fbclid"), 512);
    message.ttp = clip(getCookie("_ttp"), 512);
    message.fbp = clip(getCookie("_fbp"), 512);
    message.fbc = clip(getCookie("_fbc"), 512);
    message.gclid = urlGoogle.gclid || clip(getCookie("_bc_gclid"), 512) ||
      linkerGclid(getCookie("_gcl_aw"));
    message.gbraid = urlGoogle.gbraid || clip(getCookie("_bc_gbraid"), 512);
    message.wbraid = urlGoogle.wbraid || clip(getCookie("_bc_wbraid"), 512);
    message.ga_client_id = clip(getCookie("_ga"), 128); // raw: the server takes the client id
    // the other platforms': this page's URL, then our cookie of an earlier landing, then
    // the platform's own cookie
    var ids = {};
    var any = false;
    PLATFORM_IDS.forEach(function (spec) {
      var value = urlIds[spec[0]] || (spec[1] && clip(getCookie("_bc_" + spec[0]), 512)) ||
        (spec[2] && clip(getCookie(spec[2]), 512));
      if (value) {
        ids[spec[0]] = value;
        any = true;
      }
    });
    if (any) message.ids = ids;
    return message;
  }

  // --- transport --------------------------------------------------------------------------
  function send(message) {
    message.key = KEY;
    message.session_id = sid;
    message.url = clip(window.location.href.slice(0, 2048), 2048);
    var body = JSON.stringify(message);
    // A string body goes as text/plain: no CORS preflight, even cross-origin.
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(ENDPOINT, body)) return;
    } catch (e) { /* fall through to fetch */ }
    try {
      window.fetch(ENDPOINT, {
        method: "POST", body: body, keepalive: true, credentials: "omit",
        headers: { "Content-Type": "text/plain;charset=UTF-8" },
      }).catch(function () {});
    } catch (e) { /* nothing else to try: tracking must never break the page */ }
  }

  // --- is the TikTok Pixel there, and did it load? ----------------------------------------
  // Evidence, strongest first: the load/error events of the Pixel's <script> (watched from
  // the moment it is inserted, which is why bc.js goes before the Pixel snippet); for scripts
  // that finished before bc.js ran, a Resource Timing entry (browsers record none for a
  // request an ad blocker cancelled). No evidence of a load by window load = blocked.
  var pixelScripts = [];
  function ttqObject() {
    return window[window.TiktokAnalyticsObject || "ttq"];
  }
  function pixelUrls() {
    var ttq = ttqObject();
    var urls = [];
    if (ttq && ttq._i) {
      for (var code in ttq._i) {
        if (Object.prototype.hasOwnProperty.call(ttq._i, code) && ttq._i[code]) {
          var u = ttq._i[code]._u;
          if (u) urls.push(String(u).split("?")[0]);
        }
      }
    }
    return urls;
  }
  function isPixelUrl(src) {
    if (!src) return false;
    if (/\/\/analytics\.tiktok\.com\/i18n\/pixel\//.test(src)) return true;
    var urls = pixelUrls();
    for (var i = 0; i < urls.length; i++) {
      if (src.indexOf(new URL(urls[i], window.location.href).href) === 0) return true;
    }
    return false;
  }
  function watchScript(el) {
    if (!el || el.tagName !== "SCRIPT" || !el.src || el.__bcWatched) return;
    el.__bcWatched = true;
    var record = { el: el, state: "pending" };
    el.addEventListener("load", function () { record.state = "loaded"; });
    el.addEventListener("error", function () { record.state = "error"; });
    pixelScripts.push(record);
  }
  Array.prototype.forEach.call(document.getElementsByTagName("script"), watchScript);
  if (window.MutationObserver) {
    new MutationObserver(function (mutations) {
      mutations.forEach(function (m) {
        Array.prototype.forEach.call(m.addedNodes, watchScript);
      });
    }).observe(document.documentElement, { childList: true, subtree: true });
  }
  function pixelStatus() {
    var ttq = ttqObject();
    if (!ttq || !pixelUrls().length) return "absent";
    var seen = false;
    var waiting = false;
    for (var i = 0; i < pixelScripts.length; i++) {
      if (!isPixelUrl(pixelScripts[i].el.src)) continue;
      seen = true;
      if (pixelScripts[i].state === "loaded") return "loaded";
      if (pixelScripts[i].state === "pending") waiting = true;
    }
    if (waiting) return undefined; // left before the Pixel's script finished: unknown
    if (!seen && window.performance && performance.getEntriesByType) {
      var entries = performance.getEntriesByType("resource");
      for (var j = 0; j < entries.length; j++) {
        var e = entries[j];
        var status = e.responseStatus;
        if (isPixelUrl(e.name) && e.responseEnd > 0 &&
            (status === undefined || status === 0 || (status >= 200 && status < 400))) {
          return "loaded";
        }
      }
    }
    return "blocked";
  }

  // --- the mirror: each Pixel call seen, sent in batches ------------------------------------
  var pending = [];
  var mirrored = {};
  var flushTimer = null;
  // what the server takes as an event name (a call named otherwise would fail its batch)
  var EVENT_NAME = /^[A-Za-z][A-Za-z0-9_ ]{0,99}$/;
  function record(platform, name, id) {
    if (!platform || typeof name !== "string") return;
    name = name.trim();
    if (!EVENT_NAME.test(name)) return;
    if (id !== null) {
      var seen = platform + "\u0000" + name + "\u0000" + id;
      if (mirrored[seen]) return; // the Pixel replaying its queue
      mirrored[seen] = true;
    }
    pending.push({ event: name, event_id: id, at: Date.now(), platform: platform });
    if (flushTimer === null) flushTimer = window.setTimeout(flushEvents, 0);
  }

  // --- mirror ttq.track(event, props, {event_id}) ------------------------------------------
  function mirror(name, props, options) {
    if (typeof name !== "string" || !name) return;
    var id = (options && (options.event_id || options.eventID)) || (props && props.event_id);
    record(MIRRORS["ttq.track"], name, id === undefined || id === null ? null : String(id));
  }
  function flushEvents() {
    flushTimer = null;
    if (!pending.length) return;
    var events = pending.splice(0, 20);
    send(identifiers({ page_view: false, events: events }));
    if (pending.length) flushTimer = window.setTimeout(flushEvents, 0);
  }
  function wrapTrack(ttq) {
    if (!ttq || (typeof ttq !== "object" && typeof ttq !== "function") || ttq.__bcMirror) return;
    var current = ttq.track;
    function track() {
      try {
        mirror(arguments[0], arguments[1], arguments[2]);
      } catch (e) { /* never break the Pixel */ }
      return typeof current === "function" ? current.apply(this, arguments) : undefined;
    }
    try {
      Object.defineProperty(ttq, "__bcMirror", { value: true });
      // The Pixel's stub defines track, and the real library replaces it when it loads:
      // an accessor keeps our mirror in front of whichever function is current.
      Object.defineProperty(ttq, "track", {
        configurable: true,
        enumerable: true,
        get: function () { return track; },
        set: function (fn) { current = fn; },
      });
    } catch (e) { /* a frozen ttq: nothing to mirror */ }
  }
  // Multi-pixel pages call ttq.instance(pixelCode).track(...): each instance (the stub's
  // queue array, later the library's object) gets the same mirror, once.
  function wrapInstance(ttq) {
    if (!ttq || (typeof ttq !== "object" && typeof ttq !== "function") || ttq.__bcInstance) return;
    var current = ttq.instance;
    function instance() {
      var found = typeof current === "function" ? current.apply(this, arguments) : undefined;
      try { wrapTrack(found); } catch (e) { /* never break the Pixel */ }
      return found;
    }
    try {
      Object.defineProperty(ttq, "__bcInstance", { value: true });
      Object.defineProperty(ttq, "instance", {
        configurable: true,
        enumerable: true,
        get: function () { return instance; },
        set: function (fn) { current = fn; },
      });
    } catch (e) { /* a frozen ttq: instances are not mirrored */ }
  }
  function hook(ttq) {
    wrapTrack(ttq);
    wrapInstance(ttq);
  }
  (function hookTtq() {
    if (!MIRRORS["ttq.track"]) return;
    var name = window.TiktokAnalyticsObject || "ttq";
    if (window[name]) return hook(window[name]);
    var holder;
    try {
      Object.defineProperty(window, name, {
        configurable: true,
        enumerable: true,
        get: function () { return holder; },
        set: function (value) { holder = value; hook(value); },
      });
    } catch (e) { /* not configurable: the Pixel will not be mirrored */ }
  })();

  // --- mirror gtag('event', name, {transaction_id}) -----------------------------------------
  // gtag() is the page's own one-liner, `function gtag(){dataLayer.push(arguments);}`: every
  // call is an Arguments object pushed onto the data layer array. gtag.js (and GTM), once
  // loaded, walk the items queued so far, then replace dataLayer.push with a function that
  // calls the push it found there and processes the items. So bc.js wraps push on the array
  // itself: calls before gtag.js loads pass through our wrapper into the array; gtag.js then
  // wraps our wrapper, which keeps seeing every later call; items queued before bc.js ran are
  // read once. Only calls that carry a transaction_id are mirrored (Google deduplicates
  // purchases on it), with it as the event id; gtag itself is never replaced.
  function mirrorGtag(item) {
    if (Object.prototype.toString.call(item) !== "[object Arguments]") return; // not gtag()
    if (item[0] !== "event" || typeof item[1] !== "string") return;
    var params = item[2];
    if (!params || typeof params !== "object") return;
    var id = clip(params.transaction_id, 256);
    if (id !== undefined) record(MIRRORS.gtag, item[1], id);
  }
  function wrapDataLayer(layer) {
    if (!layer || typeof layer.push !== "function" || layer.__bcMirror) return;
    try {
      Object.defineProperty(layer, "__bcMirror", { value: true });
    } catch (e) { return; } // a frozen data layer: nothing to mirror
    for (var i = 0; i < layer.length; i++) {
      try { mirrorGtag(layer[i]); } catch (e) { /* never break the tag */ }
    }
    var previous = layer.push;
    try {
      layer.push = function () {
        for (var j = 0; j < arguments.length; j++) {
          try { mirrorGtag(arguments[j]); } catch (e) { /* never break the tag */ }
        }
        return previous.apply(this, arguments);
      };
    } catch (e) { /* push not writable: the queued calls above are all we see */ }
  }
  (function hookDataLayer() {
    if (!MIRRORS.gtag) return;
    if (window[DATA_LAYER]) return wrapDataLayer(window[DATA_LAYER]);
    // Not there yet (bc.js goes first): catch the snippet's `window.dataLayer = … || []`.
    var holder;
    try {
      Object.defineProperty(window, DATA_LAYER, {
        configurable: true,
        enumerable: true,
        get: function () { return holder; },
        set: function (value) {
          holder = value;
          try { wrapDataLayer(value); } catch (e) { /* never break the tag */ }
        },
      });
    } catch (e) { /* not configurable: gtag will not be mirrored */ }
  })();

  // --- mirror the queue-function Pixels: fbq, snaptr, pintrk, rdt --------------------------
  // Each snippet makes window.<name> a stub function that queues its calls (fbq.queue,
  // snaptr.queue, pintrk.queue, rdt.callQueue) until the library loads; the library then
  // hooks the stub (fbq.callMethod, snaptr.handleRequest, rdt.sendEvent) or replaces
  // window.<name> with a function of its own. bc.js keeps a Proxy of whichever function
  // window.<name> holds (an accessor on window catches every assignment, before or after the
  // snippet ran): each call the page makes passes through the mirror, then on to that
  // function unchanged, while every property the snippet and the library read or set stays
  // the function's own. Calls the stub queued before bc.js ran are read once from its queue.
  // [queue property, reader of one call -> [event name, the object holding the dedup id, its
  // key], or null for a call that is not a conversion]
  var QUEUE_PIXELS = {
    // fbq('track'|'trackCustom', name, data, {eventID}); trackSingle(Custom) name a pixel first
    fbq: ["queue", function (a) {
      var at = /^trackSingle/.test(a[0]) ? 1 : 0;
      return /^track(Single)?(Custom)?$/.test(a[0]) ? [a[1 + at], a[3 + at], "eventID"] : null;
    }],
    snaptr: ["queue", function (a) { return a[0] === "track" ? [a[1], a[2], "client_dedup_id"] : null; }],
    pintrk: ["queue", function (a) { return a[0] === "track" ? [a[1], a[2], "event_id"] : null; }],
    rdt: ["callQueue", function (a) { return a[0] === "track" ? [a[1], a[2], "conversionId"] : null; }],
  };
  // each Pixel's automatic page event, not mirrored unless it carries a dedup id
  var PAGE_EVENT = /^page_?(view|visit)$/i;
  function mirrorCall(call, args) {
    if (!args || typeof args.length !== "number") return;
    var found = QUEUE_PIXELS[call][1](args);
    if (!found || typeof found[0] !== "string") return;
    var holder = found[1];
    var id = holder && typeof holder === "object" ? clip(holder[found[2]], 256) : undefined;
    if (id === undefined && PAGE_EVENT.test(found[0])) return;
    record(MIRRORS[call], found[0], id === undefined ? null : id);
  }
  function hookQueuePixel(call) {
    if (!MIRRORS[call] || !window.Proxy || !window.Reflect) return;
    var holder;
    function wrap(fn) {
      if (typeof fn !== "function") return fn;
      return new Proxy(fn, {
        apply: function (target, self, args) {
          try { mirrorCall(call, args); } catch (e) { /* never break the Pixel */ }
          return Reflect.apply(target, self, args);
        },
      });
    }
    var current = window[call];
    try {
      var queued = typeof current === "function" && current[QUEUE_PIXELS[call][0]];
      for (var i = 0; queued && i < queued.length; i++) mirrorCall(call, queued[i]);
    } catch (e) { /* never break the Pixel */ }
    holder = wrap(current);
    try {
      Object.defineProperty(window, call, {
        configurable: true,
        enumerable: true,
        get: function () { return holder; },
        set: function (value) {
          if (value === holder) return;
          try { holder = wrap(value); } catch (e) { holder = value; }
        },
      });
    } catch (e) { /* not configurable: this Pixel will not be mirrored */ }
  }
  for (var call in QUEUE_PIXELS) {
    if (Object.prototype.hasOwnProperty.call(QUEUE_PIXELS, call)) {
      try { hookQueuePixel(call); } catch (e) { /* never break the page */ }
    }
  }

  // --- the page view, once the page (and the Pixel's script) finished loading ---------------
  function loadTime() {
    var p = window.performance;
    var nav = p && p.getEntriesByType && p.getEntriesByType("navigation")[0];
    var ms = nav && nav.loadEventEnd > 0 ? nav.loadEventEnd - nav.startTime : null;
    if (ms === null && p && p.timing && p.timing.loadEventEnd > 0) {
      ms = p.timing.loadEventEnd - p.timing.navigationStart;
    }
    return ms === null || ms < 0 || ms > 600000 ? undefined : Math.round(ms);
  }
  var viewSent = false;
  function pageView() {
    if (viewSent) return;
    viewSent = true;
    var message = identifiers({
      page_view: true,
      landing: landing,
      referrer: clip((document.referrer || "").slice(0, 2048), 2048),
      load_time_ms: loadTime(),
      pixel: pixelStatus(),
    });
    if (hasUtm) message.utm = utm;
    send(message);
  }
  if (document.readyState === "complete") window.setTimeout(pageView, 0);
  else window.addEventListener("load", function () { window.setTimeout(pageView, 0); });
  window.addEventListener("pagehide", function () {
    pageView();
    flushEvents();
  });

  window.bc = {
    version: "1",
    eventId: eventId,
    sessionId: function () { return sid; },
    pixelStatus: pixelStatus,
    flush: function () { pageView(); flushEvents(); },
  };
})(window, document);
