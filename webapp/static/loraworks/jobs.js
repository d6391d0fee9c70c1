// Job pages: the create form's live estimate, and the job page's live progress (server-sent events, polling
// fallback) with a loss chart drawn as inline SVG.
"use strict";

const fmt = {
  count(n) { return n == null ? "—" : Math.round(n).toLocaleString("en-US"); },
  bytes(n) {
    if (n == null) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
  },
  percent(p) { return p == null ? "—" : `${p < 0.01 ? p.toPrecision(2) : p.toFixed(p < 1 ? 3 : 2)} %`; },
  duration(s) {
    if (s == null || s === "" || !isFinite(s)) return "—";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
  },
  number(x, digits = 4) { return x == null ? "—" : Number(x).toPrecision(digits); },
};

// --- the create form ------------------------------------------------------------------------------------------

// A JSON endpoint asked again as the form changes: only the newest request's answer counts (null for an older one,
// or when the request failed).
function newestAnswer(url) {
  let sequence = 0;
  return async (params) => {
    const mine = ++sequence;
    try {
      const data = await (await fetch(`${url}?${params}`, { headers: { Accept: "application/json" } })).json();
      return mine === sequence ? data : null;
    } catch (e) { return null; }
  };
}

function setupJobForm(form) {
  const field = (name) => form.elements[name];
  const panel = document.getElementById("estimate");
  const show = (key, text) => { panel.querySelector(`[data-estimate="${key}"]`).textContent = text; };
  const error = panel.querySelector('[data-estimate="error"]');
  const askEstimate = newestAnswer(form.getAttribute("data-estimate-url"));
  const askAdvice = newestAnswer(form.getAttribute("data-advice-url"));
  let timer = null;

  function toggleCustom() {
    document.getElementById("field-custom_targets").hidden = field("targets").value !== "custom";
  }
  // Only models that can learn the chosen dataset's task are offered; an unfit choice moves to the first fit one.
  function fitModels() {
    const option = field("dataset").selectedOptions[0];
    const task = option ? option.dataset.task : "";
    const select = field("base_model");
    for (const model of select.options) {
      const tasks = (model.dataset.tasks || "").split(",").filter(Boolean);
      model.disabled = Boolean(task) && tasks.length > 0 && !tasks.includes(task);
      model.title = model.disabled ? `trains ${tasks.join(", ")}; this dataset is ${task}` : "";
    }
    if (select.selectedOptions[0] && select.selectedOptions[0].disabled) {
      const fit = Array.from(select.options).find((model) => !model.disabled);
      if (fit) select.value = fit.value;
    }
  }
  function presetTask() {
    const option = field("dataset").selectedOptions[0];
    if (option && option.dataset.task) field("task").value = option.dataset.task;
    // Preference data trains with DPO; other data cannot.
    if (option && field("method")) field("method").value = option.dataset.format === "preference" ? "dpo" : "sft";
  }
  async function refresh() {
    const targets = field("targets").value === "custom" ? field("custom_targets").value : field("targets").value;
    if (!field("base_model").value) return;
    const params = new URLSearchParams({
      base_model: field("base_model").value, dataset: field("dataset").value, task: field("task").value, targets,
      rank: field("rank").value, batch_size: field("batch_size").value, max_length: field("max_length").value,
      gradient_checkpointing: field("gradient_checkpointing").checked ? "1" : "",
    });
    for (const name of ["quantize", "dtype"]) if (field(name)) params.set(name, field(name).value);
    const data = await askEstimate(params);
    if (!data) return;
    error.hidden = !data.error;
    error.textContent = data.error || "";
    if (data.error) return;
    show("trainable", fmt.count(data.trainable));
    show("percent", fmt.percent(data.percent));
    show("adapter", fmt.bytes(data.adapter_bytes));
    show("base", `${fmt.bytes(data.base_model_bytes)} (adapter is ×${Math.round(1 / Math.max(data.ratio, 1e-12)).toLocaleString("en-US")} smaller)`);
    show("memory", `≈ ${fmt.bytes(data.memory.total)}`);
    panel.querySelector('[data-estimate="bar"]').setAttribute("width", Math.max(1, 200 * Math.min(data.ratio, 1)));
  }
  // The settings advisor proposes again for the new model, dataset, task or worker class, with its reasons.
  let adviceRequests = 0;
  async function advise() {
    const params = new URLSearchParams({
      base_model: field("base_model").value, dataset: field("dataset").value, task: field("task").value,
      worker_class: field("worker_class").value, eval_dataset: field("eval_dataset").value,
    });
    if (field("method")) params.set("method", field("method").value);
    adviceRequests += 1;
    const data = await askAdvice(params);
    if (!data) return;
    for (const [name, item] of Object.entries(data.error ? {} : data)) {
      field(name).value = item.value;
      const reason = form.querySelector(`[data-advice-for="${name}"]`);
      reason.textContent = `Advised: ${item.reason}`;
      reason.hidden = false;
    }
    form.setAttribute("data-advised", adviceRequests);  // the advice asked for so far is in (tests wait on it)
    toggleCustom();
    schedule();
  }
  const ADVICE_INPUTS = ["dataset", "base_model", "task", "worker_class", "eval_dataset", "method"];
  const schedule = () => { clearTimeout(timer); timer = setTimeout(refresh, 150); };
  form.addEventListener("input", schedule);
  form.addEventListener("change", (event) => {
    if (event.target.name === "dataset") { presetTask(); fitModels(); }
    if (event.target.name === "targets") toggleCustom();
    if (ADVICE_INPUTS.includes(event.target.name)) advise();
    schedule();
  });
  toggleCustom();
  fitModels();
  if (!field("task").value) presetTask();
  refresh();
}

