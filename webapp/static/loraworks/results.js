// Playground: send the form, then show the base and fine-tuned answers side by side as their pieces stream in
// (server-sent events relayed from the inference worker). Classification answers are label probabilities.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("playground");
  if (!form) return;
  const tasks = JSON.parse(document.getElementById("playground-tasks").textContent);
  const answers = { base: form.ownerDocument.querySelector('[data-side="base"]'),
                    tuned: form.ownerDocument.querySelector('[data-side="tuned"]') };
  const status = form.querySelector("[data-status]");
  const button = form.querySelector('button[type="submit"]');
  let source = null;

  const taskOf = () => tasks[form.elements.job.value];
  const showTask = () => {
    const classify = taskOf() === "classification";
    form.querySelector("[data-generation-only]").hidden = classify;
    form.querySelector("[data-text-label]").textContent = classify ? "Text to classify" : "Prompt";
    document.querySelector("[data-classification-note]").hidden = !classify;
  };
  form.elements.job.addEventListener("change", showTask);
  showTask();

  const showErrors = (errors) => {
    form.querySelectorAll("[data-error-for]").forEach((el) => {
      el.textContent = (errors[el.dataset.errorFor] || []).join(" ");
    });
  };
  const finish = (message) => {
    if (source) source.close();
    source = null;
    button.disabled = false;
    Object.values(answers).forEach((el) => el.classList.remove("streaming"));
    status.textContent = message;
  };
  const showProbs = (el, probs) => {
    el.textContent = "";
    Object.entries(probs).forEach(([label, p], i) => {
      const row = document.createElement("div");
      row.className = "prob" + (i === 0 ? " top" : "");
      const name = document.createElement("span");
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "num";
      value.textContent = (100 * p).toFixed(1) + " %";
      row.append(name, track, value);
      el.appendChild(row);
    });
  };
  const onEvent = (event) => {
    const data = JSON.parse(event.data);
    if (data.status === "loading") status.textContent = "Loading the models…";
    else if (data.status === "generating") status.textContent = "Answering…";
    if (data.side && data.prompt !== undefined) {
      const shown = form.ownerDocument.querySelector('[data-prompt-for="' + data.side + '"]');
      shown.querySelector("pre").textContent = data.prompt;
      shown.hidden = false;
    }
    if (data.side && data.text !== undefined) answers[data.side].textContent += data.text;
    if (data.side && data.probs) showProbs(answers[data.side], data.probs);
    if (data.side && data.done) answers[data.side].classList.remove("streaming");
    if (data.error) finish("Error: " + data.error);
    if (data.end) {
      // The classification task lists the models it loaded; the serving worker (causal LMs) says whether it did.
      const stats = data.stats || {};
      const loaded = stats.base_loaded_now || (stats.loaded_now || []).length > 0;
      finish(loaded ? "Done (models loaded for this request)." : "Done.");
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (source) source.close();
    showErrors({});
    button.disabled = true;
    status.textContent = "Queued…";
    Object.values(answers).forEach((el) => { el.textContent = ""; el.classList.add("streaming"); });
    form.ownerDocument.querySelectorAll("[data-prompt-for]").forEach((el) => { el.hidden = true; });
    let reply;
    try {
      reply = await fetch(form.action, { method: "POST", body: new FormData(form),
                                         headers: { "X-Requested-With": "fetch" } });
    } catch (error) {
      finish("Could not reach the server: " + error.message);
      return;
    }
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      showErrors(body.errors || {});
      finish(body.errors ? "Please fix the fields above." : "The server refused the request (" + reply.status + ").");
      return;
    }
    source = new EventSource(body.stream_url);
    source.onmessage = onEvent;
    source.onerror = () => { if (source) finish("The connection to the answer stream was lost."); };
  });
});
