/* A STAND-IN for Google's gtag.js (https://www.googletagmanager.com/gtag/js?id=G-…), which
 * cannot be fetched here. It handles the data layer the way the real library does, which is
 * what matters to bc.js's gtag mirror: on load it walks the calls queued on window.dataLayer
 * (the page's `function gtag(){dataLayer.push(arguments);}` pushes Arguments objects), then
 * replaces dataLayer.push with a function that calls the push it found there (so the array
 * keeps growing) and processes each new call. Each gtag('event', …) call is "sent" to the
 * demo shop's /_gtag/collect, so tests can see what Google's tag received. It sets no cookie
 * (the real one sets _ga and, with auto-tagging, _gcl_aw).
 */
(function (window) {
  "use strict";
  var script = document.currentScript;
  var name = (script && new URL(script.src).searchParams.get("l")) || "dataLayer";
  var layer = (window[name] = window[name] || []);
  function process(item) {
    if (Object.prototype.toString.call(item) !== "[object Arguments]") return;
    if (item[0] !== "event") return;
    var hit = { command: "event", event: item[1], params: item[2] || null };
    (window.__gtagHits = window.__gtagHits || []).push(hit);
    navigator.sendBeacon("/_gtag/collect", JSON.stringify(hit));
  }
  Array.prototype.slice.call(layer, 0).forEach(process);
  var previous = layer.push;
  layer.push = function () {
    var result = previous.apply(layer, arguments);
    Array.prototype.forEach.call(arguments, process);
    return result;
  };
})(window);
