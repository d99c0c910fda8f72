// The job page: draws the loss chart from the stored events, then follows new ones over the
// WebSocket (see apps/finetuning/consumers.py). A reload redraws everything from the rows.
(function () {
  "use strict";
  const _ = window.gettext || ((text) => text); // the catalogue at /jsi18n/, when it loaded
  const format = (text, values) => (window.interpolate ? window.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, k) => values[k]));
  // A job's states as the page names them (the job model's own labels).
  const STATUS = {
    queued: _("Queued"), validating: _("Validating"), running: _("Running"),
    succeeded: _("Succeeded"), failed: _("Failed"), cancelled: _("Cancelled"),
  };
  const page = document.getElementById("job");
  if (!page) return;
  const events = JSON.parse(document.getElementById("job-events").textContent);
  let state = JSON.parse(document.getElementById("job-state").textContent);
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const chart = document.getElementById("loss-chart");
  const table = document.querySelector("#loss-table tbody");
  const { make, number } = window.playgroundCharts;
  let lastId = events.length ? events[events.length - 1].id : 0;
  let plot = null;

  // [steps, training loss, validation loss]: one x value per step that has either, the other
  // null, as uPlot wants its series aligned.
  function series() {
    const byStep = new Map();
    for (const e of events) {
      const key = e.kind === "step" ? "train_loss" : e.kind === "eval" ? "val_loss" : null;
      if (key === null || e.data[key] === undefined) continue;
      const row = byStep.get(e.data.step) || { train: null, val: null };
      row[key === "train_loss" ? "train" : "val"] = e.data[key];
      byStep.set(e.data.step, row);
    }
    const steps = [...byStep.keys()].sort((a, b) => a - b);
    return [steps, steps.map((s) => byStep.get(s).train), steps.map((s) => byStep.get(s).val)];
  }

  function draw() {
    const data = series();
    if (plot === null) {
      plot = make(chart, {
        scales: {
          x: { time: false, range: (u, min, max) => [0, Math.max(state.total_steps || 1, max || 1)] },
          y: { range: (u, min, max) => [0, Math.max(0.1, (max || 0) * 1.1)] },
        },
        series: [
          { label: _("Step"), value: (u, v) => (v === null ? "–" : String(v)) },
          { label: _("Training loss"), stroke: "#2563eb", width: 2, value: (u, v) => number(v), spanGaps: true },
          {
            label: _("Validation loss"), stroke: "#dc2626", width: 2, value: (u, v) => number(v),
            spanGaps: true, points: { show: true, size: 7, fill: "#dc2626" },
          },
        ],
        axes: [{ label: _("step") }, { label: _("loss"), size: 60 }],
      }, data, 240);
    } else {
      plot.setData(data);
    }
    chart.dataset.points = String(data[1].filter((v) => v !== null).length);
    table.replaceChildren(...data[0].map((step, i) => {
      const row = document.createElement("tr");
      for (const value of [String(step), number(data[1][i]), number(data[2][i])]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      return row;
    }));
  }

  function show() {
    const status = document.getElementById("job-status");
    status.textContent = STATUS[state.status] || state.status;
    status.className = `status status-${state.status}`;
    const progress = document.getElementById("job-progress");
    progress.max = state.total_steps || 1;
    progress.value = state.step;
    document.getElementById("job-steps").textContent = format(_("step %(step)s of %(total)s"), { step: state.step, total: state.total_steps || "?" });
    document.getElementById("job-eta").textContent =
      state.eta_seconds !== null && state.eta_seconds !== undefined ? format(_("about %(seconds)s s left"), { seconds: state.eta_seconds }) : "";
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
