// Strata's web UI: pages are whole without this script; it only offers
// to reload a live page (one showing running work) every few seconds.
"use strict";
(function () {
  var box = document.getElementById("live");
  var every = Number(document.body.dataset.live || 0);
  if (!box || !every) {
    return;
  }
  var key = "strata.live";
  box.checked = window.localStorage.getItem(key) === "on";
  var timer = null;
  function arm() {
    if (timer) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (box.checked) {
      timer = window.setTimeout(function () { window.location.reload(); }, every * 1000);
    }
  }
  box.addEventListener("change", function () {
    window.localStorage.setItem(key, box.checked ? "on" : "off");
    arm();
  });
  arm();
})();
