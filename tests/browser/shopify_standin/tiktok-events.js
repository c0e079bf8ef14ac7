/* STAND-IN for TikTok's events.js (https://analytics.tiktok.com/i18n/pixel/events.js), served
 * by the test's Playwright route for that URL (tests only). Like the real library it replaces
 * the stub's methods and replays the calls queued before it loaded; each call is recorded in
 * window.__pixelHits (what "TikTok" received) instead of being sent anywhere.
 */
(function (window) {
  "use strict";
  var name = window.TiktokAnalyticsObject || "ttq";
  var ttq = window[name];
  if (!ttq) return;
  var hits = (window.__pixelHits = window.__pixelHits || []);
  var pixel = Object.keys(ttq._i || {})[0] || null;
  function record(kind, event, props, options) {
    hits.push({
      pixel: pixel, kind: kind, event: event || null, properties: props || null,
      event_id: (options && options.event_id) || null,
    });
  }
  var methods = {
    page: function () { record("page"); },
    track: function (event, props, options) { record("track", event, props, options); },
    identify: function () {},
  };
  var queued = Array.prototype.slice.call(ttq, 0);
  ttq.length = 0;
  for (var m in methods) ttq[m] = methods[m];
  ttq.push = function (call) { methods[call[0]] && methods[call[0]].apply(ttq, call.slice(1)); };
  queued.forEach(function (call) { ttq.push(call); });
})(window);
