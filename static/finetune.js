// The job page: draws the loss chart from the stored events, then follows new ones over the
// WebSocket (see apps/finetuning/consumers.py). A reload redraws everything from the rows.
(function () {
  const page = document.getElementById("job");
  if (!page) return;
  const events = JSON.parse(document.getElementById("job-events").textContent);
  let state = JSON.parse(document.getElementById("job-state").textContent);
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const chart = document.getElementById("loss-chart");
  const SVG = "http://www.w3.org/2000/svg";
  let lastId = events.length ? events[events.length - 1].id : 0;

  function points(kind, key) {
    return events.filter((e) => e.kind === kind && e.data[key] !== undefined)
      .map((e) => [e.data.step, e.data[key]]);
  }

  function draw() {
    const train = points("step", "train_loss");
    const val = points("eval", "val_loss");
    const all = train.concat(val);
    chart.replaceChildren();
    if (!all.length) return;
    const W = 600, H = 240, L = 48, B = 24, T = 8, R = 8;
    const maxStep = Math.max(state.total_steps || 1, ...all.map((p) => p[0]), 1);
    const maxLoss = Math.max(...all.map((p) => p[1]));
    const minLoss = Math.min(0, ...all.map((p) => p[1]));
    const x = (s) => L + (s / maxStep) * (W - L - R);
    const y = (v) => T + (1 - (v - minLoss) / (maxLoss - minLoss || 1)) * (H - T - B);
    const el = (name, attrs, text) => {
      const node = document.createElementNS(SVG, name);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      chart.appendChild(node);
      return node;
    };
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
    el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
    for (const v of [minLoss, (minLoss + maxLoss) / 2, maxLoss]) {
      el("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, v.toFixed(2));
    }
    el("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "tick" }, `step ${maxStep}`);
    const path = (pts) => pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    if (train.length) el("path", { d: path(train), class: "series train" });
    if (val.length) {
      el("path", { d: path(val), class: "series val" });
      for (const p of val) el("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.5, class: "dot val" });
    }
  }

  function show() {
    const status = document.getElementById("job-status");
    status.textContent = state.status.charAt(0).toUpperCase() + state.status.slice(1);
    status.className = `status status-${state.status}`;
    const progress = document.getElementById("job-progress");
    progress.max = state.total_steps || 1;
    progress.value = state.step;
    document.getElementById("job-steps").textContent = `step ${state.step} of ${state.total_steps || "?"}`;
    document.getElementById("job-eta").textContent =
      state.eta_seconds !== null && state.eta_seconds !== undefined ? `about ${state.eta_seconds} s left` : "";
    const error = document.getElementById("job-error");
    error.textContent = state.error || "";
    error.hidden = !state.error;
  }

  function log(event) {
    const item = document.createElement("li");
    item.className = `level-${event.level}`;
    const time = new Date(event.created_at * 1000).toTimeString().slice(0, 8);
    item.textContent = `${time} ${event.message}`;
    const list = document.getElementById("job-log");
    list.prepend(item);
    while (list.children.length > 30) list.lastElementChild.remove();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${page.dataset.ws}?after=${lastId}`);
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.job) state = data.job;
      if (data.type === "job.event" && data.event.id > lastId) {
        events.push(data.event);
        lastId = data.event.id;
        log(data.event);
        draw();
      }
      show();
      // The evaluation and the deployed model are rendered by the server: fetch the page once.
      if (FINISHED.includes(state.status)) {
        socket.onclose = null;
        socket.close();
        setTimeout(() => location.reload(), 300);
      }
    };
    socket.onclose = () => setTimeout(connect, 1000);
  }

  draw();
  if (!FINISHED.includes(state.status)) connect();
})();
