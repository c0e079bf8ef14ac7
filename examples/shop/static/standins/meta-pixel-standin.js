/* A STAND-IN for Meta's fbevents.js (https://connect.facebook.net/en_US/fbevents.js), which
 * cannot be fetched here. It does what the real library does that matters to the browser leg
 * (docs/platforms/meta-pixel.md): it sets the first-party _fbp cookie ("fb.1.<ms>.<random>")
 * when there is none, and _fbc ("fb.1.<ms>.<fbclid>") when the page URL carries an fbclid;
 * it hooks the snippet's stub by setting fbq.callMethod (window.fbq itself stays the stub),
 * then replays the calls the stub queued (fbq.queue). Each call is "sent" to the demo shop's
 * /_standin/meta/collect, so tests can read what the Pixel was asked to send.
 */
(function (window, document) {
  "use strict";
  var fbq = window.fbq;
  if (!fbq || fbq.callMethod) return;
  var now = Date.now();
  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function setCookie(name, value) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + 90 * 86400 +
      "; Path=/; SameSite=Lax";
  }
  if (!cookie("_fbp")) setCookie("_fbp", "fb.1." + now + "." + Math.floor(Math.random() * 2e9));
  var fbclid = new URLSearchParams(window.location.search).get("fbclid");
  if (fbclid) setCookie("_fbc", "fb.1." + now + "." + fbclid);
  var pixels = [];
  function send(hit) {
    (window.__standinHits = window.__standinHits || {});
    (window.__standinHits.meta = window.__standinHits.meta || []).push(hit);
    navigator.sendBeacon("/_standin/meta/collect", JSON.stringify(hit));
  }
  // fbq(method, ...): init, track/trackCustom(name, data, {eventID}), trackSingle(Custom)
  // (pixel, name, data, {eventID}); anything else is accepted and ignored
  fbq.callMethod = function (method) {
    var args = Array.prototype.slice.call(arguments, 1);
    if (method === "init") {
      pixels.push(String(args[0]));
      return;
    }
    var single = method === "trackSingle" || method === "trackSingleCustom";
    if (method !== "track" && method !== "trackCustom" && !single) return;
    if (single) args.shift();
    send({
      pixel: pixels[0] || null, method: method, event: args[0] || null, data: args[1] || null,
      event_id: (args[2] && args[2].eventID) || null, url: window.location.href,
    });
  };
  var queued = fbq.queue.splice(0, fbq.queue.length);
  queued.forEach(function (call) { fbq.callMethod.apply(fbq, call); });
})(window, document);
