// The live page: fetch the server's newest traces as table rows (HTML the viewer
// rendered and escaped) every few seconds, so traces appear as requests finish.
(function () {
  "use strict";
  const body = document.getElementById("live-rows");
  const status = document.getElementById("live-status");
  if (!body) return;
  const source = body.dataset.src;
  const every = Number(body.dataset.pollMs) || 2000;
  async function refresh() {
    try {
      const response = await fetch(source, { cache: "no-store" });
      if (response.ok) {
        body.innerHTML = await response.text();
        status.textContent = "";
      } else {
        status.textContent = `cannot read the server's traces (HTTP ${response.status}); trying again`;
      }
    } catch (err) {
      status.textContent = "the viewer does not answer; trying again";
    }
    setTimeout(refresh, every);
  }
  refresh();
})();
