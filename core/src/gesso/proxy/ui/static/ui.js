// The admin UI's only script (served from /ui/static: the Content-Security-Policy allows no inline script).
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
});
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.confirm");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// The overview's plots: the series from /ui/api/overview, drawn by uPlot (vendor/uplot), one chart each.
function drawOverview(root) {
  let url = "/ui/api/overview?range=" + encodeURIComponent(root.dataset.range);
  if (root.dataset.key) url += "&key=" + encodeURIComponent(root.dataset.key);
  fetch(url, { credentials: "same-origin" })
    .then((answer) => answer.json())
    .then((data) => {
      const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
      const charts = {
        requests: data.models.map((m) => [m, data.requests[m]]),
        images: data.models.map((m) => [m, data.images[m]]),
        cost: data.models.map((m) => [m, data.cost[m]]),
        error_rate: [["error rate", data.error_rate]],
        latency: [["p50", data.p50_ms], ["p99", data.p99_ms]],
      };
      root.querySelectorAll("div.chart").forEach((target) => {
        const lines = charts[target.dataset.chart];
        const options = {
          width: Math.max(320, target.clientWidth || 600), height: 180,
          series: [{}].concat(lines.map(([name], i) => ({ label: name, stroke: colors[i % colors.length], width: 2 }))),
          axes: [{}, { size: 60 }],
        };
        target.replaceChildren();
        new uPlot(options, [data.times].concat(lines.map(([, values]) => values)), target);
        target.dataset.drawn = String(data.times.length);
      });
      root.dataset.loaded = "true";
    });
}
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("overview");
  if (root) drawOverview(root);
});
