// The live page: fetch the server's newest traces as table rows (HTML the viewer
// rendered and escaped) every few seconds, so traces appear as requests finish.
(function () {
  "use strict";
  const body = document.getElementById("live-rows");
  if (!body) return;
  const source = body.dataset.src;
  const every = Number(body.dataset.pollMs) || 2000;
  async function refresh() {
    try {
      const response = await fetch(source, { cache: "no-store" });
      if (response.ok) body.innerHTML = await response.text();
    } catch (err) {
      // the viewer went away; the next tick tries again
    }
    setTimeout(refresh, every);
  }
  refresh();
})();
