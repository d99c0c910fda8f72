// Panes that follow one generation each on ws/generations/<id>/ (GenerationConsumer): the compare
// view and completion mode. Text goes in as plain text (deltas carry their offset; the first one
// all the text so far); the figures line shows the timing.
(function () {
  "use strict";
  const _ = window.gettext || ((text) => text); // the catalogue at /jsi18n/, when it loaded
  const format = (text, values) => (window.interpolate ? window.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, k) => values[k]));
  const STATUS = { succeeded: _("succeeded"), failed: _("failed"), cancelled: _("cancelled") };
  function follow(pane) {
    const id = pane.dataset.generation;
    if (pane.dataset.following) return;
    pane.dataset.following = "1";
    const figures = document.querySelector(`[data-figures="${id}"]`);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/generations/${id}/`);
    let text = []; // code points, as the offsets count them
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "delta") {
        text = text.slice(0, data.offset).concat(Array.from(data.text));
        pane.textContent = text.join("");
        figures.textContent = _("writing…");
      } else if (data.type === "waiting") {
        figures.textContent = data.waiting ? _("waiting for a worker…") : _("writing…");
      } else if (data.type === "done") {
        const parts = [STATUS[data.status] || data.status];
        if (data.ttft_ms !== null) parts.push(format(_("first token %(ms)s ms"), { ms: data.ttft_ms }));
        if (data.tokens_per_second !== null) parts.push(format(_("%(rate)s tokens/s"), { rate: data.tokens_per_second }));
        parts.push(format(_("%(count)s tokens"), { count: data.completion_tokens }));
        if (data.error) parts.push(data.error);
        figures.textContent = parts.join(" · ");
        pane.dataset.done = data.status;
        socket.close();
      }
    };
  }
  function scan() { document.querySelectorAll(".pane[data-generation], .continuation[data-generation]").forEach(follow); }
  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:afterSwap", scan);
})();
