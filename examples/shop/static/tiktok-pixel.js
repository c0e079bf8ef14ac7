/* A local stand-in for TikTok's events.js (https://analytics.tiktok.com/i18n/pixel/events.js),
 * which cannot be fetched here. It does what the real library does that matters to the
 * browser leg: it sets the first-party _ttp cookie, replaces the stub's methods, replays the
 * calls queued before it loaded, and "sends" each track call -- here to the demo shop's
 * /_pixel/collect, so tests can see exactly which event and event_id the Pixel fired.
 */
(function (window, document) {
  "use strict";
  var name = window.TiktokAnalyticsObject || "ttq";
  var ttq = window[name];
  if (!ttq) return;
  if (!/(^|; )_ttp=/.test(document.cookie)) {
    var id = "";
    var bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    for (var i = 0; i < bytes.length; i++) id += ("0" + bytes[i].toString(16)).slice(-2);
    document.cookie = "_ttp=" + id + "; Max-Age=" + 13 * 30 * 86400 + "; Path=/; SameSite=Lax";
  }
  var pixel = Object.keys(ttq._i || {})[0] || "";
  function send(kind, event, props, options, code) {
    var hit = {
      pixel: code || pixel, kind: kind, event: event || null, properties: props || null,
      event_id: (options && options.event_id) || null, url: window.location.href,
    };
    (window.__pixelHits = window.__pixelHits || []).push(hit);
    navigator.sendBeacon("/_pixel/collect", JSON.stringify(hit));
  }
  var methods = {
    page: function () { send("page"); },
    track: function (event, props, options) { send("track", event, props, options); },
    identify: function () {},
  };
  // ttq.instance(code): the stub queued its calls on ttq._i[code]; replay them and give the
  // page an object whose calls are sent for that pixel.
  var instances = {};
  function instanceFor(code) {
    if (instances[code]) return instances[code];
    var inst = {
      track: function (event, props, options) { send("track", event, props, options, code); },
      page: function () { send("page", null, null, null, code); },
      identify: function () {},
    };
    var early = (ttq._i && ttq._i[code]) || [];
    Array.prototype.slice.call(early, 0).forEach(function (call) {
      inst[call[0]] && inst[call[0]].apply(inst, call.slice(1));
    });
    instances[code] = inst;
    return inst;
  }
  var queued = Array.prototype.slice.call(ttq, 0);
  ttq.length = 0;
  for (var m in methods) ttq[m] = methods[m];
  ttq.instance = instanceFor;
  ttq.push = function (call) { methods[call[0]] && methods[call[0]].apply(ttq, call.slice(1)); };
  queued.forEach(function (call) { ttq.push(call); });
})(window, document);
