/* A STAND-IN for the Reddit Pixel's pixel.js (https://www.redditstatic.com/ads/pixel.js), which
 * cannot be fetched here. It does what the real library does that matters to the browser leg
 * (docs/platforms/reddit.md §6, §7): it sets the first-party _rdt_uuid cookie
 * ("<ms>.<uuid>", the shape Reddit's own example shows) when there is none, hooks the
 * snippet's stub by setting rdt.sendEvent (window.rdt stays the stub), then replays the calls
 * the stub queued (rdt.callQueue). Each rdt('track', name, {…, conversionId}) is "sent" to the
 * demo shop's /_standin/reddit/collect, so tests can read what the Pixel was asked to send.
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
  var rdt = window.rdt;
  if (!rdt || rdt.sendEvent) return;
  if (!/(?:^|; )_rdt_uuid=/.test(document.cookie)) {
    document.cookie = "_rdt_uuid=" + Date.now() + "." + uuid() +
      "; Max-Age=" + 90 * 86400 + "; Path=/; SameSite=Lax";
  }
  var pixel = null;
  function send(hit) {
    (window.__standinHits = window.__standinHits || {});
    (window.__standinHits.reddit = window.__standinHits.reddit || []).push(hit);
    navigator.sendBeacon("/_standin/reddit/collect", JSON.stringify(hit));
  }
  rdt.sendEvent = function (method, name, metadata) {
    if (method === "init") {
      pixel = String(name);
      return;
    }
    if (method !== "track") return;
    send({
      pixel: pixel, event: name || null, metadata: metadata || null,
      conversion_id: (metadata && metadata.conversionId) || null, url: window.location.href,
    });
  };
  var queued = rdt.callQueue.splice(0, rdt.callQueue.length);
  queued.forEach(function (call) { rdt.sendEvent.apply(rdt, call); });
})(window, document);
