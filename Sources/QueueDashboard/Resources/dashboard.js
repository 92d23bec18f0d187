// detectq dashboard: the pages work without this script. With it, pages marked data-refresh reload their
// <main> every few seconds while the tab is visible (a box in the header turns it off, remembered per
// browser), and forms marked data-confirm ask first.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var toggle = document.getElementById("auto-refresh");

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  if (!main || !toggle || !main.hasAttribute("data-refresh")) { return; }
  var seconds = Math.max(2, parseInt(main.getAttribute("data-refresh"), 10) || 5);
  toggle.parentElement.hidden = false;
  toggle.checked = window.localStorage.getItem("detectq.autoRefresh") !== "off";
  toggle.addEventListener("change", function () {
    window.localStorage.setItem("detectq.autoRefresh", toggle.checked ? "on" : "off");
  });

  function refresh() {
    if (!toggle.checked || document.hidden) { return; }
    if (document.activeElement && document.activeElement.closest && document.activeElement.closest("main form")) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.getElementById("main");
        if (fresh) { main.innerHTML = fresh.innerHTML; }
        var footer = page.querySelector("footer");
        var current = document.querySelector("footer");
        if (footer && current) { current.textContent = footer.textContent; }
      })
      .catch(function () {});
  }
  window.setInterval(refresh, seconds * 1000);
})();
