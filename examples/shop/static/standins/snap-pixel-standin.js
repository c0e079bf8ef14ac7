/* A STAND-IN for the Snap Pixel's scevent.min.js (https://sc-static.net/scevent.min.js), which
 * cannot be fetched here. It does what the real library does that matters to the browser leg
 * (docs/platforms/snapchat.md §6, §7): it sets the first-party _scid cookie (a UUID) when there
 * is none, hooks the snippet's stub by setting snaptr.handleRequest (window.snaptr stays the
 * stub), then replays the calls the stub queued (snaptr.queue). Each
 * snaptr('track', NAME, {…, client_dedup_id}) is "sent" to the demo shop's
 * /_standin/snapchat/collect, so tests can read what the Pixel was asked to send.
 */
(function (window, document) {
  "use strict";
  function uuid() {  // crypto.randomUUID needs a secure context; a demo may run on plain http
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); });
    return [h.slice(0, 4), h.slice(4, 6), h.slice(6, 8), h.slice(8, 10), h.slice(10)]
      .map(function (part) { return part.join(""); }).join("-");
  }
  var snaptr = window.snaptr;
  if (!snaptr || snaptr.handleRequest) return;
  if (!/(?:^|; )_scid=/.test(document.cookie)) {
    document.cookie = "_scid=" + uuid() + "; Max-Age=" + 396 * 86400 +
      "; Path=/; SameSite=Lax";
  }
  var pixel = null;
  function send(hit) {
    (window.__standinHits = window.__standinHits || {});
    (window.__standinHits.snapchat = window.__standinHits.snapchat || []).push(hit);
    navigator.sendBeacon("/_standin/snapchat/collect", JSON.stringify(hit));
  }
  snaptr.handleRequest = function (method, name, params) {
    if (method === "init") {
      pixel = String(name);
      return;
    }
    if (method !== "track") return;
    send({
      pixel: pixel, event: name || null, params: params || null,
      client_dedup_id: (params && params.client_dedup_id) || null, url: window.location.href,
    });
  };
  var queued = snaptr.queue.splice(0, snaptr.queue.length);
  queued.forEach(function (call) { snaptr.handleRequest.apply(snaptr, call); });
})(window, document);