// --- the loss chart -----------------------------------------------------------------------------------------

// Enough decimals that the axis's labels differ (a loss moving from 1.104 to 1.092 is not "1.10 / 1.10 / 1.09").
function tickText(value, ticks) {
  for (let decimals = 1; decimals < 6; decimals += 1) {
    if (new Set(ticks.map((t) => t.toFixed(decimals))).size === ticks.length) return value.toFixed(decimals);
  }
  return value.toPrecision(6);
}

const SVG = "http://www.w3.org/2000/svg";
const TERMINAL = ["succeeded", "failed", "cancelled"];

function drawLossChart(svg, history, totalSteps) {
  const W = 640, H = 240, left = 48, right = 12, top = 12, bottom = 28;
  const train = history.filter((p) => p.loss != null && !p.eval).map((p) => [p.step, p.loss]);
  const evals = history.filter((p) => p.eval && p.eval.loss != null).map((p) => [p.step, p.eval.loss]);
  const all = train.concat(evals);
  svg.replaceChildren();
  const add = (name, attrs, text) => {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text != null) el.textContent = text;
    svg.appendChild(el);
    return el;
  };
  if (!all.length) {
    add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis-label" }, "The loss appears here once training starts.");
    return;
  }
  const maxX = Math.max(totalSteps || 0, ...all.map((p) => p[0]), 1);
  let minY = Math.min(...all.map((p) => p[1])), maxY = Math.max(...all.map((p) => p[1]));
  if (maxY - minY < 1e-9) { minY -= 0.5; maxY += 0.5; }
  const pad = (maxY - minY) * 0.05;
  minY -= pad; maxY += pad;
  const x = (s) => left + (W - left - right) * (s / maxX);
  const y = (v) => top + (H - top - bottom) * (1 - (v - minY) / (maxY - minY));
  add("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" });
  add("line", { x1: left, y1: top, x2: left, y2: H - bottom, class: "axis" });
  const ticks = [minY + pad, (minY + maxY) / 2, maxY - pad];
  for (const v of ticks) {
    add("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis-label" }, tickText(v, ticks));
    add("line", { x1: left, y1: y(v), x2: W - right, y2: y(v), class: "grid-line" });
  }
  add("text", { x: W - right, y: H - 8, "text-anchor": "end", class: "axis-label" }, `step ${maxX}`);
  add("text", { x: left, y: H - 8, "text-anchor": "start", class: "axis-label" }, "0");
  const path = (points) => points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
  if (train.length) add("path", { d: path(train), class: "line train" });
  if (evals.length) {
    add("path", { d: path(evals), class: "line eval" });
    for (const p of evals) add("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.5, class: "dot eval" });
  }
}

