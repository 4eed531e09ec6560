// atrest admin page: live progress. Where the page has a [data-live] block, the volumes'
// states are polled once a second from /status.json (same origin, the session cookie):
// progress bars, rates and times move in place; when a volume changes state, key or newest
// job the page is reloaded, so that what it shows and its buttons match. No other script runs on the page.
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  if (!live) return;
  const rendered = {};
  document.querySelectorAll("[data-volume][data-state]").forEach((el) => {
    rendered[el.dataset.volume] = el.dataset.state + "#" + el.dataset.marks;
  });
  async function poll() {
    let answer;
    try {
      const r = await fetch("/status.json", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.href = "/login"; return; }
      if (!r.ok) return;
      answer = await r.json();
    } catch (e) {
      return;
    }
    for (const v of answer.volumes) {
      if (rendered[v.name] !== undefined && rendered[v.name] !== v.state + "#" + v.marks) {
        location.reload();
        return;
      }
      document.querySelectorAll(`[data-volume="${CSS.escape(v.name)}"] .state`).forEach((el) => {
        el.textContent = v.words;
      });
      const box = document.querySelector(`[data-progress="${CSS.escape(v.name)}"]`);
      if (box && v.percent !== null) {
        box.querySelector("progress").value = v.percent;
        box.querySelector(".pct").textContent = v.percent.toFixed(1) + "%";
        box.querySelector(".rate").textContent = v.rate || "measuring…";
        box.querySelector(".eta").textContent = v.eta || "";
      }
    }
  }
  setInterval(poll, 1000);
})();
