/* STAND-IN (tests only): the custom pixel's code has run and subscribed; tell the host. */
window.parent.postMessage({ type: "ready" }, "*");