// DPO's per-step figures: each chart draws its keys as lines of the series colours, on a scale of its own.
const DPO_CHARTS = [["dpo-reward-chart", ["reward_margin", "reward_accuracy"]],
                    ["dpo-logp-chart", ["chosen_logp", "rejected_logp"]]];

function drawMetricChart(svg, history, keys, totalSteps) {
  const W = 640, H = 200, left = 56, right = 12, top = 12, bottom = 28;
  const lines = keys.map((key) => history.filter((p) => p[key] != null && !p.eval).map((p) => [p.step, p[key]]));
  const all = lines.flat();
  svg.replaceChildren();
  const add = (name, attrs, text) => {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text != null) el.textContent = text;
    svg.appendChild(el);
  };
  if (!all.length) return;
  const maxX = Math.max(totalSteps || 0, ...all.map((p) => p[0]), 1);
  let minY = Math.min(...all.map((p) => p[1])), maxY = Math.max(...all.map((p) => p[1]));
  if (maxY - minY < 1e-9) { minY -= 0.5; maxY += 0.5; }
  const x = (s) => left + (W - left - right) * (s / maxX);
  const y = (v) => top + (H - top - bottom) * (1 - (v - minY) / (maxY - minY));
  add("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" });
  for (const v of [minY, maxY]) add("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis-label" }, v.toPrecision(3));
  add("text", { x: W - right, y: H - 8, "text-anchor": "end", class: "axis-label" }, `step ${maxX}`);
  lines.forEach((points, i) => {
    if (points.length) add("path", { d: points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(""), class: `line series-${i}`, "data-key": keys[i] });
  });
}

// --- the job page ---------------------------------------------------------------------------------------------

