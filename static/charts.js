// Charts drawn by uPlot (node_modules/uplot, served under vendor/uplot): each fills its
// container's width, redraws when that changes, and its legend shows the values under the
// cursor. The pages keep a table of the same figures for screen readers and for reading exact
// values.
window.playgroundCharts = (function () {
  "use strict";
  const numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);

  function size(el, height) {
    return { width: Math.max(260, Math.floor(el.getBoundingClientRect().width)), height };
  }

  // The page's colours (light or dark) for the axes' text and the grid.
  function themed(axes) {
    const css = getComputedStyle(document.documentElement);
    const fg = css.getPropertyValue("--fg").trim() || "#1d2330";
    const line = css.getPropertyValue("--line").trim() || "#e5e7eb";
    return axes.map((axis) => ({
      stroke: fg,
      grid: { stroke: line, width: 1 },
      ticks: { stroke: line, width: 1 },
      ...axis,
    }));
  }

  // A uPlot in `el` with `options` (uPlot's, without width and height) over `data`.
  function make(el, options, data, height) {
    const themedOptions = { ...options, axes: themed(options.axes || [{}, {}]) };
    const plot = new uPlot({ ...size(el, height), ...themedOptions }, data, el);
    new ResizeObserver(() => plot.setSize(size(el, height))).observe(el);
    return plot;
  }

  // A legend and axis value: a whole number with grouping, a fraction to three places.
  function number(value) {
    if (value === null || value === undefined) return "–";
    return Number.isInteger(value) ? numbers.format(value) : value.toFixed(3);
  }

  return { make, number };
})();
