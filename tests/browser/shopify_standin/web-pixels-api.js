/* STAND-IN for the Web Pixels API inside Shopify's custom-pixel sandbox (tests only).
 *
 * The surface a custom pixel sees (shopify.dev/docs/api/web-pixels-api, standard-api/
 * analytics, browser, init): analytics.subscribe(name, callback), browser.cookie.get/set and
 * browser.localStorage.* (asynchronous, carried out in the top frame: here by postMessage to
 * host.js), and init (the page's context at render, from the sandbox document).
 */
(function () {
  "use strict";
  var pending = {};
  var nextId = 0;
  var subscribers = {};
  window.__standinErrors = [];

  function call(api, method, args) {
    return new Promise(function (resolve, reject) {
      nextId += 1;
      pending[nextId] = { resolve: resolve, reject: reject };
      window.parent.postMessage({ type: "call", id: nextId, api: api, method: method, args: args }, "*");
    });
  }
  window.addEventListener("message", function (e) {
    if (e.source !== window.parent || !e.data) return;
    var m = e.data;
    if (m.type === "result") {
      var waiting = pending[m.id];
      delete pending[m.id];
      if (waiting) (m.error ? waiting.reject(new Error(m.error)) : waiting.resolve(m.value));
      return;
    }
    if (m.type === "event") {
      (subscribers[m.event.name] || []).forEach(function (callback) {
        try {
          Promise.resolve(callback(m.event)).catch(function (err) {
            window.__standinErrors.push(String(err && err.stack || err));
          });
        } catch (err) {
          window.__standinErrors.push(String(err && err.stack || err));
        }
      });
    }
  });

  function storage(kind) {
    return {
      getItem: function (key) { return call(kind, "getItem", [key]); },
      setItem: function (key, value) { return call(kind, "setItem", [key, value]); },
      removeItem: function (key) { return call(kind, "removeItem", [key]); },
      key: function (index) { return call(kind, "key", [index]); },
      length: function () { return call(kind, "length", []); },
      clear: function () { return call(kind, "clear", []); },
    };
  }

  window.analytics = {
    subscribe: function (name, callback) {
      (subscribers[name] = subscribers[name] || []).push(callback);
      return Promise.resolve(undefined);
    },
  };
  window.browser = {
    cookie: {
      get: function (name) { return call("cookie", "get", [name]); },
      set: function (cookieOrName, value) { return call("cookie", "set", [cookieOrName, value]); },
    },
    localStorage: storage("localStorage"),
    sessionStorage: storage("sessionStorage"),
  };
  window.init = JSON.parse(document.getElementById("shopify-init").textContent);
})();
