// The usage page's chart: tokens per UTC day for the last 30 days, as bars of the day's total,
// with the day's prompt and completion tokens in the legend under the cursor.
(function () {
  "use strict";
  const _ = window.gettext || ((text) => text); // the catalogue at /jsi18n/, when it loaded
  const format = (text, values) => (window.interpolate ? window.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, k) => values[k]));
  const el = document.getElementById("usage-chart");
  if (!el) return;
  const days = JSON.parse(document.getElementById("usage-data").textContent);
  const x = days.map((d) => Date.parse(`${d.day}T00:00:00Z`) / 1000);
  const only = (key) => days.map((d) => d[key]);
  const { make, number } = window.playgroundCharts;
  const day = (seconds) => new Date(seconds * 1000).toISOString().slice(0, 10);
  const legendOnly = { paths: () => null, points: { show: false } };
  const plot = make(
    el,
    {
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      scales: { y: { range: (u, min, max) => [0, Math.max(10, max * 1.1)] } },
      series: [
        { label: _("Day (UTC)"), value: (u, v) => (v === null ? "–" : day(v)) },
        {
          label: _("Total"),
          value: (u, v) => `${number(v)} tokens`,
          fill: "rgba(37, 99, 235, 0.75)",
          stroke: "rgb(37, 99, 235)",
          width: 0, // no outline: a day without tokens draws nothing
          paths: uPlot.paths.bars({ size: [0.7, 40] }),
          points: { show: false },
        },
        { label: _("Prompt"), value: (u, v) => number(v), stroke: "#64748b", ...legendOnly },
        { label: _("Completion"), value: (u, v) => number(v), stroke: "#64748b", ...legendOnly },
      ],
      axes: [
        { values: (u, ticks) => ticks.map((t) => day(t).slice(5)) },
        { label: _("tokens"), size: 70, values: (u, ticks) => ticks.map(number) },
      ],
    },
    [x, only("total"), only("prompt_tokens"), only("completion_tokens")],
    220,
  );
  el.dataset.points = String(plot.data[0].length);
})();
