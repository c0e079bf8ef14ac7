/* STAND-IN for Meta's fbevents.js (https://connect.facebook.net/en_US/fbevents.js), served by
 * the test's Playwright route for that URL (tests only). Like the real library it takes over
 * fbq (fbq.callMethod) and replays the queued calls; each call is recorded in
 * window.__fbqHits (what "Meta" received).
 */
(function (window) {
  "use strict";
  var fbq = window.fbq;
  if (!fbq) return;
  var hits = (window.__fbqHits = window.__fbqHits || []);
  fbq.callMethod = function () {
    var args = Array.prototype.slice.call(arguments, 0);
    hits.push({
      call: args[0], name: args[1] || null, properties: args[2] || null,
      event_id: (args[3] && args[3].eventID) || null,
    });
  };
  var queued = fbq.queue.splice(0, fbq.queue.length);
  queued.forEach(function (args) { fbq.callMethod.apply(null, Array.prototype.slice.call(args, 0)); });
})(window);
