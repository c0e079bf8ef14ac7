/* STAND-IN for Shopify's top-frame half of the custom-pixel sandbox (tests only).
 *
 * Creates the pixel's sandbox as Shopify's "lax" sandbox is described (an iframe with
 * sandbox="allow-scripts" and no allow-same-origin: an opaque origin), carries out the
 * sandbox's browser.cookie / browser.localStorage calls on THIS frame (the storefront's first
 * party), and publishes customer events into it with this frame's context. page_viewed is
 * published once the pixel has subscribed; tests publish others with
 * shopifyStandin.publish(name, data).
 */
(function () {
  "use strict";
  var CLIENT_ID = "standin-client-" + Math.random().toString(16).slice(2);
  var seq = 0;

  function locationOf(l) {
    return {
      href: l.href, hash: l.hash, host: l.host, hostname: l.hostname, origin: l.origin,
      pathname: l.pathname, port: l.port, protocol: l.protocol, search: l.search,
    };
  }
  function context() {
    return {
      document: {
        location: locationOf(window.location),
        referrer: document.referrer,
        characterSet: document.characterSet,
        title: document.title,
      },
      navigator: {
        language: navigator.language,
        languages: Array.prototype.slice.call(navigator.languages || []),
        cookieEnabled: navigator.cookieEnabled,
        userAgent: navigator.userAgent,
      },
      window: {
        innerHeight: window.innerHeight,
        innerWidth: window.innerWidth,
        origin: window.location.origin,
        location: locationOf(window.location),
      },
    };
  }
  function customerEvent(name, data) {
    seq += 1;
    return {
      id: "sh-standin-" + seq, name: name, type: "standard", clientId: CLIENT_ID,
      timestamp: new Date().toISOString(), seq: seq, context: context(), data: data || {},
    };
  }

  // browser.cookie: get(name) -> the value ("" when absent); set("k=v; attrs") or set(k, v)
  function getCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return parts[i].slice(eq + 1);
    }
    return "";
  }
  function setCookie(cookieOrName, value) {
    document.cookie = value === undefined || value === null ? cookieOrName
      : cookieOrName + "=" + value;
    return document.cookie;
  }
  function carryOut(api, method, args) {
    if (api === "cookie" && method === "get") return getCookie(args[0]);
    if (api === "cookie" && method === "set") return setCookie(args[0], args[1]);
    if (api === "localStorage" || api === "sessionStorage") {
      var storage = window[api];
      if (method === "length") return storage.length;
      return storage[method].apply(storage, args);
    }
    throw new Error("stand-in: unknown call " + api + "." + method);
  }

  var frame = document.createElement("iframe");
  frame.setAttribute("sandbox", "allow-scripts");
  frame.setAttribute("title", "Shopify custom pixel sandbox (stand-in)");
  frame.style.display = "none";
  var init = {
    context: context(),
    data: { customer: null, cart: null, shop: { name: "Stand-in shop", paymentSettings: { currencyCode: "USD" } } },
    customerPrivacy: { analyticsProcessingAllowed: true, marketingAllowed: true,
      preferencesProcessingAllowed: true, saleOfDataAllowed: true },
  };
  frame.src = "/_standin/sandbox?init=" + encodeURIComponent(JSON.stringify(init));

  var markReady;
  var ready = new Promise(function (resolve) { markReady = resolve; });
  window.addEventListener("message", function (e) {
    if (e.source !== frame.contentWindow || !e.data) return;
    var m = e.data;
    if (m.type === "ready") return markReady();
    if (m.type !== "call") return;
    var answer = { type: "result", id: m.id };
    try {
      answer.value = carryOut(m.api, m.method, m.args || []);
    } catch (err) {
      answer.error = String(err);
    }
    frame.contentWindow.postMessage(answer, "*");
  });
  document.body.appendChild(frame);

  window.shopifyStandin = {
    ready: ready,
    published: [],
    publish: function (name, data) {
      return ready.then(function () {
        var event = customerEvent(name, data);
        window.shopifyStandin.published.push(event);
        frame.contentWindow.postMessage({ type: "event", event: event }, "*");
        return event.id;
      });
    },
  };
  ready.then(function () { window.shopifyStandin.publish("page_viewed", {}); });
})();