function setupJobPage(root) {
  const snapshot = JSON.parse(document.getElementById("job-snapshot").textContent);
  const live = (key) => root.parentElement.querySelector(`[data-live="${key}"]`) || document.querySelector(`[data-live="${key}"]`);
  const chart = document.getElementById("loss-chart");
  const logBox = document.getElementById("log");
  let history = snapshot.history || [];
  let progress = snapshot.progress || {};
  let state = snapshot.state;
  let lastStep = progress.step || 0;
  let drawPending = false;
  let elapsedBase = { seconds: progress.elapsed_s, at: Date.now() };

  function redraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      drawLossChart(chart, history, progress.total_steps);
      for (const [id, keys] of DPO_CHARTS) {
        const svg = document.getElementById(id);
        if (svg) drawMetricChart(svg, history, keys, progress.total_steps);
      }
    });
  }
  function showProgress(p) {
    progress = p;
    const total = p.total_steps || 0;
    live("step").textContent = p.step || 0;
    live("total").textContent = total || "?";
    live("bar").style.width = `${total ? Math.min(100, 100 * (p.step || 0) / total) : 0}%`;
    live("eta").textContent = TERMINAL.includes(state) ? "—" : fmt.duration(p.eta_s);
    live("tps").textContent = p.tokens_per_s == null ? "—" : fmt.count(p.tokens_per_s);
    live("loss").textContent = fmt.number(p.loss);
    elapsedBase = { seconds: p.elapsed_s, at: Date.now() };
    live("elapsed").textContent = fmt.duration(p.elapsed_s);
  }
  function appendLog(line) {
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
    logBox.textContent += (logBox.textContent ? "\n" : "") + line;
    const lines = logBox.textContent.split("\n");
    if (lines.length > 300) logBox.textContent = lines.slice(-300).join("\n");
    if (atBottom) logBox.scrollTop = logBox.scrollHeight;
  }
  function addHistory(newState, reason) {
    const item = document.createElement("li");
    const when = document.createElement("time");
    const now = new Date();
    when.dateTime = now.toISOString();
    when.textContent = now.toLocaleTimeString("en-GB");
    const badge = document.createElement("span");
    badge.className = `badge ${newState}`;
    badge.textContent = newState;
    item.append(when, " ", badge, ` ${reason || ""}`);
    live("events").appendChild(item);
  }
  function showState(newState, error, reason) {
    if (newState !== state) addHistory(newState, reason != null ? reason : error);
    state = newState;
    if (TERMINAL.includes(newState)) live("eta").textContent = "—";
    const badge = live("state");
    badge.textContent = newState;
    badge.className = `badge ${newState}`;
    const waiting = document.querySelector('[data-live="waiting"]');
    if (waiting && newState !== "queued" && newState !== "validating") waiting.hidden = true;
    if (error) { live("error").hidden = false; live("error-text").textContent = error; }
  }
  function finished() {
    // The page gains its end-of-run parts (results link, no cancel button): fetch it again.
    setTimeout(() => window.location.reload(), 800);
  }
  function showPosition(position) {
    const place = live("position");
    if (place && position) place.textContent = position;
  }
  function applySnapshot(s) {
    showPosition(s.position);
    history = s.history || [];
    showProgress(s.progress || {});
    lastStep = (s.progress || {}).step || 0;
    if (s.log) logBox.textContent = s.log.join("\n");
    if (s.state !== state) { showState(s.state, s.error); if (s.terminal) finished(); }
    redraw();
  }
  function handle(event) {
    if (event.type === "step") {
      showProgress(event);
      lastStep = event.step;
      const point = { step: event.step, loss: event.loss, lr: event.lr };
      for (const [, keys] of DPO_CHARTS) for (const key of keys) if (event[key] != null) point[key] = event[key];
      history.push(point);
      redraw();
      if (state !== "running") showState("running", "", "");
    } else if (event.type === "eval") {
      history.push({ step: event.step, stage: event.stage, eval: event.eval });
      redraw();
    } else if (event.type === "log") {
      appendLog(event.line);
    } else if (event.type === "state") {
      showState(event.state, event.state === "failed" ? event.reason : "", event.reason);
      if (["succeeded", "failed", "cancelled"].includes(event.state)) finished();
    }
  }

  function poll() {
    const tick = async () => {
      try {
        const response = await fetch(`${root.dataset.progressUrl}?since=${lastStep}`, { headers: { Accept: "application/json" } });
        const s = await response.json();
        showPosition(s.position);
        history = history.concat(s.history || []);
        if (s.log) logBox.textContent = s.log.join("\n");
        showProgress(s.progress || {});
        lastStep = (s.progress || {}).step || lastStep;
        redraw();
        if (s.state !== state) showState(s.state, s.error);
        if (s.terminal) { finished(); return; }
      } catch (e) { /* try again at the next tick */ }
      setTimeout(tick, 2000);
    };
    tick();
  }

  function stream() {
    if (!window.EventSource) { poll(); return; }
    const source = new EventSource(root.dataset.eventsUrl);
    let failures = 0;
    source.addEventListener("snapshot", (e) => { failures = 0; applySnapshot(JSON.parse(e.data)); if (JSON.parse(e.data).terminal) source.close(); });
    source.onmessage = (e) => {
      failures = 0;
      const event = JSON.parse(e.data);
      handle(event);
      if (event.type === "state" && ["succeeded", "failed", "cancelled"].includes(event.state)) source.close();
    };
    source.onerror = () => {
      failures += 1;
      if (failures >= 3) { source.close(); poll(); }  // the stream keeps failing (a proxy?): poll instead
    };
  }

  showProgress(progress);
  redraw();
  setInterval(() => {
    if (state === "running" && elapsedBase.seconds != null) {
      live("elapsed").textContent = fmt.duration(elapsedBase.seconds + (Date.now() - elapsedBase.at) / 1000);
    }
  }, 1000);
  logBox.scrollTop = logBox.scrollHeight;
  // Other jobs starting move a queued job up, and nothing is published on its own channel then: ask for its place.
  const placeTimer = setInterval(async () => {
    if (state !== "queued") { clearInterval(placeTimer); return; }
    try {
      const response = await fetch(`${root.dataset.progressUrl}?since=${lastStep}`, { headers: { Accept: "application/json" } });
      showPosition((await response.json()).position);
    } catch (e) { /* try again at the next tick */ }
  }, 5000);
  if (!snapshot.terminal) stream();
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("job-form");
  if (form) setupJobForm(form);
  const job = document.getElementById("job");
  if (job) setupJobPage(job);
});
