// Panes that follow one generation each on ws/generations/<id>/ (GenerationConsumer): the compare
// view and completion mode. Text goes in as plain text (deltas carry their offset; the first one
// all the text so far); the figures line shows the timing.
(function () {
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
        figures.textContent = "writing…";
      } else if (data.type === "waiting") {
        figures.textContent = data.waiting ? "waiting for a worker…" : "writing…";
      } else if (data.type === "done") {
        const parts = [data.status];
        if (data.ttft_ms !== null) parts.push(`first token ${data.ttft_ms} ms`);
        if (data.tokens_per_second !== null) parts.push(`${data.tokens_per_second} tokens/s`);
        parts.push(`${data.completion_tokens} tokens`);
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
