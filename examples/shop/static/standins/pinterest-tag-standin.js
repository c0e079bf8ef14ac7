/* A STAND-IN for the Pinterest Tag's core.js (https://s.pinimg.com/ct/core.js), which cannot be
 * fetched here. It does what matters to the browser leg (docs/platforms/pinterest.md §6, §7):
 * it keeps the landing URL's epik in the first-party _epik cookie, replays the calls the
 * snippet's stub queued (pintrk.queue, arrays of arguments), and REPLACES window.pintrk with a
 * function of its own: whether the real core.js replaces or hooks the stub is not documented,
 * and replacing is the harder case for bc.js's mirror (the other stand-ins hook). Each
 * pintrk('track', name, {…, event_id}) is "sent" to the demo shop's
 * /_standin/pinterest/collect, so tests can read what the Tag was asked to send.
 */
(function (window, document) {
  "use strict";
  var stub = window.pintrk;
  if (!stub || stub.__standin) return;
  var epik = new URLSearchParams(window.location.search).get("epik");
  if (epik) {
    document.cookie = "_epik=" + encodeURIComponent(epik) + "; Max-Age=" + 365 * 86400 +
      "; Path=/; SameSite=Lax";
  }
  var tag = null;
  function send(hit) {
    (window.__standinHits = window.__standinHits || {});
    (window.__standinHits.pinterest = window.__standinHits.pinterest || []).push(hit);
    navigator.sendBeacon("/_standin/pinterest/collect", JSON.stringify(hit));
  }
  function handle(method, name, data) {
    if (method === "load") {
      tag = String(name);
      return;
    }
    if (method !== "track") return;
    send({
      tag: tag, event: name || null, data: data || null,
      event_id: (data && data.event_id) || null, url: window.location.href,
    });
  }
  var queued = (stub.queue || []).slice(0);
  var pintrk = function () { handle.apply(null, arguments); };
  pintrk.queue = [];
  pintrk.version = stub.version;
  pintrk.__standin = true;
  window.pintrk = pintrk;
  queued.forEach(function (call) { handle.apply(null, call); });
})(window, document);
